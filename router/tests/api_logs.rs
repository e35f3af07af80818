//! No secret reaches a log line: this suite captures every log line of the process (debug
//! level, every crate) while it drives the API through sign-up, sign-in, failed logins,
//! refresh, reuse, keys, rotation, the admin token, export, deletion and Google sign-in
//! (client secret, codes, nonce, PKCE verifier), then searches the
//! capture for each secret it used. One test in its own binary, so the capture is global.

mod support;

use reqwest::{Method, StatusCode};
use serde_json::json;
use sha2::Digest;
use support::api::{ApiClient, JWT_SECRET, MASTER_K1, MASTER_K2};
use support::google::{CLIENT_SECRET, callback, router_with_google, start};
use support::logs::capture;
use support::{
    ADMIN_TOKEN, TELEGRAM_SECRET, TELEGRAM_TOKEN, WA_ACCESS, WA_APP_SECRET, WEB_SECRET, World,
};

#[tokio::test]
async fn the_logs_of_the_api_hold_no_secret() {
    let logs = capture();
    let w = World::new().await;
    let mut config = w.api_config();
    config.accounts.google.client_secret = Some(clawdbot_router::Secret::new(CLIENT_SECRET));
    // What the router logs at start (main.rs logs the whole config).
    tracing::info!(?config, "starting");
    let (r, provider) = router_with_google(&w).await;

    let password = "my secret password 4711";
    let wrong = "a wrong password 0815";
    let new_password = "the next password 2342";
    let openai = "sk-proj-LOGTESTaaaaaaaaaaaaaaaaaaaa5555";
    let anthropic = "sk-ant-api03-LOGTESTbbbbbbbbbbbbbbbb6666";
    let mail = format!("logs-{:08x}@example.com", rand::random::<u32>());

    let mut a = ApiClient::new(&r);
    a.register(&mail, password).await;
    let first_refresh = a.refresh.clone().unwrap();
    let first_access = a.access.clone().unwrap();
    sqlx::query("UPDATE users SET plan = 'pro' WHERE id = $1")
        .bind(a.user())
        .execute(&w.db)
        .await
        .unwrap();
    assert_eq!(
        ApiClient::new(&r).login(&mail, wrong).await.0,
        StatusCode::UNAUTHORIZED
    );
    let (s, next) = a
        .call(
            Method::POST,
            "/auth/refresh",
            Some(json!({"refresh_token": first_refresh})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    a.keep(&next);
    // Reuse, so the warning path runs.
    let (s, _) = a
        .call(
            Method::POST,
            "/auth/refresh",
            Some(json!({"refresh_token": first_refresh})),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(a.login(&mail, password).await.0, StatusCode::OK);
    let (s, key) = a
        .call(
            Method::POST,
            "/api-keys",
            Some(json!({"provider": "openai", "key": openai})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let id = key["id"].as_str().unwrap().to_string();
    let (s, body) = a
        .call(
            Method::PATCH,
            &format!("/api-keys/{id}"),
            Some(json!({"key": format!("bad {openai}")})),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "a key with a space");
    assert!(
        !body.to_string().contains("LOGTEST"),
        "the error does not echo the key"
    );
    let (s, _) = a
        .call(
            Method::POST,
            "/api-keys",
            Some(json!({"provider": "anthropic", "key": anthropic})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    // Bad bodies whose echo would leak: a key in a wrong-typed field.
    let (s, body) = a
        .call(
            Method::POST,
            "/api-keys",
            Some(json!({"provider": openai, "key": openai})),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["field"], "provider");
    assert!(
        !body.to_string().contains("LOGTEST"),
        "the error does not echo the value"
    );
    let (s, _) = a
        .call(
            Method::PATCH,
            "/users/me",
            Some(json!({"new_password": new_password, "current_password": password})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = a.get("/users/me/export").await;
    assert_eq!(s, StatusCode::OK);
    // The admin token, and rotation.
    let resp = reqwest::Client::new()
        .post(format!("{}/api/v1/channels/generate-code", r.base))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"user_id": a.user()}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut both = w.api_config().accounts;
    both.master_keys = Some(clawdbot_router::Secret::new(format!(
        "{MASTER_K1},{MASTER_K2}"
    )));
    both.master_key_id = Some("k2".into());
    let env = clawdbot_testkit::env::get();
    let rotating = clawdbot_router::connect_accounts(
        &both,
        &env.redis_url,
        &w.redis_prefix,
        w.db.clone(),
        w.kube.clone(),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(rotating.rotate_master_key().await.unwrap().resealed, 2);
    let last_refresh = a.refresh.clone().unwrap();
    let last_access = a.access.clone().unwrap();
    let (s, _) = a.call(Method::DELETE, "/users/me", None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);

    // Google sign-in: the code, the pending sign-in's nonce and PKCE verifier, the tokens.
    let google = start(&r, &provider).await;
    let mut redis = redis::Client::open(clawdbot_testkit::env::get().redis_url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let pending: String = redis::cmd("GET")
        .arg(format!(
            "{}oidc:google:{}",
            w.redis_prefix,
            hex::encode(sha2::Sha256::digest(google.state().as_bytes()))
        ))
        .query_async(&mut redis)
        .await
        .unwrap();
    let pending: serde_json::Value = serde_json::from_str(&pending).unwrap();
    let (s, g_session) = google.finish(&r).await;
    assert_eq!(s, StatusCode::CREATED, "{g_session}");
    // The replay fails at the router, a made-up code at the provider: both error paths log.
    assert_eq!(google.finish(&r).await.0, StatusCode::BAD_REQUEST);
    let again = start(&r, &provider).await;
    let made_up = "4/0AfakeCodeLOGTEST-made-up-code";
    let (s, _) = callback(
        &r,
        &[("code", made_up), ("state", again.state())],
        Some(&again.cookie),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    r.shutdown().await;

    let text = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    assert!(
        text.contains("account registered"),
        "the capture works: {}",
        &text[..text.len().min(2000)]
    );
    assert!(
        text.contains("account registered through a provider"),
        "the Google sign-in's lines are in the capture"
    );
    let master_k1 = MASTER_K1.split_once(':').unwrap().1;
    let master_k2 = MASTER_K2.split_once(':').unwrap().1;
    for (what, secret) in [
        ("password", password),
        ("wrong password", wrong),
        ("new password", new_password),
        ("openai key", openai),
        ("anthropic key", anthropic),
        ("first refresh token", first_refresh.as_str()),
        ("last refresh token", last_refresh.as_str()),
        ("first access token", first_access.as_str()),
        ("last access token", last_access.as_str()),
        ("jwt secret", JWT_SECRET),
        ("master key k1", master_k1),
        ("master key k2", master_k2),
        ("admin token", ADMIN_TOKEN),
        ("telegram token", TELEGRAM_TOKEN),
        ("telegram secret", TELEGRAM_SECRET),
        ("whatsapp app secret", WA_APP_SECRET),
        ("whatsapp access token", WA_ACCESS),
        ("web secret", WEB_SECRET),
        ("google client secret", CLIENT_SECRET),
        ("google code", google.code()),
        ("the replayed sign-in's code", again.code()),
        ("a made-up code", made_up),
        ("oidc nonce", pending["nonce"].as_str().unwrap()),
        ("pkce verifier", pending["pkce_verifier"].as_str().unwrap()),
        (
            "google access token",
            g_session["access_token"].as_str().unwrap(),
        ),
        (
            "google refresh token",
            g_session["refresh_token"].as_str().unwrap(),
        ),
    ] {
        assert!(!text.contains(secret), "the {what} is in the logs");
    }
    // Partial leaks too: the distinctive middle of each provider key.
    assert!(
        !text.contains("LOGTEST"),
        "part of a provider key is in the logs"
    );
}
