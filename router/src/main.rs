//! `clawdbot-router`: see the library.

use clap::Parser;
use clawdbot_router::{Config, Router, launch};

// Many small short-lived allocations per message (HTTP, JSON): glibc's malloc took a quarter
// of the router's CPU under load; mimalloc is made for this pattern.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    // Sized by the configuration, not by the node's cores (tokio's default): at the rates one
    // replica sees, every worker beyond the first is mostly woken to find nothing to do. One
    // thread needs no work stealing at all (linkerd2-proxy makes the same choice).
    let mut runtime = match config.server.worker_threads {
        1 => tokio::runtime::Builder::new_current_thread(),
        n => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n.into());
            b
        }
    };
    runtime.enable_all().build()?.block_on(run(config))
}

async fn run(config: Config) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,sqlx=warn".into()),
        )
        .init();
    tracing::info!(?config, "starting");
    let listener = tokio::net::TcpListener::bind(config.server.listen).await?;
    let metrics = tokio::net::TcpListener::bind(config.server.metrics_listen).await?;
    let kube = kube::Client::try_default().await?;
    let router = Router::connect(config, kube).await?;
    launch(router, listener, Some(metrics), shutdown_signal()).await
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutdown signal: draining");
}
