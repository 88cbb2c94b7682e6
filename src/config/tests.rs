//! Valid and invalid config fixtures, each invalid one naming its key: the shared PKI and file
//! writers, and the checks common to every section; the topics are in submodules.

mod legacy;
mod members;
mod nats_auth;
mod resign;
mod rules;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use super::*;
use fedgate_dev::devpki::{self, DevPki, DevPkiOptions, RealmKind, RealmSpec};

/// A small PKI shared by every run: generated once into the temp dir and renamed into place.
fn pki() -> &'static (DevPki, PathBuf) {
    static PKI: OnceLock<(DevPki, PathBuf)> = OnceLock::new();
    PKI.get_or_init(|| {
        let dir = std::env::temp_dir().join("fedgate-config-test-pki-v1");
        if let Ok(pki) = DevPki::load(&dir) {
            return (pki, dir);
        }
        let staging = dir.with_extension(format!("staging-{}", std::process::id()));
        let options = DevPkiOptions {
            realms: vec![
                RealmSpec::new("prod", RealmKind::Federation),
                RealmSpec::new("london", RealmKind::Collective),
                RealmSpec::new("tokyo", RealmKind::Collective),
            ],
            users: vec!["alice".into()],
            force: true,
            ..DevPkiOptions::default()
        };
        devpki::generate(&staging, &options).unwrap();
        if std::fs::rename(&staging, &dir).is_err() {
            let _ = std::fs::remove_dir_all(&staging);
        }
        (DevPki::load(&dir).unwrap(), dir)
    })
}

/// Config files are written per process so parallel runs do not overwrite each other.
fn config_dir() -> PathBuf {
    std::env::temp_dir().join(format!("fedgate-config-tests-{}", std::process::id()))
}

/// A network's block; a collective also gets fedgate's privileged signer from its CA.
fn realm_block(realm: &str, table: &str) -> String {
    let r = pki().0.realm(realm).unwrap();
    let mut block = format!(
        "[{table}]\nnats = [\"tls://127.0.0.1:1\"]\nca = {:?}\ntls = {{ certificate = {:?}, key = {:?} }}\n",
        r.ca, r.fedgate.cert, r.fedgate.key
    );
    if let (true, Some(signer)) = (table.contains("collectives."), &r.privileged) {
        block.push_str(&signer_line(&signer.cert, &signer.key));
    }
    block
}

fn signer_line(cert: &Path, key: &Path) -> String {
    format!("signer = {{ certificate = {cert:?}, key = {key:?} }}\n")
}

fn federation(extra: &str) -> String {
    format!(
        "{}members = [\"tokyo\"]\n{extra}\n{}{}",
        realm_block("prod", "federations.prod"),
        realm_block("london", "federations.prod.collectives.london"),
        realm_block("tokyo", "collectives.tokyo"),
    )
}

fn write(name: &str, text: &str) -> PathBuf {
    let dir = config_dir();
    std::fs::create_dir_all(dir.join("policies")).unwrap();
    let path = dir.join(name);
    // Re-signing federations need policy and audit; every config fixture gets them unless it
    // says otherwise (rules files are written here too).
    let config = text.contains("[federations.");
    let gate = if !config || text.contains("[policy]") || text.contains("# no gate") {
        String::new()
    } else {
        "[policy]\ndir = \"policies\"\n\n[audit]\nfile = \"audit.log\"\n\n".to_string()
    };
    std::fs::write(&path, format!("{gate}{text}")).unwrap();
    path
}

#[test]
fn invalid_configs_name_the_key() {
    let london = pki().0.realm("london").unwrap();
    let tokyo = pki().0.realm("tokyo").unwrap();
    let foreign_identity = realm_block("tokyo", "collectives.tokyo")
        .replace(&format!("{:?}", tokyo.ca), &format!("{:?}", london.ca));
    let conflicting = federation("").replace(
        "[collectives.tokyo]",
        &format!("[federations.prod.collectives.tokyo]\nnats = [\"tls://127.0.0.1:9\"]\nca = {:?}\n\n[collectives.tokyo]", tokyo.ca),
    );
    let cases: Vec<(String, &str)> = vec![
        (federation("colour = \"blue\""), "colour"),
        (
            federation("").replace("members = [\"tokyo\"]", "members = [\"tokyo\", \"paris\"]"),
            "federations.prod.members",
        ),
        (
            format!(
                "[instance]\nserve = [\"prod\"]\n{}",
                federation("").replace("members = [\"tokyo\"]", "members = [\"prod\"]")
            ),
            "federations.prod.members",
        ),
        (foreign_identity, "collectives.tokyo.tls"),
        (conflicting, "federations.prod.collectives.tokyo"),
        (federation("max_hops = 1"), "federations.prod.max_hops"),
        (
            federation("batch_size = 5000"),
            "federations.prod.batch_size",
        ),
        (
            format!("[instance]\nserve = [\"nope\"]\n{}", federation("")),
            "instance.serve",
        ),
        (
            federation("").replace(&format!("ca = {:?}", tokyo.ca), "ca = \"missing.pem\""),
            "collectives.tokyo.ca",
        ),
        (
            "[collectives.plain]\nnats = [\"tls://127.0.0.1:1\"]\n".into(),
            "collectives.plain.ca",
        ),
        (
            "[collectives.\"lon.don\"]\nnats = [\"tls://x:1\"]\nca = \"x\"\n".into(),
            "collectives.lon.don",
        ),
    ];
    for (i, (text, key)) in cases.iter().enumerate() {
        let path = write(&format!("bad-{i}.toml"), text);
        let err = Config::load(&path).unwrap_err().to_string();
        assert!(err.contains(key), "case {i}: {err} should name {key}");
    }
}

#[test]
fn a_group_readable_key_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let london = pki().0.realm("london").unwrap();
    let key = config_dir().join("exposed-key.pem");
    std::fs::create_dir_all(key.parent().unwrap()).unwrap();
    std::fs::copy(&london.fedgate.key, &key).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
    let text = realm_block("london", "collectives.london")
        .replace(&format!("{:?}", london.fedgate.key), &format!("{key:?}"));
    let err = Config::load(&write("exposed.toml", &text))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("collectives.london.tls") && err.contains("readable by group or others"),
        "{err}"
    );
}

#[test]
fn relative_paths_resolve_from_the_config_folder() {
    let dir = config_dir();
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(&pki().0.realm("london").unwrap().ca, dir.join("rel-ca.pem")).unwrap();
    let config = Config::load(&write(
        "rel.toml",
        "[collectives.london]\nnats = [\"tls://127.0.0.1:1\"]\nca = \"rel-ca.pem\"\n",
    ))
    .unwrap();
    let london = config.collective("london").unwrap();
    assert_eq!(london.ca, Some(dir.join("rel-ca.pem")));
    assert_eq!(
        london.endpoint().ca.as_deref(),
        Some(Path::new(&dir.join("rel-ca.pem")))
    );
}
