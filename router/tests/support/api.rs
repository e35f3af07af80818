//! The accounts API in tests: a config with accounts on, and a small client that keeps a
//! session.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::{Replica, World};
use clawdbot_router::{Config, Secret};

pub const JWT_SECRET: &str = "jwt-signing-key-for-tests-0123456789abcdef";
/// Master key k1 (32 bytes, base64) and a second one for rotation.
pub const MASTER_K1: &str = "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
pub const MASTER_K2: &str = "k2:ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";
pub const DASHBOARD: &str = "https://app.clawdbot.test";

impl World {
    /// The world's config with the accounts API on, workspaces in the test namespace.
    pub fn api_config(&self) -> Config {
        let mut c = self.config();
        c.accounts.jwt_secret = Some(Secret::new(JWT_SECRET));
        c.accounts.master_keys = Some(Secret::new(MASTER_K1));
        c.accounts.workspace_namespace = self.namespace.clone();
        c.accounts.workspace_model = "smollm2".into();
        c.accounts.workspace_model_endpoint = "shared".into();
        c.accounts.dashboard_origin = Some(DASHBOARD.into());
        c.telegram.bot_username = Some("ClawdbotTestBot".into());
        c.whatsapp.phone_number = Some("15550001111".into());
        c.discord.application_id = Some("1170000000000000001".into());
        c
    }
}

/// A client of one replica's API, with the access and refresh tokens of one session.
#[derive(Clone)]
pub struct ApiClient {
    pub base: String,
    pub http: reqwest::Client,
    pub access: Option<String>,
    pub refresh: Option<String>,
    pub user_id: Option<String>,
}

impl ApiClient {
    pub fn new(replica: &Replica) -> Self {
        ApiClient {
            base: replica.base.clone(),
            http: reqwest::Client::new(),
            access: None,
            refresh: None,
            user_id: None,
        }
    }

    /// Sends a request with the session's access token; returns status and JSON (or Null).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .http
            .request(method, format!("{}/api/v1{path}", self.base));
        if let Some(t) = &self.access {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status();
        let text = resp.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, None).await
    }

    /// Keeps the tokens of a session response.
    pub fn keep(&mut self, session: &Value) {
        self.access = session["access_token"].as_str().map(String::from);
        self.refresh = session["refresh_token"].as_str().map(String::from);
        self.user_id = session["user"]["id"].as_str().map(String::from);
    }

    /// Registers and keeps the session.
    pub async fn register(&mut self, email: &str, password: &str) -> Value {
        let (status, body) = self
            .call(
                Method::POST,
                "/auth/register",
                Some(json!({"email": email, "password": password})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "register: {body}");
        self.keep(&body);
        body
    }

    pub async fn login(&mut self, email: &str, password: &str) -> (StatusCode, Value) {
        let (status, body) = self
            .call(
                Method::POST,
                "/auth/login",
                Some(json!({"email": email, "password": password})),
            )
            .await;
        if status == StatusCode::OK {
            self.keep(&body);
        }
        (status, body)
    }

    pub fn user(&self) -> uuid::Uuid {
        self.user_id
            .as_deref()
            .expect("signed in")
            .parse()
            .expect("uuid")
    }
}

/// Waits until `replica`'s directory has `user`'s tenant ready to take messages.
pub async fn wait_usable(replica: &Replica, user: uuid::Uuid) {
    let dir = replica.core.directory.clone();
    clawdbot_testkit::wait_for(
        "the tenant usable by the router",
        std::time::Duration::from_secs(20),
        || {
            let dir = dir.clone();
            async move { dir.tenant_of(&user.to_string()).filter(|t| t.usable()) }
        },
    )
    .await;
}
