//! Test harness of the router suites: a fresh database, Redis prefix and namespace per test,
//! the fake platforms, a gateway-protocol agent, and router replicas over real sockets.
#![allow(dead_code)] // each suite uses a different part

pub mod agent;
pub mod api;
pub mod google;
pub mod lite;
pub mod logs;
pub mod node;

use std::sync::Arc;
use std::time::Duration;

use clawdbot_api::{Plan, UserWorkspace, conditions, names};
use clawdbot_router::config::TelegramUpdatesMode;
use clawdbot_router::{Config, Router, Secret, admin};
use clawdbot_testkit::fake_chat::{DiscordSigner, FakeDiscord, FakeTelegram, FakeWhatsApp};
use k8s_openapi::api::core::v1::Secret as KubeSecret;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::wait::{await_condition, conditions as kube_conditions};
use kube::{Client, CustomResourceExt};
use serde_json::json;
use sqlx::PgPool;
use tokio::sync::{OnceCell, oneshot};
use uuid::Uuid;

pub use agent::TestAgent;

pub const TELEGRAM_TOKEN: &str = "123456:TEST-bot-token";
pub const TELEGRAM_SECRET: &str = "tg-webhook-secret";
pub const WA_APP_SECRET: &str = "wa-app-secret";
pub const WA_VERIFY: &str = "wa-verify-token";
pub const WA_ACCESS: &str = "wa-access-token";
pub const WA_PHONE_ID: &str = "106540352242922";
pub const ADMIN_TOKEN: &str = "admin-token-for-tests";
pub const WEB_SECRET: &str = "web-secret-for-tests";
pub const DISCORD_BOT_TOKEN: &str = "MTE3MDAwMDAwMDAwMDAwMDAwMQ.fake.discord-bot-token";

static CRD: OnceCell<()> = OnceCell::const_new();

/// Installs the UserWorkspace CRD: the committed `crds/` when present, else the derived one.
pub async fn install_crd(client: &Client) {
    if clawdbot_testkit::repo_root().join("crds").is_dir() {
        clawdbot_testkit::kube::install_crds(client).await;
        return;
    }
    CRD.get_or_init(|| async {
        let api = Api::<CustomResourceDefinition>::all(client.clone());
        let crd = UserWorkspace::crd();
        let name = crd.metadata.name.clone().expect("crd name");
        api.patch(
            &name,
            &PatchParams::apply("clawdbot-router-tests").force(),
            &Patch::Apply(&crd),
        )
        .await
        .expect("apply crd");
        tokio::time::timeout(
            Duration::from_secs(30),
            await_condition(api, &name, kube_conditions::is_crd_established()),
        )
        .await
        .expect("crd established in time")
        .expect("crd watch");
    })
    .await;
}

/// A fresh database on the shared server, migrated by the router on start.
pub async fn fresh_database() -> String {
    let base = &clawdbot_testkit::env::get().database_url;
    let admin = PgPool::connect(base).await.expect("connect postgres");
    let name = format!("router_t_{:016x}", rand::random::<u64>());
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&admin)
        .await
        .expect("create database");
    admin.close().await;
    let (prefix, _) = base.rsplit_once('/').expect("database url has a path");
    format!("{prefix}/{name}")
}

/// One test's world.
pub struct World {
    pub kube: Client,
    pub namespace: String,
    pub database_url: String,
    pub db: PgPool,
    pub redis_prefix: String,
    pub telegram: FakeTelegram,
    pub whatsapp: FakeWhatsApp,
    pub discord: FakeDiscord,
    pub discord_signer: DiscordSigner,
    pub http: reqwest::Client,
}

impl World {
    pub async fn new() -> World {
        Self::build(false).await
    }

    /// A world whose namespace's pods really run on the node (kubelet, containerd).
    pub async fn on_node() -> World {
        Self::build(true).await
    }

