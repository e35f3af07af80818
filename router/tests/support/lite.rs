//! The real lite agent (`clawdbot-lite-agent`) in this process on a free port: its model the
//! test kit's fake provider, its web search the fake SearXNG when given. The router reaches it
//! as it reaches a tenant's pod (gateway protocol, conversations API, bearer token).

use clawdbot_api::lite::LiteAgentConfig;
use clawdbot_testkit::fake_llm::{FakeLlm, FakeSearxng};
use serde_json::json;

/// The real lite agent on a free port, its model the fake provider, its web search the fake
/// SearXNG.
pub struct LiteAgent {
    pub url: String,
    pub token: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl LiteAgent {
    pub async fn start(llm: &FakeLlm, searx: Option<&FakeSearxng>) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let token = format!("lite-{:016x}", rand::random::<u64>());
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, &token).expect("token file");
        std::fs::create_dir_all(dir.path().join("data")).expect("data dir");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut config = json!({
            "listen": addr.to_string(),
            "dataDir": dir.path().join("data").to_string_lossy(),
            "tokenFile": token_file.to_string_lossy(),
            "model": {"provider": "platform", "baseUrl": llm.base_url(), "model": "fake-model", "timeoutSeconds": 20},
            "storageLimitBytes": 64 * 1024 * 1024,
        });
        if let Some(searx) = searx {
            config["webSearch"] = json!({"baseUrl": searx.base_url(), "maxPerDay": 5});
        }
        let config: LiteAgentConfig = serde_json::from_value(config).expect("lite config");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            clawdbot_lite_agent::launch(config, listener, async {
                let _ = stopped.await;
            })
            .await
            .expect("agent ran cleanly")
        });
        LiteAgent {
            url: format!("http://{addr}"),
            token,
            stop: Some(stop),
            task,
            _dir: dir,
        }
    }

    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        (&mut self.task).await.expect("agent task");
    }
}
