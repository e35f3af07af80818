//! `/models`: what the user can pick: the platform's models (from the ModelEndpoints) and,
//! on plans with own keys, the models of the providers they stored a key for.

use std::sync::Arc;

use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::ApiState;
use super::extract::AuthUser;
use super::views::ErrorBody;
use crate::error::ApiError;

pub fn routes() -> OpenApiRouter<Arc<ApiState>> {
    OpenApiRouter::new().routes(routes!(list_models))
}

/// A model the user can pick.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct ModelView {
    /// `platform`, `openai` or `anthropic`.
    pub provider: String,
    pub name: String,
    /// Whether it can answer now.
    pub available: bool,
    /// Whether the assistant uses it.
    pub selected: bool,
}

/// The models the user can pick.
#[utoipa::path(get, path = "/api/v1/models", tag = "config", security(("bearer" = [])),
    responses((status = 200, body = [ModelView]), (status = 401, body = ErrorBody)))]
#[tracing::instrument(skip_all, fields(user))]
async fn list_models(
    State(s): State<Arc<ApiState>>,
    AuthUser(user): AuthUser,
) -> Result<axum::Json<Vec<ModelView>>, ApiError> {
    let models = s.accounts.models(&user).await?;
    Ok(axum::Json(
        models
            .into_iter()
            .map(|m| ModelView {
                provider: m.provider.into(),
                name: m.name,
                available: m.available,
                selected: m.selected,
            })
            .collect(),
    ))
}
