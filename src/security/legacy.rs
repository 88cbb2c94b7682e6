//! The legacy `ssl` security plugin's rules, made strict.
//!
//! A request is signed with RSA PKCS#1 v1.5 over SHA-1 of exactly its `:body`, by the key whose
//! public half sits in the servers' client directory as `<name>.pem` for `callerid cert=<name>`.
//! Replies are signed with one key pair that every server shares. fedgate checks what
//! mcollectived checks (caller format, key file, signature, signed TTL and time agreeing with the
//! envelope, age within the TTL) and what it does not: a time too far in the future, and an
//! unsigned `:agent` or `:filter` agent that disagrees with the signed body. Replays are the
//! admission path's to refuse (`gateway::replay`), once the request is mapped and allowed.
//!
//! A verifier given fedgate's own signing keys ([`OwnKeys`]) refuses, after the signature, every
//! request one of them signed: fedgate never takes back what it published itself.
//!
//! Verification uses aws-lc-rs. Signing uses OpenSSL through the `openssl` crate, the library
//! Ruby's own `OpenSSL::PKey::RSA#sign` calls: aws-lc-rs verifies SHA-1 signatures but cannot
//! make them, and the RustCrypto `rsa` crate's private-key operations are not constant time
//! (RUSTSEC-2023-0071), while replies are signed in answer to requests anyone may send.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use aws_lc_rs::signature::{ParsedPublicKey, RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, SubjectPublicKeyInfoDer};
use x509_parser::prelude::FromDer;

mod own;
mod sign;

pub use own::{KeyPrint, OwnKeys};
pub use sign::{LegacySigner, NewLegacyRequest};

use crate::wire::mcollective::envelope::{
    Body, LegacyReply, LegacyRequest, SignedBody, base64_decode,
};
use crate::wire::mcollective::{LegacyError, Ruby, Serializer};

/// Client public keys remembered at most.
const KEY_CACHE: usize = 1024;

/// Why a legacy message was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LegacyRefusal {
    /// The bytes are not a valid envelope.
    #[error(transparent)]
    Malformed(#[from] LegacyError),
    /// `callerid` is not `cert=<name>`.
    #[error("caller id {0:?} is not cert=<name>")]
    CallerFormat(String),
    /// No key file for the caller. The directory is not named: this text reaches callers and
    /// records, which carry no server paths.
    #[error("no public key for {name} among the trusted client keys")]
    UnknownCaller {
        /// The certificate name.
        name: String,
    },
    /// A key file that cannot be used.
    #[error("key {0}")]
    BadKey(String),
    /// The signature does not verify.
    #[error("the signature does not verify with {0}")]
    BadSignature(String),
    /// The signed TTL or time differs from the envelope's.
    #[error(
        "the envelope's ttl/msgtime ({outer_ttl}/{outer_time}) differ from the signed ones ({ttl}/{time})"
    )]
    TtlMismatch {
        /// Envelope TTL.
        outer_ttl: i64,
        /// Envelope time.
        outer_time: i64,
        /// Signed TTL.
        ttl: i64,
        /// Signed time.
        time: i64,
    },
    /// Older than its TTL.
    #[error("created at {time}, {age} seconds old, but its ttl is {ttl}")]
    Expired {
        /// Signed time.
        time: i64,
        /// Age in seconds.
        age: i64,
        /// Signed TTL.
        ttl: i64,
    },
    /// Created further in the future than the allowed clock skew.
    #[error("created at {time}, {ahead} seconds in the future (skew allowed: {skew})")]
    Future {
        /// Signed time.
        time: i64,
        /// Seconds ahead.
        ahead: i64,
        /// The allowed skew.
        skew: i64,
    },
    /// An unsigned field disagrees with the signed body.
    #[error("{0}")]
    Disagrees(String),
    /// A bare pre-2.0 body where the collective enforces signed TTLs.
    #[error(
        "the body is in the older security protocol (no signed TTL or time), which this collective refuses (enforce_ttl)"
    )]
    OldProtocol,
    /// Signed with one of fedgate's own keys: a request fedgate published itself.
    #[error("signed with fedgate's own key as cert={0}: fedgate published it itself")]
    OwnRequest(String),
}

impl LegacyRefusal {
    /// Whether the signature had verified before the request was refused: its signer sent it,
    /// or replays what its signer sent.
    pub fn after_signature(&self) -> bool {
        !matches!(
            self,
            LegacyRefusal::CallerFormat(_)
                | LegacyRefusal::UnknownCaller { .. }
                | LegacyRefusal::BadKey(_)
                | LegacyRefusal::BadSignature(_)
                | LegacyRefusal::OwnRequest(_)
        )
    }

