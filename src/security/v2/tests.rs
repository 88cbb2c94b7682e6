//! v2 identities checked as a v2 Choria server checks them, with go-choria's fixed vectors where
//! its sources hold them.

use super::tokens::{self, ClientClaims, ClientPermissions, Issuers, ServerClaims};
use super::*;
use crate::security::{Now, Reason, VerifyError};
use crate::wire::Limits;
use crate::wire::choria_v2::{Reply, Request, SecureReply, SecureRequest};

const NOW: i64 = 1_780_000_000;

fn seed(n: u8) -> [u8; 32] {
    [n; 32]
}

fn now() -> Now {
    Now::at_unix(NOW as u64)
}

struct Org {
    issuer: TokenIssuer,
    issuers: Issuers,
}

fn org(n: u8) -> Org {
    let issuer = TokenIssuer::org(&seed(n)).unwrap();
    let issuers = Issuers::default()
        .with("choria", &issuer.public_key())
        .unwrap();
    Org { issuer, issuers }
}

fn signer_for(org: &Org, n: u8, callerid: &str, permissions: ClientPermissions) -> V2Signer {
    org.issuer
        .client_signer(&seed(n), callerid, "choria", permissions, (NOW - 60, 3600))
        .unwrap()
}

fn client(callerid: &str, key: &V2Signer, permissions: ClientPermissions) -> ClientClaims {
    ClientClaims {
        callerid: callerid.into(),
        ou: "choria".into(),
        permissions: Some(permissions),
        standard: tokens::StandardClaims {
            public_key: key.public_key(),
            ..Default::default()
        },
        ..Default::default()
    }
}

fn request(caller: &str) -> Request {
    Request::new(
        br#"{"agent":"rpcutil","action":"ping","data":{}}"#.to_vec(),
        crate::wire::choria_v2::new_request_id(),
        "client.example.net".into(),
        caller.into(),
        "choria".into(),
        "rpcutil".into(),
        60,
        NOW * 1_000_000_000,
    )
}

fn verifier(org: &Org) -> V2Verifier {
    V2Verifier::new(org.issuers.clone(), Limits::default())
}

fn refused(result: Result<SignedV2Request, VerifyError>) -> (Reason, String) {
    let err = result.expect_err("refused");
    (err.reason(), err.to_string())
}

#[test]
fn go_choria_s_ed25519_vector_signs_alike() {
    // internal/util/ed25519_test.go and tokens' ed25519_test.go.
    let seed: [u8; 32] =
        hex::decode("8e306060341f7eb867c7d09609d53bfa9e6cb38ca744c0dca548572cc3080b6a")
            .unwrap()
            .try_into()
            .unwrap();
    let signer = V2Signer::from_seed(&seed, String::new()).unwrap();
    assert_eq!(
        hex::encode(signer.sign(b"too many secrets")),
        "5971db5ce8eec72d586b0630e2cdd9464e6800b973e6c58575a4072018ca51a93f2e1988d47e058bb19c18d57a44ffa9931b6b7e2f70b5e44ddc50339a8c790b"
    );
    assert_eq!(
        signer.public_key(),
        "520faecd1fb41676efeceefe5d906bf3740b2fabf5dcdfb2dc4a8b58204d8f2a"
    );
}

