//! `auth` blocks on every NATS network: files resolved from the config's folder, one method
//! per network, and refusals that name the network's key and the file.

use std::os::unix::fs::PermissionsExt;

use super::*;

/// Writes a secret file (mode 0600) beside the config files.
fn private_file(name: &str, text: &str) -> PathBuf {
    let path = config_dir().join(name);
    std::fs::create_dir_all(config_dir()).unwrap();
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// A config text for each kind of NATS network, its table key, and `auth` set to `block` (the
/// audit stream in a re-signing federation, which is where `[audit]` is checked).
fn every_network(block: &str) -> Vec<(&'static str, String)> {
    let auth = format!("auth = {block}\n");
    let plain = "nats = [\"nats://127.0.0.1:1\"]\n";
    vec![
        ("federations.prod", federation(&auth)),
        ("collectives.tokyo", format!("{}{auth}", federation(""))),
        ("replay", format!("[replay]\n{plain}{auth}")),
        (
            "audit.jetstream",
            format!(
                "[policy]\ndir = \"policies\"\n\n[audit]\n\n[audit.jetstream]\n{plain}{auth}\n{}",
                federation("")
            ),
        ),
        (
            "registry",
            format!("[registry]\n{plain}cache = \"cache\"\n{auth}"),
        ),
    ]
}

#[test]
fn every_nats_network_takes_an_auth_block_with_paths_from_the_config_folder() {
    let seed = nkeys::KeyPair::new_user().seed().unwrap();
    private_file("auth-token", "t0k3n\n");
    private_file("auth-password", "hunter2\n");
    private_file("auth-seed", &seed);
    private_file(
        "auth.creds",
        &format!(
            "-----BEGIN NATS USER JWT-----\neyJhbGciOiJlZDI1NTE5LW5rZXkifQ.e30.c2ln\n------END NATS USER JWT------\n-----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n"
        ),
    );
    let text = format!(
        "[policy]\ndir = \"policies\"\n\n[audit]\nfile = \"audit.log\"\n\n[audit.jetstream]\nnats = [\"nats://127.0.0.1:1\"]\nauth = {{ nkey = \"auth-seed\" }}\n\n[replay]\nnats = [\"nats://127.0.0.1:1\"]\nauth = {{ user = \"fedgate\", password_file = \"auth-password\" }}\n\n{}auth = {{ token_file = \"auth-token\" }}\n",
        federation("auth = { creds = \"auth.creds\" }")
    );
    let config = Config::load(&write("auth-all.toml", &text)).unwrap();
    let dir = config_dir();
    let auth = |endpoint: crate::nats::NatsEndpoint| endpoint.auth.unwrap();
    let prod = auth(config.federation("prod").unwrap().endpoint());
    assert_eq!(prod.creds, Some(dir.join("auth.creds")));
    let tokyo = auth(config.collective("tokyo").unwrap().endpoint());
    assert_eq!(tokyo.token_file, Some(dir.join("auth-token")));
    assert_eq!(config.collective("london").unwrap().auth, None);
    let replay = auth(config.replay.endpoint());
    assert_eq!(replay.user.as_deref(), Some("fedgate"));
    assert_eq!(replay.password_file, Some(dir.join("auth-password")));
    let stream = auth(
        config
            .audit
            .as_ref()
            .unwrap()
            .jetstream
            .as_ref()
            .unwrap()
            .endpoint(),
    );
    assert_eq!(stream.nkey, Some(dir.join("auth-seed")));
    let shown = format!("{config:?}");
    assert!(!shown.contains("hunter2") && !shown.contains("t0k3n") && !shown.contains(&seed));
}

#[test]
fn two_methods_on_one_network_are_refused_naming_it() {
    private_file("auth-token", "t0k3n\n");
    let block = "{ token_file = \"auth-token\", user = \"u\", password_file = \"auth-token\" }";
    for (i, (key, text)) in every_network(block).into_iter().enumerate() {
        let err = Config::load(&write(&format!("auth-two-{i}.toml"), &text))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("`{key}.auth`: names both `user` and `token_file`")),
            "{key}: {err}"
        );
    }
}

#[test]
fn a_missing_secret_file_is_refused_naming_the_key_and_the_file() {
    let missing = config_dir().join("no-such-token");
    for (i, (key, text)) in every_network("{ token_file = \"no-such-token\" }")
        .into_iter()
        .enumerate()
    {
        let err = Config::load(&write(&format!("auth-missing-{i}.toml"), &text))
            .unwrap_err()
            .to_string();
        let expected = format!(
            "`{key}.auth`: `token_file`: cannot read {}: No such file",
            missing.display()
        );
        assert!(err.contains(&expected), "{key}: {err}");
    }
}

#[test]
fn an_inline_password_is_refused_without_showing_it() {
    let text = format!(
        "{}auth = {{ user = \"u\", password = \"hunter2\" }}\n",
        federation("")
    );
    let err = Config::load(&write("auth-inline.toml", &text))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`collectives.tokyo.auth`: `password` is written inline"),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "{err}");
}
