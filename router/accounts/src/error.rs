//! The one error type of the accounts domain. The router maps each variant to an HTTP status;
//! the admin CLI prints it. No variant carries a password, key or token.

/// Everything an accounts operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Input that breaks a rule; `field` names the field as the API spells it.
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    /// The thing exists already (an e-mail, a provider key).
    #[error("{0}")]
    Conflict(String),
    /// Unknown, or belonging to someone else: the two are never told apart.
    #[error("not found")]
    NotFound,
    /// Wrong e-mail or password (never which of the two).
    #[error("wrong e-mail or password")]
    BadCredentials,
    /// A missing, expired, forged, revoked or reused token.
    #[error("invalid or expired token")]
    BadToken,
    /// Too many failed logins for this account or from this address.
    #[error("too many failed attempts; try again in {retry_after_secs} seconds")]
    TooManyAttempts { retry_after_secs: u64 },
    /// Not allowed: the plan, the role or a suspension forbids it. The message says which.
    #[error("{0}")]
    Forbidden(String),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("kubernetes: {0}")]
    Kube(#[from] kube::Error),
    /// Encryption or decryption failed (a wrong master key, a tampered row). Never the data.
    #[error("crypto: {0}")]
    Crypto(&'static str),
    /// A configuration mistake found at start-up (a short signing key, a bad master key).
    #[error("configuration: {0}")]
    Config(String),
    #[error("internal: {0}")]
    Internal(String),
}

impl Error {
    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        Error::Invalid {
            field,
            message: message.into(),
        }
    }

    /// A bounded label for metrics and logs.
    pub fn category(&self) -> &'static str {
        match self {
            Error::Invalid { .. } => "invalid",
            Error::Conflict(_) => "conflict",
            Error::NotFound => "not_found",
            Error::BadCredentials => "bad_credentials",
            Error::BadToken => "bad_token",
            Error::TooManyAttempts { .. } => "too_many_attempts",
            Error::Forbidden(_) => "forbidden",
            Error::Database(_) => "database",
            Error::Redis(_) => "redis",
            Error::Kube(_) => "kubernetes",
            Error::Crypto(_) => "crypto",
            Error::Config(_) => "config",
            Error::Internal(_) => "internal",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
