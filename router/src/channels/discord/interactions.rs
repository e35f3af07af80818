//! Discord interactions: Ed25519-signed requests, PING, and the `/ask question:<text>` slash
//! command answered with a deferred response; the answer follows through the interaction
//! webhook (see [`super::Discord`]'s `send`).

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use chrono::Utc;
use ed25519_dalek::{Signature, VerifyingKey};
use serde_json::{Value, json};

use super::{Discord, NAME, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use crate::error::ApiError;
use crate::inbound::Inbound;
use crate::pipeline::Core;

pub fn routes(discord: Arc<Discord>, core: Arc<Core>) -> axum::Router {
    axum::Router::new()
        .route("/webhooks/discord/interactions", post(interactions))
        .with_state((discord, core))
}

/// Whether `body` carries a valid signature by `key` (Ed25519 over timestamp + body).
fn verify(key: &VerifyingKey, headers: &HeaderMap, body: &[u8]) -> bool {
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
    key.verify_strict(&message, &Signature::from_bytes(&sig))
        .is_ok()
}

async fn interactions(
    State((discord, core)): State<(Arc<Discord>, Arc<Core>)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let Some(key) = discord.public_key.as_ref() else {
        return Err(ApiError::Unauthorized);
    };
    if !verify(key, &headers, &body) {
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
                // The invoking user's client language (`ru`, `en-US`, ...).
                lang: interaction["locale"].as_str().map(str::to_string),
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
