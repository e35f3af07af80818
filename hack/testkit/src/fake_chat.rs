//! Local servers speaking the chat platforms' wire formats, recording what they receive, and
//! helpers to sign requests the way the platforms do.
//!
//! - [`FakeTelegram`]: the Bot API (`/bot<token>/sendMessage`, `/bot<token>/sendChatAction`).
//! - [`FakeWhatsApp`]: the Graph API messages endpoint (`/<version>/<phone-number-id>/messages`).
//! - [`FakeDiscord`]: the interaction webhooks (`PATCH /webhooks/<app>/<token>/messages/@original`,
//!   `POST /webhooks/<app>/<token>`) and the bot's channel endpoints
//!   (`POST /channels/<id>/messages`, `POST /channels/<id>/typing`, `Authorization: Bot <token>`).
//!   Its Gateway is [`crate::fake_discord_gateway`].
//! - [`whatsapp_signature`], [`DiscordSigner`]: sign webhook bodies as Meta and Discord do.
//!
//! Each fake can refuse the next sends the way its platform throttles (`throttle_next`: a 429
//! with the documented body and headers) or refuses for good (`refuse_next`: a 4xx that must
//! not be retried). Refused requests are logged with a `_refused` field in their body and left
//! out of the "messages sent" views.
//!
//! Each server listens on 127.0.0.1 with an ephemeral port and stops when dropped.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{patch, post};
use ed25519_dalek::{Signer, SigningKey};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::sync::Notify;

/// One request a fake platform received.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// Request path, for example `/botTOKEN/sendMessage`.
    pub path: String,
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
    /// The JSON body.
    pub body: Value,
    /// When it arrived.
    pub at: Instant,
}

/// What the servers have in common: a log of requests and a way to wait on it.
#[derive(Default)]
struct Log {
    requests: Mutex<Vec<Recorded>>,
    changed: Notify,
}

impl Log {
    fn push(&self, path: String, headers: &HeaderMap, body: Value) {
        let authorization = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        self.requests.lock().expect("log lock").push(Recorded {
            path,
            authorization,
            body,
            at: Instant::now(),
        });
        self.changed.notify_waiters();
    }

    fn all(&self) -> Vec<Recorded> {
        self.requests.lock().expect("log lock").clone()
    }

    /// Waits until `pick` finds something in the log (no fixed sleeps: woken on each request).
    async fn wait<T>(
        &self,
        what: &str,
        timeout: Duration,
        pick: impl Fn(&[Recorded]) -> Option<T>,
    ) -> T {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.changed.notified();
            if let Some(v) = pick(&self.requests.lock().expect("log lock")) {
                return v;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let seen: Vec<_> = self.all().into_iter().map(|r| (r.path, r.body)).collect();
                panic!("timed out after {timeout:?} waiting for {what}; seen: {seen:#?}");
            }
        }
    }
}

/// The next `n` requests get a refusal (`T` says which), then requests are accepted again.
struct Upcoming<T> {
    left: Mutex<(u32, Option<T>)>,
}

impl<T: Clone> Default for Upcoming<T> {
    fn default() -> Self {
        Upcoming {
            left: Mutex::new((0, None)),
        }
    }
}

impl<T: Clone> Upcoming<T> {
    fn set(&self, n: u32, what: T) {
        *self.left.lock().expect("lock") = (n, Some(what));
    }

    /// The refusal for this request, if one is due.
    fn take(&self) -> Option<T> {
        let mut left = self.left.lock().expect("lock");
        if left.0 == 0 {
            return None;
        }
        left.0 -= 1;
        left.1.clone()
    }
}

