//! The HTTP side: OpenClaw's gateway protocol (`POST /v1/chat/completions`, plain and SSE,
//! `GET /v1/models`), health, and the bearer token check.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use clawdbot_api::conversations::{
    self, ConversationExport, MessagePage, MessagesQuery, SessionList, SessionsQuery,
};
use clawdbot_api::gateway::{
    CHAT_COMPLETIONS_PATH, ChatCompletionChunk, ChatCompletionRequest, ChatCompletionResponse,
    ChatMessage, Choice, ChunkChoice, DEFAULT_AGENT_MODEL, Delta, ErrorBody, MODELS_PATH,
    ModelInfo, ModelList, Role, SESSION_KEY_HEADER, SessionKey,
};
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::agent::{Agent, Outcome};
use crate::secret::Secret;

/// Header naming the error category when the reply explains a failure instead of answering.
pub const AGENT_ERROR_HEADER: &str = "x-clawdbot-agent-error";
/// Largest request body.
const MAX_BODY: usize = 1024 * 1024;
/// Longest user message, in bytes.
const MAX_MESSAGE: usize = 64 * 1024;

/// The bearer token, re-read from its file when a request presents another one (at most
/// every [`TOKEN_RELOAD`]), so a rotated Secret is picked up without a restart.
pub struct Token {
    file: String,
    current: std::sync::RwLock<Secret>,
    last_read: std::sync::Mutex<Instant>,
}

const TOKEN_RELOAD: std::time::Duration = std::time::Duration::from_secs(10);

impl Token {
    pub fn load(file: &str) -> Result<Self, crate::Error> {
        Ok(Token {
            file: file.to_string(),
            current: std::sync::RwLock::new(Secret::read_file(file)?),
            // The first mismatch after start re-reads at once.
            last_read: std::sync::Mutex::new(
                Instant::now()
                    .checked_sub(TOKEN_RELOAD)
                    .unwrap_or_else(Instant::now),
            ),
        })
    }

    pub fn check(&self, presented: &str) -> bool {
        let matches = |t: &Self| {
            t.current
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .matches(presented)
        };
        if matches(self) {
            return true;
        }
        {
            let mut last = self.last_read.lock().unwrap_or_else(|p| p.into_inner());
            if last.elapsed() < TOKEN_RELOAD {
                return false;
            }
            *last = Instant::now();
        }
        match Secret::read_file(&self.file) {
            Ok(fresh) => *self.current.write().unwrap_or_else(|p| p.into_inner()) = fresh,
            Err(e) => tracing::error!(error = %e, "cannot re-read the gateway token"),
        }
        matches(self)
    }
}

#[derive(Clone)]
pub struct AppState {
    pub agent: Arc<Agent>,
    pub token: Arc<Token>,
    /// Turns run as tracked tasks: a turn whose client went away still completes and is
    /// stored, and shutdown waits for every turn.
    pub tracker: TaskTracker,
    pub metrics: Arc<crate::metrics::Metrics>,
}

