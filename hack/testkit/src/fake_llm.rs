//! Local servers speaking the wire formats of the model providers and of SearXNG, for tests
//! that must not reach the internet (see `shared/ENVIRONMENT.md`):
//!
//! - [`FakeLlm::openai`]: OpenAI chat completions (`POST /v1/chat/completions`, plain and
//!   `stream: true` SSE, tool calls, `GET /v1/models`, OpenAI's error bodies).
//! - [`FakeLlm::anthropic`]: Anthropic's Messages API (`POST /v1/messages`, `x-api-key`,
//!   `anthropic-version`, `tool_use`/`tool_result` blocks, SSE events, Anthropic's errors).
//! - [`FakeSearxng`]: SearXNG's JSON search API (`GET /search?q=..&format=json`).
//!
//! Replies are scripted ([`FakeLlm::push`]); with nothing scripted the model echoes the last
//! user message (`echo: <text>`), which is also an instant model for benchmarks. Every request
//! is recorded ([`FakeLlm::requests`]) so tests assert what was sent. The servers validate
//! what the real APIs validate (keys, required fields, tool results answering tool calls) and
//! answer with the real APIs' error bodies, so a client that passes here is not merely lucky.
//!
//! ```no_run
//! # async fn demo() {
//! use clawdbot_testkit::fake_llm::{FakeLlm, Reply};
//! let llm = FakeLlm::openai().await;
//! llm.push(Reply::tool_call("memory_search", serde_json::json!({"query": "cats"})));
//! llm.push(Reply::text("You like cats."));
//! // ... point the client at llm.base_url() ...
//! assert_eq!(llm.requests().len(), 2);
//! # }
//! ```

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use serde_json::{Value, json};
use tokio::sync::watch;

/// Which provider's wire format a [`FakeLlm`] speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    OpenAi,
    Anthropic,
}

/// A provider failure, rendered in each provider's own status and error body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FakeError {
    /// 401: OpenAI `invalid_api_key`, Anthropic `authentication_error`.
    InvalidKey,
    /// OpenAI 429 `insufficient_quota`; Anthropic 400 "credit balance is too low".
    InsufficientQuota,
    /// 429 rate limit, with `retry-after: <secs>`.
    RateLimited { retry_after_secs: u64 },
    /// 404: OpenAI `model_not_found`, Anthropic `not_found_error`.
    ModelNotFound,
    /// 500: OpenAI `server_error`, Anthropic `api_error`.
    ServerError,
    /// OpenAI 503; Anthropic 529 `overloaded_error`.
    Overloaded,
}

/// A gate a scripted reply waits on before it is sent (to hold a request in flight while a
/// test does something, such as shutting the client down). Opened once, stays open.
#[derive(Clone, Debug)]
pub struct Gate(Arc<watch::Sender<bool>>);

impl Default for Gate {
    fn default() -> Self {
        Gate(Arc::new(watch::channel(false).0))
    }
}

impl Gate {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn open(&self) {
        self.0.send_replace(true);
    }
    async fn wait(&self) {
        let mut rx = self.0.subscribe();
        let _ = rx.wait_for(|open| *open).await;
    }
}

#[derive(Clone, Debug)]
enum ReplyKind {
    Text(String),
    Tools {
        text: Option<String>,
        calls: Vec<(String, Value)>,
    },
    Error(FakeError),
    Raw {
        status: u16,
        body: String,
    },
}

/// One scripted answer of the model.
#[derive(Clone, Debug)]
pub struct Reply {
    kind: ReplyKind,
    usage: Option<(u64, u64)>,
    gate: Option<Gate>,
}

