//! What every dashboard request is checked for and every response carries: security headers
//! (a Content-Security-Policy that allows no inline script or style), the CSRF token
//! (double-submit: an HttpOnly, SameSite=Strict cookie that every form echoes in a hidden
//! field), and the session cookies, whose access token is renewed from the refresh cookie
//! when it has expired.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use clawdbot_accounts::{Session, User};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::DashState;

// The session's cookies are set by the dashboard's forms and by the API's Google callback
// (for a sign-in the dashboard started), so they live beside both.
pub use crate::browser::{REFRESH, SESSION, cleared_session, cookie, session_cookies, set_cookie};

pub const CSRF: &str = "cb_csrf";
pub const LANG: &str = "cb_lang";
pub const THEME: &str = "cb_theme";
/// The form field (and, for scripts, the header) that carries the CSRF token.
pub const CSRF_FIELD: &str = "csrf";
pub const CSRF_HEADER: &str = "x-csrf-token";

/// Scripts and styles only from the dashboard's own files (htmx is configured not to inject
/// its indicator style); no frames, no foreign form targets, no plugins.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; \
    base-uri 'none'";

/// [`CSP`] for a page whose forms are answered with a redirect to another site (the billing
/// page's go to Stripe's Checkout and Billing Portal): `form-action` names those origins too,
/// as browsers check a form's redirects against it. Anything but a plain origin is left out.
pub fn csp_with_form_targets(origins: &[String]) -> String {
    let extra: String = origins
        .iter()
        .filter(|o| url::Url::parse(o).is_ok_and(|u| u.origin().ascii_serialization() == **o))
        .map(|o| format!(" {o}"))
        .collect();
    CSP.replace("form-action 'self'", &format!("form-action 'self'{extra}"))
}

/// A form body larger than this is not a dashboard form (the API key field is the longest).
const MAX_FORM_BYTES: usize = 64 * 1024;
/// A renewed session is handed to concurrent requests that present the same old refresh
/// token (a page and its polling fragment), instead of tripping the reuse detection.
const RENEWED_KEPT: Duration = Duration::from_secs(30);

/// The CSRF token of this request, for the forms a page renders.
#[derive(Clone, Debug)]
pub struct Csrf(pub String);

/// Sessions renewed in the last seconds, by the hash of the refresh token they replaced.
#[derive(Default)]
pub struct Renewals(tokio::sync::Mutex<HashMap<[u8; 32], (Instant, Session)>>);

impl Renewals {
    /// Exchanges `refresh` once, however many requests present it at the same time.
    async fn renew(
        &self,
        accounts: &clawdbot_accounts::Accounts,
        refresh: &str,
    ) -> Option<Session> {
        let key: [u8; 32] = Sha256::digest(refresh.as_bytes()).into();
        let mut done = self.0.lock().await;
        done.retain(|_, (at, _)| at.elapsed() < RENEWED_KEPT);
        if let Some((_, s)) = done.get(&key) {
            return Some(s.clone());
        }
        let session = accounts.refresh(refresh).await.ok()?;
        done.insert(key, (Instant::now(), session.clone()));
        Some(session)
    }
}

fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        // Browsers send Origin with every form POST; a client without it is no browser
        // acting for another site, and still needs the token.
        return true;
    };
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let authority = origin.split_once("://").map(|(_, a)| a);
    matches!((authority, host), (Some(a), Some(h)) if a == h)
}

