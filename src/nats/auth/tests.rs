//! `auth` blocks: one method each, secrets read from private files, and no secret in an error.

use std::os::unix::fs::PermissionsExt;

use super::*;

/// Writes `text` to a file of a fresh folder with `mode`; the folder lives as long as the guard.
fn secret(text: &str, mode: u32) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secret");
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    (dir, path)
}

fn token(path: &Path) -> NatsAuth {
    NatsAuth {
        token_file: Some(path.to_path_buf()),
        ..NatsAuth::default()
    }
}

#[test]
fn each_method_is_chosen_alone() {
    let file = Path::new("f");
    let cases = [
        (r#"creds = "f""#, Method::Creds(file)),
        (r#"nkey = "f""#, Method::Nkey(file)),
        (
            r#"user = "fedgate"
password_file = "f""#,
            Method::UserPassword {
                user: "fedgate",
                password: file,
            },
        ),
        (r#"token_file = "f""#, Method::Token(file)),
    ];
    for (text, expected) in cases {
        let auth: NatsAuth = toml::from_str(text).unwrap();
        assert_eq!(auth.method().unwrap(), expected, "{text}");
    }
}

#[test]
fn two_methods_are_refused_naming_both() {
    let auth: NatsAuth = toml::from_str(
        r#"user = "u"
password_file = "p"
token_file = "t""#,
    )
    .unwrap();
    let err = auth.method().unwrap_err().to_string();
    assert_eq!(
        err,
        "names both `user` and `token_file`: use one method per network"
    );
    let auth: NatsAuth = toml::from_str("creds = \"c\"\nnkey = \"n\"").unwrap();
    assert!(matches!(
        auth.method(),
        Err(AuthError::TwoMethods {
            first: "creds",
            second: "nkey"
        })
    ));
}

#[test]
fn incomplete_empty_and_inline_blocks_are_refused() {
    let cases = [
        ("user = \"u\"", "`user` needs `password_file`"),
        ("password_file = \"p\"", "`password_file` needs `user`"),
        ("user = \"\"\npassword_file = \"p\"", "`user` is empty"),
        ("", "names no method"),
        ("password = \"hunter2\"", "`password` is written inline"),
        ("token = \"s3cr3t-t0k3n\"", "`token` is written inline"),
    ];
    for (text, expected) in cases {
        let auth: NatsAuth = toml::from_str(text).unwrap();
        let err = auth.method().unwrap_err().to_string();
        assert!(err.contains(expected), "{text}: {err}");
        assert!(!format!("{err}{auth:?}").contains("hunter2"), "{err}");
        assert!(!format!("{err}{auth:?}").contains("s3cr3t"), "{err}");
    }
}

#[test]
fn unknown_keys_are_refused() {
    let err = toml::from_str::<NatsAuth>("tokenfile = \"t\"").unwrap_err();
    assert!(err.to_string().contains("tokenfile"), "{err}");
}

#[test]
fn a_missing_file_is_named_with_its_key() {
    let err = token(Path::new("/nonexistent/fedgate-token"))
        .check()
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("`token_file`: cannot read /nonexistent/fedgate-token: "),
        "{err}"
    );
}

#[test]
fn a_token_file_must_be_private_one_line_and_not_empty() {
    let (_dir, exposed) = secret("t0k3n\n", 0o644);
    let err = token(&exposed).check().unwrap_err().to_string();
    assert!(
        err.contains("readable by group or others (mode 644)"),
        "{err}"
    );
    for (text, problem) in [
        ("", "is empty"),
        ("\n", "is empty"),
        ("a\nb\n", "single line"),
    ] {
        let (_dir, path) = secret(text, 0o600);
        let err = token(&path).check().unwrap_err().to_string();
        assert!(err.contains(problem), "{text:?}: {err}");
    }
    for text in ["t0k3n", "t0k3n\n", "t0k3n\r\n"] {
        let (_dir, path) = secret(text, 0o600);
        token(&path).check().unwrap();
    }
}

#[test]
fn a_secret_file_over_the_limit_is_refused() {
    let big = "x".repeat(MAX_SECRET_BYTES as usize + 1);
    let (_dir, path) = secret(&big, 0o600);
    let err = token(&path).check().unwrap_err().to_string();
    assert!(err.contains("is larger than 65536 bytes"), "{err}");
}

#[test]
fn an_nkey_file_must_hold_a_user_seed_and_errors_never_show_it() {
    let account = nkeys::KeyPair::new_account().seed().unwrap();
    let user = nkeys::KeyPair::new_user().seed().unwrap();
    let nkey = |path: &Path| NatsAuth {
        nkey: Some(path.to_path_buf()),
        ..NatsAuth::default()
    };
    let (_dir, path) = secret(&format!("{account}\n"), 0o600);
    let err = nkey(&path).check().unwrap_err().to_string();
    assert!(err.contains("holds a seed of type Account"), "{err}");
    assert!(!err.contains(&account), "{err}");
    let garbage = "SUNOTASEEDATALLBUTSECRETISH";
    let (_dir, path) = secret(garbage, 0o600);
    let err = nkey(&path).check().unwrap_err().to_string();
    assert!(err.contains("does not hold an nkey seed"), "{err}");
    assert!(!err.contains(garbage), "{err}");
    let (_dir, path) = secret(&format!("{user}\n"), 0o600);
    nkey(&path).check().unwrap();
}

#[test]
fn a_creds_file_must_hold_a_jwt_and_a_seed() {
    let creds = |path: &Path| NatsAuth {
        creds: Some(path.to_path_buf()),
        ..NatsAuth::default()
    };
    let (_dir, path) = secret("just some text\n", 0o600);
    let err = creds(&path).check().unwrap_err().to_string();
    assert!(err.contains("is not a creds file"), "{err}");
    let seed = nkeys::KeyPair::new_user().seed().unwrap();
    let text = format!(
        "-----BEGIN NATS USER JWT-----\neyJhbGciOiJlZDI1NTE5LW5rZXkifQ.e30.c2ln\n------END NATS USER JWT------\n\n-----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n"
    );
    let (_dir, path) = secret(&text, 0o600);
    creds(&path).check().unwrap();
}

#[test]
fn the_method_names_files_but_no_secret() {
    let (_dir, path) = secret("hunter2\n", 0o600);
    let auth = NatsAuth {
        user: Some("fedgate".into()),
        password_file: Some(path.clone()),
        ..NatsAuth::default()
    };
    let shown = auth.method().unwrap().to_string();
    assert_eq!(
        shown,
        format!("user fedgate with the password in {}", path.display())
    );
    let options = auth.apply(async_nats::ConnectOptions::new()).unwrap();
    assert!(!format!("{options:?}{auth:?}").contains("hunter2"));
}
