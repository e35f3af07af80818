//! The one error type of billing.

/// Everything a billing operation can fail with. Messages never carry a key, a secret or a
/// signature.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The webhook's `Stripe-Signature` is missing, malformed, wrong or outside the tolerance.
    #[error("bad signature: {0}")]
    Signature(&'static str),
    /// Input that breaks a rule (a plan that does not exist or is not sold, the plan the user
    /// has already), naming the field.
    #[error("invalid {field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    /// The user has nothing to act on (no subscription, no Stripe customer).
    #[error("not found: {0}")]
    NotFound(String),
    /// Stripe refused the request (its status and message).
    #[error("stripe refused the request ({status}): {message}")]
    Stripe { status: u16, message: String },
    /// Stripe could not be reached or answered something unreadable.
    #[error("stripe unavailable: {0}")]
    Unavailable(String),
    /// A webhook whose body is not an event.
    #[error("malformed event: {0}")]
    Malformed(String),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// Applying the plan to the account and its workspace failed.
    #[error("accounts: {0}")]
    Accounts(#[from] clawdbot_accounts::Error),
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
            Error::Signature(_) => "signature",
            Error::Invalid { .. } => "invalid",
            Error::NotFound(_) => "not_found",
            Error::Stripe { .. } => "stripe_refused",
            Error::Unavailable(_) => "stripe_unavailable",
            Error::Malformed(_) => "malformed",
            Error::Database(_) => "database",
            Error::Accounts(_) => "accounts",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
