//! Policy sets: conditions at the gateway, scopes and the unconfigured default, and reloads
//! that keep the last good set.

use super::*;

#[test]
fn at_the_gateway_conditions_restrict_or_fail_closed() {
    let set = set_of(
        "puppet.policy",
        "policy default deny\ndeny\tup=eve\t*\tenv=prod\t*\nallow\tup=bob\trestart\tenv=prod os=linux\tweb\nallow\tup=bob\tstatus\t*\t*\n",
    );
    let ask = |caller, action| {
        authorize(
            &set,
            &Query {
                collective: "london",
                agent: "ginkgo",
                action,
                caller,
            },
            Vantage::Gateway,
        )
    };
    let Decision::Permit(permit) = ask("up=bob", "restart") else {
        panic!()
    };
    assert_eq!(permit.source.to_string(), "puppet.policy:3");
    let restrict = permit.restrict.unwrap();
    assert_eq!(
        describe(&restrict),
        "facts env==prod os==linux and classes web"
    );
    let Decision::Permit(permit) = ask("up=bob", "status") else {
        panic!()
    };
    assert!(permit.restrict.is_none());
    let Decision::Denied(denied) = ask("up=eve", "status") else {
        panic!()
    };
    assert_eq!(denied.kind, DenyKind::Conditional);
    assert!(denied.reason.contains("fail closed"), "{}", denied.reason);
    assert_eq!(ask("up=amy", "status").source().to_string(), "default");
}

#[test]
fn scopes_override_and_unconfigured_decides_when_no_file_applies() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("london")).unwrap();
    std::fs::write(
        dir.path().join("default.policy"),
        "policy default deny\nallow\tup=admin\t*\t*\t*\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("rpcutil.policy"), "policy default allow\n").unwrap();
    std::fs::write(
        dir.path().join("london/rpcutil.policy"),
        "policy default deny\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("groups"), "ops up=amy\n").unwrap();
    std::fs::write(dir.path().join("README.md"), "ignored\n").unwrap();
    let set = PolicySet::load(dir.path(), Effect::Deny).unwrap();
    assert_eq!(
        set.lookup("london", "rpcutil").unwrap().name.as_ref(),
        "london/rpcutil.policy"
    );
    assert_eq!(
        set.lookup("tokyo", "rpcutil").unwrap().name.as_ref(),
        "rpcutil.policy"
    );
    assert_eq!(
        set.lookup("tokyo", "puppet").unwrap().name.as_ref(),
        "default.policy"
    );
    assert_eq!(set.groups().members("ops").unwrap(), ["up=amy"]);

    std::fs::remove_file(dir.path().join("default.policy")).unwrap();
    let set = PolicySet::load(dir.path(), Effect::Deny).unwrap();
    let query = Query {
        collective: "tokyo",
        agent: "puppet",
        action: "x",
        caller: "up=admin",
    };
    let Decision::Denied(denied) = authorize(&set, &query, Vantage::Gateway) else {
        panic!()
    };
    assert_eq!(denied.kind, DenyKind::Unconfigured);
    assert_eq!(denied.source.to_string(), "default");
    let open = PolicySet::load(dir.path(), Effect::Allow).unwrap();
    assert!(authorize(&open, &query, Vantage::Gateway).allowed());

    std::fs::write(
        dir.path().join("london/bad.policy"),
        "policy default deny\ndeny *\n",
    )
    .unwrap();
    let err = PolicySet::load(dir.path(), Effect::Deny).unwrap_err();
    assert!(
        err.to_string().starts_with("london/bad.policy:2: "),
        "{err}"
    );
}

#[test]
fn a_broken_reload_keeps_the_last_good_set() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rpcutil.policy");
    std::fs::write(&path, "policy default allow\n").unwrap();
    let store = crate::rules::RuleStore::open_dir(dir.path(), Effect::Deny).unwrap();
    let query = Query {
        collective: "london",
        agent: "rpcutil",
        action: "ping",
        caller: "up=bob",
    };
    let before = store.current();
    assert!(authorize(&before, &query, Vantage::Gateway).allowed());

    std::fs::write(&path, "policy default deny\ndeny\tbroken\n").unwrap();
    let err = store.reload().unwrap_err();
    assert!(err.to_string().starts_with("rpcutil.policy:2:"), "{err}");
    assert!(store.last_error().is_some());
    assert!(authorize(&store.current(), &query, Vantage::Gateway).allowed());

    std::fs::write(&path, "policy default deny\n").unwrap();
    store.reload().unwrap();
    assert!(store.last_error().is_none());
    assert!(!authorize(&store.current(), &query, Vantage::Gateway).allowed());
    // A request that started before the reload still holds the set it started with.
    assert!(authorize(&before, &query, Vantage::Gateway).allowed());
}

#[tokio::test]
async fn the_watcher_reloads_after_a_change() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rpcutil.policy");
    std::fs::write(&path, "policy default allow\n").unwrap();
    let store =
        std::sync::Arc::new(crate::rules::RuleStore::open_dir(dir.path(), Effect::Deny).unwrap());
    let stop = tokio_util::sync::CancellationToken::new();
    let task = store.watch(stop.clone()).unwrap().unwrap();
    std::fs::write(&path, "policy default deny\n").unwrap();
    let query = Query {
        collective: "london",
        agent: "rpcutil",
        action: "ping",
        caller: "up=bob",
    };
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while authorize(&store.current(), &query, Vantage::Gateway).allowed() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no reload after a change"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    stop.cancel();
    task.await.unwrap();
}