/// A server task that is aborted when its owner is dropped.
pub(crate) struct Served {
    pub(crate) base_url: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Served {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub(crate) async fn serve(router: axum::Router) -> Served {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind fake server");
    let addr = listener.local_addr().expect("local addr");
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Served {
        base_url: format!("http://{addr}"),
        task,
    }
}

// ---------------------------------------------------------------------------------------------
// Telegram

struct TelegramState {
    token: String,
    log: Log,
    /// Upcoming sendMessage calls to refuse with 429, with the retry_after to send.
    throttle: Upcoming<u64>,
    /// Upcoming sendMessage calls to refuse with 403 (the user blocked the bot).
    refuse: Upcoming<()>,
    next_message_id: Mutex<i64>,
    /// Updates waiting for `getUpdates` (a webhook, once set, makes `getUpdates` fail with
    /// 409 as the Bot API does).
    updates: Mutex<Vec<Value>>,
    updates_added: Notify,
    webhook: Mutex<Option<Value>>,
}

/// The Telegram Bot API, as far as a bot that answers messages uses it.
pub struct FakeTelegram {
    state: Arc<TelegramState>,
    served: Served,
}

/// A message the bot sent.
#[derive(Clone, Debug, PartialEq)]
pub struct TelegramSent {
    pub chat_id: i64,
    pub text: String,
}

impl FakeTelegram {
    /// Starts a Bot API server that accepts only `token`.
    pub async fn start(token: &str) -> Self {
        let state = Arc::new(TelegramState {
            token: token.to_string(),
            log: Log::default(),
            throttle: Upcoming::default(),
            refuse: Upcoming::default(),
            next_message_id: Mutex::new(1),
            updates: Mutex::new(Vec::new()),
            updates_added: Notify::new(),
            webhook: Mutex::new(None),
        });
        let router = axum::Router::new()
            .route("/{bot}/{method}", post(telegram_method))
            .with_state(state.clone());
        FakeTelegram {
            state,
            served: serve(router).await,
        }
    }

    /// Base URL to configure as the Bot API base (the bot token path is appended).
    pub fn base_url(&self) -> &str {
        &self.served.base_url
    }

    /// Makes the next `count` sendMessage calls fail with 429 and `retry_after` seconds.
    pub fn throttle_next(&self, count: u32, retry_after_secs: u64) {
        self.state.throttle.set(count, retry_after_secs);
    }

    /// Makes the next `count` sendMessage calls fail for good: 403, the bot was blocked.
    pub fn refuse_next(&self, count: u32) {
        self.state.refuse.set(count, ());
    }

    /// Every request received (including refused ones and chat actions).
    pub fn requests(&self) -> Vec<Recorded> {
        self.state.log.all()
    }

    /// Queues an update for the bot's `getUpdates` (what Telegram does when no webhook is set).
    pub fn push_update(&self, update: Value) {
        self.state.updates.lock().expect("lock").push(update);
        self.state.updates_added.notify_waiters();
    }

    /// Updates queued and not yet confirmed by a `getUpdates` with a higher offset.
    pub fn pending_updates(&self) -> usize {
        self.state.updates.lock().expect("lock").len()
    }

    /// The webhook set with `setWebhook` (its parameters as sent), if any.
    pub fn webhook(&self) -> Option<Value> {
        self.state.webhook.lock().expect("lock").clone()
    }

    /// Waits until the bot has set a webhook, and returns its parameters.
    pub async fn wait_for_webhook(&self, timeout: Duration) -> Value {
        self.state
            .log
            .wait("a setWebhook call", timeout, |log| {
                log.iter()
                    .rev()
                    .find(|r| r.path.ends_with("/setWebhook") && r.body.get("_refused").is_none())
                    .map(|r| r.body.clone())
            })
            .await
    }

    /// Messages accepted for `chat_id`, in order.
    pub fn sent_to(&self, chat_id: i64) -> Vec<TelegramSent> {
        sent_messages(&self.state.log.all(), chat_id, true)
    }

    /// Waits until at least `n` messages were accepted for `chat_id`, and returns them all.
    pub async fn wait_for_messages(
        &self,
        chat_id: i64,
        n: usize,
        timeout: Duration,
    ) -> Vec<TelegramSent> {
        self.state
            .log
            .wait(
                &format!("{n} telegram messages to chat {chat_id}"),
                timeout,
                |log| {
                    let sent = sent_messages(log, chat_id, true);
                    (sent.len() >= n).then_some(sent)
                },
            )
            .await
    }

    /// Waits until a chat action (`typing`) was sent to `chat_id`.
    pub async fn wait_for_chat_action(&self, chat_id: i64, timeout: Duration) -> String {
        self.state
            .log
            .wait(
                &format!("a chat action to chat {chat_id}"),
                timeout,
                |log| {
                    log.iter().find_map(|r| {
                        (r.path.ends_with("/sendChatAction")
                            && r.body["chat_id"].as_i64() == Some(chat_id))
                        .then(|| r.body["action"].as_str().unwrap_or_default().to_string())
                    })
                },
            )
            .await
    }
}

fn sent_messages(log: &[Recorded], chat_id: i64, accepted_only: bool) -> Vec<TelegramSent> {
    log.iter()
        .filter(|r| r.path.ends_with("/sendMessage") && r.body["chat_id"].as_i64() == Some(chat_id))
        .filter(|r| !accepted_only || r.body.get("_refused").is_none())
        .map(|r| TelegramSent {
            chat_id,
            text: r.body["text"].as_str().unwrap_or_default().to_string(),
        })
        .collect()
}

async fn telegram_method(
    State(state): State<Arc<TelegramState>>,
    Path((bot, method)): Path<(String, String)>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let path = format!("/{bot}/{method}");
    if bot.strip_prefix("bot") != Some(state.token.as_str()) {
        state
            .log
            .push(path, &headers, json!({"_refused": "bad token"}));
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"ok": false, "error_code": 401, "description": "Unauthorized"})),
        )
            .into_response();
    }
    let mut body: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"ok": false, "error_code": 400, "description": e.to_string()})),
            )
                .into_response();
        }
    };
    match method.as_str() {
        "sendMessage" => {
            let text = body["text"].as_str().unwrap_or_default();
            if body["chat_id"].as_i64().is_none() || text.is_empty() || text.chars().count() > 4096
            {
                let description =
                    "Bad Request: message text is empty or too long, or chat_id is missing";
                body["_refused"] = json!(description);
                state.log.push(path, &headers, body);
                return (
                    StatusCode::BAD_REQUEST,
                    Json(json!({"ok": false, "error_code": 400, "description": description})),
                )
                    .into_response();
            }
            if state.refuse.take().is_some() {
                let description = "Forbidden: bot was blocked by the user";
                body["_refused"] = json!("403");
                state.log.push(path, &headers, body);
                return telegram_error(StatusCode::FORBIDDEN, description);
            }
            if let Some(retry_after) = state.throttle.take() {
                body["_refused"] = json!("429");
                state.log.push(path, &headers, body);
                return (
                    StatusCode::TOO_MANY_REQUESTS,
                    Json(json!({"ok": false, "error_code": 429,
                        "description": format!("Too Many Requests: retry after {retry_after}"),
                        "parameters": {"retry_after": retry_after}})),
                )
                    .into_response();
            }
            let message_id = {
                let mut id = state.next_message_id.lock().expect("lock");
                *id += 1;
                *id
            };
            let chat_id = body["chat_id"].clone();
            let text = body["text"].clone();
            state.log.push(path, &headers, body);
            Json(json!({"ok": true, "result": {
                "message_id": message_id, "date": 0,
                "chat": {"id": chat_id, "type": "private"}, "text": text}}))
            .into_response()
        }
        "sendChatAction" => {
            state.log.push(path, &headers, body);
            Json(json!({"ok": true, "result": true})).into_response()
        }
        "setWebhook" => {
            let url = body["url"].as_str().unwrap_or_default();
            if !url.starts_with("https://") {
                let description =
                    "Bad Request: bad webhook: An HTTPS URL must be provided for webhook";
                body["_refused"] = json!(description);
                state.log.push(path, &headers, body);
                return telegram_error(StatusCode::BAD_REQUEST, description);
            }
            *state.webhook.lock().expect("lock") = Some(body.clone());
            state.log.push(path, &headers, body);
            Json(json!({"ok": true, "result": true, "description": "Webhook was set"}))
                .into_response()
        }
        "deleteWebhook" => {
            *state.webhook.lock().expect("lock") = None;
            if body["drop_pending_updates"].as_bool() == Some(true) {
                state.updates.lock().expect("lock").clear();
            }
            state.log.push(path, &headers, body);
            Json(json!({"ok": true, "result": true, "description": "Webhook was deleted"}))
                .into_response()
        }
        "getUpdates" => get_updates(&state, path, &headers, body).await,
        other => {
            state.log.push(path, &headers, body);
            (StatusCode::NOT_FOUND, Json(json!({"ok": false, "error_code": 404, "description": format!("Not Found: method {other}")})))
                .into_response()
        }
    }
}