    /// A stable word for metrics and the audit trail.
    pub fn code(&self) -> &'static str {
        match self {
            LegacyRefusal::Malformed(err) => err.code(),
            LegacyRefusal::CallerFormat(_) => "bad_callerid",
            LegacyRefusal::UnknownCaller { .. } => "unknown_caller",
            LegacyRefusal::BadKey(_) => "bad_key",
            LegacyRefusal::BadSignature(_) => "bad_signature",
            LegacyRefusal::TtlMismatch { .. } => "ttl_mismatch",
            LegacyRefusal::Expired { .. } => "ttl_expired",
            LegacyRefusal::Future { .. } => "future_msgtime",
            LegacyRefusal::Disagrees(_) => "unsigned_field_disagrees",
            LegacyRefusal::OwnRequest(_) => "own_request",
            LegacyRefusal::OldProtocol => "old_protocol",
        }
    }
}

/// A legacy request whose signature, times and unsigned fields checked out.
#[derive(Clone, Debug)]
pub struct VerifiedLegacyRequest {
    /// The envelope.
    pub request: LegacyRequest,
    /// The signed body.
    pub body: SignedBody,
    /// The certificate name from `cert=<name>`.
    pub cert_name: String,
    /// What was asked: discovery `ping`, or an RPC action.
    pub call: LegacyCall,
    /// The key the signature verified with.
    pub signer: KeyPrint,
    /// A bare pre-2.0 body: its TTL and time are the envelope's, unsigned.
    pub bare: bool,
}

/// What a verified request asks for.
#[derive(Clone, Debug, PartialEq)]
pub enum LegacyCall {
    /// The `discovery` agent's `ping`.
    Discovery,
    /// A SimpleRPC request.
    Rpc {
        /// Agent (the signed one, which the envelope agrees with).
        agent: String,
        /// Action.
        action: String,
        /// Inputs.
        data: Ruby,
        /// `:process_results`: false when the client wants no reply.
        process_results: bool,
    },
}

/// A public key from a PEM file (an X.509 certificate or a SubjectPublicKeyInfo) and its print.
fn read_public_key(pem: &[u8], what: &str) -> Result<(ParsedPublicKey, KeyPrint), LegacyRefusal> {
    let bits = if let Ok(cert) = CertificateDer::from_pem_slice(pem) {
        let (_, cert) = x509_parser::parse_x509_certificate(&cert)
            .map_err(|e| LegacyRefusal::BadKey(format!("{what}: {e}")))?;
        cert.public_key().subject_public_key.data.to_vec()
    } else if let Ok(spki) = SubjectPublicKeyInfoDer::from_pem_slice(pem) {
        let (_, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(&spki)
            .map_err(|e| LegacyRefusal::BadKey(format!("{what}: {e}")))?;
        spki.subject_public_key.data.to_vec()
    } else {
        return Err(LegacyRefusal::BadKey(format!(
            "{what}: no certificate or public key in PEM"
        )));
    };
    let key = ParsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY, &bits).map_err(
        |e| LegacyRefusal::BadKey(format!("{what}: not an RSA key of 2048 bits or more: {e}")),
    )?;
    Ok((key, own::key_print(&bits)))
}

fn verify(key: &ParsedPublicKey, body: &[u8], hash: &str, what: &str) -> Result<(), LegacyRefusal> {
    let signature = base64_decode(hash)?;
    key.verify_sig(body, &signature)
        .map_err(|_| LegacyRefusal::BadSignature(what.to_string()))
}

/// `cert=<name>` with Ruby's `[\w.\-]+` name; the whole caller id must match, as
/// `valid_callerid?` requires.
pub fn cert_name(callerid: &str) -> Option<&str> {
    let name = callerid.strip_prefix("cert=")?;
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-');
    ok.then_some(name)
}

/// Checks legacy requests and replies for one legacy collective.
pub struct LegacyVerifier {
    client_dir: PathBuf,
    server_public: ParsedPublicKey,
    max_skew: i64,
    keys: quick_cache::sync::Cache<String, Arc<(ParsedPublicKey, KeyPrint)>>,
    own: Option<OwnKeys>,
    /// Bare pre-2.0 bodies are refused (the ssl plugin's `enforce_ttl` set).
    enforce_ttl: bool,
}

impl std::fmt::Debug for LegacyVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LegacyVerifier")
            .field("client_dir", &self.client_dir)
            .field("max_skew", &self.max_skew)
            .finish()
    }
}

