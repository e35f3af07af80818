//! Models (the assistant's settings), Settings (profile, export, deletion). The same service
//! calls and checks as `/api/v1/config`, `/api/v1/models` and `/api/v1/users/me`.

use std::sync::Arc;

use askama::Template;
use axum::Form;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use clawdbot_accounts::User;
use clawdbot_accounts::service::AccountPatch;
use clawdbot_accounts::settings::SettingsPatch;
use clawdbot_api::workspace::ModelProvider;
use serde::Deserialize;

use super::guard::{self, Viewer};
use super::{Ctx, DashState, done, error_page, render, render_with};
use crate::error::ApiError;

pub struct ModelOption {
    pub value: String,
    pub label: String,
    pub available: bool,
    pub selected: bool,
}

#[derive(Template)]
#[template(path = "dashboard/models.html")]
pub struct ModelsPage {
    pub c: Ctx,
    pub models: Vec<ModelOption>,
    pub temperature: String,
    pub max_tokens: String,
    pub web_search: bool,
}

async fn show_models(s: &DashState, user: &User, c: Ctx) -> Response {
    let loaded = async {
        let models = s.api.accounts.models(user).await?;
        let settings = s.api.accounts.settings(user.id).await?;
        Ok::<_, ApiError>((models, settings))
    }
    .await;
    match loaded {
        Ok((models, settings)) => render_with(
            c.status,
            &ModelsPage {
                models: models
                    .into_iter()
                    .map(|m| ModelOption {
                        value: format!("{}:{}", m.provider, m.name),
                        label: format!("{} ({})", m.name, m.provider),
                        available: m.available,
                        selected: m.selected,
                    })
                    .collect(),
                temperature: settings
                    .temperature
                    .map(|t| t.to_string())
                    .unwrap_or_default(),
                max_tokens: settings
                    .max_tokens
                    .map(|t| t.to_string())
                    .unwrap_or_default(),
                web_search: settings.web_search,
                c,
            },
        ),
        Err(e) => error_page(c, &e),
    }
}

#[tracing::instrument(skip_all, fields(user))]
pub async fn models_page(
    State(s): State<Arc<DashState>>,
    Viewer(user): Viewer,
    c: Ctx,
) -> Response {
    let c = c.signed_in(&user);
    show_models(&s, &user, c).await
}

#[derive(Deserialize)]
pub struct ModelsForm {
    #[serde(default)]
    model: String,
    #[serde(default)]
    temperature: String,
    #[serde(default)]
    max_tokens: String,
    web_search: Option<String>,
}

fn number<T: std::str::FromStr>(raw: &str, field: &str, rule: &str) -> Result<Option<T>, ApiError> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(None);
    }
    raw.replace(',', ".")
        .parse()
        .map(Some)
        .map_err(|_| ApiError::Invalid {
            field: Some(field.into()),
            message: rule.into(),
        })
}

fn settings_patch(f: &ModelsForm) -> Result<SettingsPatch, ApiError> {
    let (provider, model) = f
        .model
        .split_once(':')
        .unwrap_or(("platform", f.model.as_str()));
    let provider = match provider {
        "openai" => ModelProvider::Openai,
        "anthropic" => ModelProvider::Anthropic,
        _ => ModelProvider::Platform,
    };
    Ok(SettingsPatch {
        provider: Some(provider),
        model: Some(model.to_string()).filter(|m| !m.is_empty()),
        temperature: number(&f.temperature, "temperature", "a number from 0 to 2")?,
        max_tokens: number(
            &f.max_tokens,
            "max_tokens",
            "a whole number from 1 to 131072",
        )?,
        session_scope: None,
        web_search: Some(f.web_search.is_some()),
    })
}

#[tracing::instrument(skip_all, fields(user))]
pub async fn save_models(
    State(s): State<Arc<DashState>>,
    Viewer(user): Viewer,
    c: Ctx,
    Form(f): Form<ModelsForm>,
) -> Response {
    let c = c.signed_in(&user);
    let saved = async {
        let patch = settings_patch(&f)?;
        s.api.accounts.update_settings(&user, &patch).await?;
        Ok::<_, ApiError>(())
    }
    .await;
    match saved {
        Ok(()) => done("/dashboard/models", "saved"),
        Err(e) => show_models(&s, &user, c.failed(&e)).await,
    }
}

