//! An existing Choria policy directory loads unchanged (issue 22): a line go-choria skips is
//! skipped with a warning naming file and line where losing it cannot widen what is allowed,
//! and still refuses the directory where it could.

mod support;

use std::path::Path;
use std::process::Output;

fn policy_check(dir: &Path, caller: &str) -> Output {
    std::process::Command::new(support::fedgate_bin())
        .args(["policy", "check", "--policies"])
        .arg(dir)
        .args(["--caller", caller, "--agent", "rpcutil", "--action", "ping"])
        .env_remove("RUST_LOG")
        .env_remove("FEDGATE_LOG_FORMAT")
        .output()
        .unwrap()
}

#[test]
fn a_groups_file_with_an_empty_group_loads_with_a_warning_naming_the_line() {
    let dir = tempfile::tempdir().unwrap();
    // As go-choria's own fixture: a group named alone on its line.
    std::fs::write(
        dir.path().join("groups"),
        "# operators\nsysadmin cert=sa1 up=alice\ninvalid_group\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("rpcutil.policy"),
        "policy default deny\nallow\tsysadmin\tping\t*\t*\nallow only these\n",
    )
    .unwrap();
    let alice = policy_check(dir.path(), "up=alice");
    let stderr = String::from_utf8_lossy(&alice.stderr);
    assert!(alice.status.success(), "{stderr}");
    assert!(
        stderr.contains("groups:3: group \"invalid_group\" has no members"),
        "{stderr}"
    );
    assert!(
        stderr.contains("rpcutil.policy:3: rule fields must be separated by TABs"),
        "{stderr}"
    );
    let bob = policy_check(dir.path(), "up=bob");
    assert_eq!(bob.status.code(), Some(1), "bob is still denied");
}

#[test]
fn a_malformed_deny_line_still_refuses_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("rpcutil.policy"),
        "policy default allow\ndeny up=bob * * *\n",
    )
    .unwrap();
    let bob = policy_check(dir.path(), "up=bob");
    let stderr = String::from_utf8_lossy(&bob.stderr);
    assert_eq!(bob.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("rpcutil.policy:2: rule fields must be separated by TABs"),
        "{stderr}"
    );
    assert!(
        stderr.contains("a deny line that does not parse refuses the file"),
        "{stderr}"
    );
    // A group with members under a name go-choria refuses would escape such a deny too.
    std::fs::write(dir.path().join("rpcutil.policy"), "policy default deny\n").unwrap();
    std::fs::write(dir.path().join("groups"), "bad/name up=bob\n").unwrap();
    let refused = policy_check(dir.path(), "up=bob");
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("groups:1: invalid group name"));
}
