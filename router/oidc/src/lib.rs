//! Sign-in with Google, or any OpenID Connect provider, by the authorization code flow with
//! PKCE (S256), `state` and `nonce` (OpenID Connect Core 3.1, RFC 7636).
//!
//! ```text
//! let client = OidcClient::discover(cfg).await?;          // once, at start-up
//! let (url, pending) = client.start()?;                   // GET .../start: store `pending`
//!                                                         //   under its state, redirect to url
//! let who = client.finish(pending, &code, &state).await?; // GET .../callback?code&state
//! ```
//!
//! `finish` exchanges the code at the token endpoint (client secret and PKCE verifier), checks
//! the ID token's RS256 signature against the provider's JWKS and its claims (issuer, audience,
//! expiry, issue time, nonce) and requires a verified email address. Nothing here knows HTTP
//! servers or storage: the caller keeps the [`PendingLogin`] (serializable, for Redis) between
//! the two requests. A hand-rolled client rather than the `openidconnect` crate: it is one
//! flow and one algorithm, a few hundred lines on the RSA crate the workspace already builds,
//! against some sixty crates for the general library.

pub mod config;
pub mod error;
mod id_token;
mod jwks;

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use url::Url;

pub use config::{EndpointOverrides, GOOGLE_ISSUER, OidcConfig, Secret};
pub use error::Error;

use crate::error::clip;
use crate::jwks::JwksCache;

/// Path of the discovery document below the issuer (OpenID Connect Discovery 4).
pub const DISCOVERY_PATH: &str = "/.well-known/openid-configuration";

/// The parts of the provider's discovery document we use.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderMetadata {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub jwks_uri: String,
    #[serde(default)]
    pub token_endpoint_auth_methods_supported: Option<Vec<String>>,
    #[serde(default)]
    pub code_challenge_methods_supported: Option<Vec<String>>,
}

/// A sign-in between `start` and `finish`. Kept server-side (never in the browser), under its
/// `state`, for at most [`OidcConfig::login_ttl`]; used once.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PendingLogin {
    /// Sent to the provider and returned on the callback; the lookup key of this record.
    pub state: String,
    pub nonce: Secret,
    pub pkce_verifier: Secret,
    /// Unix seconds when the sign-in started.
    pub started_at: u64,
}

/// Who signed in, as the provider vouched in a checked ID token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifiedIdentity {
    pub issuer: String,
    /// The provider's stable id for the user (`sub`): the key to link an account on, since an
    /// email address can change hands.
    pub subject: String,
    pub email: String,
    pub email_verified: bool,
    pub name: Option<String>,
}

/// Token endpoint response (RFC 6749 5.1 plus `id_token`). Tokens are read into [`Secret`].
#[derive(Deserialize)]
struct TokenResponse {
    #[serde(default)]
    id_token: Option<Secret>,
    #[serde(default)]
    token_type: Option<String>,
}

/// Token endpoint error (RFC 6749 5.2).
#[derive(Deserialize)]
struct TokenError {
    error: String,
    #[serde(default)]
    error_description: Option<String>,
}

/// How the client authenticates at the token endpoint (OpenID Connect Core 9).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ClientAuth {
    Basic,
    Post,
}

/// A client of one provider. Cheap to share (`Arc`); the JWKS cache is inside.
pub struct OidcClient {
    cfg: OidcConfig,
    metadata: ProviderMetadata,
    auth: ClientAuth,
    http: reqwest::Client,
    jwks: JwksCache,
}

impl std::fmt::Debug for OidcClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcClient")
            .field("issuer", &self.cfg.issuer)
            .field("client_id", &self.cfg.client_id)
            .field("metadata", &self.metadata)
            .finish_non_exhaustive()
    }
}

fn random_token() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The S256 code challenge of a PKCE verifier (RFC 7636 4.2).
pub fn pkce_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

