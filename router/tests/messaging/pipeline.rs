//! The pipeline's promises: no double replies, quotas, waking hibernated tenants, never
//! dropping a held message, bad input refused, agent failures answered politely, several
//! replicas at once.

use crate::support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use clawdbot_api::{Plan, annotations};
use clawdbot_testkit::fake_chat::telegram_text_update;
use support::{TELEGRAM_SECRET, TestAgent, World};

const T: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_webhooks_across_two_replicas_get_one_reply() {
    let w = World::new().await;
    let a = w.start_router(w.config()).await;
    let b = w.start_router(w.config()).await;
    let agent = TestAgent::start().await;
    let tenant = w.ready_tenant(&agent, Plan::Free).await;
    let chat = 5_100_001;
    w.connect("telegram", &chat.to_string(), tenant.user).await;

    // The platform retries the same update, to both replicas at once, several times.
    let update = telegram_text_update(77, chat, "only once please");
    let sends = (0..6).map(|i| {
        let (w, update) = (&w, &update);
        let replica = if i % 2 == 0 { &a } else { &b };
        async move { w.telegram_update(replica, update).await.status().as_u16() }
    });
    let statuses = futures::future::join_all(sends).await;
    // A delivery that finds another one still recording the message is told to retry (503).
    assert!(statuses.contains(&200), "{statuses:?}");
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 503),
        "{statuses:?}"
    );
    w.telegram.wait_for_messages(chat, 1, T).await;
    // The platform's later retries are answered 200 and change nothing.
    for replica in [&a, &b] {
        let status = w.telegram_update(replica, &update).await.status();
        assert_eq!(status.as_u16(), 200);
    }
    // A later, distinct message proves the pipeline has drained; the duplicate made no call.
    w.telegram_update(&b, &telegram_text_update(78, chat, "second"))
        .await;
    let sent = w.telegram.wait_for_messages(chat, 2, T).await;
    assert_eq!(
        sent.iter().map(|s| s.text.as_str()).collect::<Vec<_>>(),
        vec!["echo #1: only once please", "echo #2: second"]
    );
    assert_eq!(agent.calls().len(), 2);
    assert_eq!(w.count("SELECT count(*) FROM inbound_messages").await, 2);
    // Once recorded, the dedupe keys outlive the platforms' retry horizon (a day), whether
    // the message reached the admission check (connected user) or not (unknown sender).
    assert!(dedupe_ttl(&w, "telegram", "77").await > 86_400);
    w.telegram_update(&a, &telegram_text_update(79, 5_100_002, "who am I"))
        .await;
    w.telegram.wait_for_messages(5_100_002, 1, T).await;
    // Confirmed off the message's path: it may land just after the reply.
    clawdbot_testkit::wait_for("the onboarding message's key confirmed", T, || async {
        (dedupe_ttl(&w, "telegram", "79").await > 86_400).then_some(())
    })
    .await;
    a.shutdown().await;
    b.shutdown().await;
}

/// One router, the test agent, and a Telegram chat connected to a ready tenant on `plan`.
async fn one_chat(plan: Plan, chat: i64) -> (World, support::Replica, TestAgent, support::Tenant) {
    let w = World::new().await;
    let r = w.start_router(w.config()).await;
    let agent = TestAgent::start().await;
    let tenant = w.ready_tenant(&agent, plan).await;
    w.connect("telegram", &chat.to_string(), tenant.user).await;
    (w, r, agent, tenant)
}

/// A connection to the tests' Redis.
async fn redis_conn() -> redis::aio::MultiplexedConnection {
    redis::Client::open(clawdbot_testkit::env::get().redis_url.as_str())
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("redis")
}

/// Runs one Redis command on the dedupe key of a message.
async fn on_dedupe_key<T: redis::FromRedisValue>(
    w: &World,
    command: &str,
    channel: &str,
    id: &str,
) -> T {
    let mut conn = redis_conn().await;
    redis::cmd(command)
        .arg(format!("{}dedupe:{channel}:{id}", w.redis_prefix))
        .query_async(&mut conn)
        .await
        .expect("redis command")
}