fn telegram_error(status: StatusCode, description: &str) -> Response {
    (
        status,
        Json(json!({"ok": false, "error_code": status.as_u16(), "description": description})),
    )
        .into_response()
}

/// `getUpdates` as the Bot API documents it: an `offset` confirms (drops) every update below
/// it; the call waits up to `timeout` seconds for an update; refused with 409 while a webhook
/// is set.
async fn get_updates(
    state: &TelegramState,
    path: String,
    headers: &HeaderMap,
    mut body: Value,
) -> Response {
    if state.webhook.lock().expect("lock").is_some() {
        let description = "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to delete the webhook first";
        body["_refused"] = json!(description);
        state.log.push(path, headers, body);
        return telegram_error(StatusCode::CONFLICT, description);
    }
    let offset = body["offset"].as_i64().unwrap_or(0);
    let limit = body["limit"].as_u64().unwrap_or(100).clamp(1, 100) as usize;
    let deadline =
        tokio::time::Instant::now() + Duration::from_secs(body["timeout"].as_u64().unwrap_or(0));
    state.log.push(path, headers, body);
    loop {
        let added = state.updates_added.notified();
        let batch: Vec<Value> = {
            let mut queued = state.updates.lock().expect("lock");
            queued.retain(|u| u["update_id"].as_i64().unwrap_or(0) >= offset);
            queued.iter().take(limit).cloned().collect()
        };
        if !batch.is_empty() || tokio::time::timeout_at(deadline, added).await.is_err() {
            return Json(json!({"ok": true, "result": batch})).into_response();
        }
    }
}

