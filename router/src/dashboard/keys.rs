//! API keys: add, list masked, replace, delete; a notice where the plan allows none. The
//! same service calls (and plan checks) as `/api/v1/api-keys`.

use std::sync::Arc;

use askama::Template;
use axum::Form;
use axum::extract::{Path, State};
use axum::response::Response;
use clawdbot_accounts::{KeyProvider, User};
use clawdbot_api::PlanPolicy;
use serde::Deserialize;

use super::guard::Viewer;
use super::{Ctx, DashState, done, error_page, render_with};
use crate::api::extract::parse_id;
use crate::error::ApiError;

pub struct KeyRow {
    pub id: String,
    pub provider: &'static str,
    pub masked: String,
    pub updated: String,
}

#[derive(Template)]
#[template(path = "dashboard/keys.html")]
pub struct KeysPage {
    pub c: Ctx,
    pub allowed: bool,
    pub keys: Vec<KeyRow>,
}

const KEYS: &str = "/dashboard/keys";

fn provider_name(p: KeyProvider) -> &'static str {
    match p {
        KeyProvider::Openai => "OpenAI",
        KeyProvider::Anthropic => "Anthropic",
    }
}

async fn show(s: &DashState, user: &User, c: Ctx) -> Response {
    let status = c.status;
    match s.api.accounts.list_keys(user.id).await {
        Ok(rows) => {
            let page = KeysPage {
                allowed: PlanPolicy::default_for(user.plan).allows_own_key,
                keys: rows
                    .iter()
                    .map(|k| KeyRow {
                        id: k.id.to_string(),
                        provider: provider_name(k.provider),
                        masked: k.hint.clone(),
                        updated: k.updated_at.format("%Y-%m-%d %H:%M").to_string(),
                    })
                    .collect(),
                c,
            };
            render_with(status, &page)
        }
        Err(e) => error_page(c, &ApiError::from(e)),
    }
}

#[tracing::instrument(skip_all, fields(user))]
pub async fn page(State(s): State<Arc<DashState>>, Viewer(user): Viewer, c: Ctx) -> Response {
    let c = c.signed_in(&user);
    show(&s, &user, c).await
}

#[derive(Deserialize)]
pub struct NewKey {
    #[serde(default)]
    provider: String,
    #[serde(default)]
    key: String,
}

#[tracing::instrument(skip_all, fields(user))]
pub async fn add(
    State(s): State<Arc<DashState>>,
    Viewer(user): Viewer,
    c: Ctx,
    Form(f): Form<NewKey>,
) -> Response {
    let c = c.signed_in(&user);
    let provider = match f.provider.as_str() {
        "openai" => KeyProvider::Openai,
        "anthropic" => KeyProvider::Anthropic,
        _ => {
            let e = ApiError::Invalid {
                field: Some("provider".into()),
                message: "choose OpenAI or Anthropic".into(),
            };
            return show(&s, &user, c.failed(&e)).await;
        }
    };
    match s.api.accounts.add_key(&user, provider, &f.key).await {
        Ok(_) => done(KEYS, "key_added"),
        Err(e) => show(&s, &user, c.failed(&ApiError::from(e))).await,
    }
}

#[derive(Deserialize)]
pub struct Replacement {
    #[serde(default)]
    key: String,
}

#[tracing::instrument(skip_all, fields(user))]
pub async fn replace(
    State(s): State<Arc<DashState>>,
    Viewer(user): Viewer,
    c: Ctx,
    Path(id): Path<String>,
    Form(f): Form<Replacement>,
) -> Response {
    let c = c.signed_in(&user);
    let result = async {
        s.api
            .accounts
            .replace_key(&user, parse_id(&id)?, &f.key)
            .await?;
        Ok::<_, ApiError>(())
    }
    .await;
    match result {
        Ok(()) => done(KEYS, "key_replaced"),
        Err(e) => show(&s, &user, c.failed(&e)).await,
    }
}

#[tracing::instrument(skip_all, fields(user))]
pub async fn delete(
    State(s): State<Arc<DashState>>,
    Viewer(user): Viewer,
    c: Ctx,
    Path(id): Path<String>,
) -> Response {
    let c = c.signed_in(&user);
    let result = async {
        s.api.accounts.delete_key(&user, parse_id(&id)?).await?;
        Ok::<_, ApiError>(())
    }
    .await;
    match result {
        Ok(()) => done(KEYS, "key_deleted"),
        Err(e) => show(&s, &user, c.failed(&e)).await,
    }
}
