//! The dashboard in a real browser: headless Chromium (Debian `chromium`) driven by npm
//! `playwright-core` (`hack/e2e/journey.mjs`) against a real router with Postgres, Redis, the
//! control plane, the fake Telegram server (long polling), the test kit's OpenID provider
//! standing in for Google, and the real lite agent (in this process, its model the fake
//! provider, which echoes), so that Sessions shows the conversations the agent really kept.
//!
//! The journey script asks this test, over a small control server, for what the world around
//! the browser does: the operator marking the workspace ready, a Telegram user sending an
//! update, who Google signs in. The upgrade is real: the browser pays on the local Stripe's hosted Checkout page
//! (`hack/testkit` `fake_stripe`), which sends the signed webhooks to the router. Screenshots of every page at desktop and
//! phone width go to `$DASHBOARD_SHOTS` (default: the temp dir), printed at the end.
//!
//! Needs `hack/install-deps.sh` (chromium, node, `npm ci` in `hack/e2e`); without them the
//! test fails and says so.

mod support;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use clawdbot_api::plan::Runtime;
use clawdbot_api::{Plan, Plans};
use clawdbot_router::Secret;
use clawdbot_router::config::TelegramUpdatesMode;
use clawdbot_testkit::fake_chat::telegram_text_update;
use clawdbot_testkit::fake_llm::{FakeLlm, Flavor};
use clawdbot_testkit::fake_oidc::{FakeOidc, TestUser};
use clawdbot_testkit::fake_stripe::FakeStripe;
use clawdbot_testkit::node;
use serde::Deserialize;
use serde_json::{Value, json};
use support::lite::LiteAgent;
use support::node::{LITE_IMAGE, Operator, operator_config};
use support::{Replica, TestAgent, World};
use uuid::Uuid;

const STRIPE_KEY: &str = "sk_test_51ClawdbotDashboard000000000000";
const WEBHOOK_SECRET: &str = "whsec_test_clawdbot_dashboard_0123";
const PRICE_PRO: &str = "price_1ClawdbotPro00000000000";
const PRICE_TEAM: &str = "price_1ClawdbotTeam0000000000";

struct Control {
    world: World,
    replica: Replica,
    agent: LiteAgent,
    _llm: FakeLlm,
    stripe: FakeStripe,
    google: FakeOidc,
    next_update: AtomicI64,
}

#[derive(Deserialize)]
struct ByEmail {
    email: String,
}

async fn user_id(w: &World, email: &str) -> Option<Uuid> {
    sqlx::query_scalar("SELECT id FROM users WHERE email = $1")
        .bind(email.to_lowercase())
        .fetch_optional(&w.db)
        .await
        .expect("look up user")
}

/// Plays the operator: the user's workspace is Running and Ready with the lite agent.
async fn ready(State(c): State<Arc<Control>>, Json(b): Json<ByEmail>) -> Json<Value> {
    let user = user_id(&c.world, &b.email).await.expect("user exists");
    let ws = clawdbot_accounts::provision::workspace_name(user);
    c.world.set_token(&ws, &c.agent.token).await;
    c.world.mark_ready(&ws, &c.agent.url).await;
    support::api::wait_usable(&c.replica, user).await;
    Json(json!({"workspace": ws}))
}

#[derive(Deserialize)]
struct Credentials {
    email: String,
    password: String,
}

/// An admin account, as `clawdbot-admin` makes one.
async fn admin(State(c): State<Arc<Control>>, Json(b): Json<Credentials>) -> Json<Value> {
    let api = c.replica.api.as_ref().expect("accounts configured");
    let user = api
        .accounts
        .create_admin(&b.email, &b.password)
        .await
        .expect("create admin");
    Json(json!({"id": user.id}))
}

async fn exists(State(c): State<Arc<Control>>, Query(b): Query<ByEmail>) -> Json<Value> {
    Json(json!({"exists": user_id(&c.world, &b.email).await.is_some()}))
}

