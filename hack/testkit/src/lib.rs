//! Test support shared by every suite in the workspace.
//!
//! - [`env`]: the real Postgres, Redis and Kubernetes control plane (started by
//!   `hack/dev-env.sh`, shared by all test processes).
//! - [`kube`]: a client, fresh namespaces, the committed CRDs installed.
//! - [`fake_llm`]: local servers speaking the OpenAI, Anthropic and SearXNG wire formats.
//! - [`fake_chat`]: local servers speaking the Telegram Bot API, WhatsApp Cloud API and
//!   Discord wire formats.
//! - [`fake_discord_gateway`]: a local Discord Gateway websocket (HELLO, IDENTIFY, heartbeats,
//!   READY, RESUME, dispatches).
//! - [`fake_oidc`]: a local OpenID provider (discovery, JWKS, authorize, token with PKCE,
//!   RS256 ID tokens), standing in for Google sign-in.
//! - [`fake_stripe`]: a local Stripe (Checkout Sessions, subscriptions, the Billing Portal,
//!   form-encoded requests, Stripe's error shape) that sends webhooks signed with Stripe's
//!   scheme.
//! - [`helm`]: `hack/helm.py` (Helm's Go library, no helm binary) for the chart's tests.
//! - [`model_server`]: the real SmolLM2 model behind llama-cpp-python's OpenAI server.
//! - [`node`]: the real single-node Kubernetes: its bridge address, its images, namespaces
//!   whose pods really run, what the kubelet says about them, and forwarders that let pods
//!   reach the loopback-only Postgres and Redis.
//!
//! Tests wait on conditions ([`wait_for`]), never on fixed sleeps.

pub mod env;
pub mod fake_chat;
pub mod fake_discord_gateway;
pub mod fake_llm;
pub mod fake_oidc;
pub mod fake_stripe;
pub mod helm;
pub mod kube;
pub mod model_server;
pub mod node;

use std::future::Future;
use std::time::Duration;

/// Polls `check` until it returns `Some`, or fails after `timeout` with `what` in the message.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut delay = Duration::from_millis(20);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(250));
    }
}

/// Installs a test log subscriber once (RUST_LOG decides the level).
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

/// Path of the repository root (for `crds/`, `migrations/`, `hack/`).
///
/// Found from the package cargo runs (its `CARGO_MANIFEST_DIR` at run time) rather than from
/// the path compiled in: a target directory shared by two checkouts can hand this crate, built
/// in the other one, to tests of this one, and the other may be gone.
pub fn repo_root() -> std::path::PathBuf {
    let compiled = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let running = std::env::var_os("CARGO_MANIFEST_DIR").map(std::path::PathBuf::from);
    running
        .iter()
        .flat_map(|dir| dir.ancestors())
        .find(|dir| dir.join("Cargo.lock").is_file() && dir.join("crds").is_dir())
        .map(std::path::Path::to_path_buf)
        .unwrap_or(compiled)
        .canonicalize()
        .expect("repo root")
}
