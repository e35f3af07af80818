//! `/auth`: register, login, refresh, logout. Sign-in through an identity provider
//! (`/auth/oauth/google/{start,callback}`) is [`super::google`].

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use clawdbot_accounts::Session;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::ApiState;
use super::extract::{ApiJson, AuthUser, ClientAddr};
use super::views::{ErrorBody, UserView};
use crate::error::ApiError;

pub fn routes() -> OpenApiRouter<Arc<ApiState>> {
    OpenApiRouter::new()
        .routes(routes!(register))
        .routes(routes!(login))
        .routes(routes!(refresh))
        .routes(routes!(logout))
}

/// E-mail and password.
#[derive(Deserialize, ToSchema)]
pub struct Credentials {
    pub email: String,
    /// 10 to 128 characters, not all digits, not containing the e-mail address.
    pub password: String,
}

#[derive(Deserialize, ToSchema)]
pub struct RefreshRequest {
    pub refresh_token: String,
}

/// A signed-in session.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct SessionView {
    /// Bearer token for every other endpoint; short-lived.
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds until the access token expires.
    pub expires_in: i64,
    /// Exchange at `/auth/refresh` for a new pair; single use.
    pub refresh_token: String,
    pub refresh_expires_at: DateTime<Utc>,
    pub user: UserView,
}

impl From<Session> for SessionView {
    fn from(s: Session) -> Self {
        SessionView {
            expires_in: (s.access_expires_at - Utc::now()).num_seconds().max(0),
            access_token: s.access_token,
            token_type: "Bearer".into(),
            refresh_token: s.refresh_token,
            refresh_expires_at: s.refresh_expires_at,
            user: UserView::from(&s.user),
        }
    }
}

/// Creates an account and its assistant's workspace; signs in.
#[utoipa::path(post, path = "/api/v1/auth/register", tag = "auth", request_body = Credentials,
    responses(
        (status = 201, description = "Account created", body = SessionView),
        (status = 409, description = "The e-mail has an account", body = ErrorBody),
        (status = 422, description = "A field breaks a rule", body = ErrorBody),
        (status = 429, description = "Too many registrations from this address or for this e-mail", body = ErrorBody),
    ))]
#[tracing::instrument(skip_all)]
async fn register(
    State(s): State<Arc<ApiState>>,
    ClientAddr(addr): ClientAddr,
    ApiJson(req): ApiJson<Credentials>,
) -> Result<(StatusCode, axum::Json<SessionView>), ApiError> {
    let session = s.accounts.register(&req.email, &req.password, addr).await?;
    Ok((StatusCode::CREATED, axum::Json(session.into())))
}

/// Signs in with e-mail and password.
#[utoipa::path(post, path = "/api/v1/auth/login", tag = "auth", request_body = Credentials,
    responses(
        (status = 200, body = SessionView),
        (status = 403, description = "Account suspended", body = ErrorBody),
        (status = 401, description = "Wrong e-mail or password", body = ErrorBody),
        (status = 422, description = "A field is missing or of the wrong type", body = ErrorBody),
        (status = 429, description = "Too many failed attempts for the account or address", body = ErrorBody),
    ))]
#[tracing::instrument(skip_all)]
async fn login(
    State(s): State<Arc<ApiState>>,
    ClientAddr(addr): ClientAddr,
    ApiJson(req): ApiJson<Credentials>,
) -> Result<axum::Json<SessionView>, ApiError> {
    let session = s.accounts.login(&req.email, &req.password, addr).await?;
    Ok(axum::Json(session.into()))
}

/// Exchanges a refresh token for a new pair. A used token presented again ends every
/// session of its family.
#[utoipa::path(post, path = "/api/v1/auth/refresh", tag = "auth", request_body = RefreshRequest,
    responses(
        (status = 200, body = SessionView),
        (status = 401, description = "Unknown, expired, revoked or reused token", body = ErrorBody),
        (status = 403, description = "Account suspended", body = ErrorBody),
        (status = 422, body = ErrorBody),
    ))]
#[tracing::instrument(skip_all)]
async fn refresh(
    State(s): State<Arc<ApiState>>,
    ApiJson(req): ApiJson<RefreshRequest>,
) -> Result<axum::Json<SessionView>, ApiError> {
    let session = s.accounts.refresh(&req.refresh_token).await?;
    Ok(axum::Json(session.into()))
}

/// Ends the session of a refresh token.
#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "auth", request_body = RefreshRequest,
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Signed out"),
        (status = 401, body = ErrorBody),
        (status = 422, body = ErrorBody),
    ))]
#[tracing::instrument(skip_all, fields(user))]
async fn logout(
    State(s): State<Arc<ApiState>>,
    AuthUser(user): AuthUser,
    ApiJson(req): ApiJson<RefreshRequest>,
) -> Result<StatusCode, ApiError> {
    s.accounts.logout(user.id, &req.refresh_token).await?;
    Ok(StatusCode::NO_CONTENT)
}
