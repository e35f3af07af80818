//! WhatsApp Cloud API: the GET verification handshake, `X-Hub-Signature-256` on POST, text
//! messages in, replies through the Graph API messages endpoint. A reply ready after the
//! 24-hour customer service window goes out as the approved template instead of free text.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::Sha256;

use super::Routes;
use super::retry::{Pauses, Platform, Policy};
use crate::config::{Config, Secret};
use crate::error::ApiError;
use crate::inbound::Inbound;
use crate::outbound::{BoxFuture, Channel, ReplyKind, SendError};
use crate::pipeline::Core;

pub const NAME: &str = "whatsapp";
pub const SIGNATURE_HEADER: &str = "x-hub-signature-256";
pub const MAX_CHARS: usize = 4096;
/// Free-form messages are allowed this long after the user's last message.
pub const SERVICE_WINDOW: Duration = Duration::from_secs(24 * 3600);
/// Margin so that a send started just before the window closes is not refused.
const WINDOW_MARGIN: Duration = Duration::from_secs(120);
/// Longest template body parameter WhatsApp accepts.
const TEMPLATE_PARAM_CHARS: usize = 1000;

pub struct WhatsApp {
    http: reqwest::Client,
    api_base: String,
    api_version: String,
    app_secret: Secret,
    verify_token: Option<Secret>,
    access_token: Option<Secret>,
    template: String,
    template_language: String,
    /// For messages the bot sends first.
    phone_number_id: Option<String>,
    pauses: Pauses,
}

impl WhatsApp {
    pub fn from_config(config: &Config, http: &reqwest::Client) -> Option<Self> {
        let app_secret = config.whatsapp.app_secret.clone()?;
        if config.whatsapp.access_token.is_none() {
            tracing::warn!(
                "WHATSAPP_ACCESS_TOKEN unset: WhatsApp messages are received but replies cannot be sent"
            );
        }
        Some(WhatsApp {
            http: http.clone(),
            api_base: config.whatsapp.api_base.trim_end_matches('/').to_string(),
            api_version: config.whatsapp.api_version.clone(),
            app_secret,
            verify_token: config.whatsapp.verify_token.clone(),
            access_token: config.whatsapp.access_token.clone(),
            template: config.whatsapp.reply_template.clone(),
            template_language: config.whatsapp.template_language.clone(),
            phone_number_id: config
                .whatsapp
                .phone_number_id
                .clone()
                .filter(|id| !id.trim().is_empty()),
            pauses: Pauses::default(),
        })
    }

    /// Posts to the messages endpoint of `phone_number_id`; `to` (the user's number) is the
    /// route a throttling answer pauses (the pair limit is per user).
    async fn post(
        &self,
        policy: &Policy,
        phone_number_id: &str,
        to: &str,
        body: Value,
    ) -> Result<(), SendError> {
        let token = self
            .access_token
            .as_ref()
            .ok_or(SendError::Refused { status: 401 })?;
        let url = format!(
            "{}/{}/{}/messages",
            self.api_base, self.api_version, phone_number_id
        );
        Platform::WhatsApp
            .send(policy, &self.pauses, to, || {
                self.http
                    .post(&url)
                    .bearer_auth(token.expose())
                    .json(&body)
                    .timeout(Duration::from_secs(30))
            })
            .await
            .map(drop)
    }
}

/// Whether a free-form reply to a message sent at `sent_at` is still allowed at `now`.
pub fn within_service_window(sent_at: DateTime<Utc>, now: DateTime<Utc>) -> bool {
    (now - sent_at)
        .to_std()
        .map(|age| age + WINDOW_MARGIN < SERVICE_WINDOW)
        .unwrap_or(true)
}

