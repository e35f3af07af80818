//! Round trips on every channel against the real Postgres, Redis and API server, the fake
//! platforms and a gateway-protocol agent.

use crate::support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use clawdbot_api::Plan;
use clawdbot_testkit::fake_chat::{
    discord_ask_interaction, telegram_text_update, whatsapp_signature, whatsapp_text_webhook,
};
use serde_json::{Value, json};
use support::{ADMIN_TOKEN, TestAgent, WA_APP_SECRET, WA_PHONE_ID, WA_VERIFY, World};

const T: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telegram_onboarding_with_a_code_then_round_trip() {
    let w = World::new().await;
    let r = w.start_router(w.config()).await;
    let agent = TestAgent::start().await;
    let tenant = w.ready_tenant(&agent, Plan::Free).await;
    let chat = 4_200_001;

    // An unknown sender gets the registration link, and no agent call is made.
    assert_eq!(
        w.telegram_update(&r, &telegram_text_update(1, chat, "hello?"))
            .await
            .status(),
        200
    );
    let sent = w.telegram.wait_for_messages(chat, 1, T).await;
    assert!(
        sent[0].text.contains("https://clawdbot.test/signup"),
        "{sent:?}"
    );

    // Codes come from the admin endpoint, which wants the admin token.
    let url = format!("{}/api/v1/channels/generate-code", r.base);
    let body = json!({"user_id": tenant.user});
    let denied = w
        .http
        .post(&url)
        .bearer_auth("wrong")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 401);
    let code: Value = w
        .http
        .post(&url)
        .bearer_auth(ADMIN_TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let code = code["code"].as_str().unwrap().to_string();
    assert_eq!(code.len(), 8);
    // Only the hash is stored.
    assert_eq!(
        w.count(&format!(
            "SELECT count(*) FROM connection_codes WHERE code_hash = sha256('{code}'::bytea)"
        ))
        .await,
        1
    );
    assert_eq!(
        w.count(&format!(
            "SELECT count(*) FROM connection_codes WHERE code_hash = '{code}'::bytea"
        ))
        .await,
        0
    );

    w.telegram_update(
        &r,
        &telegram_text_update(2, chat, &format!("/start {code}")),
    )
    .await;
    let sent = w.telegram.wait_for_messages(chat, 2, T).await;
    assert!(sent[1].text.starts_with("Connected"), "{sent:?}");

    // Now messages reach the tenant's agent with its token and the chat's session key.
    w.telegram_update(&r, &telegram_text_update(3, chat, "what's the weather?"))
        .await;
    let sent = w.telegram.wait_for_messages(chat, 3, T).await;
    assert_eq!(sent[2].text, "echo #1: what's the weather?");
    let calls = agent.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].session_key, format!("telegram:dm:{chat}"));

    // Usage is recorded; the agent reported zeros, so the tokens are an estimate.
    let (tokens, estimated): (i64, bool) =
        clawdbot_testkit::wait_for("usage record", T, || async {
            sqlx::query_as("SELECT total_tokens, estimated FROM usage_records WHERE user_id = $1")
                .bind(tenant.user)
                .fetch_optional(&w.db)
                .await
                .unwrap()
        })
        .await;
    assert!(estimated);
    assert!(tokens > 0);

    // A used code does not work twice, even for another chat.
    let other = 4_200_002;
    w.telegram_update(
        &r,
        &telegram_text_update(4, other, &format!("/start {code}")),
    )
    .await;
    let sent = w.telegram.wait_for_messages(other, 1, T).await;
    assert!(sent[0].text.contains("not valid"), "{sent:?}");
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn code_attempts_are_limited_per_sender() {
    let w = World::new().await;
    let mut config = w.config();
    config.onboarding.code_attempts = 2;
    let r = w.start_router(config).await;
    let agent = TestAgent::start().await;
    let tenant = w.ready_tenant(&agent, Plan::Free).await;
    let chat = 4_300_001;
    for (i, guess) in ["AAAAAAAA", "BBBBBBBB"].iter().enumerate() {
        w.telegram_update(
            &r,
            &telegram_text_update(10 + i as i64, chat, &format!("/start {guess}")),
        )
        .await;
        w.telegram.wait_for_messages(chat, i + 1, T).await;
    }
    // The third try is refused even with a genuine code.
    let (code, _) = clawdbot_router::admin::generate_code(&w.db, tenant.user)
        .await
        .unwrap();
    w.telegram_update(
        &r,
        &telegram_text_update(12, chat, &format!("/start {code}")),
    )
    .await;
    let sent = w.telegram.wait_for_messages(chat, 3, T).await;
    assert!(sent[2].text.contains("Too many"), "{sent:?}");
    assert_eq!(
        w.count("SELECT count(*) FROM user_channel_connections")
            .await,
        0
    );
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whatsapp_handshake_signatures_and_round_trip() {
    let w = World::new().await;
    let r = w.start_router(w.config()).await;
    let agent = TestAgent::start().await;
    agent.state.report_usage.store(true, Ordering::Relaxed);
    let tenant = w.ready_tenant(&agent, Plan::Pro).await;
    let from = "4915112345678";
    w.connect("whatsapp", from, tenant.user).await;
    let hook = format!("{}/webhooks/whatsapp", r.base);

    // The verification handshake echoes the challenge only for the right token.
    let ok = w
        .http
        .get(format!(
            "{hook}?hub.mode=subscribe&hub.verify_token={WA_VERIFY}&hub.challenge=1158201444"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(
        (ok.status().as_u16(), ok.text().await.unwrap()),
        (200, "1158201444".to_string())
    );
    let bad = w
        .http
        .get(format!(
            "{hook}?hub.mode=subscribe&hub.verify_token=nope&hub.challenge=1"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 403);

    // A wrong or missing signature: 401, and nothing happens.
    let body = whatsapp_body(from, "wamid.bad", chrono::Utc::now().timestamp(), "hi");
    let forged = post_whatsapp(&w, &hook, "other-secret", body.clone()).await;
    assert_eq!(forged.status(), 401);
    let unsigned = w.http.post(&hook).body(body.clone()).send().await.unwrap();
    assert_eq!(unsigned.status(), 401);
    assert_eq!(w.count("SELECT count(*) FROM inbound_messages").await, 0);

    // A signed text message gets the agent's answer through the Graph API.
    let body = whatsapp_body(from, "wamid.1", chrono::Utc::now().timestamp(), "bonjour");
    let resp = post_whatsapp(&w, &hook, WA_APP_SECRET, body).await;
    assert_eq!(resp.status(), 200);
    let sent = w.whatsapp.wait_for_messages(from, 1, T).await;
    assert_eq!(sent[0]["type"], "text");
    assert_eq!(sent[0]["text"]["body"], "echo #1: bonjour");
    assert_eq!(agent.calls()[0].session_key, format!("whatsapp:dm:{from}"));
    assert_eq!(
        w.whatsapp
            .requests()
            .iter()
            .find(|r| r.body.get("type").is_some())
            .unwrap()
            .authorization
            .as_deref(),
        Some("Bearer wa-access-token")
    );
    // Reported usage is recorded as such.
    let (tokens, estimated): (i64, bool) = clawdbot_testkit::wait_for("usage", T, || async {
        sqlx::query_as("SELECT total_tokens, estimated FROM usage_records")
            .fetch_optional(&w.db)
            .await
            .unwrap()
    })
    .await;
    assert_eq!((tokens, estimated), (18, false));

    // A reply to a message older than the 24-hour window goes out as the approved template.
    let old = chrono::Utc::now().timestamp() - 25 * 3600;
    let body = whatsapp_body(from, "wamid.2", old, "late one");
    post_whatsapp(&w, &hook, WA_APP_SECRET, body).await;
    let sent = w.whatsapp.wait_for_messages(from, 2, T).await;
    assert_eq!(sent[1]["type"], "template");
    assert_eq!(sent[1]["template"]["name"], "clawdbot_reply_ready");
    assert_eq!(
        sent[1]["template"]["components"][0]["parameters"][0]["text"],
        "echo #2: late one"
    );
    r.shutdown().await;
}

/// A WhatsApp Cloud API webhook body with one text message.
fn whatsapp_body(from: &str, wamid: &str, sent_at: i64, text: &str) -> Vec<u8> {
    serde_json::to_vec(&whatsapp_text_webhook(
        WA_PHONE_ID,
        from,
        wamid,
        sent_at,
        text,
    ))
    .expect("json")
}

/// Posts `body` to the WhatsApp webhook signed with `app_secret`, as Meta does.
async fn post_whatsapp(
    w: &World,
    hook: &str,
    app_secret: &str,
    body: Vec<u8>,
) -> reqwest::Response {
    w.http
        .post(hook)
        .header("x-hub-signature-256", whatsapp_signature(app_secret, &body))
        .body(body)
        .send()
        .await
        .expect("whatsapp webhook")
}

fn signed(w: &World, req: reqwest::RequestBuilder, body: &Value) -> reqwest::RequestBuilder {
    let bytes = serde_json::to_vec(body).expect("json");
    let (sig, ts) = w.discord_signer.sign("1764000000", &bytes);
    req.header("x-signature-ed25519", sig)
        .header("x-signature-timestamp", ts)
        .header("content-type", "application/json")
        .body(bytes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discord_ping_signatures_and_deferred_ask() {
    let w = World::new().await;
    let r = w.start_router(w.config()).await;
    let agent = TestAgent::start().await;
    let tenant = w.ready_tenant(&agent, Plan::Free).await;
    let user = "80351110224678912";
    w.connect("discord", user, tenant.user).await;
    let url = format!("{}/webhooks/discord/interactions", r.base);

    let ping = json!({"id": "1", "application_id": "app1", "type": 1, "token": "t", "version": 1});
    let pong: Value = signed(&w, w.http.post(&url), &ping)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(pong, json!({"type": 1}));
    // Signed by another key, or the body changed after signing: 401.
    let other = clawdbot_testkit::fake_chat::DiscordSigner::new();
    let bytes = serde_json::to_vec(&ping).unwrap();
    let (sig, ts) = other.sign("1764000000", &bytes);
    let r401 = w
        .http
        .post(&url)
        .header("x-signature-ed25519", sig)
        .header("x-signature-timestamp", ts)
        .body(bytes)
        .send()
        .await
        .unwrap();
    assert_eq!(r401.status(), 401);
    let (sig, ts) = w.discord_signer.sign("1764000000", br#"{"type":1}"#);
    let tampered = w
        .http
        .post(&url)
        .header("x-signature-ed25519", sig)
        .header("x-signature-timestamp", ts)
        .body(r#"{"type":2}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(tampered.status(), 401);

    // /ask is deferred, then answered by editing the original response; a reply longer than
    // Discord's 2,000 characters continues in follow-ups.
    agent.state.reply_chars.store(4500, Ordering::Relaxed);
    let ask = discord_ask_interaction("9001", "app1", "tok-9001", user, "tell me a story");
    let resp: Value = signed(&w, w.http.post(&url), &ask)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(resp, json!({"type": 5}));
    let parts = w.discord.wait_for_followups("tok-9001", 3, T).await;
    assert!(
        parts.iter().all(|p| p.chars().count() <= 2000),
        "{:?}",
        parts.iter().map(|p| p.len()).collect::<Vec<_>>()
    );
    let paths: Vec<String> = w
        .discord
        .requests()
        .iter()
        .map(|r| r.path.clone())
        .collect();
    assert!(
        paths[0].ends_with("/messages/@original") && !paths[1].ends_with("@original"),
        "{paths:?}"
    );
    assert_eq!(
        agent.calls()[0].session_key,
        format!("discord:guild:{user}")
    );
    assert_eq!(agent.calls()[0].text, "tell me a story");
    r.shutdown().await;
}

/// A web chat token for `user`, as the dashboard gets one.
async fn web_token(w: &World, r: &support::Replica, user: uuid::Uuid) -> String {
    let token: Value = w
        .http
        .post(format!("{}/api/v1/web/token", r.base))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"user_id": user}))
        .send()
        .await
        .expect("web token request")
        .json()
        .await
        .expect("web token body");
    token["token"].as_str().expect("token").to_string()
}

/// A web chat user whose workspace never came (its provisioning failed) is told so after one
/// wait for it: the web edge waits for the workspace to count the message against its quota,
/// and the pipeline, which would wait as long again, knows the wait was made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_chat_without_a_workspace_is_told_so_after_one_wait() {
    let w = World::new().await;
    let r = w.start_router(w.config()).await;
    let user = clawdbot_router::admin::create_user(&w.db, None, Plan::Free)
        .await
        .expect("user");
    let token = web_token(&w, &r, user).await;
    let resp = w
        .http
        .post(format!("{}/api/v1/web/messages", r.base))
        .bearer_auth(&token)
        .json(&json!({"id": "m1", "text": "anyone there?"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body = tokio::time::timeout(T, resp.text())
        .await
        .expect("stream ends")
        .unwrap();
    assert!(body.contains("not set up yet"), "{body}");
    // The pipeline's wait for the workspace (its own stage) took nothing: 5 s without this.
    let metrics = r.metrics().await;
    let waited: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix(r#"router_stage_seconds_sum{stage="unseen_workspace"} "#))
        .unwrap_or_else(|| panic!("no unseen_workspace stage in {metrics}"))
        .parse()
        .expect("seconds");
    assert!(waited < 1.0, "the pipeline waited {waited} s again");
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_chat_streams_the_reply() {
    let w = World::new().await;
    let r = w.start_router(w.config()).await;
    let agent = TestAgent::start().await;
    let tenant = w.ready_tenant(&agent, Plan::Free).await;
    let token = web_token(&w, &r, tenant.user).await;
    let url = format!("{}/api/v1/web/messages", r.base);
    let denied = w
        .http
        .post(&url)
        .bearer_auth("x.y")
        .json(&json!({"id": "m1", "text": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 401);
    let resp = w
        .http
        .post(&url)
        .bearer_auth(&token)
        .json(&json!({"id": "m1", "text": "hi from the web"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    // The stream ends after the reply event.
    let body = tokio::time::timeout(T, resp.text())
        .await
        .expect("stream ends")
        .unwrap();
    assert!(
        body.contains("event: reply\ndata: echo #1: hi from the web"),
        "{body}"
    );
    assert_eq!(
        agent.calls()[0].session_key,
        format!("web:dm:{}", tenant.user)
    );
    // The same client message id again is a duplicate.
    let again = w
        .http
        .post(&url)
        .bearer_auth(&token)
        .json(&json!({"id": "m1", "text": "hi from the web"}))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 409);
    r.shutdown().await;
}
