//! The lite agent: a lean Rust tenant runtime that speaks OpenClaw's gateway protocol, keeps
//! the user's sessions, memory and skills on the tenant volume, calls the platform model or
//! the user's own OpenAI or Anthropic key, and uses tools (memory, web search).
//!
//! Layout of the volume (`dataDir`):
//! - `sessions/<hash>.sqlite`: one SQLite file per session (history, memory-flush mark);
//! - `MEMORY.md`, `memory/YYYY-MM-DD.md`: long-term memory and daily notes (the truth);
//! - `state.sqlite`: the FTS5 index of memory (rebuilt from the files at start) and counters;
//! - `skills/*.md`, `skills/<name>/SKILL.md`: skills loaded into the system prompt.

pub mod agent;
pub mod conversations;
pub mod error;
pub mod memory;
pub mod metrics;
pub mod provider;
pub mod secret;
pub mod server;
pub mod skills;
pub mod storage;
pub mod store;
pub mod tools;

use std::future::Future;
use std::sync::Arc;

use clawdbot_api::lite::LiteAgentConfig;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use error::Error;

/// How often the size of the state database's WAL is looked at (see
/// `Agent::checkpoint_state`).
const STATE_CHECKPOINT: std::time::Duration = std::time::Duration::from_secs(1);

/// Runs the agent on `listener` until `shutdown` completes, then stops accepting, finishes
/// every reply under way (and stores it), and closes the databases.
///
/// The bearer token is read from `config.token_file`; a missing or empty file is an error.
pub async fn launch(
    config: LiteAgentConfig,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let token = server::Token::load(&config.token_file)?;
    let agent = Arc::new(agent::Agent::open(config).await?);
    let tracker = TaskTracker::new();
    let stop = CancellationToken::new();

    let housekeeping = {
        let agent = agent.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(storage::RESCAN);
            tick.tick().await;
            let mut checkpoint = tokio::time::interval(STATE_CHECKPOINT);
            checkpoint.tick().await;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tick.tick() => agent.storage.rescan().await,
                    _ = checkpoint.tick() => agent.checkpoint_state().await,
                }
            }
        })
    };

    tracing::info!(
        addr = ?listener.local_addr().ok(),
        provider = agent.provider.name(),
        model = agent.provider.model(),
        "lite agent serving"
    );
    let state = server::AppState {
        agent: agent.clone(),
        token: Arc::new(token),
        tracker: tracker.clone(),
        metrics: Arc::new(metrics::Metrics::new()),
    };
    let served = axum::serve(listener, server::app(state))
        .with_graceful_shutdown(shutdown)
        .await;

    tracker.close();
    tracker.wait().await;
    stop.cancel();
    let _ = housekeeping.await;
    agent.close().await;
    tracing::info!("lite agent stopped");
    served.map_err(Error::Serve)
}
