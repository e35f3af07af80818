//! The one error type of the lite agent.

use std::path::PathBuf;

/// What a model provider answered when it did not answer with a completion. Each kind maps to
/// a readable reply for the user (see [`Error::user_message`]); the provider's own text goes to
/// the log only, with the key redacted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProviderFailure {
    /// 401/403: the key is wrong, revoked or missing.
    InvalidKey,
    /// The account has no credit or quota left (OpenAI `insufficient_quota`, Anthropic billing).
    QuotaExhausted,
    /// 429 after the bounded retries.
    RateLimited,
    /// 404 or `model_not_found`: the model is not served.
    ModelNotFound,
    /// 5xx, 529 or a connection failure after the bounded retries.
    Unavailable,
    /// No answer within the configured timeout.
    Timeout,
    /// The provider refused the request (400) or answered something we cannot parse.
    BadRequest,
}

impl ProviderFailure {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderFailure::InvalidKey => "invalid_api_key",
            ProviderFailure::QuotaExhausted => "insufficient_quota",
            ProviderFailure::RateLimited => "rate_limited",
            ProviderFailure::ModelNotFound => "model_not_found",
            ProviderFailure::Unavailable => "provider_unavailable",
            ProviderFailure::Timeout => "provider_timeout",
            ProviderFailure::BadRequest => "provider_bad_request",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config: {0}")]
    Config(String),
    #[error("database {what}: {source}")]
    Database {
        what: String,
        #[source]
        source: sqlx::Error,
    },
    /// A session file exists but SQLite cannot read it; it has been moved aside.
    #[error("session file {path} is corrupt ({detail}); moved aside to {moved_to}")]
    CorruptSession {
        path: PathBuf,
        moved_to: PathBuf,
        detail: String,
    },
    /// The provider did not answer with a completion. `detail` never holds a key.
    #[error("model provider {provider}: {kind:?}: {detail}")]
    Provider {
        provider: &'static str,
        kind: ProviderFailure,
        detail: String,
    },
    /// No API key file, or an empty one, for a provider that needs one.
    #[error("no API key for {provider}: {detail}")]
    MissingKey {
        provider: &'static str,
        detail: String,
    },
    #[error("storage limit reached: {used} of {limit} bytes used")]
    StorageFull { used: u64, limit: u64 },
    #[error("serving: {0}")]
    Serve(#[source] std::io::Error),
    /// A read of the conversations named something that is not there.
    #[error("not found: {0}")]
    NotFound(String),
    /// A read of the conversations with a parameter that cannot be used.
    #[error("bad request: {0}")]
    BadRequest(String),
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub fn db(what: impl Into<String>, source: sqlx::Error) -> Self {
        Error::Database {
            what: what.into(),
            source,
        }
    }

    /// A bounded label for metrics and the `x-clawdbot-agent-error` header.
    pub fn category(&self) -> &'static str {
        match self {
            Error::Io { .. } => "io",
            Error::Config(_) => "config",
            Error::Database { .. } => "database",
            Error::CorruptSession { .. } => "corrupt_session",
            Error::Provider { kind, .. } => kind.as_str(),
            Error::MissingKey { .. } => "missing_api_key",
            Error::StorageFull { .. } => "storage_quota_exceeded",
            Error::Serve(_) => "serve",
            Error::NotFound(_) => "not_found",
            Error::BadRequest(_) => "bad_request",
        }
    }

    /// The reply the user reads instead of an answer. Never holds a key, a path or a
    /// provider's raw text.
    pub fn user_message(&self) -> String {
        match self {
            Error::Provider { provider, kind, .. } => {
                let p = provider_name(provider);
                match kind {
                    ProviderFailure::InvalidKey => format!(
                        "{p} refused the API key (it is wrong, revoked or lacks access). \
                         Update your key in the settings and try again."
                    ),
                    ProviderFailure::QuotaExhausted => format!(
                        "{p} says your account has no quota or credit left. \
                         Check your plan and billing with {p}, then try again."
                    ),
                    ProviderFailure::RateLimited => format!(
                        "{p} is rate-limiting requests right now. Please try again in a minute."
                    ),
                    ProviderFailure::ModelNotFound => format!(
                        "{p} does not serve the configured model. Choose another model in the settings."
                    ),
                    ProviderFailure::Unavailable => {
                        format!("{p} is unavailable right now. Please try again in a few minutes.")
                    }
                    ProviderFailure::Timeout => {
                        format!("{p} took too long to answer. Please try again.")
                    }
                    ProviderFailure::BadRequest => format!(
                        "{p} could not handle this request. Try rephrasing or starting a new conversation."
                    ),
                }
            }
            Error::MissingKey { provider, .. } => format!(
                "No API key is configured for {}. Add your key in the settings.",
                provider_name(provider)
            ),
            Error::StorageFull { used, limit } => format!(
                "Your assistant's storage is full ({} of {} used), so I cannot save this \
                 conversation. Delete old data or upgrade your plan to continue.",
                human_bytes(*used),
                human_bytes(*limit)
            ),
            Error::CorruptSession { .. } => "The history of this conversation could not be read \
                 (its file was damaged). I set it aside and started a fresh conversation; \
                 please send your message again."
                .to_string(),
            _ => "Something went wrong on my side while answering. Please try again.".to_string(),
        }
    }
}

fn provider_name(p: &str) -> &'static str {
    match p {
        "openai" => "OpenAI",
        "anthropic" => "Anthropic",
        _ => "The model server",
    }
}

/// `1.5 MB`, `2.0 GB`: for messages people read.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1000.0 && unit + 1 < UNITS.len() {
        v /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_messages_are_readable_and_categories_bounded() {
        let e = Error::Provider {
            provider: "openai",
            kind: ProviderFailure::QuotaExhausted,
            detail: "x".into(),
        };
        assert!(e.user_message().contains("OpenAI"));
        assert_eq!(e.category(), "insufficient_quota");
        let full = Error::StorageFull {
            used: 1_500_000,
            limit: 1_000_000,
        };
        assert!(full.user_message().contains("1.5 MB of 1.0 MB"));
        assert_eq!(human_bytes(999), "999 B");
    }
}
