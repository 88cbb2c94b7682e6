//! Choria's JWTs (the `tokens` package): client and server claims, the issuers that sign them,
//! and the chain of trust from an organization issuer through a chain issuer.
//!
//! A token is verified with its organization's issuer key, chosen by its `ou` claim, as go-choria
//! does. A token whose `iss` is `C-<jti>.<key>` was issued by a chain issuer: the organization
//! signed `<jti>.<key>` (the first half of `tcs`), the chain issuer signed
//! `<own jti>.<first half>` (the second half), and the JWT itself is signed by the chain issuer's
//! key; it stops being valid when the chain issuer's token does (`issexp`). Times are checked
//! against [`Now`] without leeway: valid from `nbf` and before `exp`. Unlike go-choria, a token
//! without `exp` is refused: nothing here is valid forever.

use std::collections::BTreeMap;
use std::str::FromStr;

use aws_lc_rs::signature::{ED25519, UnparsedPublicKey};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use svix_ksuid::KsuidLike as _;

use crate::security::{Now, VerifyError};

/// Bytes of an ed25519 public key.
pub const PUBLIC_KEY_LEN: usize = 32;
/// Longest token accepted, well above any real one (a few hundred bytes to a few KB with an
/// OPA policy in it).
pub const MAX_TOKEN_BYTES: usize = 64 * 1024;

/// The `purpose` of a caller's token.
pub const CLIENT_PURPOSE: &str = "choria_client_id";
/// The `purpose` of a server's token.
pub const SERVER_PURPOSE: &str = "choria_server";
const ORG_ISSUER_PREFIX: &str = "I-";
const CHAIN_ISSUER_PREFIX: &str = "C-";

/// The issuer public keys this side trusts, by organization (`ou`), as go-choria's
/// `plugin.security.issuer.<name>.public`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Issuers {
    by_org: BTreeMap<String, [u8; PUBLIC_KEY_LEN]>,
}

impl Issuers {
    /// Trusts `public` (hex) as the issuer of organization `org`.
    pub fn with(mut self, org: &str, public: &str) -> Result<Self, String> {
        let key =
            parse_public_key(public).map_err(|err| format!("issuer {org:?}: public key {err}"))?;
        self.by_org.insert(org.to_string(), key);
        Ok(self)
    }

    /// Issuers from a map of organization to hex public key, as a config holds them.
    pub fn from_map(keys: &BTreeMap<String, String>) -> Result<Self, String> {
        keys.iter()
            .try_fold(Issuers::default(), |issuers, (org, key)| {
                issuers.with(org, key)
            })
    }

    /// The callers' issuer of a realm (the edge's, a federation's): none, or one organization.
    /// Callers are mapped by caller id alone, so two organizations' `up=alice` would be one
    /// caller; `None` when `keys` is empty, and the realm takes no v2 callers.
    pub fn for_realm(keys: &BTreeMap<String, String>) -> Result<Option<Self>, String> {
        match keys.len() {
            0 => Ok(None),
            1 => Issuers::from_map(keys).map(Some),
            n => Err(format!(
                "names {n} organizations; a realm trusts one, since callers are mapped by caller id alone"
            )),
        }
    }

    /// The organizations trusted.
    pub fn orgs(&self) -> impl Iterator<Item = &str> {
        self.by_org.keys().map(String::as_str)
    }

    fn key(&self, org: &str) -> Result<&[u8; PUBLIC_KEY_LEN], VerifyError> {
        self.by_org.get(org).ok_or_else(|| {
            VerifyError::UnknownIssuer(format!(
                "no issuer is trusted for organization {org:?} (trusted: {})",
                self.by_org.keys().cloned().collect::<Vec<_>>().join(", ")
            ))
        })
    }
}

/// Parses a hex ed25519 public key.
pub fn parse_public_key(hex_key: &str) -> Result<[u8; PUBLIC_KEY_LEN], String> {
    let bytes = hex::decode(hex_key.trim()).map_err(|err| format!("is not hex: {err}"))?;
    <[u8; PUBLIC_KEY_LEN]>::try_from(bytes.as_slice())
        .map_err(|_| format!("is {} bytes, not {PUBLIC_KEY_LEN}", bytes.len()))
}

