//! Option and manifest checks: names that cannot escape DIR, paths that stay in their realm.

use std::collections::BTreeSet;
use std::path::Component;

use super::{DevPki, DevPkiError, DevPkiOptions, RealmPki};

/// Whether a loaded PKI has exactly the realms (name, kind, intermediate) and users asked for.
pub(super) fn same_layout(pki: &DevPki, options: &DevPkiOptions) -> bool {
    let users: BTreeSet<&str> = options.users.iter().map(String::as_str).collect();
    pki.realms.len() == options.realms.len()
        && options.realms.iter().all(|spec| {
            pki.realm(&spec.name).is_some_and(|r| {
                r.kind == spec.kind
                    && r.intermediate.is_some() == spec.intermediate
                    && r.users.keys().map(String::as_str).eq(users.iter().copied())
            })
        })
}

/// Names are valid and unique, and there is at least one realm.
pub(super) fn validate(options: &DevPkiOptions) -> Result<(), DevPkiError> {
    if options.realms.is_empty() {
        return Err(DevPkiError::Options("at least one realm is needed".into()));
    }
    let mut realms = BTreeSet::new();
    for realm in &options.realms {
        check_name("realm", &realm.name)?;
        if !realms.insert(&realm.name) {
            return Err(DevPkiError::Options(format!(
                "realm {:?} is listed twice",
                realm.name
            )));
        }
    }
    let mut users = BTreeSet::new();
    for user in &options.users {
        check_user(user)?;
        if !users.insert(user) {
            return Err(DevPkiError::Options(format!(
                "user {user:?} is listed twice"
            )));
        }
    }
    Ok(())
}

/// Users become `<user>.mcollective`; names fedgate uses itself are reserved.
pub(super) fn check_user(user: &str) -> Result<(), DevPkiError> {
    check_name("user", user)?;
    let reason = if matches!(user, "fedgate" | "fleet" | "privileged") {
        "reserved for fedgate's own certificates"
    } else if user.ends_with(".privileged") {
        "would match the privileged certificate pattern"
    } else {
        return Ok(());
    };
    Err(DevPkiError::InvalidName {
        what: "user",
        name: user.into(),
        reason,
    })
}

/// Realms: `^[a-z0-9][a-z0-9_-]*$`; users also allow `.`; at most 63 bytes.
pub(super) fn check_name(what: &'static str, name: &str) -> Result<(), DevPkiError> {
    let extra: &[u8] = if what == "user" { b"_.-" } else { b"_-" };
    let ok_char = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit() || extra.contains(c);
    let reason = match name.as_bytes() {
        [] => "must not be empty",
        b if b.len() > 63 => "must be at most 63 characters",
        [first, ..] if !first.is_ascii_lowercase() && !first.is_ascii_digit() => {
            "must start with a lowercase letter or digit"
        }
        b if !b.iter().all(ok_char) => "has characters outside [a-z0-9_-] (users also '.')",
        _ => return Ok(()),
    };
    Err(DevPkiError::InvalidName {
        what,
        name: name.into(),
        reason,
    })
}

/// A manifest realm must have a valid name and only relative paths below its own directory.
pub(super) fn check_manifest_realm(name: &str, realm: &RealmPki) -> Result<(), String> {
    check_name("realm", name).map_err(|e| e.to_string())?;
    if realm.name != name {
        return Err(format!("realm {name:?} is named {:?} inside", realm.name));
    }
    for user in realm.users.keys() {
        check_user(user).map_err(|e| format!("realm {name:?}: {e}"))?;
    }
    for file in realm.files() {
        let mut parts = file.components();
        let own_dir = parts.next() == Some(Component::Normal(name.as_ref()));
        if !own_dir || !parts.all(|c| matches!(c, Component::Normal(_))) {
            return Err(format!(
                "realm {name:?}: path {} is not inside {name}/",
                file.display()
            ));
        }
    }
    Ok(())
}