impl OidcClient {
    /// Reads the provider's discovery document (unless configuration names every endpoint)
    /// and builds the client. Fails when the document describes another issuer.
    pub async fn discover(cfg: OidcConfig) -> Result<Self, Error> {
        let http = reqwest::Client::builder()
            .timeout(cfg.http_timeout)
            // The token endpoint answers directly; a redirect there is not followed with the
            // code and secret in tow.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| Error::Config(format!("HTTP client: {e}")))?;
        let o = &cfg.endpoints;
        let metadata = if let (Some(a), Some(t), Some(j)) =
            (&o.authorization_endpoint, &o.token_endpoint, &o.jwks_uri)
        {
            ProviderMetadata {
                issuer: cfg.issuer.clone(),
                authorization_endpoint: a.clone(),
                token_endpoint: t.clone(),
                jwks_uri: j.clone(),
                token_endpoint_auth_methods_supported: None,
                code_challenge_methods_supported: None,
            }
        } else {
            let mut m = fetch_metadata(&http, &cfg.issuer).await?;
            if let Some(a) = &o.authorization_endpoint {
                m.authorization_endpoint = a.clone();
            }
            if let Some(t) = &o.token_endpoint {
                m.token_endpoint = t.clone();
            }
            if let Some(j) = &o.jwks_uri {
                m.jwks_uri = j.clone();
            }
            m
        };
        Self::with_metadata(cfg, metadata, http)
    }

    fn with_metadata(
        cfg: OidcConfig,
        metadata: ProviderMetadata,
        http: reqwest::Client,
    ) -> Result<Self, Error> {
        for (what, url) in [
            ("authorization endpoint", &metadata.authorization_endpoint),
            ("token endpoint", &metadata.token_endpoint),
            ("JWKS URI", &metadata.jwks_uri),
            ("redirect URL", &cfg.redirect_url),
        ] {
            Url::parse(url).map_err(|e| Error::Config(format!("{what} {url:?}: {e}")))?;
        }
        if let Some(methods) = &metadata.code_challenge_methods_supported
            && !methods.iter().any(|m| m == "S256")
        {
            return Err(Error::Discovery(
                "the provider does not support PKCE with S256".into(),
            ));
        }
        // Basic is the default of the specs; a provider that lists only `client_secret_post`
        // gets the secret in the form instead.
        let auth = match &metadata.token_endpoint_auth_methods_supported {
            Some(m)
                if !m.iter().any(|x| x == "client_secret_basic")
                    && m.iter().any(|x| x == "client_secret_post") =>
            {
                ClientAuth::Post
            }
            _ => ClientAuth::Basic,
        };
        let jwks = JwksCache::new(metadata.jwks_uri.clone());
        Ok(OidcClient {
            cfg,
            metadata,
            auth,
            http,
            jwks,
        })
    }

    pub fn metadata(&self) -> &ProviderMetadata {
        &self.metadata
    }

    pub fn config(&self) -> &OidcConfig {
        &self.cfg
    }

