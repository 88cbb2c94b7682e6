//! Where the rules come from: an identity rules file that must name known realms, or a
//! registry revision.

use super::*;

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

/// A registry config: the federation without local policy, plus `[registry]` trusting the
/// author alice.
fn registry_config(name: &str, extra: &str) -> PathBuf {
    registry_config_with(name, "authors = { alice = \"alice.pub\" }\n", extra)
}

/// A registry config with these `[registry]` lines about authors.
fn registry_config_with(name: &str, authors: &str, extra: &str) -> PathBuf {
    let public = config_dir().join("alice.pub");
    if !public.exists() {
        let (_, pem) = crate::registry::AuthorSigner::generate().unwrap();
        std::fs::create_dir_all(config_dir()).unwrap();
        std::fs::write(&public, pem).unwrap();
    }
    let text = format!(
        "# no gate\n[audit]\nfile = \"audit.log\"\n\n[registry]\nnats = [\"nats://127.0.0.1:1\"]\ncache = \"cache\"\n{authors}\n{extra}{}",
        federation("")
    );
    write(name, &text)
}

#[test]
fn a_registry_needs_trusted_authors_with_ed25519_keys() {
    let config = Config::load(&registry_config("reg-alice.toml", "")).unwrap();
    let registry = config.registry.unwrap();
    assert_eq!(
        registry.trusted.keys().collect::<Vec<_>>(),
        ["alice"],
        "{registry:?}"
    );
    let not_a_key = config_dir().join("not-a-key.pub");
    std::fs::write(&not_a_key, "hello\n").unwrap();
    let rsa = config_dir().join("rsa.pub");
    std::fs::write(
        &rsa,
        "-----BEGIN PUBLIC KEY-----\nMFwwDQYJKoZIhvcNAQEBBQADSwAwSAJBAK2cy0d5ccfMeBfwaXUKmClfLk7HOHDj\nSwfB3aThvjpzl8oVjtR/f2Y4hywk0ngGkeevXpXITBNbV3utzW6jEuMCAwEAAQ==\n-----END PUBLIC KEY-----\n",
    )
    .unwrap();
    for (i, (authors, want)) in [
        ("", "`registry.authors`: names no trusted author"),
        (
            "authors = {}\n",
            "`registry.authors`: names no trusted author",
        ),
        (
            "authors = { bob = \"missing.pub\" }\n",
            "`registry.authors.bob`: ",
        ),
        (
            "authors = { bob = \"not-a-key.pub\" }\n",
            "not a PUBLIC KEY PEM file",
        ),
        (
            "authors = { bob = \"rsa.pub\" }\n",
            "not an Ed25519 public key",
        ),
        (
            "authors = { \"bob smith\" = \"alice.pub\" }\n",
            "must be 1 to 64 letters",
        ),
        (
            "authors = { alice = \"alice.pub\", bob = \"alice.pub\" }\n",
            "`registry.authors.bob`: is the same key as author alice",
        ),
    ]
    .iter()
    .enumerate()
    {
        let err = Config::load(&registry_config_with(
            &format!("reg-authors-{i}.toml"),
            authors,
            "",
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains(want), "case {i}: {err}");
    }
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
