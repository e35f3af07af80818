//! `/sessions`: the user's conversations, read from their tenant's agent (the agent owns them,
//! on its volume) through the conversations API both runtimes serve
//! (`clawdbot_api::conversations`), with the gateway token the router holds. Also the
//! conversations part of the export.
//!
//! A tenant that is asleep (hibernated) is not woken and waited for inside the request, which
//! could take longer than a client waits: the request asks for the wake and answers 409 with
//! a message saying so and `Retry-After`; the next request after the agent is up answers.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use clawdbot_api::conversations::{
    ConversationExport, MAX_DAYS, MAX_PAGE, MessagePage, MessagesQuery, SessionsQuery,
};
use clawdbot_api::gateway::Role;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::ApiState;
use super::extract::AuthUser;
use super::views::ErrorBody;
use crate::agent::AgentError;
use crate::directory::{Tenant, UNSEEN_WORKSPACE_WAIT};
use crate::error::ApiError;

/// Longest wait for the agent to answer a read (the list and a page are small; an export
/// of years of chats is not).
const READ_TIMEOUT: Duration = Duration::from_secs(10);
const EXPORT_TIMEOUT: Duration = Duration::from_secs(60);
/// What a client is told to wait before asking again while the agent wakes.
const WAKE_RETRY_SECS: u64 = 10;

pub fn routes() -> OpenApiRouter<Arc<ApiState>> {
    OpenApiRouter::new()
        .routes(routes!(list_sessions))
        .routes(routes!(list_messages))
}

/// Filters of the session list.
#[derive(Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SessionsParams {
    /// Only sessions of this channel: `telegram`, `whatsapp`, `discord`, `web`.
    pub channel: Option<String>,
    /// Only sessions active in the last `days` days (1 to 3650).
    pub days: Option<String>,
}

/// Which page of a session's messages.
#[derive(Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MessagesParams {
    /// Messages per page, 1 to 200; 50 when absent.
    pub limit: Option<String>,
    /// `next_before` of the previous page, for the next (older) one.
    pub before: Option<String>,
    /// Only messages of the last `days` days (1 to 3650).
    pub days: Option<String>,
}

/// One conversation.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct SessionView {
    /// The session's id (`<channel>:<kind>:<peer>`), for `/sessions/{id}/messages`.
    pub id: String,
    pub channel: String,
    /// `dm`, `group`...
    pub kind: String,
    pub message_count: u64,
    pub last_activity: Option<DateTime<Utc>>,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct SessionListView {
    /// Most recently active first.
    pub sessions: Vec<SessionView>,
}

/// A message of a conversation.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct MessageView {
    pub id: String,
    /// `user`, `assistant`, `system` or `tool`.
    pub role: String,
    pub content: String,
    pub created_at: Option<DateTime<Utc>>,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct MessagePageView {
    pub session: String,
    /// Newest first.
    pub messages: Vec<MessageView>,
    /// Pass as `before` for the next (older) page; absent on the last page.
    pub next_before: Option<String>,
}

fn role_str(r: Role) -> &'static str {
    match r {
        Role::System => "system",
        Role::User => "user",
        Role::Assistant => "assistant",
        Role::Tool => "tool",
    }
}

impl From<MessagePage> for MessagePageView {
    fn from(p: MessagePage) -> Self {
        MessagePageView {
            session: p.key,
            messages: p
                .messages
                .into_iter()
                .map(|m| MessageView {
                    id: m.id,
                    role: role_str(m.role).into(),
                    content: m.content,
                    created_at: m.created_at,
                })
                .collect(),
            next_before: p.next_before,
        }
    }
}

fn number(
    field: &'static str,
    raw: Option<&str>,
    min: u32,
    max: u32,
) -> Result<Option<u32>, ApiError> {
    let Some(raw) = raw else { return Ok(None) };
    match raw.parse::<u32>() {
        Ok(n) if (min..=max).contains(&n) => Ok(Some(n)),
        _ => Err(ApiError::Invalid {
            field: Some(field.into()),
            message: format!("{field} must be a whole number between {min} and {max}"),
        }),
    }
}

fn channel(raw: Option<String>) -> Result<Option<String>, ApiError> {
    match raw.as_deref() {
        None => Ok(None),
        Some(c @ ("telegram" | "whatsapp" | "discord" | "web" | "other")) => Ok(Some(c.into())),
        Some(_) => Err(ApiError::Invalid {
            field: Some("channel".into()),
            message: "channel must be one of telegram, whatsapp, discord, web, other".into(),
        }),
    }
}

/// Why the conversations cannot be read now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unavailable {
    /// No workspace (a brand-new account whose workspace is still being made, or none).
    NoWorkspace,
    Suspended,
    /// Hibernated: a wake was asked for.
    Asleep,
    /// Starting or failing: not ready.
    NotReady,
}