impl Reply {
    fn of(kind: ReplyKind) -> Self {
        Reply {
            kind,
            usage: None,
            gate: None,
        }
    }
    /// A plain text answer.
    pub fn text(t: impl Into<String>) -> Self {
        Self::of(ReplyKind::Text(t.into()))
    }
    /// One tool call with these arguments.
    pub fn tool_call(name: impl Into<String>, arguments: Value) -> Self {
        Self::tool_calls(vec![(name.into(), arguments)])
    }
    /// Several tool calls in one answer.
    pub fn tool_calls(calls: Vec<(String, Value)>) -> Self {
        Self::of(ReplyKind::Tools { text: None, calls })
    }
    /// A provider failure.
    pub fn error(e: FakeError) -> Self {
        Self::of(ReplyKind::Error(e))
    }
    /// Any status and body, verbatim.
    pub fn raw(status: u16, body: impl Into<String>) -> Self {
        Self::of(ReplyKind::Raw {
            status,
            body: body.into(),
        })
    }
    /// Text sent alongside tool calls (Anthropic's "let me look that up").
    pub fn with_text(mut self, t: impl Into<String>) -> Self {
        if let ReplyKind::Tools { text, .. } = &mut self.kind {
            *text = Some(t.into());
        }
        self
    }
    /// Reported token counts (otherwise estimated from the sizes).
    pub fn with_usage(mut self, prompt: u64, completion: u64) -> Self {
        self.usage = Some((prompt, completion));
        self
    }
    /// Wait for `gate` before answering.
    pub fn held(mut self, gate: &Gate) -> Self {
        self.gate = Some(gate.clone());
        self
    }
}

/// A request the fake received.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    /// Header names in lower case.
    pub headers: BTreeMap<String, String>,
    /// The JSON body (`Null` when there was none or it was not JSON).
    pub body: Value,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }
}

#[derive(Default)]
struct Shared {
    script: Mutex<VecDeque<Reply>>,
    requests: Mutex<Vec<Recorded>>,
    api_key: Mutex<Option<String>>,
    models: Mutex<Vec<String>>,
    seq: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A fake model provider on `127.0.0.1:<random port>`, stopped when dropped.
pub struct FakeLlm {
    flavor: Flavor,
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeLlm {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeLlm {
    /// An OpenAI-compatible server (also what vLLM, Ollama and llama-cpp-python speak).
    pub async fn openai() -> Self {
        Self::start(Flavor::OpenAi).await
    }

    /// An Anthropic Messages API server.
    pub async fn anthropic() -> Self {
        Self::start(Flavor::Anthropic).await
    }

    pub async fn start(flavor: Flavor) -> Self {
        Self::start_on(flavor, "127.0.0.1").await
    }

    /// A server on `ip` (e.g. the node's bridge address, for agents running in pods).
    pub async fn start_on(flavor: Flavor, ip: &str) -> Self {
        let shared = Arc::new(Shared::default());
        let app = Router::new()
            .route("/v1/models", get(models))
            .route("/v1/{*rest}", any(handle))
            .with_state((flavor, shared.clone()));
        let listener = tokio::net::TcpListener::bind((ip, 0))
            .await
            .expect("bind fake model server");
        let addr = listener.local_addr().expect("local addr");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeLlm {
            flavor,
            addr,
            shared,
            task,
        }
    }

    pub fn flavor(&self) -> Flavor {
        self.flavor
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Base URL including `/v1`, as clients configure it (`<base>/chat/completions`,
    /// `<base>/messages`).
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Requires this key (`Authorization: Bearer` for OpenAI, `x-api-key` for Anthropic);
    /// other keys get the provider's 401.
    pub fn require_api_key(&self, key: impl Into<String>) -> &Self {
        *lock(&self.shared.api_key) = Some(key.into());
        self
    }

    /// Serves only these model names; others get the provider's 404. Empty: any model.
    pub fn serve_models(&self, models: &[&str]) -> &Self {
        *lock(&self.shared.models) = models.iter().map(|m| m.to_string()).collect();
        self
    }

    /// Queues a reply; replies are used in order, one per completion request.
    pub fn push(&self, reply: Reply) -> &Self {
        lock(&self.shared.script).push_back(reply);
        self
    }

    /// Replies still queued.
    pub fn pending(&self) -> usize {
        lock(&self.shared.script).len()
    }

    /// Every request received, in order.
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.shared.requests).clone()
    }

    /// Only the completion requests (`/chat/completions` or `/messages`).
    pub fn completions(&self) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.path.ends_with("/chat/completions") || r.path.ends_with("/messages"))
            .collect()
    }
}

async fn models(State((flavor, shared)): State<(Flavor, Arc<Shared>)>) -> Response {
    let mut names = lock(&shared.models).clone();
    if names.is_empty() {
        names.push("fake-model".into());
    }
    let data: Vec<Value> = names
        .iter()
        .map(|m| match flavor {
            Flavor::OpenAi => json!({"id": m, "object": "model", "created": 0, "owned_by": "fake"}),
            Flavor::Anthropic => json!({"id": m, "type": "model", "display_name": m}),
        })
        .collect();
    let body = match flavor {
        Flavor::OpenAi => json!({"object": "list", "data": data}),
        Flavor::Anthropic => json!({"data": data, "has_more": false}),
    };
    axum::Json(body).into_response()
}

fn json_response(status: u16, body: Value) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, axum::Json(body)).into_response()
}