/// A Telegram `Update` carrying a private text message, as the Bot API posts it to a webhook.
pub fn telegram_text_update(update_id: i64, chat_id: i64, text: &str) -> Value {
    json!({
        "update_id": update_id,
        "message": {
            "message_id": update_id,
            "date": 1_764_000_000,
            "chat": {"id": chat_id, "type": "private", "first_name": "Test"},
            "from": {"id": chat_id, "is_bot": false, "first_name": "Test"},
            "text": text
        }
    })
}

// ---------------------------------------------------------------------------------------------
// WhatsApp

struct WhatsAppState {
    access_token: String,
    log: Log,
    /// Upcoming messages to refuse as throttled: the HTTP status and the Graph API error code.
    throttle: Upcoming<(StatusCode, u32)>,
    /// Upcoming messages to refuse for good (400, code 131026: undeliverable).
    refuse: Upcoming<()>,
}

/// The WhatsApp Cloud API messages endpoint of the Graph API.
pub struct FakeWhatsApp {
    state: Arc<WhatsAppState>,
    served: Served,
}

impl FakeWhatsApp {
    /// Starts a Graph API server that accepts only `Bearer <access_token>`.
    pub async fn start(access_token: &str) -> Self {
        let state = Arc::new(WhatsAppState {
            access_token: access_token.to_string(),
            log: Log::default(),
            throttle: Upcoming::default(),
            refuse: Upcoming::default(),
        });
        let router = axum::Router::new()
            .route(
                "/{version}/{phone_number_id}/messages",
                post(whatsapp_messages),
            )
            .with_state(state.clone());
        FakeWhatsApp {
            state,
            served: serve(router).await,
        }
    }

    /// Base URL, to which the router appends `/<version>/<phone-number-id>/messages`.
    pub fn base_url(&self) -> &str {
        &self.served.base_url
    }

    /// Every request body received with a valid token (refused ones carry `_refused`).
    pub fn requests(&self) -> Vec<Recorded> {
        self.state.log.all()
    }

    /// Makes the next `count` messages fail as Meta throttles them: HTTP `status` (429, or 400
    /// as Meta often answers) with Graph API error `code` (4, 80007, 130429, 131056), which
    /// carries no wait. Read receipts and typing indicators are not refused.
    pub fn throttle_next(&self, count: u32, status: u16, code: u32) {
        let status = StatusCode::from_u16(status).expect("an HTTP status");
        self.state.throttle.set(count, (status, code));
    }

    /// Makes the next `count` messages fail for good: 400, error 131026 (undeliverable).
    pub fn refuse_next(&self, count: u32) {
        self.state.refuse.set(count, ());
    }

    /// Waits until `n` messages (text or template, not read receipts) were sent to `to`.
    pub async fn wait_for_messages(&self, to: &str, n: usize, timeout: Duration) -> Vec<Value> {
        self.state
            .log
            .wait(&format!("{n} whatsapp messages to {to}"), timeout, |log| {
                let sent: Vec<Value> = log
                    .iter()
                    .filter(|r| r.body["to"].as_str() == Some(to) && r.body.get("type").is_some())
                    .filter(|r| r.body.get("_refused").is_none())
                    .map(|r| r.body.clone())
                    .collect();
                (sent.len() >= n).then_some(sent)
            })
            .await
    }
}