/// Claims every Choria token has.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StandardClaims {
    /// What the token is for: `choria_client_id`, `choria_server`, ...
    #[serde(default)]
    pub purpose: String,
    /// The trust chain signature(s), hex, for chain-issued tokens.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tcs: String,
    /// Hex ed25519 public key of the holder.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub public_key: String,
    /// When the chain issuer's own token expires, unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issexp: Option<i64>,
    /// Issuer: `I-<org key hex>`, `C-<chain issuer jti>.<chain issuer key hex>`, or a name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub iss: String,
    /// Subject.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sub: String,
    /// Expiry, unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    /// Not valid before, unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    /// Issued at, unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    /// Token id, a KSUID.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub jti: String,
}

/// What a caller's token allows.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClientPermissions {
    /// May sign its own RPC requests.
    #[serde(skip_serializing_if = "is_false")]
    pub fleet_management: bool,
    /// May use the fleet only through a delegator's signature.
    #[serde(skip_serializing_if = "is_false")]
    pub signed_fleet_management: bool,
    /// May sign requests on behalf of others.
    #[serde(skip_serializing_if = "is_false")]
    pub authentication_delegator: bool,
    /// The permissions fedgate does not act on, kept as they came.
    #[serde(flatten)]
    pub other: BTreeMap<String, bool>,
}

impl ClientPermissions {
    /// `fleet_management`: signs its own requests.
    pub fn fleet() -> Self {
        ClientPermissions {
            fleet_management: true,
            ..Self::default()
        }
    }

    /// `signed_fleet_management`: uses the fleet only through a delegator.
    pub fn signed_fleet() -> Self {
        ClientPermissions {
            signed_fleet_management: true,
            ..Self::default()
        }
    }

    /// `authentication_delegator`: signs for others.
    pub fn delegator() -> Self {
        ClientPermissions {
            authentication_delegator: true,
            ..Self::default()
        }
    }
}

fn is_false(value: &bool) -> bool {
    !*value
}

/// A caller's token (`choria_client_id`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientClaims {
    /// The caller id, `<kind>=<name>`.
    #[serde(default)]
    pub callerid: String,
    /// Agents the holder may use (`agent.action`, `agent.*`, `*`), for AAA authorizers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub agents: Vec<String>,
    /// The organization, which names the issuer that signed the token.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ou: String,
    /// Free-form properties.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub user_properties: BTreeMap<String, String>,
    /// What the holder may do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permissions: Option<ClientPermissions>,
    /// The standard claims.
    #[serde(flatten)]
    pub standard: StandardClaims,
}

/// A server's token (`choria_server`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerClaims {
    /// The server's identity.
    #[serde(default)]
    pub identity: String,
    /// Collectives the server is in.
    #[serde(default)]
    pub collectives: Vec<String>,
    /// The organization, which names the issuer that signed the token.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ou: String,
    /// The standard claims.
    #[serde(flatten)]
    pub standard: StandardClaims,
}

impl ClientClaims {
    /// The holder's permissions, none when the token has none.
    pub fn permissions(&self) -> ClientPermissions {
        self.permissions.clone().unwrap_or_default()
    }
}

/// Which kind of token to expect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenKind {
    /// `choria_client_id`.
    Client,
    /// `choria_server`.
    Server,
}

impl TokenKind {
    fn purpose(self) -> &'static str {
        match self {
            TokenKind::Client => CLIENT_PURPOSE,
            TokenKind::Server => SERVER_PURPOSE,
        }
    }
}

/// The claims read before the signature is checked, to pick the key.
#[derive(Deserialize)]
struct Unverified {
    #[serde(default)]
    ou: String,
    #[serde(flatten)]
    standard: StandardClaims,
}

/// The purpose of a token, read without verifying it, for telling client and server tokens
/// apart before parsing one.
pub fn purpose(token: &str) -> Option<String> {
    jsonwebtoken::dangerous::insecure_decode::<Unverified>(token)
        .ok()
        .map(|data| data.claims.standard.purpose)
}

/// Who a client token names (its caller id, else its subject) and when it expires, read without
/// verifying it: for the expiry gauge of a token fedgate holds, which start-up verified.
pub fn unverified_expiry(token: &str) -> Result<(String, i64), String> {
    let claims = jsonwebtoken::dangerous::insecure_decode::<ClientClaims>(token.trim())
        .map_err(|e| format!("not a client token: {e}"))?
        .claims;
    let exp = claims.standard.exp.ok_or("the token has no exp")?;
    let subject = match claims.callerid.is_empty() {
        true => claims.standard.sub,
        false => claims.callerid,
    };
    Ok((subject, exp))
}