impl Unavailable {
    pub fn message(&self) -> &'static str {
        match self {
            Unavailable::NoWorkspace => "your assistant does not exist yet; try again shortly",
            Unavailable::Suspended => "this account is suspended; its assistant is not running",
            Unavailable::Asleep => {
                "your assistant is asleep; it is waking up now, try again in a few seconds"
            }
            Unavailable::NotReady => "your assistant is starting; try again in a few seconds",
        }
    }
}

impl IntoResponse for Unavailable {
    fn into_response(self) -> Response {
        let body = axum::Json(ErrorBody {
            error: self.message().into(),
            field: None,
        });
        match self {
            Unavailable::Suspended => (StatusCode::FORBIDDEN, body).into_response(),
            _ => (
                StatusCode::CONFLICT,
                [(header::RETRY_AFTER, WAKE_RETRY_SECS.to_string())],
                body,
            )
                .into_response(),
        }
    }
}

/// The user's tenant when its agent can be read now; else why not (a sleeping one is asked
/// to wake).
pub async fn reachable_tenant(s: &ApiState, user: uuid::Uuid) -> Result<Tenant, Unavailable> {
    let core = &s.core;
    // Right after sign-up the workspace may not have reached this replica's watch yet: that
    // is "starting", not "none".
    let tenant = core
        .directory
        .wait_known(user, UNSEEN_WORKSPACE_WAIT)
        .await
        .ok_or(Unavailable::NoWorkspace)?;
    if tenant.suspended {
        return Err(Unavailable::Suspended);
    }
    if tenant.usable() {
        return Ok(tenant);
    }
    if tenant.hibernated {
        // The activity note is the wake signal the operator acts on (as for a chat message).
        core.directory
            .note_activity(&tenant, core.config.limits.activity_window, &core.limits)
            .await;
        return Err(Unavailable::Asleep);
    }
    Err(Unavailable::NotReady)
}

fn agent_error(e: AgentError) -> ApiError {
    tracing::warn!(category = e.category(), error = %e, "conversation read failed");
    match e {
        AgentError::Status(404) => ApiError::NotFound("no such session".into()),
        // The filters were checked here; what the agent can still refuse is the cursor.
        AgentError::Status(400) => ApiError::Invalid {
            field: Some("before".into()),
            message: "before must be the next_before of a previous page".into(),
        },
        AgentError::Timeout(_) => ApiError::Rejected(
            StatusCode::GATEWAY_TIMEOUT,
            "your assistant did not answer in time; try again".into(),
        ),
        _ => ApiError::Rejected(
            StatusCode::BAD_GATEWAY,
            "your assistant could not be read from; try again later".into(),
        ),
    }
}

/// The tenant's URL and token (present on a usable tenant).
fn endpoint(t: &Tenant) -> Result<(&str, &str), ApiError> {
    match (t.url.as_deref(), t.token.as_ref()) {
        (Some(u), Some(k)) => Ok((u, k.expose())),
        _ => Err(ApiError::Internal("tenant became unusable".into())),
    }
}

/// The user's conversations, most recently active first.
#[utoipa::path(get, path = "/api/v1/sessions", tag = "sessions", security(("bearer" = [])),
    params(SessionsParams),
    responses(
        (status = 200, body = SessionListView),
        (status = 401, body = ErrorBody),
        (status = 403, description = "Account suspended", body = ErrorBody),
        (status = 409, description = "The assistant is asleep (now waking) or starting; see Retry-After", body = ErrorBody),
        (status = 422, body = ErrorBody),
        (status = 502, description = "The assistant could not be read from", body = ErrorBody),
        (status = 504, description = "The assistant did not answer in time", body = ErrorBody),
    ))]
#[tracing::instrument(skip_all, fields(user))]
async fn list_sessions(
    State(s): State<Arc<ApiState>>,
    AuthUser(user): AuthUser,
    Query(q): Query<SessionsParams>,
) -> Result<Response, ApiError> {
    Ok(match read_sessions(&s, user.id, q).await? {
        Ok(view) => axum::Json(view).into_response(),
        Err(u) => u.into_response(),
    })
}

/// The user's conversations, or why they cannot be read now: what `GET /sessions` answers,
/// and what the dashboard's Sessions page shows (the same checks, the same agent call).
pub async fn read_sessions(
    s: &ApiState,
    user: uuid::Uuid,
    q: SessionsParams,
) -> Result<Result<SessionListView, Unavailable>, ApiError> {
    let query = SessionsQuery {
        channel: channel(q.channel)?,
        days: number("days", q.days.as_deref(), 1, MAX_DAYS)?,
    };
    let tenant = match reachable_tenant(s, user).await {
        Ok(t) => t,
        Err(u) => return Ok(Err(u)),
    };
    let (url, token) = endpoint(&tenant)?;
    let list = s
        .core
        .agent
        .sessions(url, token, &query, READ_TIMEOUT)
        .await
        .map_err(|e| match e {
            // The list has no id that could be unknown: a 404 is an agent without the
            // conversations API (an image older than it), not "no such session".
            AgentError::Status(404) => {
                tracing::warn!(category = e.category(), error = %e, "the agent has no conversations API");
                ApiError::Rejected(
                    StatusCode::BAD_GATEWAY,
                    "your assistant could not be read from; try again later".into(),
                )
            }
            e => agent_error(e),
        })?;
    Ok(Ok(SessionListView {
        sessions: list
            .sessions
            .into_iter()
            .map(|x| SessionView {
                id: x.key,
                channel: x.channel,
                kind: x.kind,
                message_count: x.message_count,
                last_activity: x.last_activity,
            })
            .collect(),
    }))
}

