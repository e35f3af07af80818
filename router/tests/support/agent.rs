//! A small agent speaking the gateway protocol (OpenAI chat completions, bearer token,
//! `x-openclaw-session-key`), recording what it receives. It answers `echo: <text>`, numbering
//! the turns of each session so that tests can see session keys kept apart.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use clawdbot_api::gateway::{
    ChatCompletionRequest, ChatCompletionResponse, ChatMessage, Choice, ErrorBody,
    SESSION_KEY_HEADER, Usage,
};

#[derive(Clone, Debug)]
pub struct AgentCall {
    pub session_key: String,
    pub text: String,
    pub at: Instant,
}

#[derive(Default)]
pub struct AgentState {
    token: String,
    pub calls: Mutex<Vec<AgentCall>>,
    turns: Mutex<HashMap<String, u64>>,
    pub fail: AtomicBool,
    pub report_usage: AtomicBool,
    /// Reply length override (characters), 0 = echo.
    pub reply_chars: AtomicU64,
    pub notify: tokio::sync::Notify,
    /// Keep no per-call log (benchmarks).
    pub record: AtomicBool,
    pub count: AtomicU64,
    /// Think this long before answering (milliseconds).
    pub delay_ms: AtomicU64,
    /// The `model` the answer names, as the lite agent names its provider's model; unset:
    /// the requested one echoed, as OpenClaw does.
    pub reply_model: Mutex<Option<String>>,
}

pub struct TestAgent {
    pub base_url: String,
    pub token: String,
    pub state: Arc<AgentState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestAgent {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestAgent {
    pub async fn start() -> TestAgent {
        let token = format!("gw-{:016x}", rand::random::<u64>());
        let state = Arc::new(AgentState {
            token: token.clone(),
            ..Default::default()
        });
        state.record.store(true, Ordering::Relaxed);
        let app = axum::Router::new()
            .route(clawdbot_api::gateway::CHAT_COMPLETIONS_PATH, post(chat))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind agent");
        let base_url = format!("http://{}", listener.local_addr().expect("addr"));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        TestAgent {
            base_url,
            token,
            state,
            task,
        }
    }

    pub fn calls(&self) -> Vec<AgentCall> {
        self.state.calls.lock().expect("calls").clone()
    }

    /// Waits until `n` calls arrived (no sleeps: woken per call).
    pub async fn wait_calls(&self, n: usize, timeout: std::time::Duration) -> Vec<AgentCall> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.state.notify.notified();
            let calls = self.calls();
            if calls.len() >= n {
                return calls;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!("timed out waiting for {n} agent calls; got {calls:#?}");
            }
        }
    }
}

async fn chat(
    State(state): State<Arc<AgentState>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let at = Instant::now();
    let expected = format!("Bearer {}", state.token);
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
        return (
            StatusCode::UNAUTHORIZED,
            Json(ErrorBody::new("invalid_request_error", "bad token")),
        )
            .into_response();
    }
    let Some(session_key) = headers
        .get(SESSION_KEY_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
    else {
        return (
            StatusCode::BAD_REQUEST,
            Json(ErrorBody::new("invalid_request_error", "no session key")),
        )
            .into_response();
    };
    let delay = state.delay_ms.load(Ordering::Relaxed);
    if delay > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
    }
    let Ok(req) = serde_json::from_slice::<ChatCompletionRequest>(&body) else {
        return (
            StatusCode::BAD_REQUEST,
            Json(ErrorBody::new("invalid_request_error", "bad body")),
        )
            .into_response();
    };
    let text = req
        .messages
        .last()
        .and_then(|m| m.content.clone())
        .unwrap_or_default();
    state.count.fetch_add(1, Ordering::Relaxed);
    if state.record.load(Ordering::Relaxed) {
        state.calls.lock().expect("calls").push(AgentCall {
            session_key: session_key.clone(),
            text: text.clone(),
            at,
        });
        state.notify.notify_waiters();
    }
    if state.fail.load(Ordering::Relaxed) {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(ErrorBody::new("server_error", "model crashed")),
        )
            .into_response();
    }
    let turn = if state.record.load(Ordering::Relaxed) {
        let mut turns = state.turns.lock().expect("turns");
        let t = turns.entry(session_key).or_default();
        *t += 1;
        *t
    } else {
        1
    };
    let reply_chars = state.reply_chars.load(Ordering::Relaxed) as usize;
    let reply = if reply_chars > 0 {
        "lorem ipsum ".repeat(reply_chars / 12 + 1)[..reply_chars].to_string()
    } else {
        format!("echo #{turn}: {text}")
    };
    let usage = state.report_usage.load(Ordering::Relaxed).then_some(Usage {
        prompt_tokens: 11,
        completion_tokens: 7,
        total_tokens: 18,
        web_searches: 0,
    });
    Json(ChatCompletionResponse {
        id: "chatcmpl-test".into(),
        object: "chat.completion".into(),
        created: 0,
        model: state
            .reply_model
            .lock()
            .expect("reply model")
            .clone()
            .unwrap_or(req.model),
        choices: vec![Choice {
            index: 0,
            message: ChatMessage::assistant(reply),
            finish_reason: Some("stop".into()),
        }],
        usage: Some(usage.unwrap_or_default()),
    })
    .into_response()
}