pub fn app(state: AppState) -> Router {
    let api = Router::new()
        .route(CHAT_COMPLETIONS_PATH, post(chat))
        .route(MODELS_PATH, get(models))
        .route(conversations::SESSIONS_PATH, get(sessions))
        .route(conversations::MESSAGES_PATH, get(messages))
        .route(conversations::EXPORT_PATH, get(export))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth));
    Router::new()
        .merge(api)
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        // Counts only (no sessions, no content); the NetworkPolicy decides who may scrape.
        .route(
            "/metrics",
            get(|State(state): State<AppState>| async move {
                (
                    [(
                        header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    state.metrics.encode(),
                )
            }),
        )
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

fn error(status: StatusCode, type_: &str, message: impl Into<String>) -> Response {
    (status, Json(ErrorBody::new(type_, message))).into_response()
}

async fn auth(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match presented {
        Some(t) if state.token.check(t.trim()) => next.run(req).await,
        Some(_) => {
            tracing::warn!("refused a request with a wrong bearer token");
            error(
                StatusCode::UNAUTHORIZED,
                "authentication_error",
                "invalid bearer token",
            )
        }
        None => error(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "missing bearer token",
        ),
    }
}

async fn readyz(State(state): State<AppState>) -> Response {
    match sqlx::query("SELECT 1").execute(&state.agent.state).await {
        Ok(_) => "ready".into_response(),
        Err(e) => {
            tracing::error!(error = %e, "state database not usable");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_ready",
                "state database not usable",
            )
        }
    }
}

async fn models(State(state): State<AppState>) -> Json<ModelList> {
    let model = |id: &str| ModelInfo {
        id: id.to_string(),
        object: "model".into(),
        created: 0,
        owned_by: "clawdbot".into(),
    };
    let mut data = vec![model(DEFAULT_AGENT_MODEL)];
    if state.agent.provider.model() != DEFAULT_AGENT_MODEL {
        data.push(model(state.agent.provider.model()));
    }
    Json(ModelList {
        object: "list".into(),
        data,
    })
}

async fn chat(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<ChatCompletionRequest>, JsonRejection>,
) -> Response {
    let started = Instant::now();
    let key = match headers.get(SESSION_KEY_HEADER).map(|v| v.to_str()) {
        None => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                format!("missing {SESSION_KEY_HEADER} header (<channel>:<kind>:<peer>)"),
            );
        }
        Some(Err(_)) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "session key is not ASCII",
            );
        }
        Some(Ok(v)) => match SessionKey::parse(v) {
            Ok(k) => k,
            Err(e) => return error(StatusCode::BAD_REQUEST, "invalid_request_error", e),
        },
    };
    let Json(req) = match body {
        Ok(b) => b,
        Err(rejection) => {
            let status = match rejection.status() {
                StatusCode::PAYLOAD_TOO_LARGE => StatusCode::PAYLOAD_TOO_LARGE,
                StatusCode::UNSUPPORTED_MEDIA_TYPE => StatusCode::UNSUPPORTED_MEDIA_TYPE,
                _ => StatusCode::BAD_REQUEST,
            };
            return error(status, "invalid_request_error", rejection.body_text());
        }
    };
    // The router sends only the new message; a client that sends the whole conversation
    // gets its last user message answered in the history the agent keeps.
    let text = match req.messages.iter().rev().find(|m| m.role == Role::User) {
        Some(ChatMessage {
            content: Some(t), ..
        }) if !t.trim().is_empty() => t.clone(),
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "messages must end with a user message with non-empty text content",
            );
        }
    };
    if text.len() > MAX_MESSAGE {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            format!("message is longer than {MAX_MESSAGE} bytes"),
        );
    }

    let span = tracing::info_span!("chat", session = %key, stream = req.stream);
    let agent = state.agent.clone();
    let metrics = state.metrics.clone();
    let turn = state.tracker.spawn(
        async move {
            // Counted here, not in the handler: a turn whose client went away still runs.
            metrics.in_flight.inc();
            let o = agent.turn(&key, &text).await;
            metrics.in_flight.dec();
            metrics.turn(
                o.error,
                started.elapsed().saturating_sub(o.model_time),
                o.model_time,
                o.usage.prompt_tokens,
                o.usage.completion_tokens,
            );
            tracing::info!(
                model_ms = o.model_time.as_secs_f64() * 1e3,
                error = o.error.unwrap_or(""),
                "turn done"
            );
            o
        }
        .instrument(span),
    );
    let model_name = state.agent.provider.model().to_string();
    let id = completion_id();
    let created = chrono::Utc::now().timestamp();

    let o = match turn.await {
        Ok(o) => o,
        Err(e) => {
            tracing::error!(error = %e, "turn task failed");
            failed_outcome()
        }
    };
    let error_category = o.error;
    let model_time = o.model_time;
    let total = started.elapsed();
    let overhead = total.saturating_sub(model_time);
    let mut resp = if req.stream {
        // The reply is complete before the first event: models are called without streaming
        // (the tool loop needs whole answers), and so the error header can still be set.
        let events = stream_events(&id, created, &model_name, o);
        Sse::new(futures::stream::iter(
            events.into_iter().map(Ok::<_, Infallible>),
        ))
        .into_response()
    } else {
        Json(ChatCompletionResponse {
            id,
            object: "chat.completion".into(),
            created,
            model: model_name,
            choices: vec![Choice {
                index: 0,
                message: ChatMessage::assistant(o.reply),
                finish_reason: Some(o.finish_reason),
            }],
            usage: Some(o.usage),
        })
        .into_response()
    };
    let timing = format!(
        "agent;dur={:.3}, model;dur={:.3}",
        overhead.as_secs_f64() * 1e3,
        model_time.as_secs_f64() * 1e3
    );
    if let Ok(v) = HeaderValue::from_str(&timing) {
        resp.headers_mut().insert("server-timing", v);
    }
    if let Some(cat) = error_category {
        resp.headers_mut()
            .insert(AGENT_ERROR_HEADER, HeaderValue::from_static(cat));
    }
    resp
}