/// Parses and verifies a client token: signature by its organization's issuer (directly or
/// through a chain issuer), purpose, validity at `now`, and a public key.
pub fn parse_client(token: &str, issuers: &Issuers, now: Now) -> Result<ClientClaims, VerifyError> {
    let claims: ClientClaims = parse(token, TokenKind::Client, issuers, now)?;
    if claims.callerid.is_empty() {
        return Err(VerifyError::InvalidToken(
            "the client token has no callerid".into(),
        ));
    }
    Ok(claims)
}

/// Parses and verifies a server token, as [`parse_client`] does a client's.
pub fn parse_server(token: &str, issuers: &Issuers, now: Now) -> Result<ServerClaims, VerifyError> {
    let claims: ServerClaims = parse(token, TokenKind::Server, issuers, now)?;
    if claims.identity.is_empty() {
        return Err(VerifyError::InvalidToken(
            "the server token has no identity".into(),
        ));
    }
    Ok(claims)
}

fn parse<T: DeserializeOwned + HasStandard>(
    token: &str,
    kind: TokenKind,
    issuers: &Issuers,
    now: Now,
) -> Result<T, VerifyError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(VerifyError::InvalidToken(format!(
            "the token is {} bytes, more than {MAX_TOKEN_BYTES}",
            token.len()
        )));
    }
    let peek = jsonwebtoken::dangerous::insecure_decode::<Unverified>(token)
        .map_err(|err| VerifyError::InvalidToken(format!("not a JWT: {err}")))?
        .claims;
    if peek.standard.purpose != kind.purpose() {
        return Err(VerifyError::InvalidToken(format!(
            "a {} token was given where a {} token is needed",
            display_purpose(&peek.standard.purpose),
            kind.purpose()
        )));
    }
    if peek.ou.is_empty() {
        return Err(VerifyError::UnknownIssuer(
            "the token names no organization (ou)".into(),
        ));
    }
    let org_key = issuers.key(&peek.ou)?;
    let key = signing_key(&peek.standard, org_key, now)?;
    let mut validation = Validation::new(Algorithm::EdDSA);
    // Times are checked below against `now`, which tests can pin.
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let claims: T = jsonwebtoken::decode(token, &DecodingKey::from_ed_der(&key), &validation)
        .map_err(|err| VerifyError::InvalidToken(format!("signature: {err}")))?
        .claims;
    check_times(claims.standard(), now)?;
    if claims.standard().public_key.is_empty() {
        return Err(VerifyError::InvalidToken(
            "the token holds no public key".into(),
        ));
    }
    parse_public_key(&claims.standard().public_key)
        .map_err(|err| VerifyError::InvalidToken(format!("public_key {err}")))?;
    Ok(claims)
}

fn display_purpose(purpose: &str) -> &str {
    if purpose.is_empty() {
        "purposeless"
    } else {
        purpose
    }
}

/// Access to the standard claims of either kind of token.
trait HasStandard {
    fn standard(&self) -> &StandardClaims;
}

impl HasStandard for ClientClaims {
    fn standard(&self) -> &StandardClaims {
        &self.standard
    }
}

impl HasStandard for ServerClaims {
    fn standard(&self) -> &StandardClaims {
        &self.standard
    }
}

/// The key whose signature the JWT must carry: the organization's, or for a chain-issued
/// token, the chain issuer's once the chain checks out.
fn signing_key(
    claims: &StandardClaims,
    org_key: &[u8; PUBLIC_KEY_LEN],
    now: Now,
) -> Result<[u8; PUBLIC_KEY_LEN], VerifyError> {
    let Some(chain) = claims.iss.strip_prefix(CHAIN_ISSUER_PREFIX) else {
        if let Some(org) = claims.iss.strip_prefix(ORG_ISSUER_PREFIX)
            && !claims.tcs.is_empty()
            && org != hex::encode(org_key)
        {
            return Err(VerifyError::UnknownIssuer(format!(
                "the token's issuer I-{org} is not this organization's issuer"
            )));
        }
        return Ok(*org_key);
    };
    let invalid = |what: &str| VerifyError::InvalidToken(format!("chain-issued token: {what}"));
    required_chain_claims(claims)?;
    let issexp = claims.issexp.ok_or_else(|| invalid("no issexp"))?;
    if now.unix_seconds() >= issexp {
        return Err(VerifyError::ExpiredToken(format!(
            "the chain issuer's token expired at {issexp}"
        )));
    }
    let (issuer_id, issuer_key_hex) =
        split_two(chain).ok_or_else(|| invalid("iss is not C-<id>.<key>"))?;
    let (issuer_tcs, own_signature) =
        split_two(&claims.tcs).ok_or_else(|| invalid("tcs is not <issuer tcs>.<signature>"))?;
    let issuer_key = parse_public_key(issuer_key_hex)
        .map_err(|err| invalid(&format!("the issuer key {err}")))?;
    let vouched = format!("{issuer_id}.{issuer_key_hex}");
    if !verify_hex(org_key, vouched.as_bytes(), issuer_tcs) {
        return Err(VerifyError::UnknownIssuer(
            "the chain issuer was not vouched for by this organization's issuer".into(),
        ));
    }
    let chained = format!("{}.{issuer_tcs}", claims.jti);
    if !verify_hex(&issuer_key, chained.as_bytes(), own_signature) {
        return Err(invalid(
            "the chain issuer's signature in tcs does not verify",
        ));
    }
    Ok(issuer_key)
}