/// Seconds the dedupe key of a message still lives in Redis.
async fn dedupe_ttl(w: &World, channel: &str, id: &str) -> i64 {
    on_dedupe_key(w, "TTL", channel, id).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_a_replica_died_before_recording_is_delivered() {
    let chat = 5_100_201;
    let (w, r, agent, _tenant) = one_chat(Plan::Free, chat).await;
    // A replica claimed update 93 and died before recording it: its claim is still in Redis
    // (shortened here from 30 s).
    let mut conn = redis_conn().await;
    redis::cmd("SET")
        .arg(format!("{}dedupe:telegram:93", w.redis_prefix))
        .arg(1)
        .arg("EX")
        .arg(2)
        .query_async::<()>(&mut conn)
        .await
        .expect("claim");
    let update = telegram_text_update(93, chat, "are you there");
    // The platform's retry is not acknowledged as a duplicate while the claim stands...
    let response = w.telegram_update(&r, &update).await;
    assert_eq!(response.status().as_u16(), 503);
    assert!(response.headers().contains_key("retry-after"));
    assert_eq!(w.count("SELECT count(*) FROM inbound_messages").await, 0);
    // ...and once it has lapsed, the next retry is recorded and answered.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let status = w.telegram_update(&r, &update).await.status();
    assert_eq!(status.as_u16(), 200);
    let sent = w.telegram.wait_for_messages(chat, 1, T).await;
    assert!(sent[0].text.ends_with(": are you there"), "{sent:?}");
    assert_eq!(agent.calls().len(), 1);
    r.shutdown().await;
}

/// A claim is a deadline in the dedupe key, not rewritten once its message is recorded: past
/// the deadline, a retry of a recorded message is still a duplicate (Postgres says so, and the
/// key then says it too), and a retry of a message whose replica died is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_the_claim_lapsed_is_a_duplicate_if_recorded_and_delivered_if_not() {
    let chat = 5_100_301;
    let (w, r, agent, _tenant) = one_chat(Plan::Free, chat).await;
    let first = telegram_text_update(94, chat, "recorded");
    assert_eq!(w.telegram_update(&r, &first).await.status().as_u16(), 200);
    w.telegram.wait_for_messages(chat, 1, T).await;
    // The key holds the claim's deadline (ms) for the retry horizon: no confirmation needed.
    let deadline: i64 = on_dedupe_key(&w, "GET", "telegram", "94").await;
    assert!(
        deadline > chrono::Utc::now().timestamp_millis(),
        "{deadline}"
    );
    assert!(dedupe_ttl(&w, "telegram", "94").await > 86_400);

    // Both claims lapsed (a deadline in the past): 94 was recorded, 95 never was.
    let mut conn = redis_conn().await;
    for (id, ttl) in [("94", 86_400), ("95", 60)] {
        redis::cmd("SET")
            .arg(format!("{}dedupe:telegram:{id}", w.redis_prefix))
            .arg(1_000)
            .arg("EX")
            .arg(ttl)
            .query_async::<()>(&mut conn)
            .await
            .expect("lapsed claim");
    }
    assert_eq!(w.telegram_update(&r, &first).await.status().as_u16(), 200);
    let marked: i64 = on_dedupe_key(&w, "GET", "telegram", "94").await;
    assert_eq!(
        marked, 2,
        "a lapsed claim found recorded is marked recorded"
    );
    let died = telegram_text_update(95, chat, "after a crash");
    assert_eq!(w.telegram_update(&r, &died).await.status().as_u16(), 200);
    let sent = w.telegram.wait_for_messages(chat, 2, T).await;
    assert!(sent[1].text.ends_with(": after a crash"), "{sent:?}");
    // Give a stray second answer to 94 the time to show up.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(w.telegram.sent_to(chat).len(), 2);
    assert_eq!(agent.calls().len(), 2);
    assert_eq!(w.count("SELECT count(*) FROM inbound_messages").await, 2);
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivery_redis_forgot_is_stopped_by_the_record_and_gets_no_reply() {
    let chat = 5_100_101;
    let (w, r, _agent, _tenant) = one_chat(Plan::Free, chat).await;
    w.telegram_update(&r, &telegram_text_update(91, chat, "first"))
        .await;
    w.telegram.wait_for_messages(chat, 1, T).await;
    // Redis lost the key (restart, eviction): the retry passes it, and processing starts
    // before the record is known to be a duplicate.
    let removed: i64 = on_dedupe_key(&w, "DEL", "telegram", "91").await;
    assert_eq!(removed, 1);
    let status = w
        .telegram_update(&r, &telegram_text_update(91, chat, "first"))
        .await
        .status();
    assert_eq!(status.as_u16(), 200);
    w.telegram_update(&r, &telegram_text_update(92, chat, "second"))
        .await;
    let sent = w.telegram.wait_for_messages(chat, 2, T).await;
    // Give a stray second answer to 91 the time to show up.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sent_now = w.telegram.sent_to(chat);
    assert_eq!(sent_now.len(), 2, "{sent_now:?}");
    assert!(
        sent[0].text.ends_with(": first") && sent[1].text.ends_with(": second"),
        "{sent:?}"
    );
    assert_eq!(w.count("SELECT count(*) FROM inbound_messages").await, 2);
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_message_waits_for_a_workspace_the_replica_has_not_seen_yet() {
    let w = World::new().await;
    let r = w.start_router(w.config()).await;
    let agent = TestAgent::start().await;
    let user = clawdbot_router::admin::create_user(&w.db, None, Plan::Free)
        .await
        .expect("user");
    let chat = 5_100_401;
    w.connect("telegram", &chat.to_string(), user).await;
    let status = w
        .telegram_update(&r, &telegram_text_update(1, chat, "early"))
        .await
        .status();
    assert_eq!(status.as_u16(), 200);
    // Time enough to answer "not set up" before the workspace exists, had it not waited.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(w.telegram.sent_to(chat), vec![]);
    let tenant = w.tenant(user, Plan::Free).await;
    w.set_token(&tenant.name, &agent.token).await;
    w.mark_ready(&tenant.name, &agent.base_url).await;
    let sent = w.telegram.wait_for_messages(chat, 1, T).await;
    assert_eq!(sent[0].text, "echo #1: early");

    // A user with no workspace at all is told so once the wait is over, without an agent call.
    let alone = clawdbot_router::admin::create_user(&w.db, None, Plan::Free)
        .await
        .expect("user");
    let other_chat = 5_100_402;
    w.connect("telegram", &other_chat.to_string(), alone).await;
    w.telegram_update(&r, &telegram_text_update(2, other_chat, "anyone?"))
        .await;
    let sent = w.telegram.wait_for_messages(other_chat, 1, T).await;
    assert!(sent[0].text.contains("not set up yet"), "{sent:?}");
    assert_eq!(agent.calls().len(), 1);
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_made_on_one_replica_is_seen_by_the_other() {
    let w = World::new().await;
    let a = w.start_router(w.config()).await;
    let b = w.start_router(w.config()).await;
    let agent = TestAgent::start().await;
    let tenant = w.ready_tenant(&agent, Plan::Free).await;
    let chat = 5_200_001;
    // B learns (and caches) that this sender is unknown.
    w.telegram_update(&b, &telegram_text_update(1, chat, "hi"))
        .await;
    w.telegram.wait_for_messages(chat, 1, T).await;
    // The code is redeemed through A.
    let (code, _) = clawdbot_router::admin::generate_code(&w.db, tenant.user)
        .await
        .unwrap();
    w.telegram_update(
        &a,
        &telegram_text_update(2, chat, &format!("/start {code}")),
    )
    .await;
    w.telegram.wait_for_messages(chat, 2, T).await;
    // B routes the next message to the agent: its cache entry was invalidated.
    w.telegram_update(&b, &telegram_text_update(3, chat, "am I in?"))
        .await;
    let sent = w.telegram.wait_for_messages(chat, 3, T).await;
    assert_eq!(sent[2].text, "echo #1: am I in?");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_replica_sheds_load_with_503_and_loses_nothing() {
    let w = World::new().await;
    let mut config = w.config();
    config.limits.max_in_flight = 1;
    let r = w.start_router(config).await;
    let agent = TestAgent::start().await;
    agent.state.delay_ms.store(1500, Ordering::Relaxed);
    let tenant = w.ready_tenant(&agent, Plan::Pro).await;
    let chat = 5_250_001;
    w.connect("telegram", &chat.to_string(), tenant.user).await;

    let first = w
        .telegram_update(&r, &telegram_text_update(1, chat, "slow one"))
        .await;
    assert_eq!(first.status().as_u16(), 200);
    // The one slot is taken: the platform is told to come back, and nothing is recorded.
    let busy = w
        .telegram_update(&r, &telegram_text_update(2, chat, "second"))
        .await;
    assert_eq!(busy.status().as_u16(), 503);
    assert_eq!(
        busy.headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    assert_eq!(w.count("SELECT count(*) FROM inbound_messages").await, 1);

    // The platform's retry, once the first is answered, goes through.
    w.telegram.wait_for_messages(chat, 1, T).await;
    clawdbot_testkit::wait_for("a free slot", T, || async {
        let status = w
            .telegram_update(&r, &telegram_text_update(2, chat, "second"))
            .await
            .status()
            .as_u16();
        (status == 200).then_some(())
    })
    .await;
    let sent = w.telegram.wait_for_messages(chat, 2, T).await;
    assert_eq!(sent[1].text, "echo #2: second");
    let metrics = r.metrics().await;
    assert!(
        metrics.contains(r#"router_messages_total{channel="telegram",outcome="shed"}"#),
        "{metrics}"
    );
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_exceeded_gets_a_friendly_reply_and_no_agent_call() {
    let chat = 5_300_001;
    let (w, r, agent, tenant) = one_chat(Plan::Free, chat).await;
    // The user has already sent the free plan's 100 messages today.
    let mut conn = redis_conn().await;
    let key = format!(
        "{}quota:{}:{}",
        w.redis_prefix,
        tenant.user,
        chrono::Utc::now().format("%Y%m%d")
    );
    redis::cmd("SET")
        .arg(&key)
        .arg(100)
        .arg("EX")
        .arg(3600)
        .query_async::<()>(&mut conn)
        .await
        .unwrap();

    w.telegram_update(&r, &telegram_text_update(1, chat, "one more?"))
        .await;
    let sent = w.telegram.wait_for_messages(chat, 1, T).await;
    assert!(
        sent[0].text.contains("all 100 messages of your free plan"),
        "{}",
        sent[0].text
    );
    assert!(
        sent[0].text.contains("resets at 00:00 UTC"),
        "{}",
        sent[0].text
    );
    assert!(agent.calls().is_empty());
    let outcome: String = clawdbot_testkit::wait_for("outcome recorded", T, || async {
        sqlx::query_scalar("SELECT outcome FROM inbound_messages")
            .fetch_one(&w.db)
            .await
            .unwrap()
    })
    .await;
    assert_eq!(outcome, "quota_exceeded");
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_platform_retry_is_counted_once_against_the_quota() {
    let chat = 5_350_001;
    let (w, r, agent, tenant) = one_chat(Plan::Free, chat).await;
    // The first message of a sender the replica has not seen yet is counted on its own; the
    // later ones with their dedupe claim.
    for i in 1..=2 {
        w.telegram_update(&r, &telegram_text_update(i, chat, &format!("m{i}")))
            .await;
        w.telegram.wait_for_messages(chat, i as usize, T).await;
    }
    // The platform delivers the second again (answered 200 or, before its key is confirmed,
    // 503): neither counts.
    let retry = w
        .telegram_update(&r, &telegram_text_update(2, chat, "m2"))
        .await
        .status()
        .as_u16();
    assert!(retry == 200 || retry == 503, "{retry}");
    w.telegram_update(&r, &telegram_text_update(3, chat, "m3"))
        .await;
    w.telegram.wait_for_messages(chat, 3, T).await;
    assert_eq!(agent.calls().len(), 3);
    let key = format!(
        "{}quota:{}:{}",
        w.redis_prefix,
        tenant.user,
        chrono::Utc::now().format("%Y%m%d")
    );
    let counted: i64 = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut redis_conn().await)
        .await
        .expect("quota count");
    assert_eq!(counted, 3);
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hibernated_tenant_is_woken_and_answers() {
    let w = World::new().await;
    let r = w.start_router(w.config()).await;
    let agent = TestAgent::start().await;
    let tenant = w.ready_tenant(&agent, Plan::Free).await;
    w.mark_hibernated(&tenant.name).await;
    let chat = 5_400_001;
    w.connect("telegram", &chat.to_string(), tenant.user).await;
    // Wait until the router's view has the workspace asleep.
    clawdbot_testkit::wait_for("router sees hibernation", T, || async {
        r.core
            .directory
            .tenant_of(&tenant.user.to_string())
            .filter(|t| t.hibernated)
            .map(|_| ())
    })
    .await;

    w.telegram_update(&r, &telegram_text_update(1, chat, "wake up"))
        .await;
    // The user sees typing while the tenant wakes.
    assert_eq!(w.telegram.wait_for_chat_action(chat, T).await, "typing");
    // Playing the operator: the router's wake signal is the last-activity annotation.
    clawdbot_testkit::wait_for("last-activity annotation", T, || async {
        let ws = w.workspace(&tenant.name).await;
        ws.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(annotations::LAST_ACTIVITY).cloned())
    })
    .await;
    // The write is counted where an admin sees the router's API server writes.
    let notes: f64 = r
        .core
        .metrics
        .encode()
        .lines()
        .find_map(|l| l.strip_prefix("router_activity_notes_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("router_activity_notes_total in /metrics");
    assert!(notes >= 1.0, "{notes} activity notes counted");
    assert!(
        agent.calls().is_empty(),
        "no call before the agent is ready"
    );
    w.mark_ready(&tenant.name, &agent.base_url).await;
    let sent = w.telegram.wait_for_messages(chat, 1, T).await;
    assert_eq!(sent[0].text, "echo #1: wake up");
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_message_survives_its_replica_and_is_delivered_by_another() {
    let w = World::new().await;
    let mut config = w.config();
    config.limits.wake_hold = Duration::from_millis(300);
    let a = w.start_router(config.clone()).await;
    let agent = TestAgent::start().await;
    let tenant = w.ready_tenant(&agent, Plan::Free).await;
    w.mark_hibernated(&tenant.name).await;
    let chat = 5_500_001;
    w.connect("telegram", &chat.to_string(), tenant.user).await;
    clawdbot_testkit::wait_for("router sees hibernation", T, || async {
        a.core
            .directory
            .tenant_of(&tenant.user.to_string())
            .filter(|t| t.hibernated)
            .map(|_| ())
    })
    .await;

    w.telegram_update(&a, &telegram_text_update(1, chat, "are you there?"))
        .await;
    let sent = w.telegram.wait_for_messages(chat, 1, T).await;
    assert!(sent[0].text.contains("waking up"), "{sent:?}");
    clawdbot_testkit::wait_for("message held", T, || async {
        (w.count("SELECT count(*) FROM inbound_messages WHERE state = 'held'")
            .await
            == 1)
            .then_some(())
    })
    .await;
    // The replica that took the message goes away; the tenant wakes later.
    a.shutdown().await;
    let b = w.start_router(config).await;
    w.mark_ready(&tenant.name, &agent.base_url).await;
    let sent = w.telegram.wait_for_messages(chat, 2, T).await;
    assert_eq!(sent[1].text, "echo #1: are you there?");
    clawdbot_testkit::wait_for("message done", T, || async {
        (w.count(
            "SELECT count(*) FROM inbound_messages WHERE state = 'done' AND outcome = 'replied'",
        )
        .await
            == 1)
            .then_some(())
    })
    .await;
    assert_eq!(
        w.count("SELECT count(*) FROM inbound_messages WHERE state <> 'done'")
            .await,
        0
    );
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_without_side_effects() {
    let w = World::new().await;
    let mut config = w.config();
    config.limits.max_body_bytes = 16 * 1024;
    let r = w.start_router(config).await;
    let hook = format!("{}/webhooks/telegram", r.base);
    let post = |secret: Option<&str>, body: Vec<u8>| {
        let mut req = w
            .http
            .post(&hook)
            .header("content-type", "application/json")
            .body(body);
        if let Some(s) = secret {
            req = req.header("x-telegram-bot-api-secret-token", s);
        }
        req.send()
    };
    let good = serde_json::to_vec(&telegram_text_update(1, 1, "hi")).unwrap();
    assert_eq!(post(None, good.clone()).await.unwrap().status(), 401);
    assert_eq!(
        post(Some("wrong"), good.clone()).await.unwrap().status(),
        401
    );
    assert_eq!(
        post(Some(TELEGRAM_SECRET), b"{not json".to_vec())
            .await
            .unwrap()
            .status(),
        400
    );
    assert_eq!(
        post(Some(TELEGRAM_SECRET), b"{\"update_id\": \"x\"}".to_vec())
            .await
            .unwrap()
            .status(),
        400
    );
    let huge = serde_json::to_vec(&telegram_text_update(2, 1, &"x".repeat(20_000))).unwrap();
    assert_eq!(
        post(Some(TELEGRAM_SECRET), huge).await.unwrap().status(),
        413
    );
    // Update kinds the bot does not handle are acknowledged (so Telegram stops retrying) and ignored.
    let callback = serde_json::json!({"update_id": 3, "callback_query": {"id": "1", "from": {"id": 1, "is_bot": false, "first_name": "A"}, "chat_instance": "1", "data": "x"}});
    assert_eq!(
        post(
            Some(TELEGRAM_SECRET),
            serde_json::to_vec(&callback).unwrap()
        )
        .await
        .unwrap()
        .status(),
        200
    );
    let sticker = serde_json::json!({"update_id": 4, "message": {"message_id": 4, "date": 1, "chat": {"id": 1, "type": "private"},
        "from": {"id": 1, "is_bot": false, "first_name": "A"}, "sticker": {"file_id": "f", "file_unique_id": "u", "type": "regular", "width": 1, "height": 1, "is_animated": false, "is_video": false}}});
    assert_eq!(
        post(Some(TELEGRAM_SECRET), serde_json::to_vec(&sticker).unwrap())
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(w.count("SELECT count(*) FROM inbound_messages").await, 0);
    assert!(w.telegram.requests().is_empty());
    // The router is still up and counted all of it.
    let metrics = r.metrics().await;
    assert!(
        metrics.contains(
            r#"http_requests_total{method="POST",route="/webhooks/telegram",status="401"} 2"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("http_request_duration_seconds_bucket"),
        "{metrics}"
    );
    r.shutdown().await;
}

/// The router's view shows the agent ready, but nothing listens at its address any more (its
/// pod went to sleep a moment before the view knew): the message is kept, not failed, and
/// answered once the tenant is ready again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_finds_no_agent_listening_is_kept_and_answered_when_it_is_back() {
    let w = World::new().await;
    let r = w.start_router(w.config()).await;
    let agent = TestAgent::start().await;
    let tenant = w.ready_tenant(&agent, Plan::Free).await;
    let chat = 5_450_001;
    w.connect("telegram", &chat.to_string(), tenant.user).await;
    // An address where the connection is refused.
    let gone = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        format!("http://{}", l.local_addr().expect("addr"))
    };
    w.mark_ready(&tenant.name, &gone).await;
    clawdbot_testkit::wait_for("router sees the address", T, || async {
        r.core
            .directory
            .tenant_of(&tenant.user.to_string())
            .filter(|t| t.url.as_deref() == Some(gone.as_str()))
            .map(|_| ())
    })
    .await;

    w.telegram_update(&r, &telegram_text_update(1, chat, "are you there"))
        .await;
    clawdbot_testkit::wait_for("the message held", T, || async {
        (w.count("SELECT count(*) FROM inbound_messages WHERE state = 'held'")
            .await
            == 1)
            .then_some(())
    })
    .await;
    assert!(
        w.telegram.sent_to(chat).is_empty(),
        "no apology for a message that was never delivered"
    );

    w.mark_ready(&tenant.name, &agent.base_url).await;
    let sent = w.telegram.wait_for_messages(chat, 1, T).await;
    assert_eq!(sent[0].text, "echo #1: are you there");
    // Recorded done just after the reply went out; nothing failed.
    clawdbot_testkit::wait_for("the message done", T, || async {
        (w.count("SELECT count(*) FROM inbound_messages WHERE state = 'done'")
            .await
            == 1)
            .then_some(())
    })
    .await;
    assert_eq!(
        w.count("SELECT count(*) FROM inbound_messages").await,
        1,
        "one record"
    );
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ready_agent_whose_url_is_no_url_is_answered_as_unreachable_and_finished() {
    let chat = 5_600_101;
    let (w, r, _agent, tenant) = one_chat(Plan::Free, chat).await;
    w.mark_ready(&tenant.name, "not a url").await;
    let dir = r.core.directory.clone();
    clawdbot_testkit::wait_for("the router sees the new URL", T, || async {
        dir.tenant_of(&tenant.user.to_string())
            .filter(|t| t.url.as_deref() == Some("not a url"))
            .map(drop)
    })
    .await;
    // Finished, not left to be taken over again (and counted again) by the sweeper.
    a_message_fails_politely(&w, &r, chat, "agent_unreachable").await;
    r.shutdown().await;
}

/// Sends "hello" from `chat`: the sender hears "Sorry..." and the message is recorded failed
/// with `outcome`.
async fn a_message_fails_politely(w: &World, r: &support::Replica, chat: i64, outcome: &str) {
    w.telegram_update(r, &telegram_text_update(1, chat, "hello"))
        .await;
    let sent = w.telegram.wait_for_messages(chat, 1, T).await;
    assert!(sent[0].text.starts_with("Sorry"), "{sent:?}");
    let failed = format!(
        "SELECT count(*) FROM inbound_messages WHERE state = 'failed' AND outcome = '{outcome}'"
    );
    clawdbot_testkit::wait_for("failure recorded", T, || async {
        (w.count(&failed).await == 1).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_failure_yields_a_polite_reply_and_throttling_is_honoured() {
    let chat = 5_600_001;
    let (w, r, agent, _tenant) = one_chat(Plan::Free, chat).await;

    agent.state.fail.store(true, Ordering::Relaxed);
    a_message_fails_politely(&w, &r, chat, "agent_error").await;

    // Telegram answers 429 retry_after=1: the reply waits and is sent again, not lost. A
    // 5,000-character answer arrives as two messages, in order.
    agent.state.fail.store(false, Ordering::Relaxed);
    agent.state.reply_chars.store(5000, Ordering::Relaxed);
    w.telegram.throttle_next(1, 1);
    w.telegram_update(&r, &telegram_text_update(2, chat, "long one"))
        .await;
    let sent = w.telegram.wait_for_messages(chat, 3, T).await;
    assert!(sent[1].text.chars().count() <= 4096 && sent[2].text.chars().count() <= 4096);
    assert_eq!(
        sent[1].text.chars().count() + sent[2].text.chars().count() + 1,
        5000
    );
    let reqs = w.telegram.requests();
    let refused = reqs
        .iter()
        .find(|r| r.body.get("_refused").is_some_and(|v| v == "429"))
        .expect("a refused send");
    let retried = reqs
        .iter()
        .filter(|r| r.path.ends_with("/sendMessage") && r.body.get("_refused").is_none())
        .nth(1)
        .expect("the retry");
    assert!(
        retried.at.duration_since(refused.at) >= Duration::from_secs(1),
        "retry_after honoured"
    );
    let metrics = clawdbot_testkit::wait_for("outcome metrics", T, || async {
        let m = r.metrics().await;
        m.contains(r#"router_messages_total{channel="telegram",outcome="replied"} 1"#)
            .then_some(m)
    })
    .await;
    assert!(
        metrics.contains(r#"router_messages_total{channel="telegram",outcome="agent_error"} 1"#),
        "{metrics}"
    );
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_minute_rate_limit_answers_with_the_wait() {
    let w = World::new().await;
    let mut config = w.config();
    config.limits.rate_limit_per_minute = 1;
    let r = w.start_router(config).await;
    let agent = TestAgent::start().await;
    let tenant = w.ready_tenant(&agent, Plan::Free).await;
    let chat = 5_700_001;
    w.connect("telegram", &chat.to_string(), tenant.user).await;
    // One message a minute: of three sent at once at most two fall in different minutes.
    for i in 1..=3 {
        w.telegram_update(&r, &telegram_text_update(i, chat, &format!("m{i}")))
            .await;
        let sent = w.telegram.wait_for_messages(chat, i as usize, T).await;
        if sent
            .iter()
            .any(|s| s.text.contains("faster than I can keep up"))
        {
            let limited = sent.iter().find(|s| s.text.contains("faster")).unwrap();
            assert!(
                limited.text.contains("Please wait") && limited.text.contains("seconds"),
                "{}",
                limited.text
            );
            assert!(
                agent.calls().len() < i as usize,
                "no agent call for the limited message"
            );
            r.shutdown().await;
            return;
        }
    }
    panic!("three messages in a row were never rate limited");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_cli_creates_users_workspaces_and_codes() {
    let w = World::new().await;
    let env = clawdbot_testkit::env::get();
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_clawdbot-admin"))
            .args(args)
            .env("DATABASE_URL", &w.database_url)
            .env("KUBECONFIG", &env.kubeconfig)
            .output()
            .expect("run clawdbot-admin");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .expect("utf-8")
            .trim()
            .to_string()
    };
    let user = cli(&["create-user", "--email", "ada@example.com", "--plan", "pro"]);
    let user: uuid::Uuid = user.parse().expect("prints the user id");
    let plan: String = sqlx::query_scalar("SELECT plan FROM users WHERE id = $1")
        .bind(user)
        .fetch_one(&w.db)
        .await
        .unwrap();
    assert_eq!(plan, "pro");
    let out = cli(&[
        "create-workspace",
        "--user",
        &user.to_string(),
        "--name",
        "ada",
        "--namespace",
        &w.namespace,
        "--plan",
        "pro",
        "--model",
        "qwen2.5-7b-instruct",
        "--endpoint",
        "shared",
    ]);
    assert!(out.contains("applied"), "{out}");
    let ws = w.workspace("ada").await;
    assert_eq!(ws.spec.owner_id, user.to_string());
    assert_eq!(ws.spec.plan, Plan::Pro);
    let code = cli(&["generate-code", "--user", &user.to_string()]);
    let code = code.split_whitespace().next().unwrap();
    assert!(clawdbot_router::store::looks_like_code(code), "{code}");
    let redeemed = clawdbot_router::store::redeem_code(&w.db, code, "telegram", "42")
        .await
        .unwrap();
    assert_eq!(redeemed, Some(user));
}

/// The group commits keep their Postgres connections between statements (no test round trip
/// of the pool's on each return); a connection whose statement failed is not kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commit_connections_are_kept_between_statements_but_not_after_an_error() {
    use clawdbot_router::store::{KeptConnections, connect};
    async fn backend(conn: &mut sqlx::PgConnection) -> Result<i32, sqlx::Error> {
        sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(conn)
            .await
    }
    let pool = connect(&support::fresh_database().await, 4)
        .await
        .expect("connect");
    let kept = KeptConnections::new(pool.clone(), 1);

    let first = kept.run(backend).await.expect("first statement");
    assert_eq!(kept.kept(), 1);
    let again = kept.run(backend).await.expect("second statement");
    assert_eq!(again, first, "the kept connection is the one used next");

    // A connection in use is not handed out twice, and at most `keep` are kept: the inner
    // statement, run while the kept connection is in use, gets another from the pool and
    // that one is kept; the outer one then goes back to the pool.
    let (outer, inner) = kept
        .run(async |conn| {
            let inner = kept.run(backend).await?;
            Ok((backend(conn).await?, inner))
        })
        .await
        .expect("nested statements");
    assert_eq!(outer, first);
    assert_ne!(inner, outer);
    assert_eq!(kept.kept(), 1);
    assert_eq!(kept.run(backend).await.expect("next statement"), inner);

    // A connection whose statement failed is not kept.
    kept.run(async |conn| sqlx::query("SELECT 1/0").execute(conn).await)
        .await
        .expect_err("division by zero");
    assert_eq!(kept.kept(), 0);
    kept.run(backend).await.expect("a statement after an error");
}
