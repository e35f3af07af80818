//! Replies through each platform's sending half against the fake platforms, when the platform
//! throttles (the reply arrives after the wait it asked for, or after a backoff where it gives
//! none) and when it refuses for good (one request, no retry). No database, Redis or cluster:
//! the channels are built from a config and called as the pipeline calls them.

use std::time::Duration;

use clawdbot_router::channels::{discord::Discord, telegram::Telegram, whatsapp::WhatsApp};
use clawdbot_router::inbound::Inbound;
use clawdbot_router::outbound::{Channel, ReplyKind, SendError};
use clawdbot_router::{Config, Secret};
use clawdbot_testkit::fake_chat::{FakeDiscord, FakeTelegram, FakeWhatsApp, Recorded};
use serde_json::{Value, json};

const TELEGRAM_TOKEN: &str = "123456:TEST-bot-token";
const WA_ACCESS: &str = "wa-access-token";
const WA_PHONE_ID: &str = "106540352242922";
const DISCORD_BOT_TOKEN: &str = "MTE3MDAwMDAwMDAwMDAwMDAwMQ.fake.discord-bot-token";

fn config() -> Config {
    // Nothing here connects to the database or Redis.
    Config::minimal(
        "postgres://unused/unused",
        "redis://unused",
        "admin-token-for-tests",
    )
}

fn to(channel: &str, external_id: &str, reply_to: Value) -> Inbound {
    Inbound {
        channel: channel.into(),
        external_id: external_id.into(),
        sender_id: "1".into(),
        conversation: "dm".into(),
        peer: "1".into(),
        text: "hi".into(),
        reply_to,
        sent_at: chrono::Utc::now(),
        lang: None,
    }
}

fn refused(r: &Recorded) -> bool {
    r.body.get("_refused").is_some()
}

/// Time from the first refused request to the accepted one after it.
fn retry_gap(requests: &[Recorded]) -> Duration {
    let first = requests.iter().find(|r| refused(r)).expect("a refusal");
    let accepted = requests
        .iter()
        .find(|r| !refused(r) && r.at > first.at)
        .expect("an accepted retry");
    accepted.at.duration_since(first.at)
}

#[tokio::test]
async fn telegram_waits_retry_after_and_does_not_retry_a_block() {
    let fake = FakeTelegram::start(TELEGRAM_TOKEN).await;
    let mut c = config();
    c.telegram.bot_token = Some(Secret::new(TELEGRAM_TOKEN));
    c.telegram.api_base = fake.base_url().to_string();
    let telegram = Telegram::from_config(&c, &reqwest::Client::new()).expect("telegram on");
    let chat = 4_200_001;
    let msg = to("telegram", "1", json!({"chat_id": chat}));

    // 429 retry_after=1, twice: the reply goes out after both waits.
    fake.throttle_next(2, 1);
    telegram
        .send(&msg, "after the wait", ReplyKind::Final)
        .await
        .expect("delivered after the throttle");
    assert_eq!(fake.sent_to(chat).len(), 1);
    let requests = fake.requests();
    assert_eq!(requests.len(), 3, "two refusals and the send");
    assert!(
        requests[2].at.duration_since(requests[0].at) >= Duration::from_secs(2),
        "retry_after honoured each time: {:?}",
        requests[2].at.duration_since(requests[0].at)
    );

    // Blocked by the user (403): final, asked once.
    fake.refuse_next(1);
    let err = telegram
        .send(&msg, "blocked", ReplyKind::Final)
        .await
        .expect_err("refused");
    assert!(matches!(err, SendError::Refused { status: 403 }), "{err:?}");
    assert_eq!(fake.requests().len(), 4, "not retried");

    // A wait longer than the retry budget is not taken: reported at once, and the token is in
    // no error text.
    fake.throttle_next(1, 3600);
    let err = telegram
        .send(&msg, "much later", ReplyKind::Final)
        .await
        .expect_err("throttled past the budget");
    assert!(
        matches!(err, SendError::Throttled { status: 429 }),
        "{err:?}"
    );
    assert!(!err.to_string().contains(TELEGRAM_TOKEN));
    assert_eq!(fake.requests().len(), 5);
    assert_eq!(fake.sent_to(chat).len(), 1);
}