impl LegacyVerifier {
    /// Client keys from `client_dir/<name>.pem`; replies verified with `server_public`; times
    /// up to `max_skew` seconds ahead accepted.
    pub fn new(
        client_dir: &Path,
        server_public: &Path,
        max_skew: i64,
    ) -> Result<LegacyVerifier, LegacyRefusal> {
        let pem = std::fs::read(server_public)
            .map_err(|e| LegacyRefusal::BadKey(format!("{}: {e}", server_public.display())))?;
        Ok(LegacyVerifier {
            client_dir: client_dir.to_path_buf(),
            server_public: read_public_key(&pem, &server_public.display().to_string())?.0,
            max_skew,
            keys: quick_cache::sync::Cache::new(KEY_CACHE),
            own: None,
            enforce_ttl: false,
        })
    }

    /// Refuses bare pre-2.0 bodies, as mcollectived does once `plugin.ssl.enforce_ttl` is set;
    /// without it a bare body that is not a Hash (discovery's `"ping"`) is taken with the
    /// envelope's TTL and time, as mcollectived takes it.
    pub fn enforcing_ttl(mut self, enforce: bool) -> LegacyVerifier {
        self.enforce_ttl = enforce;
        self
    }

    /// Refuses every request signed with one of fedgate's own keys (`OwnKeys`).
    pub fn refusing_own(mut self, own: OwnKeys) -> LegacyVerifier {
        self.own = Some(own);
        self
    }

    fn client_key(&self, name: &str) -> Result<Arc<(ParsedPublicKey, KeyPrint)>, LegacyRefusal> {
        if let Some(key) = self.keys.get(name) {
            return Ok(key);
        }
        let path = self.client_dir.join(format!("{name}.pem"));
        let pem = std::fs::read(&path).map_err(|_| LegacyRefusal::UnknownCaller {
            name: name.to_string(),
        })?;
        // Named by its file name alone: the text may reach the caller.
        let key = Arc::new(read_public_key(&pem, &format!("{name}.pem"))?);
        self.keys.insert(name.to_string(), key.clone());
        Ok(key)
    }

    /// Verifies a request envelope at `now` (Unix seconds): every check of
    /// [`LegacyVerifier::check_request`]. Nothing is remembered: the ingress claims the signed
    /// body in the gateway's replay guard once the request is mapped and authorized.
    pub fn verify_request(
        &self,
        serializer: Serializer,
        request: LegacyRequest,
        now: i64,
    ) -> Result<VerifiedLegacyRequest, LegacyRefusal> {
        let checked = self.checked(serializer, &request, now)?;
        Ok(VerifiedLegacyRequest {
            request,
            body: checked.body,
            cert_name: checked.cert_name,
            call: checked.call,
            signer: checked.signer,
            bare: checked.bare,
        })
    }

    /// Every check [`LegacyVerifier::verify_request`] makes, without building the verified
    /// request: for `fedgate inspect`, which judges one message on its own. Returns the
    /// name of the key that verified it (`cert=<name>`).
    pub fn check_request(
        &self,
        serializer: Serializer,
        request: &LegacyRequest,
        now: i64,
    ) -> Result<String, LegacyRefusal> {
        self.checked(serializer, request, now)
            .map(|checked| checked.cert_name)
    }

    /// Caller, key, signature, own key, request id, the unsigned fields against the signed call,
    /// and last the signed times against the envelope and `now`.
    fn checked(
        &self,
        serializer: Serializer,
        request: &LegacyRequest,
        now: i64,
    ) -> Result<Checked, LegacyRefusal> {
        let name = cert_name(&request.callerid)
            .ok_or_else(|| LegacyRefusal::CallerFormat(request.callerid.clone()))?
            .to_string();
        let key = self.client_key(&name)?;
        let (key, signer) = (&key.0, key.1);
        verify(key, &request.body, &request.hash, &format!("{name}.pem"))?;
        if self
            .own
            .as_ref()
            .is_some_and(|own| own.holds(&signer, &name))
        {
            return Err(LegacyRefusal::OwnRequest(name));
        }
        let (body, bare) = match request.body(serializer)? {
            Body::Wrapped(body) => (body, false),
            Body::Bare(_) if self.enforce_ttl => return Err(LegacyRefusal::OldProtocol),
            Body::Bare(msg) => {
                let body = SignedBody {
                    msg,
                    ttl: request.ttl,
                    msgtime: request.msgtime,
                };
                (body, true)
            }
        };
        if !is_request_id(&request.requestid) {
            return Err(LegacyRefusal::Disagrees(format!(
                "request id {:?} is not 1 to {MAX_REQUEST_ID} letters, digits, '-', '_', '.' or ':'",
                request
                    .requestid
                    .chars()
                    .take(MAX_REQUEST_ID + 1)
                    .collect::<String>()
            )));
        }
        let call = call_of(request, &body)?;
        // Last, so a request refused for its time is otherwise sound: its caller can be told.
        check_times(request, &body, now, self.max_skew)?;
        Ok(Checked {
            body,
            cert_name: name,
            call,
            signer,
            bare,
        })
    }