fn openai_error(status: u16, message: &str, type_: &str, code: Option<&str>) -> Response {
    json_response(
        status,
        json!({"error": {"message": message, "type": type_, "param": null, "code": code}}),
    )
}

fn anthropic_error(status: u16, type_: &str, message: &str) -> Response {
    json_response(
        status,
        json!({"type": "error", "error": {"type": type_, "message": message}}),
    )
}

async fn handle(
    State((flavor, shared)): State<(Flavor, Arc<Shared>)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let parsed: Option<Value> = serde_json::from_slice(&body).ok();
    let recorded = Recorded {
        method: method.to_string(),
        path: uri.path().to_string(),
        headers: headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: parsed.clone().unwrap_or(Value::Null),
    };
    lock(&shared.requests).push(recorded);

    let expected_path = match flavor {
        Flavor::OpenAi => "/v1/chat/completions",
        Flavor::Anthropic => "/v1/messages",
    };
    if uri.path() != expected_path || method != Method::POST {
        return match flavor {
            Flavor::OpenAi => openai_error(404, "Invalid URL", "invalid_request_error", None),
            Flavor::Anthropic => anthropic_error(404, "not_found_error", "Not Found"),
        };
    }
    // Authentication first, as the real APIs do.
    let required = lock(&shared.api_key).clone();
    if let Some(key) = required {
        let ok = match flavor {
            Flavor::OpenAi => headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v == format!("Bearer {key}")),
            Flavor::Anthropic => {
                headers.get("x-api-key").and_then(|v| v.to_str().ok()) == Some(key.as_str())
            }
        };
        if !ok {
            return error_response(flavor, FakeError::InvalidKey);
        }
    }
    let Some(req) = parsed else {
        return match flavor {
            Flavor::OpenAi => openai_error(
                400,
                "We could not parse the JSON body of your request.",
                "invalid_request_error",
                None,
            ),
            Flavor::Anthropic => anthropic_error(
                400,
                "invalid_request_error",
                "request body is not valid JSON",
            ),
        };
    };
    if let Err(message) = validate(flavor, &headers, &req) {
        return match flavor {
            Flavor::OpenAi => openai_error(400, &message, "invalid_request_error", None),
            Flavor::Anthropic => anthropic_error(400, "invalid_request_error", &message),
        };
    }
    let model = req["model"].as_str().unwrap_or_default().to_string();
    let served = lock(&shared.models).clone();
    if !served.is_empty() && !served.contains(&model) {
        return error_response(flavor, FakeError::ModelNotFound);
    }

    let reply = lock(&shared.script).pop_front().unwrap_or_else(|| {
        Reply::text(format!(
            "echo: {}",
            last_user_text(&req).unwrap_or_default()
        ))
    });
    if let Some(gate) = &reply.gate {
        gate.wait().await;
    }
    let n = shared.seq.fetch_add(1, Ordering::Relaxed);
    let (prompt, completion) = reply.usage.unwrap_or_else(|| {
        let out = match &reply.kind {
            ReplyKind::Text(t) => t.len(),
            ReplyKind::Tools { calls, .. } => calls.iter().map(|c| c.1.to_string().len()).sum(),
            _ => 0,
        };
        (body.len() as u64 / 4 + 1, out as u64 / 4 + 1)
    });
    let stream = req["stream"].as_bool().unwrap_or(false);
    match (&reply.kind, flavor) {
        (ReplyKind::Error(e), _) => error_response(flavor, *e),
        (ReplyKind::Raw { status, body }, _) => Response::builder()
            .status(StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
            .header("content-type", "application/json")
            .body(Body::from(body.clone()))
            .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response()),
        (kind, Flavor::OpenAi) => {
            let (text, calls) = split(kind);
            if stream {
                let include_usage = req["stream_options"]["include_usage"]
                    .as_bool()
                    .unwrap_or(false);
                openai_stream(n, &model, text, &calls, (prompt, completion), include_usage)
            } else {
                axum::Json(openai_completion(
                    n,
                    &model,
                    text,
                    &calls,
                    (prompt, completion),
                ))
                .into_response()
            }
        }
        (kind, Flavor::Anthropic) => {
            let (text, calls) = split(kind);
            if stream {
                anthropic_stream(n, &model, text, &calls, (prompt, completion))
            } else {
                axum::Json(anthropic_message(
                    n,
                    &model,
                    text,
                    &calls,
                    (prompt, completion),
                ))
                .into_response()
            }
        }
    }
}

