//! The web dashboard under `/dashboard`: server-rendered pages (askama templates compiled into
//! the binary) with htmx for the parts that update themselves, for people who would rather
//! click than call the API. Every page calls the same `clawdbot-accounts` functions with the
//! same checks as the `/api/v1` handler of the same thing, so the dashboard can do nothing the
//! public API cannot.
//!
//! - [`guard`]: CSRF, security headers, session cookies and their renewal, the signed-in user.
//! - [`i18n`]: English and Russian.
//! - [`svg`]: the usage chart and the QR codes, drawn on the server.
//! - one module per page group.
//!
//! Nothing is fetched from elsewhere at run time: htmx (2.0.11, vendored from npm), the
//! style sheet and the two small scripts are embedded and served from `/dashboard/assets`.

pub mod account;
pub mod admin;
pub mod auth;
pub mod billing;
pub mod channels;
pub mod chat;
pub mod guard;
pub mod home;
pub mod i18n;
pub mod keys;
pub mod sessions;
pub mod svg;

use std::sync::Arc;

use askama::Template;
use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use clawdbot_accounts::{Role, User};

use crate::api::ApiState;
use crate::error::ApiError;
use guard::{Csrf, Renewals};
use i18n::Lang;

pub const HOME: &str = "/dashboard";
pub const LOGIN: &str = "/dashboard/login";

/// What the dashboard's handlers share: the API's state (the same accounts service) and the
/// sessions renewed a moment ago.
pub struct DashState {
    pub api: Arc<ApiState>,
    pub renewals: Renewals,
}

/// The dashboard's routes (no fallback: unknown paths stay the API's JSON 404).
pub fn routes(api: Arc<ApiState>) -> axum::Router {
    let state = Arc::new(DashState {
        api,
        renewals: Renewals::default(),
    });
    axum::Router::new()
        .route("/", get(|| async { Redirect::to(HOME) }))
        .route(HOME, get(home::page))
        .route("/dashboard/state", get(home::state_fragment))
        .route(
            "/dashboard/signup",
            get(auth::signup_page).post(auth::signup),
        )
        .route("/dashboard/login", get(auth::login_page).post(auth::login))
        .route("/dashboard/logout", post(auth::logout))
        .route("/dashboard/prefs", post(auth::prefs))
        .route("/dashboard/channels", get(channels::page))
        .route("/dashboard/channels/code", post(channels::new_code))
        .route("/dashboard/channels/watch", get(channels::watch))
        .route(
            "/dashboard/channels/{id}/disconnect",
            post(channels::disconnect),
        )
        .route("/dashboard/chat", get(chat::page))
        .route("/dashboard/sessions", get(sessions::page))
        .route("/dashboard/recent", get(sessions::recent))
        .route("/dashboard/sessions/{id}", get(sessions::conversation))
        .route("/dashboard/keys", get(keys::page).post(keys::add))
        .route("/dashboard/keys/{id}/replace", post(keys::replace))
        .route("/dashboard/keys/{id}/delete", post(keys::delete))
        .route(
            "/dashboard/models",
            get(account::models_page).post(account::save_models),
        )
        .route("/dashboard/settings", get(account::settings_page))
        .route("/dashboard/settings/profile", post(account::save_profile))
        .route("/dashboard/settings/export", get(account::export))
        .route("/dashboard/settings/delete", post(account::delete))
        .route("/dashboard/billing", get(billing::page))
        .route("/dashboard/billing/checkout", post(billing::checkout))
        .route("/dashboard/billing/change", post(billing::change))
        .route("/dashboard/billing/cancel", post(billing::cancel))
        .route("/dashboard/billing/portal", post(billing::portal))
        .route("/dashboard/admin", get(admin::page))
        .route(
            "/dashboard/admin/users/{id}/{action}",
            post(admin::set_state),
        )
        .route("/dashboard/assets/{file}", get(asset))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            guard::renew,
        ))
        .layer(axum::middleware::from_fn(guard::protect))
        .with_state(state)
}

/// The signed-in user as the layout shows them.
pub struct Brief {
    pub email: String,
    pub admin: bool,
}