/// A failed read of the conversations as an OpenAI-style error; internals are logged, not
/// echoed.
fn read_error(e: crate::Error) -> Response {
    match e {
        crate::Error::NotFound(m) => error(StatusCode::NOT_FOUND, "not_found_error", m),
        crate::Error::BadRequest(m) => error(StatusCode::BAD_REQUEST, "invalid_request_error", m),
        other => {
            tracing::error!(error = %other, "reading the conversations failed");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                "the conversations could not be read",
            )
        }
    }
}

fn bad_query(rejection: axum::extract::rejection::QueryRejection) -> Response {
    error(
        StatusCode::BAD_REQUEST,
        "invalid_request_error",
        rejection.body_text(),
    )
}

async fn sessions(
    State(state): State<AppState>,
    q: Result<Query<SessionsQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Query(q) = match q {
        Ok(q) => q,
        Err(r) => return bad_query(r),
    };
    let dir = std::path::Path::new(&state.agent.config.data_dir);
    match crate::conversations::list(dir, &q).await {
        Ok(list) => Json::<SessionList>(list).into_response(),
        Err(e) => read_error(e),
    }
}

async fn messages(
    State(state): State<AppState>,
    q: Result<Query<MessagesQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Query(q) = match q {
        Ok(q) => q,
        Err(r) => return bad_query(r),
    };
    if q.key.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "missing `key` (the session key)",
        );
    }
    let dir = std::path::Path::new(&state.agent.config.data_dir);
    match crate::conversations::messages(dir, &q).await {
        Ok(page) => Json::<MessagePage>(page).into_response(),
        Err(e) => read_error(e),
    }
}

async fn export(State(state): State<AppState>) -> Response {
    let dir = std::path::Path::new(&state.agent.config.data_dir);
    match crate::conversations::export(dir).await {
        Ok(all) => Json::<ConversationExport>(all).into_response(),
        Err(e) => read_error(e),
    }
}

fn failed_outcome() -> Outcome {
    Outcome {
        reply: crate::Error::Config(String::new()).user_message(),
        usage: Default::default(),
        finish_reason: "stop".into(),
        error: Some("internal"),
        model_time: Default::default(),
    }
}

fn stream_events(id: &str, created: i64, model: &str, o: Outcome) -> Vec<Event> {
    let chunk = |delta: Delta, finish: Option<String>, usage| ChatCompletionChunk {
        id: id.to_string(),
        object: "chat.completion.chunk".into(),
        created,
        model: model.to_string(),
        choices: vec![ChunkChoice {
            index: 0,
            delta,
            finish_reason: finish,
        }],
        usage,
    };
    let to_event = |c: &ChatCompletionChunk| {
        Event::default()
            .json_data(c)
            .unwrap_or_else(|_| Event::default().data("{}"))
    };
    let mut events = vec![to_event(&chunk(
        Delta {
            role: Some(Role::Assistant),
            content: None,
        },
        None,
        None,
    ))];
    events.push(to_event(&chunk(
        Delta {
            role: None,
            content: Some(o.reply),
        },
        None,
        None,
    )));
    events.push(to_event(&chunk(
        Delta::default(),
        Some(o.finish_reason),
        Some(o.usage),
    )));
    events.push(Event::default().data("[DONE]"));
    events
}

fn completion_id() -> String {
    format!("chatcmpl-{:032x}", rand::random::<u128>())
}