/// Checks `sha256=<hex>` against the HMAC-SHA256 of the raw body, in constant time.
pub fn signature_valid(app_secret: &Secret, header: Option<&[u8]>, body: &[u8]) -> bool {
    let Some(hex_sig) = header.and_then(|h| h.strip_prefix(b"sha256=")) else {
        return false;
    };
    let Ok(sig) = hex::decode(hex_sig) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(app_secret.expose().as_bytes()) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

impl Routes for WhatsApp {
    fn routes(self: Arc<Self>, core: Arc<Core>) -> axum::Router {
        axum::Router::new()
            .route("/webhooks/whatsapp", get(verify).post(webhook))
            .with_state((self, core))
    }
}

impl Channel for WhatsApp {
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
            let phone_number_id = to.reply_to["phone_number_id"]
                .as_str()
                .ok_or(SendError::Gone)?;
            let recipient = to.reply_to["to"].as_str().ok_or(SendError::Gone)?;
            // A message the bot starts answers nothing: no service window is known open.
            let first = to.reply_to["business_initiated"].as_bool() == Some(true);
            let body = if !first && within_service_window(to.sent_at, Utc::now()) {
                json!({"messaging_product": "whatsapp", "recipient_type": "individual", "to": recipient,
                       "type": "text", "text": {"preview_url": false, "body": text}})
            } else {
                // Free text would be refused (error 131047): the approved template carries the
                // start of the reply and invites the user to write again.
                tracing::info!("whatsapp service window closed; replying with the template");
                let excerpt: String = text.chars().take(TEMPLATE_PARAM_CHARS).collect();
                json!({"messaging_product": "whatsapp", "recipient_type": "individual", "to": recipient,
                       "type": "template", "template": {
                           "name": self.template, "language": {"code": self.template_language},
                           "components": [{"type": "body", "parameters": [{"type": "text", "text": excerpt}]}]}})
            };
            self.post(&Policy::REPLY, phone_number_id, recipient, body)
                .await
        })
    }

    /// The business number's id and the user's number: the send above then uses the approved
    /// template, which WhatsApp accepts outside the 24-hour service window.
    fn address(&self, sender: &str) -> Option<Value> {
        let id = self.phone_number_id.as_deref()?;
        (!sender.is_empty() && sender.bytes().all(|b| b.is_ascii_digit()))
            .then(|| json!({"phone_number_id": id, "to": sender, "business_initiated": true}))
    }

    fn typing<'a>(&'a self, to: &'a Inbound) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let (Some(phone_number_id), Some(recipient), Some(message_id)) = (
                to.reply_to["phone_number_id"].as_str(),
                to.reply_to["to"].as_str(),
                to.reply_to["message_id"].as_str(),
            ) else {
                return;
            };
            if !within_service_window(to.sent_at, Utc::now()) {
                return;
            }
            // Marks the message read and shows a typing indicator (up to 25 seconds).
            let body = json!({"messaging_product": "whatsapp", "status": "read", "message_id": message_id,
                              "typing_indicator": {"type": "text"}});
            let sent = self.post(&Policy::ONCE, phone_number_id, recipient, body);
            if let Err(e) = sent.await {
                tracing::debug!(error = %e, "whatsapp typing indicator failed");
            }
        })
    }
}

#[derive(Deserialize)]
struct VerifyQuery {
    #[serde(rename = "hub.mode")]
    mode: Option<String>,
    #[serde(rename = "hub.verify_token")]
    verify_token: Option<String>,
    #[serde(rename = "hub.challenge")]
    challenge: Option<String>,
}

async fn verify(
    State((whatsapp, _core)): State<(Arc<WhatsApp>, Arc<Core>)>,
    Query(q): Query<VerifyQuery>,
) -> Result<String, StatusCode> {
    let expected = whatsapp
        .verify_token
        .as_ref()
        .ok_or(StatusCode::FORBIDDEN)?;
    let token_ok =
        super::telegram::secret_matches(q.verify_token.as_deref().map(str::as_bytes), expected);
    match (q.mode.as_deref(), token_ok, q.challenge) {
        (Some("subscribe"), true, Some(challenge)) => Ok(challenge),
        _ => Err(StatusCode::FORBIDDEN),
    }
}

#[derive(Deserialize)]
struct Webhook {
    object: String,
    #[serde(default)]
    entry: Vec<Entry>,
}

