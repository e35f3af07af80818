//! The router: the shared bots' webhooks in, the right tenant's agent, the reply back out.
//!
//! - [`channels`]: Telegram, WhatsApp, Discord (interactions, and DMs over the Gateway held
//!   by one replica under a Lease) and web chat, one module each; their sending half is
//!   [`outbound::Channel`], all the pipeline sees of them.
//! - [`pipeline`]: record, resolve, onboard, limit, wake, forward, reply, account.
//! - [`directory`]: tenants from UserWorkspace and gateway-Secret watches.
//! - [`store`] (Postgres) and [`limits`] (Redis).
//!
//! - [`api`]: the accounts API under `/api/v1` (on `clawdbot-accounts`), and the admin-token
//!   endpoints.
//! - [`dashboard`]: the web dashboard under `/dashboard`, on the same accounts service.
//!
//! [`app`] builds the HTTP surface; [`launch`] serves it until a shutdown signal.

pub mod admin;
pub mod agent;
pub mod api;
pub mod batch;
pub mod browser;
pub mod channels;
pub mod config;
pub mod dashboard;
pub mod directory;
pub mod error;
pub mod inbound;
pub mod lease;
pub mod limits;
pub mod metrics;
pub mod outbound;
pub mod pipeline;
pub mod store;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::limit::RequestBodyLimitLayer;

pub use config::{AccountsConfig, Config, GoogleConfig, Secret};
pub use pipeline::Core;

use crate::channels::Routes;
use crate::channels::discord::gateway::Gateway;
use crate::channels::telegram_updates::Updates;
use crate::directory::Directory;
use crate::metrics::Metrics;

/// The running parts, built from a config.
pub struct Router {
    pub core: Arc<Core>,
    pub channels: Vec<Arc<dyn Routes>>,
    /// The Discord Gateway connection (DMs), when a bot token is configured.
    pub discord_gateway: Option<Gateway>,
    /// The accounts API, when its keys are configured.
    pub api: Option<Arc<api::ApiState>>,
    /// Telegram's updates: the webhook to register, or long polling.
    pub telegram_updates: Option<Updates>,
}

/// The accounts domain from its configuration; `None` when the API is not configured.
pub async fn connect_accounts(
    config: &AccountsConfig,
    redis_url: &str,
    redis_prefix: &str,
    db: sqlx::PgPool,
    kube: kube::Client,
) -> anyhow::Result<Option<clawdbot_accounts::Accounts>> {
    use clawdbot_accounts::{attempts, password, provision, service};
    let (secret, master) = match (&config.jwt_secret, &config.master_keys) {
        (Some(s), Some(m)) => (s, m),
        (None, None) => return Ok(None),
        _ => anyhow::bail!(
            "the accounts API needs both ROUTER_JWT_SECRET and ROUTER_MASTER_KEYS (or neither)"
        ),
    };
    let keyring =
        clawdbot_accounts::Keyring::parse(master.expose(), config.master_key_id.as_deref())?;
    let conn = redis::aio::ConnectionManager::new(redis::Client::open(redis_url)?).await?;
    let attempts = attempts::LoginAttempts::new(
        conn,
        redis_prefix,
        attempts::AttemptLimits {
            per_account: config.login_attempts_per_account,
            per_address: config.login_attempts_per_address,
            window: Duration::from_secs(15 * 60),
            registrations_per_address: config.registrations_per_address,
            registrations_per_email: config.registrations_per_email,
            registration_window: Duration::from_secs(3600),
        },
    );
    let settings = service::Settings {
        token_secret: secret.expose().as_bytes().to_vec(),
        access_ttl: config.access_token_ttl,
        refresh_ttl: config.refresh_token_ttl,
        keyring,
        workspace: provision::WorkspaceDefaults {
            namespace: config.workspace_namespace.clone(),
            endpoint: config.workspace_model_endpoint.clone(),
            model: config.workspace_model.clone(),
            idle_timeout: config.workspace_idle_timeout.clone(),
        },
        plans: config.plans.clone(),
    };
    Ok(Some(clawdbot_accounts::Accounts::new(
        settings,
        db,
        kube,
        attempts,
        password::Hasher::production(),
    )?))
}

