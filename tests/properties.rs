//! Property tests: wire round trips, and the invariants of identity mapping and authorization
//! (no rule, no mapping; no permit without an allow rule naming the caller).

use fedgate::policy::{Effect, PolicyFile, PolicySet, Query, Vantage, authorize};
use fedgate::security::CallerId;
use fedgate::security::identity::{IdentityRules, Mapping};
use fedgate::wire::Limits;
use fedgate::wire::choria_v1::{FederationHeader, Transport, TransportHeaders};
use fedgate::wire::mcollective::{Ruby, marshal};
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

proptest! {
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
