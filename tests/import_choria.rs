//! `fedgate config import-choria` (issue 22): a go-choria Federation Broker's `broker.conf`
//! becomes a fedgate config in pass-through mode that `fedgate config check` accepts, and every
//! key without an equivalent is named on stderr.

mod support;

use std::path::{Path, PathBuf};
use std::process::Output;

/// The fixture's ssldir, replaced by the test PKI's `prod` realm (Puppet's layout).
const FIXTURE_SSLDIR: &str = "/etc/choria/ssl";

fn fixture() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/choria/broker.conf");
    let text = std::fs::read_to_string(path).unwrap();
    let ssldir = support::realm("prod")
        .ca
        .parent()
        .unwrap()
        .parent()
        .unwrap();
    text.replace(FIXTURE_SSLDIR, &ssldir.to_string_lossy())
}

fn fedgate(args: &[&str]) -> Output {
    std::process::Command::new(support::fedgate_bin())
        .args(args)
        .env_remove("FEDGATE_CONFIG")
        .env_remove("FEDGATE_INSTANCE")
        .output()
        .unwrap()
}

fn write(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("broker.conf");
    std::fs::write(&path, text).unwrap();
    path
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn a_go_choria_broker_conf_becomes_a_pass_through_config_that_passes_config_check() {
    let dir = tempfile::tempdir().unwrap();
    let conf = write(dir.path(), &fixture());
    let out = dir.path().join("fedgate.toml");
    let imported = fedgate(&[
        "config",
        "import-choria",
        conf.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    let stderr = text(&imported.stderr);
    assert!(imported.status.success(), "{stderr}");

    // Every key that did not carry over is named, each on its own warning line.
    for key in [
        "logfile",
        "loglevel",
        "plugin.choria.federation.instance",
        "plugin.choria.network.client_port",
        "plugin.choria.network.peers",
        "plugin.choria.use_srv",
        "plugin.rpcaudit.logfile",
    ] {
        assert!(
            stderr.contains(&format!("warning: {key}: not mapped")),
            "{key} not named in:\n{stderr}"
        );
    }
    // Mapped keys are not reported as unmapped.
    for key in [
        "identity",
        "collectives",
        "plugin.choria.federation.cluster",
        "plugin.choria.federation_middleware_hosts",
        "plugin.choria.middleware_hosts",
        "plugin.choria.ssldir",
    ] {
        assert!(
            !stderr.contains(&format!("warning: {key}:")),
            "{key} reported in:\n{stderr}"
        );
    }

    let written = std::fs::read_to_string(&out).unwrap();
    let config: toml::Table = toml::from_str(&written).unwrap();
    let prod = &config["federations"]["prod"];
    assert_eq!(prod["mode"].as_str(), Some("pass-through"), "{written}");
    assert_eq!(prod["cluster"].as_str(), Some("prod"));
    assert_eq!(
        prod["nats"].as_array().unwrap()[0].as_str(),
        Some("nats://fed1.example.net:4222")
    );
    let members: Vec<&str> = prod["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m.as_str())
        .collect();
    assert_eq!(members, ["mcollective", "london"]);
    assert_eq!(
        config["collectives"]["london"]["nats"].as_array().unwrap()[0].as_str(),
        Some("nats://choria1.example.net:4222")
    );
    assert_eq!(config["instance"]["metrics"].as_str(), Some("0.0.0.0:8222"));
    assert_eq!(
        config["instance"]["name"].as_str(),
        Some("fedgate.mcollective")
    );

    let checked = fedgate(&["config", "check", out.to_str().unwrap()]);
    assert!(
        checked.status.success(),
        "{}\n{written}",
        text(&checked.stderr)
    );
    assert!(
        text(&checked.stdout).contains("would serve federations prod"),
        "{}",
        text(&checked.stdout)
    );
}

#[test]
fn without_output_file_the_config_goes_to_stdout_and_a_missing_network_exits_78_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let conf = write(dir.path(), &fixture());
    let printed = fedgate(&["config", "import-choria", conf.to_str().unwrap()]);
    assert!(printed.status.success(), "{}", text(&printed.stderr));
    assert!(text(&printed.stdout).contains("mode = \"pass-through\""));

    let without: String = fixture()
        .lines()
        .filter(|l| !l.starts_with("plugin.choria.federation_middleware_hosts"))
        .map(|l| format!("{l}\n"))
        .collect();
    let conf = write(dir.path(), &without);
    let refused = fedgate(&["config", "import-choria", conf.to_str().unwrap()]);
    assert_eq!(refused.status.code(), Some(78));
    let stderr = text(&refused.stderr);
    assert!(
        stderr.contains("`plugin.choria.federation_middleware_hosts`: is not set"),
        "{stderr}"
    );
    assert!(refused.stdout.is_empty());
}

#[test]
fn go_choria_defaults_apply_and_a_cluster_named_like_a_collective_keeps_its_queue_groups() {
    // The defaults: cluster and collective both `mcollective`; the file provider's paths.
    let prod = support::realm("prod");
    let dir = tempfile::tempdir().unwrap();
    let conf = write(
        dir.path(),
        &format!(
            "plugin.choria.broker_federation = yes\n\
             plugin.choria.federation_middleware_hosts = fed:4222\n\
             plugin.choria.middleware_hosts = coll:4222\n\
             plugin.security.provider = file\n\
             plugin.security.file.certificate = {}\n\
             plugin.security.file.key = {}\n\
             plugin.security.file.ca = {}\n",
            prod.fedgate.cert.display(),
            prod.fedgate.key.display(),
            prod.ca.display()
        ),
    );
    let out = dir.path().join("fedgate.toml");
    let imported = fedgate(&[
        "config",
        "import-choria",
        conf.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(imported.status.success(), "{}", text(&imported.stderr));
    let config: toml::Table = toml::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let federation = &config["federations"]["mcollective-federation"];
    assert_eq!(federation["cluster"].as_str(), Some("mcollective"));
    assert!(config["collectives"].get("mcollective").is_some());
    let checked = fedgate(&["config", "check", out.to_str().unwrap()]);
    assert!(checked.status.success(), "{}", text(&checked.stderr));
}
