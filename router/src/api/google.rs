//! `/auth/oauth/google/{start,callback}`: sign-in with Google, or any OpenID Connect provider
//! named by its issuer (`clawdbot-oidc`: authorization code with PKCE, `state`, `nonce`, the ID
//! token's RS256 signature and claims checked).
//!
//! `start` keeps the pending sign-in (nonce, PKCE verifier) in Redis under its `state`, for any
//! replica to finish, and binds it to the browser with an HttpOnly cookie holding the `state`:
//! a callback whose `state` is not the one this browser started (a forged link that would sign
//! the victim into the attacker's account) is refused before the code is used. The pending
//! record is taken with GETDEL, so a callback replayed is refused too. Only then is the code
//! exchanged; an account is created or found (`Accounts::sign_in_external`) only after the ID
//! token passed every check, so a refused callback creates nothing.
//!
//! A sign-in the dashboard started (`start?return=dashboard`, the only other place a callback
//! may lead) ends differently: the session goes into the dashboard's cookies and the browser
//! to `/dashboard`; a refusal sends it to the log-in page with the reason in words. The choice
//! is kept with the pending sign-in in Redis, not taken from the callback's URL, so the
//! provider's redirect cannot change where a session ends up.
//!
//! The provider's client is discovered on first use rather than at start-up, so a provider
//! that is down does not keep the router from starting; its error is a 502 until it answers.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use clawdbot_accounts::ExternalIdentity;
use clawdbot_oidc::{OidcClient, OidcConfig, PendingLogin};
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::ApiState;
use super::auth::SessionView;
use super::views::ErrorBody;
use crate::config::GoogleConfig;
use crate::error::ApiError;

/// The cookie binding a sign-in to the browser that started it.
pub const STATE_COOKIE: &str = "clawdbot_oidc_state";
/// Path of the cookie: sent to the callback only.
const COOKIE_PATH: &str = "/api/v1/auth/oauth/google";

pub fn routes() -> OpenApiRouter<Arc<ApiState>> {
    OpenApiRouter::new()
        .routes(routes!(start))
        .routes(routes!(callback))
}

/// Where a finished sign-in leads: the API's JSON (the default) or the dashboard.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Return {
    Dashboard,
}

impl Return {
    /// `return` of the start URL, checked against the allow-list.
    fn parse(raw: Option<&str>) -> Result<Option<Return>, ApiError> {
        match raw {
            None | Some("") | Some("api") => Ok(None),
            Some("dashboard") => Ok(Some(Return::Dashboard)),
            Some(_) => Err(ApiError::Invalid {
                field: Some("return".into()),
                message: "return must be dashboard or api".into(),
            }),
        }
    }
}

/// A pending sign-in as kept in Redis: the OIDC state and where it leads (absent on records
/// written before there was a choice: the API).
#[derive(Serialize, Deserialize)]
struct Stashed {
    #[serde(flatten)]
    pending: PendingLogin,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    to: Option<Return>,
}

/// Google sign-in, configured.
pub struct GoogleSignIn {
    config: OidcConfig,
    client: tokio::sync::OnceCell<OidcClient>,
    redis: ConnectionManager,
    prefix: String,
    secure_cookie: bool,
}

impl std::fmt::Debug for GoogleSignIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GoogleSignIn")
            .field("issuer", &self.config.issuer)
            .finish_non_exhaustive()
    }
}

