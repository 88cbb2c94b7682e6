//! `fedgate run` under systemd (`Type=notify`, issue 22 packaging): READY=1 once the last
//! status line says it serves, RELOADING=1 then READY=1 around a SIGHUP, STOPPING=1 when a
//! SIGTERM starts the drain. The test binds the NOTIFY_SOCKET datagram socket systemd would.

mod support;

use std::io::Read;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::Duration;

use fedgate::edge::auth::TokenKeys;
use support::{Network, collective_block, gate_block, realm};

/// A config serving london's collective and the edge, whose line ("edge on") comes last.
fn config(dir: &Path, london: &Network) -> PathBuf {
    let key = dir.join("token.key");
    std::fs::write(&key, TokenKeys::generate_pem().unwrap()).unwrap();
    let rules = dir.join("identity.toml");
    std::fs::write(&rules, "").unwrap();
    let edge = realm("edge");
    let path = dir.join("fedgate.toml");
    std::fs::write(
        &path,
        format!(
            "[identity]\nrules = {rules:?}\n\n{}{}\n[edge]\nlisten = \"127.0.0.1:0\"\n\
             tls = {{ certificate = {:?}, key = {:?} }}\ntoken_key = {key:?}\n",
            gate_block(dir, &[], ""),
            collective_block("collectives.london", london),
            edge.server.cert,
            edge.server.key,
        ),
    )
    .unwrap();
    path
}

/// The next notification, as systemd would read it.
fn next(socket: &UnixDatagram) -> String {
    let mut buf = [0u8; 4096];
    let len = socket
        .recv(&mut buf)
        .expect("a notification within the timeout");
    String::from_utf8_lossy(&buf[..len]).into_owned()
}

fn signal(child: &std::process::Child, name: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn run_tells_systemd_it_is_ready_after_its_ready_line_reloads_on_sighup_and_stops_at_sigterm() {
    let london = Network::start("london");
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &london);
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut child = std::process::Command::new(support::fedgate_bin())
        .args(["run", "--instance", "notify", "--config"])
        .arg(&config)
        .env("NOTIFY_SOCKET", &socket_path)
        .env_remove("RUST_LOG")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();

    let ready = next(&socket);
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready:?}");
    assert!(
        ready.contains("STATUS=instance notify serving"),
        "{ready:?}"
    );
    // The line was written before READY=1 was sent, so it is in the pipe already: read what
    // is there without waiting.
    rustix::fs::fcntl_setfl(&stderr, rustix::fs::OFlags::NONBLOCK).unwrap();
    let mut before = Vec::new();
    let _ = stderr.read_to_end(&mut before);
    let before = String::from_utf8_lossy(&before).into_owned();
    assert!(
        before
            .lines()
            .last()
            .is_some_and(|l| l.contains(": edge on wss://")),
        "READY=1 came before the edge's line, the last of start-up:\n{before}"
    );

    signal(&child, "HUP");
    let reloading = next(&socket);
    assert!(
        reloading.lines().any(|l| l == "RELOADING=1")
            && reloading.lines().any(|l| l.starts_with("MONOTONIC_USEC=")),
        "{reloading:?}"
    );
    assert_eq!(next(&socket).trim(), "READY=1");

    signal(&child, "TERM");
    assert_eq!(next(&socket).trim(), "STOPPING=1");
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
}
