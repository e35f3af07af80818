//! The dashboard's session in the browser: the cookies that carry it, set by the dashboard's
//! sign-up and log-in forms and by the API's Google callback when the dashboard started the
//! sign-in (`/api/v1/auth/oauth/google/start?return=dashboard`). Here rather than in the
//! dashboard so that the API does not import the dashboard (which imports the API).

use axum::http::{HeaderMap, HeaderValue, header};
use chrono::{DateTime, Utc};
use clawdbot_accounts::Session;

pub const SESSION: &str = "cb_session";
pub const REFRESH: &str = "cb_refresh";

/// The request's cookie `name`.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
        .filter(|v| !v.is_empty())
}

/// A `Set-Cookie` value for the dashboard: always `Secure` (browsers count
/// `http://127.0.0.1` and `http://localhost` as secure), HttpOnly unless said otherwise.
pub fn set_cookie(name: &str, value: &str, max_age: Option<i64>, strict: bool) -> HeaderValue {
    let mut c = format!(
        "{name}={value}; Path=/; HttpOnly; Secure; SameSite={}",
        if strict { "Strict" } else { "Lax" }
    );
    if let Some(age) = max_age {
        c.push_str(&format!("; Max-Age={}", age.max(0)));
    }
    HeaderValue::from_str(&c).unwrap_or_else(|_| HeaderValue::from_static("invalid=1; Max-Age=0"))
}

fn seconds_until(t: DateTime<Utc>) -> i64 {
    (t - Utc::now()).num_seconds()
}

/// The cookies of a new session.
pub fn session_cookies(s: &Session) -> [HeaderValue; 2] {
    [
        set_cookie(
            SESSION,
            &s.access_token,
            Some(seconds_until(s.access_expires_at)),
            false,
        ),
        set_cookie(
            REFRESH,
            &s.refresh_token,
            Some(seconds_until(s.refresh_expires_at)),
            false,
        ),
    ]
}

/// The cookies that end a session in the browser.
pub fn cleared_session() -> [HeaderValue; 2] {
    [
        set_cookie(SESSION, "", Some(0), false),
        set_cookie(REFRESH, "", Some(0), false),
    ]
}