impl GoogleSignIn {
    /// From the router's settings: `None` when no client id is set; an error when the settings
    /// are half there.
    pub async fn from_config(
        cfg: &GoogleConfig,
        redis_url: &str,
        prefix: &str,
    ) -> anyhow::Result<Option<Self>> {
        let (id, secret, redirect) = match (&cfg.client_id, &cfg.client_secret, &cfg.redirect_url) {
            (None, None, None) => return Ok(None),
            (Some(i), Some(s), Some(r)) => (i, s, r),
            _ => anyhow::bail!(
                "Google sign-in needs ROUTER_GOOGLE_CLIENT_ID, ROUTER_GOOGLE_CLIENT_SECRET and \
                 ROUTER_GOOGLE_REDIRECT_URL together (or none of them)"
            ),
        };
        url::Url::parse(redirect)
            .map_err(|e| anyhow::anyhow!("ROUTER_GOOGLE_REDIRECT_URL {redirect:?}: {e}"))?;
        let config = OidcConfig::new(
            cfg.issuer.trim_end_matches('/'),
            id.clone(),
            clawdbot_oidc::Secret::new(secret.expose()),
            redirect.clone(),
        );
        let redis = ConnectionManager::new(redis::Client::open(redis_url)?).await?;
        Ok(Some(GoogleSignIn {
            secure_cookie: redirect.starts_with("https://"),
            config,
            client: tokio::sync::OnceCell::new(),
            redis,
            prefix: prefix.to_string(),
        }))
    }

    async fn client(&self) -> Result<&OidcClient, ApiError> {
        self.client
            .get_or_try_init(|| OidcClient::discover(self.config.clone()))
            .await
            .map_err(provider_error)
    }

    /// Redis key of a pending sign-in: the hash of its state.
    fn key(&self, state: &str) -> String {
        format!(
            "{}oidc:google:{}",
            self.prefix,
            hex::encode(Sha256::digest(state.as_bytes()))
        )
    }

    async fn stash(&self, pending: PendingLogin, to: Option<Return>) -> Result<(), ApiError> {
        let key = self.key(&pending.state);
        let value = serde_json::to_string(&Stashed { pending, to })
            .map_err(|e| ApiError::Internal(format!("pending sign-in: {e}")))?;
        // A minute beyond the sign-in's own limit, so that a late callback is told "expired"
        // by the check in `finish` rather than "unknown".
        let ttl = self.config.login_ttl.as_secs() + 60;
        redis::cmd("SET")
            .arg(key)
            .arg(value)
            .arg("EX")
            .arg(ttl)
            .query_async::<()>(&mut self.redis.clone())
            .await?;
        Ok(())
    }

    /// The pending sign-in of `state`, removed: a second callback finds nothing.
    async fn take(&self, state: &str) -> Result<Option<Stashed>, ApiError> {
        let value: Option<String> = redis::cmd("GETDEL")
            .arg(self.key(state))
            .query_async(&mut self.redis.clone())
            .await?;
        value
            .map(|v| {
                serde_json::from_str(&v)
                    .map_err(|e| ApiError::Internal(format!("pending sign-in: {e}")))
            })
            .transpose()
    }

    fn cookie(&self, value: &str, max_age: u64) -> Result<HeaderValue, ApiError> {
        let secure = if self.secure_cookie { "; Secure" } else { "" };
        HeaderValue::from_str(&format!(
            "{STATE_COOKIE}={value}; Path={COOKIE_PATH}; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}"
        ))
        .map_err(|e| ApiError::Internal(format!("cookie: {e}")))
    }
}

fn not_configured() -> ApiError {
    ApiError::NotFound("Google sign-in is not configured on this server".into())
}

/// The provider's or our set-up's fault: 502, the detail logged (it names no secret).
fn provider_error(e: clawdbot_oidc::Error) -> ApiError {
    if e.is_client_error() {
        return ApiError::BadRequest(format!("sign-in refused: {e}"));
    }
    tracing::error!(category = e.category(), error = %e, "sign-in provider failed");
    ApiError::Rejected(
        StatusCode::BAD_GATEWAY,
        "the sign-in provider could not be reached or answered wrongly; try again later".into(),
    )
}

/// The value of cookie `name` in the request.
fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Where the sign-in should lead once finished.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StartQuery {
    /// `dashboard`: finish signed in to the web dashboard (session cookies, then
    /// `/dashboard`); absent or `api`: the callback answers with the session as JSON.
    #[serde(rename = "return")]
    pub to: Option<String>,
}

