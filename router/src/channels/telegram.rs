//! Telegram: webhook updates (read into a narrow struct of the fields used), the secret-token
//! header, replies through the Bot API behind a queue that keeps to Telegram's limits (about 30
//! messages a second per bot, about 1 a second per chat) and honours `retry_after` on 429
//! (through [`super::retry`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::Routes;
use super::retry::{Pacer, Platform, Policy};
use crate::config::{Config, Secret};
use crate::error::ApiError;
use crate::inbound::Inbound;
use crate::outbound::{BoxFuture, Channel, ReplyKind, SendError};
use crate::pipeline::Core;

pub const NAME: &str = "telegram";
pub const SECRET_HEADER: &str = "x-telegram-bot-api-secret-token";
/// Telegram's limit on one message.
pub const MAX_CHARS: usize = 4096;

/// Spaces out sends: at least `1/global_rate` between any two sends of the bot, at least
/// `1/chat_rate` between two sends to one chat. A send waiting for its chat does not hold up
/// other chats: global slots are reserved where they are free. Reservations are taken in call
/// order per chat, so the parts of a long reply keep their order.
struct RateGate {
    global_interval: Duration,
    chat_interval: Duration,
    state: Mutex<GateState>,
}

struct GateState {
    /// Reserved send times of the bot (past ones pruned).
    global: std::collections::BTreeSet<Instant>,
    chats: HashMap<i64, Instant>,
}

impl RateGate {
    fn new(global_rate: f64, chat_rate: f64) -> Self {
        let interval = |rate: f64| {
            if rate > 0.0 {
                Duration::from_secs_f64(1.0 / rate)
            } else {
                Duration::ZERO
            }
        };
        RateGate {
            global_interval: interval(global_rate),
            chat_interval: interval(chat_rate),
            state: Mutex::new(GateState {
                global: Default::default(),
                chats: HashMap::new(),
            }),
        }
    }

    /// The time at which the caller may send to `chat`.
    fn reserve(&self, chat: i64) -> Instant {
        let now = Instant::now();
        let gi = self.global_interval;
        let mut s = self.state.lock().expect("gate lock");
        let mut slot = now.max(s.chats.get(&chat).copied().unwrap_or(now));
        if !gi.is_zero() {
            let horizon = now.checked_sub(gi).unwrap_or(now);
            while s.global.first().is_some_and(|t| *t < horizon) {
                s.global.pop_first();
            }
            let from = slot.checked_sub(gi).unwrap_or(slot);
            for &taken in s.global.range(from..) {
                if taken >= slot + gi {
                    break;
                }
                if taken + gi > slot {
                    slot = taken + gi;
                }
            }
            s.global.insert(slot);
        }
        s.chats.insert(chat, slot + self.chat_interval);
        if s.chats.len() > 50_000 {
            s.chats.retain(|_, next| *next > now);
        }
        slot
    }

    /// Telegram said "retry after": nothing more to this chat before then.
    fn pause(&self, chat: i64, for_: Duration) {
        let until = Instant::now() + for_;
        let mut s = self.state.lock().expect("gate lock");
        let next = s.chats.entry(chat).or_insert(until);
        *next = (*next).max(until);
    }
}

/// Sends wait for their slot in the gate; a 429's `retry_after` pauses the chat.
impl Pacer for RateGate {
    type Key = i64;

    fn slot(&self, chat: &i64) -> Instant {
        self.reserve(*chat)
    }

    fn pause(&self, chat: &i64, wait: Duration) {
        RateGate::pause(self, *chat, wait)
    }
}

pub struct Telegram {
    http: reqwest::Client,
    api_base: String,
    bot_token: Secret,
    /// Checked on every webhook post; without it the webhook route is not served (long
    /// polling brings the updates instead).
    webhook_secret: Option<Secret>,
    gate: RateGate,
    /// `sendMessage`'s URL, parsed once (None if `api_base` makes no URL: each send then
    /// fails on it as before).
    send_message_url: Option<reqwest::Url>,
}

/// `sendMessage`'s body: the two fields sent, without building a JSON map per reply.
#[derive(serde::Serialize)]
struct SendMessage<'a> {
    chat_id: i64,
    text: &'a str,
}

