//! Stamps the binary with the commit it was built from, for `fedgate --version`:
//! `FEDGATE_COMMIT` when the build sets it (a package built from a tarball), else
//! `git rev-parse HEAD`, else "unknown"; and rebuilds when the web console's build
//! (`web-demo/dist`, embedded by `edge::console`) changes or first appears.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=FEDGATE_COMMIT");
    // A new commit moves the branch HEAD names (or HEAD itself when detached).
    println!("cargo:rerun-if-changed=.git/HEAD");
    if let Ok(head) = std::fs::read_to_string(".git/HEAD")
        && let Some(branch) = head.trim().strip_prefix("ref: ")
    {
        println!("cargo:rerun-if-changed=.git/{branch}");
    }
    let commit = std::env::var("FEDGATE_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(git_commit)
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=FEDGATE_COMMIT={commit}");
    // The folder, scanned whole; while it is missing, cargo checks again at every build.
    println!("cargo:rerun-if-changed=web-demo/dist");
}

fn git_commit() -> Option<String> {
    let out = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|out| out.status.success())?;
    let head = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (!head.is_empty()).then_some(head)
}
