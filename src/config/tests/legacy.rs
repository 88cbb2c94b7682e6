//! `[legacy.NAME]`'s broker settings: TLS only with `amqps://`, a client identity only with the
//! CA it chains to, and a reconnection back-off in range.

use super::*;

/// A legacy collective on `amqp` with `extra` lines; its key files are any that exist.
fn legacy(amqp: &str, extra: &str) -> String {
    let tokyo = pki().0.realm("tokyo").unwrap();
    std::fs::create_dir_all(config_dir()).unwrap();
    format!(
        "[legacy.oldsite]\namqp = {amqp:?}\nserver_public = {:?}\nsigners = {:?}\n{extra}\n",
        tokyo.ca,
        config_dir()
    )
}

fn identity(realm: &str) -> String {
    let r = pki().0.realm(realm).unwrap();
    format!(
        "tls = {{ certificate = {:?}, key = {:?} }}\n",
        r.fedgate.cert, r.fedgate.key
    )
}

#[test]
fn broker_tls_and_back_off_settings_load() {
    let tokyo = pki().0.realm("tokyo").unwrap();
    let text = legacy(
        "amqps://u:p@localhost:5671/%2f",
        &format!("ca = {:?}\n{}", tokyo.ca, identity("tokyo")),
    );
    let config = Config::load(&write("legacy-tls.toml", &text)).unwrap();
    let oldsite = &config.legacy["oldsite"];
    assert_eq!(oldsite.ca.as_deref(), Some(tokyo.ca.as_path()));
    assert_eq!(
        oldsite.tls.as_ref().map(|t| t.certificate.clone()),
        Some(tokyo.fedgate.cert.clone())
    );
    assert_eq!(
        (oldsite.reconnect_min_ms, oldsite.reconnect_max_ms),
        (100, 5_000)
    );
    let plain = legacy(
        "amqp://u:p@127.0.0.1:5672/%2f",
        "reconnect_min_ms = 1\nreconnect_max_ms = 1",
    );
    Config::load(&write("legacy-fast.toml", &plain)).unwrap();
}

#[test]
fn invalid_broker_settings_name_the_key() {
    let tokyo = pki().0.realm("tokyo").unwrap();
    let ca = format!("ca = {:?}\n", tokyo.ca);
    let plain = "amqp://u:p@127.0.0.1:5672/%2f";
    let tls = "amqps://u:p@localhost:5671/%2f";
    let cases: Vec<(String, &str, &str)> = vec![
        (legacy(plain, &ca), "legacy.oldsite.amqp", "amqps://"),
        (
            legacy(plain, &identity("tokyo")),
            "legacy.oldsite.amqp",
            "amqps://",
        ),
        (
            legacy(tls, &identity("tokyo")),
            "legacy.oldsite.ca",
            "required",
        ),
        (
            legacy(tls, "ca = \"missing.pem\""),
            "legacy.oldsite.ca",
            "missing.pem",
        ),
        (
            legacy(tls, &format!("{ca}{}", identity("london"))),
            "legacy.oldsite.tls",
            "",
        ),
        (
            legacy("amqp://[::1", ""),
            "legacy.oldsite.amqp",
            "not a valid URL",
        ),
        (
            legacy(plain, "reconnect_min_ms = 0"),
            "legacy.oldsite.reconnect_min_ms",
            "1 <= min",
        ),
        (
            legacy(plain, "reconnect_min_ms = 6000"),
            "legacy.oldsite.reconnect_min_ms",
            "found 6000 and 5000",
        ),
        (
            legacy(plain, "reconnect_max_ms = 600001"),
            "legacy.oldsite.reconnect_min_ms",
            "600000",
        ),
    ];
    for (i, (text, key, problem)) in cases.iter().enumerate() {
        let path = write(&format!("bad-legacy-{i}.toml"), text);
        let err = Config::load(&path).unwrap_err().to_string();
        assert!(
            err.contains(key) && err.contains(problem),
            "case {i}: {err} should name {key} and {problem:?}"
        );
    }
}