impl Telegram {
    /// Enabled when the bot token is set (updates then come by webhook or long polling:
    /// [`super::telegram_updates`]).
    pub fn from_config(config: &Config, http: &reqwest::Client) -> Option<Self> {
        let bot_token = config.telegram.bot_token.as_ref()?;
        let mut telegram = Telegram {
            http: http.clone(),
            api_base: config.telegram.api_base.trim_end_matches('/').to_string(),
            bot_token: bot_token.clone(),
            webhook_secret: config.telegram.webhook_secret.clone(),
            gate: RateGate::new(config.telegram.global_rate, config.telegram.chat_rate),
            send_message_url: None,
        };
        telegram.send_message_url = reqwest::Url::parse(&telegram.method_url("sendMessage")).ok();
        Some(telegram)
    }

    fn method_url(&self, method: &str) -> String {
        format!("{}/bot{}/{method}", self.api_base, self.bot_token.expose())
    }

    async fn send_message(&self, chat_id: i64, text: &str) -> Result<(), SendError> {
        let body = SendMessage { chat_id, text };
        Platform::Telegram
            .send(&Policy::REPLY, &self.gate, &chat_id, || {
                let request = match &self.send_message_url {
                    Some(url) => self.http.post(url.clone()),
                    None => self.http.post(self.method_url("sendMessage")),
                };
                request.json(&body).timeout(Duration::from_secs(30))
            })
            .await
            .map(drop)
    }
}

fn chat_id(to: &Inbound) -> Option<i64> {
    to.reply_to["chat_id"].as_i64()
}

impl Routes for Telegram {
    fn routes(self: Arc<Self>, core: Arc<Core>) -> axum::Router {
        if self.webhook_secret.is_none() {
            return axum::Router::new();
        }
        axum::Router::new()
            .route("/webhooks/telegram", post(webhook))
            .with_state((self, core))
    }
}

impl Channel for Telegram {
    fn name(&self) -> &'static str {
        NAME
    }

    fn max_message_chars(&self) -> usize {
        MAX_CHARS
    }

    fn send<'a>(
        &'a self,
        to: &'a Inbound,
        text: &'a str,
        _kind: ReplyKind,
    ) -> BoxFuture<'a, Result<(), SendError>> {
        Box::pin(async move {
            let chat = chat_id(to).ok_or(SendError::Gone)?;
            self.send_message(chat, text).await
        })
    }

    /// A user's private chat with the bot has the user's id (they wrote to the bot to connect,
    /// so the bot may write back).
    fn address(&self, sender: &str) -> Option<Value> {
        sender.parse::<i64>().ok().map(|id| json!({"chat_id": id}))
    }

    fn typing<'a>(&'a self, to: &'a Inbound) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let Some(chat) = chat_id(to) else { return };
            let r = self
                .http
                .post(self.method_url("sendChatAction"))
                .json(&json!({"chat_id": chat, "action": "typing"}))
                .timeout(Duration::from_secs(10))
                .send()
                .await;
            if let Err(e) = r {
                tracing::debug!(error = %e.without_url(), "telegram sendChatAction failed");
            }
        })
    }

    fn typing_refresh(&self) -> Option<Duration> {
        // A chat action shows for 5 seconds.
        Some(Duration::from_millis(4500))
    }
}

/// The fields of a Bot API `Update` the router reads, and no others: a message's text, its
/// chat, its sender and their language. Serde skips the rest of the update unparsed (a full
/// `Update` model cost about 5% of the router's CPU). Telegram sends one optional field per
/// update beside `update_id`; every kind but `message` is ignored.
#[derive(Deserialize)]
struct Update<'a> {
    update_id: u32,
    /// Held raw: a message the router cannot read is ignored, like any update it does not
    /// handle, rather than refused (a refusal only makes Telegram send it again).
    #[serde(borrow)]
    message: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Message {
    /// Unix seconds.
    date: i64,
    chat: Chat,
    from: Option<User>,
    text: Option<String>,
}

#[derive(Deserialize)]
struct Chat {
    id: i64,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize)]
struct User {
    id: u64,
    language_code: Option<String>,
}

/// The message an update carries, if it is a text message from a user; both the webhook and
/// long polling (`getUpdates`) hand their updates here, so the two paths cannot drift apart.
/// An error means the body is not an update at all (not JSON, no numeric `update_id`).
pub fn parse_update(body: &[u8]) -> Result<Option<Inbound>, serde_json::Error> {
    let update: Update = serde_json::from_slice(body)?;
    let update_id = update.update_id;
    let Some(raw) = update.message else {
        tracing::debug!(
            update_id,
            "ignoring a telegram update that is not a message"
        );
        return Ok(None);
    };
    let message: Message = match serde_json::from_str(raw.get()) {
        Ok(m) => m,
        Err(e) => {
            tracing::debug!(update_id, error = %e, "ignoring a telegram message without the expected fields");
            return Ok(None);
        }
    };
    let Some(text) = message.text else {
        tracing::debug!(update_id, "ignoring a telegram message without text");
        return Ok(None);
    };
    let Some(from) = message.from else {
        tracing::debug!(update_id, "ignoring a telegram message without sender");
        return Ok(None);
    };
    let chat = message.chat.id;
    let conversation = if message.chat.kind == "private" {
        "dm"
    } else {
        "group"
    };
    Ok(Some(Inbound {
        channel: NAME.to_string(),
        external_id: update_id.to_string(),
        sender_id: from.id.to_string(),
        conversation: conversation.to_string(),
        peer: chat.to_string(),
        text,
        reply_to: json!({"chat_id": chat}),
        sent_at: DateTime::from_timestamp(message.date, 0)
            .filter(|d| d.timestamp() > 0)
            .unwrap_or_else(Utc::now),
        lang: from.language_code,
    }))
}

