//! The web page in a real browser: Debian's Chromium, driven by playwright-core
//! (`web-demo/e2e/browser.mjs`), against `fedgate demo` with the whole topology. Screenshots of
//! every step go to `target/browser-artifacts`.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `fedgate demo`, interrupted (it then stops everything it started) and reaped on drop.
struct Demo(std::process::Child);

impl Drop for Demo {
    fn drop(&mut self) {
        if let Ok(pid) = libc::pid_t::try_from(self.0.id()) {
            // SAFETY: kill(2) on our own child's pid; no memory is touched.
            unsafe {
                libc::kill(pid, libc::SIGINT);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_web_page_works_in_chromium() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let web = root.join("web-demo");
    assert!(
        web.join("dist/index.html").is_file() && web.join("node_modules/playwright-core").is_dir(),
        "the web page is not built: run scripts/setup-deps (npm ci && npm run build in web-demo)"
    );
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let log = std::fs::File::create(dir.path().join("demo.log")).unwrap();
    let demo = Demo(
        support::fedgate_dev(&["demo", "--nodes", "50", "--port", "0", "--dir"])
            .current_dir(root)
            .arg(dir.path().join("demo"))
            .arg("--state-file")
            .arg(&state)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(90);
    while !state.is_file() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    let demo_log = || std::fs::read_to_string(dir.path().join("demo.log")).unwrap_or_default();
    assert!(state.is_file(), "the demo did not come up:\n{}", demo_log());

    let artifacts = root.join("target/browser-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let output = Command::new("node")
        .arg(web.join("e2e/browser.mjs"))
        .arg("--state")
        .arg(&state)
        .arg("--artifacts")
        .arg(&artifacts)
        .output()
        .expect("node (scripts/setup-deps installs it)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    drop(demo);
    // Ctrl-C left nothing behind: no process (nats-server, fedgate run, mcollectived) still
    // runs from the demo's folder.
    let demo_dir = dir.path().join("demo").display().to_string();
    let leftovers: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(&demo_dir))
        .collect();
    assert!(
        leftovers.is_empty(),
        "still running after Ctrl-C: {leftovers:?}"
    );
    assert!(
        output.status.success(),
        "browser test failed:\n{stdout}\n{}\ndemo:\n{}",
        String::from_utf8_lossy(&output.stderr),
        demo_log()
    );
    // Every step left its screenshot.
    let shots = std::fs::read_dir(&artifacts)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "png"))
        })
        .count();
    assert!(shots >= 7, "{shots} screenshots in {}", artifacts.display());
}