/// Who the Google stand-in signs in next (a verified e-mail).
async fn google_user(State(c): State<Arc<Control>>, Json(b): Json<ByEmail>) -> Json<Value> {
    let sub = format!("{}", rand::random::<u64>());
    c.google.set_user(TestUser {
        sub: sub.clone(),
        email: b.email,
        email_verified: true,
        name: Some("Google Person".into()),
    });
    Json(json!({"sub": sub}))
}

#[derive(Deserialize)]
struct Update {
    chat_id: i64,
    text: String,
}

/// A Telegram user writes to the bot (the router takes it by long polling).
async fn telegram(State(c): State<Arc<Control>>, Json(u): Json<Update>) -> Json<Value> {
    let id = c.next_update.fetch_add(1, Ordering::Relaxed);
    c.world
        .telegram
        .push_update(telegram_text_update(id, u.chat_id, &u.text));
    Json(json!({"update_id": id}))
}

/// What the bot has sent to a chat.
async fn telegram_sent(State(c): State<Arc<Control>>, Path(chat): Path<i64>) -> Json<Value> {
    let sent: Vec<String> = c
        .world
        .telegram
        .sent_to(chat)
        .into_iter()
        .map(|m| m.text)
        .collect();
    Json(json!({"sent": sent}))
}

async fn control_server(control: Arc<Control>) -> String {
    let app = axum::Router::new()
        .route("/ready", post(ready))
        .route("/admin", post(admin))
        .route("/exists", get(exists))
        .route("/google", post(google_user))
        .route("/telegram", post(telegram))
        .route("/telegram/{chat}", get(telegram_sent))
        .with_state(control);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind control");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    url
}

fn shots_dir() -> PathBuf {
    std::env::var_os("DASHBOARD_SHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("clawdbot-dashboard-shots"))
}

/// Runs `hack/e2e/<script>` with `env`; panics with its output if it fails.
async fn run_script(script: &str, label: &str, env: &[(&str, String)]) {
    let root = clawdbot_testkit::repo_root();
    assert!(
        root.join("hack/e2e/node_modules/playwright-core").is_dir(),
        "playwright-core is not installed: run hack/install-deps.sh (npm ci in hack/e2e)"
    );
    assert!(
        std::path::Path::new("/usr/bin/chromium").exists(),
        "chromium is not installed: run hack/install-deps.sh"
    );
    let started = Instant::now();
    let mut cmd = tokio::process::Command::new("node");
    cmd.arg(root.join("hack/e2e").join(script))
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(Duration::from_secs(300), cmd.output())
        .await
        .expect("the journey ends within 5 minutes")
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "journey {label} failed:\n{stdout}\n{stderr}"
    );
    println!("journey {label}: {:.1} s", started.elapsed().as_secs_f64());
}

/// Runs the journey once in `lang` at `viewport` width.
async fn journey(c: &Control, control: &str, lang: &str, viewport: &str, chat_id: i64) {
    run_script(
        "journey.mjs",
        &format!("{lang} {viewport}"),
        &[
            ("DASHBOARD_URL", c.replica.base.clone()),
            ("CONTROL_URL", control.to_string()),
            ("STRIPE_URL", c.stripe.url()),
            ("GOOGLE_URL", c.google.issuer()),
            ("E2E_LANG", lang.to_string()),
            ("E2E_VIEWPORT", viewport.to_string()),
            ("E2E_CHAT_ID", chat_id.to_string()),
            (
                "SHOTS_DIR",
                shots_dir()
                    .join(format!("{lang}-{viewport}"))
                    .to_string_lossy()
                    .into_owned(),
            ),
        ],
    )
    .await;
}

