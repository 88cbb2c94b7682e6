//! The four methods as a nats-server requires them and fedgate is configured for them, each
//! with its secrets in private files: token, user and password, nkey, and creds in operator mode
//! (the operator, account and user JWTs built here with `nkeys`).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use fedgate::nats::NatsAuth;
use nkeys::KeyPair;
use serde_json::json;

/// One authentication method as a nats-server requires it and fedgate is configured for it.
pub struct Method {
    /// The nats-server config text that requires it.
    pub server: String,
    /// fedgate's `auth` block with the right secret.
    pub right: String,
    /// fedgate's `auth` block with a wrong one.
    pub wrong: String,
    /// The file of the wrong secret, which the refusal names.
    pub wrong_file: PathBuf,
    /// How the test's own fleet and clients authenticate.
    pub clients: NatsAuth,
    /// Texts that must never show in fedgate's output.
    pub secrets: Vec<String>,
}

/// Writes a secret file, mode 0600.
fn private(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// `authorization { token }`; clients share the token.
pub fn token(dir: &Path) -> Method {
    let (right, wrong) = (
        format!("tok-{}", nuid::next()),
        format!("tok-{}", nuid::next()),
    );
    let file = private(dir, "token", &format!("{right}\n"));
    let wrong_file = private(dir, "wrong-token", &format!("{wrong}\n"));
    Method {
        server: format!("authorization {{ token: {right:?} }}"),
        right: format!("{{ token_file = {file:?} }}"),
        wrong: format!("{{ token_file = {wrong_file:?} }}"),
        wrong_file,
        clients: NatsAuth {
            token_file: Some(file),
            ..NatsAuth::default()
        },
        secrets: vec![right, wrong],
    }
}

/// `authorization { users }` with fedgate and a tester, each with a password.
pub fn user_password(dir: &Path) -> Method {
    let (right, wrong, tester) = (
        format!("pw-{}", nuid::next()),
        format!("pw-{}", nuid::next()),
        format!("pw-{}", nuid::next()),
    );
    let file = private(dir, "password", &format!("{right}\n"));
    let wrong_file = private(dir, "wrong-password", &wrong);
    let tester_file = private(dir, "tester-password", &tester);
    Method {
        server: format!(
            "authorization {{ users = [ {{ user: \"fedgate\", password: {right:?} }}, {{ user: \"tester\", password: {tester:?} }} ] }}"
        ),
        right: format!("{{ user = \"fedgate\", password_file = {file:?} }}"),
        wrong: format!("{{ user = \"fedgate\", password_file = {wrong_file:?} }}"),
        wrong_file,
        clients: NatsAuth {
            user: Some("tester".into()),
            password_file: Some(tester_file),
            ..NatsAuth::default()
        },
        secrets: vec![right, wrong, tester],
    }
}

/// `authorization { users }` with fedgate's and a tester's nkeys; the wrong seed is a stranger's.
pub fn nkey(dir: &Path) -> Method {
    let (fedgate, stranger, tester) = (
        KeyPair::new_user(),
        KeyPair::new_user(),
        KeyPair::new_user(),
    );
    let seed = |pair: &KeyPair| pair.seed().unwrap();
    let file = private(dir, "fedgate.nk", &format!("{}\n", seed(&fedgate)));
    let wrong_file = private(dir, "stranger.nk", &seed(&stranger));
    let tester_file = private(dir, "tester.nk", &seed(&tester));
    Method {
        server: format!(
            "authorization {{ users = [ {{ nkey: {} }}, {{ nkey: {} }} ] }}",
            fedgate.public_key(),
            tester.public_key()
        ),
        right: format!("{{ nkey = {file:?} }}"),
        wrong: format!("{{ nkey = {wrong_file:?} }}"),
        wrong_file,
        clients: NatsAuth {
            nkey: Some(tester_file),
            ..NatsAuth::default()
        },
        secrets: [fedgate, stranger, tester].iter().map(seed).collect(),
    }
}

/// A JWT as NATS decentralized auth reads it, signed by `issuer`.
fn jwt(issuer: &KeyPair, subject: &str, name: &str, nats: serde_json::Value) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = json!({
        "jti": nuid::next().to_string(),
        "iat": now,
        "iss": issuer.public_key(),
        "name": name,
        "sub": subject,
        "nats": nats,
    });
    let header = URL_SAFE_NO_PAD.encode(r#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let signed = format!("{header}.{}", URL_SAFE_NO_PAD.encode(claims.to_string()));
    let signature = issuer.sign(signed.as_bytes()).unwrap();
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature))
}

/// A `.creds` file for a new user of `account`; returns its path and the user's seed.
fn creds(dir: &Path, name: &str, account: &KeyPair) -> (PathBuf, String) {
    let user = KeyPair::new_user();
    let nats = json!({"type": "user", "version": 2, "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1});
    let token = jwt(account, &user.public_key(), name, nats);
    let seed = user.seed().unwrap();
    let text = format!(
        "-----BEGIN NATS USER JWT-----\n{token}\n------END NATS USER JWT------\n\n************************* IMPORTANT *************************\nNKEY Seed printed below can be used to sign and prove identity.\n\n-----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n"
    );
    (private(dir, &format!("{name}.creds"), &text), seed)
}

/// Operator mode: an operator, one account preloaded into a memory resolver, users in creds
/// files; the wrong creds are a user of an account the server does not know.
pub fn creds_method(dir: &Path) -> Method {
    let (operator, account, unknown) = (
        KeyPair::new_operator(),
        KeyPair::new_account(),
        KeyPair::new_account(),
    );
    let operator_jwt = jwt(
        &operator,
        &operator.public_key(),
        "test-operator",
        json!({"type": "operator", "version": 2}),
    );
    let limits = json!({"subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
        "wildcards": true, "conn": -1, "leaf": -1});
    let account_jwt = jwt(
        &operator,
        &account.public_key(),
        "fleet",
        json!({"type": "account", "version": 2, "limits": limits,
            "default_permissions": {"pub": {}, "sub": {}}}),
    );
    let operator_file = dir.join("operator.jwt");
    std::fs::write(&operator_file, &operator_jwt).unwrap();
    let (file, seed) = creds(dir, "fedgate", &account);
    let (wrong_file, wrong_seed) = creds(dir, "stranger", &unknown);
    let (tester_file, tester_seed) = creds(dir, "tester", &account);
    Method {
        server: format!(
            "operator: {operator_file:?}\nresolver: MEMORY\nresolver_preload: {{ {}: {account_jwt:?} }}",
            account.public_key()
        ),
        right: format!("{{ creds = {file:?} }}"),
        wrong: format!("{{ creds = {wrong_file:?} }}"),
        wrong_file,
        clients: NatsAuth {
            creds: Some(tester_file),
            ..NatsAuth::default()
        },
        secrets: vec![seed, wrong_seed, tester_seed],
    }
}