fn split(kind: &ReplyKind) -> (Option<&str>, Vec<(String, Value)>) {
    match kind {
        ReplyKind::Text(t) => (Some(t.as_str()), Vec::new()),
        ReplyKind::Tools { text, calls } => (text.as_deref(), calls.clone()),
        _ => (None, Vec::new()),
    }
}

fn error_response(flavor: Flavor, e: FakeError) -> Response {
    match (flavor, e) {
        (Flavor::OpenAi, FakeError::InvalidKey) => openai_error(
            401,
            "Incorrect API key provided: sk-****. You can find your API key at https://platform.openai.com/account/api-keys.",
            "invalid_request_error",
            Some("invalid_api_key"),
        ),
        (Flavor::OpenAi, FakeError::InsufficientQuota) => openai_error(
            429,
            "You exceeded your current quota, please check your plan and billing details.",
            "insufficient_quota",
            Some("insufficient_quota"),
        ),
        (Flavor::OpenAi, FakeError::RateLimited { retry_after_secs }) => {
            let mut r = openai_error(
                429,
                "Rate limit reached for requests. Please try again later.",
                "requests",
                Some("rate_limit_exceeded"),
            );
            r.headers_mut()
                .insert("retry-after", retry_after_secs.into());
            r
        }
        (Flavor::OpenAi, FakeError::ModelNotFound) => openai_error(
            404,
            "The model does not exist or you do not have access to it.",
            "invalid_request_error",
            Some("model_not_found"),
        ),
        (Flavor::OpenAi, FakeError::ServerError) => openai_error(
            500,
            "The server had an error while processing your request. Sorry about that!",
            "server_error",
            None,
        ),
        (Flavor::OpenAi, FakeError::Overloaded) => openai_error(
            503,
            "The engine is currently overloaded, please try again later.",
            "server_error",
            None,
        ),
        (Flavor::Anthropic, FakeError::InvalidKey) => {
            anthropic_error(401, "authentication_error", "invalid x-api-key")
        }
        (Flavor::Anthropic, FakeError::InsufficientQuota) => anthropic_error(
            400,
            "invalid_request_error",
            "Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or purchase credits.",
        ),
        (Flavor::Anthropic, FakeError::RateLimited { retry_after_secs }) => {
            let mut r = anthropic_error(
                429,
                "rate_limit_error",
                "Number of requests has exceeded your rate limit.",
            );
            r.headers_mut()
                .insert("retry-after", retry_after_secs.into());
            r
        }
        (Flavor::Anthropic, FakeError::ModelNotFound) => {
            anthropic_error(404, "not_found_error", "model: not found")
        }
        (Flavor::Anthropic, FakeError::ServerError) => {
            anthropic_error(500, "api_error", "Internal server error")
        }
        (Flavor::Anthropic, FakeError::Overloaded) => {
            anthropic_error(529, "overloaded_error", "Overloaded")
        }
    }
}