async fn whatsapp_messages(
    State(state): State<Arc<WhatsAppState>>,
    Path((version, phone_number_id)): Path<(String, String)>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let expected = format!("Bearer {}", state.access_token);
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
        return (StatusCode::UNAUTHORIZED, Json(json!({"error": {"message": "Invalid OAuth access token.", "type": "OAuthException", "code": 190}})))
            .into_response();
    }
    if body["messaging_product"] != "whatsapp" {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": {"message": "messaging_product must be whatsapp", "code": 100}})),
        )
            .into_response();
    }
    let path = format!("/{version}/{phone_number_id}/messages");
    if body.get("type").is_some() {
        if let Some((status, code)) = state.throttle.take() {
            let message = match code {
                131056 => "(#131056) (Business Account, Consumer Account) pair rate limit hit",
                130429 => "(#130429) Rate limit hit",
                80007 => "(#80007) Rate limit issues",
                4 => "(#4) Application request limit reached",
                _ => "Rate limit hit",
            };
            return whatsapp_refusal(&state, path, &headers, body, status, code, message);
        }
        if state.refuse.take().is_some() {
            let message = "(#131026) Message undeliverable";
            return whatsapp_refusal(
                &state,
                path,
                &headers,
                body,
                StatusCode::BAD_REQUEST,
                131026,
                message,
            );
        }
    }
    let to = body["to"].as_str().unwrap_or_default().to_string();
    state.log.push(path, &headers, body);
    Json(json!({
        "messaging_product": "whatsapp",
        "contacts": [{"input": to, "wa_id": to}],
        "messages": [{"id": format!("wamid.{:016x}", rand::random::<u64>())}]
    }))
    .into_response()
}

/// A Graph API error answer, logged as refused.
fn whatsapp_refusal(
    state: &WhatsAppState,
    path: String,
    headers: &HeaderMap,
    mut body: Value,
    status: StatusCode,
    code: u32,
    message: &str,
) -> Response {
    body["_refused"] = json!(code);
    state.log.push(path, headers, body);
    (
        status,
        Json(
            json!({"error": {"message": message, "type": "OAuthException", "code": code,
                              "error_data": {"messaging_product": "whatsapp", "details": message},
                              "fbtrace_id": "AbCdEf123"}}),
        ),
    )
        .into_response()
}

