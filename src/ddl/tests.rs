use super::*;
use serde_json::json;

fn shipped() -> DdlSet {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("ddl");
    DdlSet::load(&dir, UnknownAgents::Refuse).unwrap()
}

fn data(value: Value) -> Map<String, Value> {
    value.as_object().cloned().unwrap_or_default()
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

#[test]
fn every_shipped_ddl_loads_cleanly() {
    let set = shipped();
    assert_eq!(set.agents(), ["echo", "rpcutil", "service"]);
    let service = set.agent("service").unwrap();
    assert_eq!(service.timeout_seconds, 60);
    assert_eq!(
        service.actions.keys().collect::<Vec<_>>(),
        ["restart", "start", "status", "stop"]
    );
    assert!(set.check("rpcutil", "ping", &Map::new()).is_ok());
    assert!(
        set.check("echo", "echo", &data(json!({"message": "hi"})))
            .is_ok()
    );
}

#[test]
fn a_shell_command_in_a_service_name_is_refused_by_the_service_ddl() {
    let err = shipped()
        .check("service", "restart", &data(json!({"service": "nginx; rm"})))
        .unwrap_err();
    assert_eq!(err.code(), "invalid_input");
    assert_eq!(err.input(), Some("service"));
    let text = err.to_string();
    assert!(
        text.contains("service#restart") && text.contains("'service'"),
        "{text}"
    );
    assert_eq!(
        err.choria_reason(),
        r"validation failed for input 'service': input does not match '^[\w\-\.@]+$'"
    );
    assert!(
        shipped()
            .check("service", "restart", &data(json!({"service": "nginx"})))
            .is_ok()
    );
}

#[test]
fn shellsafe_refuses_what_go_choria_refuses() {
    let mut set = DdlSet::new(UnknownAgents::Refuse);
    set.insert(
        AgentDdl::parse(
            r#"{"metadata":{"name":"pkg"},"actions":[{"action":"install","input":{
                "package":{"type":"string","validation":"shellsafe","maxlength":64}}}]}"#,
        )
        .unwrap(),
    );
    for bad in ["nginx; rm", "a|b", "a && b", "$(id)", "`id`", "a>b", "a<b"] {
        let err = set
            .check("pkg", "install", &data(json!({"package": bad})))
            .unwrap_err();
        assert_eq!(err.code(), "invalid_input", "{bad}");
    }
    assert!(
        set.check(
            "pkg",
            "install",
            &data(json!({"package": "nginx-1.2 & co"}))
        )
        .is_ok()
    );
}

#[test]
fn an_unknown_action_is_refused_with_its_own_code() {
    let err = shipped()
        .check("service", "reboot", &Map::new())
        .unwrap_err();
    assert_eq!(err.code(), "unknown_action");
    assert_eq!(
        err.to_string(),
        "action reboot is not declared in the DDL of agent service"
    );
}

#[test]
fn a_missing_required_input_is_refused() {
    let err = shipped()
        .check("rpcutil", "get_fact", &Map::new())
        .unwrap_err();
    assert_eq!(
        (err.code(), err.to_string()),
        (
            "invalid_input",
            "rpcutil#get_fact: input 'fact' is required".to_string()
        )
    );
    // A default does not stand in for a required input on a go-choria server.
    let err = shipped().check("echo", "sleep", &Map::new()).unwrap_err();
    assert_eq!(err.input(), Some("seconds"));
}

#[test]
fn a_wrong_type_an_undeclared_input_and_maxlength_are_refused() {
    let set = shipped();
    let wrong = set
        .check("echo", "sleep", &data(json!({"seconds": "5"})))
        .unwrap_err();
    assert_eq!(
        wrong.to_string(),
        "echo#sleep: input 'seconds' is not an integer"
    );
    let extra = set
        .check("rpcutil", "ping", &data(json!({"verbose": true})))
        .unwrap_err();
    assert_eq!(extra.input(), Some("verbose"));
    let long = set
        .check("echo", "echo", &data(json!({"message": "x".repeat(1025)})))
        .unwrap_err();
    assert_eq!(
        long.choria_reason(),
        "validation failed for input 'message': is longer than 1024 characters"
    );
}

#[test]
fn unknown_agents_follow_the_flag_and_discovery_always_passes() {
    let refuse = shipped();
    let err = refuse.check("package", "install", &Map::new()).unwrap_err();
    assert_eq!(err.code(), "unknown_agent");
    assert!(refuse.check(DISCOVERY, "", &Map::new()).is_ok());
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("ddl");
    let pass = DdlSet::load(&dir, UnknownAgents::Pass).unwrap();
    assert!(pass.check("package", "install", &Map::new()).is_ok());
    assert!(pass.check("service", "reboot", &Map::new()).is_err());
}

#[test]
fn load_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "README.md", "not a ddl");
    write(
        dir.path(),
        "ok.json",
        r#"{"metadata":{"name":"ok"},"actions":[]}"#,
    );
    assert_eq!(
        DdlSet::load(dir.path(), UnknownAgents::Refuse)
            .unwrap()
            .agents(),
        ["ok"]
    );
    write(
        dir.path(),
        "bad.json",
        r#"{"metadata":{"name":"bad"},"actions":[{"action":"a","input":{"x":{"type":"string","validation":"(["}}}]}"#,
    );
    let err = DdlSet::load(dir.path(), UnknownAgents::Refuse).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("bad.json") && text.contains("actions[0].input.x.validation"),
        "{text}"
    );
    write(
        dir.path(),
        "bad.json",
        r#"{"metadata":{"name":"other"},"actions":[]}"#,
    );
    let err = DdlSet::load(dir.path(), UnknownAgents::Refuse).unwrap_err();
    assert!(matches!(err, DdlError::Name { ref name, .. } if name == "other"));
}

#[test]
fn files_are_bounded_in_size_and_number() {
    let dir = tempfile::tempdir().unwrap();
    let padding = " ".repeat(MAX_FILE_BYTES as usize);
    write(
        dir.path(),
        "big.json",
        &format!(r#"{{"metadata":{{"name":"big"}}}}{padding}"#),
    );
    let err = DdlSet::load(dir.path(), UnknownAgents::Refuse).unwrap_err();
    assert!(matches!(err, DdlError::Limit { ref path, .. } if path.ends_with("big.json")));
    let dir = tempfile::tempdir().unwrap();
    for i in 0..=MAX_FILES {
        write(dir.path(), &format!("a{i}.json"), "{}");
    }
    let err = DdlSet::load(dir.path(), UnknownAgents::Refuse).unwrap_err();
    assert!(matches!(err, DdlError::Limit { ref path, .. } if path == dir.path()));
}
