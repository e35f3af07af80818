//! What a deployment configures: the issuer, the client registered with it, where the provider
//! sends the user back, and (for providers without discovery) the endpoints themselves.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Google's issuer. Its ID tokens carry either this or the same name without the scheme
/// (Google's OpenID Connect documentation says so); both are accepted for it.
pub const GOOGLE_ISSUER: &str = "https://accounts.google.com";

/// A value that must never reach a log line or an error: `Debug` prints `[redacted]`.
/// Serializable because a pending sign-in (which holds the PKCE verifier) is stored
/// server-side between start and callback.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The value itself: only where it goes to the provider, never to a log line.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret(s.to_string()))
    }
}

/// Endpoints given by configuration instead of (or on top of) discovery.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointOverrides {
    pub authorization_endpoint: Option<String>,
    pub token_endpoint: Option<String>,
    pub jwks_uri: Option<String>,
}

impl EndpointOverrides {
    pub fn is_complete(&self) -> bool {
        self.authorization_endpoint.is_some()
            && self.token_endpoint.is_some()
            && self.jwks_uri.is_some()
    }
}

/// One OIDC client registration.
#[derive(Clone, Debug)]
pub struct OidcConfig {
    /// The issuer identifier, for example `https://accounts.google.com`; discovery is read from
    /// `<issuer>/.well-known/openid-configuration` and every ID token's `iss` must equal it.
    pub issuer: String,
    pub client_id: String,
    pub client_secret: Secret,
    /// Where the provider sends the browser back (the router's `/callback`), registered with
    /// the provider exactly as written here.
    pub redirect_url: String,
    /// Scopes asked for; `openid` is always sent.
    pub scopes: Vec<String>,
    /// Endpoints that replace the discovered ones; with all three set, discovery is skipped.
    pub endpoints: EndpointOverrides,
    /// Clock difference tolerated on `exp` and `iat`.
    pub leeway: Duration,
    /// How long a started sign-in may wait for its callback.
    pub login_ttl: Duration,
    /// Shortest time between two JWKS fetches caused by an unknown `kid`, so that tokens naming
    /// made-up keys cannot make us hammer the provider.
    pub jwks_refetch_interval: Duration,
    /// Longest time a fetched JWKS is used before it is fetched again (providers rotate keys
    /// every few days; Google announces new keys well before signing with them).
    pub jwks_max_age: Duration,
    /// Time limit of every call to the provider.
    pub http_timeout: Duration,
}

impl OidcConfig {
    /// A configuration with the usual defaults: scopes `openid email profile`, one minute of
    /// leeway, ten minutes to finish a sign-in.
    pub fn new(
        issuer: impl Into<String>,
        client_id: impl Into<String>,
        client_secret: Secret,
        redirect_url: impl Into<String>,
    ) -> Self {
        OidcConfig {
            issuer: issuer.into(),
            client_id: client_id.into(),
            client_secret,
            redirect_url: redirect_url.into(),
            scopes: vec!["openid".into(), "email".into(), "profile".into()],
            endpoints: EndpointOverrides::default(),
            leeway: Duration::from_secs(60),
            login_ttl: Duration::from_secs(600),
            jwks_refetch_interval: Duration::from_secs(10),
            jwks_max_age: Duration::from_secs(3600),
            http_timeout: Duration::from_secs(10),
        }
    }

    /// Issuer values an ID token may carry.
    pub(crate) fn accepted_issuers(&self) -> Vec<&str> {
        let mut v = vec![self.issuer.as_str()];
        if self.issuer == GOOGLE_ISSUER {
            v.push("accounts.google.com");
        }
        v
    }
}
