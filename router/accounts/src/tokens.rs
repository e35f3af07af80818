//! Access tokens (short-lived JWTs, HS256) and refresh tokens (random, stored hashed).
//!
//! An access token is checked without the database (signature, expiry, issuer, audience); the
//! router still loads the user per request so a deleted or suspended account stops at once.
//! A refresh token is 32 random bytes; only its SHA-256 is stored, in a family that one login
//! starts. Each refresh uses the token up and issues the next of the same family; presenting a
//! used token again means it was copied, and the whole family is revoked (see `store`).

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::types::Role;

const ISSUER: &str = "clawdbot-cloud";
const AUDIENCE: &str = "clawdbot-api";
/// Shortest signing key: HS256 is as strong as its key; 32 bytes is the hash's own size.
pub const MIN_SECRET_BYTES: usize = 32;
/// Prefix of refresh tokens, so that a leaked one is recognisable by secret scanners.
const REFRESH_PREFIX: &str = "cbr_";

/// The claims of an access token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    /// The user id.
    pub sub: Uuid,
    pub role: Role,
    pub iat: i64,
    pub exp: i64,
    pub iss: String,
    pub aud: String,
}

/// Signs and checks access tokens.
#[derive(Clone)]
pub struct TokenSigner {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl: Duration,
}

impl std::fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSigner")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl TokenSigner {
    pub fn new(secret: &[u8], ttl: Duration) -> Result<Self> {
        if secret.len() < MIN_SECRET_BYTES {
            return Err(Error::Config(format!(
                "the access token signing key must be at least {MIN_SECRET_BYTES} bytes"
            )));
        }
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = 5;
        Ok(TokenSigner {
            encoding: EncodingKey::from_secret(secret)
                .map_err(|_| Error::Config("unusable access token signing key".into()))?,
            decoding: DecodingKey::from_secret(secret)
                .map_err(|_| Error::Config("unusable access token signing key".into()))?,
            validation,
            ttl,
        })
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// A token for `user` valid for the configured time.
    pub fn issue(&self, user: Uuid, role: Role) -> Result<(String, DateTime<Utc>)> {
        self.issue_at(user, role, Utc::now())
    }

    fn issue_at(
        &self,
        user: Uuid,
        role: Role,
        now: DateTime<Utc>,
    ) -> Result<(String, DateTime<Utc>)> {
        let exp = now + chrono::Duration::from_std(self.ttl).unwrap_or_default();
        let claims = AccessClaims {
            sub: user,
            role,
            iat: now.timestamp(),
            exp: exp.timestamp(),
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|_| Error::Crypto("signing an access token failed"))?;
        Ok((token, exp))
    }

    /// The claims of a valid token; `BadToken` for anything else (the reason is not told).
    pub fn verify(&self, token: &str) -> Result<AccessClaims> {
        jsonwebtoken::decode::<AccessClaims>(token, &self.decoding, &self.validation)
            .map(|d| d.claims)
            .map_err(|_| Error::BadToken)
    }
}

/// A new refresh token (what the client keeps) and its hash (what the database keeps).
pub fn new_refresh_token() -> (String, Vec<u8>) {
    let bytes: [u8; 32] = rand::random();
    let token = format!("{REFRESH_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes));
    let hash = hash_refresh_token(&token);
    (token, hash)
}

pub fn hash_refresh_token(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn a_token_round_trips_and_carries_the_role() {
        let s = TokenSigner::new(KEY, Duration::from_secs(900)).unwrap();
        let user = Uuid::new_v4();
        let (t, exp) = s.issue(user, Role::Admin).unwrap();
        let c = s.verify(&t).unwrap();
        assert_eq!((c.sub, c.role, c.exp), (user, Role::Admin, exp.timestamp()));
    }

    #[test]
    fn expired_forged_and_foreign_tokens_are_refused() {
        let s = TokenSigner::new(KEY, Duration::from_secs(60)).unwrap();
        let user = Uuid::new_v4();
        let (old, _) = s
            .issue_at(user, Role::User, Utc::now() - chrono::Duration::hours(1))
            .unwrap();
        assert!(matches!(s.verify(&old), Err(Error::BadToken)));
        let other = TokenSigner::new(
            b"another key, also thirty-two bytes",
            Duration::from_secs(60),
        )
        .unwrap();
        let (foreign, _) = other.issue(user, Role::Admin).unwrap();
        assert!(matches!(s.verify(&foreign), Err(Error::BadToken)));
        let (good, _) = s.issue(user, Role::User).unwrap();
        // Raise the role in the payload without re-signing.
        let mut parts: Vec<String> = good.split('.').map(String::from).collect();
        let mut claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&parts[1]).unwrap()).unwrap();
        claims["role"] = "admin".into();
        parts[1] = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap());
        assert!(matches!(s.verify(&parts.join(".")), Err(Error::BadToken)));
        // "none" algorithm.
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#),
            parts[1]
        );
        assert!(matches!(s.verify(&none), Err(Error::BadToken)));
        assert!(matches!(s.verify("garbage"), Err(Error::BadToken)));
    }

    #[test]
    fn short_keys_are_refused() {
        assert!(matches!(
            TokenSigner::new(b"short", Duration::from_secs(60)),
            Err(Error::Config(_))
        ));
    }

    #[test]
    fn refresh_tokens_are_random_and_stored_as_their_hash() {
        let (a, ha) = new_refresh_token();
        let (b, _) = new_refresh_token();
        assert_ne!(a, b);
        assert!(a.starts_with("cbr_") && a.len() == 4 + 43);
        assert_eq!(ha, hash_refresh_token(&a));
        assert_eq!(ha.len(), 32);
    }
}
