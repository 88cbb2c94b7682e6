//! Signing legacy messages as the `ssl` plugin does: RSA PKCS#1 v1.5 over SHA-1 of exactly the
//! serialized `:body`, with OpenSSL (what Ruby's `OpenSSL::PKey::RSA#sign` calls).

use std::path::Path;

use super::LegacyRefusal;
use crate::wire::mcollective::envelope::{LegacyReply, LegacyRequest, SignedBody, base64_lines};
use crate::wire::mcollective::{Ruby, Serializer};

/// An RSA private key that signs legacy messages (SHA-1, PKCS#1 v1.5) with OpenSSL.
pub struct LegacySigner {
    key: openssl::pkey::PKey<openssl::pkey::Private>,
    name: String,
}

impl std::fmt::Debug for LegacySigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LegacySigner")
            .field("name", &self.name)
            .field("key", &"MASKED")
            .finish()
    }
}

impl LegacySigner {
    /// Loads a PEM private key (PKCS#1 or PKCS#8); `name` is the `cert=<name>` it signs as.
    pub fn from_file(path: &Path, name: &str) -> Result<LegacySigner, LegacyRefusal> {
        let pem = std::fs::read(path)
            .map_err(|e| LegacyRefusal::BadKey(format!("{}: {e}", path.display())))?;
        let key = openssl::pkey::PKey::private_key_from_pem(&pem)
            .map_err(|e| LegacyRefusal::BadKey(format!("{}: {e}", path.display())))?;
        if key.rsa().is_err() || key.bits() < 2048 {
            return Err(LegacyRefusal::BadKey(format!(
                "{}: not an RSA key of 2048 bits or more",
                path.display()
            )));
        }
        Ok(LegacySigner {
            key,
            name: name.to_string(),
        })
    }

    /// The name it signs as.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `Base64.encode64` of the signature over `bytes`.
    pub fn sign(&self, bytes: &[u8]) -> Result<String, LegacyRefusal> {
        let mut signer =
            openssl::sign::Signer::new(openssl::hash::MessageDigest::sha1(), &self.key)
                .map_err(|e| LegacyRefusal::BadKey(e.to_string()))?;
        signer
            .update(bytes)
            .map_err(|e| LegacyRefusal::BadKey(e.to_string()))?;
        let signature = signer
            .sign_to_vec()
            .map_err(|e| LegacyRefusal::BadKey(e.to_string()))?;
        Ok(base64_lines(&signature))
    }
}

/// What a new legacy request carries.
#[derive(Clone, Debug)]
pub struct NewLegacyRequest<'a> {
    /// `"ping"` or the RPC Hash.
    pub msg: Ruby,
    /// The sender identity.
    pub senderid: &'a str,
    /// 32 hex characters.
    pub requestid: &'a str,
    /// The filter Hash.
    pub filter: Ruby,
    /// The collective.
    pub collective: &'a str,
    /// The agent.
    pub agent: &'a str,
    /// TTL in seconds.
    pub ttl: i64,
    /// Creation time.
    pub msgtime: i64,
}

impl LegacySigner {
    /// Builds and signs a request as `cert=<name>`.
    pub fn sign_request(
        &self,
        serializer: Serializer,
        new: &NewLegacyRequest<'_>,
    ) -> Result<LegacyRequest, LegacyRefusal> {
        let signed = SignedBody {
            msg: new.msg.clone(),
            ttl: new.ttl,
            msgtime: new.msgtime,
        };
        let body = signed.encode(serializer);
        // What gets signed must read back as exactly what was decided and audited.
        let reads_back = serializer
            .decode(&body)
            .ok()
            .and_then(|inner| inner.get("ssl_msg").cloned());
        if reads_back.as_ref() != Some(&new.msg) {
            return Err(LegacyRefusal::Disagrees(
                "the request would not read back as written; not signing it".into(),
            ));
        }
        let hash = self.sign(&body)?;
        Ok(LegacyRequest {
            body,
            senderid: new.senderid.to_string(),
            requestid: new.requestid.to_string(),
            filter: new.filter.clone(),
            collective: new.collective.to_string(),
            agent: new.agent.to_string(),
            callerid: format!("cert={}", self.name),
            ttl: new.ttl,
            msgtime: new.msgtime,
            hash,
        })
    }

    /// Builds and signs a reply as the servers' shared key.
    pub fn sign_reply(
        &self,
        serializer: Serializer,
        senderid: &str,
        requestid: &str,
        senderagent: &str,
        msgtime: i64,
        reply: &Ruby,
    ) -> Result<LegacyReply, LegacyRefusal> {
        let body = serializer.encode(reply);
        if serializer.decode(&body).ok().as_ref() != Some(reply) {
            return Err(LegacyRefusal::Disagrees(
                "the reply would not read back as written; not signing it".into(),
            ));
        }
        let hash = self.sign(&body)?;
        Ok(LegacyReply {
            senderid: senderid.to_string(),
            requestid: requestid.to_string(),
            senderagent: senderagent.to_string(),
            msgtime,
            body,
            hash,
        })
    }
}