/// What the real APIs refuse with a 400, so that a client's malformed request fails here too.
fn validate(flavor: Flavor, headers: &HeaderMap, req: &Value) -> Result<(), String> {
    if !req["model"].is_string() {
        return Err("model: field required".into());
    }
    let messages = req["messages"]
        .as_array()
        .ok_or("messages: field required")?;
    if messages.is_empty() {
        return Err("messages: at least one message is required".into());
    }
    match flavor {
        Flavor::OpenAi => {
            let mut open_calls: Vec<String> = Vec::new();
            for (i, m) in messages.iter().enumerate() {
                match m["role"].as_str() {
                    Some("system" | "developer" | "user") => open_calls.clear(),
                    Some("assistant") => {
                        open_calls = m["tool_calls"]
                            .as_array()
                            .map(|c| {
                                c.iter()
                                    .filter_map(|c| c["id"].as_str().map(String::from))
                                    .collect()
                            })
                            .unwrap_or_default();
                        if let Some(calls) = m["tool_calls"].as_array() {
                            // OpenAI refuses arguments sent as an object: they are a JSON string.
                            if calls
                                .iter()
                                .any(|c| !c["function"]["arguments"].is_string())
                            {
                                return Err(format!(
                                    "messages[{i}].tool_calls: function.arguments must be a string"
                                ));
                            }
                        }
                    }
                    Some("tool") => {
                        let id = m["tool_call_id"].as_str().unwrap_or_default();
                        if !open_calls.iter().any(|c| c == id) {
                            return Err(format!(
                                "messages[{i}]: messages with role 'tool' must be a response to a preceding message with 'tool_calls'"
                            ));
                        }
                    }
                    other => return Err(format!("messages[{i}].role: invalid value {other:?}")),
                }
            }
            if let Some(tools) = req.get("tools") {
                let ok = tools.as_array().is_some_and(|t| {
                    t.iter()
                        .all(|t| t["type"] == "function" && t["function"]["name"].is_string())
                });
                if !ok {
                    return Err(
                        "tools: each tool must be {type: function, function: {name, ...}}".into(),
                    );
                }
            }
        }
        Flavor::Anthropic => {
            if headers.get("anthropic-version").is_none() {
                return Err("anthropic-version: header is required".into());
            }
            if !req["max_tokens"].is_u64() {
                return Err("max_tokens: Field required".into());
            }
            let mut expect_user = true;
            let mut open_tool_uses: Vec<String> = Vec::new();
            for (i, m) in messages.iter().enumerate() {
                let role = m["role"].as_str().unwrap_or_default();
                match (role, expect_user) {
                    ("user", true) => {
                        if let Some(blocks) = m["content"].as_array() {
                            for b in blocks.iter().filter(|b| b["type"] == "tool_result") {
                                let id = b["tool_use_id"].as_str().unwrap_or_default();
                                if !open_tool_uses.iter().any(|u| u == id) {
                                    return Err(format!(
                                        "messages.{i}.content: unexpected `tool_use_id` found in `tool_result` blocks: {id}. Each `tool_result` block must have a corresponding `tool_use` block in the previous message."
                                    ));
                                }
                            }
                        }
                        open_tool_uses.clear();
                    }
                    ("assistant", false) => {
                        let blocks = m["content"].as_array();
                        open_tool_uses = blocks
                            .map(|b| {
                                b.iter()
                                    .filter(|b| b["type"] == "tool_use")
                                    .filter_map(|b| b["id"].as_str().map(String::from))
                                    .collect()
                            })
                            .unwrap_or_default();
                        if blocks.is_some_and(|b| b.is_empty()) {
                            return Err(format!(
                                "messages.{i}: all messages must have non-empty content except for the optional final assistant message"
                            ));
                        }
                    }
                    ("user" | "assistant", _) => {
                        return Err(format!(
                            "messages.{i}: roles must alternate between \"user\" and \"assistant\""
                        ));
                    }
                    _ => {
                        return Err(format!(
                            "messages.{i}.role: Input should be 'user' or 'assistant'"
                        ));
                    }
                }
                expect_user = !expect_user;
            }
            if messages.first().and_then(|m| m["role"].as_str()) != Some("user") {
                return Err("messages: first message must use the \"user\" role".into());
            }
            if let Some(tools) = req.get("tools") {
                let ok = tools.as_array().is_some_and(|t| {
                    t.iter()
                        .all(|t| t["name"].is_string() && t["input_schema"].is_object())
                });
                if !ok {
                    return Err("tools: each tool needs name and input_schema".into());
                }
            }
        }
    }
    Ok(())
}

