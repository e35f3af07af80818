use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use clawdbot_operator::config::{Cli, OperatorConfig};
use clawdbot_operator::metrics::{Metrics, counted_client};
use clawdbot_operator::run::{Settings, run_with_metrics};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,kube=warn".into()),
        )
        .json()
        .init();
    let cli = Cli::parse();
    match start(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, category = e.category(), "operator stopped");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn start(cli: Cli) -> clawdbot_operator::Result<()> {
    let config = OperatorConfig::from_cli(&cli)?;
    let metrics = Arc::new(Metrics::new());
    let kube_config = kube::Config::infer()
        .await
        .map_err(kube::Error::InferConfig)?;
    let client = counted_client(kube_config, &metrics)?;
    let listener = tokio::net::TcpListener::bind(&cli.metrics_addr).await?;
    let identity = cli
        .identity
        .clone()
        .unwrap_or_else(|| format!("{}-{:08x}", hostname_or_default(), rand::random::<u32>()));
    let settings = Settings {
        config,
        watch_namespace: cli.watch_namespace.clone(),
        lease_namespace: cli.lease_namespace.clone(),
        lease_name: cli.lease_name.clone(),
        identity,
        lease_duration: Duration::from_secs(cli.lease_duration_seconds),
        concurrency: cli.concurrency,
    };
    run_with_metrics(client, settings, metrics, listener, shutdown_signal()).await
}

fn hostname_or_default() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "operator".into())
}

/// SIGTERM (Kubernetes) or Ctrl-C.
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
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutdown signal received; finishing in-flight reconciles");
}
