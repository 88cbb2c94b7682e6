//! The `ssl` security plugin's envelopes (`security/ssl.rb` `encoderequest`/`encodereply`).
//!
//! A request is a Hash `{:body, :senderid, :requestid, :filter, :collective, :agent, :callerid,
//! :ttl, :msgtime, :hash}` where `:body` is the serialized `{:ssl_msg, :ssl_ttl, :ssl_msgtime}`
//! and `:hash` the base64 RSA-SHA1 signature over exactly the `:body` bytes. Everything outside
//! `:body` is unsigned. A reply is `{:senderid, :requestid, :senderagent, :msgtime, :body,
//! :hash}`, signed with the servers' shared key.

use super::{LegacyError, Ruby, Serializer};

/// A legacy request envelope. Only [`LegacyRequest::body`] is covered by the signature.
#[derive(Clone, Debug, PartialEq)]
pub struct LegacyRequest {
    /// The signed bytes: the serialized `{:ssl_msg, :ssl_ttl, :ssl_msgtime}`.
    pub body: Vec<u8>,
    /// The sender's identity (unsigned).
    pub senderid: String,
    /// Unsigned: `mco` sends 32 lowercase hex characters, other clients 40 or a UUID.
    pub requestid: String,
    /// The discovery filter (unsigned): String keys `fact`, `cf_class`, `agent`, `identity`,
    /// `compound`.
    pub filter: Ruby,
    /// The collective (unsigned).
    pub collective: String,
    /// The agent that will run (unsigned).
    pub agent: String,
    /// `cert=<name>`: names the key that must verify the signature.
    pub callerid: String,
    /// Seconds the request is valid (the signed copy is in the body).
    pub ttl: i64,
    /// Creation time, Unix seconds (the signed copy is in the body).
    pub msgtime: i64,
    /// Base64 of the signature over `body`.
    pub hash: String,
}

/// The signed part of a request.
#[derive(Clone, Debug, PartialEq)]
pub struct SignedBody {
    /// `"ping"` for discovery, else the SimpleRPC request Hash.
    pub msg: Ruby,
    /// Signed TTL.
    pub ttl: i64,
    /// Signed creation time.
    pub msgtime: i64,
}

/// A request's body as signed.
#[derive(Clone, Debug, PartialEq)]
pub enum Body {
    /// The 2.0 wrapper: the message with its TTL and time, all signed.
    Wrapped(SignedBody),
    /// A pre-2.0 message alone (a String such as discovery's `"ping"`): its TTL and time are
    /// the envelope's, which anyone may change.
    Bare(Ruby),
}

/// A legacy reply envelope.
#[derive(Clone, Debug, PartialEq)]
pub struct LegacyReply {
    /// The replying server's identity (unsigned; every server shares one key).
    pub senderid: String,
    /// The request this answers.
    pub requestid: String,
    /// The agent that answered.
    pub senderagent: String,
    /// Reply time, Unix seconds.
    pub msgtime: i64,
    /// The signed bytes: the serialized reply (`"pong"` or `{:statuscode, :statusmsg, :data}`).
    pub body: Vec<u8>,
    /// Base64 of the signature over `body`.
    pub hash: String,
}

fn envelope(what: &'static str, message: impl Into<String>) -> LegacyError {
    LegacyError::Envelope {
        what,
        message: message.into(),
    }
}

fn text(value: &Ruby, what: &'static str, key: &str) -> Result<String, LegacyError> {
    value
        .get(key)
        .and_then(Ruby::as_str)
        .map(str::to_string)
        .ok_or_else(|| envelope(what, format!(":{key} is missing or not a String")))
}

fn int(value: &Ruby, what: &'static str, key: &str) -> Result<i64, LegacyError> {
    value
        .get(key)
        .and_then(Ruby::as_int)
        .ok_or_else(|| envelope(what, format!(":{key} is missing or not an Integer")))
}

fn string_bytes(value: &Ruby, what: &'static str, key: &str) -> Result<Vec<u8>, LegacyError> {
    value
        .get(key)
        .and_then(Ruby::as_bytes)
        .map(<[u8]>::to_vec)
        .ok_or_else(|| envelope(what, format!(":{key} is missing or not a String")))
}

/// The string form `:body` takes in each serializer: binary in Marshal, text in YAML.
fn body_value(serializer: Serializer, body: &[u8]) -> Ruby {
    match serializer {
        Serializer::Marshal => Ruby::Bytes(body.to_vec()),
        Serializer::Yaml => Ruby::Str(String::from_utf8_lossy(body).into_owned()),
    }
}

