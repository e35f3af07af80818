//! ID token checks (OpenID Connect Core 3.1.3.7): an RS256 signature by one of the issuer's
//! keys, then `iss`, `aud` (and `azp`), `exp`, `iat` and `nonce`.
//!
//! Only RS256 is accepted, whatever the header says: the algorithm is ours to choose, not the
//! token's, which rules out the classic `alg: none` and RS/HS confusion attacks. RS256 is what
//! Google signs with and the one algorithm every OIDC provider must support (Core 15.1).

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rsa::RsaPublicKey;
use rsa::pkcs1v15::{Signature, VerifyingKey};
use rsa::signature::Verifier;
use serde::Deserialize;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::config::OidcConfig;
use crate::error::Error;

/// The header of a compact JWS.
#[derive(Debug, Deserialize)]
pub(crate) struct Header {
    alg: String,
    #[serde(default)]
    pub(crate) kid: Option<String>,
}

/// `aud` is a string or an array of strings (RFC 7519 4.1.3).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    fn as_slice(&self) -> &[String] {
        match self {
            Audience::One(a) => std::slice::from_ref(a),
            Audience::Many(v) => v,
        }
    }
}

/// Some providers send `email_verified` as the string `"true"`; both forms are read.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Flag {
    Bool(bool),
    Text(String),
}

impl Flag {
    fn is_true(&self) -> bool {
        match self {
            Flag::Bool(b) => *b,
            Flag::Text(t) => t.eq_ignore_ascii_case("true"),
        }
    }
}

/// The claims we read.
#[derive(Debug, Deserialize)]
pub(crate) struct Claims {
    iss: String,
    pub(crate) sub: String,
    aud: Audience,
    #[serde(default)]
    azp: Option<String>,
    exp: i64,
    iat: i64,
    #[serde(default)]
    nonce: Option<String>,
    #[serde(default)]
    pub(crate) email: Option<String>,
    #[serde(default)]
    email_verified: Option<Flag>,
    #[serde(default)]
    pub(crate) name: Option<String>,
}

impl Claims {
    pub(crate) fn email_verified(&self) -> bool {
        self.email_verified.as_ref().is_some_and(Flag::is_true)
    }
}

/// The parts of a compact JWS, decoded but not yet trusted.
pub(crate) struct Unverified<'a> {
    pub(crate) header: Header,
    signed: &'a str,
    signature: Vec<u8>,
    payload: Vec<u8>,
}

pub(crate) fn split(token: &str) -> Result<Unverified<'_>, Error> {
    let malformed = || Error::id_token("not a compact JWS (header.payload.signature)");
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed());
    };
    let decode = |v: &str| URL_SAFE_NO_PAD.decode(v).map_err(|_| malformed());
    let header: Header =
        serde_json::from_slice(&decode(h)?).map_err(|e| Error::id_token(format!("header: {e}")))?;
    if header.alg != "RS256" {
        return Err(Error::id_token(format!(
            "signed with {:?}; only RS256 is accepted",
            header.alg
        )));
    }
    Ok(Unverified {
        header,
        signed: &token[..h.len() + 1 + p.len()],
        signature: decode(s)?,
        payload: decode(p)?,
    })
}

impl Unverified<'_> {
    /// Checks the signature with `key` and returns the claims it covers.
    pub(crate) fn verify(self, key: &RsaPublicKey) -> Result<Claims, Error> {
        let signature = Signature::try_from(self.signature.as_slice())
            .map_err(|_| Error::id_token("signature is malformed"))?;
        VerifyingKey::<Sha256>::new(key.clone())
            .verify(self.signed.as_bytes(), &signature)
            .map_err(|_| Error::id_token("signature does not verify"))?;
        serde_json::from_slice(&self.payload).map_err(|e| Error::id_token(format!("claims: {e}")))
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Checks the claims of a token whose signature verified.
pub(crate) fn check_claims(claims: &Claims, cfg: &OidcConfig, nonce: &str) -> Result<(), Error> {
    if !cfg.accepted_issuers().contains(&claims.iss.as_str()) {
        return Err(Error::id_token(format!(
            "issuer {:?} is not {:?}",
            claims.iss, cfg.issuer
        )));
    }
    let aud = claims.aud.as_slice();
    if !aud.iter().any(|a| a == &cfg.client_id) {
        return Err(Error::id_token("audience does not include this client"));
    }
    // Core 3.1.3.7 (4, 5): with several audiences, the authorized party must be us.
    if (aud.len() > 1 || claims.azp.is_some())
        && claims.azp.as_deref() != Some(cfg.client_id.as_str())
    {
        return Err(Error::id_token("authorized party (azp) is not this client"));
    }
    let leeway = cfg.leeway.as_secs() as i64;
    let now = now();
    if claims.exp + leeway <= now {
        return Err(Error::id_token("expired"));
    }
    if claims.iat - leeway > now {
        return Err(Error::id_token("issued in the future"));
    }
    // A token for this sign-in is minted moments before we read it; an old one is a replay.
    if claims.iat + leeway + (cfg.login_ttl.as_secs() as i64) < now {
        return Err(Error::id_token("issued too long ago"));
    }
    let matches = claims
        .nonce
        .as_deref()
        .is_some_and(|n| bool::from(n.as_bytes().ct_eq(nonce.as_bytes())));
    if !matches {
        return Err(Error::id_token("nonce does not match the sign-in"));
    }
    if claims.sub.is_empty() {
        return Err(Error::id_token("subject is empty"));
    }
    Ok(())
}