#[test]
fn the_tokens_package_s_ed25519_jwt_verifies_with_its_signer_only() {
    // tokens' testdata/ed25519: good-provisioning.jwt is signed by signer.seed.
    const JWT: &str = "eyJhbGciOiJFZERTQSIsInR5cCI6IkpXVCJ9.eyJjaHQiOiJ4IiwiY2hzIjp0cnVlLCJjaHUiOiJuYXRzOi8vZXhhbXBsZTo0MjIyIiwiY2hwZCI6dHJ1ZSwiY2hyZCI6IiwiLCJleHRlbnNpb25zIjpudWxsLCJwdXJwb3NlIjoiY2hvcmlhX3Byb3Zpc2lvbmluZyIsImlzcyI6ImdpbmtnbyIsInN1YiI6ImNob3JpYV9wcm92aXNpb25pbmciLCJleHAiOjE5NzE0MzA5NzcsIm5iZiI6MTY1NjA3MDk3NywiaWF0IjoxNjU2MDcwOTc3fQ.BNNEUSPcLRYsoo4xIwpCBjz-XZ2vsgjokOgEgoXLLEfa2_HQZi3p4dr_0fD-u-Gmn-vBHZwAc-kpPv-V3nutDg";
    const SIGNER: &str = "3899a8bb4b6e6e09c91c27f28f086f0b40f1d3091a8c83c07320bc6cfdf67730";
    const OTHER: &str = "1454a451cdefe5937da64a79faffa6e54f3c083ae78f72bb7f39a7aa37975c8b";
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
    validation.validate_exp = false;
    let decode = |key: &str| {
        let key = tokens::parse_public_key(key).unwrap();
        jsonwebtoken::decode::<serde_json::Value>(
            JWT,
            &jsonwebtoken::DecodingKey::from_ed_der(&key),
            &validation,
        )
    };
    assert_eq!(
        decode(SIGNER).unwrap().claims["purpose"],
        "choria_provisioning"
    );
    assert!(decode(OTHER).is_err());
    // go-choria refuses to verify a request with a provisioning token.
    let issuers = Issuers::default().with("choria", SIGNER).unwrap();
    let err = tokens::parse_client(JWT, &issuers, now()).unwrap_err();
    assert!(
        err.to_string().contains(
            "a choria_provisioning token was given where a choria_client_id token is needed"
        ),
        "{err}"
    );
}

#[test]
fn reply_subjects_use_the_md5_of_the_caller_as_go_choria_s_inbox() {
    // ADR 001 and tokens' NatsConnectionHelpers tests.
    assert_eq!(
        crate::subjects::reply("choria", "up=rip", "x"),
        "choria.reply.7419405695a186147a0de38f7e31a509.x"
    );
    assert_eq!(
        crate::subjects::reply("choria", "ginkgo", "x"),
        "choria.reply.4bb6777bb903cae3166e826932f7fe94.x"
    );
}

#[test]
fn a_caller_signing_its_own_request_is_verified_by_its_token() {
    let org = org(1);
    let alice = signer_for(&org, 2, "up=alice", ClientPermissions::fleet());
    let secure = alice.sign_request(&request("up=alice"));
    let signed = verifier(&org).verify(&secure.encode(), now()).unwrap();
    assert_eq!(signed.caller.as_str(), "up=alice");
    assert_eq!(signed.signer(), "up=alice");
    assert!(signed.delegator.is_none());
    check_ttl(&signed.request, now()).unwrap();

    // Signing as someone else: the request names bob, the token alice.
    let (reason, _) =
        refused(verifier(&org).verify(&alice.sign_request(&request("up=bob")).encode(), now()));
    assert_eq!(reason, Reason::NameMismatch);
    // A request changed after signing.
    let mut tampered = secure.clone();
    tampered.request = request("up=alice").encode();
    tampered.request[10] ^= 1;
    let (reason, _) = refused(verifier(&org).verify(&tampered.encode(), now()));
    assert!(
        matches!(reason, Reason::BadSignature | Reason::Malformed),
        "{reason:?}"
    );
    let mut resigned = secure.clone();
    resigned.signature =
        signer_for(&org, 3, "up=mallory", ClientPermissions::fleet()).sign(&secure.request);
    assert_eq!(
        refused(verifier(&org).verify(&resigned.encode(), now())).0,
        Reason::BadSignature
    );
}

