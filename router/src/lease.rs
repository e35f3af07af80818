//! Work that exactly one replica may do at a time, decided by a `coordination.k8s.io` Lease
//! (kube-lease-manager): the Discord Gateway connection (Discord sends every DM to every
//! connection of the bot) and Telegram long polling (the Bot API refuses a second concurrent
//! `getUpdates` with 409). The other replicas wait; a holder that stops releases the Lease so
//! another takes over at once, one that dies is replaced when the Lease expires.

use std::future::Future;
use std::time::Duration;

use kube_lease_manager::{LeaseManagerBuilder, LeaseManagerError};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::Config;

/// Field manager of a replica's writes to a Lease, followed by the replica's identity:
/// kube-lease-manager relies on server-side apply conflicts between replicas to keep two from
/// taking a free Lease at once, which needs one manager per replica.
pub fn field_manager(identity: &str) -> String {
    clawdbot_api::names::lease_field_manager("clawdbot-router", identity)
}

/// This replica's identity in its Leases: the pod name, or the host name and a random suffix.
pub fn identity(config: &Config) -> String {
    config.kube.lease_identity.clone().unwrap_or_else(|| {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "clawdbot-router".into());
        format!("{host}-{:08x}", rand::random::<u32>())
    })
}

/// One Lease that this replica competes for.
#[derive(Clone)]
pub struct Leader {
    kube: kube::Client,
    pub name: String,
    pub namespace: String,
    pub identity: String,
    seconds: u64,
}

impl Leader {
    pub fn new(
        kube: kube::Client,
        name: impl Into<String>,
        namespace: impl Into<String>,
        identity: impl Into<String>,
        seconds: u64,
    ) -> Self {
        Leader {
            kube,
            name: name.into(),
            namespace: namespace.into(),
            identity: identity.into(),
            // kube-lease-manager renews `grace` seconds before expiry; both are whole seconds.
            seconds: seconds.max(2),
        }
    }

    /// Competes for the Lease until `stop`; each time this replica takes it, runs
    /// `hold(leading)`, which must return once `leading` turns false ([`lost`]) or on `stop`.
    /// The Lease is released when this returns.
    pub async fn run<F, Fut>(&self, stop: &CancellationToken, mut hold: F)
    where
        F: FnMut(watch::Receiver<bool>) -> Fut,
        Fut: Future<Output = ()>,
    {
        let mut backoff = Duration::from_secs(1);
        while !stop.is_cancelled() {
            match self.candidacy(stop, &mut hold).await {
                Ok(()) => backoff = Duration::from_secs(1),
                Err(e) => {
                    tracing::warn!(error = %e, lease = %self.name, "lease unavailable; retrying");
                }
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
    }

    /// One Lease manager's life: wait for the Lease, hold it while leading. Returns on `stop`
    /// (Ok) or when the Lease manager fails.
    async fn candidacy<F, Fut>(
        &self,
        stop: &CancellationToken,
        hold: &mut F,
    ) -> Result<(), LeaseManagerError>
    where
        F: FnMut(watch::Receiver<bool>) -> Fut,
        Fut: Future<Output = ()>,
    {
        let manager = LeaseManagerBuilder::new(self.kube.clone(), &self.name)
            .with_namespace(&self.namespace)
            .with_identity(&self.identity)
            .with_field_manager(field_manager(&self.identity))
            .with_duration(self.seconds)
            .with_grace((self.seconds / 3).max(1))
            .build()
            .await?;
        let (mut leading, task) = manager.watch().await;
        tracing::info!(identity = %self.identity, lease = %self.name, "waiting for the lease");
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                changed = leading.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    if *leading.borrow_and_update() {
                        tracing::info!(identity = %self.identity, lease = %self.name, "holding the lease");
                        hold(leading.clone()).await;
                    }
                }
            }
        }
        // Closing the channel makes the manager release the Lease and return.
        drop(leading);
        match task.await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e),
            Err(e) => {
                tracing::error!(error = %e, lease = %self.name, "lease task failed");
                Ok(())
            }
        }
    }
}

/// Completes when `leading` turns false (the Lease went to another replica) or its manager
/// is gone.
pub async fn lost(leading: &mut watch::Receiver<bool>) {
    while *leading.borrow_and_update() {
        if leading.changed().await.is_err() {
            return;
        }
    }
}
