//! Resign throughput on one core: a federated request verified against the federation's CA,
//! mapped and re-signed with a privileged key, next to raw aws-lc-rs signing at that key size;
//! and requests translated between Choria protocols v1 and v2 on the same path, next to the
//! v1 → v1 path.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::signature::RsaKeyPair;
use rcgen::RsaKeySize;

use super::crypto::{issue, raw_sign, request};
use super::{BenchError, Row, interleaved, row, setup_err};
use fedgate::client::{Egress, V2Egress};
use fedgate::federation::resign::{self, ResignRules, ResignTarget, Resigned};
use fedgate::federation::transform::{
    ClusterRules, Destination, Refusal, hop_label, route_request,
};
use fedgate::security::identity::{IdentityRules, Mapping};
use fedgate::security::v2::tokens::{ClientClaims, ClientPermissions};
use fedgate::security::v2::{Issuers, TokenIssuer, V2Signer, V2Verifier};
use fedgate::security::{CaBundle, Now, Verifier};
use fedgate::wire::Limits;
use fedgate::wire::choria_v1::{FederationHeader, SecureRequest, Transport, TransportHeaders};
use fedgate::wire::choria_v2;

const RULES: &str = r#"
[[rule]]
from = "prod"
to = ["london"]
glob = "choria=*.mcollective"
as = "choria=$1.mcollective"
"#;

/// Which protocol one side of a bench request speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Speaks {
    /// Choria protocol v1: x509 and RSA.
    V1,
    /// Choria protocol v2: JWT and ed25519.
    V2,
}

/// A federated request from a client of the federation (a 2048-bit v1 client of CA F, or a v2
/// client of issuer F), and a cluster that re-signs it for london: with a privileged key of
/// `size`, or as a v2 delegator.
pub(crate) struct Fixture {
    wire: Vec<u8>,
    cluster: ClusterRules,
    rules: Arc<ResignRules>,
    identity: IdentityRules,
    raw_key: RsaKeyPair,
    bits: usize,
    /// The target collective's CA, which issued the privileged key.
    #[cfg_attr(not(test), allow(dead_code))]
    target_ca: CaBundle,
    /// The target collective's v2 issuers, when it speaks v2.
    #[cfg_attr(not(test), allow(dead_code))]
    target_issuers: Option<Issuers>,
}

/// The v1 → v1 fixture.
pub(crate) fn fixture(size: RsaKeySize, now: Now) -> Result<Fixture, BenchError> {
    fixture_between(size, Speaks::V1, Speaks::V1, now)
}

/// The federation's v2 organization, its client, and the request it signs.
fn v2_wire(now: Now) -> Result<(Vec<u8>, Issuers), BenchError> {
    let org = TokenIssuer::org(&[1; 32]).map_err(setup_err)?;
    let caller = org
        .client_signer(
            &[2; 32],
            "choria=bench.mcollective",
            "choria",
            ClientPermissions::fleet(),
            (now.unix_seconds() - 60, 3600),
        )
        .map_err(setup_err)?;
    let v1 = request(now);
    let id = V2_ID.to_string();
    let mut v2 = choria_v2::Request::new(
        v1.payload().into_owned(),
        id.clone(),
        v1.envelope.senderid,
        v1.envelope.callerid,
        v1.envelope.collective,
        v1.envelope.agent,
        v1.envelope.ttl,
        now.unix_nanos(),
    );
    v2.filter = Some(v1.envelope.filter);
    let headers = choria_v2::TransportHeaders {
        reply: Some(fedgate::subjects::reply(
            "london",
            "choria=bench.mcollective",
            &id,
        )),
        sender: "bench.example.net".into(),
        federation: Some(choria_v2::FederationHeader {
            request: id,
            reply: None,
            targets: vec!["london.broadcast.agent.rpcutil".into()],
        }),
        ..choria_v2::TransportHeaders::default()
    };
    let wire = choria_v2::Transport::new(caller.sign_request(&v2).encode(), headers).encode();
    let issuers = Issuers::default()
        .with("choria", &org.public_key())
        .map_err(setup_err)?;
    Ok((wire, issuers))
}

