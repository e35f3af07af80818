//! `/usage`: messages, tokens and web searches per day.

use std::sync::Arc;

use axum::extract::{Query, State};
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::ApiState;
use super::extract::AuthUser;
use super::views::ErrorBody;
use crate::error::ApiError;

pub fn routes() -> OpenApiRouter<Arc<ApiState>> {
    OpenApiRouter::new().routes(routes!(get_usage))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UsageQuery {
    /// Days back from today (UTC), 1 to 366; 30 when absent.
    pub days: Option<String>,
}

/// One day.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct UsageDayView {
    pub day: NaiveDate,
    pub messages: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub total_tokens: i64,
    /// Of `messages`, those whose tokens are estimated (the agent reported none).
    pub estimated_messages: i64,
    /// Web searches the assistant made for the day's replies (counted by the lite runtime;
    /// OpenClaw runtimes report none, so 0 there).
    pub web_searches: i64,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct UsageView {
    pub days: u32,
    /// Days with any use, oldest first.
    pub per_day: Vec<UsageDayView>,
    pub total_messages: i64,
    pub total_tokens: i64,
    pub total_web_searches: i64,
}

/// Usage of the last `days` days.
#[utoipa::path(get, path = "/api/v1/usage", tag = "usage", security(("bearer" = [])),
    params(UsageQuery),
    responses((status = 200, body = UsageView), (status = 401, body = ErrorBody), (status = 422, body = ErrorBody)))]
#[tracing::instrument(skip_all, fields(user))]
async fn get_usage(
    State(s): State<Arc<ApiState>>,
    AuthUser(user): AuthUser,
    Query(q): Query<UsageQuery>,
) -> Result<axum::Json<UsageView>, ApiError> {
    let days = match q.days.as_deref() {
        None => 30,
        Some(d) => d.parse().map_err(|_| ApiError::Invalid {
            field: Some("days".into()),
            message: "must be a whole number of days between 1 and 366".into(),
        })?,
    };
    let rows = s.accounts.usage(user.id, days).await?;
    Ok(axum::Json(UsageView {
        days,
        total_messages: rows.iter().map(|r| r.messages).sum(),
        total_tokens: rows.iter().map(|r| r.total_tokens).sum(),
        total_web_searches: rows.iter().map(|r| r.web_searches).sum(),
        per_day: rows
            .into_iter()
            .map(|r| UsageDayView {
                day: r.day,
                messages: r.messages,
                prompt_tokens: r.prompt_tokens,
                completion_tokens: r.completion_tokens,
                total_tokens: r.total_tokens,
                estimated_messages: r.estimated_messages,
                web_searches: r.web_searches,
            })
            .collect(),
    }))
}
