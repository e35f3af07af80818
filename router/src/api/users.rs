//! `/users/me`: the account, its changes, its deletion and its export.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use clawdbot_accounts::service::AccountPatch;
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::ApiState;
use super::extract::{ApiJson, AuthUser};
use super::views::{ErrorBody, UserView};
use crate::error::ApiError;

pub fn routes() -> OpenApiRouter<Arc<ApiState>> {
    OpenApiRouter::new()
        .routes(routes!(get_me, update_me, delete_me))
        .routes(routes!(export))
}

/// What may change; what is absent stays. An empty `display_name` clears it.
#[derive(Deserialize, ToSchema)]
pub struct UpdateMe {
    pub email: Option<String>,
    pub display_name: Option<String>,
    /// A new password (ends every other session).
    pub new_password: Option<String>,
    /// Required with `email` or `new_password`.
    pub current_password: Option<String>,
}

/// The signed-in account.
#[utoipa::path(get, path = "/api/v1/users/me", tag = "users", security(("bearer" = [])),
    responses((status = 200, body = UserView), (status = 401, body = ErrorBody)))]
#[tracing::instrument(skip_all, fields(user))]
async fn get_me(AuthUser(user): AuthUser) -> axum::Json<UserView> {
    axum::Json(UserView::from(&user))
}

/// Changes the e-mail, display name or password.
#[utoipa::path(patch, path = "/api/v1/users/me", tag = "users", security(("bearer" = [])),
    request_body = UpdateMe,
    responses(
        (status = 200, body = UserView),
        (status = 401, body = ErrorBody),
        (status = 409, description = "The e-mail has another account", body = ErrorBody),
        (status = 422, body = ErrorBody),
    ))]
#[tracing::instrument(skip_all, fields(user))]
async fn update_me(
    State(s): State<Arc<ApiState>>,
    AuthUser(user): AuthUser,
    ApiJson(req): ApiJson<UpdateMe>,
) -> Result<axum::Json<UserView>, ApiError> {
    let patch = AccountPatch {
        email: req.email,
        display_name: req
            .display_name
            .map(|n| Some(n).filter(|n| !n.trim().is_empty())),
        new_password: req.new_password,
        current_password: req.current_password,
    };
    let updated = s.accounts.update_account(&user, patch).await?;
    Ok(axum::Json(UserView::from(&updated)))
}

/// Deletes the account: its workspace, connections, keys, usage and sessions. Nothing of it
/// is kept in Postgres or Redis. A paid subscription is cancelled at Stripe first (at once,
/// not at the period's end); if Stripe refuses or cannot be reached, nothing is deleted.
#[utoipa::path(delete, path = "/api/v1/users/me", tag = "users", security(("bearer" = [])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, body = ErrorBody),
        (status = 502, description = "Stripe refused to cancel the subscription; nothing was deleted", body = ErrorBody),
        (status = 503, description = "Stripe is unreachable, so the subscription could not be cancelled; nothing was deleted", body = ErrorBody),
    ))]
#[tracing::instrument(skip_all, fields(user))]
async fn delete_me(
    State(s): State<Arc<ApiState>>,
    AuthUser(user): AuthUser,
) -> Result<StatusCode, ApiError> {
    delete_account(&s, &user).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Deletes `user`'s account and forgets its senders and counters on this replica and in
/// Redis (the dashboard's deletion calls it too).
pub async fn delete_account(s: &ApiState, user: &clawdbot_accounts::User) -> Result<(), ApiError> {
    if let Some(billing) = &s.billing {
        billing.cancel_for_deletion(user.id).await?;
    }
    let traces = s.accounts.delete_account(user).await?;
    for (channel, sender) in &traces.senders {
        s.core.forget_sender(channel, sender);
    }
    let tenant = format!(
        "{}/{}",
        s.accounts.defaults().namespace,
        clawdbot_accounts::provision::workspace_name(user.id)
    );
    s.core
        .limits
        .forget_user(user.id, &tenant, &traces.senders, &traces.messages)
        .await?;
    Ok(())
}

/// Everything held about the account as one document. Keys are shown masked, tokens not at
/// all. `conversations` is the assistant's own export (every session with its messages, and
/// its memory notes) with `included: true`, or `included: false` and the reason when the
/// assistant cannot be read now (asleep: it is woken, export again shortly).
#[utoipa::path(get, path = "/api/v1/users/me/export", tag = "users", security(("bearer" = [])),
    responses(
        (status = 200, description = "The export", body = Object),
        (status = 401, body = ErrorBody),
    ))]
#[tracing::instrument(skip_all, fields(user))]
async fn export(
    State(s): State<Arc<ApiState>>,
    AuthUser(user): AuthUser,
) -> Result<axum::Json<clawdbot_accounts::service::Export>, ApiError> {
    Ok(axum::Json(full_export(&s, &user).await?))
}

/// The account's export with the assistant's conversations: what the API and the dashboard's
/// download both give.
pub async fn full_export(
    s: &ApiState,
    user: &clawdbot_accounts::User,
) -> Result<clawdbot_accounts::service::Export, ApiError> {
    let mut export = s.accounts.export(user).await?;
    export.conversations = Some(super::sessions::conversations_for_export(s, user.id).await);
    Ok(export)
}
