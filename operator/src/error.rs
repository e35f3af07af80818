use std::time::Duration;

/// Everything a reconcile can fail with. `category()` is the bounded label used in metrics and
/// event reasons.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes API error: {0}")]
    Kube(#[from] kube::Error),
    #[error("object has no {0}")]
    MissingField(&'static str),
    #[error("invalid spec: {}", .0.join("; "))]
    InvalidSpec(Vec<String>),
    #[error("{0}")]
    MissingReference(String),
    #[error("finalizer: {0}")]
    Finalizer(String),
    #[error("the {0} cache has no complete list (its watch has not listed yet)")]
    CacheStopped(&'static str),
    #[error("serializing {what}: {source}")]
    Serialize {
        what: &'static str,
        source: serde_json::Error,
    },
    #[error("configuration: {0}")]
    Config(String),
    #[error("leader election: {0}")]
    Lease(#[from] kube_lease_manager::LeaseManagerError),
    #[error("lost the leader lease; stopping so that a new leader takes over")]
    LostLeadership,
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

impl Error {
    /// A bounded label for metrics.
    pub fn category(&self) -> &'static str {
        match self {
            Error::Kube(kube::Error::Api(e)) if e.code == 409 => "conflict",
            Error::Kube(kube::Error::Api(e)) if e.code == 422 => "rejected",
            Error::Kube(_) => "kube",
            Error::MissingField(_) => "malformed",
            Error::InvalidSpec(_) => "invalid_spec",
            Error::MissingReference(_) => "missing_reference",
            Error::Finalizer(_) => "finalizer",
            Error::CacheStopped(_) => "cache",
            Error::Serialize { .. } => "serialize",
            Error::Config(_) => "config",
            Error::Lease(_) | Error::LostLeadership => "leader_election",
            Error::Io(_) => "io",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Per-object retry delay: 2 s doubling to 5 minutes, so a broken object is neither retried in a
/// hot loop nor left for a flat 5 minutes after a passing error.
pub fn backoff(failures: u32) -> Duration {
    let secs = 2u64.saturating_pow(failures.clamp(1, 10)).min(300);
    Duration::from_secs(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        assert_eq!(backoff(0), Duration::from_secs(2));
        assert_eq!(backoff(1), Duration::from_secs(2));
        assert_eq!(backoff(3), Duration::from_secs(8));
        assert_eq!(backoff(8), Duration::from_secs(256));
        assert_eq!(backoff(9), Duration::from_secs(300));
        assert_eq!(backoff(u32::MAX), Duration::from_secs(300));
    }
}
