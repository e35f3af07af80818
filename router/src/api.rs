//! Admin endpoints, until the accounts API exists: connection codes and web chat tokens.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::channels::telegram::secret_matches;
use crate::channels::web::{self, Web};
use crate::error::ApiError;
use crate::pipeline::Core;
use crate::store;

pub fn routes(core: Arc<Core>) -> axum::Router {
    axum::Router::new()
        .route("/api/v1/channels/generate-code", post(generate_code))
        .route("/api/v1/web/token", post(web_token))
        .with_state(core)
}

fn require_admin(core: &Core, headers: &HeaderMap) -> Result<(), ApiError> {
    let presented = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::as_bytes);
    if secret_matches(presented, &core.config.server.admin_token) {
        Ok(())
    } else {
        Err(ApiError::Unauthorized)
    }
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
    State(core): State<Arc<Core>>,
    headers: HeaderMap,
    Json(req): Json<UserRequest>,
) -> Result<Json<CodeResponse>, ApiError> {
    require_admin(&core, &headers)?;
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
    State(core): State<Arc<Core>>,
    headers: HeaderMap,
    Json(req): Json<UserRequest>,
) -> Result<Json<TokenResponse>, ApiError> {
    require_admin(&core, &headers)?;
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
