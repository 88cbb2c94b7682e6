//! Issuing Choria tokens, as an organization issuer or a chain issuer does: for the development
//! PKI, the simulated fleet and tests. fedgate itself only holds tokens issued to it.

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

use super::V2Signer;
use super::tokens::{ClientClaims, ClientPermissions, ServerClaims, StandardClaims};

/// A chain issuer's standing: what its own token said.
#[derive(Clone, Debug)]
struct Chain {
    jti: String,
    public_key: String,
    tcs: String,
    exp: i64,
}

/// An organization issuer, or a chain issuer the organization vouched for.
pub struct TokenIssuer {
    pair: Ed25519KeyPair,
    encoding: EncodingKey,
    chain: Option<Chain>,
}

impl std::fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TokenIssuer({})", self.public_key())
    }
}

fn pair_from_seed(seed: &[u8; 32]) -> Result<(Ed25519KeyPair, EncodingKey), String> {
    let pair = Ed25519KeyPair::from_seed_unchecked(seed).map_err(|_| "not an ed25519 seed")?;
    let pkcs8 = pair
        .to_pkcs8v1()
        .map_err(|_| "cannot encode the key as PKCS#8".to_string())?;
    Ok((pair, EncodingKey::from_ed_der(pkcs8.as_ref())))
}

impl TokenIssuer {
    /// An organization issuer with this seed.
    pub fn org(seed: &[u8; 32]) -> Result<Self, String> {
        let (pair, encoding) = pair_from_seed(seed)?;
        Ok(TokenIssuer {
            pair,
            encoding,
            chain: None,
        })
    }

    /// A chain issuer from its seed and its own token's verified claims, which must say an
    /// organization issuer vouched for this key (`iss` `I-…`, `tcs`).
    pub fn chain(seed: &[u8; 32], claims: &ClientClaims) -> Result<Self, String> {
        let (pair, encoding) = pair_from_seed(seed)?;
        let standard = &claims.standard;
        if !standard.iss.starts_with("I-") || standard.tcs.is_empty() {
            return Err(format!(
                "the token of {} is not a chain issuer's: an organization issuer must vouch for its key (iss I-<key>, tcs)",
                claims.callerid
            ));
        }
        let public_key = hex::encode(pair.public_key().as_ref());
        if standard.public_key != public_key {
            return Err(format!(
                "the token of {} is for key {}, not this seed's {public_key}",
                claims.callerid, standard.public_key
            ));
        }
        let exp = standard
            .exp
            .ok_or_else(|| format!("the token of {} has no expiry", claims.callerid))?;
        Ok(TokenIssuer {
            pair,
            encoding,
            chain: Some(Chain {
                jti: standard.jti.clone(),
                public_key,
                tcs: standard.tcs.clone(),
                exp,
            }),
        })
    }

    /// The hex public key, what relying parties configure as the issuer.
    pub fn public_key(&self) -> String {
        hex::encode(self.pair.public_key().as_ref())
    }

    /// Issues a client token valid from `now` for `validity` seconds.
    pub fn issue_client(&self, mut claims: ClientClaims, now: i64, validity: i64) -> String {
        self.stamp(&mut claims.standard, "choria_client_id", now, validity);
        self.sign(&claims)
    }

    /// A caller in organization `ou` with the key of `seed` and a token for it, valid from `now`
    /// for `validity` seconds.
    pub fn client_signer(
        &self,
        seed: &[u8; 32],
        callerid: &str,
        ou: &str,
        permissions: ClientPermissions,
        (now, validity): (i64, i64),
    ) -> Result<V2Signer, String> {
        let key = V2Signer::from_seed(seed, String::new())?;
        let claims = ClientClaims {
            callerid: callerid.into(),
            ou: ou.into(),
            permissions: Some(permissions),
            standard: StandardClaims {
                public_key: key.public_key(),
                ..StandardClaims::default()
            },
            ..ClientClaims::default()
        };
        V2Signer::from_seed(seed, self.issue_client(claims, now, validity))
    }

    /// Issues a server token valid from `now` for `validity` seconds.
    pub fn issue_server(&self, mut claims: ServerClaims, now: i64, validity: i64) -> String {
        self.stamp(&mut claims.standard, "choria_server", now, validity);
        self.sign(&claims)
    }

    /// As an organization issuer, makes a chain issuer with `seed`: issues its token (a client
    /// token for its key, vouched for in `tcs`) and returns the token and the issuer.
    pub fn chain_issuer(
        &self,
        mut claims: ClientClaims,
        seed: &[u8; 32],
        now: i64,
        validity: i64,
    ) -> Result<(String, TokenIssuer), String> {
        if self.chain.is_some() {
            return Err("only an organization issuer makes chain issuers".into());
        }
        let (pair, encoding) = pair_from_seed(seed)?;
        claims.standard.public_key = hex::encode(pair.public_key().as_ref());
        self.stamp(&mut claims.standard, "choria_client_id", now, validity);
        let vouched = format!("{}.{}", claims.standard.jti, claims.standard.public_key);
        claims.standard.tcs = hex::encode(self.pair.sign(vouched.as_bytes()).as_ref());
        let token = self.sign(&claims);
        let chain = Chain {
            jti: claims.standard.jti,
            public_key: claims.standard.public_key,
            tcs: claims.standard.tcs,
            exp: now.saturating_add(validity),
        };
        Ok((
            token,
            TokenIssuer {
                pair,
                encoding,
                chain: Some(chain),
            },
        ))
    }

    fn stamp(&self, standard: &mut StandardClaims, purpose: &str, now: i64, validity: i64) {
        standard.purpose = purpose.into();
        standard.iat = Some(now);
        standard.nbf = Some(now);
        standard.exp = Some(now.saturating_add(validity));
        standard.jti = ksuid_at(now);
        match &self.chain {
            None => standard.iss = format!("I-{}", self.public_key()),
            Some(chain) => {
                standard.iss = format!("C-{}.{}", chain.jti, chain.public_key);
                standard.issexp = Some(chain.exp);
                standard.exp = standard.exp.map(|exp| exp.min(chain.exp));
                let chained = format!("{}.{}", standard.jti, chain.tcs);
                standard.tcs = format!(
                    "{}.{}",
                    chain.tcs,
                    hex::encode(self.pair.sign(chained.as_bytes()).as_ref())
                );
            }
        }
    }

    fn sign<T: Serialize>(&self, claims: &T) -> String {
        jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), claims, &self.encoding)
            .unwrap_or_else(|err| unreachable!("claims serialize and the key signs: {err}"))
    }
}

/// A KSUID made at unix second `now`, as go-choria's token ids are.
fn ksuid_at(now: i64) -> String {
    let at =
        time::OffsetDateTime::from_unix_timestamp(now).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    use svix_ksuid::KsuidLike as _;
    svix_ksuid::Ksuid::new(Some(at), None).to_string()
}
