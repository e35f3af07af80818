//! Telegram: webhook updates (teloxide's types), the secret-token header, replies through the
//! Bot API behind a queue that keeps to Telegram's limits (about 30 messages a second per bot,
//! about 1 a second per chat) and honours `retry_after` on 429.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use chrono::Utc;
use serde_json::{Value, json};
use teloxide_core::types::{Update, UpdateKind};
use tokio::time::Instant;

use super::{BoxFuture, Channel, ReplyKind, SendError};
use crate::config::{Config, Secret};
use crate::error::ApiError;
use crate::inbound::Inbound;
use crate::pipeline::Core;

pub const NAME: &str = "telegram";
pub const SECRET_HEADER: &str = "x-telegram-bot-api-secret-token";
/// Telegram's limit on one message.
pub const MAX_CHARS: usize = 4096;
const MAX_SEND_ATTEMPTS: u32 = 6;

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

pub struct Telegram {
    http: reqwest::Client,
    api_base: String,
    bot_token: Secret,
    /// Checked on every webhook post; without it the webhook route is not served (long
    /// polling brings the updates instead).
    webhook_secret: Option<Secret>,
    gate: RateGate,
}

impl Telegram {
    /// Enabled when the bot token is set (updates then come by webhook or long polling:
    /// [`super::telegram_updates`]).
    pub fn from_config(config: &Config, http: &reqwest::Client) -> Option<Self> {
        let bot_token = config.telegram.bot_token.as_ref()?;
        Some(Telegram {
            http: http.clone(),
            api_base: config.telegram.api_base.trim_end_matches('/').to_string(),
            bot_token: bot_token.clone(),
            webhook_secret: config.telegram.webhook_secret.clone(),
            gate: RateGate::new(config.telegram.global_rate, config.telegram.chat_rate),
        })
    }

    fn method_url(&self, method: &str) -> String {
        format!("{}/bot{}/{method}", self.api_base, self.bot_token.expose())
    }

    async fn send_message(&self, chat_id: i64, text: &str) -> Result<(), SendError> {
        let mut backoff = Duration::from_millis(500);
        for attempt in 1..=MAX_SEND_ATTEMPTS {
            let slot = self.gate.reserve(chat_id);
            tokio::time::sleep_until(slot).await;
            let result = self
                .http
                .post(self.method_url("sendMessage"))
                .json(&json!({"chat_id": chat_id, "text": text}))
                .timeout(Duration::from_secs(30))
                .send()
                .await;
            let response = match result {
                Ok(r) => r,
                Err(e) => {
                    // Without the URL: it contains the bot token.
                    let e = e.without_url();
                    tracing::warn!(attempt, error = %e, "telegram sendMessage failed");
                    if attempt == MAX_SEND_ATTEMPTS {
                        return Err(SendError::Unreachable(e.to_string()));
                    }
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                    continue;
                }
            };
            let status = response.status();
            if status.is_success() {
                return Ok(());
            }
            if status.as_u16() == 429 {
                let body: serde_json::Value = response.json().await.unwrap_or_default();
                let retry_after = body["parameters"]["retry_after"].as_u64().unwrap_or(1);
                tracing::info!(retry_after, "telegram asked to slow down");
                self.gate.pause(chat_id, Duration::from_secs(retry_after));
                continue;
            }
            if status.is_server_error() && attempt < MAX_SEND_ATTEMPTS {
                tokio::time::sleep(backoff).await;
                backoff *= 2;
                continue;
            }
            return Err(SendError::Refused {
                status: status.as_u16(),
            });
        }
        Err(SendError::Refused { status: 429 })
    }
}

fn chat_id(to: &Inbound) -> Option<i64> {
    to.reply_to["chat_id"].as_i64()
}

impl Channel for Telegram {
    fn name(&self) -> &'static str {
        NAME
    }

    fn max_message_chars(&self) -> usize {
        MAX_CHARS
    }

    fn routes(self: Arc<Self>, core: Arc<Core>) -> axum::Router {
        if self.webhook_secret.is_none() {
            return axum::Router::new();
        }
        axum::Router::new()
            .route("/webhooks/telegram", post(webhook))
            .with_state((self, core))
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

/// The message an update carries, if it is a text message from a user; both the webhook and
/// long polling (`getUpdates`) hand their updates here, so the two paths cannot drift apart.
pub fn parse_update(body: &[u8]) -> Result<Option<Inbound>, serde_json::Error> {
    let update: Update = serde_json::from_slice(body)?;
    let UpdateKind::Message(message) = update.kind else {
        tracing::debug!(
            update_id = update.id.0,
            "ignoring a telegram update that is not a message"
        );
        return Ok(None);
    };
    let Some(text) = message.text() else {
        tracing::debug!(
            update_id = update.id.0,
            "ignoring a telegram message without text"
        );
        return Ok(None);
    };
    let Some(from) = message.from.as_ref() else {
        tracing::debug!(
            update_id = update.id.0,
            "ignoring a telegram message without sender"
        );
        return Ok(None);
    };
    let chat = message.chat.id.0;
    let conversation = if message.chat.is_private() {
        "dm"
    } else {
        "group"
    };
    Ok(Some(Inbound {
        channel: NAME.to_string(),
        external_id: update.id.0.to_string(),
        sender_id: from.id.0.to_string(),
        conversation: conversation.to_string(),
        peer: chat.to_string(),
        text: text.to_string(),
        reply_to: json!({"chat_id": chat}),
        sent_at: if message.date.timestamp() > 0 {
            message.date
        } else {
            Utc::now()
        },
        lang: from.language_code.clone(),
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

    #[test]
    fn secret_comparison_needs_the_exact_value() {
        let s = Secret::new("abc");
        assert!(secret_matches(Some(b"abc"), &s));
        assert!(!secret_matches(Some(b"abd"), &s));
        assert!(!secret_matches(Some(b"ab"), &s));
        assert!(!secret_matches(None, &s));
    }
}
