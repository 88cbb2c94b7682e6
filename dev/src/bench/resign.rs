//! Resign throughput on one core: a federated request verified against the federation's CA,
//! mapped and re-signed with a privileged key, next to raw aws-lc-rs signing at that key size.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::signature::RsaKeyPair;
use rcgen::RsaKeySize;

use super::crypto::{issue, raw_sign, request};
use super::{BenchError, Row, interleaved, row, setup_err};
use fedgate::federation::resign::{self, ResignRules, ResignTarget, Resigned};
use fedgate::federation::transform::{
    ClusterRules, Destination, Refusal, hop_label, route_request,
};
use fedgate::security::identity::{IdentityRules, Mapping};
use fedgate::security::{CaBundle, Now, Verifier};
use fedgate::wire::Limits;
use fedgate::wire::choria_v1::{FederationHeader, SecureRequest, Transport, TransportHeaders};

const RULES: &str = r#"
[[rule]]
from = "prod"
to = ["london"]
glob = "choria=*.mcollective"
as = "choria=$1.mcollective"
"#;

/// A federated request from a 2048-bit client of CA F, and a cluster that re-signs it for
/// london with a privileged key of `size`.
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
}

pub(crate) fn fixture(size: RsaKeySize, now: Now) -> Result<Fixture, BenchError> {
    let (client, _, federation_ca) = issue("bench.mcollective", RsaKeySize::_2048)?;
    let (privileged, raw_key, target_ca) = issue("fedgate.privileged.mcollective", size)?;
    let secure = client.sign_request(&request(now)).map_err(setup_err)?;
    let headers = TransportHeaders {
        reply_to: Some(
            "london.reply.0123456789abcdef0123456789abcdef.6a6f3a2c1e8b4e0f9d1b2c3d4e5f6a7b".into(),
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
    let bits = privileged.key_bits();
    let rules = Arc::new(ResignRules {
        realm: "prod".into(),
        verifier: Verifier::with_defaults(federation_ca, Limits::default()),
        targets: BTreeMap::from([(
            "london".to_string(),
            ResignTarget {
                internal_name: "mcollective".into(),
                signer: Arc::new(privileged),
            },
        )]),
        max_ttl: 60,
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
    })
}

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
        assert!(fx.rules.verifier.verify(secure.clone(), now).is_err());
        let request = secure.request(&Limits::default()).unwrap();
        assert_eq!(request.envelope.collective, "mcollective");
        assert_eq!(request.envelope.callerid, "choria=bench.mcollective");
        assert_eq!(
            request.envelope.requestid,
            "6a6f3a2c1e8b4e0f9d1b2c3d4e5f6a7b"
        );
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