#[tokio::test]
async fn whatsapp_backs_off_on_its_rate_limit_codes_and_not_on_other_errors() {
    let fake = FakeWhatsApp::start(WA_ACCESS).await;
    let mut c = config();
    c.whatsapp.app_secret = Some(Secret::new("wa-app-secret"));
    c.whatsapp.access_token = Some(Secret::new(WA_ACCESS));
    c.whatsapp.api_base = fake.base_url().to_string();
    let whatsapp = WhatsApp::from_config(&c, &reqwest::Client::new()).expect("whatsapp on");
    let user = "15551230001";
    let msg = to(
        "whatsapp",
        "wamid.1",
        json!({"phone_number_id": WA_PHONE_ID, "to": user, "message_id": "wamid.1"}),
    );

    // The pair limit (HTTP 400, code 131056) gives no wait: backoff of 0.5 s, then 1 s.
    fake.throttle_next(2, 400, 131056);
    whatsapp
        .send(&msg, "pair limit", ReplyKind::Final)
        .await
        .expect("delivered after backing off");
    let sent = fake
        .wait_for_messages(user, 1, Duration::from_secs(5))
        .await;
    assert_eq!(sent[0]["text"]["body"], "pair limit");
    let requests = fake.requests();
    assert_eq!(requests.len(), 3);
    assert!(
        retry_gap(&requests) >= Duration::from_millis(1500),
        "{:?}",
        retry_gap(&requests)
    );

    // The number's throughput (HTTP 429, code 130429): retried too.
    fake.throttle_next(1, 429, 130429);
    whatsapp
        .send(&msg, "throughput", ReplyKind::Final)
        .await
        .expect("delivered");
    assert_eq!(
        fake.wait_for_messages(user, 2, Duration::from_secs(5))
            .await
            .len(),
        2
    );

    // Undeliverable (400, code 131026): final, asked once.
    let before = fake.requests().len();
    fake.refuse_next(1);
    let err = whatsapp
        .send(&msg, "nobody there", ReplyKind::Final)
        .await
        .expect_err("refused");
    assert!(matches!(err, SendError::Refused { status: 400 }), "{err:?}");
    assert_eq!(fake.requests().len(), before + 1, "not retried");
}

#[tokio::test]
async fn discord_waits_retry_after_on_dms_and_interactions_and_not_on_403() {
    let fake = FakeDiscord::start(DISCORD_BOT_TOKEN).await;
    let mut c = config();
    c.discord.bot_token = Some(Secret::new(DISCORD_BOT_TOKEN));
    c.discord.api_base = fake.base_url().to_string();
    let discord = Discord::from_config(&c, &reqwest::Client::new()).expect("discord on");
    let channel = "1180000000000000001";
    let dm = to("discord", "m1", json!({"channel_id": channel}));

    // 429 with retry_after 0.6 s (headers say the same, Retry-After rounded up to 1).
    fake.throttle_next(1, 0.6);
    discord
        .send(&dm, "after the wait", ReplyKind::Final)
        .await
        .expect("delivered after the throttle");
    assert_eq!(fake.channel_messages(channel), vec!["after the wait"]);
    let gap = retry_gap(&fake.requests());
    assert!(gap >= Duration::from_millis(600), "{gap:?}");

    // An interaction's deferred response: the same answer, the same wait.
    let ask = to(
        "discord",
        "i1",
        json!({"application_id": "app1", "token": "interaction-token"}),
    );
    fake.throttle_next(1, 0.3);
    discord
        .send(&ask, "answer", ReplyKind::Final)
        .await
        .expect("interaction answered after the throttle");
    let followups = fake
        .wait_for_followups("interaction-token", 1, Duration::from_secs(5))
        .await;
    assert_eq!(followups, vec!["answer"]);

    // Missing permission to DM the user (403, code 50007): final, asked once.
    let before = fake.requests().len();
    fake.refuse_next(1);
    let err = discord
        .send(&dm, "closed DMs", ReplyKind::Final)
        .await
        .expect_err("refused");
    assert!(matches!(err, SendError::Refused { status: 403 }), "{err:?}");
    assert_eq!(fake.requests().len(), before + 1, "not retried");
    assert_eq!(fake.channel_messages(channel).len(), 1);
}