/// The `X-Hub-Signature-256` header value Meta sends with `body`: `sha256=<hex HMAC>`.
pub fn whatsapp_signature(app_secret: &str, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(app_secret.as_bytes()).expect("hmac takes any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// A WhatsApp Cloud API webhook body carrying one text message.
pub fn whatsapp_text_webhook(
    phone_number_id: &str,
    from: &str,
    message_id: &str,
    timestamp: i64,
    text: &str,
) -> Value {
    json!({
        "object": "whatsapp_business_account",
        "entry": [{
            "id": "102290129340398",
            "changes": [{
                "field": "messages",
                "value": {
                    "messaging_product": "whatsapp",
                    "metadata": {"display_phone_number": "15550783881", "phone_number_id": phone_number_id},
                    "contacts": [{"profile": {"name": "Test"}, "wa_id": from}],
                    "messages": [{
                        "from": from, "id": message_id, "timestamp": timestamp.to_string(),
                        "type": "text", "text": {"body": text}
                    }]
                }
            }]
        }]
    })
}

// ---------------------------------------------------------------------------------------------
// Discord

struct DiscordState {
    bot_token: String,
    log: Log,
    /// Upcoming messages to refuse with 429 and this `retry_after` (seconds).
    throttle: Upcoming<f64>,
    /// Upcoming messages to refuse for good (403, code 50007).
    refuse: Upcoming<()>,
}

/// Discord's REST API as the bot uses it: interaction webhooks (responses to deferred
/// interactions) and messages to DM channels.
pub struct FakeDiscord {
    state: Arc<DiscordState>,
    served: Served,
}

impl FakeDiscord {
    /// Starts the API; the channel endpoints accept only `Authorization: Bot <bot_token>`.
    pub async fn start(bot_token: &str) -> Self {
        let state = Arc::new(DiscordState {
            bot_token: bot_token.to_string(),
            log: Log::default(),
            throttle: Upcoming::default(),
            refuse: Upcoming::default(),
        });
        let router = axum::Router::new()
            .route(
                "/webhooks/{app}/{token}/messages/@original",
                patch(discord_webhook_edit),
            )
            .route("/webhooks/{app}/{token}", post(discord_webhook_post))
            .route(
                "/channels/{channel}/messages",
                post(discord_channel_message),
            )
            .route("/channels/{channel}/typing", post(discord_channel_typing))
            .route("/users/@me/channels", post(discord_open_dm))
            .with_state(state.clone());
        FakeDiscord {
            state,
            served: serve(router).await,
        }
    }

    /// Base URL standing for `https://discord.com/api/v10`.
    pub fn base_url(&self) -> &str {
        &self.served.base_url
    }

    /// Every request received with a valid token (refused ones carry `_refused`).
    pub fn requests(&self) -> Vec<Recorded> {
        self.state.log.all()
    }

    /// Makes the next `count` messages (channel messages and interaction responses) fail as
    /// Discord throttles: 429, `{"retry_after": <secs>, "global": false}`, `Retry-After` and
    /// the `X-RateLimit-*` headers.
    pub fn throttle_next(&self, count: u32, retry_after_secs: f64) {
        self.state.throttle.set(count, retry_after_secs);
    }

    /// Makes the next `count` messages fail for good: 403, code 50007 (cannot send messages
    /// to this user).
    pub fn refuse_next(&self, count: u32) {
        self.state.refuse.set(count, ());
    }

    /// Waits until `n` follow-up contents were posted for the interaction `token`
    /// (the edit of the original response first, then any further follow-ups).
    pub async fn wait_for_followups(
        &self,
        token: &str,
        n: usize,
        timeout: Duration,
    ) -> Vec<String> {
        let needle = format!("/{token}");
        self.state
            .log
            .wait(
                &format!("{n} discord follow-ups for {token}"),
                timeout,
                |log| {
                    let sent: Vec<String> = log
                        .iter()
                        .filter(|r| r.path.contains(&needle) && r.body.get("_refused").is_none())
                        .map(|r| r.body["content"].as_str().unwrap_or_default().to_string())
                        .collect();
                    (sent.len() >= n).then_some(sent)
                },
            )
            .await
    }

    /// Messages the bot posted to `channel_id`, in order.
    pub fn channel_messages(&self, channel_id: &str) -> Vec<String> {
        discord_channel_contents(&self.state.log.all(), channel_id)
    }

    /// Waits until at least `n` messages were posted to `channel_id`, and returns them all.
    pub async fn wait_for_channel_messages(
        &self,
        channel_id: &str,
        n: usize,
        timeout: Duration,
    ) -> Vec<String> {
        self.state
            .log
            .wait(
                &format!("{n} discord messages to channel {channel_id}"),
                timeout,
                |log| {
                    let sent = discord_channel_contents(log, channel_id);
                    (sent.len() >= n).then_some(sent)
                },
            )
            .await
    }
}

/// The DM channel the fake opens with `user` (one per user, as Discord's is).
pub fn discord_dm_channel(user: &str) -> String {
    let n: u64 = user.parse().unwrap_or(0);
    (1_190_000_000_000_000_000 + n % 1_000_000_000_000_000).to_string()
}

/// `POST /users/@me/channels` (Create DM): the DM channel object with the recipient.
async fn discord_open_dm(
    State(state): State<Arc<DiscordState>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if !discord_bot_authorized(&state, &headers) {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"code": 0, "message": "401: Unauthorized"})),
        )
            .into_response();
    }
    let Some(user) = body["recipient_id"].as_str().map(str::to_string) else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"code": 50035, "message": "Invalid Form Body"})),
        )
            .into_response();
    };
    state.log.push("/users/@me/channels".into(), &headers, body);
    Json(
        json!({"id": discord_dm_channel(&user), "type": 1, "last_message_id": null,
                "flags": 0, "recipients": [{"id": user, "username": "user", "discriminator": "0",
                                            "global_name": null, "avatar": null}]}),
    )
    .into_response()
}

fn discord_channel_contents(log: &[Recorded], channel_id: &str) -> Vec<String> {
    let path = format!("/channels/{channel_id}/messages");
    log.iter()
        .filter(|r| r.path == path && r.body.get("_refused").is_none())
        .map(|r| r.body["content"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn discord_bot_authorized(state: &DiscordState, headers: &HeaderMap) -> bool {
    let expected = format!("Bot {}", state.bot_token);
    !state.bot_token.is_empty()
        && headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(expected.as_str())
}

async fn discord_channel_message(
    State(state): State<Arc<DiscordState>>,
    Path(channel): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if !discord_bot_authorized(&state, &headers) {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"code": 0, "message": "401: Unauthorized"})),
        )
            .into_response();
    }
    discord_record(
        &state,
        format!("/channels/{channel}/messages"),
        &headers,
        body,
    )
}