fn form_field(body: &[u8], name: &str) -> Option<String> {
    url::form_urlencoded::parse(body)
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

fn tokens_match(a: &str, b: &str) -> bool {
    !a.is_empty() && a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

fn refused(message: &'static str) -> Response {
    (
        StatusCode::FORBIDDEN,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        message,
    )
        .into_response()
}

/// CSRF check on every unsafe method, the CSRF cookie, and the security headers. Needs no
/// state, so it is tested alone.
pub async fn protect(req: Request, next: Next) -> Response {
    let (mut parts, body) = req.into_parts();
    let had_csrf = cookie(&parts.headers, CSRF);
    let csrf = had_csrf
        .clone()
        .unwrap_or_else(|| hex::encode(rand::random::<[u8; 32]>()));
    let body = if matches!(parts.method, Method::GET | Method::HEAD) {
        body
    } else {
        let Ok(bytes) = axum::body::to_bytes(body, MAX_FORM_BYTES).await else {
            return refused("The form is too large.");
        };
        let sent = parts
            .headers
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .or_else(|| form_field(&bytes, CSRF_FIELD));
        let genuine = match (&had_csrf, &sent) {
            (Some(cookie), Some(sent)) => tokens_match(cookie, sent),
            _ => false,
        };
        if !genuine || !same_origin(&parts.headers) {
            return refused(
                "This form has expired or did not come from this site. \
                 Go back, reload the page and try again.",
            );
        }
        Body::from(bytes)
    };
    parts.extensions.insert(Csrf(csrf.clone()));
    let mut resp = next.run(Request::from_parts(parts, body)).await;
    let h = resp.headers_mut();
    if had_csrf.is_none() {
        h.append(header::SET_COOKIE, set_cookie(CSRF, &csrf, None, true));
    }
    // A page may widen `form-action` (see [`csp_with_form_targets`]); every other one gets
    // the policy as it is.
    h.entry(header::CONTENT_SECURITY_POLICY)
        .or_insert(HeaderValue::from_static(CSP));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    resp
}

/// Renews the session from the refresh cookie when the access cookie has expired.
pub async fn renew(State(state): State<Arc<DashState>>, req: Request, next: Next) -> Response {
    let (mut parts, body) = req.into_parts();
    let mut set = Vec::new();
    renew_session(&state, &mut parts, &mut set).await;
    let mut resp = next.run(Request::from_parts(parts, body)).await;
    for c in set {
        resp.headers_mut().append(header::SET_COOKIE, c);
    }
    resp
}

/// With an expired (or missing) access cookie and a refresh cookie, exchanges the refresh
/// token and lets this request see the new access token; the browser gets both.
async fn renew_session(state: &DashState, parts: &mut Parts, set: &mut Vec<HeaderValue>) {
    let access = cookie(&parts.headers, SESSION);
    if access
        .as_deref()
        .is_some_and(|a| state.api.accounts.verify_access(a).is_ok())
    {
        return;
    }
    let Some(refresh) = cookie(&parts.headers, REFRESH) else {
        return;
    };
    match state.renewals.renew(&state.api.accounts, &refresh).await {
        Some(session) => {
            let others: Vec<String> = parts
                .headers
                .get_all(header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .map(str::trim)
                .filter(|p| !p.starts_with(&format!("{SESSION}=")))
                .map(str::to_string)
                .collect();
            let mut line = others.join("; ");
            line.push_str(&format!("; {SESSION}={}", session.access_token));
            if let Ok(v) = HeaderValue::from_str(line.trim_start_matches("; ")) {
                parts.headers.remove(header::COOKIE);
                parts.headers.insert(header::COOKIE, v);
            }
            set.extend(session_cookies(&session));
        }
        None => set.extend(cleared_session()),
    }
}

/// The signed-in user of a dashboard request. Without one, pages redirect to the login page
/// (htmx fragments get `HX-Redirect`, which htmx follows).
pub struct Viewer(pub User);

pub struct SignInFirst {
    htmx: bool,
}

impl IntoResponse for SignInFirst {
    fn into_response(self) -> Response {
        if self.htmx {
            ([("hx-redirect", super::LOGIN)], StatusCode::UNAUTHORIZED).into_response()
        } else {
            (
                StatusCode::SEE_OTHER,
                [(header::LOCATION, super::LOGIN)],
                Body::empty(),
            )
                .into_response()
        }
    }
}

impl FromRequestParts<Arc<DashState>> for Viewer {
    type Rejection = SignInFirst;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<DashState>,
    ) -> Result<Self, SignInFirst> {
        let rejection = SignInFirst {
            htmx: parts.headers.contains_key("hx-request"),
        };
        let Some(token) = cookie(&parts.headers, SESSION) else {
            return Err(rejection);
        };
        // The same checks as the API's bearer extractor: a valid token of an existing account.
        let Ok(claims) = state.api.accounts.verify_access(&token) else {
            return Err(rejection);
        };
        let Ok(user) = state.api.accounts.user(claims.sub).await else {
            return Err(rejection);
        };
        tracing::Span::current().record("user", tracing::field::display(user.id));
        Ok(Viewer(user))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_static("a=1; cb_csrf=xyz"));
        h.append(header::COOKIE, HeaderValue::from_static("cb_lang=ru"));
        assert_eq!(cookie(&h, CSRF).as_deref(), Some("xyz"));
        assert_eq!(cookie(&h, LANG).as_deref(), Some("ru"));
        assert_eq!(cookie(&h, SESSION), None);
    }

    #[test]
    fn cookies_are_secure_and_http_only() {
        let c = set_cookie(CSRF, "t", None, true);
        let c = c.to_str().unwrap();
        for part in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"] {
            assert!(c.contains(part), "{c}");
        }
    }

    #[test]
    fn tokens_must_match_exactly_and_not_be_empty() {
        assert!(tokens_match("abc", "abc"));
        assert!(!tokens_match("abc", "abd"));
        assert!(!tokens_match("abc", "ab"));
        assert!(!tokens_match("", ""));
    }

    #[test]
    fn a_foreign_origin_is_refused() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("app.test"));
        assert!(same_origin(&h));
        h.insert(header::ORIGIN, HeaderValue::from_static("https://app.test"));
        assert!(same_origin(&h));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.test"),
        );
        assert!(!same_origin(&h));
    }

    fn app() -> axum::Router {
        axum::Router::new()
            .route(
                "/form",
                axum::routing::get(|| async { "page" }).post(|| async { "done" }),
            )
            .layer(axum::middleware::from_fn(protect))
    }

    async fn send(req: axum::http::Request<Body>) -> Response {
        use tower::ServiceExt;
        app().oneshot(req).await.unwrap()
    }

    fn post(cookie: Option<&str>, body: &str) -> axum::http::Request<Body> {
        let mut b = axum::http::Request::post("/form")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::HOST, "app.test");
        if let Some(c) = cookie {
            b = b.header(header::COOKIE, c);
        }
        b.body(Body::from(body.to_string())).unwrap()
    }

    #[tokio::test]
    async fn a_page_sets_the_token_cookie_and_the_security_headers() {
        let resp = send(
            axum::http::Request::get("/form")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(resp.status(), StatusCode::OK);
        let h = resp.headers();
        assert_eq!(h[header::CONTENT_SECURITY_POLICY], CSP);
        assert_eq!(h[header::X_FRAME_OPTIONS], "DENY");
        assert_eq!(h[header::CACHE_CONTROL], "no-store");
        let set = h[header::SET_COOKIE].to_str().unwrap();
        assert!(
            set.starts_with("cb_csrf=") && set.contains("HttpOnly"),
            "{set}"
        );
    }

    #[tokio::test]
    async fn a_form_without_the_matching_token_is_refused() {
        let no_cookie = send(post(None, "csrf=abc&x=1")).await;
        assert_eq!(no_cookie.status(), StatusCode::FORBIDDEN);
        let no_field = send(post(Some("cb_csrf=abc"), "x=1")).await;
        assert_eq!(no_field.status(), StatusCode::FORBIDDEN);
        let wrong = send(post(Some("cb_csrf=abc"), "csrf=abd&x=1")).await;
        assert_eq!(wrong.status(), StatusCode::FORBIDDEN);
        let body = axum::body::to_bytes(wrong.into_body(), 1000).await.unwrap();
        assert!(String::from_utf8_lossy(&body).contains("reload the page"));
        let right = send(post(Some("cb_csrf=abc"), "csrf=abc&x=1")).await;
        assert_eq!(right.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn a_form_from_another_site_is_refused_even_with_the_token() {
        let mut req = post(Some("cb_csrf=abc"), "csrf=abc");
        req.headers_mut().insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.test"),
        );
        assert_eq!(send(req).await.status(), StatusCode::FORBIDDEN);
    }

    #[test]
    fn the_policy_allows_nothing_inline() {
        assert!(!CSP.contains("unsafe-inline"));
        assert!(!CSP.contains("unsafe-eval"));
        assert!(CSP.contains("script-src 'self'"));
        assert!(CSP.contains("frame-ancestors 'none'"));
        let wide = csp_with_form_targets(&[
            "https://checkout.stripe.com".into(),
            "https://x.test; script-src *".into(),
            "https://billing.stripe.com/path".into(),
        ]);
        assert_eq!(
            wide,
            CSP.replace(
                "form-action 'self'",
                "form-action 'self' https://checkout.stripe.com"
            )
        );
    }
}
