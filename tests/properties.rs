//! Property tests: round trips of every wire type (Choria transport, secure request and reply,
//! request and reply with their envelopes, RPC bodies; legacy Marshal, YAML and the request
//! and reply envelopes in both), and the invariants of identity mapping and authorization (no
//! rule, no mapping; no permit without an allow rule naming the caller).

use fedgate::policy::{Effect, PolicyFile, PolicySet, Query, Vantage, authorize};
use fedgate::security::CallerId;
use fedgate::security::identity::{IdentityRules, Mapping};
use fedgate::wire::Limits;
use fedgate::wire::choria_v1::{
    FederationHeader, Filter, MIN_TTL, Reply, ReplyEnvelope, Request, RequestEnvelope, RpcReply,
    RpcRequest, SecureReply, SecureRequest, Transport, TransportHeaders,
};
use fedgate::wire::mcollective::envelope::{LegacyReply, LegacyRequest};
use fedgate::wire::mcollective::{Ruby, Serializer, marshal};
use proptest::prelude::*;

fn subject() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9_]{0,10}(\\.[a-z0-9_]{1,10}){0,4}"
}

fn headers() -> impl Strategy<Value = TransportHeaders> {
    let hop = (subject(), subject(), subject()).prop_map(|(a, b, c)| [a, b, c]);
    let federation = (
        proptest::option::of("[0-9a-f]{32}"),
        proptest::option::of(subject()),
        proptest::collection::vec(subject(), 0..5),
    )
        .prop_map(|(req, reply_to, target)| FederationHeader {
            req,
            reply_to,
            target,
        });
    (
        proptest::option::of(subject()),
        proptest::option::of("[a-z0-9.-]{1,20}"),
        proptest::collection::vec(hop, 0..4),
        proptest::option::of(federation),
    )
        .prop_map(
            |(reply_to, mc_sender, seen_by, federation)| TransportHeaders {
                reply_to,
                mc_sender,
                seen_by,
                federation,
            },
        )
}

/// Ruby values as MCollective's Marshal carries them (finite floats: NaN is not equal to
/// itself).
fn ruby() -> impl Strategy<Value = Ruby> {
    let leaf = prop_oneof![
        Just(Ruby::Nil),
        any::<bool>().prop_map(Ruby::Bool),
        any::<i64>().prop_map(Ruby::Int),
        (-1e12f64..1e12).prop_map(Ruby::Float),
        ".{0,20}".prop_map(Ruby::Str),
        proptest::collection::vec(any::<u8>(), 0..20).prop_map(Ruby::Bytes),
        "[a-z_][a-z0-9_]{0,10}".prop_map(Ruby::Symbol),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..8).prop_map(Ruby::Array),
            proptest::collection::vec((inner.clone(), inner), 0..8).prop_map(Ruby::Hash),
        ]
    })
}

