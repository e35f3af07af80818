//! Sign up, log in, log out, and the language and theme switches.

use std::sync::Arc;

use askama::Template;
use axum::Form;
use axum::extract::{FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::guard::{self, REFRESH, Viewer};
use super::{Ctx, DashState, HOME, LOGIN, render, render_with, status_of};
use crate::api::extract::client_addr;
use crate::error::ApiError;

#[derive(Template)]
#[template(path = "dashboard/signup.html")]
pub struct SignupPage {
    pub c: Ctx,
    pub email: String,
    /// Google sign-in is configured: offer it.
    pub google: bool,
}

#[derive(Template)]
#[template(path = "dashboard/login.html")]
pub struct LoginPage {
    pub c: Ctx,
    pub email: String,
    pub google: bool,
}

/// Why a sign-in with Google came back refused (`?google=` from the API's callback).
#[derive(Deserialize, Default)]
pub struct GoogleOutcome {
    #[serde(default)]
    google: String,
}

impl GoogleOutcome {
    fn key(&self) -> Option<&'static str> {
        match self.google.as_str() {
            "conflict" => Some("google.conflict"),
            "forbidden" => Some("google.forbidden"),
            "failed" => Some("google.failed"),
            _ => None,
        }
    }
}

#[derive(Deserialize)]
pub struct Credentials {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
}

pub async fn signup_page(State(s): State<Arc<DashState>>, c: Ctx) -> Response {
    render(&SignupPage {
        c,
        email: String::new(),
        google: s.api.google.is_some(),
    })
}

pub async fn login_page(
    State(s): State<Arc<DashState>>,
    mut c: Ctx,
    Query(g): Query<GoogleOutcome>,
) -> Response {
    if let Some(key) = g.key() {
        c.error = Some(c.t(key).to_string());
    }
    render(&LoginPage {
        c,
        email: String::new(),
        google: s.api.google.is_some(),
    })
}

/// Signed in: the session's cookies and the way home.
fn signed_in(session: &clawdbot_accounts::Session) -> Response {
    let mut resp = Redirect::to(HOME).into_response();
    for c in guard::session_cookies(session) {
        resp.headers_mut().append(header::SET_COOKIE, c);
    }
    resp
}

#[tracing::instrument(skip_all)]
pub async fn signup(
    State(s): State<Arc<DashState>>,
    Peer(addr): Peer,
    c: Ctx,
    Form(f): Form<Credentials>,
) -> Response {
    // Counted against the same per-address and per-e-mail registration limits as the API.
    match s.api.accounts.register(&f.email, &f.password, addr).await {
        Ok(session) => {
            remember_lang(&s, session.user.id, c.lang).await;
            signed_in(&session)
        }
        Err(e) => {
            let e = ApiError::from(e);
            render_with(
                status_of(&e),
                &SignupPage {
                    c: c.failed(&e),
                    email: f.email,
                    google: s.api.google.is_some(),
                },
            )
        }
    }
}

/// The peer address, as the API's login limits count it.
pub struct Peer(Option<std::net::IpAddr>);

impl FromRequestParts<Arc<DashState>> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        s: &Arc<DashState>,
    ) -> Result<Self, Self::Rejection> {
        Ok(Peer(client_addr(parts, s.api.trust_forwarded_for)))
    }
}

#[tracing::instrument(skip_all)]
pub async fn login(
    State(s): State<Arc<DashState>>,
    Peer(addr): Peer,
    c: Ctx,
    Form(f): Form<Credentials>,
) -> Response {
    match s.api.accounts.login(&f.email, &f.password, addr).await {
        Ok(session) => {
            remember_lang(&s, session.user.id, c.lang).await;
            signed_in(&session)
        }
        Err(e) => {
            let e = ApiError::from(e);
            render_with(
                status_of(&e),
                &LoginPage {
                    c: c.failed(&e),
                    email: f.email,
                    google: s.api.google.is_some(),
                },
            )
        }
    }
}

/// Ends the session (its refresh token is revoked, as `/auth/logout` does) and clears the
/// cookies.
#[tracing::instrument(skip_all, fields(user))]
pub async fn logout(
    State(s): State<Arc<DashState>>,
    viewer: Option<Viewer>,
    headers: HeaderMap,
) -> Response {
    if let (Some(Viewer(user)), Some(refresh)) = (viewer, guard::cookie(&headers, REFRESH))
        && let Err(e) = s.api.accounts.logout(user.id, &refresh).await
    {
        tracing::warn!(error = %e, "logout");
    }
    let mut resp = Redirect::to(LOGIN).into_response();
    for c in guard::cleared_session() {
        resp.headers_mut().append(header::SET_COOKIE, c);
    }
    resp
}

impl axum::extract::OptionalFromRequestParts<Arc<DashState>> for Viewer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        s: &Arc<DashState>,
    ) -> Result<Option<Self>, Self::Rejection> {
        Ok(
            <Viewer as FromRequestParts<Arc<DashState>>>::from_request_parts(parts, s)
                .await
                .ok(),
        )
    }
}

#[derive(Deserialize)]
pub struct Prefs {
    lang: Option<String>,
    theme: Option<String>,
    #[serde(default)]
    back: String,
}

/// The language the dashboard speaks to `user`, kept for what the router tells them in chat
/// (a failed payment). Best effort: the page works without it.
async fn remember_lang(s: &DashState, user: uuid::Uuid, lang: super::i18n::Lang) {
    if let Err(e) = crate::store::set_user_lang(&s.api.core.db, user, lang.code()).await {
        tracing::warn!(error = %e, "could not remember the user's language");
    }
}

/// Sets the language or theme cookie and goes back to the page (only a dashboard path); a
/// signed-in user's language is remembered for chat too.
pub async fn prefs(
    State(s): State<Arc<DashState>>,
    viewer: Option<Viewer>,
    Form(p): Form<Prefs>,
) -> Response {
    const YEAR: i64 = 365 * 24 * 3600;
    let back = if p.back.starts_with("/dashboard") && !p.back.contains("//") {
        p.back
    } else {
        HOME.to_string()
    };
    let mut resp = Redirect::to(&back).into_response();
    let mut set = |name: &str, value: &str| {
        resp.headers_mut().append(
            header::SET_COOKIE,
            guard::set_cookie(name, value, Some(YEAR), false),
        );
    };
    let lang = p.lang.as_deref().and_then(super::i18n::Lang::parse);
    if let Some(l) = lang {
        set(guard::LANG, l.code());
    }
    if let Some(t) = p
        .theme
        .as_deref()
        .filter(|t| ["auto", "light", "dark"].contains(t))
    {
        set(guard::THEME, t);
    }
    if let (Some(l), Some(Viewer(user))) = (lang, viewer) {
        remember_lang(&s, user.id, l).await;
    }
    resp
}