async fn discord_channel_typing(
    State(state): State<Arc<DiscordState>>,
    Path(channel): Path<String>,
    headers: HeaderMap,
) -> Response {
    if !discord_bot_authorized(&state, &headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    state
        .log
        .push(format!("/channels/{channel}/typing"), &headers, Value::Null);
    StatusCode::NO_CONTENT.into_response()
}

async fn discord_webhook_edit(
    State(state): State<Arc<DiscordState>>,
    Path((app, token)): Path<(String, String)>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    discord_record(
        &state,
        format!("/webhooks/{app}/{token}/messages/@original"),
        &headers,
        body,
    )
}

async fn discord_webhook_post(
    State(state): State<Arc<DiscordState>>,
    Path((app, token)): Path<(String, String)>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    discord_record(&state, format!("/webhooks/{app}/{token}"), &headers, body)
}

fn discord_record(
    state: &DiscordState,
    path: String,
    headers: &HeaderMap,
    mut body: Value,
) -> Response {
    let content = body["content"].as_str().unwrap_or_default();
    if content.is_empty() || content.chars().count() > 2000 {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"code": 50035, "message": "Invalid Form Body"})),
        )
            .into_response();
    }
    if let Some(retry_after) = state.throttle.take() {
        body["_refused"] = json!("429");
        state.log.push(path, headers, body);
        let reset = format!("{retry_after:.3}");
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [
                ("retry-after", format!("{}", retry_after.ceil() as u64)),
                ("x-ratelimit-limit", "5".to_string()),
                ("x-ratelimit-remaining", "0".to_string()),
                ("x-ratelimit-reset-after", reset),
                ("x-ratelimit-bucket", "fake-bucket".to_string()),
                ("x-ratelimit-scope", "user".to_string()),
            ],
            Json(
                json!({"message": "You are being rate limited.", "retry_after": retry_after,
                        "global": false}),
            ),
        )
            .into_response();
    }
    if state.refuse.take().is_some() {
        body["_refused"] = json!("403");
        state.log.push(path, headers, body);
        return (
            StatusCode::FORBIDDEN,
            Json(json!({"code": 50007, "message": "Cannot send messages to this user"})),
        )
            .into_response();
    }
    let content = content.to_string();
    state.log.push(path, headers, body);
    Json(json!({"id": format!("{}", rand::random::<u32>()), "type": 0, "content": content}))
        .into_response()
}

/// Signs interaction requests as Discord does: Ed25519 over `timestamp + body`.
pub struct DiscordSigner {
    key: SigningKey,
}

impl Default for DiscordSigner {
    fn default() -> Self {
        Self::new()
    }
}

impl DiscordSigner {
    /// A fresh random application key pair.
    pub fn new() -> Self {
        DiscordSigner {
            key: SigningKey::from_bytes(&rand::random::<[u8; 32]>()),
        }
    }

    /// The application's public key, hex-encoded (as the Developer Portal shows it).
    pub fn public_key_hex(&self) -> String {
        hex::encode(self.key.verifying_key().to_bytes())
    }

    /// The `X-Signature-Ed25519` and `X-Signature-Timestamp` header values for `body`.
    pub fn sign(&self, timestamp: &str, body: &[u8]) -> (String, String) {
        let mut message = timestamp.as_bytes().to_vec();
        message.extend_from_slice(body);
        (
            hex::encode(self.key.sign(&message).to_bytes()),
            timestamp.to_string(),
        )
    }
}

/// An `APPLICATION_COMMAND` interaction for `/ask question:<text>` from a user in a guild.
pub fn discord_ask_interaction(
    interaction_id: &str,
    application_id: &str,
    token: &str,
    user_id: &str,
    text: &str,
) -> Value {
    json!({
        "id": interaction_id,
        "application_id": application_id,
        "type": 2,
        "token": token,
        "version": 1,
        "guild_id": "900000000000000001",
        "channel_id": "900000000000000002",
        "member": {"user": {"id": user_id, "username": "tester"}},
        "data": {"id": "1", "name": "ask", "type": 1,
                 "options": [{"name": "question", "type": 3, "value": text}]}
    })
}
