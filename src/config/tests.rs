//! Valid and invalid config fixtures, each invalid one naming its key.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use super::*;
use crate::security::devpki::{self, DevPki, DevPkiOptions, RealmKind, RealmSpec};
use crate::wire::Limits;

/// A small PKI shared by every run: generated once into the temp dir and renamed into place.
fn pki() -> &'static (DevPki, PathBuf) {
    static PKI: OnceLock<(DevPki, PathBuf)> = OnceLock::new();
    PKI.get_or_init(|| {
        let dir = std::env::temp_dir().join("fedgate-config-test-pki-v1");
        if let Ok(pki) = DevPki::load(&dir) {
            return (pki, dir);
        }
        let staging = dir.with_extension(format!("staging-{}", std::process::id()));
        let options = DevPkiOptions {
            realms: vec![
                RealmSpec::new("prod", RealmKind::Federation),
                RealmSpec::new("london", RealmKind::Collective),
                RealmSpec::new("tokyo", RealmKind::Collective),
            ],
            users: vec!["alice".into()],
            force: true,
            ..DevPkiOptions::default()
        };
        devpki::generate(&staging, &options).unwrap();
        if std::fs::rename(&staging, &dir).is_err() {
            let _ = std::fs::remove_dir_all(&staging);
        }
        (DevPki::load(&dir).unwrap(), dir)
    })
}

/// Config files are written per process so parallel runs do not overwrite each other.
fn config_dir() -> PathBuf {
    std::env::temp_dir().join(format!("fedgate-config-tests-{}", std::process::id()))
}

/// A network's block; a collective also gets fedgate's privileged signer from its CA.
fn realm_block(realm: &str, table: &str) -> String {
    let r = pki().0.realm(realm).unwrap();
    let mut block = format!(
        "[{table}]\nnats = [\"tls://127.0.0.1:1\"]\nca = {:?}\ntls = {{ certificate = {:?}, key = {:?} }}\n",
        r.ca, r.fedgate.cert, r.fedgate.key
    );
    if let (true, Some(signer)) = (table.contains("collectives."), &r.privileged) {
        block.push_str(&signer_line(&signer.cert, &signer.key));
    }
    block
}

fn signer_line(cert: &Path, key: &Path) -> String {
    format!("signer = {{ certificate = {cert:?}, key = {key:?} }}\n")
}

fn federation(extra: &str) -> String {
    format!(
        "{}members = [\"tokyo\"]\n{extra}\n{}{}",
        realm_block("prod", "federations.prod"),
        realm_block("london", "federations.prod.collectives.london"),
        realm_block("tokyo", "collectives.tokyo"),
    )
}

fn write(name: &str, text: &str) -> PathBuf {
    let dir = config_dir();
    std::fs::create_dir_all(dir.join("policies")).unwrap();
    let path = dir.join(name);
    // Re-signing federations need policy and audit; every config fixture gets them unless it
    // says otherwise (rules files are written here too).
    let config = text.contains("[federations.");
    let gate = if !config || text.contains("[policy]") || text.contains("# no gate") {
        String::new()
    } else {
        "[policy]\ndir = \"policies\"\n\n[audit]\nfile = \"audit.log\"\n\n".to_string()
    };
    std::fs::write(&path, format!("{gate}{text}")).unwrap();
    path
}

#[test]
fn resign_mode_needs_policy_and_audit() {
    let text = format!("# no gate\n{}", federation(""));
    let err = Config::load(&write("no-gate.toml", &text))
        .unwrap_err()
        .to_string();
    assert!(err.contains("`policy.dir`: is required"), "{err}");
    let text = format!(
        "# no gate\n[policy]\ndir = \"policies\"\n\n{}",
        federation("")
    );
    let err = Config::load(&write("no-audit.toml", &text))
        .unwrap_err()
        .to_string();
    assert!(err.contains("`audit.file`: is required"), "{err}");
    let text = format!(
        "[policy]\ndir = \"policies\"\n\n[audit]\nfile = \"a.log\"\nrotate_bytes = 10\n\n{}",
        federation("")
    );
    let err = Config::load(&write("small-rotate.toml", &text))
        .unwrap_err()
        .to_string();
    assert!(err.contains("`audit.rotate_bytes`"), "{err}");
}