#[derive(Deserialize)]
struct Entry {
    #[serde(default)]
    changes: Vec<Change>,
}

#[derive(Deserialize)]
struct Change {
    field: String,
    value: ChangeValue,
}

#[derive(Deserialize)]
struct ChangeValue {
    metadata: Option<Metadata>,
    #[serde(default)]
    messages: Vec<Message>,
}

#[derive(Deserialize)]
struct Metadata {
    phone_number_id: String,
}

#[derive(Deserialize)]
struct Message {
    from: String,
    id: String,
    timestamp: Option<String>,
    #[serde(rename = "type")]
    kind: String,
    text: Option<Text>,
}

#[derive(Deserialize)]
struct Text {
    body: String,
}

async fn webhook(
    State((whatsapp, core)): State<(Arc<WhatsApp>, Arc<Core>)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    if !signature_valid(
        &whatsapp.app_secret,
        headers.get(SIGNATURE_HEADER).map(|v| v.as_bytes()),
        &body,
    ) {
        return Err(ApiError::Unauthorized);
    }
    let hook: Webhook = serde_json::from_slice(&body).map_err(|e| {
        tracing::info!(error = %e, "malformed whatsapp webhook");
        ApiError::BadRequest("malformed WhatsApp webhook".into())
    })?;
    if hook.object != "whatsapp_business_account" {
        tracing::info!(object = %hook.object, "ignoring a webhook for another object");
        return Ok(StatusCode::OK);
    }
    for change in hook.entry.into_iter().flat_map(|e| e.changes) {
        if change.field != "messages" {
            continue;
        }
        let Some(metadata) = change.value.metadata else {
            continue;
        };
        // Status updates (sent, delivered, read) carry no `messages` and are ignored here.
        for m in change.value.messages {
            let Some(text) = m.text.filter(|_| m.kind == "text") else {
                tracing::debug!(kind = %m.kind, "ignoring a whatsapp message that is not text");
                continue;
            };
            let sent_at = m
                .timestamp
                .as_deref()
                .and_then(|t| t.parse::<i64>().ok())
                .and_then(|t| DateTime::from_timestamp(t, 0))
                .unwrap_or_else(Utc::now);
            let inbound = Inbound {
                channel: NAME.to_string(),
                external_id: m.id.clone(),
                sender_id: m.from.clone(),
                conversation: "dm".to_string(),
                peer: m.from.clone(),
                text: text.body,
                reply_to: json!({"phone_number_id": metadata.phone_number_id, "to": m.from, "message_id": m.id}),
                sent_at,
                lang: None,
            };
            // Every message is recorded before the webhook is acknowledged; a failure makes
            // Meta retry the whole batch, and the dedupe drops the ones already recorded.
            core.accept(inbound).await?;
        }
    }
    Ok(StatusCode::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_checked_against_the_raw_body() {
        let secret = Secret::new("app-secret");
        let body = br#"{"object":"whatsapp_business_account"}"#;
        let mut mac = Hmac::<Sha256>::new_from_slice(b"app-secret").unwrap();
        mac.update(body);
        let good = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        assert!(signature_valid(&secret, Some(good.as_bytes()), body));
        assert!(!signature_valid(&secret, Some(good.as_bytes()), b"{}"));
        assert!(!signature_valid(&secret, Some(b"sha256=zz"), body));
        assert!(
            !signature_valid(&secret, Some(&good.as_bytes()[7..]), body),
            "prefix required"
        );
        assert!(!signature_valid(&secret, None, body));
    }

    #[test]
    fn the_service_window_closes_after_24_hours() {
        let now: DateTime<Utc> = "2026-11-25T12:00:00Z".parse().unwrap();
        assert!(within_service_window(
            now - chrono::Duration::hours(23),
            now
        ));
        assert!(!within_service_window(
            now - chrono::Duration::hours(24),
            now
        ));
        assert!(
            !within_service_window(now - chrono::Duration::minutes(24 * 60 - 1), now),
            "margin"
        );
        assert!(
            within_service_window(now + chrono::Duration::minutes(1), now),
            "clock skew"
        );
    }
}