    /// Verifies a reply's signature with the servers' shared key.
    pub fn verify_reply(&self, reply: &LegacyReply) -> Result<(), LegacyRefusal> {
        verify(
            &self.server_public,
            &reply.body,
            &reply.hash,
            "the server public key",
        )
    }
}

/// What [`LegacyVerifier::checked`] found, before any replay claim.
struct Checked {
    body: SignedBody,
    cert_name: String,
    call: LegacyCall,
    signer: KeyPrint,
    bare: bool,
}

/// The signed TTL and time agree with the envelope's, the request is not older than its TTL,
/// and not further ahead of `now` than `max_skew`.
fn check_times(
    request: &LegacyRequest,
    body: &SignedBody,
    now: i64,
    max_skew: i64,
) -> Result<(), LegacyRefusal> {
    if body.ttl != request.ttl || body.msgtime != request.msgtime {
        return Err(LegacyRefusal::TtlMismatch {
            outer_ttl: request.ttl,
            outer_time: request.msgtime,
            ttl: body.ttl,
            time: body.msgtime,
        });
    }
    let age = now.saturating_sub(body.msgtime);
    if age > body.ttl {
        return Err(LegacyRefusal::Expired {
            time: body.msgtime,
            age,
            ttl: body.ttl,
        });
    }
    if age.saturating_neg() > max_skew {
        return Err(LegacyRefusal::Future {
            time: body.msgtime,
            ahead: age.saturating_neg(),
            skew: max_skew,
        });
    }
    Ok(())
}

/// Longest request id taken. mcollectived takes any String; `mco` sends 32 lowercase hex
/// characters, other clients 40 (a SHA-1) or a UUID with its dashes. The id comes back in
/// replies and goes into the audit trail, so it is kept short and plain.
pub const MAX_REQUEST_ID: usize = 64;

/// A request id fedgate takes, and may send back in replies.
pub fn is_request_id(id: &str) -> bool {
    (1..=MAX_REQUEST_ID).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}

/// What the signed body asks, checked against the unsigned `:agent` and `:filter`.
fn call_of(request: &LegacyRequest, body: &SignedBody) -> Result<LegacyCall, LegacyRefusal> {
    let disagrees = |m: String| Err(LegacyRefusal::Disagrees(m));
    let filter_agents: Vec<&str> = match request.filter.get("agent") {
        Some(Ruby::Array(items)) => items.iter().filter_map(Ruby::as_str).collect(),
        Some(Ruby::Nil) | None => Vec::new(),
        Some(_) => return disagrees("the filter's agent list is not an Array".into()),
    };
    match &body.msg {
        Ruby::Str(ping) if ping == "ping" => {
            if request.agent != "discovery" {
                return disagrees(format!(
                    "a discovery ping is addressed to agent {}",
                    request.agent
                ));
            }
            Ok(LegacyCall::Discovery)
        }
        rpc @ Ruby::Hash(_) => {
            let text = |key: &str| rpc.get(key).and_then(Ruby::as_str).map(str::to_string);
            let (Some(agent), Some(action)) = (text("agent"), text("action")) else {
                return disagrees("the signed RPC request names no agent or action".into());
            };
            if agent != request.agent {
                return disagrees(format!(
                    "the envelope's agent {} is not the signed agent {agent}",
                    request.agent
                ));
            }
            if let Some(other) = filter_agents.iter().find(|a| **a != agent) {
                return disagrees(format!(
                    "the filter requires agent {other}, but the signed agent is {agent}"
                ));
            }
            let data = rpc.get("data").cloned().unwrap_or(Ruby::Hash(Vec::new()));
            let process_results = !matches!(rpc.get("process_results"), Some(Ruby::Bool(false)))
                && !matches!(data.get("process_results"), Some(Ruby::Bool(false)));
            Ok(LegacyCall::Rpc {
                agent,
                action,
                data,
                process_results,
            })
        }
        other => disagrees(format!(
            "the signed message is neither \"ping\" nor an RPC request: {other:?}"
        )),
    }
}
