//! Web chat for the dashboard: `POST /api/v1/web/messages` with a signed user token; the
//! answer streams back as server-sent events (`typing`, `note`, `reply`) on the same response.
//! The message goes through the same pipeline as every platform's.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use chrono::Utc;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::json;
use sha2::Sha256;
use tokio::sync::mpsc;
use uuid::Uuid;

use super::Routes;
use crate::config::{Config, Secret};
use crate::directory::UNSEEN_WORKSPACE_WAIT;
use crate::error::ApiError;
use crate::inbound::Inbound;
use crate::limits::{Admission, Quota};
use crate::outbound::{BoxFuture, Channel, ReplyKind, SendError};
use crate::pipeline::{Accepted, Core};

pub const NAME: &str = crate::outbound::WEB;
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

impl Routes for Web {
    fn routes(self: Arc<Self>, core: Arc<Core>) -> axum::Router {
        axum::Router::new()
            .route("/api/v1/web/messages", post(message))
            .with_state((self, core))
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

/// `X-RateLimit-Limit`, `-Remaining` and `-Reset` (seconds until the count starts again) of
/// the daily message quota.
fn quota_headers(q: &Quota) -> [(HeaderName, HeaderValue); 3] {
    let reset = (q.resets_at - Utc::now()).num_seconds().max(0);
    rate_headers(q.limit, q.remaining, u64::try_from(reset).unwrap_or(0))
}

/// The `X-RateLimit-*` headers of a limit of `limit` per window.
fn rate_headers(limit: u32, remaining: u32, reset_secs: u64) -> [(HeaderName, HeaderValue); 3] {
    [
        (
            HeaderName::from_static("x-ratelimit-limit"),
            HeaderValue::from(limit),
        ),
        (
            HeaderName::from_static("x-ratelimit-remaining"),
            HeaderValue::from(remaining),
        ),
        (
            HeaderName::from_static("x-ratelimit-reset"),
            HeaderValue::from(reset_secs),
        ),
    ]
}

/// Where to upgrade: the dashboard's billing page.
fn upgrade_url(config: &Config) -> Option<String> {
    config.billing.billing_return_url.clone().or_else(|| {
        config
            .accounts
            .dashboard_origin
            .as_ref()
            .map(|o| format!("{}/dashboard/billing", o.trim_end_matches('/')))
    })
}

/// Counts the message against the user's per-minute limit and daily quota (the pipeline
/// does not count web messages again). `Err` is the 429 to answer with.
async fn admit(core: &Core, user: Uuid) -> Result<Option<Quota>, Box<Response>> {
    // Waits as the pipeline will for a workspace this replica has not seen yet, so that a
    // message sent right after sign-up is counted like any other.
    let Some(tenant) = core.directory.wait_known(user, UNSEEN_WORKSPACE_WAIT).await else {
        // The pipeline answers "not set up yet"; nothing to count.
        return Ok(None);
    };
    if tenant.suspended {
        return Ok(None);
    }
    let per_day = core
        .config
        .accounts
        .plans
        .policy(tenant.plan)
        .messages_per_day;
    let counted = core
        .limits
        .admit_counted(user, core.config.limits.rate_limit_per_minute, per_day)
        .await;
    let (admission, quota) = match counted {
        Ok(c) => c,
        Err(e) => {
            // As in the pipeline: a Redis outage does not stop conversations.
            tracing::warn!(error = %e, "rate limit check unavailable; admitting");
            return Ok(None);
        }
    };
    match admission {
        Admission::Allowed => Ok(Some(quota)),
        // The limit hit is the per-minute one: the headers say so (the daily count is not
        // touched by a refused message).
        Admission::RateLimited { retry_after_secs } => Err(Box::new(
            (
                StatusCode::TOO_MANY_REQUESTS,
                rate_headers(
                    core.config.limits.rate_limit_per_minute,
                    0,
                    retry_after_secs,
                ),
                [(
                    axum::http::header::RETRY_AFTER,
                    retry_after_secs.to_string(),
                )],
                Json(json!({"error": format!(
                    "too many messages this minute; wait {retry_after_secs} seconds and try again"
                )})),
            )
                .into_response(),
        )),
        Admission::QuotaExceeded { .. } => {
            let mut body = json!({"error": format!(
                "you have used all {per_day} messages of your {} plan today; upgrade for more, or wait for the reset",
                tenant.plan
            )});
            if let Some(url) = upgrade_url(&core.config) {
                body["upgrade_url"] = json!(url);
            }
            let reset = (quota.resets_at - Utc::now()).num_seconds().max(0);
            Err(Box::new(
                (
                    StatusCode::TOO_MANY_REQUESTS,
                    quota_headers(&quota),
                    [(axum::http::header::RETRY_AFTER, reset.to_string())],
                    Json(body),
                )
                    .into_response(),
            ))
        }
    }
}

async fn message(
    State((web, core)): State<(Arc<Web>, Arc<Core>)>,
    headers: HeaderMap,
    Json(body): Json<WebMessage>,
) -> Result<Response, ApiError> {
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
    let quota = match admit(&core, user).await {
        Ok(q) => q,
        Err(over) => return Ok(*over),
    };
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
        lang: None,
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
    let stream = futures::StreamExt::map(stream, Ok::<_, Infallible>);
    let sse = Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)));
    Ok(match quota {
        Some(q) => (quota_headers(&q), sse).into_response(),
        None => sse.into_response(),
    })
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
