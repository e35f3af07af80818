//! The accounts API end to end, over real sockets, on the real Postgres, Redis and control
//! plane: sign-up provisions a workspace; sessions rotate and detect reuse; keys are sealed,
//! reach the tenant's Secret and survive master-key rotation; deletion leaves nothing; a
//! second account can reach nothing of the first; suspension stops the assistant.

mod support;

use std::time::Duration;

use clawdbot_api::{UserWorkspace, names};
use clawdbot_testkit::fake_chat::telegram_text_update;
use k8s_openapi::api::core::v1::Secret as KubeSecret;
use kube::api::Api;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::Digest;
use support::api::{ApiClient, DASHBOARD, MASTER_K1, MASTER_K2, wait_usable};
use support::{TestAgent, World};
use uuid::Uuid;

const PASSWORD: &str = "correct horse battery staple";
const OPENAI_KEY: &str = "sk-proj-TESTKEYabcdefghijklmnopqrstuv1234";
const ANTHROPIC_KEY: &str = "sk-ant-api03-TESTKEYzyxwvutsrqponmlk9876";

fn email() -> String {
    format!("user-{:08x}@example.com", rand::random::<u32>())
}

fn workspace_name(user: Uuid) -> String {
    clawdbot_accounts::provision::workspace_name(user)
}

async fn make_pro(w: &World, user: Uuid) {
    sqlx::query("UPDATE users SET plan = 'pro' WHERE id = $1")
        .bind(user)
        .execute(&w.db)
        .await
        .expect("plan");
}