/// Billing from its configuration; `None` when Stripe is not configured (or there are no
/// accounts to bill).
pub fn connect_billing(
    config: &Config,
    db: sqlx::PgPool,
    accounts: Option<&clawdbot_accounts::Accounts>,
) -> anyhow::Result<Option<clawdbot_billing::Billing>> {
    let b = &config.billing;
    let (key, webhook) = match (&b.stripe_secret_key, &b.stripe_webhook_secret) {
        (Some(k), Some(w)) => (k, w),
        (None, None) => return Ok(None),
        _ => anyhow::bail!(
            "billing needs both STRIPE_SECRET_KEY and STRIPE_WEBHOOK_SECRET (or neither)"
        ),
    };
    let Some(accounts) = accounts else {
        anyhow::bail!("billing needs the accounts API (ROUTER_JWT_SECRET and ROUTER_MASTER_KEYS)");
    };
    let return_url = match (&b.billing_return_url, &config.accounts.dashboard_origin) {
        (Some(u), _) => u.clone(),
        (None, Some(origin)) => format!("{}/dashboard/billing", origin.trim_end_matches('/')),
        (None, None) => anyhow::bail!(
            "billing needs BILLING_RETURN_URL (or ROUTER_DASHBOARD_ORIGIN): where Stripe sends users back"
        ),
    };
    let settings = clawdbot_billing::Settings {
        secret_key: key.expose().to_string(),
        webhook_secret: webhook.expose().to_string(),
        api_base: b.stripe_api_base.clone(),
        grace: b.billing_grace_period,
        return_url,
    };
    Ok(Some(clawdbot_billing::Billing::new(
        settings,
        db,
        accounts.clone(),
        config.accounts.plans.clone(),
    )?))
}

/// Ends grace periods that are over (and forgets old webhook event ids), on every replica:
/// each drop to free is idempotent. Checks four times per grace period, at most once a minute.
async fn billing_sweep(
    billing: clawdbot_billing::Billing,
    grace: Duration,
    stop: CancellationToken,
) {
    let every = (grace / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        if let Err(e) = billing.sweep(chrono::Utc::now()).await {
            tracing::warn!(error = %e, category = e.category(), "billing sweep failed");
        }
    }
}

impl Router {
    /// Connects to Postgres (migrating it), Redis and the API server; starts nothing yet.
    pub async fn connect(config: Config, kube: kube::Client) -> anyhow::Result<Self> {
        let db = store::connect(
            config.database.url.expose(),
            config.database.max_connections,
        )
        .await?;
        let limits =
            limits::Limits::connect(config.redis.url.expose(), &config.redis.prefix).await?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .build()?;
        let channels = channels::build(&config, &http);
        let discord_gateway = Gateway::from_config(&config, kube.clone());
        let telegram_updates = Updates::from_config(&config, &http, kube.clone())?;
        let accounts = connect_accounts(
            &config.accounts,
            config.redis.url.expose(),
            &config.redis.prefix,
            db.clone(),
            kube.clone(),
        )
        .await?;
        let links = api::ChannelLinks {
            telegram_bot: config.telegram.bot_username.clone(),
            whatsapp_number: config.whatsapp.phone_number.clone(),
            discord_application_id: config.discord.application_id.clone(),
        };
        let trust_forwarded_for = config.accounts.trust_forwarded_for;
        let billing = connect_billing(&config, db.clone(), accounts.as_ref())?;
        let google = match &accounts {
            Some(_) => api::google::GoogleSignIn::from_config(
                &config.accounts.google,
                config.redis.url.expose(),
                &config.redis.prefix,
            )
            .await?
            .map(Arc::new),
            None if config.accounts.google.client_id.is_some() => {
                anyhow::bail!(
                    "Google sign-in needs the accounts API (ROUTER_JWT_SECRET and ROUTER_MASTER_KEYS)"
                )
            }
            None => None,
        };
        let metrics = Arc::new(Metrics::new());
        let directory = Directory::new(kube, metrics.activity_notes.clone());
        let outbound: Vec<Arc<dyn outbound::Channel>> = channels
            .iter()
            .map(|c| Arc::clone(c) as Arc<dyn outbound::Channel>)
            .collect();
        let core = Core::new(config, db, limits, directory, metrics, &outbound);
        let api = accounts.map(|accounts| {
            Arc::new(api::ApiState {
                core: core.clone(),
                accounts,
                links,
                trust_forwarded_for,
                billing,
                google,
            })
        });
        Ok(Router {
            core,
            channels,
            discord_gateway,
            api,
            telegram_updates,
        })
    }
}

