//! `/workspace`: the user's assistant as the operator reports it.

use std::sync::Arc;

use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::ApiState;
use super::extract::AuthUser;
use super::views::ErrorBody;
use crate::error::ApiError;

pub fn routes() -> OpenApiRouter<Arc<ApiState>> {
    OpenApiRouter::new().routes(routes!(get_workspace))
}

/// One condition of the workspace's status.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct ConditionView {
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    pub reason: String,
    pub message: String,
    pub last_transition_time: Option<DateTime<Utc>>,
}

/// The workspace's phase and conditions.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct WorkspaceView {
    pub name: String,
    /// Pending, Provisioning, Running, Hibernated or Failed.
    pub phase: String,
    pub ready: bool,
    pub suspended: bool,
    /// Whether the operator has seen the latest change of the spec.
    pub up_to_date: bool,
    pub conditions: Vec<ConditionView>,
}

/// The user's workspace.
#[utoipa::path(get, path = "/api/v1/workspace", tag = "workspace", security(("bearer" = [])),
    responses(
        (status = 200, body = WorkspaceView),
        (status = 401, body = ErrorBody),
        (status = 404, description = "No workspace (yet)", body = ErrorBody),
    ))]
#[tracing::instrument(skip_all, fields(user))]
async fn get_workspace(
    State(s): State<Arc<ApiState>>,
    AuthUser(user): AuthUser,
) -> Result<axum::Json<WorkspaceView>, ApiError> {
    let ws = s
        .accounts
        .workspace(user.id)
        .await?
        .ok_or_else(|| ApiError::NotFound("no workspace".into()))?;
    let status = ws.status.clone().unwrap_or_default();
    Ok(axum::Json(WorkspaceView {
        name: ws.metadata.name.clone().unwrap_or_default(),
        phase: status.phase.as_str().into(),
        ready: ws.is_ready(),
        suspended: ws.spec.suspend,
        up_to_date: status.observed_generation.is_some()
            && status.observed_generation == ws.metadata.generation,
        conditions: status
            .conditions
            .iter()
            .map(|c| ConditionView {
                type_: c.type_.clone(),
                status: c.status.clone(),
                reason: c.reason.clone(),
                message: c.message.clone(),
                last_transition_time: DateTime::<Utc>::from_timestamp(
                    c.last_transition_time.0.as_second(),
                    0,
                ),
            })
            .collect(),
    }))
}