/// What Psych reads back from its own YAML: a binary string that is valid UTF-8 is written,
/// and read, as text.
fn as_psych_reads(value: &Ruby) -> Ruby {
    match value {
        Ruby::Bytes(bytes) => match String::from_utf8(bytes.clone()) {
            Ok(text) => Ruby::Str(text),
            Err(_) => value.clone(),
        },
        Ruby::Array(items) => Ruby::Array(items.iter().map(as_psych_reads).collect()),
        Ruby::Hash(pairs) => Ruby::Hash(
            pairs
                .iter()
                .map(|(k, v)| (as_psych_reads(k), as_psych_reads(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn json_data() -> impl Strategy<Value = serde_json::Map<String, serde_json::Value>> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        ".{0,16}".prop_map(serde_json::Value::from),
    ];
    let value = leaf.prop_recursive(3, 32, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            proptest::collection::btree_map("[a-z]{1,6}", inner, 0..4)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    });
    proptest::collection::btree_map("[a-z_]{1,10}", value, 0..5)
        .prop_map(|m| m.into_iter().collect())
}

fn filter() -> impl Strategy<Value = Filter> {
    (
        proptest::collection::vec("[a-z][a-z0-9_:]{0,12}", 0..3),
        proptest::collection::vec("[a-z][a-z0-9_]{0,10}", 0..3),
        proptest::collection::vec("[a-z][a-z0-9.-]{0,16}", 0..3),
    )
        .prop_map(|(cf_class, agent, identity)| Filter {
            cf_class,
            agent,
            identity,
            ..Filter::default()
        })
}

fn request() -> impl Strategy<Value = Request> {
    (
        ("[0-9a-f]{32}", "[a-z][a-z0-9.-]{0,20}", "[a-z]{1,8}"),
        (
            "[a-z][a-z0-9_]{0,10}",
            "[a-z][a-z0-9_]{0,10}",
            "[a-z][a-z0-9_]{0,10}",
        ),
        // Choria's TTLs: a request below the 30 s minimum does not decode, so it is no round trip.
        (MIN_TTL..86_400, 1_000_000_000i64..2_000_000_000),
        filter(),
        json_data(),
    )
        .prop_map(
            |(
                (requestid, senderid, user),
                (collective, agent, action),
                (ttl, time),
                filter,
                data,
            )| {
                let rpc = RpcRequest {
                    agent: agent.clone(),
                    action,
                    data,
                };
                let envelope = RequestEnvelope {
                    requestid,
                    senderid,
                    callerid: format!("choria={user}.mcollective"),
                    collective,
                    agent,
                    ttl,
                    time,
                    filter,
                };
                Request::new(rpc.encode_string(), envelope)
            },
        )
}

fn reply() -> impl Strategy<Value = Reply> {
    (
        (
            "[0-9a-f]{32}",
            "[a-z][a-z0-9.-]{0,20}",
            "[a-z][a-z0-9_]{0,10}",
        ),
        (1_000_000_000i64..2_000_000_000, 0i64..6, ".{0,24}"),
        json_data(),
    )
        .prop_map(
            |((requestid, senderid, agent), (time, statuscode, statusmsg), data)| {
                let rpc = RpcReply {
                    action: "act".into(),
                    statuscode,
                    statusmsg,
                    data: serde_json::Value::Object(data),
                };
                Reply::new(
                    rpc.encode_string(),
                    ReplyEnvelope {
                        requestid,
                        senderid,
                        agent,
                        time,
                    },
                )
            },
        )
}

proptest! {
    #[test]
    fn choria_requests_and_replies_decode_to_what_was_encoded(
        request in request(),
        reply in reply(),
        signature in proptest::collection::vec(any::<u8>(), 1..64),
    ) {
        let limits = Limits::default();
        prop_assert_eq!(Request::decode(&request.encode(), &limits).unwrap(), request.clone());
        let rpc = request.rpc(&limits).unwrap();
        prop_assert_eq!(RpcRequest::decode(&rpc.encode(), &limits).unwrap(), rpc);
        let secure = SecureRequest::new(
            request.encode_string(),
            fedgate::wire::encode_base64(&signature),
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".into(),
        );
        let decoded = SecureRequest::decode(&secure.encode(), &limits).unwrap();
        prop_assert_eq!(&decoded, &secure);
        prop_assert_eq!(decoded.request(&limits).unwrap(), request);

        prop_assert_eq!(Reply::decode(&reply.encode(), &limits).unwrap(), reply.clone());
        let rpc = reply.rpc(&limits).unwrap();
        prop_assert_eq!(RpcReply::decode(&rpc.encode(), &limits).unwrap(), rpc);
        let secure = SecureReply::new(reply.encode_string());
        let decoded = SecureReply::decode(&secure.encode(), &limits).unwrap();
        prop_assert_eq!(&decoded, &secure);
        prop_assert_eq!(decoded.reply(&limits).unwrap(), reply);
    }

    #[test]
    fn legacy_envelopes_decode_to_what_was_encoded(
        ids in ("[a-z][a-z0-9.-]{0,20}", "[0-9a-f]{32}", "[a-z][a-z0-9_]{0,10}", "[a-z]{1,8}"),
        times in (1i64..3600, 1_000_000_000i64..2_000_000_000),
        body in proptest::collection::vec(any::<u8>(), 0..128),
        filter in ruby(),
        hash in "[A-Za-z0-9+/]{8,64}",
        yaml_format in any::<bool>(),
    ) {
        let serializer = if yaml_format { Serializer::Yaml } else { Serializer::Marshal };
        // YAML carries :body as text, so only text bodies are comparable there.
        let body = match serializer {
            Serializer::Yaml => String::from_utf8_lossy(&body).into_owned().into_bytes(),
            Serializer::Marshal => body,
        };
        let filter = Ruby::Hash(vec![(Ruby::Str("identity".into()), Ruby::Array(vec![filter]))]);
        let filter = match serializer {
            Serializer::Yaml => as_psych_reads(&filter),
            Serializer::Marshal => filter,
        };
        let (senderid, requestid, agent, user) = ids;
        let request = LegacyRequest {
            body: body.clone(),
            senderid: senderid.clone(),
            requestid: requestid.clone(),
            filter,
            collective: "mcollective".into(),
            agent: agent.clone(),
            callerid: format!("cert={user}"),
            ttl: times.0,
            msgtime: times.1,
            hash: hash.clone(),
        };
        let bytes = request.encode(serializer);
        prop_assert_eq!(LegacyRequest::decode(serializer, &bytes, 1 << 20).unwrap(), request);
        let reply = LegacyReply {
            senderid,
            requestid,
            senderagent: agent,
            msgtime: times.1,
            body,
            hash,
        };
        let bytes = reply.encode(serializer);
        prop_assert_eq!(LegacyReply::decode(serializer, &bytes, 1 << 20).unwrap(), reply);
    }

    #[test]
    fn a_transport_decodes_to_what_was_encoded(
        data in proptest::collection::vec(any::<u8>(), 1..512),
        headers in headers(),
    ) {
        let transport = Transport::new(data, headers);
        let decoded = Transport::decode(&transport.encode(), &Limits::default()).unwrap();
        prop_assert_eq!(decoded, transport);
    }

    #[test]
    fn marshal_decodes_to_what_was_encoded(value in ruby()) {
        let bytes = marshal::encode(&value);
        prop_assert_eq!(marshal::decode(&bytes).unwrap(), value.clone());
        // The raw tree writes back the very bytes it read.
        let raw = marshal::decode_raw(&bytes).unwrap();
        prop_assert_eq!(marshal::encode_raw(&raw), bytes);
    }

    #[test]
    fn yaml_decodes_to_what_was_encoded(value in ruby()) {
        let text = fedgate::wire::mcollective::yaml::encode(&value);
        let decoded = fedgate::wire::mcollective::yaml::decode(text.as_bytes());
        prop_assert_eq!(decoded.ok(), Some(as_psych_reads(&value)), "{}", text);
    }

    #[test]
    fn garbage_never_panics_a_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = Transport::decode(&bytes, &Limits::default());
        let _ = marshal::decode(&bytes);
        let _ = fedgate::wire::mcollective::yaml::decode(&bytes);
    }

    #[test]
    fn no_rule_no_mapping(
        rule_realm in "[a-z]{1,8}",
        from in "[a-z]{1,8}",
        user in "[a-z]{1,8}",
        collective in "[a-z]{1,8}",
    ) {
        let caller = CallerId::parse(&format!("up={user}")).unwrap();
        // Without rules every caller is denied.
        prop_assert!(matches!(
            IdentityRules::deny_all().map(&from, &caller, &collective),
            Mapping::Denied(_)
        ));
        // A rule maps only callers of its realm, into its collectives.
        let rules = IdentityRules::parse(
            &format!("[[rule]]\nfrom = {rule_realm:?}\nto = [\"london\"]\nglob = \"up=*\"\nas = \"choria=$1.mcollective\"\n"),
            "prop",
        )
        .unwrap();
        let mapped = matches!(rules.map(&from, &caller, &collective), Mapping::Mapped { .. });
        prop_assert_eq!(mapped, from == rule_realm && collective == "london");
    }

    #[test]
    fn no_permit_without_an_allow_rule_for_the_caller(
        allowed in proptest::collection::vec("[a-z]{1,8}", 0..6),
        caller in "[a-z]{1,8}",
        action in "[a-z]{1,8}",
    ) {
        let mut text = String::from("policy default deny\n");
        for name in &allowed {
            text.push_str(&format!("allow\tup={name}\t*\t*\t*\n"));
        }
        let mut set = PolicySet::empty(Effect::Deny);
        set.insert(None, "rpcutil", PolicyFile::parse("rpcutil.policy", &text).unwrap());
        let caller_id = format!("up={caller}");
        let query = Query { collective: "london", agent: "rpcutil", action: &action, caller: &caller_id };
        prop_assert_eq!(
            authorize(&set, &query, Vantage::Gateway).allowed(),
            allowed.contains(&caller)
        );
        // An agent without a policy file gets the unconfigured answer: deny.
        let other = Query { agent: "service", ..query };
        prop_assert!(!authorize(&set, &other, Vantage::Gateway).allowed());
    }
}

/// The inputs the YAML round trip first failed on: a nil key (written as an empty key, which
/// yaml-rust2 cannot read) and a binary key (a block scalar cannot be a simple key).
#[test]
fn yaml_writes_nil_and_binary_keys_readably() {
    use fedgate::wire::mcollective::yaml;
    for value in [
        Ruby::Hash(vec![(Ruby::Nil, Ruby::Array(vec![Ruby::Int(1)]))]),
        Ruby::Hash(vec![(Ruby::Bytes(vec![128]), Ruby::Nil)]),
        Ruby::Hash(vec![(
            Ruby::Array(vec![Ruby::sym("a"), Ruby::Str("two\nlines".into())]),
            Ruby::Int(2),
        )]),
    ] {
        let text = yaml::encode(&value);
        assert_eq!(yaml::decode(text.as_bytes()).unwrap(), value, "{text}");
    }
}
