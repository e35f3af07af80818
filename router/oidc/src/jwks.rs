//! The provider's signing keys (JWKS): fetched once, kept for [`OidcConfig::jwks_max_age`],
//! fetched again when a token names a key we do not have (key rotation), but not more often
//! than [`OidcConfig::jwks_refetch_interval`].

use std::collections::HashMap;
use std::time::Instant;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rsa::{BigUint, RsaPublicKey};
use serde::Deserialize;
use tokio::sync::Mutex;

use crate::config::OidcConfig;
use crate::error::{Error, clip};

/// RFC 7518 3.3: RS256 keys must have at least 2048 bits.
const MIN_RSA_BITS: usize = 2048;

#[derive(Deserialize)]
struct JwkSet {
    keys: Vec<Jwk>,
}

#[derive(Deserialize)]
struct Jwk {
    kty: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default, rename = "use")]
    use_: Option<String>,
    #[serde(default)]
    alg: Option<String>,
    #[serde(default)]
    n: Option<String>,
    #[serde(default)]
    e: Option<String>,
}

/// The RSA signing keys of a JWKS, by `kid` (a key without one is kept under "").
#[derive(Clone, Debug, Default)]
pub(crate) struct Keys(HashMap<String, RsaPublicKey>);

impl Keys {
    /// Keeps the RSA keys meant for signatures with RS256 (or no stated algorithm); other keys
    /// (EC, encryption keys) are skipped, a malformed RSA key is an error.
    pub(crate) fn parse(body: &[u8]) -> Result<Self, Error> {
        let set: JwkSet = serde_json::from_slice(body).map_err(|e| Error::Provider {
            what: "JWKS",
            detail: format!("not a JWK set: {e}"),
        })?;
        let mut keys = HashMap::new();
        for jwk in set.keys {
            if jwk.kty != "RSA"
                || jwk.use_.as_deref().is_some_and(|u| u != "sig")
                || jwk.alg.as_deref().is_some_and(|a| a != "RS256")
            {
                continue;
            }
            let kid = jwk.kid.unwrap_or_default();
            let (Some(n), Some(e)) = (jwk.n, jwk.e) else {
                return Err(Error::Provider {
                    what: "JWKS",
                    detail: format!("RSA key {kid:?} lacks n or e"),
                });
            };
            let decode = |v: &str| {
                URL_SAFE_NO_PAD.decode(v).map_err(|_| Error::Provider {
                    what: "JWKS",
                    detail: format!("RSA key {kid:?} is not base64url"),
                })
            };
            let key = RsaPublicKey::new(
                BigUint::from_bytes_be(&decode(&n)?),
                BigUint::from_bytes_be(&decode(&e)?),
            )
            .map_err(|err| Error::Provider {
                what: "JWKS",
                detail: format!("RSA key {kid:?} is unusable: {err}"),
            })?;
            if rsa::traits::PublicKeyParts::n(&key).bits() < MIN_RSA_BITS {
                return Err(Error::Provider {
                    what: "JWKS",
                    detail: format!("RSA key {kid:?} is shorter than {MIN_RSA_BITS} bits"),
                });
            }
            keys.insert(kid, key);
        }
        Ok(Keys(keys))
    }

    /// The key a token's header names; a token without `kid` is accepted only when the set has
    /// exactly one key, so there is no guessing between keys.
    pub(crate) fn find(&self, kid: Option<&str>) -> Option<&RsaPublicKey> {
        match kid {
            Some(kid) => self.0.get(kid),
            None if self.0.len() == 1 => self.0.values().next(),
            None => None,
        }
    }
}

struct Cached {
    keys: Keys,
    fetched: Instant,
}

/// The cache of one provider's keys.
pub(crate) struct JwksCache {
    uri: String,
    cached: Mutex<Option<Cached>>,
}

impl JwksCache {
    pub(crate) fn new(uri: String) -> Self {
        JwksCache {
            uri,
            cached: Mutex::new(None),
        }
    }

    /// The key for `kid`: from the cache, or from a fresh fetch when the cache is old or does
    /// not know the key. The lock is held across the fetch so that concurrent sign-ins after
    /// a rotation cause one fetch, not one each.
    pub(crate) async fn key(
        &self,
        http: &reqwest::Client,
        cfg: &OidcConfig,
        kid: Option<&str>,
    ) -> Result<RsaPublicKey, Error> {
        let mut cached = self.cached.lock().await;
        if let Some(c) = cached.as_ref() {
            let age = c.fetched.elapsed();
            if age < cfg.jwks_max_age {
                if let Some(k) = c.keys.find(kid) {
                    return Ok(k.clone());
                }
                if age < cfg.jwks_refetch_interval {
                    return Err(Error::id_token(format!(
                        "signed with unknown key {kid:?} (keys fetched {}s ago)",
                        age.as_secs()
                    )));
                }
                tracing::info!(kid = ?kid, "ID token names an unknown key; fetching the JWKS again");
            }
        }
        let keys = self.fetch(http).await?;
        let found = keys.find(kid).cloned();
        *cached = Some(Cached {
            keys,
            fetched: Instant::now(),
        });
        found.ok_or_else(|| Error::id_token(format!("signed with unknown key {kid:?}")))
    }

    async fn fetch(&self, http: &reqwest::Client) -> Result<Keys, Error> {
        let resp = http
            .get(&self.uri)
            .send()
            .await
            .map_err(|e| Error::provider("JWKS", e))?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| Error::provider("JWKS", e))?;
        if !status.is_success() {
            return Err(Error::Provider {
                what: "JWKS",
                detail: format!("HTTP {status}: {}", clip(&String::from_utf8_lossy(&body))),
            });
        }
        Keys::parse(&body)
    }
}