/// Starts a sign-in with Google: redirects the browser to the provider, with a cookie that
/// binds the sign-in to this browser.
#[utoipa::path(get, path = "/api/v1/auth/oauth/google/start", tag = "auth",
    params(StartQuery),
    responses(
        (status = 302, description = "To the provider's sign-in page",
            headers(("location" = String, description = "The provider's authorization URL"))),
        (status = 404, description = "Google sign-in is not configured", body = ErrorBody),
        (status = 422, description = "`return` is not one of the allowed places", body = ErrorBody),
        (status = 502, description = "The provider could not be reached", body = ErrorBody),
    ))]
#[tracing::instrument(skip_all)]
async fn start(
    State(s): State<Arc<ApiState>>,
    Query(q): Query<StartQuery>,
) -> Result<Response, ApiError> {
    let to = Return::parse(q.to.as_deref())?;
    let g = s.google.as_deref().ok_or_else(not_configured)?;
    let (url, pending) = g.client().await?.start().map_err(provider_error)?;
    let cookie = g.cookie(&pending.state, g.config.login_ttl.as_secs())?;
    g.stash(pending, to).await?;
    let location = HeaderValue::from_str(url.as_str())
        .map_err(|e| ApiError::Internal(format!("authorization URL: {e}")))?;
    Ok((
        StatusCode::FOUND,
        [(header::LOCATION, location), (header::SET_COOKIE, cookie)],
    )
        .into_response())
}

/// What the provider appends to the redirect URL.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CallbackQuery {
    /// The authorization code (single use, short-lived).
    pub code: Option<String>,
    /// The `state` sent at the start.
    pub state: Option<String>,
    /// Set instead of `code` when the user or the provider refused.
    pub error: Option<String>,
}

/// Finishes a sign-in with Google: checks the state against this browser's sign-in, exchanges
/// the code, checks the ID token, and signs in: the account linked to this Google user, or a
/// new one (with its assistant) on the first sign-in. An existing account with the same
/// e-mail is not linked (409): sign in with its password.
#[utoipa::path(get, path = "/api/v1/auth/oauth/google/callback", tag = "auth",
    params(CallbackQuery),
    responses(
        (status = 200, description = "Signed in to the linked account", body = SessionView),
        (status = 201, description = "First sign-in: account created", body = SessionView),
        (status = 400, description = "State or nonce mismatch, expired or replayed sign-in, refused code or ID token", body = ErrorBody),
        (status = 403, description = "Account suspended, or e-mail not verified by the provider", body = ErrorBody),
        (status = 404, description = "Google sign-in is not configured", body = ErrorBody),
        (status = 409, description = "An account with this e-mail exists and is not linked", body = ErrorBody),
        (status = 502, description = "The provider could not be reached", body = ErrorBody),
    ))]