fn last_user_text(req: &Value) -> Option<String> {
    let m = req["messages"]
        .as_array()?
        .iter()
        .rev()
        .find(|m| m["role"] == "user")?;
    match &m["content"] {
        Value::String(s) => Some(s.clone()),
        Value::Array(parts) => Some(
            parts
                .iter()
                .filter_map(|p| p["text"].as_str().or(p["content"].as_str()))
                .collect::<Vec<_>>()
                .join(" "),
        ),
        _ => None,
    }
}

fn openai_tool_calls(n: u64, calls: &[(String, Value)]) -> Vec<Value> {
    calls
        .iter()
        .enumerate()
        .map(|(i, (name, args))| {
            json!({"id": format!("call_{n}_{i}"), "type": "function",
                   "function": {"name": name, "arguments": args.to_string()}})
        })
        .collect()
}

fn openai_completion(
    n: u64,
    model: &str,
    text: Option<&str>,
    calls: &[(String, Value)],
    (p, c): (u64, u64),
) -> Value {
    let mut message = json!({"role": "assistant", "content": text, "refusal": null});
    if !calls.is_empty() {
        message["tool_calls"] = Value::Array(openai_tool_calls(n, calls));
    }
    json!({
        "id": format!("chatcmpl-fake{n}"),
        "object": "chat.completion",
        "created": 1_700_000_000 + n,
        "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": null,
                     "finish_reason": if calls.is_empty() { "stop" } else { "tool_calls" }}],
        "usage": {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c},
        "system_fingerprint": "fp_fake",
    })
}