    async fn build(on_node: bool) -> World {
        clawdbot_testkit::init_tracing();
        let kube = clawdbot_testkit::kube::client().await;
        install_crd(&kube).await;
        let namespace = if on_node {
            clawdbot_testkit::node::fresh_namespace(&kube, "router-node").await
        } else {
            clawdbot_testkit::kube::fresh_namespace(&kube, "router").await
        };
        let database_url = fresh_database().await;
        clawdbot_router::store::connect(&database_url, 4)
            .await
            .expect("migrate");
        let db = PgPool::connect(&database_url)
            .await
            .expect("connect test database");
        World {
            kube,
            namespace,
            database_url,
            db,
            redis_prefix: format!("t{:08x}:", rand::random::<u32>()),
            telegram: FakeTelegram::start(TELEGRAM_TOKEN).await,
            whatsapp: FakeWhatsApp::start(WA_ACCESS).await,
            discord: FakeDiscord::start(DISCORD_BOT_TOKEN).await,
            discord_signer: DiscordSigner::new(),
            http: reqwest::Client::new(),
        }
    }

    /// A router config for this world with every channel on.
    pub fn config(&self) -> Config {
        let env = clawdbot_testkit::env::get();
        let mut c = Config::minimal(&self.database_url, &env.redis_url, ADMIN_TOKEN);
        c.database.max_connections = 8;
        c.redis.prefix = self.redis_prefix.clone();
        c.kube.watch_namespace = Some(self.namespace.clone());
        c.onboarding.registration_url = "https://clawdbot.test/signup".into();
        c.telegram.bot_token = Some(Secret::new(TELEGRAM_TOKEN));
        c.telegram.webhook_secret = Some(Secret::new(TELEGRAM_SECRET));
        c.telegram.api_base = self.telegram.base_url().to_string();
        // The suites post updates to the webhook themselves (as if it had been registered
        // by hand); tests of registration and long polling choose another mode.
        c.telegram.updates = TelegramUpdatesMode::Webhook;
        // Leases (Discord Gateway, Telegram polling) per test, not shared across tests.
        c.kube.lease_namespace = self.namespace.clone();
        c.whatsapp.app_secret = Some(Secret::new(WA_APP_SECRET));
        c.whatsapp.verify_token = Some(Secret::new(WA_VERIFY));
        c.whatsapp.access_token = Some(Secret::new(WA_ACCESS));
        c.whatsapp.api_base = self.whatsapp.base_url().to_string();
        c.discord.public_key = Some(self.discord_signer.public_key_hex());
        c.discord.api_base = self.discord.base_url().to_string();
        c.web.token_secret = Some(Secret::new(WEB_SECRET));
        c.limits.agent_timeout = Duration::from_secs(10);
        c.limits.sweep_interval = Duration::from_millis(300);
        c
    }

    /// Starts a router replica with `config`.
    pub async fn start_router(&self, config: Config) -> Replica {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        self.start_router_on(listener, config).await
    }