/// Constant-time comparison of a presented secret with the configured one.
pub fn secret_matches(presented: Option<&[u8]>, expected: &Secret) -> bool {
    use subtle::ConstantTimeEq;
    presented.is_some_and(|p| {
        p.len() == expected.expose().len() && bool::from(p.ct_eq(expected.expose().as_bytes()))
    })
}

async fn webhook(
    State((telegram, core)): State<(Arc<Telegram>, Arc<Core>)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let Some(expected) = &telegram.webhook_secret else {
        return Err(ApiError::Unauthorized);
    };
    if !secret_matches(headers.get(SECRET_HEADER).map(|v| v.as_bytes()), expected) {
        return Err(ApiError::Unauthorized);
    }
    let Some(inbound) = parse_update(&body).map_err(|e| {
        tracing::info!(error = %e, "malformed telegram update");
        ApiError::BadRequest("malformed Telegram update".into())
    })?
    else {
        return Ok(StatusCode::OK);
    };
    core.accept(inbound).await?;
    Ok(StatusCode::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_gate_spaces_sends_per_chat_and_globally() {
        let gate = RateGate::new(30.0, 1.0);
        let t0 = Instant::now();
        let a1 = gate.reserve(1);
        let a2 = gate.reserve(1);
        let b1 = gate.reserve(2);
        assert_eq!(a1, t0);
        assert_eq!(a2 - t0, Duration::from_secs(1), "one a second to one chat");
        assert!(
            b1 - t0 >= Duration::from_millis(33) && b1 < a2,
            "other chats only wait for the global slot"
        );
        // 30 a second in all: 40 chats at once take more than a second.
        let last = (100..140).map(|c| gate.reserve(c)).max().unwrap();
        assert!(
            last - t0 >= Duration::from_millis(40 * 33),
            "{:?}",
            last - t0
        );
        gate.pause(2, Duration::from_secs(5));
        assert!(
            gate.reserve(2) - t0 >= Duration::from_secs(5),
            "retry_after is honoured"
        );
    }

    fn parse(update: serde_json::Value) -> Option<Inbound> {
        parse_update(update.to_string().as_bytes()).expect("an update")
    }

    #[test]
    fn a_private_text_message_becomes_an_inbound() {
        // As the Bot API posts it, with fields the router does not read.
        let update = json!({
            "update_id": 881_234_567,
            "message": {
                "message_id": 4021,
                "from": {"id": 7_123_456_789_u64, "is_bot": false, "first_name": "Ann",
                         "last_name": "Lee", "username": "annlee", "language_code": "ru",
                         "is_premium": true},
                "chat": {"id": 7_123_456_789_u64, "first_name": "Ann", "last_name": "Lee",
                         "username": "annlee", "type": "private"},
                "date": 1_764_000_123,
                "text": "Hello there",
                "link_preview_options": {"is_disabled": true}
            }
        });
        let inbound = parse(update).expect("a message");
        assert_eq!(
            inbound,
            Inbound {
                channel: NAME.into(),
                external_id: "881234567".into(),
                sender_id: "7123456789".into(),
                conversation: "dm".into(),
                peer: "7123456789".into(),
                text: "Hello there".into(),
                reply_to: json!({"chat_id": 7_123_456_789_i64}),
                sent_at: DateTime::from_timestamp(1_764_000_123, 0).unwrap(),
                lang: Some("ru".into()),
            }
        );
    }

    #[test]
    fn a_start_command_keeps_its_code_and_a_group_is_a_group() {
        let start = json!({"update_id": 2, "message": {"message_id": 2, "date": 1_764_000_000,
            "from": {"id": 42, "is_bot": false, "first_name": "B"},
            "chat": {"id": 42, "type": "private", "first_name": "B"},
            "text": "/start K7P2QX", "entities": [{"offset": 0, "length": 6, "type": "bot_command"}]}});
        let inbound = parse(start).expect("a message");
        assert_eq!(inbound.text, "/start K7P2QX");
        assert_eq!(inbound.lang, None);

        let group = json!({"update_id": 3, "message": {"message_id": 9, "date": 1_764_000_000,
            "from": {"id": 42, "is_bot": false, "first_name": "B"},
            "chat": {"id": -1_001_234_567_890_i64, "title": "Team", "type": "supergroup", "is_forum": true},
            "message_thread_id": 5, "is_topic_message": true, "text": "@bot hi"}});
        let inbound = parse(group).expect("a message");
        assert_eq!(inbound.conversation, "group");
        assert_eq!(inbound.peer, "-1001234567890");
        assert_eq!(inbound.sender_id, "42");
        assert_eq!(inbound.reply_to, json!({"chat_id": -1_001_234_567_890_i64}));
    }

    #[test]
    fn other_kinds_and_messages_without_text_or_sender_are_ignored() {
        let from = json!({"id": 42, "is_bot": false, "first_name": "B"});
        let chat = json!({"id": 42, "type": "private", "first_name": "B"});
        let ignored = [
            json!({"update_id": 10, "edited_message": {"message_id": 1, "date": 1, "edit_date": 2,
                "from": from, "chat": chat, "text": "edited"}}),
            json!({"update_id": 11, "message": {"message_id": 1, "date": 1, "from": from, "chat": chat,
                "photo": [{"file_id": "f", "file_unique_id": "u", "width": 90, "height": 90}],
                "caption": "a photo"}}),
            json!({"update_id": 12, "message": {"message_id": 1, "date": 1, "from": from, "chat": chat,
                "sticker": {"file_id": "f", "file_unique_id": "u", "type": "regular", "width": 1,
                            "height": 1, "is_animated": false, "is_video": false}}}),
            json!({"update_id": 13, "callback_query": {"id": "1", "from": from,
                "chat_instance": "1", "data": "x"}}),
            json!({"update_id": 14, "channel_post": {"message_id": 1, "date": 1,
                "chat": {"id": -100_777, "title": "News", "type": "channel"},
                "sender_chat": {"id": -100_777, "title": "News", "type": "channel"}, "text": "post"}}),
            json!({"update_id": 15, "my_chat_member": {"chat": chat, "from": from, "date": 1,
                "old_chat_member": {"status": "member", "user": from},
                "new_chat_member": {"status": "kicked", "user": from, "until_date": 0}}}),
            // A kind the Bot API may add one day.
            json!({"update_id": 16, "future_kind": {"anything": [1, 2, 3]}}),
            json!({"update_id": 17}),
            // No sender (as for some service messages).
            json!({"update_id": 18, "message": {"message_id": 1, "date": 1, "chat": chat, "text": "x"}}),
            // A message the router cannot read (no chat): ignored, not refused.
            json!({"update_id": 19, "message": {"message_id": 1, "date": 1, "from": from, "text": "x"}}),
            json!({"update_id": 20, "message": "not an object"}),
        ];
        for update in ignored {
            assert_eq!(parse(update.clone()), None, "{update}");
        }
    }

    #[test]
    fn unknown_fields_are_skipped_and_a_missing_date_is_now() {
        let update = json!({"update_id": 30, "brand_new_field": {"x": 1}, "message": {
            "message_id": 1, "date": 0, "from": {"id": 5, "is_bot": false, "first_name": "C",
            "some_new_user_field": true}, "chat": {"id": 5, "type": "private"},
            "text": "hi", "quote": {"text": "q", "position": 0}}});
        let before = Utc::now();
        let inbound = parse(update).expect("a message");
        assert_eq!(inbound.text, "hi");
        assert!(
            inbound.sent_at >= before,
            "an unset date is the time of receipt"
        );
    }

    #[test]
    fn a_body_that_is_not_an_update_is_an_error() {
        for body in [
            &b"{not json"[..],
            br#"{"update_id": "x"}"#,
            br#"{"update_id": -1, "message": {}}"#,
            br#"{"message": {"message_id": 1}}"#,
            b"[]",
        ] {
            assert!(
                parse_update(body).is_err(),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn secret_comparison_needs_the_exact_value() {
        let s = Secret::new("abc");
        assert!(secret_matches(Some(b"abc"), &s));
        assert!(!secret_matches(Some(b"abd"), &s));
        assert!(!secret_matches(Some(b"ab"), &s));
        assert!(!secret_matches(None, &s));
    }
}
