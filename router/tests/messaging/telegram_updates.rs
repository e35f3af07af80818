//! How Telegram's updates reach the router: it registers its own webhook when it has a public
//! URL, and long-polls `getUpdates` (one replica, under a Lease) when it has none. Against
//! the local Bot API server, the real Postgres, Redis and API server.

use crate::support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use clawdbot_api::Plan;
use clawdbot_router::config::TelegramUpdatesMode;
use clawdbot_testkit::fake_chat::telegram_text_update;
use support::{TELEGRAM_SECRET, TestAgent, World};

const T: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_public_url_the_router_sets_its_webhook_with_the_secret_token() {
    let w = World::new().await;
    let mut c = w.config();
    c.telegram.updates = TelegramUpdatesMode::Auto;
    c.server.public_url = Some("https://bot.example.test/".into());
    let r = w.start_router(c).await;
    let hook = w.telegram.wait_for_webhook(T).await;
    assert_eq!(hook["url"], "https://bot.example.test/webhooks/telegram");
    assert_eq!(hook["secret_token"], TELEGRAM_SECRET);
    assert_eq!(hook["allowed_updates"], serde_json::json!(["message"]));
    // Webhook mode: nobody polls.
    assert!(
        !w.telegram
            .requests()
            .iter()
            .any(|r| r.path.ends_with("/getUpdates")),
        "a replica with a webhook must not poll"
    );
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_url_without_a_webhook_secret_is_refused_at_start() {
    let w = World::new().await;
    let mut c = w.config();
    c.telegram.updates = TelegramUpdatesMode::Auto;
    c.server.public_url = Some("https://bot.example.test".into());
    c.telegram.webhook_secret = None;
    let err = clawdbot_router::Router::connect(c, w.kube.clone())
        .await
        .err()
        .expect("refused");
    let text = format!("{err:#}");
    assert!(text.contains("TELEGRAM_WEBHOOK_SECRET"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_public_url_one_replica_polls_and_every_update_is_answered_once() {
    let w = World::new().await;
    let agent = TestAgent::start().await;
    let tenant = w.ready_tenant(&agent, Plan::Free).await;
    let chat = 7_300_001;
    w.connect("telegram", &chat.to_string(), tenant.user).await;

    // A webhook left from an earlier deployment: polling deletes it first (Telegram refuses
    // getUpdates while one is set), keeping the updates that are pending.
    let mut c = w.config();
    c.telegram.updates = TelegramUpdatesMode::Auto;
    c.telegram.webhook_secret = None;
    c.telegram.polling_lease_seconds = 4;
    w.telegram
        .push_update(telegram_text_update(10, chat, "first"));
    let a = w.start_router(c.clone()).await;
    let sent = w.telegram.wait_for_messages(chat, 1, T).await;
    assert_eq!(sent[0].text, "echo #1: first");

    // A second replica waits for the Lease instead of polling too.
    let b = w.start_router(c.clone()).await;
    w.telegram
        .push_update(telegram_text_update(11, chat, "second"));
    let sent = w.telegram.wait_for_messages(chat, 2, T).await;
    assert_eq!(sent[1].text, "echo #2: second");
    assert_eq!(agent.calls().len(), 2, "each update reaches the agent once");

    // The webhook route is not served without a secret: nobody can post fake updates.
    let posted = w
        .telegram_update(&a, &telegram_text_update(12, chat, "forged"))
        .await;
    assert_eq!(posted.status(), 404);

    // The polling replica stops: the other takes the Lease at once and goes on.
    a.shutdown().await;
    w.telegram
        .push_update(telegram_text_update(13, chat, "third"));
    let sent = w.telegram.wait_for_messages(chat, 3, T).await;
    assert_eq!(sent[2].text, "echo #3: third");
    assert_eq!(agent.calls().len(), 3);
    // Confirmed updates are gone from Telegram's queue (the offset moved past them).
    clawdbot_testkit::wait_for("updates confirmed", T, || async {
        (w.telegram.pending_updates() == 0).then_some(())
    })
    .await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_polled_while_the_router_is_overloaded_is_asked_for_again() {
    let w = World::new().await;
    let agent = TestAgent::start().await;
    let tenant = w.ready_tenant(&agent, Plan::Free).await;
    let chat = 7_300_002;
    w.connect("telegram", &chat.to_string(), tenant.user).await;
    let mut c = w.config();
    c.telegram.updates = TelegramUpdatesMode::Polling;
    c.telegram.webhook_secret = None;
    // One message in flight at a time, and the agent takes 3 s to answer: while the first
    // update is with the agent, the second is refused (503 for a webhook) and must not be
    // confirmed to Telegram.
    c.limits.max_in_flight = 1;
    agent.state.delay_ms.store(3_000, Ordering::Relaxed);
    w.telegram
        .push_update(telegram_text_update(20, chat, "one"));
    w.telegram
        .push_update(telegram_text_update(21, chat, "two"));
    let r = w.start_router(c).await;
    clawdbot_testkit::wait_for("the refused update asked for again", T, || async {
        let offsets: Vec<_> = w
            .telegram
            .requests()
            .iter()
            .filter(|r| r.path.ends_with("/getUpdates"))
            .map(|r| r.body["offset"].as_i64())
            .collect();
        (offsets.iter().filter(|o| **o == Some(21)).count() >= 2).then_some(())
    })
    .await;
    // Both answered in the end, each once, in order.
    let sent = w.telegram.wait_for_messages(chat, 2, T).await;
    assert_eq!(sent[0].text, "echo #1: one");
    assert_eq!(sent[1].text, "echo #2: two");
    assert_eq!(agent.calls().len(), 2);
    r.shutdown().await;
}
