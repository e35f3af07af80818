//! `/api-keys`: the user's own OpenAI and Anthropic keys. Stored sealed, delivered to the
//! agent through the tenant's provider-key Secret, listed only masked.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use clawdbot_accounts::KeyProvider;
use clawdbot_accounts::store::KeyRow;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::ApiState;
use super::extract::{ApiJson, AuthUser, parse_id};
use super::views::ErrorBody;
use crate::error::ApiError;

pub fn routes() -> OpenApiRouter<Arc<ApiState>> {
    OpenApiRouter::new()
        .routes(routes!(create_key, list_keys))
        .routes(routes!(get_key, update_key, delete_key))
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum KeyProviderName {
    Openai,
    Anthropic,
}

impl From<KeyProviderName> for KeyProvider {
    fn from(p: KeyProviderName) -> Self {
        match p {
            KeyProviderName::Openai => KeyProvider::Openai,
            KeyProviderName::Anthropic => KeyProvider::Anthropic,
        }
    }
}

impl From<KeyProvider> for KeyProviderName {
    fn from(p: KeyProvider) -> Self {
        match p {
            KeyProvider::Openai => KeyProviderName::Openai,
            KeyProvider::Anthropic => KeyProviderName::Anthropic,
        }
    }
}

/// A key to store.
#[derive(Deserialize, ToSchema)]
pub struct NewKey {
    pub provider: KeyProviderName,
    /// The key as the provider issued it (`sk-...`, `sk-ant-...`). Never shown again.
    pub key: String,
}

/// A replacement for a stored key.
#[derive(Deserialize, ToSchema)]
pub struct ReplaceKey {
    pub key: String,
}

/// A stored key, masked.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct KeyView {
    pub id: Uuid,
    pub provider: KeyProviderName,
    /// The first three and last four characters, such as `sk-...abcd`.
    pub masked: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<&KeyRow> for KeyView {
    fn from(k: &KeyRow) -> Self {
        KeyView {
            id: k.id,
            provider: k.provider.into(),
            masked: k.hint.clone(),
            created_at: k.created_at,
            updated_at: k.updated_at,
        }
    }
}

/// Stores a provider key (one per provider) and hands it to the assistant.
#[utoipa::path(post, path = "/api/v1/api-keys", tag = "api-keys", security(("bearer" = [])),
    request_body = NewKey,
    responses(
        (status = 201, body = KeyView),
        (status = 401, body = ErrorBody),
        (status = 403, description = "The plan has no own keys", body = ErrorBody),
        (status = 409, description = "A key of this provider is stored", body = ErrorBody),
        (status = 422, body = ErrorBody),
    ))]
#[tracing::instrument(skip_all, fields(user))]
async fn create_key(
    State(s): State<Arc<ApiState>>,
    AuthUser(user): AuthUser,
    ApiJson(req): ApiJson<NewKey>,
) -> Result<(StatusCode, axum::Json<KeyView>), ApiError> {
    let row = s
        .accounts
        .add_key(&user, req.provider.into(), &req.key)
        .await?;
    Ok((StatusCode::CREATED, axum::Json(KeyView::from(&row))))
}

/// The stored keys, masked.
#[utoipa::path(get, path = "/api/v1/api-keys", tag = "api-keys", security(("bearer" = [])),
    responses((status = 200, body = [KeyView]), (status = 401, body = ErrorBody)))]
#[tracing::instrument(skip_all, fields(user))]
async fn list_keys(
    State(s): State<Arc<ApiState>>,
    AuthUser(user): AuthUser,
) -> Result<axum::Json<Vec<KeyView>>, ApiError> {
    let rows = s.accounts.list_keys(user.id).await?;
    Ok(axum::Json(rows.iter().map(KeyView::from).collect()))
}

/// One stored key, masked.
#[utoipa::path(get, path = "/api/v1/api-keys/{id}", tag = "api-keys", security(("bearer" = [])),
    params(("id" = Uuid, Path)),
    responses((status = 200, body = KeyView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
#[tracing::instrument(skip_all, fields(user))]
async fn get_key(
    State(s): State<Arc<ApiState>>,
    AuthUser(user): AuthUser,
    Path(id): Path<String>,
) -> Result<axum::Json<KeyView>, ApiError> {
    let row = s.accounts.get_key(user.id, parse_id(&id)?).await?;
    Ok(axum::Json(KeyView::from(&row)))
}

/// Replaces a stored key.
#[utoipa::path(patch, path = "/api/v1/api-keys/{id}", tag = "api-keys", security(("bearer" = [])),
    params(("id" = Uuid, Path)), request_body = ReplaceKey,
    responses(
        (status = 200, body = KeyView),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 422, body = ErrorBody),
    ))]
#[tracing::instrument(skip_all, fields(user))]
async fn update_key(
    State(s): State<Arc<ApiState>>,
    AuthUser(user): AuthUser,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<ReplaceKey>,
) -> Result<axum::Json<KeyView>, ApiError> {
    let row = s
        .accounts
        .replace_key(&user, parse_id(&id)?, &req.key)
        .await?;
    Ok(axum::Json(KeyView::from(&row)))
}

/// Deletes a stored key (not while the assistant uses its provider).
#[utoipa::path(delete, path = "/api/v1/api-keys/{id}", tag = "api-keys", security(("bearer" = [])),
    params(("id" = Uuid, Path)),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "The assistant uses this provider", body = ErrorBody),
    ))]
#[tracing::instrument(skip_all, fields(user))]
async fn delete_key(
    State(s): State<Arc<ApiState>>,
    AuthUser(user): AuthUser,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    s.accounts.delete_key(&user, parse_id(&id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}