#[test]
fn the_audit_trail_needs_a_sink_and_a_sound_stream() {
    let load = |name: &str, audit: &str| {
        let text = format!(
            "[policy]\ndir = \"policies\"\n\n[audit]\n{audit}\n\n{}",
            federation("")
        );
        Config::load(&write(name, &text))
    };
    let err = load("no-sink.toml", "fsync = \"always\"")
        .unwrap_err()
        .to_string();
    assert!(err.contains("`audit`: needs a sink"), "{err}");
    let stream_only = load(
        "stream-only.toml",
        "[audit.jetstream]\nnats = [\"nats://127.0.0.1:4222\"]",
    )
    .unwrap();
    let audit = stream_only.audit.as_ref().unwrap();
    assert!(audit.file_options("gw1").is_none());
    let options = audit.stream_options("gw1.example.net").unwrap();
    assert_eq!(
        (options.stream.as_str(), options.chain_subject().as_str()),
        ("FEDGATE_AUDIT", "fedgate.audit.gw1_example_net")
    );
    assert_eq!(options.duplicate_window, Duration::from_secs(120));
    for (name, bad, key) in [
        (
            "js-subject.toml",
            "subject = \"audit.*\"",
            "audit.jetstream.subject",
        ),
        (
            "js-stream.toml",
            "stream = \"a.b\"",
            "audit.jetstream.stream",
        ),
        (
            "js-window.toml",
            "duplicate_window_s = 0",
            "audit.jetstream.duplicate_window_s",
        ),
        (
            "js-bytes.toml",
            "max_bytes = 1000",
            "audit.jetstream.max_bytes",
        ),
        (
            "js-tls.toml",
            "nats = [\"tls://127.0.0.1:4222\"]",
            "audit.jetstream.ca",
        ),
    ] {
        let nats = if bad.starts_with("nats") {
            String::new()
        } else {
            "nats = [\"nats://127.0.0.1:4222\"]\n".into()
        };
        let err = load(
            name,
            &format!("file = \"a.log\"\n[audit.jetstream]\n{nats}{bad}"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains(&format!("`{key}`")), "{name}: {err}");
    }
}

#[test]
fn a_federation_with_inline_and_referenced_members_loads() {
    let path = write(
        "valid.toml",
        &format!(
            "[instance]\nname = \"fb1\"\nstats_interval = 1\n\n{}",
            federation("")
        ),
    );
    let config = Config::load(&path).unwrap();
    let prod = config.federation("prod").unwrap();
    assert_eq!(prod.cluster_name("prod"), "prod");
    assert_eq!(
        prod.members,
        vec!["tokyo".to_string(), "london".to_string()]
    );
    assert_eq!(prod.max_hops, 8);
    let routes = config.routes("prod").unwrap();
    assert_eq!(routes.get("london"), Some(&Route::Direct));
    assert_eq!(routes.get("tokyo"), Some(&Route::Direct));
    assert_eq!(config.instance.name_or_default(), "fb1");
    assert_eq!(config.served_federations(), vec!["prod"]);
}

#[test]
fn a_member_federation_routes_its_collectives_through_itself() {
    let text = format!(
        "[instance]\nserve = [\"global\"]\n\n{}members = [\"prod\"]\nmode = \"pass-through\"\n\n{}members = [\"london\", \"paris\"]\n",
        realm_block("prod", "federations.global"),
        realm_block("prod", "federations.prod"),
    );
    let config = Config::load(&write("chained.toml", &text)).unwrap();
    let routes = config.routes("global").unwrap();
    assert_eq!(routes.get("london"), Some(&Route::Via("prod".into())));
    assert_eq!(routes.get("paris"), Some(&Route::Via("prod".into())));
}

#[test]
fn a_collective_may_belong_to_two_federations() {
    let text = format!(
        "{}{}{}{}",
        realm_block("prod", "federations.prod"),
        realm_block("london", "federations.prod.collectives.london"),
        realm_block("prod", "federations.dr").replace(
            "[federations.dr]",
            "[federations.dr]\ncluster = \"disaster-recovery\""
        ),
        realm_block("london", "federations.dr.collectives.london"),
    );
    let config = Config::load(&write("shared.toml", &text)).unwrap();
    assert_eq!(
        config.federation("prod").unwrap().members,
        vec!["london".to_string()]
    );
    assert_eq!(
        config.federation("dr").unwrap().members,
        vec!["london".to_string()]
    );
    assert_eq!(
        config.federation("dr").unwrap().cluster_name("dr"),
        "disaster-recovery"
    );
    assert_eq!(config.served_federations(), vec!["dr", "prod"]);
}

#[test]
fn invalid_configs_name_the_key() {
    let london = pki().0.realm("london").unwrap();
    let tokyo = pki().0.realm("tokyo").unwrap();
    let foreign_identity = realm_block("tokyo", "collectives.tokyo")
        .replace(&format!("{:?}", tokyo.ca), &format!("{:?}", london.ca));
    let conflicting = federation("").replace(
        "[collectives.tokyo]",
        &format!("[federations.prod.collectives.tokyo]\nnats = [\"tls://127.0.0.1:9\"]\nca = {:?}\n\n[collectives.tokyo]", tokyo.ca),
    );
    let cases: Vec<(String, &str)> = vec![
        (federation("colour = \"blue\""), "colour"),
        (
            federation("").replace("members = [\"tokyo\"]", "members = [\"tokyo\", \"paris\"]"),
            "federations.prod.members",
        ),
        (
            format!(
                "[instance]\nserve = [\"prod\"]\n{}",
                federation("").replace("members = [\"tokyo\"]", "members = [\"prod\"]")
            ),
            "federations.prod.members",
        ),
        (foreign_identity, "collectives.tokyo.tls"),
        (conflicting, "federations.prod.collectives.tokyo"),
        (federation("max_hops = 1"), "federations.prod.max_hops"),
        (
            federation("batch_size = 5000"),
            "federations.prod.batch_size",
        ),
        (
            format!("[instance]\nserve = [\"nope\"]\n{}", federation("")),
            "instance.serve",
        ),
        (
            federation("").replace(&format!("ca = {:?}", tokyo.ca), "ca = \"missing.pem\""),
            "collectives.tokyo.ca",
        ),
        (
            "[collectives.plain]\nnats = [\"tls://127.0.0.1:1\"]\n".into(),
            "collectives.plain.ca",
        ),
        (
            "[collectives.\"lon.don\"]\nnats = [\"tls://x:1\"]\nca = \"x\"\n".into(),
            "collectives.lon.don",
        ),
    ];
    for (i, (text, key)) in cases.iter().enumerate() {
        let path = write(&format!("bad-{i}.toml"), text);
        let err = Config::load(&path).unwrap_err().to_string();
        assert!(err.contains(key), "case {i}: {err} should name {key}");
    }
}

#[test]
fn a_group_readable_key_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let london = pki().0.realm("london").unwrap();
    let key = config_dir().join("exposed-key.pem");
    std::fs::create_dir_all(key.parent().unwrap()).unwrap();
    std::fs::copy(&london.fedgate.key, &key).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
    let text = realm_block("london", "collectives.london")
        .replace(&format!("{:?}", london.fedgate.key), &format!("{key:?}"));
    let err = Config::load(&write("exposed.toml", &text))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("collectives.london.tls") && err.contains("readable by group or others"),
        "{err}"
    );
}

