//! `docs/configuration.md` (issue 22): the reference lists every key the config accepts, as the
//! config structs' own schema enumerates them, so a key added to a struct without its line in
//! the doc fails here. `FEDGATE_BLESS=1 cargo test --test config_reference` rewrites the
//! generated tables; read the diff before committing it.

use std::path::PathBuf;

use fedgate::config::reference;

const BEGIN: &str = "<!-- BEGIN generated reference";
const END: &str = "<!-- END generated reference -->";

fn doc_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/configuration.md")
}

/// The doc split around its generated section: before (with the BEGIN line), section, after.
fn split(doc: &str) -> (&str, &str, &str) {
    let begin = doc.find(BEGIN).expect("the BEGIN marker");
    let body = begin + doc[begin..].find('\n').expect("a line after BEGIN") + 1;
    let end = doc.find(END).expect("the END marker");
    (&doc[..body], &doc[body..end], &doc[end..])
}

#[test]
fn every_key_the_config_accepts_is_in_the_reference_and_the_tables_are_current() {
    let doc = std::fs::read_to_string(doc_path()).unwrap();
    let generated = reference::markdown();
    let (before, section, after) = split(&doc);
    if std::env::var_os("FEDGATE_BLESS").is_some() {
        std::fs::write(doc_path(), format!("{before}{generated}{after}")).unwrap();
        return;
    }
    let missing: Vec<String> = reference::keys()
        .into_iter()
        .map(|key| key.path)
        .filter(|path| !section.contains(&format!("| `{path}` |")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/configuration.md does not list these keys the config accepts: {missing:?}\n\
         run `FEDGATE_BLESS=1 cargo test --test config_reference` and read the diff"
    );
    assert!(
        section == generated,
        "docs/configuration.md's key tables differ from the config structs (a default, type or \
         description changed, or a key went away); run `FEDGATE_BLESS=1 cargo test --test \
         config_reference` and read the diff"
    );
}

#[test]
fn the_walk_reaches_nested_tables_maps_and_enums() {
    let keys = reference::keys();
    let find = |path: &str| {
        keys.iter()
            .find(|k| k.path == path)
            .unwrap_or_else(|| panic!("{path} is not in the reference"))
    };
    let cert = find("collectives.<name>.tls.certificate");
    assert_eq!(
        (cert.kind.as_str(), cert.default.as_str()),
        ("string", "required")
    );
    let inline = find("federations.<name>.collectives.<name>.signer.key");
    assert_eq!(inline.default, "required");
    let mode = find("federations.<name>.mode");
    assert_eq!(mode.kind, "`\"resign\"` | `\"pass-through\"`");
    assert_eq!(mode.default, "`\"resign\"`");
    assert_eq!(find("federations.<name>.max_hops").default, "`8`");
    assert_eq!(find("instance.name").default, "unset");
    assert_eq!(
        find("legacy.<name>.bridge.agents").default,
        "`[\"discovery\", \"rpcutil\"]`"
    );
    assert_eq!(find("registry.authors.<name>").kind, "string");
    assert!(!find("edge.max_connections").meaning.is_empty());
    // Fields the config computes (`#[serde(skip)]`) are not keys.
    assert!(
        keys.iter()
            .all(|k| !k.path.contains("trusted") && k.path != "rules")
    );
}

#[test]
fn the_schema_refuses_unknown_keys_as_the_loader_does() {
    let schema = reference::schema();
    assert_eq!(
        schema["additionalProperties"],
        serde_json::Value::Bool(false)
    );
    let defs = schema["$defs"].as_object().unwrap();
    for (name, def) in defs {
        if def.get("properties").is_some() {
            assert_eq!(
                def["additionalProperties"],
                serde_json::Value::Bool(false),
                "{name} accepts unknown keys in the schema"
            );
        }
    }
}
