use std::path::PathBuf;

use clap::Parser;
use clawdbot_api::lite::LiteAgentConfig;
use clawdbot_lite_agent::Error;

/// The lite Clawdbot agent.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The agent config (agent.json from the tenant ConfigMap).
    #[arg(
        long,
        env = "CLAWDBOT_AGENT_CONFIG",
        default_value = "/etc/clawdbot/agent.json"
    )]
    config: PathBuf,
    /// Log as JSON lines (for the cluster) rather than text.
    #[arg(long, env = "CLAWDBOT_LOG_JSON", default_value_t = false)]
    log_json: bool,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    if args.log_json {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
    // Two workers are plenty for one tenant and keep the idle footprint small.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build();
    let result = match runtime {
        Ok(rt) => rt.block_on(run(args)),
        Err(e) => Err(Error::Serve(e)),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "lite agent failed");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), Error> {
    let raw = std::fs::read_to_string(&args.config).map_err(|e| Error::io(&args.config, e))?;
    let config: LiteAgentConfig = serde_json::from_str(&raw)
        .map_err(|e| Error::Config(format!("{}: {e}", args.config.display())))?;
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .map_err(|e| Error::io(format!("listen address {}", config.listen), e))?;
    clawdbot_lite_agent::launch(config, listener, shutdown_signal()).await
}

/// SIGTERM (the kubelet) or Ctrl-C.
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
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown requested; finishing replies under way");
}