#[derive(Template)]
#[template(path = "dashboard/settings.html")]
pub struct SettingsPage {
    pub c: Ctx,
    pub email: String,
    pub display_name: String,
}

fn settings(user: &User, c: Ctx) -> Response {
    render_with(
        c.status,
        &SettingsPage {
            email: user.email.clone().unwrap_or_default(),
            display_name: user.display_name.clone().unwrap_or_default(),
            c,
        },
    )
}

#[tracing::instrument(skip_all, fields(user))]
pub async fn settings_page(Viewer(user): Viewer, c: Ctx) -> Response {
    let c = c.signed_in(&user);
    settings(&user, c)
}

#[derive(Deserialize)]
pub struct Profile {
    #[serde(default)]
    email: String,
    #[serde(default)]
    display_name: String,
    #[serde(default)]
    new_password: String,
    #[serde(default)]
    current_password: String,
}

/// As `PATCH /users/me`: what did not change is not sent.
#[tracing::instrument(skip_all, fields(user))]
pub async fn save_profile(
    State(s): State<Arc<DashState>>,
    Viewer(user): Viewer,
    c: Ctx,
    Form(f): Form<Profile>,
) -> Response {
    let c = c.signed_in(&user);
    let email = Some(f.email.trim().to_string())
        .filter(|e| !e.is_empty() && Some(e.as_str()) != user.email.as_deref());
    let name = f.display_name.trim().to_string();
    let patch = AccountPatch {
        email,
        display_name: (Some(name.as_str()) != user.display_name.as_deref())
            .then(|| Some(name.clone()).filter(|n| !n.is_empty())),
        new_password: Some(f.new_password).filter(|p| !p.is_empty()),
        current_password: Some(f.current_password).filter(|p| !p.is_empty()),
    };
    match s.api.accounts.update_account(&user, patch).await {
        Ok(_) => done("/dashboard/settings", "saved"),
        Err(e) => settings(&user, c.failed(&ApiError::from(e))),
    }
}

/// The export of `GET /users/me/export`, as a file to save.
#[tracing::instrument(skip_all, fields(user))]
pub async fn export(State(s): State<Arc<DashState>>, Viewer(user): Viewer, c: Ctx) -> Response {
    match crate::api::users::full_export(&s.api, &user).await {
        Ok(export) => match serde_json::to_vec_pretty(&export) {
            Ok(body) => (
                [
                    (header::CONTENT_TYPE, "application/json"),
                    (
                        header::CONTENT_DISPOSITION,
                        "attachment; filename=\"clawdbot-export.json\"",
                    ),
                ],
                body,
            )
                .into_response(),
            Err(e) => error_page(c, &ApiError::Internal(e.to_string())),
        },
        Err(e) => error_page(c.signed_in(&user), &e),
    }
}

#[derive(Template)]
#[template(path = "dashboard/deleted.html")]
pub struct DeletedPage {
    pub c: Ctx,
}

#[derive(Deserialize)]
pub struct Confirm {
    #[serde(default)]
    confirm: String,
}

/// Deletes the account once the e-mail address is typed (as `DELETE /users/me`).
#[tracing::instrument(skip_all, fields(user))]
pub async fn delete(
    State(s): State<Arc<DashState>>,
    Viewer(user): Viewer,
    c: Ctx,
    Form(f): Form<Confirm>,
) -> Response {
    let expected = user.email.clone().unwrap_or_default();
    if expected.is_empty() || !f.confirm.trim().eq_ignore_ascii_case(&expected) {
        let mut c = c.signed_in(&user);
        c.error = Some(c.t("settings.delete.mismatch").into());
        c.status = axum::http::StatusCode::UNPROCESSABLE_ENTITY;
        return settings(&user, c);
    }
    match crate::api::users::delete_account(&s.api, &user).await {
        Ok(()) => {
            let mut resp = render(&DeletedPage { c });
            for cookie in guard::cleared_session() {
                resp.headers_mut().append(header::SET_COOKIE, cookie);
            }
            resp
        }
        Err(e) => error_page(c.signed_in(&user), &e),
    }
}
