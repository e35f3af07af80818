//! Google sign-in in tests: a router whose Google settings point at the test kit's OpenID
//! provider, and a browser's part of the flow (follow the redirect, keep the cookie).

use std::collections::HashMap;

use clawdbot_router::Secret;
use clawdbot_testkit::fake_oidc::FakeOidc;
use reqwest::StatusCode;
use serde_json::Value;

use super::{Replica, World};

pub const CLIENT_ID: &str = "clawdbot-test.apps.googleusercontent.com";
pub const CLIENT_SECRET: &str = "GOCSPX-test-client-secret-0123456789";

/// A router with accounts and Google sign-in on, and its provider.
pub async fn router_with_google(w: &World) -> (Replica, FakeOidc) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let redirect = format!(
        "http://{}/api/v1/auth/oauth/google/callback",
        listener.local_addr().expect("addr")
    );
    let provider = FakeOidc::start(CLIENT_ID, CLIENT_SECRET, &[redirect.as_str()]).await;
    let mut config = w.api_config();
    config.accounts.google.issuer = provider.issuer();
    config.accounts.google.client_id = Some(CLIENT_ID.into());
    config.accounts.google.client_secret = Some(Secret::new(CLIENT_SECRET));
    config.accounts.google.redirect_url = Some(redirect);
    (w.start_router_on(listener, config).await, provider)
}

/// A browser's sign-in, stopped at the provider's redirect back to the router.
pub struct Started {
    /// The state cookie the router set.
    pub cookie: String,
    /// What the provider put on the redirect: `code` and `state`, or `error`.
    pub callback: HashMap<String, String>,
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// `GET .../start`, then the provider's authorization page (which signs its test user in).
pub async fn start(r: &Replica, provider: &FakeOidc) -> Started {
    start_with(r, provider, "").await
}

/// [`start`] with `query` (`?return=...`) on the start URL.
pub async fn start_with(r: &Replica, provider: &FakeOidc, query: &str) -> Started {
    let resp = no_redirects()
        .get(format!("{}/api/v1/auth/oauth/google/start{query}", r.base))
        .send()
        .await
        .expect("start");
    assert_eq!(resp.status(), StatusCode::FOUND);
    let location = resp.headers()[reqwest::header::LOCATION]
        .to_str()
        .expect("location")
        .to_string();
    let set_cookie = resp.headers()[reqwest::header::SET_COOKIE]
        .to_str()
        .expect("cookie")
        .to_string();
    assert!(set_cookie.contains("HttpOnly"), "{set_cookie}");
    let cookie = set_cookie
        .split(';')
        .next()
        .expect("cookie pair")
        .to_string();
    let callback = provider.authorize(&location).await.expect("authorized");
    Started { cookie, callback }
}

/// `GET .../callback` with `query` and `cookie` (as the browser would send them).
pub async fn callback(
    r: &Replica,
    query: &[(&str, &str)],
    cookie: Option<&str>,
) -> (StatusCode, Value) {
    let mut req = no_redirects()
        .get(format!("{}/api/v1/auth/oauth/google/callback", r.base))
        .query(query);
    if let Some(c) = cookie {
        req = req.header(reqwest::header::COOKIE, c);
    }
    let resp = req.send().await.expect("callback");
    let status = resp.status();
    let body = resp.json().await.unwrap_or(Value::Null);
    (status, body)
}

impl Started {
    pub fn code(&self) -> &str {
        &self.callback["code"]
    }
    pub fn state(&self) -> &str {
        &self.callback["state"]
    }
    /// Finishes as the browser that started.
    pub async fn finish(&self, r: &Replica) -> (StatusCode, Value) {
        callback(
            r,
            &[("code", self.code()), ("state", self.state())],
            Some(&self.cookie),
        )
        .await
    }
}