#[test]
fn relative_paths_resolve_from_the_config_folder() {
    let dir = config_dir();
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(&pki().0.realm("london").unwrap().ca, dir.join("rel-ca.pem")).unwrap();
    let config = Config::load(&write(
        "rel.toml",
        "[collectives.london]\nnats = [\"tls://127.0.0.1:1\"]\nca = \"rel-ca.pem\"\n",
    ))
    .unwrap();
    let london = config.collective("london").unwrap();
    assert_eq!(london.ca, Some(dir.join("rel-ca.pem")));
    assert_eq!(
        london.endpoint().ca.as_deref(),
        Some(Path::new(&dir.join("rel-ca.pem")))
    );
}

/// The federation config with london's signer replaced by `cert` and `key`.
fn with_london_signer(cert: &Path, key: &Path) -> String {
    let london = pki().0.realm("london").unwrap();
    let own = london.privileged.as_ref().unwrap();
    federation("").replace(&signer_line(&own.cert, &own.key), &signer_line(cert, key))
}

#[test]
fn resign_mode_loads_signers_patterns_and_internal_names() {
    let text = federation("max_ttl = 120").replace(
        "[collectives.tokyo]",
        "[collectives.tokyo]\ninternal_name = \"mcollective\"",
    );
    let config = Config::load(&write("resign.toml", &text)).unwrap();
    let prod = config.federation("prod").unwrap();
    assert_eq!((prod.mode, prod.max_ttl), (FederationMode::Resign, 120));
    let tokyo = config.collective("tokyo").unwrap();
    assert_eq!(tokyo.internal_name("tokyo"), "mcollective");
    assert_eq!(
        config.collective("london").unwrap().internal_name("london"),
        "london"
    );
    assert!(prod.verifier(Limits::default()).unwrap().is_some());
    // No rules file: every caller is denied.
    assert!(config.identity_rules().is_empty());

    // A collective whose servers use other privileged patterns may accept another signer.
    let london = pki().0.realm("london").unwrap();
    let text = with_london_signer(&london.fedgate.cert, &london.fedgate.key).replace(
        "[federations.prod.collectives.london]",
        "[federations.prod.collectives.london]\nprivileged_users = ['^fedgate\\.mcollective$']",
    );
    Config::load(&write("custom-privileged.toml", &text)).unwrap();
}

