//! `/admin`: accounts, for users with the admin role.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::ApiState;
use super::extract::{AdminUser, parse_id};
use super::views::{ErrorBody, UserView};
use crate::error::ApiError;

pub fn routes() -> OpenApiRouter<Arc<ApiState>> {
    OpenApiRouter::new()
        .routes(routes!(list_users))
        .routes(routes!(suspend))
        .routes(routes!(resume))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Page {
    /// 1 to 500; 100 when absent.
    pub limit: Option<String>,
    /// 0 when absent.
    pub offset: Option<String>,
}

fn number(value: Option<&str>, default: i64, field: &str) -> Result<i64, ApiError> {
    value.map_or(Ok(default), |v| {
        v.parse().map_err(|_| ApiError::Invalid {
            field: Some(field.into()),
            message: "must be a whole number".into(),
        })
    })
}

/// Every account, oldest first.
#[utoipa::path(get, path = "/api/v1/admin/users", tag = "admin", security(("bearer" = [])),
    params(Page),
    responses(
        (status = 200, body = [UserView]),
        (status = 401, body = ErrorBody),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 422, body = ErrorBody),
    ))]
#[tracing::instrument(skip_all, fields(user))]
async fn list_users(
    State(s): State<Arc<ApiState>>,
    AdminUser(_admin): AdminUser,
    Query(page): Query<Page>,
) -> Result<axum::Json<Vec<UserView>>, ApiError> {
    let users = s
        .accounts
        .list_users(
            number(page.limit.as_deref(), 100, "limit")?,
            number(page.offset.as_deref(), 0, "offset")?,
        )
        .await?;
    Ok(axum::Json(users.iter().map(UserView::from).collect()))
}

/// Suspends an account: its messages get a notice and reach no agent; its workspace sleeps;
/// its sessions end.
#[utoipa::path(post, path = "/api/v1/admin/users/{id}/suspend", tag = "admin",
    security(("bearer" = [])), params(("id" = uuid::Uuid, Path)),
    responses(
        (status = 200, body = UserView),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
    ))]
#[tracing::instrument(skip_all, fields(user))]
async fn suspend(
    State(s): State<Arc<ApiState>>,
    AdminUser(_admin): AdminUser,
    Path(id): Path<String>,
) -> Result<axum::Json<UserView>, ApiError> {
    let user = s.accounts.set_suspended(parse_id(&id)?, true).await?;
    Ok(axum::Json(UserView::from(&user)))
}

/// Resumes a suspended account.
#[utoipa::path(post, path = "/api/v1/admin/users/{id}/resume", tag = "admin",
    security(("bearer" = [])), params(("id" = uuid::Uuid, Path)),
    responses(
        (status = 200, body = UserView),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
    ))]
#[tracing::instrument(skip_all, fields(user))]
async fn resume(
    State(s): State<Arc<ApiState>>,
    AdminUser(_admin): AdminUser,
    Path(id): Path<String>,
) -> Result<axum::Json<UserView>, ApiError> {
    let user = s.accounts.set_suspended(parse_id(&id)?, false).await?;
    Ok(axum::Json(UserView::from(&user)))
}