fn sse(events: Vec<String>) -> Response {
    let stream = futures::stream::iter(
        events
            .into_iter()
            .map(|e| Ok::<_, Infallible>(Bytes::from(e))),
    );
    Response::builder()
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// Text in a few pieces, as a streaming model sends it.
fn pieces(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for (i, word) in text.split_inclusive(' ').enumerate() {
        cur.push_str(word);
        if i % 3 == 2 {
            out.push(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn openai_stream(
    n: u64,
    model: &str,
    text: Option<&str>,
    calls: &[(String, Value)],
    (p, c): (u64, u64),
    include_usage: bool,
) -> Response {
    let id = format!("chatcmpl-fake{n}");
    let chunk = |delta: Value, finish: Value| {
        let mut v = json!({"id": id, "object": "chat.completion.chunk", "created": 1_700_000_000 + n,
               "model": model, "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]});
        if include_usage {
            v["usage"] = Value::Null;
        }
        format!("data: {v}\n\n")
    };
    let mut events = vec![chunk(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    )];
    for piece in pieces(text.unwrap_or_default()) {
        events.push(chunk(json!({"content": piece}), Value::Null));
    }
    for (i, call) in openai_tool_calls(n, calls).into_iter().enumerate() {
        let args = call["function"]["arguments"]
            .as_str()
            .unwrap_or("{}")
            .to_string();
        events.push(chunk(
            json!({"tool_calls": [{"index": i, "id": call["id"], "type": "function",
                   "function": {"name": call["function"]["name"], "arguments": ""}}]}),
            Value::Null,
        ));
        let mid = args.len() / 2;
        let mid = (0..=mid)
            .rev()
            .find(|m| args.is_char_boundary(*m))
            .unwrap_or(0);
        for part in [&args[..mid], &args[mid..]] {
            events.push(chunk(
                json!({"tool_calls": [{"index": i, "function": {"arguments": part}}]}),
                Value::Null,
            ));
        }
    }
    let finish = if calls.is_empty() {
        "stop"
    } else {
        "tool_calls"
    };
    events.push(chunk(json!({}), json!(finish)));
    if include_usage {
        let v = json!({"id": id, "object": "chat.completion.chunk", "created": 1_700_000_000 + n,
            "model": model, "choices": [],
            "usage": {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}});
        events.push(format!("data: {v}\n\n"));
    }
    events.push("data: [DONE]\n\n".to_string());
    sse(events)
}

fn anthropic_blocks(n: u64, text: Option<&str>, calls: &[(String, Value)]) -> Vec<Value> {
    let mut blocks = Vec::new();
    if let Some(t) = text {
        blocks.push(json!({"type": "text", "text": t}));
    }
    for (i, (name, input)) in calls.iter().enumerate() {
        blocks.push(json!({"type": "tool_use", "id": format!("toolu_{n}_{i}"), "name": name, "input": input}));
    }
    blocks
}

fn anthropic_message(
    n: u64,
    model: &str,
    text: Option<&str>,
    calls: &[(String, Value)],
    (p, c): (u64, u64),
) -> Value {
    json!({
        "id": format!("msg_fake{n}"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": anthropic_blocks(n, text, calls),
        "stop_reason": if calls.is_empty() { "end_turn" } else { "tool_use" },
        "stop_sequence": null,
        "usage": {"input_tokens": p, "output_tokens": c},
    })
}

fn anthropic_stream(
    n: u64,
    model: &str,
    text: Option<&str>,
    calls: &[(String, Value)],
    (p, c): (u64, u64),
) -> Response {
    let ev = |name: &str, data: Value| format!("event: {name}\ndata: {data}\n\n");
    let mut events = vec![ev(
        "message_start",
        json!({"type": "message_start", "message": {"id": format!("msg_fake{n}"), "type": "message",
            "role": "assistant", "model": model, "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": p, "output_tokens": 1}}}),
    )];
    for (index, block) in anthropic_blocks(n, text, calls).into_iter().enumerate() {
        if block["type"] == "text" {
            events.push(ev(
                "content_block_start",
                json!({"type": "content_block_start", "index": index,
                "content_block": {"type": "text", "text": ""}}),
            ));
            for piece in pieces(block["text"].as_str().unwrap_or_default()) {
                events.push(ev(
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": index,
                    "delta": {"type": "text_delta", "text": piece}}),
                ));
            }
        } else {
            events.push(ev("content_block_start", json!({"type": "content_block_start", "index": index,
                "content_block": {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}})));
            events.push(ev(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": index,
                "delta": {"type": "input_json_delta", "partial_json": block["input"].to_string()}}),
            ));
        }
        events.push(ev(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": index}),
        ));
    }
    let stop = if calls.is_empty() {
        "end_turn"
    } else {
        "tool_use"
    };
    events.push(ev(
        "message_delta",
        json!({"type": "message_delta",
        "delta": {"stop_reason": stop, "stop_sequence": null}, "usage": {"output_tokens": c}}),
    ));
    events.push(ev("message_stop", json!({"type": "message_stop"})));
    sse(events)
}

/// One SearXNG result.
#[derive(Clone, Debug, PartialEq)]
pub struct SearchResult {
    pub title: String,
    pub url: String,
    pub content: String,
}

impl SearchResult {
    pub fn new(title: &str, url: &str, content: &str) -> Self {
        SearchResult {
            title: title.into(),
            url: url.into(),
            content: content.into(),
        }
    }
}

#[derive(Default)]
struct SearxShared {
    results: Mutex<HashMap<String, Vec<SearchResult>>>,
    queries: Mutex<Vec<String>>,
    fail_status: Mutex<Option<u16>>,
}

/// A SearXNG instance's JSON API on `127.0.0.1:<random port>`, stopped when dropped.
pub struct FakeSearxng {
    addr: SocketAddr,
    shared: Arc<SearxShared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeSearxng {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeSearxng {
    pub async fn start() -> Self {
        let shared = Arc::new(SearxShared::default());
        let app = Router::new()
            .route("/search", get(searx_search))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake searxng");
        let addr = listener.local_addr().expect("local addr");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeSearxng { addr, shared, task }
    }

    /// Base URL of the instance (its API is `<base>/search`).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Results for queries containing `needle` (case-insensitive). Other queries get one
    /// generated result naming the query.
    pub fn set_results(&self, needle: &str, results: Vec<SearchResult>) -> &Self {
        lock(&self.shared.results).insert(needle.to_lowercase(), results);
        self
    }

    /// Answers every search with this status (SearXNG says 429 when its engines are limited).
    pub fn fail_with(&self, status: Option<u16>) -> &Self {
        *lock(&self.shared.fail_status) = status;
        self
    }

    /// The `q` of every search received, in order.
    pub fn queries(&self) -> Vec<String> {
        lock(&self.shared.queries).clone()
    }
}

async fn searx_search(
    State(shared): State<Arc<SearxShared>>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let q = params.get("q").cloned().unwrap_or_default();
    lock(&shared.queries).push(q.clone());
    // SearXNG answers 403 when the requested output format is not enabled.
    if params.get("format").map(String::as_str) != Some("json") {
        return (StatusCode::FORBIDDEN, "403 Forbidden").into_response();
    }
    if let Some(status) = *lock(&shared.fail_status) {
        return StatusCode::from_u16(status)
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
            .into_response();
    }
    if q.trim().is_empty() {
        return (StatusCode::BAD_REQUEST, "No query").into_response();
    }
    let lower = q.to_lowercase();
    let results = lock(&shared.results)
        .iter()
        .find(|(needle, _)| lower.contains(needle.as_str()))
        .map(|(_, r)| r.clone())
        .unwrap_or_else(|| {
            vec![SearchResult::new(
                &format!("About {q}"),
                &format!("https://example.org/search/{}", q.replace(' ', "-")),
                &format!("A page about {q}."),
            )]
        });
    let body = json!({
        "query": q,
        "number_of_results": results.len(),
        "results": results.iter().map(|r| json!({
            "url": r.url, "title": r.title, "content": r.content,
            "engine": "fake", "engines": ["fake"], "positions": [1], "score": 1.0, "category": "general",
        })).collect::<Vec<_>>(),
        "answers": [], "corrections": [], "infoboxes": [], "suggestions": [], "unresponsive_engines": [],
    });
    axum::Json(body).into_response()
}
