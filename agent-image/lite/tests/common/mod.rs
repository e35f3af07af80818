//! Runs the lite agent in-process on a real socket, the way the router's tests do.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use clawdbot_api::gateway::SESSION_KEY_HEADER;
use clawdbot_api::lite::LiteAgentConfig;
use serde_json::{Value, json};

pub const TOKEN: &str = "gw-token-0123456789";

/// A tenant volume and secret mounts in a temporary directory.
pub struct Volume {
    pub root: tempfile::TempDir,
}

impl Volume {
    pub fn new() -> Self {
        let root = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(root.path().join("data")).expect("test setup");
        std::fs::write(root.path().join("token"), format!("{TOKEN}\n")).expect("test setup");
        Volume { root }
    }
    pub fn data(&self) -> PathBuf {
        self.root.path().join("data")
    }
    pub fn path(&self, rel: &str) -> PathBuf {
        self.data().join(rel)
    }
    /// Writes a provider key file and returns its path.
    pub fn key_file(&self, key: &str) -> String {
        let p = self.root.path().join("api-key");
        std::fs::write(&p, format!("{key}\n")).expect("test setup");
        p.display().to_string()
    }
    /// A config for `model` (the `model` object of agent.json) with `extra` top-level fields.
    pub fn config(&self, model: Value, extra: Value) -> LiteAgentConfig {
        let mut c = json!({
            "listen": "127.0.0.1:0",
            "dataDir": self.data(),
            "tokenFile": self.root.path().join("token"),
            "model": model,
            "storageLimitBytes": 100_000_000u64,
        });
        if let (Some(c), Some(extra)) = (c.as_object_mut(), extra.as_object()) {
            for (k, v) in extra {
                c.insert(k.clone(), v.clone());
            }
        }
        serde_json::from_value(c).expect("valid agent config")
    }
}

pub fn openai_model(base_url: &str) -> Value {
    json!({"provider": "platform", "baseUrl": base_url, "model": "fake-model"})
}

/// A running agent.
pub struct Running {
    pub url: String,
    pub http: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), clawdbot_lite_agent::Error>>,
}

pub async fn start(config: LiteAgentConfig) -> Running {
    clawdbot_testkit::init_tracing();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("test setup");
    let url = format!("http://{}", listener.local_addr().expect("test setup"));
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(clawdbot_lite_agent::launch(config, listener, async {
        let _ = rx.await;
    }));
    Running {
        url,
        http: reqwest::Client::new(),
        stop: Some(tx),
        task,
    }
}

pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Reply {
    pub fn text(&self) -> &str {
        self.body["choices"][0]["message"]["content"]
            .as_str()
            .unwrap_or_default()
    }
    pub fn error_header(&self) -> Option<&str> {
        self.headers
            .get("x-clawdbot-agent-error")
            .and_then(|v| v.to_str().ok())
    }
}

impl Running {
    pub fn chat_request(&self, session: &str, body: Value) -> reqwest::RequestBuilder {
        self.http
            .post(format!("{}/v1/chat/completions", self.url))
            .bearer_auth(TOKEN)
            .header(SESSION_KEY_HEADER, session)
            .json(&body)
    }

    pub async fn send(rb: reqwest::RequestBuilder) -> Reply {
        let resp = rb.send().await.expect("agent reachable");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.expect("test setup");
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Reply {
            status,
            headers,
            body,
        }
    }

    /// Sends one user message as the router does.
    pub async fn chat(&self, session: &str, text: &str) -> Reply {
        Self::send(self.chat_request(
            session,
            json!({"model": "openclaw", "messages": [{"role": "user", "content": text}]}),
        ))
        .await
    }

    /// Shuts down (as on SIGTERM) and waits for `launch` to return.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        (&mut self.task)
            .await
            .expect("agent task")
            .expect("agent stopped cleanly");
    }

    pub fn trigger_stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }

    pub async fn join(self) -> Result<(), clawdbot_lite_agent::Error> {
        self.task.await.expect("agent task")
    }
}

/// The messages array of a recorded OpenAI request, as (role, content) text pairs.
pub fn roles_and_text(body: &Value) -> Vec<(String, String)> {
    body["messages"]
        .as_array()
        .expect("test setup")
        .iter()
        .map(|m| {
            let content = match &m["content"] {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (m["role"].as_str().unwrap_or_default().to_string(), content)
        })
        .collect()
}

pub fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

/// Today's daily note.
pub fn daily_note(vol: &Volume) -> PathBuf {
    vol.path(&format!(
        "memory/{}.md",
        chrono::Utc::now().format("%Y-%m-%d")
    ))
}