#[test]
fn start_up_refuses_unusable_privileged_signers() {
    use std::os::unix::fs::PermissionsExt;
    let london = pki().0.realm("london").unwrap();
    let tokyo = pki().0.realm("tokyo").unwrap();
    let (own, theirs) = (
        london.privileged.as_ref().unwrap(),
        tokyo.privileged.as_ref().unwrap(),
    );
    let exposed = config_dir().join("exposed-privileged-key.pem");
    std::fs::create_dir_all(config_dir()).unwrap();
    std::fs::copy(&own.key, &exposed).unwrap();
    std::fs::set_permissions(&exposed, std::fs::Permissions::from_mode(0o644)).unwrap();
    let key = "collectives.london.signer";
    let cases = [
        // Issued by tokyo's CA, not london's.
        (
            with_london_signer(&theirs.cert, &theirs.key),
            "does not chain to the CA",
        ),
        // Chains to london's CA, but fedgate.mcollective is not a privileged name.
        (
            with_london_signer(&london.fedgate.cert, &london.fedgate.key),
            "match none of the privileged patterns",
        ),
        // The right certificate with another key.
        (
            with_london_signer(&own.cert, &london.fedgate.key),
            "key does not match",
        ),
        (
            with_london_signer(&own.cert, &exposed),
            "readable by group or others",
        ),
    ];
    for (i, (text, want)) in cases.iter().enumerate() {
        let err = Config::load(&write(&format!("signer-{i}.toml"), text))
            .unwrap_err()
            .to_string();
        assert!(err.contains(key) && err.contains(want), "case {i}: {err}");
    }
    // The refusal names the offending file.
    let err = Config::load(&write("signer-file.toml", &cases[0].0))
        .unwrap_err()
        .to_string();
    assert!(err.contains(&theirs.cert.display().to_string()), "{err}");
}

#[test]
fn resign_mode_needs_a_signer_a_ca_and_no_chained_federation() {
    let london = pki().0.realm("london").unwrap();
    let own = london.privileged.as_ref().unwrap();
    let no_signer = federation("").replace(&signer_line(&own.cert, &own.key), "");
    let no_ca = format!(
        "[federations.prod]\nnats = [\"nats://127.0.0.1:1\"]\n\n{}",
        realm_block("london", "federations.prod.collectives.london")
    );
    let chained = format!(
        "[instance]\nserve = [\"global\"]\n\n{}members = [\"prod\"]\n\n{}",
        realm_block("prod", "federations.global"),
        federation(""),
    );
    let cases = [
        (no_signer, "collectives.london.signer", "is required"),
        (no_ca, "federations.prod.ca", "resign mode"),
        (chained, "federations.global.members", "pass-through"),
        (
            federation("max_ttl = 10"),
            "federations.prod.max_ttl",
            "between 30",
        ),
        (
            federation("privileged_users = ['(']"),
            "federations.prod.privileged_users",
            "invalid name pattern",
        ),
    ];
    for (i, (text, key, want)) in cases.iter().enumerate() {
        let err = Config::load(&write(&format!("resign-{i}.toml"), text))
            .unwrap_err()
            .to_string();
        assert!(err.contains(key) && err.contains(want), "case {i}: {err}");
    }
    // Pass-through needs none of it.
    let passthrough =
        federation("mode = \"pass-through\"").replace(&signer_line(&own.cert, &own.key), "");
    Config::load(&write("passthrough.toml", &passthrough)).unwrap();
}

