//! The one error type of the crate. No variant carries a secret: not the client secret, not
//! the authorization code, not a token, not the PKCE verifier. Texts the provider sends back
//! (`error`, `error_description`) are kept, cut short, because they say what went wrong and
//! carry no credential.

/// Why a sign-in failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration cannot work (a URL that does not parse, a missing endpoint).
    #[error("OIDC configuration: {0}")]
    Config(String),
    /// The provider could not be reached, or answered something other than what the protocol
    /// says (the request's URL is left out: it may name the code in a query).
    #[error("OIDC provider: {what}: {detail}")]
    Provider { what: &'static str, detail: String },
    /// The discovery document does not describe the configured issuer.
    #[error("OIDC discovery: {0}")]
    Discovery(String),
    /// The token endpoint refused the code (expired, used twice, wrong PKCE verifier...).
    #[error("OIDC token endpoint refused the code: {error}{}", description.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    TokenRefused {
        error: String,
        description: Option<String>,
    },
    /// The `state` that came back is not the one sent: a forged or crossed callback.
    #[error("OIDC state does not match the sign-in that was started")]
    StateMismatch,
    /// The pending sign-in is older than it may be.
    #[error("OIDC sign-in expired; start again")]
    LoginExpired,
    /// The ID token failed a check (signature, issuer, audience, time, nonce).
    #[error("OIDC ID token rejected: {0}")]
    InvalidIdToken(String),
    /// The provider did not vouch for the user's email address.
    #[error("OIDC provider did not verify the user's email address")]
    EmailNotVerified,
}

impl Error {
    /// A short, bounded label for metrics and logs.
    pub fn category(&self) -> &'static str {
        match self {
            Error::Config(_) => "config",
            Error::Provider { .. } => "provider",
            Error::Discovery(_) => "discovery",
            Error::TokenRefused { .. } => "token_refused",
            Error::StateMismatch => "state_mismatch",
            Error::LoginExpired => "login_expired",
            Error::InvalidIdToken(_) => "invalid_id_token",
            Error::EmailNotVerified => "email_not_verified",
        }
    }

    /// Whether the user (or an attacker) caused it, as against the provider or our set-up:
    /// the former is a 400 at the edge, the latter a 502 or 500.
    pub fn is_client_error(&self) -> bool {
        matches!(
            self,
            Error::StateMismatch
                | Error::LoginExpired
                | Error::TokenRefused { .. }
                | Error::InvalidIdToken(_)
                | Error::EmailNotVerified
        )
    }

    pub(crate) fn provider(what: &'static str, e: reqwest::Error) -> Self {
        Error::Provider {
            what,
            detail: e.without_url().to_string(),
        }
    }

    pub(crate) fn id_token(reason: impl Into<String>) -> Self {
        Error::InvalidIdToken(reason.into())
    }
}

/// Cuts a provider-supplied text to a length fit for an error message.
pub(crate) fn clip(text: &str) -> String {
    const MAX: usize = 200;
    if text.len() <= MAX {
        return text.to_string();
    }
    let mut end = MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}