async fn world_with_router() -> (Arc<Control>, String) {
    let world = World::new().await;
    let mut config = world.api_config();
    // Billing through the local Stripe; Checkout sends the browser back to this router.
    let stripe = FakeStripe::start(
        STRIPE_KEY,
        WEBHOOK_SECRET,
        &[(PRICE_PRO, 1_200), (PRICE_TEAM, 4_900)],
    )
    .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    config.accounts.plans = Arc::new(
        Plans::parse(&format!(
            "pro: {{stripePriceId: {PRICE_PRO}}}\nteam: {{stripePriceId: {PRICE_TEAM}}}\n"
        ))
        .expect("plans"),
    );
    config.billing.stripe_secret_key = Some(Secret::new(STRIPE_KEY));
    config.billing.stripe_webhook_secret = Some(Secret::new(WEBHOOK_SECRET));
    config.billing.stripe_api_base = stripe.url();
    config.billing.billing_return_url = Some(format!("{base}/dashboard/billing"));
    // Google sign-in through the test kit's provider, back to this router's callback.
    let redirect = format!("{base}/api/v1/auth/oauth/google/callback");
    let google = FakeOidc::start(
        support::google::CLIENT_ID,
        support::google::CLIENT_SECRET,
        &[redirect.as_str()],
    )
    .await;
    config.accounts.google.issuer = google.issuer();
    config.accounts.google.client_id = Some(support::google::CLIENT_ID.into());
    config.accounts.google.client_secret = Some(Secret::new(support::google::CLIENT_SECRET));
    config.accounts.google.redirect_url = Some(redirect);
    // Updates come from the fake Telegram server by long polling, as in production without
    // a public URL.
    config.telegram.updates = TelegramUpdatesMode::Polling;
    config.telegram.webhook_secret = None;
    let replica = world.start_router_on(listener, config).await;
    stripe.set_webhook_url(&format!("{}/webhooks/stripe", replica.base));
    let llm = FakeLlm::openai().await;
    let agent = LiteAgent::start(&llm, None).await;
    let control = Arc::new(Control {
        world,
        replica,
        agent,
        _llm: llm,
        stripe,
        google,
        next_update: AtomicI64::new(1),
    });
    let url = control_server(control.clone()).await;
    (control, url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_journey_in_english_on_a_desktop() {
    let (c, control) = world_with_router().await;
    journey(&c, &control, "en", "desktop", 7_410_001).await;
    println!("screenshots: {}", shots_dir().display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_journey_in_russian_on_a_phone() {
    let (c, control) = world_with_router().await;
    journey(&c, &control, "ru", "phone", 7_410_002).await;
    println!("screenshots: {}", shots_dir().display());
}

/// Without a browser: pages need a session, forms need the CSRF token, every page carries the
/// policy, and a session's cookies are HttpOnly and Secure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_out_pages_redirect_and_forms_need_the_token() {
    let w = World::new().await;
    let r = w.start_router(w.api_config()).await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let url = |p: &str| format!("{}{p}", r.base);
    for path in [
        "/dashboard",
        "/dashboard/channels",
        "/dashboard/keys",
        "/dashboard/settings/export",
    ] {
        let resp = http.get(url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 303, "{path}");
        assert_eq!(resp.headers()["location"], "/dashboard/login", "{path}");
    }
    // htmx follows HX-Redirect instead of swapping a login page into the fragment.
    let resp = http
        .get(url("/dashboard/state"))
        .header("hx-request", "true")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.headers()["hx-redirect"], "/dashboard/login");

    let page = http.get(url("/dashboard/login")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"));
    let set = page.headers()["set-cookie"].to_str().unwrap().to_string();
    let token = set
        .strip_prefix("cb_csrf=")
        .and_then(|v| v.split(';').next())
        .expect("csrf cookie")
        .to_string();
    let body = page.text().await.unwrap();
    assert!(
        body.contains(&format!("value=\"{token}\"")),
        "forms carry the token"
    );
    assert!(
        !body.contains("oauth/google"),
        "no Google button where Google sign-in is not configured"
    );

    let email = format!("dash-{:08x}@example.com", rand::random::<u32>());
    let form = [
        ("email", email.as_str()),
        ("password", "correct horse battery"),
    ];
    let refused = http
        .post(url("/dashboard/signup"))
        .header("cookie", format!("cb_csrf={token}"))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    assert!(user_id(&w, &email).await.is_none(), "nothing was created");

    let signed_up = http
        .post(url("/dashboard/signup"))
        .header("cookie", format!("cb_csrf={token}"))
        .form(&[
            ("email", email.as_str()),
            ("password", "correct horse battery"),
            ("csrf", token.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(signed_up.status(), 303);
    assert_eq!(signed_up.headers()["location"], "/dashboard");
    let cookies: Vec<String> = signed_up
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    let session = cookies
        .iter()
        .find(|c| c.starts_with("cb_session="))
        .expect("session cookie");
    for attr in ["HttpOnly", "Secure", "SameSite=Lax"] {
        assert!(session.contains(attr), "{session}");
    }
    let jar: Vec<&str> = cookies.iter().filter_map(|c| c.split(';').next()).collect();
    let home = http
        .get(url("/dashboard"))
        .header("cookie", format!("cb_csrf={token}; {}", jar.join("; ")))
        .send()
        .await
        .unwrap();
    assert_eq!(home.status(), 200);
    assert!(home.text().await.unwrap().contains(&email));

    // Unknown paths stay the API's JSON 404.
    let missing = http.get(url("/no/such/page")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    r.shutdown().await;
}

/// Signs up through the dashboard's form; returns the CSRF token and the cookies set.
async fn dashboard_signup(
    http: &reqwest::Client,
    base: &str,
    email: &str,
) -> (String, Vec<String>) {
    let page = http
        .get(format!("{base}/dashboard/signup"))
        .send()
        .await
        .expect("signup page");
    let set = page.headers()["set-cookie"]
        .to_str()
        .expect("ascii cookie")
        .to_string();
    let token = set
        .strip_prefix("cb_csrf=")
        .and_then(|v| v.split(';').next())
        .expect("csrf cookie")
        .to_string();
    let resp = http
        .post(format!("{base}/dashboard/signup"))
        .header("cookie", format!("cb_csrf={token}"))
        .form(&[
            ("email", email),
            ("password", "correct horse battery"),
            ("csrf", token.as_str()),
        ])
        .send()
        .await
        .expect("signup");
    assert_eq!(resp.status(), 303);
    let cookies = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok()?.split(';').next().map(String::from))
        .collect();
    (token, cookies)
}

/// Without the access cookie (expired), the refresh cookie renews the session, once, even
/// for requests that arrive together (the refresh token is single use).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_session_is_renewed_once_for_requests_that_arrive_together() {
    let w = World::new().await;
    let r = w.start_router(w.api_config()).await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let email = format!("renew-{:08x}@example.com", rand::random::<u32>());
    let (_, cookies) = dashboard_signup(&http, &r.base, &email).await;
    let refresh = cookies
        .iter()
        .find(|c| c.starts_with("cb_refresh="))
        .unwrap()
        .clone();
    let get = |path: &str| {
        http.get(format!("{}{path}", r.base))
            .header("cookie", refresh.clone())
            .send()
    };
    let (a, b) = tokio::join!(get("/dashboard"), get("/dashboard/state"));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.status(), 200);
    assert_eq!(b.status(), 200);
    for resp in [&a, &b] {
        assert!(
            resp.headers()
                .get_all("set-cookie")
                .iter()
                .any(|c| c.to_str().unwrap().starts_with("cb_session=")),
            "a new access cookie"
        );
    }
    // The renewed refresh token works; the old one is spent.
    let renewed = a
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|c| c.to_str().unwrap().to_string())
        .find(|c| c.starts_with("cb_refresh="))
        .unwrap();
    assert!(!renewed.starts_with(&refresh));
    let again = http
        .get(format!("{}/dashboard", r.base))
        .header("cookie", renewed.split(';').next().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 200);
    r.shutdown().await;
}

/// The web chat token the dashboard uses is the public API's: issued to the signed-in user,
/// it carries a message to their assistant and back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_issues_a_web_chat_token_that_reaches_the_assistant() {
    let w = World::new().await;
    let r = w.start_router(w.api_config()).await;
    let agent = TestAgent::start().await;
    let mut api = support::api::ApiClient::new(&r);
    let (status, _) = api
        .call(reqwest::Method::POST, "/web/chat-token", None)
        .await;
    assert_eq!(status, 401);
    api.register(
        &format!("chat-{:08x}@example.com", rand::random::<u32>()),
        "correct horse battery",
    )
    .await;
    let user = api.user();
    let ws = clawdbot_accounts::provision::workspace_name(user);
    w.set_token(&ws, &agent.token).await;
    w.mark_ready(&ws, &agent.base_url).await;
    support::api::wait_usable(&r, user).await;
    let (status, body) = api
        .call(reqwest::Method::POST, "/web/chat-token", None)
        .await;
    assert_eq!(status, 200, "{body}");
    let token = body["token"].as_str().unwrap();
    let reply = w
        .http
        .post(format!("{}/api/v1/web/messages", r.base))
        .bearer_auth(token)
        .json(&json!({"id": "m1", "text": "hello over the api"}))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    let text = tokio::time::timeout(Duration::from_secs(30), reply.text())
        .await
        .expect("the stream ends")
        .unwrap();
    assert!(
        text.contains("event: reply\ndata: echo #1: hello over the api"),
        "{text}"
    );
    r.shutdown().await;
}

/// The cookies a response sets, as `name=value` pairs.
fn set_cookies(resp: &reqwest::Response) -> Vec<String> {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().expect("ascii cookie").to_string())
        .collect()
}

/// Google sign-in started from the dashboard (`start?return=dashboard`) ends on the
/// dashboard with its session cookies, not with the API's JSON; a refusal ends on the log-in
/// page with the reason; `return` takes only the allowed places.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn google_sign_in_from_the_dashboard_ends_signed_in_on_the_dashboard() {
    let w = World::new().await;
    let (r, provider) = support::google::router_with_google(&w).await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let url = |p: &str| format!("{}{p}", r.base);
    for page in ["/dashboard/login", "/dashboard/signup"] {
        let body = http
            .get(url(page))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            body.contains("href=\"/api/v1/auth/oauth/google/start?return=dashboard\""),
            "{page} offers Google: {body}"
        );
    }
    let bad = http
        .get(url(
            "/api/v1/auth/oauth/google/start?return=https://evil.example/",
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 422);
    assert!(bad.headers().get("location").is_none());

    let email = format!("g-{:08x}@example.com", rand::random::<u32>());
    provider.set_user(TestUser {
        sub: format!("{}", rand::random::<u64>()),
        email: email.clone(),
        email_verified: true,
        name: None,
    });
    let started = support::google::start_with(&r, &provider, "?return=dashboard").await;
    let resp = http
        .get(url("/api/v1/auth/oauth/google/callback"))
        .query(&[("code", started.code()), ("state", started.state())])
        .header("cookie", &started.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    assert_eq!(resp.headers()["location"], "/dashboard");
    let cookies = set_cookies(&resp);
    let session = cookies
        .iter()
        .find(|c| c.starts_with("cb_session="))
        .expect("session cookie");
    for attr in ["HttpOnly", "Secure", "SameSite=Lax", "Path=/"] {
        assert!(session.contains(attr), "{session}");
    }
    assert!(
        cookies
            .iter()
            .any(|c| c.starts_with("clawdbot_oidc_state=;") && c.contains("Max-Age=0")),
        "the sign-in's cookie is cleared: {cookies:?}"
    );
    let jar: Vec<&str> = cookies.iter().filter_map(|c| c.split(';').next()).collect();
    let home = http
        .get(url("/dashboard"))
        .header("cookie", jar.join("; "))
        .send()
        .await
        .unwrap();
    assert_eq!(home.status(), 200);
    assert!(home.text().await.unwrap().contains(&email));
    assert!(user_id(&w, &email).await.is_some());

    // The same e-mail as a password account: not linked; the log-in page says why.
    let taken = format!("pw-{:08x}@example.com", rand::random::<u32>());
    dashboard_signup(&http, &r.base, &taken).await;
    provider.set_user(TestUser {
        sub: format!("{}", rand::random::<u64>()),
        email: taken.clone(),
        email_verified: true,
        name: None,
    });
    let started = support::google::start_with(&r, &provider, "?return=dashboard").await;
    let resp = http
        .get(url("/api/v1/auth/oauth/google/callback"))
        .query(&[("code", started.code()), ("state", started.state())])
        .header("cookie", &started.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    assert_eq!(
        resp.headers()["location"],
        "/dashboard/login?google=conflict"
    );
    assert!(
        !set_cookies(&resp)
            .iter()
            .any(|c| c.starts_with("cb_session=")),
        "no session"
    );
    let page = http
        .get(url("/dashboard/login?google=conflict"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("already exists"), "{page}");

    // The person said no at Google: back on the log-in page.
    let started = support::google::start_with(&r, &provider, "?return=dashboard").await;
    let resp = http
        .get(url("/api/v1/auth/oauth/google/callback"))
        .query(&[("error", "access_denied"), ("state", started.state())])
        .header("cookie", &started.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    assert_eq!(resp.headers()["location"], "/dashboard/login?google=failed");
    r.shutdown().await;
}

/// Sessions, without a browser: 21 conversations made by real Telegram messages through the
/// router to the lite agent are listed 20 a page; a conversation of 16 turns shows its newest
/// 30 messages and a link to the older ones; the channel filter leaves the others out; Home's
/// recent activity shows the latest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_listed_a_page_at_a_time_from_the_agent() {
    let w = World::new().await;
    let mut config = w.api_config();
    config.limits.rate_limit_per_minute = 1_000;
    // 21 chat accounts of one user: a plan that connects them all (past its channel limit,
    // the newest would be paused, not answered).
    config.accounts.plans = Arc::new(Plans::parse("free: {maxChannels: 30}\n").expect("plans"));
    let r = w.start_router(config).await;
    let llm = FakeLlm::openai().await;
    let agent = LiteAgent::start(&llm, None).await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let email = format!("pages-{:08x}@example.com", rand::random::<u32>());
    let (token, cookies) = dashboard_signup(&http, &r.base, &email).await;
    let jar = format!("cb_csrf={token}; {}", cookies.join("; "));
    let page = |path: String| {
        let req = http
            .get(format!("{}{path}", r.base))
            .header("cookie", jar.clone());
        async move {
            let resp = req.send().await.expect("page");
            assert_eq!(resp.status(), 200, "{path}");
            resp.text().await.expect("body")
        }
    };
    let user = user_id(&w, &email).await.expect("user");
    // Before the assistant is up the page says so.
    let body = page("/dashboard/sessions".into()).await;
    assert!(body.contains("id=\"sessions-unavailable\""), "{body}");

    let ws = clawdbot_accounts::provision::workspace_name(user);
    w.set_token(&ws, &agent.token).await;
    w.mark_ready(&ws, &agent.url).await;
    support::api::wait_usable(&r, user).await;
    let first = 7_420_000_i64;
    let mut update = 1;
    for i in 0..21 {
        let chat = first + i;
        w.connect("telegram", &chat.to_string(), user).await;
        w.telegram_update(
            &r,
            &telegram_text_update(update, chat, &format!("hello {i}")),
        )
        .await;
        update += 1;
        w.telegram
            .wait_for_messages(chat, 1, Duration::from_secs(30))
            .await;
    }
    // 15 more turns with the first chat, one after the other: 16 turns, 32 messages.
    for turn in 1..16 {
        w.telegram_update(
            &r,
            &telegram_text_update(update, first, &format!("turn {turn}")),
        )
        .await;
        update += 1;
        w.telegram
            .wait_for_messages(first, turn + 1, Duration::from_secs(30))
            .await;
    }

    let one = page("/dashboard/sessions".into()).await;
    assert_eq!(one.matches("<li data-channel=\"telegram\"").count(), 20);
    assert!(one.contains("id=\"sessions-total\">(21)"), "{one}");
    assert!(
        one.contains("page=2\" rel=\"next\" id=\"next-page\""),
        "{one}"
    );
    assert!(!one.contains("id=\"prev-page\""));
    let two = page("/dashboard/sessions?page=2".into()).await;
    assert_eq!(two.matches("<li data-channel=\"telegram\"").count(), 1);
    assert!(two.contains("id=\"prev-page\"") && !two.contains("id=\"next-page\""));
    // The most recently active first: the long conversation is on page one.
    assert!(one.contains(&format!("· {first}</a>")));
    let web = page("/dashboard/sessions?channel=web&days=7".into()).await;
    assert!(web.contains("id=\"sessions-none\""), "{web}");
    assert!(web.contains("<option value=\"web\" selected>"));

    let id = format!("telegram%3Adm%3A{first}");
    let newest = page(format!("/dashboard/sessions/{id}")).await;
    assert_eq!(newest.matches("<li class=\"you\"").count(), 15);
    assert!(newest.contains("turn 15") && !newest.contains(">hello 0<"));
    let older = newest
        .split("href=\"")
        .find_map(|s| s.strip_prefix(&format!("/dashboard/sessions/{id}?before=")))
        .and_then(|s| s.split('"').next())
        .expect("a link to the older messages");
    let before: String = url::form_urlencoded::parse(format!("b={older}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .expect("cursor");
    let page_two = page(format!(
        "/dashboard/sessions/{id}?before={}",
        url::form_urlencoded::byte_serialize(before.as_bytes()).collect::<String>()
    ))
    .await;
    assert!(page_two.contains("hello 0"), "{page_two}");
    assert!(page_two.contains("id=\"newest\""));
    // An unknown conversation is a page that says so, not an error of the server.
    let missing = http
        .get(format!("{}/dashboard/sessions/telegram%3Adm%3A1", r.base))
        .header("cookie", jar.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);

    let recent = page("/dashboard/recent".into()).await;
    assert_eq!(recent.matches("<li data-channel=\"telegram\"").count(), 5);
    r.shutdown().await;
    agent.stop().await;
}

/// The node journey's control server: the account's plan (the upgrade is the main journey's).
async fn node_control(w: Arc<World>) -> String {
    let pro = |State(w): State<Arc<World>>, Json(b): Json<ByEmail>| async move {
        let user = user_id(&w, &b.email).await.expect("user exists");
        sqlx::query("UPDATE users SET plan = 'pro' WHERE id = $1")
            .bind(user)
            .execute(&w.db)
            .await
            .expect("pro plan");
        Json(json!({"id": user}))
    };
    let app = axum::Router::new().route("/pro", post(pro)).with_state(w);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind control");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    url
}

/// The assistant for real: the operator (in this process) runs the user's agent as a pod on
/// the node (the lite agent, with the person's own "OpenAI" key, which is the fake provider on
/// the node's bridge address), Home shows it starting then ready without a
/// reload, and the browser chat is answered by the pod, whose conversation then shows under
/// Sessions
/// (`hack/e2e/node-journey.mjs`). Needs the node (`hack/dev-env.sh up`) and
/// `hack/build-images.sh lite`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_node_the_assistant_starts_and_answers_in_the_browser() {
    let w = Arc::new(World::on_node().await);
    node::require_image(LITE_IMAGE, "lite");
    // The pod's "OpenAI": the fake provider (it echoes) on the node's bridge address.
    let llm = FakeLlm::start_on(Flavor::OpenAi, &node::host_ip()).await;
    let mut operator_settings = operator_config(llm.base_url());
    // The lite agent for Pro too (its default is OpenClaw, whose pods `tests/node.rs` runs):
    // one light pod start for this file.
    let mut pro = operator_settings.policy(Plan::Pro);
    pro.default_runtime = Runtime::Lite;
    operator_settings.plans.insert(Plan::Pro, pro);
    let operator = Operator::start(&w.kube, &w.namespace, operator_settings).await;
    let mut config = w.api_config();
    config.limits.agent_timeout = Duration::from_secs(30);
    let r = w.start_router(config).await;
    let control = node_control(w.clone()).await;
    run_script(
        "node-journey.mjs",
        "on the node",
        &[
            ("DASHBOARD_URL", r.base.clone()),
            ("CONTROL_URL", control),
            (
                "SHOTS_DIR",
                shots_dir().join("node").to_string_lossy().into_owned(),
            ),
        ],
    )
    .await;
    assert!(
        llm.completions()
            .iter()
            .any(|c| c.body.to_string().contains("hello pod")),
        "the pod called the model"
    );
    r.shutdown().await;
    operator.stop().await;
    node::delete_namespace(&w.kube, &w.namespace).await;
}
