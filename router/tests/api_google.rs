//! Sign-in with Google against the test kit's OpenID provider (discovery, JWKS, RS256 ID
//! tokens, PKCE checked) and the real router, Postgres, Redis and API server: the first
//! sign-in creates the account and its workspace, the next finds it; every way a callback can
//! be wrong (another browser's state, a forged or replayed state, an expired sign-in, a
//! nonce that does not match, an unverified e-mail, the e-mail of a password account) is a
//! clear 400/403/409 that creates nothing.

mod support;

use clawdbot_api::UserWorkspace;
use clawdbot_testkit::fake_oidc::{Misbehave, TestUser};
use kube::Api;
use reqwest::StatusCode;
use sha2::{Digest, Sha256};
use support::World;
use support::api::ApiClient;
use support::google::{callback, router_with_google, start};

fn person(sub: &str, email: &str) -> TestUser {
    TestUser {
        sub: sub.into(),
        email: email.into(),
        email_verified: true,
        name: Some("Test Person".into()),
    }
}

async fn users_with(w: &World, email: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM users WHERE lower(email) = $1")
        .bind(email)
        .fetch_one(&w.db)
        .await
        .expect("count users")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn google_sign_in_creates_the_account_once_and_refuses_bad_callbacks() {
    let w = World::new().await;
    let (r, provider) = router_with_google(&w).await;
    let tag = format!("{:08x}", rand::random::<u32>());
    let alice = format!("alice-{tag}@gmail.test");
    provider.set_user(person(&format!("sub-alice-{tag}"), &alice));

    // First sign-in: a new account, its workspace, tokens as from a password login.
    let first = start(&r, &provider).await;
    assert_eq!(
        first.cookie,
        format!("clawdbot_oidc_state={}", first.state()),
        "the cookie binds the state"
    );
    let (s, body) = first.finish(&r).await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    assert_eq!(body["user"]["email"], alice.as_str());
    assert_eq!(body["user"]["display_name"], "Test Person");
    assert_eq!(body["token_type"], "Bearer");
    let mut me = ApiClient::new(&r);
    me.keep(&body);
    let (s, got) = me.get("/users/me").await;
    assert_eq!(
        (s, got["email"].as_str()),
        (StatusCode::OK, Some(alice.as_str()))
    );
    let ws_name = clawdbot_accounts::provision::workspace_name(me.user());
    Api::<UserWorkspace>::namespaced(w.kube.clone(), &w.namespace)
        .get(&ws_name)
        .await
        .expect("the new account's workspace exists");
    let hash: Option<String> = sqlx::query_scalar("SELECT password_hash FROM users WHERE id = $1")
        .bind(me.user())
        .fetch_one(&w.db)
        .await
        .expect("user row");
    assert_eq!(hash, None, "no password for a Google-only account");
    let (s, refreshed) = me
        .call(
            reqwest::Method::POST,
            "/auth/refresh",
            Some(serde_json::json!({"refresh_token": me.refresh})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{refreshed}");

    // The same callback again (a replay, or a double click): refused, nothing new.
    let (s, body) = first.finish(&r).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("already used"),
        "{body}"
    );

    // Second sign-in: the same account, found by Google's subject.
    let (s, body) = start(&r, &provider).await.finish(&r).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["user"]["id"].as_str(), me.user_id.as_deref());
    assert_eq!(users_with(&w, &alice).await, 1);

    // Another browser's state: the cookie of one sign-in with the callback of another.
    let mine = start(&r, &provider).await;
    let theirs = start(&r, &provider).await;
    let (s, body) = callback(
        &r,
        &[("code", theirs.code()), ("state", theirs.state())],
        Some(&mine.cookie),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        body["error"].as_str().unwrap().contains("state mismatch"),
        "{body}"
    );
    let (s, _) = callback(
        &r,
        &[("code", theirs.code()), ("state", theirs.state())],
        None,
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "no cookie at all");
    // A state the router never issued, with a matching cookie (made up by the caller).
    let forged = "forged-state-0123456789";
    let (s, body) = callback(
        &r,
        &[("code", mine.code()), ("state", forged)],
        Some(&format!("clawdbot_oidc_state={forged}")),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        body["error"].as_str().unwrap().contains("start again"),
        "{body}"
    );
    // The provider's refusal, and a callback without a code.
    let (s, body) = callback(
        &r,
        &[("error", "access_denied"), ("state", mine.state())],
        Some(&mine.cookie),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        body["error"].as_str().unwrap().contains("access_denied"),
        "{body}"
    );
    let (s, _) = callback(&r, &[("state", mine.state())], Some(&mine.cookie)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    // An expired sign-in: the pending record says it started two hours ago.
    let late = start(&r, &provider).await;
    let key = format!(
        "{}oidc:google:{}",
        w.redis_prefix,
        hex::encode(Sha256::digest(late.state().as_bytes()))
    );
    let mut redis = redis::Client::open(clawdbot_testkit::env::get().redis_url.as_str())
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let stored: String = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut redis)
        .await
        .expect("the pending sign-in is in Redis");
    let mut pending: serde_json::Value = serde_json::from_str(&stored).expect("json");
    pending["started_at"] = (pending["started_at"].as_u64().unwrap() - 7200).into();
    redis::cmd("SET")
        .arg(&key)
        .arg(pending.to_string())
        .query_async::<()>(&mut redis)
        .await
        .expect("age the sign-in");
    let (s, body) = late.finish(&r).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        body["error"].as_str().unwrap().contains("expired"),
        "{body}"
    );

    // A nonce that is not the one sent: a new person, and nothing of them is created.
    let bob = format!("bob-{tag}@gmail.test");
    provider.set_user(person(&format!("sub-bob-{tag}"), &bob));
    provider.misbehave(Misbehave {
        nonce: Some("another-nonce".into()),
        ..Default::default()
    });
    let (s, body) = start(&r, &provider).await.finish(&r).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(body["error"].as_str().unwrap().contains("nonce"), "{body}");
    provider.misbehave(Misbehave::default());
    // An address the provider did not verify.
    provider.set_user(TestUser {
        email_verified: false,
        ..person(&format!("sub-bob-{tag}"), &bob)
    });
    let (s, body) = start(&r, &provider).await.finish(&r).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(
        users_with(&w, &bob).await,
        0,
        "no account from a refused callback"
    );

    // The e-mail of a password account: not linked (its address was never proven).
    let carol = format!("carol-{tag}@gmail.test");
    let mut c = ApiClient::new(&r);
    c.register(&carol, "carol's long password 1").await;
    provider.set_user(person(&format!("sub-carol-{tag}"), &carol));
    let (s, body) = start(&r, &provider).await.finish(&r).await;
    assert_eq!(s, StatusCode::CONFLICT, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("password"),
        "{body}"
    );
    assert_eq!(users_with(&w, &carol).await, 1);
    assert_eq!(
        w.count("SELECT count(*) FROM user_identities").await,
        1,
        "alice's identity alone"
    );

    // A suspended account cannot sign in through Google either.
    provider.set_user(person(&format!("sub-alice-{tag}"), &alice));
    sqlx::query("UPDATE users SET suspended_at = now() WHERE id = $1")
        .bind(me.user())
        .execute(&w.db)
        .await
        .expect("suspend");
    let (s, _) = start(&r, &provider).await.finish(&r).await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    // Deleting the account removes its link to Google too.
    sqlx::query("UPDATE users SET suspended_at = NULL WHERE id = $1")
        .bind(me.user())
        .execute(&w.db)
        .await
        .expect("resume");
    let (s, _) = me.call(reqwest::Method::DELETE, "/users/me", None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(w.count("SELECT count(*) FROM user_identities").await, 0);
    r.shutdown().await;
}

#[tokio::test]
async fn without_google_settings_the_routes_say_so() {
    let w = World::new().await;
    let r = w.start_router(w.api_config()).await;
    let resp = reqwest::get(format!("{}/api/v1/auth/oauth/google/start", r.base))
        .await
        .expect("start");
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let body: serde_json::Value = resp.json().await.expect("json");
    assert!(
        body["error"].as_str().unwrap().contains("not configured"),
        "{body}"
    );
    r.shutdown().await;
}