/// fedgate as a delegator in london's v2 organization, and that organization's issuers.
fn v2_egress(now: Now) -> Result<(V2Egress, Issuers), BenchError> {
    let org = TokenIssuer::org(&[3; 32]).map_err(setup_err)?;
    let claims = ClientClaims {
        callerid: "choria=fedgate".into(),
        ou: "choria".into(),
        permissions: Some(ClientPermissions::delegator()),
        ..ClientClaims::default()
    };
    let seed = [4; 32];
    let (token, issuer) = org
        .chain_issuer(claims, &seed, now.unix_seconds() - 60, 3600)
        .map_err(setup_err)?;
    let delegator = V2Signer::from_seed(&seed, token).map_err(setup_err)?;
    let issuers = Issuers::default()
        .with("choria", &org.public_key())
        .map_err(setup_err)?;
    let verifier = V2Verifier::new(issuers.clone(), Limits::default());
    Ok((
        V2Egress::new(delegator, issuer, "choria".into(), verifier),
        issuers,
    ))
}

/// A fixture whose caller speaks `caller` and whose target collective speaks `target`.
pub(crate) fn fixture_between(
    size: RsaKeySize,
    caller: Speaks,
    target: Speaks,
    now: Now,
) -> Result<Fixture, BenchError> {
    let (client, _, federation_ca) = issue("bench.mcollective", RsaKeySize::_2048)?;
    let (privileged, raw_key, target_ca) = issue("fedgate.privileged.mcollective", size)?;
    let (wire, verifier, v2_verifier) = match caller {
        Speaks::V1 => {
            let secure = client.sign_request(&request(now)).map_err(setup_err)?;
            let headers = TransportHeaders {
                reply_to: Some(
                    "london.reply.0123456789abcdef0123456789abcdef.6a6f3a2c1e8b4e0f9d1b2c3d4e5f6a7b"
                        .into(),
                ),
                mc_sender: Some("bench.example.net".into()),
                federation: Some(FederationHeader {
                    req: Some("6a6f3a2c1e8b4e0f9d1b2c3d4e5f6a7b".into()),
                    reply_to: None,
                    target: vec!["london.broadcast.agent.rpcutil".into()],
                }),
                ..TransportHeaders::default()
            };
            let wire = Transport::new(secure.encode(), headers).encode();
            let verifier = Verifier::with_defaults(federation_ca, Limits::default());
            (wire, Some(verifier), None)
        }
        Speaks::V2 => {
            let (wire, issuers) = v2_wire(now)?;
            (
                wire,
                None,
                Some(V2Verifier::new(issuers, Limits::default())),
            )
        }
    };
    let bits = privileged.key_bits();
    let (signer, target_issuers) = match target {
        Speaks::V1 => (Egress::V1(Arc::new(privileged)), None),
        Speaks::V2 => {
            let (egress, issuers) = v2_egress(now)?;
            (Egress::V2(Arc::new(egress)), Some(issuers))
        }
    };
    let rules = Arc::new(ResignRules {
        realm: "prod".into(),
        verifier,
        v2_verifier,
        own_v2_keys: Default::default(),
        targets: BTreeMap::from([(
            "london".to_string(),
            ResignTarget {
                internal_name: "mcollective".into(),
                signer,
            },
        )]),
        max_ttl: 60,
        limits: Limits::default(),
    });
    let cluster = ClusterRules {
        cluster: "prod".into(),
        routes: BTreeMap::from([(
            "london".to_string(),
            Destination::Collective("london".into()),
        )]),
        max_hops: 8,
        max_targets: 1000,
        label: hop_label("bench", "prod"),
        limits: Limits::default(),
        resign: Some(rules.clone()),
    };
    Ok(Fixture {
        wire,
        cluster,
        rules,
        identity: IdentityRules::parse(RULES, "bench rules").map_err(setup_err)?,
        raw_key,
        bits,
        target_ca,
        target_issuers,
    })
}

/// The v2 client's request id: a KSUID.
const V2_ID: &str = "2IR5hjVmS3Jc3DjuKMFo0vGWLzD";

/// The broker's whole resign path for one message: route, decode, verify, map, sign, encode.
pub(crate) fn resign_all(fx: &Fixture, now: Now) -> Result<Vec<Resigned>, Refusal> {
    let routed = route_request(&fx.wire, &fx.cluster)?;
    let verified = resign::verify(&routed, &fx.rules, now)?;
    resign::check_headers(&routed, &verified)?;
    routed
        .groups()
        .iter()
        .map(|(destination, targets)| {
            let collective = destination.network();
            let target = fx.rules.target(collective)?;
            let callerid = match fx.identity.map("prod", verified.caller(), collective) {
                Mapping::Mapped { callerid, .. } => callerid,
                Mapping::Denied(denial) => {
                    let caller = verified.caller().as_str();
                    let refusal = fedgate::gateway::Refusal::unmapped(&denial, caller, collective);
                    return Err(Refusal::Admission(refusal));
                }
            };
            let mapped = resign::Mapped {
                target,
                callerid: &callerid,
            };
            resign::resign_for(
                &routed,
                &verified,
                destination,
                targets,
                (&fx.cluster, &fx.rules),
                ("nats://f:4222", "nats://l:4222"),
                mapped,
                &verified.request().envelope.filter,
                now,
            )
        })
        .collect()
}