    /// Starts a router replica on `listener` (bound earlier, so that its address can go into
    /// the config, such as an OAuth redirect URL).
    pub async fn start_router_on(
        &self,
        listener: tokio::net::TcpListener,
        config: Config,
    ) -> Replica {
        let metrics = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind metrics");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let metrics_url = format!("http://{}/metrics", metrics.local_addr().expect("addr"));
        let router = Router::connect(config, self.kube.clone())
            .await
            .expect("router connects");
        let core = router.core.clone();
        let api = router.api.clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            clawdbot_router::launch(router, listener, Some(metrics), async {
                let _ = stopped.await;
            })
            .await
        });
        let replica = Replica {
            base,
            metrics_url,
            core,
            api,
            stop: Some(stop),
            task: Some(task),
        };
        let http = self.http.clone();
        let ready = format!("{}/readyz", replica.base);
        clawdbot_testkit::wait_for("router ready", Duration::from_secs(30), || {
            let http = http.clone();
            let ready = ready.clone();
            async move {
                http.get(&ready)
                    .send()
                    .await
                    .ok()
                    .filter(|r| r.status().is_success())
            }
        })
        .await;
        replica
    }

    /// A user with a workspace whose agent is `agent` and ready.
    pub async fn ready_tenant(&self, agent: &TestAgent, plan: Plan) -> Tenant {
        let user = admin::create_user(&self.db, None, plan)
            .await
            .expect("user");
        let tenant = self.tenant(user, plan).await;
        self.set_token(&tenant.name, &agent.token).await;
        self.mark_ready(&tenant.name, &agent.base_url).await;
        tenant
    }

    /// Applies a workspace for `user` (through the admin code) and returns it, not ready.
    pub async fn tenant(&self, user: Uuid, plan: Plan) -> Tenant {
        let name = format!("ws-{:08x}", rand::random::<u32>());
        let req = admin::WorkspaceRequest {
            namespace: self.namespace.clone(),
            name: name.clone(),
            owner: user,
            plan,
            model: "smollm2".into(),
            endpoint: "shared".into(),
            idle_timeout: Some("30m".into()),
        };
        admin::apply_workspace(self.kube.clone(), &req)
            .await
            .expect("apply workspace");
        Tenant { user, name }
    }

    /// Creates the gateway-token Secret as the operator would.
    pub async fn set_token(&self, workspace: &str, token: &str) {
        let secret: KubeSecret = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": names::gateway_token_secret(workspace), "namespace": self.namespace,
                         "labels": {names::LABEL_SECRET_KIND: names::SECRET_KIND_GATEWAY_TOKEN,
                                    names::LABEL_WORKSPACE: workspace}},
            "stringData": {names::GATEWAY_TOKEN_KEY: token}
        }))
        .expect("secret");
        Api::<KubeSecret>::namespaced(self.kube.clone(), &self.namespace)
            .create(&PostParams::default(), &secret)
            .await
            .expect("create secret");
    }

    /// Plays the operator: Running, Ready, with the agent URL.
    pub async fn mark_ready(&self, workspace: &str, url: &str) {
        let status = json!({"status": {
            "phase": "Running", "url": url,
            "conditions": [{"type": conditions::READY, "status": "True", "reason": conditions::REASON_AGENT_READY,
                            "message": "agent answers", "lastTransitionTime": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)}]
        }});
        self.patch_status(workspace, status).await;
    }

    /// Plays the operator: Hibernated since now, not ready.
    pub async fn mark_hibernated(&self, workspace: &str) {
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let status = json!({"status": {
            "phase": "Hibernated", "hibernatedSince": now,
            "conditions": [{"type": conditions::READY, "status": "False", "reason": conditions::REASON_IDLE,
                            "message": "hibernated", "lastTransitionTime": now}]
        }});
        self.patch_status(workspace, status).await;
    }

    async fn patch_status(&self, workspace: &str, status: serde_json::Value) {
        Api::<UserWorkspace>::namespaced(self.kube.clone(), &self.namespace)
            .patch_status(workspace, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .expect("patch status");
    }

    pub async fn workspace(&self, name: &str) -> UserWorkspace {
        Api::<UserWorkspace>::namespaced(self.kube.clone(), &self.namespace)
            .get(name)
            .await
            .expect("get workspace")
    }

    /// Connects a Telegram chat to a user directly (skipping the code flow).
    pub async fn connect(&self, channel: &str, sender: &str, user: Uuid) {
        clawdbot_router::store::connect_channel(&self.db, channel, sender, user)
            .await
            .expect("connect");
    }

    /// Posts a Telegram update with the right secret header.
    pub async fn telegram_update(
        &self,
        replica: &Replica,
        update: &serde_json::Value,
    ) -> reqwest::Response {
        self.http
            .post(format!("{}/webhooks/telegram", replica.base))
            .header("x-telegram-bot-api-secret-token", TELEGRAM_SECRET)
            .json(update)
            .send()
            .await
            .expect("post update")
    }

    pub async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sql)
            .fetch_one(&self.db)
            .await
            .expect("count")
    }
}

pub struct Tenant {
    pub user: Uuid,
    pub name: String,
}

/// A running router replica.
pub struct Replica {
    pub base: String,
    pub metrics_url: String,
    pub core: Arc<clawdbot_router::Core>,
    pub api: Option<Arc<clawdbot_router::api::ApiState>>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Replica {
    /// The replica's `/metrics` text.
    pub async fn metrics(&self) -> String {
        reqwest::get(&self.metrics_url)
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics body")
    }

    /// SIGTERM: stops taking requests, drains, returns.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await
                .expect("router task")
                .expect("router ran cleanly");
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