/// What a chain-issued token must carry: its id a KSUID made at its `iat`.
fn required_chain_claims(claims: &StandardClaims) -> Result<(), VerifyError> {
    let invalid = |what: String| VerifyError::InvalidToken(format!("chain-issued token: {what}"));
    for (name, value) in [
        ("iss", &claims.iss),
        ("public_key", &claims.public_key),
        ("tcs", &claims.tcs),
        ("jti", &claims.jti),
    ] {
        if value.is_empty() {
            return Err(invalid(format!("no {name}")));
        }
    }
    let (Some(iat), Some(_)) = (claims.iat, claims.exp) else {
        return Err(invalid("no iat or exp".into()));
    };
    let id = svix_ksuid::Ksuid::from_str(&claims.jti)
        .map_err(|err| invalid(format!("jti is not a KSUID: {err:?}")))?;
    if id.timestamp_seconds() != iat {
        return Err(invalid(format!(
            "jti was made at {}, not at iat {iat}",
            id.timestamp_seconds()
        )));
    }
    Ok(())
}

/// Checks that an organization issuer vouched for a chain issuer's token: `iss` names the
/// organization's key and `tcs` is its signature of `<jti>.<public_key>`, which every server
/// checks on each token the chain issuer issues.
pub fn check_chain_issuer(claims: &ClientClaims, issuers: &Issuers) -> Result<(), VerifyError> {
    let org_key = issuers.key(&claims.ou)?;
    let standard = &claims.standard;
    if standard.iss != format!("{ORG_ISSUER_PREFIX}{}", hex::encode(org_key)) {
        return Err(VerifyError::InvalidToken(format!(
            "the token of {} is not issued by organization {:?}'s issuer as a chain issuer (iss {:?})",
            claims.callerid, claims.ou, standard.iss
        )));
    }
    let vouched = format!("{}.{}", standard.jti, standard.public_key);
    if !verify_hex(org_key, vouched.as_bytes(), &standard.tcs) {
        return Err(VerifyError::InvalidToken(format!(
            "the tcs of {}'s token is not organization {:?}'s signature of its key",
            claims.callerid, claims.ou
        )));
    }
    Ok(())
}

fn split_two(text: &str) -> Option<(&str, &str)> {
    let (a, b) = text.split_once('.')?;
    (!a.is_empty() && !b.is_empty() && !b.contains('.')).then_some((a, b))
}

fn verify_hex(key: &[u8; PUBLIC_KEY_LEN], message: &[u8], signature_hex: &str) -> bool {
    hex::decode(signature_hex).is_ok_and(|sig| {
        UnparsedPublicKey::new(&ED25519, key)
            .verify(message, &sig)
            .is_ok()
    })
}

fn check_times(claims: &StandardClaims, now: Now) -> Result<(), VerifyError> {
    let now = now.unix_seconds();
    let Some(exp) = claims.exp else {
        return Err(VerifyError::InvalidToken(
            "the token has no expiry (exp)".into(),
        ));
    };
    if now >= exp {
        return Err(VerifyError::ExpiredToken(format!(
            "the token expired at {exp}, it is {now}"
        )));
    }
    if let Some(nbf) = claims.nbf
        && now < nbf
    {
        return Err(VerifyError::ExpiredToken(format!(
            "the token is not valid before {nbf}, it is {now}"
        )));
    }
    Ok(())
}