/// Re-signed requests per second with 2048- and 4096-bit privileged keys, each next to raw
/// aws-lc-rs signing of the same bytes with the same key.
pub fn run(budget: Duration) -> Result<Vec<Row>, BenchError> {
    let mut rows = Vec::new();
    for size in [RsaKeySize::_2048, RsaKeySize::_4096] {
        let now = Now::system();
        let fx = fixture(size, now)?;
        let resigned_bytes = signed_bytes(&resign_all(&fx, now).map_err(setup_err)?)?;
        let full = || {
            black_box(resign_all(&fx, black_box(now)).ok());
        };
        rows.push(row(
            format!("resign {} (verify+map+sign+encode)", fx.bits),
            "aws-lc-rs RsaKeyPair::sign",
            interleaved(budget, raw_sign(&fx.raw_key, &resigned_bytes), full),
        ));
    }
    let now = Now::system();
    let v1 = fixture(RsaKeySize::_2048, now)?;
    for (caller, target, name) in [
        (
            Speaks::V1,
            Speaks::V2,
            "translate v1→v2 (verify+map+delegate+encode)",
        ),
        (
            Speaks::V2,
            Speaks::V1,
            "translate v2→v1 (verify+map+sign 2048+encode)",
        ),
    ] {
        let fx = fixture_between(RsaKeySize::_2048, caller, target, now)?;
        resign_all(&fx, now).map_err(setup_err)?;
        let baseline = || {
            black_box(resign_all(&v1, black_box(now)).ok());
        };
        let translated = || {
            black_box(resign_all(&fx, black_box(now)).ok());
        };
        rows.push(row(
            name.into(),
            "resign v1→v1 2048",
            interleaved(budget, baseline, translated),
        ));
    }
    Ok(rows)
}

