//! Admin (admins only, as the API's `AdminUser`): every account with its plan and state,
//! suspend and resume.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use clawdbot_accounts::{Role, User};
use serde::Deserialize;

use super::guard::Viewer;
use super::{Ctx, DashState, done, error_page, render};
use crate::api::extract::parse_id;
use crate::error::ApiError;

const PAGE: i64 = 50;

pub struct UserRow {
    pub id: String,
    pub email: String,
    pub plan: &'static str,
    pub role: &'static str,
    pub suspended: bool,
    pub created: String,
    /// The admin's own account: no button to lock themselves out.
    pub me: bool,
}

#[derive(Template)]
#[template(path = "dashboard/admin.html")]
pub struct AdminPage {
    pub c: Ctx,
    pub users: Vec<UserRow>,
    pub next: Option<i64>,
}

fn require_admin(user: &User) -> Result<(), ApiError> {
    if user.role != Role::Admin || user.suspended() {
        return Err(ApiError::Forbidden("this needs the admin role".into()));
    }
    Ok(())
}

#[derive(Deserialize)]
pub struct Paging {
    #[serde(default)]
    offset: i64,
}

#[tracing::instrument(skip_all, fields(user))]
pub async fn page(
    State(s): State<Arc<DashState>>,
    Viewer(user): Viewer,
    c: Ctx,
    Query(p): Query<Paging>,
) -> Response {
    let c = c.signed_in(&user);
    let offset = p.offset.max(0);
    let listed = async {
        require_admin(&user)?;
        Ok::<_, ApiError>(s.api.accounts.list_users(PAGE, offset).await?)
    }
    .await;
    match listed {
        Ok(users) => render(&AdminPage {
            c,
            next: (users.len() as i64 == PAGE).then_some(offset + PAGE),
            users: users
                .iter()
                .map(|u| UserRow {
                    id: u.id.to_string(),
                    email: u.email.clone().unwrap_or_default(),
                    plan: u.plan.as_str(),
                    role: u.role.as_str(),
                    suspended: u.suspended(),
                    created: u.created_at.format("%Y-%m-%d").to_string(),
                    me: u.id == user.id,
                })
                .collect(),
        }),
        Err(e) => error_page(c, &e),
    }
}

/// Suspends or resumes an account (as `POST /admin/users/{id}/suspend|resume`).
#[tracing::instrument(skip_all, fields(user))]
pub async fn set_state(
    State(s): State<Arc<DashState>>,
    Viewer(user): Viewer,
    c: Ctx,
    Path((id, action)): Path<(String, String)>,
) -> Response {
    let result = async {
        require_admin(&user)?;
        let suspend = match action.as_str() {
            "suspend" => true,
            "resume" => false,
            _ => return Err(ApiError::NotFound("no such action".into())),
        };
        s.api
            .accounts
            .set_suspended(parse_id(&id)?, suspend)
            .await?;
        Ok::<bool, ApiError>(suspend)
    }
    .await;
    match result {
        Ok(true) => done("/dashboard/admin", "suspended"),
        Ok(false) => done("/dashboard/admin", "resumed"),
        Err(e) => error_page(c.signed_in(&user), &e),
    }
}