#[test]
fn tokens_from_elsewhere_out_of_date_or_without_fleet_access_are_refused() {
    let org = org(1);
    let stranger = self::org(9);
    let mallory = signer_for(&stranger, 3, "up=mallory", ClientPermissions::fleet());
    let (reason, message) = refused(verifier(&org).verify(
        &mallory.sign_request(&request("up=mallory")).encode(),
        now(),
    ));
    assert_eq!(reason, Reason::InvalidCertificate, "{message}");

    let unknown_org = TokenIssuer::org(&seed(9)).unwrap();
    let key = V2Signer::from_seed(&seed(4), String::new()).unwrap();
    let mut claims = client("up=carol", &key, ClientPermissions::fleet());
    claims.ou = "elsewhere".into();
    let carol =
        V2Signer::from_seed(&seed(4), unknown_org.issue_client(claims, NOW - 60, 3600)).unwrap();
    let (reason, message) =
        refused(verifier(&org).verify(&carol.sign_request(&request("up=carol")).encode(), now()));
    assert_eq!(reason, Reason::UnknownCa, "{message}");

    let alice = signer_for(&org, 2, "up=alice", ClientPermissions::fleet());
    let later = Now::at_unix(NOW as u64 + 3600);
    let (reason, message) =
        refused(verifier(&org).verify(&alice.sign_request(&request("up=alice")).encode(), later));
    assert_eq!(reason, Reason::ExpiredCertificate, "{message}");

    let dave = signer_for(&org, 5, "up=dave", ClientPermissions::default());
    let (reason, message) =
        refused(verifier(&org).verify(&dave.sign_request(&request("up=dave")).encode(), now()));
    assert_eq!(reason, Reason::NotAllowed, "{message}");
    assert!(
        message.contains("does not have fleet management access"),
        "{message}"
    );

    let erin = signer_for(&org, 6, "up=erin", ClientPermissions::signed_fleet());
    let (reason, message) =
        refused(verifier(&org).verify(&erin.sign_request(&request("up=erin")).encode(), now()));
    assert_eq!(reason, Reason::NotAllowed, "{message}");
    assert!(message.contains("only through a delegator"), "{message}");
}

#[test]
fn a_delegator_signs_for_a_caller_only_with_the_delegation_permission() {
    let org = org(1);
    let erin = signer_for(&org, 6, "up=erin", ClientPermissions::signed_fleet());
    let fedgate = signer_for(&org, 7, "choria=fedgate", ClientPermissions::delegator());
    // The delegator's word names the caller: aaasvc writes it as `up=erin` or `up_erin`.
    let secure = fedgate.sign_delegated(&request("up=erin"), erin.token());
    let signed = verifier(&org).verify(&secure.encode(), now()).unwrap();
    assert_eq!(signed.caller.as_str(), "up=erin");
    assert_eq!(signed.signer(), "choria=fedgate");
    assert_eq!(signed.caller_token.callerid, "up=erin");

    let plain = signer_for(&org, 8, "up=frank", ClientPermissions::fleet());
    let (reason, message) = refused(
        verifier(&org).verify(
            &plain
                .sign_delegated(&request("up=erin"), erin.token())
                .encode(),
            now(),
        ),
    );
    assert_eq!(reason, Reason::NotAllowed, "{message}");
    assert!(
        message.contains("without the authentication_delegator permission"),
        "{message}"
    );

    // The caller's own key cannot stand in for the delegator's.
    let mut forged = secure.clone();
    forged.signature = erin.sign(&secure.request);
    assert_eq!(
        refused(verifier(&org).verify(&forged.encode(), now())).0,
        Reason::BadSignature
    );

    let nobody = signer_for(&org, 5, "up=dave", ClientPermissions::default());
    let (reason, _) = refused(
        verifier(&org).verify(
            &fedgate
                .sign_delegated(&request("up=dave"), nobody.token())
                .encode(),
            now(),
        ),
    );
    assert_eq!(reason, Reason::NotAllowed);
}

#[test]
fn a_chain_issuer_s_tokens_verify_through_the_organization_s_word() {
    let org = org(1);
    let (_, login) = org
        .issuer
        .chain_issuer(
            ClientClaims {
                callerid: "aaasvc-login".into(),
                ou: "choria".into(),
                ..Default::default()
            },
            &seed(20),
            NOW - 60,
            7200,
        )
        .unwrap();
    let key = V2Signer::from_seed(&seed(21), String::new()).unwrap();
    let token = login.issue_client(
        client("up=gina", &key, ClientPermissions::fleet()),
        NOW - 30,
        3600,
    );
    let gina = V2Signer::from_seed(&seed(21), token.clone()).unwrap();
    let claims = tokens::parse_client(&token, &org.issuers, now()).unwrap();
    assert!(claims.standard.iss.starts_with("C-"));
    verifier(&org)
        .verify(&gina.sign_request(&request("up=gina")).encode(), now())
        .unwrap();

    // A chain issuer another organization vouched for.
    let stranger = self::org(9);
    let (_, rogue) = stranger
        .issuer
        .chain_issuer(
            ClientClaims {
                callerid: "rogue".into(),
                ou: "choria".into(),
                ..Default::default()
            },
            &seed(22),
            NOW - 60,
            7200,
        )
        .unwrap();
    let forged = rogue.issue_client(
        client("up=gina", &key, ClientPermissions::fleet()),
        NOW - 30,
        3600,
    );
    let err = tokens::parse_client(&forged, &org.issuers, now()).unwrap_err();
    assert_eq!(err.reason(), Reason::UnknownCa, "{err}");

    // The chain issuer's own expiry ends its tokens.
    let late = Now::at_unix(NOW as u64 + 7200);
    let err = tokens::parse_client(&token, &org.issuers, late).unwrap_err();
    assert_eq!(err.reason(), Reason::ExpiredCertificate, "{err}");
}

