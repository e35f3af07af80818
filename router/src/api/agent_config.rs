//! `/config`: what the user's assistant runs, within the plan; a change is applied to the
//! UserWorkspace, from which the operator renders the agent's configuration.

use std::sync::Arc;

use axum::extract::State;
use clawdbot_accounts::AgentSettings;
use clawdbot_accounts::settings::SettingsPatch;
use clawdbot_api::lite::SessionScope;
use clawdbot_api::workspace::ModelProvider;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::ApiState;
use super::extract::{ApiJson, AuthUser};
use super::views::ErrorBody;
use crate::error::ApiError;

pub fn routes() -> OpenApiRouter<Arc<ApiState>> {
    OpenApiRouter::new().routes(routes!(get_config, update_config))
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AgentProvider {
    Platform,
    Openai,
    Anthropic,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum SessionScopeName {
    /// A conversation per chat partner.
    PerPeer,
    /// One conversation across every direct chat.
    Main,
}

/// The assistant's settings.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct ConfigView {
    pub provider: AgentProvider,
    /// The model in use (the platform default when none was chosen).
    pub model: String,
    pub temperature: Option<f64>,
    pub max_tokens: Option<u32>,
    pub session_scope: SessionScopeName,
    pub web_search: bool,
}

/// A change; what is absent stays.
#[derive(Deserialize, ToSchema)]
pub struct ConfigPatch {
    pub provider: Option<AgentProvider>,
    /// One of `GET /api/v1/models`; required when the provider changes to one of your own.
    pub model: Option<String>,
    /// 0 to 2.
    pub temperature: Option<f64>,
    /// 1 to 131072.
    pub max_tokens: Option<u32>,
    pub session_scope: Option<SessionScopeName>,
    pub web_search: Option<bool>,
}

fn view(s: &AgentSettings, default_model: &str) -> ConfigView {
    ConfigView {
        provider: match s.provider {
            ModelProvider::Platform => AgentProvider::Platform,
            ModelProvider::Openai => AgentProvider::Openai,
            ModelProvider::Anthropic => AgentProvider::Anthropic,
        },
        model: s.model.clone().unwrap_or_else(|| default_model.to_string()),
        temperature: s.temperature,
        max_tokens: s.max_tokens,
        session_scope: match s.session_scope {
            SessionScope::PerPeer => SessionScopeName::PerPeer,
            SessionScope::Main => SessionScopeName::Main,
        },
        web_search: s.web_search,
    }
}

/// The assistant's settings.
#[utoipa::path(get, path = "/api/v1/config", tag = "config", security(("bearer" = [])),
    responses((status = 200, body = ConfigView), (status = 401, body = ErrorBody)))]
#[tracing::instrument(skip_all, fields(user))]
async fn get_config(
    State(s): State<Arc<ApiState>>,
    AuthUser(user): AuthUser,
) -> Result<axum::Json<ConfigView>, ApiError> {
    let settings = s.accounts.settings(user.id).await?;
    Ok(axum::Json(view(&settings, &s.accounts.defaults().model)))
}

/// Changes the assistant's settings, within the plan.
#[utoipa::path(patch, path = "/api/v1/config", tag = "config", security(("bearer" = [])),
    request_body = ConfigPatch,
    responses(
        (status = 200, body = ConfigView),
        (status = 401, body = ErrorBody),
        (status = 403, description = "Not on this plan", body = ErrorBody),
        (status = 422, body = ErrorBody),
    ))]
#[tracing::instrument(skip_all, fields(user))]
async fn update_config(
    State(s): State<Arc<ApiState>>,
    AuthUser(user): AuthUser,
    ApiJson(req): ApiJson<ConfigPatch>,
) -> Result<axum::Json<ConfigView>, ApiError> {
    let patch = SettingsPatch {
        provider: req.provider.map(|p| match p {
            AgentProvider::Platform => ModelProvider::Platform,
            AgentProvider::Openai => ModelProvider::Openai,
            AgentProvider::Anthropic => ModelProvider::Anthropic,
        }),
        model: req.model,
        temperature: req.temperature,
        max_tokens: req.max_tokens,
        session_scope: req.session_scope.map(|s| match s {
            SessionScopeName::PerPeer => SessionScope::PerPeer,
            SessionScopeName::Main => SessionScope::Main,
        }),
        web_search: req.web_search,
    };
    let settings = s.accounts.update_settings(&user, &patch).await?;
    Ok(axum::Json(view(&settings, &s.accounts.defaults().model)))
}