/// The whole HTTP surface (without `/metrics`, which has its own port).
pub fn app(router: &Router) -> axum::Router {
    let core = router.core.clone();
    let mut app = axum::Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(core.clone())
        .merge(api::routes(
            core.clone(),
            router.api.clone(),
            core.config.accounts.dashboard_origin.as_deref(),
        ));
    if let Some(api) = router.api.clone() {
        app = app.merge(dashboard::routes(api));
    }
    for channel in &router.channels {
        app = app.merge(channel.clone().routes(core.clone()));
    }
    app.layer(RequestBodyLimitLayer::new(
        core.config.limits.max_body_bytes,
    ))
    .layer(axum::middleware::from_fn_with_state(
        core.metrics.clone(),
        metrics::track,
    ))
}

/// `/metrics` alone.
pub fn metrics_app(metrics: Arc<Metrics>) -> axum::Router {
    axum::Router::new()
        .route(
            "/metrics",
            get(|State(m): State<Arc<Metrics>>| async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    m.encode(),
                )
            }),
        )
        .with_state(metrics)
}

/// Ready when the tenant view is complete and both stores answer.
async fn readyz(State(core): State<Arc<Core>>) -> (StatusCode, &'static str) {
    if !core.directory.synced() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "tenant directory not synced",
        );
    }
    let db = tokio::time::timeout(
        Duration::from_secs(2),
        sqlx::query("SELECT 1").execute(&core.db),
    )
    .await;
    if !matches!(db, Ok(Ok(_))) {
        return (StatusCode::SERVICE_UNAVAILABLE, "postgres unavailable");
    }
    let redis = tokio::time::timeout(Duration::from_secs(2), core.limits.ping()).await;
    if !matches!(redis, Ok(Ok(()))) {
        return (StatusCode::SERVICE_UNAVAILABLE, "redis unavailable");
    }
    (StatusCode::OK, "ready")
}

/// Serves the router on `listener` (and metrics on `metrics_listener`, if given) until
/// `shutdown` completes; then stops taking requests, hands the Discord Gateway to another
/// replica, finishes the in-flight messages, and leaves unfinished ones to the other replicas.
pub async fn launch(
    mut router: Router,
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let core = router.core.clone();
    let stop = CancellationToken::new();
    let watch_ns = core.config.kube.watch_namespace.clone();
    let directory = tokio::spawn(core.directory.clone().run(watch_ns));
    let sweeper = tokio::spawn(core.clone().sweep_loop(stop.clone()));
    let listen = tokio::spawn(core.clone().listen_connection_changes(stop.clone()));
    let billing = router
        .api
        .as_ref()
        .and_then(|a| a.billing.clone())
        .map(|b| {
            tokio::spawn(billing_sweep(
                b,
                core.config.billing.billing_grace_period,
                stop.clone(),
            ))
        });
    let discord_gateway = router
        .discord_gateway
        .take()
        .map(|g| tokio::spawn(g.run(core.clone(), stop.clone())));
    let telegram_updates = router
        .telegram_updates
        .take()
        .map(|u| tokio::spawn(u.run(core.clone(), stop.clone())));
    let metrics_server = metrics_listener.map(|l| {
        let app = metrics_app(core.metrics.clone());
        let stop = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(l, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await;
        })
    });
    let app = app(&router);
    let stopping = stop.clone();
    tokio::spawn(async move {
        shutdown.await;
        stopping.cancel();
    });
    tracing::info!(addr = ?listener.local_addr().ok(), "router listening");
    // The peer address reaches the handlers (login attempts are limited per address).
    let served = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(stop.clone().cancelled_owned())
    .await;
    stop.cancel();
    if let Some(mut gateway) = discord_gateway {
        // Disconnects, waits for the DMs it received to be recorded, releases the Lease.
        if tokio::time::timeout(Duration::from_secs(15), &mut gateway)
            .await
            .is_err()
        {
            tracing::warn!("the discord gateway did not stop in time");
            gateway.abort();
        }
    }
    if let Some(updates) = telegram_updates {
        // A poll in progress is dropped unconfirmed (Telegram sends it again); the Lease is
        // released for the next replica.
        if tokio::time::timeout(Duration::from_secs(15), updates)
            .await
            .is_err()
        {
            tracing::warn!("telegram polling did not stop in time");
        }
    }
    core.drain(Duration::from_secs(20)).await;
    directory.abort();
    let _ = tokio::join!(sweeper, listen);
    if let Some(b) = billing {
        let _ = b.await;
    }
    if let Some(m) = metrics_server {
        let _ = m.await;
    }
    served?;
    Ok(())
}