fn check_size(bytes: &[u8], limit: usize) -> Result<(), LegacyError> {
    if bytes.len() > limit {
        return Err(LegacyError::TooLarge {
            size: bytes.len(),
            limit,
        });
    }
    Ok(())
}

impl LegacyRequest {
    /// Reads a request envelope of at most `limit` bytes.
    pub fn decode(
        serializer: Serializer,
        bytes: &[u8],
        limit: usize,
    ) -> Result<LegacyRequest, LegacyError> {
        check_size(bytes, limit)?;
        let outer = serializer.decode(bytes)?;
        if !matches!(outer, Ruby::Hash(_)) {
            return Err(envelope("request", "not a Hash"));
        }
        LegacyRequest::from_outer(&outer)
    }

    /// The request in a decoded envelope Hash.
    fn from_outer(outer: &Ruby) -> Result<LegacyRequest, LegacyError> {
        const WHAT: &str = "request";
        let filter = outer
            .get("filter")
            .cloned()
            .ok_or_else(|| envelope(WHAT, ":filter is missing"))?;
        if !matches!(filter, Ruby::Hash(_)) {
            return Err(envelope(WHAT, ":filter is not a Hash"));
        }
        let request = LegacyRequest {
            body: string_bytes(outer, WHAT, "body")?,
            senderid: text(outer, WHAT, "senderid")?,
            requestid: text(outer, WHAT, "requestid")?,
            filter,
            collective: text(outer, WHAT, "collective")?,
            agent: text(outer, WHAT, "agent")?,
            callerid: text(outer, WHAT, "callerid")?,
            ttl: int(outer, WHAT, "ttl")?,
            msgtime: int(outer, WHAT, "msgtime")?,
            hash: text(outer, WHAT, "hash")?,
        };
        Ok(request)
    }

    /// The signed body, decoded.
    pub fn signed_body(&self, serializer: Serializer) -> Result<SignedBody, LegacyError> {
        match self.body(serializer)? {
            Body::Wrapped(body) => Ok(body),
            Body::Bare(_) => Err(envelope(
                "request body",
                ":ssl_msg is missing (a pre-2.0 unwrapped body)",
            )),
        }
    }

    /// The signed body as the ssl plugin reads it: a Hash is the 2.0 wrapper, which must hold
    /// `:ssl_msg`, `:ssl_ttl` and `:ssl_msgtime`; anything else is a bare pre-2.0 message whose
    /// TTL and time are the envelope's, unsigned.
    pub fn body(&self, serializer: Serializer) -> Result<Body, LegacyError> {
        const WHAT: &str = "request body";
        let inner = serializer.decode(&self.body)?;
        if !matches!(inner, Ruby::Hash(_)) {
            return Ok(Body::Bare(inner));
        }
        let msg = inner
            .get("ssl_msg")
            .cloned()
            .ok_or_else(|| {
                envelope(
                    WHAT,
                    ":ssl_msg is missing: a pre-2.0 SimpleRPC body has no signed TTL, and mcollectived refuses it too (\"does not have a secure TTL\")",
                )
            })?;
        Ok(Body::Wrapped(SignedBody {
            msg,
            ttl: int(&inner, WHAT, "ssl_ttl")?,
            msgtime: int(&inner, WHAT, "ssl_msgtime")?,
        }))
    }

    /// Writes the envelope in the plugin's key order.
    pub fn encode(&self, serializer: Serializer) -> Vec<u8> {
        let outer = Ruby::Hash(vec![
            (Ruby::sym("body"), body_value(serializer, &self.body)),
            (Ruby::sym("senderid"), Ruby::str(&self.senderid)),
            (Ruby::sym("requestid"), Ruby::str(&self.requestid)),
            (Ruby::sym("filter"), self.filter.clone()),
            (Ruby::sym("collective"), Ruby::str(&self.collective)),
            (Ruby::sym("agent"), Ruby::str(&self.agent)),
            (Ruby::sym("callerid"), Ruby::str(&self.callerid)),
            (Ruby::sym("ttl"), Ruby::Int(self.ttl)),
            (Ruby::sym("msgtime"), Ruby::Int(self.msgtime)),
            (Ruby::sym("hash"), Ruby::str(&self.hash)),
        ]);
        serializer.encode(&outer)
    }
}