#[test]
fn identity_rules_must_name_known_realms_and_collectives() {
    let rule = |from: &str, to: &str| {
        format!("[[rule]]\nfrom = \"{from}\"\nto = [\"{to}\"]\nglob = \"choria=*\"\nas = \"$0\"\n")
    };
    let good = write("rules-good.toml", &rule("prod", "london"));
    let text = format!("[identity]\nrules = {good:?}\n\n{}", federation(""));
    let config = Config::load(&write("rules.toml", &text)).unwrap();
    assert_eq!(config.identity_rules().len(), 1);
    for (i, (rules, want)) in [
        (
            format!("{}{}", rule("prod", "london"), rule("paris", "london")),
            "rule 2: from = \"paris\"",
        ),
        (rule("prod", "paris"), "rule 1: to names \"paris\""),
        (
            "[[rule]]\nfrom = \"prod\"\n".to_string(),
            "missing field `to`",
        ),
    ]
    .iter()
    .enumerate()
    {
        let file = write(&format!("rules-bad-{i}.toml"), rules);
        let text = format!("[identity]\nrules = {file:?}\n\n{}", federation(""));
        let err = Config::load(&write(&format!("rules-{i}.toml"), &text))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("identity.rules") && err.contains(want),
            "case {i}: {err}"
        );
    }
}

/// A registry config: the federation without local policy, plus `[registry]`.
fn registry_config(name: &str, extra: &str) -> PathBuf {
    let text = format!(
        "# no gate\n[audit]\nfile = \"audit.log\"\n\n[registry]\nnats = [\"nats://127.0.0.1:1\"]\ncache = \"cache\"\n\n{extra}{}",
        federation("")
    );
    write(name, &text)
}

#[test]
fn with_a_registry_the_rules_come_from_its_revision() {
    // Local rules beside a registry would silently disagree with it.
    let err = Config::load(&registry_config(
        "reg-local.toml",
        "[policy]\ndir = \"policies\"\n\n",
    ))
    .unwrap_err()
    .to_string();
    assert!(err.contains("`policy`: comes from the registry"), "{err}");

    // Without a revision the rules are pending; a set completes the config as start-up would.
    let path = registry_config("reg.toml", "");
    let base = Config::load(&path).unwrap();
    assert!(base.rules_pending());
    let set = config_dir().join("reg-set");
    std::fs::create_dir_all(set.join("policies")).unwrap();
    std::fs::write(
        set.join("policies/rpcutil.policy"),
        "policy default allow\n",
    )
    .unwrap();
    std::fs::write(
        set.join("identity.toml"),
        "[[rule]]\nfrom = \"prod\"\nto = [\"london\"]\nglob = \"*\"\nas = \"$0\"\n",
    )
    .unwrap();
    std::fs::write(
        set.join("config.toml"),
        "[policy]\nunconfigured = \"allow\"\n\n[federations.prod]\nmembers = [\"london\"]\n",
    )
    .unwrap();
    let completed = base.with_set(&set, 7, &path).unwrap();
    assert_eq!(completed.registry_revision(), Some(7));
    assert!(!completed.rules_pending());
    assert_eq!(completed.federations["prod"].members, ["london"]);
    assert_eq!(
        completed
            .policy
            .as_ref()
            .map(|p| (p.dir.clone(), p.unconfigured)),
        Some((set.join("policies"), crate::policy::Effect::Allow))
    );
    assert!(!completed.identity_rules().is_empty());

    // Membership of a federation the instance does not define, and rules naming a collective
    // it does not know, are refused with the key.
    std::fs::write(
        set.join("config.toml"),
        "[federations.nowhere]\nmembers = [\"london\"]\n",
    )
    .unwrap();
    let err = base.with_set(&set, 8, &path).unwrap_err().to_string();
    assert!(
        err.contains("`federations.nowhere`: federation nowhere is not defined"),
        "{err}"
    );
    std::fs::remove_file(set.join("config.toml")).unwrap();
    std::fs::write(
        set.join("identity.toml"),
        "[[rule]]\nfrom = \"prod\"\nto = [\"paris\"]\nglob = \"*\"\nas = \"$0\"\n",
    )
    .unwrap();
    let err = base.with_set(&set, 9, &path).unwrap_err().to_string();
    assert!(
        err.contains("`identity.rules`") && err.contains("paris"),
        "{err}"
    );
}