/// The request bytes fedgate signed, from the one payload a bench run must produce.
fn signed_bytes(resigned: &[Resigned]) -> Result<Vec<u8>, BenchError> {
    let [one] = resigned else {
        return Err(BenchError(
            "the bench request was not re-signed once".into(),
        ));
    };
    let [egress] = one.egress.as_slice() else {
        return Err(BenchError(
            "the bench request was not published once".into(),
        ));
    };
    let limits = Limits::default();
    let transport = Transport::decode(&egress.payload, &limits).map_err(setup_err)?;
    let secure = SecureRequest::decode(&transport.data, &limits).map_err(setup_err)?;
    Ok(secure.message.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn the_bench_path_produces_a_request_the_target_accepts() {
        let now = Now::system();
        let fx = fixture(RsaKeySize::_2048, now).unwrap();
        let resigned = &resign_all(&fx, now).unwrap()[0];
        let egress = &resigned.egress[0];
        assert_eq!(egress.subjects, vec!["mcollective.broadcast.agent.rpcutil"]);
        let transport = Transport::decode(&egress.payload, &Limits::default()).unwrap();
        let secure = SecureRequest::decode(&transport.data, &Limits::default()).unwrap();
        // london's servers accept it: privileged signer from their CA, acting for the caller.
        let london = Verifier::with_defaults(fx.target_ca.clone(), Limits::default());
        let accepted = london.verify(secure.clone(), now).unwrap();
        assert!(accepted.privileged());
        assert_eq!(accepted.signer(), "fedgate.privileged.mcollective");
        // The federation's CA does not vouch for it.
        let federation = fx.rules.verifier.as_ref().unwrap();
        assert!(federation.verify(secure.clone(), now).is_err());
        let request = secure.request(&Limits::default()).unwrap();
        assert_eq!(request.envelope.collective, "mcollective");
        assert_eq!(request.envelope.callerid, "choria=bench.mcollective");
        assert_eq!(
            request.envelope.requestid,
            "6a6f3a2c1e8b4e0f9d1b2c3d4e5f6a7b"
        );
    }

    #[test]
    fn translated_bench_requests_are_what_the_other_protocol_accepts() {
        let now = Now::system();
        // v1 → v2: a v2 server of london's organization accepts fedgate's delegation for the
        // mapped caller, under the id derived from the v1 caller's.
        let fx = fixture_between(RsaKeySize::_2048, Speaks::V1, Speaks::V2, now).unwrap();
        let egress = &resign_all(&fx, now).unwrap()[0].egress[0];
        let transport = choria_v2::Transport::decode(&egress.payload, &Limits::default()).unwrap();
        let issuers = fx.target_issuers.clone().unwrap();
        let accepted = V2Verifier::new(issuers, Limits::default())
            .verify(&transport.data, now)
            .unwrap();
        assert_eq!(accepted.caller.as_str(), "choria=bench.mcollective");
        assert_eq!(accepted.signer(), "choria=fedgate");
        assert_eq!(
            accepted.request.id,
            choria_v2::derived_request_id("6a6f3a2c1e8b4e0f9d1b2c3d4e5f6a7b")
        );
        let federation = transport.headers.federation.unwrap();
        assert_eq!(federation.request, "6a6f3a2c1e8b4e0f9d1b2c3d4e5f6a7b");

        // v2 → v1: london's v1 servers accept the privileged signature, under the derived id,
        // which the federation header carries too.
        let fx = fixture_between(RsaKeySize::_2048, Speaks::V2, Speaks::V1, now).unwrap();
        let egress = &resign_all(&fx, now).unwrap()[0].egress[0];
        let transport = Transport::decode(&egress.payload, &Limits::default()).unwrap();
        let secure = SecureRequest::decode(&transport.data, &Limits::default()).unwrap();
        let london = Verifier::with_defaults(fx.target_ca.clone(), Limits::default());
        let accepted = london.verify(secure, now).unwrap();
        let derived = choria_v2::derived_request_id(V2_ID);
        assert_eq!(accepted.request().envelope.requestid, derived);
        assert_eq!(transport.headers.federation.unwrap().req.unwrap(), derived);
    }

    /// A v2 request names no audience: what fedgate published into a v2 collective verifies
    /// at any broker trusting that collective's issuer, and must not come back in there.
    #[test]
    fn a_request_fedgate_published_into_a_v2_collective_does_not_come_back_in() {
        let now = Now::system();
        let fx = fixture_between(RsaKeySize::_2048, Speaks::V2, Speaks::V2, now).unwrap();
        let egress = &resign_all(&fx, now).unwrap()[0].egress[0];
        let mut published =
            choria_v2::Transport::decode(&egress.payload, &Limits::default()).unwrap();
        let id = published
            .headers
            .federation
            .as_ref()
            .unwrap()
            .request
            .clone();
        // Taken off the collective's network, with its trail of hops left behind.
        published.headers.trace.clear();
        published.headers.reply = Some(format!("london.reply.0.{id}"));
        published.headers.federation = Some(choria_v2::FederationHeader {
            request: id,
            reply: None,
            targets: vec!["london.broadcast.agent.rpcutil".into()],
        });
        let wire = published.encode();
        // A federation trusting london's issuer, as the same organization on both sides would.
        let Egress::V2(own) = &fx.rules.targets["london"].signer else {
            panic!("london speaks v2");
        };
        let trusting = |own_keys: BTreeSet<String>| {
            let rules = Arc::new(ResignRules {
                realm: "prod".into(),
                verifier: None,
                v2_verifier: Some(V2Verifier::new(
                    fx.target_issuers.clone().unwrap(),
                    Limits::default(),
                )),
                own_v2_keys: own_keys,
                targets: BTreeMap::new(),
                max_ttl: 60,
                limits: Limits::default(),
            });
            ClusterRules {
                resign: Some(rules),
                ..fx.cluster.clone()
            }
        };
        let cluster = trusting(BTreeSet::new());
        let routed = route_request(&wire, &cluster).unwrap();
        let rules = cluster.resign.as_ref().unwrap();
        assert!(
            resign::verify(&routed, rules, now).is_ok(),
            "without the check it verifies"
        );
        let cluster = trusting(BTreeSet::from([own.public_key()]));
        let routed = route_request(&wire, &cluster).unwrap();
        let err = resign::verify(&routed, cluster.resign.as_ref().unwrap(), now).unwrap_err();
        assert_eq!(err.reason(), "own_request", "{err}");
    }

    /// A v2 member's reply for a v1 caller: its signature is checked against the member's
    /// issuers (an unsigned one refused, as the member's servers sign), and it is translated
    /// into a v1 reply under the caller's id; the request got a v2 sender though the v1 caller
    /// sent none.
    #[test]
    fn a_v2_member_s_replies_must_be_signed_and_are_translated_for_a_v1_caller() {
        use fedgate::security::v2::tokens::{ServerClaims, StandardClaims};
        use fedgate::wire::choria_v1::SecureReply as V1Reply;
        let now = Now::system();
        let mut fx = fixture_between(RsaKeySize::_2048, Speaks::V1, Speaks::V2, now).unwrap();
        let wire = String::from_utf8(fx.wire.clone()).unwrap();
        fx.wire = wire
            .replace(r#""mc_sender":"bench.example.net","#, "")
            .into_bytes();
        let egress = &resign_all(&fx, now).unwrap()[0].egress[0];
        let request = choria_v2::Transport::decode(&egress.payload, &Limits::default()).unwrap();
        assert_eq!(request.headers.sender, "bench.example.net");
        let federation = request.headers.federation.clone().unwrap();

        // london's server answers, as go-choria's does, copying the federation header.
        let org = TokenIssuer::org(&[3; 32]).unwrap();
        let server_key = V2Signer::from_seed(&[9; 32], String::new()).unwrap();
        let token = org.issue_server(
            ServerClaims {
                identity: "n1.example.net".into(),
                collectives: vec!["mcollective".into()],
                ou: "choria".into(),
                standard: StandardClaims {
                    public_key: server_key.public_key(),
                    ..StandardClaims::default()
                },
            },
            now.unix_seconds() - 60,
            3600,
        );
        let server = V2Signer::from_seed(&[9; 32], token).unwrap();
        let reply = choria_v2::Reply::new(
            br#"{"statuscode":0,"statusmsg":"OK","data":{"pong":1}}"#.to_vec(),
            choria_v2::derived_request_id("6a6f3a2c1e8b4e0f9d1b2c3d4e5f6a7b"),
            "n1.example.net".into(),
            "rpcutil".into(),
            now.unix_nanos(),
        )
        .encode();
        let answer = |secure: choria_v2::SecureReply| {
            let headers = choria_v2::TransportHeaders {
                sender: "n1.example.net".into(),
                federation: Some(federation.clone()),
                ..choria_v2::TransportHeaders::default()
            };
            choria_v2::Transport::new(secure.encode(), headers).encode()
        };
        let unsigned = answer(choria_v2::SecureReply::new(reply.clone()));
        let err = resign::route_reply(&unsigned, &fx.cluster, "a", "b").unwrap_err();
        assert!(err.to_string().contains("not signed"), "{err}");
        let signed = answer(
            choria_v2::SecureReply::new(reply.clone())
                .signed(server.sign(&reply), server.token().into()),
        );
        let (to, out, caller_id) = resign::route_reply(&signed, &fx.cluster, "a", "b").unwrap();
        assert_eq!(caller_id, "6a6f3a2c1e8b4e0f9d1b2c3d4e5f6a7b");
        assert!(to.ends_with(".6a6f3a2c1e8b4e0f9d1b2c3d4e5f6a7b"), "{to}");
        let out = Transport::decode(&out, &Limits::default()).unwrap();
        let v1 = V1Reply::decode(&out.data, &Limits::default()).unwrap();
        let v1 = v1.reply(&Limits::default()).unwrap();
        assert_eq!(v1.envelope.requestid, caller_id);
        assert_eq!(v1.envelope.senderid, "n1.example.net");
    }

    /// A federation that names issuers but no CA takes v2 callers only.
    #[test]
    fn a_federation_without_a_ca_refuses_v1_callers() {
        let now = Now::system();
        let v1 = fixture(RsaKeySize::_2048, now).unwrap();
        let v2_only = fixture_between(RsaKeySize::_2048, Speaks::V2, Speaks::V1, now).unwrap();
        let routed = route_request(&v1.wire, &v2_only.cluster).unwrap();
        let err = resign::verify(&routed, &v2_only.rules, now).unwrap_err();
        assert_eq!(err.reason(), "unknown_ca");
        assert!(err.to_string().contains("names no ca"), "{err}");
    }

    #[test]
    fn a_broadcast_target_must_name_the_signed_agent() {
        let now = Now::system();
        let mut fx = fixture(RsaKeySize::_2048, now).unwrap();
        let wire = String::from_utf8(fx.wire.clone()).unwrap();
        fx.wire = wire
            .replace(
                "london.broadcast.agent.rpcutil",
                "london.broadcast.agent.echo",
            )
            .into_bytes();
        let routed = route_request(&fx.wire, &fx.cluster).unwrap();
        let verified = resign::verify(&routed, &fx.rules, now).unwrap();
        let err = resign::check_headers(&routed, &verified).unwrap_err();
        assert_eq!(err.reason(), "agent_mismatch", "{err}");
        // A node target carries no agent, so it passes this check.
        fx.wire = wire
            .replace("london.broadcast.agent.rpcutil", "london.node.n1")
            .into_bytes();
        let routed = route_request(&fx.wire, &fx.cluster).unwrap();
        assert!(resign::verify(&routed, &fx.rules, now).is_ok());
    }
}