/// One page of a conversation's messages, newest first.
#[utoipa::path(get, path = "/api/v1/sessions/{id}/messages", tag = "sessions",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The session's id from /sessions"), MessagesParams),
    responses(
        (status = 200, body = MessagePageView),
        (status = 401, body = ErrorBody),
        (status = 403, description = "Account suspended", body = ErrorBody),
        (status = 404, description = "No such session", body = ErrorBody),
        (status = 409, description = "The assistant is asleep (now waking) or starting; see Retry-After", body = ErrorBody),
        (status = 422, body = ErrorBody),
        (status = 502, description = "The assistant could not be read from", body = ErrorBody),
        (status = 504, description = "The assistant did not answer in time", body = ErrorBody),
    ))]
#[tracing::instrument(skip_all, fields(user))]
async fn list_messages(
    State(s): State<Arc<ApiState>>,
    AuthUser(user): AuthUser,
    Path(id): Path<String>,
    Query(q): Query<MessagesParams>,
) -> Result<Response, ApiError> {
    Ok(match read_messages(&s, user.id, id, q).await? {
        Ok(view) => axum::Json(view).into_response(),
        Err(u) => u.into_response(),
    })
}

/// One page of session `id`'s messages, or why they cannot be read now: what
/// `GET /sessions/{id}/messages` answers, and what the dashboard shows.
pub async fn read_messages(
    s: &ApiState,
    user: uuid::Uuid,
    id: String,
    q: MessagesParams,
) -> Result<Result<MessagePageView, Unavailable>, ApiError> {
    if id.is_empty() || id.len() > 512 || id.chars().any(char::is_control) {
        return Err(ApiError::NotFound("no such session".into()));
    }
    let before = q.before.filter(|b| !b.is_empty());
    if before.as_ref().is_some_and(|b| b.len() > 512) {
        return Err(ApiError::Invalid {
            field: Some("before".into()),
            message: "before must be the next_before of a previous page".into(),
        });
    }
    let query = MessagesQuery {
        key: id,
        limit: number("limit", q.limit.as_deref(), 1, MAX_PAGE)?,
        before,
        days: number("days", q.days.as_deref(), 1, MAX_DAYS)?,
    };
    let tenant = match reachable_tenant(s, user).await {
        Ok(t) => t,
        Err(u) => return Ok(Err(u)),
    };
    let (url, token) = endpoint(&tenant)?;
    let page = s
        .core
        .agent
        .messages(url, token, &query, READ_TIMEOUT)
        .await
        .map_err(agent_error)?;
    Ok(Ok(MessagePageView::from(page)))
}

/// The agent's export of the user's conversations and memory, for `/users/me/export`; when
/// the agent cannot be read now, a note saying why (and a sleeping agent is woken).
pub async fn conversations_for_export(s: &ApiState, user: uuid::Uuid) -> serde_json::Value {
    let read = async {
        let tenant = reachable_tenant(s, user)
            .await
            .map_err(|u| u.message().to_string())?;
        let (url, token) = endpoint(&tenant).map_err(|e| e.to_string())?;
        s.core
            .agent
            .export(url, token, EXPORT_TIMEOUT)
            .await
            .map_err(|e| {
                tracing::warn!(category = e.category(), error = %e, "conversation export failed");
                "your assistant could not be read from; export again later".to_string()
            })
    };
    match read.await {
        Ok(export) => export_json(export),
        Err(reason) => serde_json::json!({ "included": false, "reason": reason }),
    }
}

fn export_json(export: ConversationExport) -> serde_json::Value {
    let mut v = serde_json::to_value(export).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.insert("included".into(), true.into());
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_are_checked_and_name_their_field() {
        assert_eq!(number("days", Some("7"), 1, MAX_DAYS).unwrap(), Some(7));
        assert_eq!(number("days", None, 1, MAX_DAYS).unwrap(), None);
        for bad in ["0", "-1", "x", "4000"] {
            let e = number("days", Some(bad), 1, MAX_DAYS).unwrap_err();
            assert!(matches!(e, ApiError::Invalid { field: Some(f), .. } if f == "days"));
        }
        assert_eq!(channel(Some("web".into())).unwrap().as_deref(), Some("web"));
        assert!(channel(Some("fax".into())).is_err());
    }
}
