//! Discord interactions: Ed25519-signed requests, PING, the `/ask question:<text>` slash
//! command answered with a deferred response and then follow-ups through the interaction
//! webhook (valid 15 minutes). DMs need the Gateway websocket held by one replica per shard
//! (a lease); that is not part of this channel yet.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use chrono::Utc;
use ed25519_dalek::{Signature, VerifyingKey};
use serde_json::{Value, json};

use super::{BoxFuture, Channel, ReplyKind, SendError};
use crate::config::Config;
use crate::error::ApiError;
use crate::inbound::Inbound;
use crate::pipeline::Core;

pub const NAME: &str = "discord";
pub const SIGNATURE_HEADER: &str = "x-signature-ed25519";
pub const TIMESTAMP_HEADER: &str = "x-signature-timestamp";
pub const MAX_CHARS: usize = 2000;
/// Interaction tokens are valid this long.
const TOKEN_LIFETIME: Duration = Duration::from_secs(15 * 60);

pub struct Discord {
    http: reqwest::Client,
    api_base: String,
    public_key: VerifyingKey,
    /// Interactions whose original (deferred) response was already edited: later messages
    /// are follow-ups.
    answered: Mutex<HashMap<String, Instant>>,
}

impl Discord {
    pub fn from_config(config: &Config, http: &reqwest::Client) -> Option<Self> {
        let hex_key = config.discord_public_key.as_deref()?;
        let key = hex::decode(hex_key.trim())
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .and_then(|b| VerifyingKey::from_bytes(&b).ok());
        let Some(public_key) = key else {
            tracing::error!(
                "DISCORD_PUBLIC_KEY is not a hex Ed25519 public key: Discord stays off"
            );
            return None;
        };
        Some(Discord {
            http: http.clone(),
            api_base: config.discord_api_base.trim_end_matches('/').to_string(),
            public_key,
            answered: Mutex::new(HashMap::new()),
        })
    }

    fn verify(&self, headers: &HeaderMap, body: &[u8]) -> bool {
        let (Some(sig), Some(ts)) = (headers.get(SIGNATURE_HEADER), headers.get(TIMESTAMP_HEADER))
        else {
            return false;
        };
        let Some(sig) = hex::decode(sig.as_bytes())
            .ok()
            .and_then(|b| <[u8; 64]>::try_from(b).ok())
        else {
            return false;
        };
        let mut message = ts.as_bytes().to_vec();
        message.extend_from_slice(body);
        self.public_key
            .verify_strict(&message, &Signature::from_bytes(&sig))
            .is_ok()
    }
}

impl Channel for Discord {
    fn name(&self) -> &'static str {
        NAME
    }

    fn max_message_chars(&self) -> usize {
        MAX_CHARS
    }

    fn routes(self: Arc<Self>, core: Arc<Core>) -> axum::Router {
        axum::Router::new()
            .route("/webhooks/discord/interactions", post(interactions))
            .with_state((self, core))
    }

    fn send<'a>(
        &'a self,
        to: &'a Inbound,
        text: &'a str,
        _kind: ReplyKind,
    ) -> BoxFuture<'a, Result<(), SendError>> {
        Box::pin(async move {
            let (Some(app), Some(token)) = (
                to.reply_to["application_id"].as_str(),
                to.reply_to["token"].as_str(),
            ) else {
                return Err(SendError::Gone);
            };
            if (Utc::now() - to.sent_at)
                .to_std()
                .is_ok_and(|age| age > TOKEN_LIFETIME)
            {
                return Err(SendError::Gone);
            }
            let first = {
                let mut answered = self.answered.lock().expect("answered lock");
                answered.retain(|_, at| at.elapsed() < TOKEN_LIFETIME);
                answered
                    .insert(to.external_id.clone(), Instant::now())
                    .is_none()
            };
            let request = if first {
                self.http.patch(format!(
                    "{}/webhooks/{app}/{token}/messages/@original",
                    self.api_base
                ))
            } else {
                self.http
                    .post(format!("{}/webhooks/{app}/{token}", self.api_base))
            };
            let r = request
                .json(&json!({"content": text, "allowed_mentions": {"parse": []}}))
                .timeout(Duration::from_secs(30))
                .send()
                .await
                .map_err(|e| SendError::Unreachable(e.without_url().to_string()))?;
            if r.status().is_success() {
                Ok(())
            } else {
                Err(SendError::Refused {
                    status: r.status().as_u16(),
                })
            }
        })
    }

    fn typing<'a>(&'a self, _to: &'a Inbound) -> BoxFuture<'a, ()> {
        // The deferred response already shows "<app> is thinking...".
        Box::pin(async {})
    }
}

async fn interactions(
    State((discord, core)): State<(Arc<Discord>, Arc<Core>)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    if !discord.verify(&headers, &body) {
        return Err(ApiError::Unauthorized);
    }
    let interaction: Value = serde_json::from_slice(&body).map_err(|e| {
        tracing::info!(error = %e, "malformed discord interaction");
        ApiError::BadRequest("malformed interaction".into())
    })?;
    match interaction["type"].as_u64() {
        Some(1) => Ok(Json(json!({"type": 1}))),
        Some(2) => {
            let name = interaction["data"]["name"].as_str().unwrap_or_default();
            if name != "ask" {
                return Ok(Json(
                    json!({"type": 4, "data": {"content": "I only know /ask.", "flags": 64}}),
                ));
            }
            let text = interaction["data"]["options"]
                .as_array()
                .and_then(|opts| opts.iter().find(|o| o["name"] == "question"))
                .and_then(|o| o["value"].as_str())
                .unwrap_or_default();
            let user = interaction["member"]["user"]["id"]
                .as_str()
                .or(interaction["user"]["id"].as_str());
            let (Some(id), Some(app), Some(token), Some(user)) = (
                interaction["id"].as_str(),
                interaction["application_id"].as_str(),
                interaction["token"].as_str(),
                user,
            ) else {
                return Err(ApiError::BadRequest(
                    "interaction lacks id, application_id, token or user".into(),
                ));
            };
            if text.trim().is_empty() {
                return Ok(Json(
                    json!({"type": 4, "data": {"content": "Ask me something: /ask question:<text>", "flags": 64}}),
                ));
            }
            let conversation = if interaction["guild_id"].is_string() {
                "guild"
            } else {
                "dm"
            };
            let inbound = Inbound {
                channel: NAME.to_string(),
                external_id: id.to_string(),
                sender_id: user.to_string(),
                conversation: conversation.to_string(),
                peer: user.to_string(),
                text: text.to_string(),
                reply_to: json!({"application_id": app, "token": token}),
                sent_at: Utc::now(),
            };
            core.accept(inbound).await?;
            // Deferred: the answer follows through the interaction webhook.
            Ok(Json(json!({"type": 5})))
        }
        other => {
            tracing::info!(kind = ?other, "unsupported discord interaction type");
            Err(ApiError::BadRequest("unsupported interaction type".into()))
        }
    }
}
