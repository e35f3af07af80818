//! The operators' automation endpoints: connection codes and web chat tokens for any user.
//! Allowed with the admin token (`ROUTER_ADMIN_TOKEN`) or an access token of an admin.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use clawdbot_accounts::{Accounts, Role};

use super::extract::bearer;
use crate::channels::telegram::secret_matches;
use crate::channels::web::{self, Web};
use crate::error::ApiError;
use crate::pipeline::Core;
use crate::store;

/// What the admin endpoints need: the core, and the accounts to check an admin's token.
#[derive(Clone)]
pub struct AdminState {
    pub core: Arc<Core>,
    pub accounts: Option<Accounts>,
}

pub fn routes(state: AdminState) -> axum::Router {
    axum::Router::new()
        .route("/api/v1/channels/generate-code", post(generate_code))
        .route("/api/v1/web/token", post(web_token))
        .with_state(state)
}

async fn require_admin(state: &AdminState, headers: &HeaderMap) -> Result<(), ApiError> {
    let presented = bearer(headers);
    if secret_matches(
        presented.map(str::as_bytes),
        &state.core.config.server.admin_token,
    ) {
        return Ok(());
    }
    // An admin's access token, checked against the account as it is now.
    if let (Some(accounts), Some(token)) = (&state.accounts, presented)
        && let Ok(claims) = accounts.verify_access(token)
        && let Ok(user) = accounts.user(claims.sub).await
        && user.role == Role::Admin
        && !user.suspended()
    {
        return Ok(());
    }
    Err(ApiError::Unauthorized)
}

#[derive(Debug, Deserialize)]
pub struct UserRequest {
    pub user_id: Uuid,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct CodeResponse {
    pub code: String,
    pub expires_at: DateTime<Utc>,
}

#[tracing::instrument(skip_all, fields(user = %req.user_id))]
async fn generate_code(
    State(state): State<AdminState>,
    headers: HeaderMap,
    Json(req): Json<UserRequest>,
) -> Result<Json<CodeResponse>, ApiError> {
    require_admin(&state, &headers).await?;
    let core = &state.core;
    if !store::user_exists(&core.db, req.user_id).await? {
        return Err(ApiError::NotFound("no such user".into()));
    }
    let (code, expires_at) = store::create_code(&core.db, req.user_id).await?;
    Ok(Json(CodeResponse { code, expires_at }))
}

#[derive(Debug, Serialize, Deserialize)]
pub struct TokenResponse {
    pub token: String,
}

#[tracing::instrument(skip_all, fields(user = %req.user_id))]
async fn web_token(
    State(state): State<AdminState>,
    headers: HeaderMap,
    Json(req): Json<UserRequest>,
) -> Result<Json<TokenResponse>, ApiError> {
    require_admin(&state, &headers).await?;
    let core = &state.core;
    let secret = core
        .config
        .web
        .token_secret
        .as_ref()
        .ok_or(ApiError::ChannelDisabled)?;
    if !store::user_exists(&core.db, req.user_id).await? {
        return Err(ApiError::NotFound("no such user".into()));
    }
    store::connect_channel(&core.db, web::NAME, &req.user_id.to_string(), req.user_id).await?;
    Ok(Json(TokenResponse {
        token: Web::mint(secret, req.user_id),
    }))
}