impl SignedBody {
    /// Serializes the body that gets signed.
    pub fn encode(&self, serializer: Serializer) -> Vec<u8> {
        serializer.encode(&Ruby::Hash(vec![
            (Ruby::sym("ssl_msg"), self.msg.clone()),
            (Ruby::sym("ssl_ttl"), Ruby::Int(self.ttl)),
            (Ruby::sym("ssl_msgtime"), Ruby::Int(self.msgtime)),
        ]))
    }
}

impl LegacyReply {
    /// Reads a reply envelope of at most `limit` bytes.
    pub fn decode(
        serializer: Serializer,
        bytes: &[u8],
        limit: usize,
    ) -> Result<LegacyReply, LegacyError> {
        check_size(bytes, limit)?;
        let outer = serializer.decode(bytes)?;
        if !matches!(outer, Ruby::Hash(_)) {
            return Err(envelope("reply", "not a Hash"));
        }
        LegacyReply::from_outer(&outer)
    }

    /// The reply in a decoded envelope Hash.
    fn from_outer(outer: &Ruby) -> Result<LegacyReply, LegacyError> {
        const WHAT: &str = "reply";
        Ok(LegacyReply {
            senderid: text(outer, WHAT, "senderid")?,
            requestid: text(outer, WHAT, "requestid")?,
            senderagent: text(outer, WHAT, "senderagent")?,
            msgtime: int(outer, WHAT, "msgtime")?,
            body: string_bytes(outer, WHAT, "body")?,
            hash: text(outer, WHAT, "hash")?,
        })
    }

    /// Writes the envelope in the plugin's key order.
    pub fn encode(&self, serializer: Serializer) -> Vec<u8> {
        serializer.encode(&Ruby::Hash(vec![
            (Ruby::sym("senderid"), Ruby::str(&self.senderid)),
            (Ruby::sym("requestid"), Ruby::str(&self.requestid)),
            (Ruby::sym("senderagent"), Ruby::str(&self.senderagent)),
            (Ruby::sym("msgtime"), Ruby::Int(self.msgtime)),
            (Ruby::sym("body"), body_value(serializer, &self.body)),
            (Ruby::sym("hash"), Ruby::str(&self.hash)),
        ]))
    }

    /// The reply body, decoded.
    pub fn reply_body(&self, serializer: Serializer) -> Result<Ruby, LegacyError> {
        serializer.decode(&self.body)
    }
}

/// A request or a reply, told apart by their keys: only a reply has `:senderagent`, only a
/// request `:callerid`.
#[derive(Clone, Debug, PartialEq)]
pub enum LegacyMessage {
    /// A request envelope.
    Request(LegacyRequest),
    /// A reply envelope.
    Reply(LegacyReply),
}

impl LegacyMessage {
    /// Reads a request or reply envelope of at most `limit` bytes.
    pub fn decode(
        serializer: Serializer,
        bytes: &[u8],
        limit: usize,
    ) -> Result<LegacyMessage, LegacyError> {
        check_size(bytes, limit)?;
        let outer = serializer.decode(bytes)?;
        if !matches!(outer, Ruby::Hash(_)) {
            return Err(envelope("message", "not a Hash"));
        }
        match (outer.get("senderagent"), outer.get("callerid")) {
            (Some(_), None) => LegacyReply::from_outer(&outer).map(LegacyMessage::Reply),
            (None, Some(_)) => LegacyRequest::from_outer(&outer).map(LegacyMessage::Request),
            _ => Err(envelope(
                "message",
                "neither a request (:callerid) nor a reply (:senderagent)",
            )),
        }
    }
}

/// `Base64.encode64`: RFC 2045 lines of 60 characters, each ending in a newline.
pub fn base64_lines(bytes: &[u8]) -> String {
    let flat = crate::wire::encode_base64(bytes);
    let mut out = String::with_capacity(flat.len() + flat.len() / 60 + 1);
    for chunk in flat.as_bytes().chunks(60) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out
}

/// `SSL.base64_decode`: anything outside `[A-Za-z0-9+/=\s]` is refused, whitespace ignored.
pub fn base64_decode(text: &str) -> Result<Vec<u8>, LegacyError> {
    if let Some(bad) = text
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "+/=".contains(*c) || c.is_whitespace()))
    {
        return Err(envelope(
            "signature",
            format!("{bad:?} is not a base64 character"),
        ));
    }
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    crate::wire::decode_base64_lenient(&compact)
        .map_err(|e| envelope("signature", format!("not base64: {e}")))
}