#[tokio::test]
async fn register_provisions_a_workspace_and_sessions_rotate_with_reuse_detection() {
    let w = World::new().await;
    let r = w.start_router(w.api_config()).await;
    let mut a = ApiClient::new(&r);
    let mail = email();
    let session = a.register(&mail, PASSWORD).await;
    assert_eq!(session["token_type"], "Bearer");
    assert!(session["expires_in"].as_i64().unwrap() > 800);
    let user = a.user();

    // The UserWorkspace exists, owned by the user, with the platform default and its Secret.
    let ws = w.workspace(&workspace_name(user)).await;
    assert_eq!(ws.spec.owner_id, user.to_string());
    assert_eq!(ws.spec.model.name, "smollm2");
    let keys_secret = ws
        .spec
        .keys_secret_ref
        .clone()
        .expect("keys secret ref")
        .name;
    let secret = Api::<KubeSecret>::namespaced(w.kube.clone(), &w.namespace)
        .get(&keys_secret)
        .await
        .expect("keys secret exists");
    assert_eq!(
        secret.metadata.owner_references.unwrap()[0].name,
        workspace_name(user)
    );
    let (s, me) = a.get("/users/me").await;
    assert_eq!(
        (s, me["email"].as_str()),
        (StatusCode::OK, Some(mail.as_str()))
    );
    // The workspace as the operator reports it.
    w.mark_ready(&workspace_name(user), "http://agent").await;
    let (s, view) = a.get("/workspace").await;
    assert_eq!(s, StatusCode::OK, "{view}");
    assert_eq!(
        (view["phase"].as_str(), view["ready"].as_bool()),
        (Some("Running"), Some(true))
    );
    assert_eq!(view["conditions"][0]["type"], "Ready");

    // The password is stored as an Argon2id hash only.
    let stored: String = sqlx::query_scalar("SELECT password_hash FROM users WHERE id = $1")
        .bind(user)
        .fetch_one(&w.db)
        .await
        .unwrap();
    assert!(stored.starts_with("$argon2id$v=19$m=19456,t=2,p=1$") && !stored.contains(PASSWORD));

    // Login with the other spelling of the address; wrong password is 401.
    let mut b = ApiClient::new(&r);
    assert_eq!(
        b.login(&mail.to_uppercase(), "wrong password here").await.0,
        StatusCode::UNAUTHORIZED
    );
    let (s, _) = b.login(&mail.to_uppercase(), PASSWORD).await;
    assert_eq!(s, StatusCode::OK);

    // Refresh rotates: the new pair works, the old refresh token is used up.
    let first = b.refresh.clone().unwrap();
    let (s, next) = b
        .call(
            Method::POST,
            "/auth/refresh",
            Some(json!({"refresh_token": first})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{next}");
    let second = next["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(first, second);
    b.keep(&next);
    assert_eq!(b.get("/users/me").await.0, StatusCode::OK);
    // Reuse of the first token: refused, and its whole family (the second token) revoked.
    let (s, _) = b
        .call(
            Method::POST,
            "/auth/refresh",
            Some(json!({"refresh_token": first})),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = b
        .call(
            Method::POST,
            "/auth/refresh",
            Some(json!({"refresh_token": second})),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "the family is revoked");
    // The session of the registration is another family and still refreshes.
    let (s, again) = a
        .call(
            Method::POST,
            "/auth/refresh",
            Some(json!({"refresh_token": a.refresh.clone().unwrap()})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    a.keep(&again);
    // Logout ends that session.
    let (s, _) = a
        .call(
            Method::POST,
            "/auth/logout",
            Some(json!({"refresh_token": a.refresh.clone().unwrap()})),
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = a
        .call(
            Method::POST,
            "/auth/refresh",
            Some(json!({"refresh_token": a.refresh.clone().unwrap()})),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    // No token, a forged one: 401.
    let anonymous = ApiClient::new(&r);
    assert_eq!(anonymous.get("/users/me").await.0, StatusCode::UNAUTHORIZED);
    let mut forged = ApiClient::new(&r);
    forged.access = Some(format!("{}x", a.access.clone().unwrap()));
    assert_eq!(forged.get("/users/me").await.0, StatusCode::UNAUTHORIZED);
    r.shutdown().await;
}

#[tokio::test]
async fn bad_input_is_named_duplicates_conflict_and_limits_hold() {
    let w = World::new().await;
    let mut config = w.api_config();
    config.accounts.login_attempts_per_account = 3;
    config.limits.max_body_bytes = 16 * 1024;
    let r = w.start_router(config).await;
    let mut a = ApiClient::new(&r);
    let mail = email();
    // Rules stated, field named.
    let (s, body) = a
        .call(
            Method::POST,
            "/auth/register",
            Some(json!({"email": mail, "password": "short"})),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["field"], "password");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("10 to 128 characters"),
        "{body}"
    );
    let (s, body) = a
        .call(
            Method::POST,
            "/auth/register",
            Some(json!({"email": "not-an-address", "password": PASSWORD})),
        )
        .await;
    assert_eq!(
        (s, body["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("email"))
    );
    let (s, body) = a
        .call(Method::POST, "/auth/register", Some(json!({"email": mail})))
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        body["error"].as_str().unwrap().contains("password"),
        "{body}"
    );
    a.register(&mail, PASSWORD).await;
    let (s, _) = ApiClient::new(&r)
        .call(
            Method::POST,
            "/auth/register",
            Some(json!({"email": mail.to_uppercase(), "password": PASSWORD})),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    // Config out of range, or not on the plan.
    let (s, body) = a
        .call(Method::PATCH, "/config", Some(json!({"temperature": 3.0})))
        .await;
    assert_eq!(
        (s, body["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("temperature"))
    );
    let (s, _) = a
        .call(Method::PATCH, "/config", Some(json!({"web_search": true})))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = a
        .call(
            Method::POST,
            "/api-keys",
            Some(json!({"provider": "openai", "key": OPENAI_KEY})),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "no own keys on the free plan");
    let (s, body) = a.get("/usage?days=0").await;
    assert_eq!(
        (s, body["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("days"))
    );
    // Over the body limit: 413.
    let big = "x".repeat(20 * 1024);
    let (s, _) = a
        .call(
            Method::PATCH,
            "/users/me",
            Some(json!({"display_name": big})),
        )
        .await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    // Login attempts: three failures, then even the right password waits.
    let mut b = ApiClient::new(&r);
    for _ in 0..3 {
        assert_eq!(
            b.login(&mail, "not the password!").await.0,
            StatusCode::UNAUTHORIZED
        );
    }
    let (s, _) = b.login(&mail, PASSWORD).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
    // CORS: the dashboard's origin is allowed, another is not.
    let preflight = |origin: &'static str| {
        let http = reqwest::Client::new();
        let url = format!("{}/api/v1/users/me", r.base);
        async move {
            http.request(Method::OPTIONS, url)
                .header("origin", origin)
                .header("access-control-request-method", "GET")
                .header("access-control-request-headers", "authorization")
                .send()
                .await
                .unwrap()
        }
    };
    let ok = preflight(DASHBOARD).await;
    assert_eq!(ok.headers()["access-control-allow-origin"], DASHBOARD);
    let other = preflight("https://evil.example").await;
    assert!(other.headers().get("access-control-allow-origin").is_none());
    // The OpenAPI document is served and describes the API.
    let doc: Value = reqwest::get(format!("{}/api/v1/openapi.json", r.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["paths"]["/api/v1/api-keys/{id}"]["patch"].is_object());
    r.shutdown().await;
}

#[tokio::test]
async fn keys_are_sealed_reach_the_tenant_and_survive_master_key_rotation() {
    let w = World::new().await;
    let r = w.start_router(w.api_config()).await;
    let agent = TestAgent::start().await;
    let mut a = ApiClient::new(&r);
    a.register(&email(), PASSWORD).await;
    let user = a.user();
    make_pro(&w, user).await;
    let ws_name = workspace_name(user);
    w.set_token(&ws_name, &agent.token).await;
    w.mark_ready(&ws_name, &agent.base_url).await;
    w.connect("telegram", "7001", user).await;

    let (s, key) = a
        .call(
            Method::POST,
            "/api-keys",
            Some(json!({"provider": "openai", "key": OPENAI_KEY})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{key}");
    assert_eq!(key["masked"], "sk-...1234");
    let id = key["id"].as_str().unwrap().to_string();
    let (s, _) = a
        .call(
            Method::POST,
            "/api-keys",
            Some(json!({"provider": "openai", "key": OPENAI_KEY})),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    let (s, _) = a
        .call(
            Method::POST,
            "/api-keys",
            Some(json!({"provider": "anthropic", "key": "sk-nope"})),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let (_, list) = a.get("/api-keys").await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert!(!list.to_string().contains(OPENAI_KEY));

    // In Postgres only ciphertext, under k1.
    let (kid, ct): (String, Vec<u8>) =
        sqlx::query_as("SELECT master_key_id, ciphertext FROM provider_keys WHERE user_id = $1")
            .bind(user)
            .fetch_one(&w.db)
            .await
            .unwrap();
    assert_eq!(kid, "k1");
    assert!(!String::from_utf8_lossy(&ct).contains("TESTKEY"));
    // In the tenant's Secret, the plaintext the agent needs.
    let secrets = Api::<KubeSecret>::namespaced(w.kube.clone(), &w.namespace);
    let secret_name = format!("{}-keys", names::agent(&ws_name));
    let data = secrets.get(&secret_name).await.unwrap().data.unwrap();
    assert_eq!(data["OPENAI_API_KEY"].0, OPENAI_KEY.as_bytes());

    // Use it: the workspace switches to OpenAI.
    let (s, cfg) = a
        .call(
            Method::PATCH,
            "/config",
            Some(json!({"provider": "openai", "model": "gpt-4o-mini", "max_tokens": 400})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{cfg}");
    let ws: UserWorkspace = w.workspace(&ws_name).await;
    assert_eq!(ws.spec.model.provider.as_str(), "openai");
    assert_eq!(
        (ws.spec.model.name.as_str(), ws.spec.model.max_tokens),
        ("gpt-4o-mini", Some(400))
    );
    let (_, models) = a.get("/models").await;
    assert!(
        models
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["name"] == "gpt-4o-mini" && m["selected"] == true)
    );
    let (s, _) = a
        .call(Method::DELETE, &format!("/api-keys/{id}"), None)
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "in use");

    // The agent answers before the rotation.
    wait_usable(&r, user).await;
    let answered = |n: i64| {
        let (w, r, agent) = (&w, &r, &agent);
        async move {
            let update = telegram_text_update(n, 7001, "hello");
            assert_eq!(w.telegram_update(r, &update).await.status(), 200);
            agent.wait_calls(n as usize, Duration::from_secs(20)).await;
            w.telegram
                .wait_for_messages(7001, n as usize, Duration::from_secs(20))
                .await;
        }
    };
    answered(1).await;

    // Rotation: both keys loaded, k2 current; every row re-sealed under k2.
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
    let report = rotating.rotate_master_key().await.unwrap();
    assert_eq!(report.resealed, 1);
    let kid: String =
        sqlx::query_scalar("SELECT master_key_id FROM provider_keys WHERE user_id = $1")
            .bind(user)
            .fetch_one(&w.db)
            .await
            .unwrap();
    assert_eq!(kid, "k2");
    // The agent still answers (its Secret never changed), and with k1 retired the key opens.
    answered(2).await;
    assert_eq!(
        secrets.get(&secret_name).await.unwrap().data.unwrap()["OPENAI_API_KEY"].0,
        OPENAI_KEY.as_bytes()
    );
    let mut only_k2 = w.api_config();
    only_k2.accounts.master_keys = Some(clawdbot_router::Secret::new(MASTER_K2));
    let r2 = w.start_router(only_k2).await;
    let mut a2 = a.clone();
    a2.base = r2.base.clone();
    let (s, _) = a2
        .call(
            Method::POST,
            "/api-keys",
            Some(json!({"provider": "anthropic", "key": ANTHROPIC_KEY})),
        )
        .await;
    assert_eq!(
        s,
        StatusCode::CREATED,
        "the Secret is rebuilt from keys opened under k2"
    );
    let data = secrets.get(&secret_name).await.unwrap().data.unwrap();
    assert_eq!(data["OPENAI_API_KEY"].0, OPENAI_KEY.as_bytes());
    assert_eq!(data["ANTHROPIC_API_KEY"].0, ANTHROPIC_KEY.as_bytes());
    r2.shutdown().await;
    r.shutdown().await;
}

/// Every table of the public schema, from the catalogue (so a table added later is checked).
async fn tables(w: &World) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables
         WHERE table_schema = 'public' AND table_type = 'BASE TABLE' AND table_name <> '_sqlx_migrations'",
    )
    .fetch_all(&w.db)
    .await
    .expect("list tables")
}

/// Rows of any table whose text contains `needle`.
async fn rows_mentioning(w: &World, needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for t in tables(w).await {
        let n: i64 = sqlx::query_scalar(&format!(
            "SELECT count(*) FROM \"{t}\" AS r WHERE strpos(r::text, $1) > 0"
        ))
        .bind(needle)
        .fetch_one(&w.db)
        .await
        .expect("search a table");
        if n > 0 {
            found.push(format!("{t}: {n}"));
        }
    }
    found
}

async fn redis_keys(w: &World) -> Vec<String> {
    let env = clawdbot_testkit::env::get();
    let client = redis::Client::open(env.redis_url.as_str()).expect("redis url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    redis::cmd("KEYS")
        .arg(format!("{}*", w.redis_prefix))
        .query_async(&mut conn)
        .await
        .expect("redis keys")
}

#[tokio::test]
async fn deleting_an_account_leaves_nothing_of_it_anywhere() {
    let w = World::new().await;
    let r = w.start_router(w.api_config()).await;
    let agent = TestAgent::start().await;
    let mut a = ApiClient::new(&r);
    let mail = email();
    a.register(&mail, PASSWORD).await;
    let user = a.user();
    make_pro(&w, user).await;
    let ws_name = workspace_name(user);
    w.set_token(&ws_name, &agent.token).await;
    w.mark_ready(&ws_name, &agent.base_url).await;
    // Something of everything: a failed login, a key, a code, a connection made with a code,
    // messages (inbound records, usage, rate counters), a second session.
    assert_eq!(
        ApiClient::new(&r).login(&mail, "wrong password 1").await.0,
        StatusCode::UNAUTHORIZED
    );
    let (s, _) = a
        .call(
            Method::POST,
            "/api-keys",
            Some(json!({"provider": "anthropic", "key": ANTHROPIC_KEY})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, code) = a.call(Method::POST, "/channels/codes", None).await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(
        code["links"]["telegram"].as_str().unwrap(),
        format!(
            "https://t.me/ClawdbotTestBot?start={}",
            code["code"].as_str().unwrap()
        )
    );
    let start = telegram_text_update(
        1,
        781234567,
        &format!("/start {}", code["code"].as_str().unwrap()),
    );
    assert_eq!(w.telegram_update(&r, &start).await.status(), 200);
    w.telegram
        .wait_for_messages(781234567, 1, Duration::from_secs(10))
        .await;
    let (_, conns) = a.get("/channels/connections").await;
    assert_eq!(conns[0]["sender_id"], "781234567");
    wait_usable(&r, user).await;
    assert_eq!(
        w.telegram_update(&r, &telegram_text_update(2, 781234567, "hi"))
            .await
            .status(),
        200
    );
    agent.wait_calls(1, Duration::from_secs(20)).await;
    w.telegram
        .wait_for_messages(781234567, 2, Duration::from_secs(20))
        .await;
    let sql = format!("SELECT count(*) FROM usage_records WHERE user_id = '{user}'");
    clawdbot_testkit::wait_for("the usage record", Duration::from_secs(10), || {
        let (w, sql) = (&w, &sql);
        async move { (w.count(sql).await == 1).then_some(()) }
    })
    .await;
    let (_, usage_view) = a.get("/usage?days=7").await;
    assert_eq!(usage_view["total_messages"], 1);
    ApiClient::new(&r).login(&mail, PASSWORD).await;
    let (s, export) = a.get("/users/me/export").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(export["account"]["email"], mail.as_str());
    assert_eq!(export["provider_keys"][0]["masked"], "sk-...9876");
    assert_eq!(export["connections"][0]["sender_id"], "781234567");
    assert!(
        export.get("conversations").is_some(),
        "a place for the agent's conversations"
    );
    let exported = export.to_string();
    assert!(
        !exported.contains(ANTHROPIC_KEY)
            && !exported.contains(PASSWORD)
            && !exported.contains("$argon2")
    );
    assert!(!exported.contains(a.refresh.as_deref().unwrap()));
    assert!(!rows_mentioning(&w, &user.to_string()).await.is_empty());

    let (s, _) = a.call(Method::DELETE, "/users/me", None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);

    for needle in [
        user.to_string(),
        mail.clone(),
        "781234567".to_string(),
        user.simple().to_string(),
    ] {
        let left = rows_mentioning(&w, &needle).await;
        assert!(left.is_empty(), "{needle} is still in {left:?}");
    }
    let email_hash = hex::encode(sha2::Sha256::digest(mail.as_bytes()));
    let keys = redis_keys(&w).await;
    for k in &keys {
        for needle in [
            user.to_string(),
            "781234567".into(),
            email_hash.clone(),
            ws_name.clone(),
        ] {
            assert!(
                !k.contains(&needle),
                "redis key {k} is about the deleted user"
            );
        }
    }
    // The workspace and its Secret go.
    let wss = Api::<UserWorkspace>::namespaced(w.kube.clone(), &w.namespace);
    clawdbot_testkit::wait_for("workspace deleted", Duration::from_secs(20), || {
        let wss = wss.clone();
        let name = ws_name.clone();
        async move { wss.get_opt(&name).await.unwrap().is_none().then_some(()) }
    })
    .await;
    let secrets = Api::<KubeSecret>::namespaced(w.kube.clone(), &w.namespace);
    assert!(
        secrets
            .get_opt(&format!("{}-keys", names::agent(&ws_name)))
            .await
            .unwrap()
            .is_none()
    );
    // The old token no longer works; the chat account is unknown again.
    assert_eq!(a.get("/users/me").await.0, StatusCode::UNAUTHORIZED);
    r.shutdown().await;
}

#[tokio::test]
async fn a_second_account_reaches_nothing_of_the_first() {
    let w = World::new().await;
    let r = w.start_router(w.api_config()).await;
    let mut a = ApiClient::new(&r);
    a.register(&email(), PASSWORD).await;
    make_pro(&w, a.user()).await;
    let (_, key) = a
        .call(
            Method::POST,
            "/api-keys",
            Some(json!({"provider": "openai", "key": OPENAI_KEY})),
        )
        .await;
    let key_id = key["id"].as_str().unwrap().to_string();
    w.connect("telegram", "790012345", a.user()).await;
    let (_, conns) = a.get("/channels/connections").await;
    let conn_id = conns[0]["id"].as_str().unwrap().to_string();

    let mut b = ApiClient::new(&r);
    b.register(&email(), PASSWORD).await;
    make_pro(&w, b.user()).await;
    let a_id = a.user();
    // Every endpoint that takes an id, with the first account's ids: 404, as for unknown ids.
    for (method, path, body) in [
        (Method::GET, format!("/api-keys/{key_id}"), None),
        (
            Method::PATCH,
            format!("/api-keys/{key_id}"),
            Some(json!({"key": "sk-proj-hijackhijackhijack0000"})),
        ),
        (Method::DELETE, format!("/api-keys/{key_id}"), None),
        (
            Method::DELETE,
            format!("/channels/connections/{conn_id}"),
            None,
        ),
        (Method::GET, format!("/api-keys/{}", Uuid::new_v4()), None),
        (
            Method::DELETE,
            format!("/channels/connections/{}", Uuid::new_v4()),
            None,
        ),
        (
            Method::DELETE,
            "/channels/connections/not-a-uuid".to_string(),
            None,
        ),
    ] {
        let (s, body_seen) = b.call(method.clone(), &path, body).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{method} {path}: {body_seen}");
    }
    // Admin endpoints: forbidden to a user, for their own id or another's.
    assert_eq!(b.get("/admin/users").await.0, StatusCode::FORBIDDEN);
    for action in ["suspend", "resume"] {
        let (s, _) = b
            .call(Method::POST, &format!("/admin/users/{a_id}/{action}"), None)
            .await;
        assert_eq!(s, StatusCode::FORBIDDEN);
    }
    // Every listing and the export show B's things only.
    for path in [
        "/users/me",
        "/api-keys",
        "/channels/connections",
        "/config",
        "/models",
        "/usage",
        "/workspace",
        "/users/me/export",
    ] {
        let (s, body) = b.get(path).await;
        assert!(s.is_success(), "{path}: {s}");
        let text = body.to_string();
        for secret_of_a in [
            a_id.to_string(),
            key_id.clone(),
            conn_id.clone(),
            "790012345".into(),
        ] {
            assert!(!text.contains(&secret_of_a), "{path} shows {secret_of_a}");
        }
    }
    // The admin-token endpoints refuse a user's token.
    let resp = reqwest::Client::new()
        .post(format!("{}/api/v1/channels/generate-code", r.base))
        .bearer_auth(b.access.as_deref().unwrap())
        .json(&json!({"user_id": a_id}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    // A's things are untouched.
    let (_, keys) = a.get("/api-keys").await;
    assert_eq!(keys[0]["masked"], "sk-...1234");
    assert_eq!(
        a.get("/channels/connections")
            .await
            .1
            .as_array()
            .unwrap()
            .len(),
        1
    );
    r.shutdown().await;
}

#[tokio::test]
async fn an_admin_suspends_and_resumes_and_a_suspended_user_reaches_no_agent() {
    let w = World::new().await;
    let r = w.start_router(w.api_config()).await;
    let agent = TestAgent::start().await;
    let mut u = ApiClient::new(&r);
    let mail = email();
    u.register(&mail, PASSWORD).await;
    let user = u.user();
    let ws_name = workspace_name(user);
    w.set_token(&ws_name, &agent.token).await;
    w.mark_ready(&ws_name, &agent.base_url).await;
    w.connect("telegram", "4242", user).await;

    // The first admin, made as `clawdbot-admin create-admin` makes it.
    let admin_mail = email();
    let accounts = r_accounts(&r);
    accounts.create_admin(&admin_mail, PASSWORD).await.unwrap();
    let mut admin = ApiClient::new(&r);
    assert_eq!(admin.login(&admin_mail, PASSWORD).await.0, StatusCode::OK);
    let (s, list) = admin.get("/admin/users?limit=10").await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .any(|x| x["id"] == user.to_string())
    );
    // The admin role also opens the admin-token endpoints.
    let resp = reqwest::Client::new()
        .post(format!("{}/api/v1/channels/generate-code", r.base))
        .bearer_auth(admin.access.as_deref().unwrap())
        .json(&json!({"user_id": user}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);

    let (s, view) = admin
        .call(Method::POST, &format!("/admin/users/{user}/suspend"), None)
        .await;
    assert_eq!(
        (s, view["suspended"].as_bool()),
        (StatusCode::OK, Some(true))
    );
    assert!(
        w.workspace(&ws_name).await.spec.suspend,
        "the workspace sleeps"
    );
    assert_eq!(u.login(&mail, PASSWORD).await.0, StatusCode::FORBIDDEN);
    let (s, _) = u
        .call(
            Method::POST,
            "/auth/refresh",
            Some(json!({"refresh_token": u.refresh.clone().unwrap()})),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "sessions ended");
    // A message gets a clear notice and reaches no agent.
    let seen = r.core.directory.clone();
    clawdbot_testkit::wait_for(
        "suspension seen by the router",
        Duration::from_secs(10),
        || {
            let seen = seen.clone();
            async move { seen.tenant_of(&user.to_string()).filter(|t| t.suspended) }
        },
    )
    .await;
    assert_eq!(
        w.telegram_update(&r, &telegram_text_update(1, 4242, "hello?"))
            .await
            .status(),
        200
    );
    let sent = w
        .telegram
        .wait_for_messages(4242, 1, Duration::from_secs(10))
        .await;
    assert!(sent[0].text.contains("suspended"), "{}", sent[0].text);
    assert!(agent.calls().is_empty());

    let (s, view) = admin
        .call(Method::POST, &format!("/admin/users/{user}/resume"), None)
        .await;
    assert_eq!(
        (s, view["suspended"].as_bool()),
        (StatusCode::OK, Some(false))
    );
    assert!(!w.workspace(&ws_name).await.spec.suspend);
    assert_eq!(u.login(&mail, PASSWORD).await.0, StatusCode::OK);
    let (s, _) = admin
        .call(
            Method::POST,
            &format!("/admin/users/{}/suspend", Uuid::new_v4()),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    r.shutdown().await;
}

fn r_accounts(r: &support::Replica) -> clawdbot_accounts::Accounts {
    r.api.clone().expect("accounts api on").accounts.clone()
}

#[tokio::test]
async fn registration_is_limited_per_email_and_per_address() {
    let w = World::new().await;
    let mut config = w.api_config();
    config.accounts.registrations_per_email = 2;
    config.accounts.registrations_per_address = 4;
    let r = w.start_router(config).await;
    let register = |mail: String, password: &'static str| {
        let a = ApiClient::new(&r);
        async move {
            a.call(
                Method::POST,
                "/auth/register",
                Some(json!({"email": mail, "password": password})),
            )
            .await
        }
    };
    let retry_after = |mail: String| {
        let url = format!("{}/api/v1/auth/register", r.base);
        async move {
            let resp = reqwest::Client::new()
                .post(url)
                .json(&json!({"email": mail, "password": PASSWORD}))
                .send()
                .await
                .expect("register");
            assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
            resp.headers()[reqwest::header::RETRY_AFTER]
                .to_str()
                .expect("header")
                .parse::<u64>()
                .expect("seconds")
        }
    };
    // Per e-mail: two attempts an hour, whatever their outcome; the third waits, even with
    // a good password, and creates nothing.
    let mail = email();
    for _ in 0..2 {
        assert_eq!(
            register(mail.clone(), "short").await.0,
            StatusCode::UNPROCESSABLE_ENTITY
        );
    }
    let wait = retry_after(mail.clone()).await;
    assert!((1..=3600).contains(&wait), "{wait}");
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM users WHERE email = $1")
        .bind(&mail)
        .fetch_one(&w.db)
        .await
        .expect("count");
    assert_eq!(count, 0);
    // Per address: the fourth attempt from here still passes, the fifth waits.
    assert_eq!(register(email(), PASSWORD).await.0, StatusCode::CREATED);
    retry_after(email()).await;
    r.shutdown().await;
}
