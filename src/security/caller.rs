//! Caller ids: `<kind>=<name>`, and the identity name a certificate must carry.

use std::fmt;
use std::sync::LazyLock;

use regex::Regex;

/// go-choria's `CallerIdentity` pattern, with ASCII `\w` as in Go's RE2.
static CALLER: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-z]+=([0-9A-Za-z_.\-]+)").expect("static regex"));

/// A caller id such as `choria=alice.mcollective` or `up=bob`, with its identity name.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CallerId {
    raw: String,
    identity_end: usize,
    kind_end: usize,
}

/// The caller id does not start with `<kind>=<name>`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("could not find a valid caller identity name in {0:?}")]
pub struct InvalidCallerId(pub String);

impl CallerId {
    /// Parses a caller id as Choria does; characters after the name's first illegal one are
    /// ignored for the identity but kept in the caller id string.
    pub fn parse(raw: &str) -> Result<Self, InvalidCallerId> {
        let caps = CALLER
            .captures(raw)
            .ok_or_else(|| InvalidCallerId(raw.to_string()))?;
        let name = caps
            .get(1)
            .ok_or_else(|| InvalidCallerId(raw.to_string()))?;
        Ok(CallerId {
            raw: raw.to_string(),
            identity_end: name.end(),
            kind_end: name.start() - 1,
        })
    }

    /// The caller id as sent, e.g. `choria=alice.mcollective`.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// The kind before `=`, e.g. `choria` or `up`.
    pub fn kind(&self) -> &str {
        &self.raw[..self.kind_end]
    }

    /// The identity name, e.g. `alice.mcollective`; a certificate must carry it as CN or SAN.
    pub fn identity(&self) -> &str {
        &self.raw[self.kind_end + 1..self.identity_end]
    }

    /// True when the caller id is exactly `<kind>=<name>`, with nothing after the name. Choria
    /// ignores such trailing text, so no certificate vouches for it.
    pub fn is_exact(&self) -> bool {
        self.identity_end == self.raw.len()
    }

    /// Whether the caller id is of a kind a certificate speaks as: Choria's `choria=` or
    /// MCollective's `cert=`.
    pub fn is_certificate_kind(&self) -> bool {
        CERTIFICATE_KINDS.contains(&self.kind())
    }

    /// In a realm that trusts both a CA and a v2 token issuer, a v2 caller may not speak as a
    /// certificate kind: both kinds of caller are mapped by caller id alone, so a token naming
    /// `choria=alice.mcollective` would be the certificate user alice.
    pub fn check_v2_in_realm_with_ca(&self, realm_has_ca: bool) -> Result<(), String> {
        if realm_has_ca && self.is_certificate_kind() {
            return Err(format!(
                "a Choria protocol v2 caller cannot be {}: this realm's certificates speak as choria= and cert=, and a token does not vouch for a certificate",
                self.raw
            ));
        }
        Ok(())
    }

    /// The caller id of a certificate user, `choria=<certname>`.
    pub fn for_certname(certname: &str) -> Result<Self, InvalidCallerId> {
        Self::parse(&format!("choria={certname}"))
    }
}

/// Kinds of caller id a certificate speaks as: Choria's `choria=` and MCollective's `cert=`.
pub const CERTIFICATE_KINDS: [&str; 2] = ["choria", "cert"];

impl fmt::Display for CallerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extracts_the_identity_like_go_choria() {
        let caller = CallerId::parse("choria=rip.mcollective").unwrap();
        assert_eq!(
            (caller.kind(), caller.identity()),
            ("choria", "rip.mcollective")
        );
        assert_eq!(CallerId::parse("up=bob").unwrap().identity(), "bob");
        let trailing = CallerId::parse("choria=rip.mcollective@evil").unwrap();
        assert_eq!(trailing.identity(), "rip.mcollective");
        assert_eq!(trailing.as_str(), "choria=rip.mcollective@evil");
    }

    #[test]
    fn refuses_callers_without_kind_or_name() {
        for bad in [
            "rip.mcollective",
            "Choria=rip",
            "choria=",
            "=rip",
            "choria=é",
        ] {
            assert!(CallerId::parse(bad).is_err(), "{bad}");
        }
    }
}