#[tracing::instrument(skip_all)]
async fn callback(
    State(s): State<Arc<ApiState>>,
    headers: HeaderMap,
    Query(q): Query<CallbackQuery>,
) -> Result<Response, ApiError> {
    let g = s.google.as_deref().ok_or_else(not_configured)?;
    let state = q.state.as_deref().filter(|s| !s.is_empty());
    let started_here = state.is_some_and(|state| {
        cookie_value(&headers, STATE_COOKIE)
            .is_some_and(|c| bool::from(c.as_bytes().ct_eq(state.as_bytes())))
    });
    // Taken before anything else is looked at (when this browser started it), so that a
    // refusal is answered where the sign-in was started, and a replay finds nothing.
    let stashed = match state {
        Some(state) if started_here => g.take(state).await?,
        _ => None,
    };
    let to = stashed.as_ref().and_then(|s| s.to);
    let clear = g.cookie("", 0)?;
    match finish(&s, g, &q, started_here, stashed).await {
        Ok((session, created)) => Ok(match to {
            Some(Return::Dashboard) => {
                let mut resp =
                    (StatusCode::SEE_OTHER, [(header::LOCATION, "/dashboard")]).into_response();
                let h = resp.headers_mut();
                h.append(header::SET_COOKIE, clear);
                for c in crate::browser::session_cookies(&session) {
                    h.append(header::SET_COOKIE, c);
                }
                resp
            }
            None => {
                let status = if created {
                    StatusCode::CREATED
                } else {
                    StatusCode::OK
                };
                (
                    status,
                    [(header::SET_COOKIE, clear)],
                    axum::Json(SessionView::from(session)),
                )
                    .into_response()
            }
        }),
        Err(e) => match to {
            // The log-in page says why in the person's language; the detail is logged.
            Some(Return::Dashboard) => {
                let why = match &e {
                    ApiError::Conflict(_) => "conflict",
                    ApiError::Forbidden(_) => "forbidden",
                    _ => "failed",
                };
                tracing::info!(error = %e, "dashboard sign-in with Google refused");
                Ok((
                    StatusCode::SEE_OTHER,
                    [
                        (
                            header::LOCATION,
                            HeaderValue::from_str(&format!("/dashboard/login?google={why}"))
                                .map_err(|e| ApiError::Internal(format!("location: {e}")))?,
                        ),
                        (header::SET_COOKIE, clear),
                    ],
                )
                    .into_response())
            }
            None => Err(e),
        },
    }
}

/// The checks of the callback and the sign-in: the account and whether it was made now.
async fn finish(
    s: &ApiState,
    g: &GoogleSignIn,
    q: &CallbackQuery,
    started_here: bool,
    stashed: Option<Stashed>,
) -> Result<(clawdbot_accounts::Session, bool), ApiError> {
    if let Some(error) = q.error.as_deref() {
        let error: String = error
            .chars()
            .filter(|c| c.is_ascii_graphic())
            .take(64)
            .collect();
        return Err(ApiError::BadRequest(format!(
            "the provider did not sign you in ({error}); start again"
        )));
    }
    let (Some(code), Some(state)) = (
        q.code.as_deref().filter(|c| !c.is_empty()),
        q.state.as_deref().filter(|s| !s.is_empty()),
    ) else {
        return Err(ApiError::BadRequest(
            "the callback needs the `code` and `state` the provider sends".into(),
        ));
    };
    if !started_here {
        return Err(ApiError::BadRequest(
            "state mismatch: this sign-in was not started in this browser; start again".into(),
        ));
    }
    let pending = stashed.map(|s| s.pending).ok_or_else(|| {
        ApiError::BadRequest("unknown, expired or already used sign-in; start again".into())
    })?;
    let who = g
        .client()
        .await?
        .finish(pending, code, state)
        .await
        .map_err(provider_error)?;
    Ok(s.accounts
        .sign_in_external(&ExternalIdentity {
            issuer: who.issuer,
            subject: who.subject,
            email: who.email,
            email_verified: who.email_verified,
            name: who.name,
        })
        .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_allowed_places_to_return_to() {
        assert_eq!(Return::parse(None).unwrap(), None);
        assert_eq!(Return::parse(Some("api")).unwrap(), None);
        assert_eq!(
            Return::parse(Some("dashboard")).unwrap(),
            Some(Return::Dashboard)
        );
        for bad in ["https://evil.example", "/dashboard", "Dashboard"] {
            assert!(Return::parse(Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_pending_sign_in_stored_before_the_choice_reads_as_the_api() {
        let old = r#"{"state":"s","nonce":"n","pkce_verifier":"v","started_at":1}"#;
        let s: Stashed = serde_json::from_str(old).unwrap();
        assert_eq!((s.to, s.pending.state.as_str()), (None, "s"));
    }

    #[test]
    fn the_state_cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; clawdbot_oidc_state=abc; b=2"),
        );
        assert_eq!(cookie_value(&h, STATE_COOKIE), Some("abc"));
        assert_eq!(cookie_value(&h, "c"), None);
        assert_eq!(cookie_value(&HeaderMap::new(), STATE_COOKIE), None);
    }
}