    /// Starts a sign-in: the URL to send the browser to, and the record to keep until the
    /// callback (fresh random `state`, `nonce` and PKCE verifier, 256 bits each).
    pub fn start(&self) -> Result<(Url, PendingLogin), Error> {
        let pending = PendingLogin {
            state: random_token(),
            nonce: Secret::new(random_token()),
            pkce_verifier: Secret::new(random_token()),
            started_at: unix_now(),
        };
        let mut url = Url::parse(&self.metadata.authorization_endpoint)
            .map_err(|e| Error::Config(format!("authorization endpoint: {e}")))?;
        let mut scopes = vec!["openid"];
        scopes.extend(
            self.cfg
                .scopes
                .iter()
                .map(String::as_str)
                .filter(|s| *s != "openid"),
        );
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.cfg.client_id)
            .append_pair("redirect_uri", &self.cfg.redirect_url)
            .append_pair("scope", &scopes.join(" "))
            .append_pair("state", &pending.state)
            .append_pair("nonce", pending.nonce.expose())
            .append_pair(
                "code_challenge",
                &pkce_challenge(pending.pkce_verifier.expose()),
            )
            .append_pair("code_challenge_method", "S256");
        Ok((url, pending))
    }

    /// Finishes a sign-in on the callback: checks `returned_state` against the pending sign-in,
    /// exchanges `code`, checks the ID token, and returns who signed in.
    pub async fn finish(
        &self,
        pending: PendingLogin,
        code: &str,
        returned_state: &str,
    ) -> Result<VerifiedIdentity, Error> {
        if !bool::from(pending.state.as_bytes().ct_eq(returned_state.as_bytes())) {
            return Err(Error::StateMismatch);
        }
        if unix_now() > pending.started_at + self.cfg.login_ttl.as_secs() {
            return Err(Error::LoginExpired);
        }
        if code.is_empty() {
            return Err(Error::TokenRefused {
                error: "invalid_request".into(),
                description: Some("the callback carried no code".into()),
            });
        }
        let id_token = self.exchange(code, &pending.pkce_verifier).await?;
        self.verify_id_token(&id_token, pending.nonce.expose())
            .await
    }

    /// Checks an ID token (signature, then claims) for a sign-in that sent `nonce`, and
    /// requires a verified email address.
    pub async fn verify_id_token(
        &self,
        id_token: &Secret,
        nonce: &str,
    ) -> Result<VerifiedIdentity, Error> {
        let unverified = id_token::split(id_token.expose())?;
        let key = self
            .jwks
            .key(&self.http, &self.cfg, unverified.header.kid.as_deref())
            .await?;
        let claims = unverified.verify(&key)?;
        id_token::check_claims(&claims, &self.cfg, nonce)?;
        let email_verified = claims.email_verified();
        let email = match claims.email {
            Some(e) if !e.is_empty() => e,
            _ => {
                return Err(Error::id_token(
                    "no email claim (is the `email` scope asked for?)",
                ));
            }
        };
        if !email_verified {
            return Err(Error::EmailNotVerified);
        }
        Ok(VerifiedIdentity {
            issuer: self.cfg.issuer.clone(),
            subject: claims.sub,
            email,
            email_verified,
            name: claims.name.filter(|n| !n.is_empty()),
        })
    }

    /// The authorization code grant (RFC 6749 4.1.3 with RFC 7636 4.5): returns the ID token.
    async fn exchange(&self, code: &str, verifier: &Secret) -> Result<Secret, Error> {
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", self.cfg.redirect_url.as_str()),
            ("code_verifier", verifier.expose()),
        ];
        let mut req = self
            .http
            .post(&self.metadata.token_endpoint)
            .header(reqwest::header::ACCEPT, "application/json");
        match self.auth {
            // RFC 6749 2.3.1: id and secret are form-encoded before they are joined.
            ClientAuth::Basic => {
                let enc = |v: &str| {
                    url::form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>()
                };
                req = req.basic_auth(
                    enc(&self.cfg.client_id),
                    Some(enc(self.cfg.client_secret.expose())),
                );
            }
            ClientAuth::Post => {
                form.push(("client_id", self.cfg.client_id.as_str()));
                form.push(("client_secret", self.cfg.client_secret.expose()));
            }
        }
        let resp = req
            .form(&form)
            .send()
            .await
            .map_err(|e| Error::provider("token endpoint", e))?;
        let status = resp.status();
        let body = resp
            .bytes()
            .await
            .map_err(|e| Error::provider("token endpoint", e))?;
        if !status.is_success() {
            return Err(match serde_json::from_slice::<TokenError>(&body) {
                Ok(e) => Error::TokenRefused {
                    error: clip(&e.error),
                    description: e.error_description.as_deref().map(clip),
                },
                // The body of a failed answer is not echoed: it might repeat the request.
                Err(_) => Error::Provider {
                    what: "token endpoint",
                    detail: format!("HTTP {status} without an OAuth error body"),
                },
            });
        }
        let tokens: TokenResponse = serde_json::from_slice(&body).map_err(|_| Error::Provider {
            what: "token endpoint",
            detail: "answer is not a token response".into(),
        })?;
        if tokens
            .token_type
            .as_deref()
            .is_some_and(|t| !t.eq_ignore_ascii_case("bearer"))
        {
            return Err(Error::Provider {
                what: "token endpoint",
                detail: "token type is not Bearer".into(),
            });
        }
        tokens.id_token.ok_or_else(|| Error::Provider {
            what: "token endpoint",
            detail: "answer has no id_token (is the `openid` scope granted?)".into(),
        })
    }
}

async fn fetch_metadata(http: &reqwest::Client, issuer: &str) -> Result<ProviderMetadata, Error> {
    let url = format!("{}{DISCOVERY_PATH}", issuer.trim_end_matches('/'));
    let resp = http
        .get(&url)
        .send()
        .await
        .map_err(|e| Error::provider("discovery", e))?;
    let status = resp.status();
    if !status.is_success() {
        return Err(Error::Discovery(format!("{url} answered HTTP {status}")));
    }
    let m: ProviderMetadata = resp
        .json()
        .await
        .map_err(|e| Error::Discovery(format!("{url}: {}", e.without_url())))?;
    // Discovery 4.3: the document must name exactly the issuer it was fetched for.
    if m.issuer != issuer {
        return Err(Error::Discovery(format!(
            "document names issuer {:?}, configured {issuer:?}",
            m.issuer
        )));
    }
    Ok(m)
}