#[test]
fn the_ttl_window_is_strict_and_in_nanoseconds() {
    let mut req = request("up=alice");
    let at = |seconds: i64| Now::at_unix(seconds as u64);
    assert!(check_ttl(&req, at(NOW + 59)).is_ok());
    assert!(check_ttl(&req, at(NOW - 59)).is_ok());
    assert_eq!(
        check_ttl(&req, at(NOW + 60)).unwrap_err().reason(),
        Reason::TtlExpired
    );
    assert_eq!(
        check_ttl(&req, at(NOW - 60)).unwrap_err().reason(),
        Reason::TtlExpired
    );
    // A time in seconds, as v1 has it, is fifty years stale in nanoseconds.
    req.time = NOW;
    assert!(check_ttl(&req, at(NOW)).is_err());
}

#[test]
fn a_signed_reply_is_checked_against_its_server_s_token() {
    let org = org(1);
    let key = V2Signer::from_seed(&seed(30), String::new()).unwrap();
    let server_token = org.issuer.issue_server(
        ServerClaims {
            identity: "n1.example.net".into(),
            collectives: vec!["choria".into()],
            ou: "choria".into(),
            standard: tokens::StandardClaims {
                public_key: key.public_key(),
                ..Default::default()
            },
        },
        NOW - 60,
        3600,
    );
    let reply = Reply::new(
        br#"{"action":"ping","statuscode":0,"statusmsg":"OK","data":{}}"#.to_vec(),
        "x".into(),
        "n1.example.net".into(),
        "rpcutil".into(),
        NOW * 1_000_000_000,
    )
    .encode();
    let secure = SecureReply::new(reply.clone()).signed(key.sign(&reply), server_token.clone());
    let decoded = SecureReply::decode(&secure.encode(), &Limits::default()).unwrap();
    let server = verifier(&org)
        .check_reply_signature(&decoded, now())
        .unwrap()
        .unwrap();
    assert_eq!(server.identity, "n1.example.net");
    let forged = SecureReply::new(reply.clone()).signed(
        V2Signer::from_seed(&seed(31), String::new())
            .unwrap()
            .sign(&reply),
        server_token,
    );
    assert_eq!(
        verifier(&org)
            .check_reply_signature(&forged, now())
            .unwrap_err()
            .reason(),
        Reason::BadSignature
    );
    assert!(
        verifier(&org)
            .check_reply_signature(&SecureReply::new(reply), now())
            .unwrap()
            .is_none()
    );
    let (_, checked) = check_reply(&decoded.encode(), "x", &Limits::default()).unwrap();
    assert_eq!(checked.sender, "n1.example.net");
    assert!(check_reply(&decoded.encode(), "y", &Limits::default()).is_err());
}

#[test]
fn a_remembered_token_still_expires() {
    let org = org(1);
    let verifier = verifier(&org);
    let alice = signer_for(&org, 2, "up=alice", ClientPermissions::fleet());
    let bytes = alice.sign_request(&request("up=alice")).encode();
    verifier.verify(&bytes, now()).unwrap();
    // The second time the token comes from memory; the request's signature is still checked.
    verifier.verify(&bytes, now()).unwrap();
    let mut forged = SecureRequest::decode(&bytes, &Limits::default()).unwrap();
    forged.signature =
        signer_for(&org, 3, "up=eve", ClientPermissions::fleet()).sign(&forged.request);
    assert_eq!(
        refused(verifier.verify(&forged.encode(), now())).0,
        Reason::BadSignature
    );
    let later = Now::at_unix(NOW as u64 + 3600);
    assert_eq!(
        refused(verifier.verify(&bytes, later)).0,
        Reason::ExpiredCertificate
    );
    let early = Now::at_unix(NOW as u64 - 120);
    assert_eq!(
        refused(verifier.verify(&bytes, early)).0,
        Reason::ExpiredCertificate
    );
}
