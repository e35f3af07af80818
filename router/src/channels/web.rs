//! Web chat for the dashboard: `POST /api/v1/web/messages` with a signed user token; the
//! answer streams back as server-sent events (`typing`, `note`, `reply`) on the same response.
//! The message goes through the same pipeline as every platform's.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::post;
use chrono::Utc;
use futures::Stream;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::json;
use sha2::Sha256;
use tokio::sync::mpsc;
use uuid::Uuid;

use super::{BoxFuture, Channel, ReplyKind, SendError};
use crate::config::{Config, Secret};
use crate::error::ApiError;
use crate::inbound::Inbound;
use crate::pipeline::{Accepted, Core};

pub const NAME: &str = "web";
const MAX_TEXT_CHARS: usize = 16_000;

pub struct Web {
    secret: Secret,
    /// Open event streams by message (external id).
    streams: Mutex<HashMap<String, mpsc::Sender<Event>>>,
}

impl Web {
    pub fn from_config(config: &Config) -> Option<Self> {
        Some(Web {
            secret: config.web.token_secret.clone()?,
            streams: Mutex::new(HashMap::new()),
        })
    }

    fn mac(secret: &Secret, user: Uuid) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes())
            .expect("hmac takes any key length");
        mac.update(b"clawdbot-web-chat:v1:");
        mac.update(user.as_bytes());
        mac
    }

    /// A token that lets the dashboard chat as `user` (issued by the accounts side later; by
    /// the admin endpoint until then).
    pub fn mint(secret: &Secret, user: Uuid) -> String {
        format!(
            "{user}.{}",
            hex::encode(Self::mac(secret, user).finalize().into_bytes())
        )
    }

    /// The user of a token, if it is genuine.
    pub fn verify(secret: &Secret, token: &str) -> Option<Uuid> {
        let (user, sig) = token.split_once('.')?;
        let user: Uuid = user.parse().ok()?;
        let sig = hex::decode(sig).ok()?;
        Self::mac(secret, user).verify_slice(&sig).ok()?;
        Some(user)
    }

    fn push(&self, external_id: &str, event: Event, close: bool) -> Result<(), SendError> {
        let mut streams = self.streams.lock().expect("streams lock");
        let sender = if close {
            streams.remove(external_id)
        } else {
            streams.get(external_id).cloned()
        };
        let sender = sender.ok_or(SendError::Gone)?;
        sender.try_send(event).map_err(|_| SendError::Gone)
    }
}

impl Channel for Web {
    fn name(&self) -> &'static str {
        NAME
    }

    fn max_message_chars(&self) -> usize {
        // One event carries the whole answer.
        1_000_000
    }

    fn routes(self: Arc<Self>, core: Arc<Core>) -> axum::Router {
        axum::Router::new()
            .route("/api/v1/web/messages", post(message))
            .with_state((self, core))
    }

    fn send<'a>(
        &'a self,
        to: &'a Inbound,
        text: &'a str,
        kind: ReplyKind,
    ) -> BoxFuture<'a, Result<(), SendError>> {
        Box::pin(async move {
            let (name, close) = match kind {
                ReplyKind::Note => ("note", false),
                ReplyKind::Final => ("reply", true),
            };
            self.push(
                &to.external_id,
                Event::default().event(name).data(text),
                close,
            )
        })
    }

    fn typing<'a>(&'a self, to: &'a Inbound) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let _ = self.push(
                &to.external_id,
                Event::default().event("typing").data(""),
                false,
            );
        })
    }
}

#[derive(Deserialize)]
struct WebMessage {
    /// Client-chosen id of the message (dedupes a resend).
    id: String,
    text: String,
}

async fn message(
    State((web, core)): State<(Arc<Web>, Arc<Core>)>,
    headers: HeaderMap,
    Json(body): Json<WebMessage>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or(ApiError::Unauthorized)?;
    let user = Web::verify(&web.secret, token).ok_or(ApiError::Unauthorized)?;
    if body.text.trim().is_empty() || body.text.chars().count() > MAX_TEXT_CHARS {
        return Err(ApiError::BadRequest(format!(
            "text must have 1 to {MAX_TEXT_CHARS} characters"
        )));
    }
    if body.id.is_empty() || body.id.len() > 128 {
        return Err(ApiError::BadRequest(
            "id must have 1 to 128 characters".into(),
        ));
    }
    let external_id = format!("{user}:{}", body.id);
    let (tx, rx) = mpsc::channel(16);
    web.streams
        .lock()
        .expect("streams lock")
        .insert(external_id.clone(), tx);
    let inbound = Inbound {
        channel: NAME.to_string(),
        external_id: external_id.clone(),
        sender_id: user.to_string(),
        conversation: "dm".to_string(),
        peer: user.to_string(),
        text: body.text,
        reply_to: json!({}),
        sent_at: Utc::now(),
    };
    let accepted = core.accept(inbound).await;
    match accepted {
        Ok(Accepted::New(_)) => {}
        Ok(Accepted::Duplicate) => {
            web.streams
                .lock()
                .expect("streams lock")
                .remove(&external_id);
            return Err(ApiError::Conflict(
                "a message with this id was already sent".into(),
            ));
        }
        Err(e) => {
            web.streams
                .lock()
                .expect("streams lock")
                .remove(&external_id);
            return Err(e);
        }
    }
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    let stream = futures::StreamExt::map(stream, Ok);
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_only_for_their_user_and_key() {
        let key = Secret::new("k1");
        let user = Uuid::new_v4();
        let token = Web::mint(&key, user);
        assert_eq!(Web::verify(&key, &token), Some(user));
        assert_eq!(Web::verify(&Secret::new("k2"), &token), None);
        let other = Uuid::new_v4();
        let forged = format!("{other}.{}", token.split_once('.').unwrap().1);
        assert_eq!(Web::verify(&key, &forged), None);
        assert_eq!(Web::verify(&key, "garbage"), None);
    }
}
