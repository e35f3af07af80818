//! No Stripe secret reaches a log line: every log line of the process (debug level, every
//! crate, async-stripe's HTTP client included) is captured while billing runs a checkout, its
//! webhooks, a forged webhook and a Stripe outage, and searched for the secret key and the
//! webhook signing secret, and for a secret in the path of a refused request. One test in its
//! own binary, so the capture is global.

mod support;

use std::sync::Arc;

use clawdbot_api::Plans;
use clawdbot_router::Secret;
use clawdbot_testkit::fake_stripe::FakeStripe;
use reqwest::{Method, StatusCode};
use serde_json::json;
use support::World;
use support::api::ApiClient;
use support::logs::capture;

const STRIPE_KEY: &str = "sk_test_51LOGTESTstripekey0000000000000";
const WEBHOOK_SECRET: &str = "whsec_LOGTESTwebhooksecret000000000";
const PRICE_PRO: &str = "price_1LogTestPro000000000000";
/// Stands for a code or token someone put in a URL.
const PATH_SECRET: &str = "pathsecret0LOGTEST";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_logs_of_billing_hold_no_stripe_secret() {
    let logs = capture();
    let w = World::new().await;
    let stripe = FakeStripe::start(STRIPE_KEY, WEBHOOK_SECRET, &[(PRICE_PRO, 1_200)]).await;
    let mut config = w.api_config();
    config.accounts.plans =
        Arc::new(Plans::parse(&format!("pro: {{stripePriceId: {PRICE_PRO}}}")).unwrap());
    config.billing.stripe_secret_key = Some(Secret::new(STRIPE_KEY));
    config.billing.stripe_webhook_secret = Some(Secret::new(WEBHOOK_SECRET));
    config.billing.stripe_api_base = stripe.url();
    // What the router logs at start (main.rs logs the whole config).
    tracing::info!(?config, "starting");
    let r = w.start_router(config).await;
    stripe.set_webhook_url(&format!("{}/webhooks/stripe", r.base));

    let mut a = ApiClient::new(&r);
    a.register(
        &format!("billing-logs-{:08x}@example.com", rand::random::<u32>()),
        "a long password 1234",
    )
    .await;
    let (s, session) = a
        .call(
            Method::POST,
            "/billing/checkout",
            Some(json!({"plan": "pro"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{session}");
    let (_, events) = stripe.complete_checkout(session["id"].as_str().unwrap());
    for e in &events {
        assert_eq!(stripe.deliver(e).await, StatusCode::OK);
    }
    let body = stripe.event_body(&events[0]);
    assert_eq!(
        stripe.deliver_raw(&body, Some("t=1,v1=00")).await,
        StatusCode::BAD_REQUEST
    );
    // A refused request is logged by its route template, never by its raw path or query.
    let stray = reqwest::get(format!(
        "{}/nowhere/{PATH_SECRET}?token={PATH_SECRET}",
        r.base
    ))
    .await
    .expect("stray request");
    assert_eq!(stray.status(), StatusCode::NOT_FOUND);
    stripe.set_outage(true);
    let (s, _) = a.call(Method::POST, "/billing/portal", None).await;
    assert_eq!(s, StatusCode::BAD_GATEWAY);
    r.shutdown().await;

    let text = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    assert!(
        text.contains("subscription applied"),
        "the capture holds billing's logs"
    );
    assert!(
        text.contains("payment provider call failed"),
        "and the outage's"
    );
    let refused = |route: &str, status: &str| {
        text.lines()
            .any(|l| l.contains("request answered") && l.contains(route) && l.contains(status))
    };
    assert!(
        refused("/webhooks/stripe", "status=400"),
        "the forged webhook's refusal is logged"
    );
    assert!(
        refused("unmatched", "status=404"),
        "and the stray request's"
    );
    for secret in [
        PATH_SECRET,
        STRIPE_KEY,
        WEBHOOK_SECRET,
        &STRIPE_KEY[8..],
        &WEBHOOK_SECRET[6..],
    ] {
        assert!(!text.contains(secret), "{secret} in the logs");
    }
}