/// What every page template gets: the language, the theme, the CSRF token for its forms,
/// where it is, the user, and a notice or an error to show.
pub struct Ctx {
    pub lang: Lang,
    /// `auto`, `light` or `dark`.
    pub theme: &'static str,
    pub csrf: String,
    pub path: String,
    pub user: Option<Brief>,
    pub notice: Option<&'static str>,
    pub error: Option<String>,
    /// The status of the page: not OK when it is shown again with an error.
    pub status: StatusCode,
}

impl Ctx {
    pub fn t(&self, key: &str) -> &'static str {
        self.lang.t(key)
    }

    /// The same context for `user`'s pages.
    pub fn signed_in(mut self, user: &User) -> Self {
        self.user = Some(Brief {
            email: user.email.clone().unwrap_or_default(),
            admin: user.role == Role::Admin && !user.suspended(),
        });
        self
    }

    pub fn failed(mut self, e: &ApiError) -> Self {
        if !matches!(
            e,
            ApiError::Invalid { .. }
                | ApiError::Rejected(..)
                | ApiError::Unauthorized
                | ApiError::Conflict(_)
                | ApiError::Forbidden(_)
                | ApiError::NotFound(_)
                | ApiError::TooManyAttempts(_)
        ) {
            tracing::error!(error = %e, "dashboard request failed");
        }
        self.error = Some(self.lang.explain(e));
        self.status = status_of(e);
        self
    }

    /// `aria-current` for the navigation link to `href`.
    pub fn current(&self, href: &str) -> &'static str {
        if self.path == href { "page" } else { "false" }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Ctx {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let theme = match guard::cookie(&parts.headers, guard::THEME).as_deref() {
            Some("light") => "light",
            Some("dark") => "dark",
            _ => "auto",
        };
        let notice = parts
            .uri
            .query()
            .and_then(|q| url::form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == "done"))
            .map(|(_, v)| format!("done.{v}"))
            .filter(|k| Lang::has(k));
        let lang = Lang::of_request(&parts.headers);
        Ok(Ctx {
            lang,
            theme,
            csrf: parts
                .extensions
                .get::<Csrf>()
                .map(|c| c.0.clone())
                .unwrap_or_default(),
            path: parts.uri.path().to_string(),
            user: None,
            notice: notice.map(|k| lang.t(&k)),
            error: None,
            status: StatusCode::OK,
        })
    }
}

/// A rendered template (a failure to render is a bug: logged, and a plain 500).
pub fn render(t: &impl Template) -> Response {
    render_with(StatusCode::OK, t)
}

pub fn render_with(status: StatusCode, t: &impl Template) -> Response {
    match t.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "template");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
        }
    }
}

/// A redirect after a change, with the notice to show (`done.<what>` of the texts).
pub fn done(path: &str, what: &str) -> Response {
    Redirect::to(&format!("{path}?done={what}")).into_response()
}

/// The status of a page shown again with an error.
pub fn status_of(e: &ApiError) -> StatusCode {
    match e {
        ApiError::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        ApiError::Rejected(s, _) => *s,
        ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
        ApiError::Conflict(_) => StatusCode::CONFLICT,
        ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
        ApiError::NotFound(_) | ApiError::ChannelDisabled => StatusCode::NOT_FOUND,
        ApiError::TooManyAttempts(_) => StatusCode::TOO_MANY_REQUESTS,
        ApiError::PaymentProvider {
            reachable: true, ..
        } => StatusCode::BAD_GATEWAY,
        ApiError::PaymentProvider { .. } => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// A page that only says what went wrong.
#[derive(Template)]
#[template(path = "dashboard/error.html")]
pub struct ErrorPage {
    pub c: Ctx,
}

pub fn error_page(c: Ctx, e: &ApiError) -> Response {
    let c = c.failed(e);
    render_with(c.status, &ErrorPage { c })
}

const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "htmx.min.js",
        "text/javascript",
        include_bytes!("assets/htmx.min.js"),
    ),
    ("app.css", "text/css", include_bytes!("assets/app.css")),
    (
        "chat.js",
        "text/javascript",
        include_bytes!("assets/chat.js"),
    ),
];

async fn asset(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|(name, _, _)| *name == file) {
        Some((_, kind, bytes)) => (
            [
                (header::CONTENT_TYPE, *kind),
                (header::CACHE_CONTROL, "public, max-age=3600"),
            ],
            *bytes,
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}
