//! Files that hold secrets or audit data are their owner's alone (issue 20, finding 9): the
//! audit trail is created 0600, the demo writes its users file 0600, and `fedgate run` warns
//! about an audit file, users file or token key that group or others can read. Real `fedgate
//! run` and nats-server.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use fedgate::edge::auth::TokenKeys;
use support::{BrokerProcess, Network, collective_block, gate_block, realm};

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_creates_its_audit_trail_private_and_warns_about_exposed_files() {
    let london = Network::start("london");
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("token.key");
    std::fs::write(&key, TokenKeys::generate_pem().unwrap()).unwrap();
    set_mode(&key, 0o644);
    let users = dir.path().join("users.toml");
    std::fs::write(&users, "").unwrap();
    set_mode(&users, 0o640);
    let rules = dir.path().join("identity.toml");
    std::fs::write(&rules, "").unwrap();
    let edge = realm("edge");
    let config = dir.path().join("fedgate.toml");
    std::fs::write(
        &config,
        format!(
            "[identity]\nrules = {rules:?}\n\n{}{}\n[edge]\nlisten = \"127.0.0.1:0\"\n\
             tls = {{ certificate = {:?}, key = {:?} }}\norigins = [\"https://ops.example\"]\n\
             token_key = {key:?}\nusers = {users:?}\n",
            gate_block(dir.path(), &[], ""),
            collective_block("collectives.london", &london),
            edge.server.cert,
            edge.server.key,
        ),
    )
    .unwrap();
    let audit = dir.path().join("audit/audit.log");

    let mut run = BrokerProcess::spawn(&config, "modes").await;
    assert_eq!(mode(&audit), 0o600, "the audit file is created private");
    let warnings: Vec<String> = run
        .logs()
        .into_iter()
        .filter(|l| l.contains("warning:"))
        .collect();
    let named = |what: &str, path: &Path| {
        warnings
            .iter()
            .any(|w| w.contains(what) && w.contains(&path.display().to_string()))
    };
    assert!(named("token key", &key), "{warnings:#?}");
    assert!(named("users file", &users), "{warnings:#?}");
    assert!(!named("audit file", &audit), "{warnings:#?}");
    run.terminate().await;

    // An audit file someone opened up is named at the next start.
    set_mode(&audit, 0o644);
    set_mode(&key, 0o600);
    set_mode(&users, 0o600);
    let mut run = BrokerProcess::spawn(&config, "modes").await;
    let warnings: Vec<String> = run
        .logs()
        .into_iter()
        .filter(|l| l.contains("warning:"))
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    assert!(warnings[0].contains("audit file"), "{warnings:#?}");
    run.terminate().await;
}

#[test]
fn the_demo_writes_its_users_file_and_audit_trails_private() {
    let dir = tempfile::tempdir().unwrap();
    let output = support::fedgate_dev(&["demo", "--smoke", "--nodes", "2", "--port", "0", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let users: Vec<_> = walk(dir.path())
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n == "users.toml"))
        .collect();
    assert!(!users.is_empty(), "the demo writes a users file");
    let audit: Vec<_> = walk(&dir.path().join("audit"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    assert!(!audit.is_empty(), "the demo writes audit trails");
    for path in users.iter().chain(&audit) {
        assert_eq!(mode(path), 0o600, "{}", path.display());
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(walk(&path));
        } else {
            found.push(path);
        }
    }
    found
}
