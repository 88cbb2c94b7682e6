//! Re-signing federations: policy, the audit trail and its JetStream sink, privileged signers,
//! CAs, patterns and limits.

use std::time::Duration;

use super::*;
use crate::wire::Limits;

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
fn a_federation_takes_v2_callers_of_one_organization() {
    let key = "ab".repeat(32);
    let one = format!("issuers = {{ choria = \"{key}\" }}");
    let config = Config::load(&write("v2-callers.toml", &federation(&one))).unwrap();
    assert_eq!(config.federations["prod"].issuers.len(), 1);
    for (name, extra, want) in [
        (
            "v2-two-orgs.toml",
            format!("issuers = {{ choria = \"{key}\", acme = \"{key}\" }}"),
            "names 2 organizations",
        ),
        (
            "v2-bad-key.toml",
            "issuers = { choria = \"zz\" }".to_string(),
            "public key",
        ),
    ] {
        let err = Config::load(&write(name, &federation(&extra)))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`federations.prod.issuers`") && err.contains(want),
            "{err}"
        );
    }
}
