//! Billing end to end on the real Postgres, Redis and control plane, with the local Stripe
//! of `hack/testkit` (the production async-stripe client pointed at it by base URL): checkout
//! -> webhook -> plan upgraded -> UserWorkspace re-planned -> limits raised; a failed payment,
//! its grace period and the drop to free; retried and reordered events; bad signatures;
//! Stripe down; quota headers and the 429 at the exact limit across two replicas.
//!
//!   cargo test -p clawdbot-router --test billing

mod support;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use clawdbot_api::{Plan, Plans};
use clawdbot_router::channels::web::Web;
use clawdbot_router::{Config, Secret};
use clawdbot_testkit::fake_chat::telegram_text_update;
use clawdbot_testkit::fake_stripe::FakeStripe;
use clawdbot_testkit::wait_for;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::api::{ApiClient, DASHBOARD};
use support::{Replica, TestAgent, WEB_SECRET, World};
use uuid::Uuid;

const STRIPE_KEY: &str = "sk_test_51Clawdbot0000000000000000000000";
const WEBHOOK_SECRET: &str = "whsec_test_clawdbot_0123456789abcdef";
const PRICE_PRO: &str = "price_1ClawdbotPro00000000000";
const PRICE_TEAM: &str = "price_1ClawdbotTeam0000000000";
const PASSWORD: &str = "correct horse battery staple";
const T: Duration = Duration::from_secs(20);

/// The plans of these tests: the one definition every part reads.
fn plans() -> Arc<Plans> {
    Arc::new(
        Plans::parse(&format!(
            "free: {{messagesPerDay: 3, modelPrices: {{smollm2: {{promptCentsPerMillion: 1000000, completionCentsPerMillion: 2000000}}, \"*\": {{promptCentsPerMillion: 3000000, completionCentsPerMillion: 0}}}}}}\n\
             pro: {{stripePriceId: {PRICE_PRO}, messagesPerDay: 50}}\n\
             team: {{stripePriceId: {PRICE_TEAM}, messagesPerDay: 500}}\n"
        ))
        .expect("plans"),
    )
}

async fn stripe() -> FakeStripe {
    FakeStripe::start(
        STRIPE_KEY,
        WEBHOOK_SECRET,
        &[(PRICE_PRO, 1_200), (PRICE_TEAM, 4_900)],
    )
    .await
}

fn billing_config(w: &World, stripe: &FakeStripe, grace: Duration) -> Config {
    let mut c = w.api_config();
    c.accounts.plans = plans();
    c.billing.stripe_secret_key = Some(Secret::new(STRIPE_KEY));
    c.billing.stripe_webhook_secret = Some(Secret::new(WEBHOOK_SECRET));
    c.billing.stripe_api_base = stripe.url();
    c.billing.billing_grace_period = grace;
    c
}

async fn start(w: &World, stripe: &FakeStripe, grace: Duration) -> Replica {
    let r = w.start_router(billing_config(w, stripe, grace)).await;
    stripe.set_webhook_url(&format!("{}/webhooks/stripe", r.base));
    r
}

async fn signed_up(r: &Replica) -> ApiClient {
    let mut a = ApiClient::new(r);
    a.register(
        &format!("billing-{:08x}@example.com", rand::random::<u32>()),
        PASSWORD,
    )
    .await;
    a
}

async fn plan_in_db(w: &World, user: Uuid) -> String {
    sqlx::query_scalar("SELECT plan FROM users WHERE id = $1")
        .bind(user)
        .fetch_one(&w.db)
        .await
        .expect("plan")
}

async fn workspace_plan(w: &World, user: Uuid) -> Plan {
    w.workspace(&clawdbot_accounts::provision::workspace_name(user))
        .await
        .spec
        .plan
}

/// The daily message limit the router applies to `user` now: the plan its watch of the
/// UserWorkspace sees, read through the same plans.
fn router_limit(r: &Replica, user: Uuid) -> Option<u32> {
    let tenant = r.core.directory.tenant_of(&user.to_string())?;
    Some(
        r.core
            .config
            .accounts
            .plans
            .policy(tenant.plan)
            .messages_per_day,
    )
}

async fn wait_router_limit(r: &Replica, user: Uuid, limit: u32) {
    wait_for("the router's limit to follow the plan", T, || async move {
        (router_limit(r, user) == Some(limit)).then_some(())
    })
    .await;
}

/// Checkout for `plan`, paid, every event delivered in Stripe's order. Returns the
/// subscription id.
async fn subscribe(a: &ApiClient, stripe: &FakeStripe, plan: &str) -> String {
    let (s, session) = a
        .call(
            Method::POST,
            "/billing/checkout",
            Some(json!({"plan": plan})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{session}");
    let (sub, events) = stripe.complete_checkout(session["id"].as_str().expect("session id"));
    for e in &events {
        assert_eq!(stripe.deliver(e).await, StatusCode::OK, "{e}");
    }
    sub
}

async fn count(w: &World, sql: &str, user: Uuid) -> i64 {
    sqlx::query_scalar(sql)
        .bind(user)
        .fetch_one(&w.db)
        .await
        .expect("count")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkout_then_webhook_upgrades_the_plan_the_workspace_and_the_limits() {
    let w = World::new().await;
    let stripe = stripe().await;
    let r = start(&w, &stripe, Duration::from_secs(3600)).await;
    let a = signed_up(&r).await;
    let user = a.user();

    let (s, list) = a.get("/billing/plans").await;
    assert_eq!(s, StatusCode::OK);
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["free", "pro", "team"]);
    assert_eq!(
        (
            list[0]["current"].as_bool(),
            list[0]["purchasable"].as_bool()
        ),
        (Some(true), Some(false))
    );
    assert_eq!(
        (
            list[1]["monthly_price_cents"].as_u64(),
            list[1]["purchasable"].as_bool()
        ),
        (Some(1_200), Some(true))
    );
    assert_eq!(
        list[1]["messages_per_day"], 50,
        "the plans file's figure, not a copy"
    );
    wait_router_limit(&r, user, 3).await;

    let (s, session) = a
        .call(
            Method::POST,
            "/billing/checkout",
            Some(json!({"plan": "pro"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{session}");
    assert!(session["url"].as_str().unwrap().starts_with(&stripe.url()));
    // What went over the wire: Stripe's form encoding, the user carried both ways.
    let sent = stripe.requests().pop().unwrap();
    assert_eq!(sent.path, "/v1/checkout/sessions");
    assert_eq!(sent.field("mode"), Some("subscription"));
    assert_eq!(sent.field("line_items[0][price]"), Some(PRICE_PRO));
    assert_eq!(sent.field("line_items[0][quantity]"), Some("1"));
    assert_eq!(
        sent.field("client_reference_id"),
        Some(user.to_string().as_str())
    );
    assert_eq!(
        sent.field("subscription_data[metadata][user_id]"),
        Some(user.to_string().as_str())
    );
    assert!(
        sent.field("success_url")
            .unwrap()
            .starts_with(&format!("{DASHBOARD}/dashboard/billing?checkout=success"))
    );
    // A session is not a payment: nothing changed yet.
    assert_eq!(plan_in_db(&w, user).await, "free");
    assert_eq!(
        count(
            &w,
            "SELECT count(*) FROM billing_subscriptions WHERE user_id = $1",
            user
        )
        .await,
        0
    );

    let (_, events) = stripe.complete_checkout(session["id"].as_str().unwrap());
    for e in &events {
        let resp_status = stripe.deliver(e).await;
        assert_eq!(resp_status, StatusCode::OK);
    }
    assert_eq!(plan_in_db(&w, user).await, "pro");
    assert_eq!(
        workspace_plan(&w, user).await,
        Plan::Pro,
        "the UserWorkspace is re-planned"
    );
    wait_router_limit(&r, user, 50).await;
    let (_, me) = a.get("/users/me").await;
    assert_eq!(me["plan"], "pro");
    let (s, sub) = a.get("/billing/subscription").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        (sub["plan"].as_str(), sub["subscription"]["status"].as_str()),
        (Some("pro"), Some("active"))
    );
    assert!(sub["subscription"]["current_period_end"].is_string());

    // The same plan again: 422, and Stripe is not asked.
    let asked = stripe.requests().len();
    let (s, e) = a
        .call(
            Method::POST,
            "/billing/checkout",
            Some(json!({"plan": "pro"})),
        )
        .await;
    assert_eq!(
        (s, e["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("plan")),
        "{e}"
    );
    assert_eq!(stripe.requests().len(), asked);

    // Up to team, prorated, applied at once from Stripe's answer.
    let (s, changed) = a
        .call(
            Method::POST,
            "/billing/subscription",
            Some(json!({"plan": "team"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{changed}");
    assert_eq!(changed["plan"], "team");
    let sent = stripe.requests().pop().unwrap();
    assert_eq!(sent.field("items[0][price]"), Some(PRICE_TEAM));
    assert_eq!(sent.field("proration_behavior"), Some("create_prorations"));
    assert_eq!(workspace_plan(&w, user).await, Plan::Team);
    wait_router_limit(&r, user, 500).await;

    // Cancel: at the period's end; the plan stays until then.
    let (s, canceled) = a.call(Method::DELETE, "/billing/subscription", None).await;
    assert_eq!(s, StatusCode::OK, "{canceled}");
    assert_eq!(canceled["subscription"]["cancel_at_period_end"], true);
    assert_eq!(plan_in_db(&w, user).await, "team");
    let (s, portal) = a.call(Method::POST, "/billing/portal", None).await;
    assert_eq!(s, StatusCode::CREATED, "{portal}");
    assert!(portal["url"].as_str().unwrap().starts_with(&stripe.url()));

    let (s, usage) = a.get("/billing/usage").await;
    assert_eq!(s, StatusCode::OK, "{usage}");
    assert_eq!(
        (usage["plan"].as_str(), usage["messages_per_day"].as_u64()),
        (Some("team"), Some(500))
    );
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_payment_keeps_the_plan_through_the_grace_period_then_drops_to_free_until_paid() {
    let w = World::new().await;
    let stripe = stripe().await;
    // Long enough for the failed-payment webhooks and the read that follows them on a busy
    // machine (the sweep runs every quarter of it).
    let grace = Duration::from_secs(10);
    let r = start(&w, &stripe, grace).await;
    let a = signed_up(&r).await;
    let user = a.user();
    // Pro with web search on: the downgrade must switch it off, and say so.
    let sub = subscribe(&a, &stripe, "pro").await;
    let (s, body) = a
        .call(Method::PATCH, "/config", Some(json!({"web_search": true})))
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");

    for e in stripe.fail_payment(&sub) {
        assert_eq!(stripe.deliver(&e).await, StatusCode::OK);
    }
    let (_, view) = a.get("/billing/subscription").await;
    assert_eq!(
        view["plan"], "pro",
        "within the grace period the plan stays"
    );
    assert_eq!(view["subscription"]["status"], "past_due");
    assert!(
        view["subscription"]["grace_until"].is_string()
            && view["subscription"]["payment_failed_at"].is_string()
    );

    // The router's sweep ends the grace period.
    wait_for(
        "the plan to drop to free after the grace period",
        T + grace,
        || {
            let w = &w;
            async move { (plan_in_db(w, user).await == "free").then_some(()) }
        },
    )
    .await;
    assert_eq!(workspace_plan(&w, user).await, Plan::Free);
    wait_router_limit(&r, user, 3).await;
    let (_, view) = a.get("/billing/subscription").await;
    let notice = view["subscription"]["notice"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        notice.contains("grace period") && notice.contains("web search is off"),
        "{notice}"
    );
    let (_, config) = a.get("/config").await;
    assert_eq!(
        config["web_search"], false,
        "switched off, not deleted: {config}"
    );

    // A later payment restores the plan.
    for e in stripe.pay(&sub) {
        assert_eq!(stripe.deliver(&e).await, StatusCode::OK);
    }
    assert_eq!(plan_in_db(&w, user).await, "pro");
    assert_eq!(workspace_plan(&w, user).await, Plan::Pro);
    let (_, view) = a.get("/billing/subscription").await;
    assert!(view["subscription"]["grace_until"].is_null(), "{view}");
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retried_and_reordered_events_apply_once_and_the_latest_state_wins() {
    let w = World::new().await;
    let stripe = stripe().await;
    let r = start(&w, &stripe, Duration::from_secs(3600)).await;
    let a = signed_up(&r).await;
    let user = a.user();
    let (_, session) = a
        .call(
            Method::POST,
            "/billing/checkout",
            Some(json!({"plan": "pro"})),
        )
        .await;
    let (sub, events) = stripe.complete_checkout(session["id"].as_str().unwrap());
    // Last first: invoice.paid, then checkout.session.completed, then subscription.created.
    for e in events.iter().rev() {
        assert_eq!(stripe.deliver(e).await, StatusCode::OK);
    }
    assert_eq!(plan_in_db(&w, user).await, "pro");
    // Every one again (Stripe retries): acknowledged, nothing done, Stripe not asked.
    let asked = stripe.requests().len();
    for e in &events {
        let body = stripe.event_body(e);
        let resp = w
            .http
            .post(format!("{}/webhooks/stripe", r.base))
            .header(
                "stripe-signature",
                stripe.sign(&body, chrono::Utc::now().timestamp()),
            )
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.json::<Value>().await.unwrap()["outcome"], "duplicate");
    }
    assert_eq!(stripe.requests().len(), asked);
    let events_stored: i64 = w
        .count(&format!(
            "SELECT count(*) FROM stripe_events WHERE id IN ('{}')",
            events.join("','")
        ))
        .await;
    assert_eq!(events_stored, 3);

    // The subscription ends; an older "updated, active" event arriving after the deletion
    // does not bring the plan back: the state is read from Stripe's latest version.
    let stale = stripe.pay(&sub);
    let deleted = stripe.end_subscription(&sub);
    assert_eq!(stripe.deliver(&deleted).await, StatusCode::OK);
    assert_eq!(plan_in_db(&w, user).await, "free");
    for e in &stale {
        assert_eq!(stripe.deliver(e).await, StatusCode::OK);
    }
    assert_eq!(plan_in_db(&w, user).await, "free");
    assert_eq!(workspace_plan(&w, user).await, Plan::Free);
    let (_, view) = a.get("/billing/subscription").await;
    assert_eq!(view["subscription"]["status"], "canceled");
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_signatures_and_bad_requests_change_nothing_and_stripe_down_is_said_clearly() {
    let w = World::new().await;
    let stripe = stripe().await;
    let r = start(&w, &stripe, Duration::from_secs(3600)).await;
    let a = signed_up(&r).await;
    let user = a.user();
    let (_, session) = a
        .call(
            Method::POST,
            "/billing/checkout",
            Some(json!({"plan": "pro"})),
        )
        .await;
    let (_, events) = stripe.complete_checkout(session["id"].as_str().unwrap());
    let body = stripe.event_body(&events[1]);
    // Stale and future signatures sit a minute past the 300 s tolerance: the router reads its
    // clock after `now` is taken, and one second boundary crossed between the two put a
    // signature from `now + 301` back inside (the boundary itself is a unit test of signature.rs).
    let now = chrono::Utc::now().timestamp();
    let other = FakeStripe::start(STRIPE_KEY, "whsec_someone_else", &[]).await;
    for (what, body, header) in [
        ("no signature", body.clone(), None),
        ("another secret", body.clone(), Some(other.sign(&body, now))),
        ("too old", body.clone(), Some(stripe.sign(&body, now - 360))),
        (
            "from the future",
            body.clone(),
            Some(stripe.sign(&body, now + 360)),
        ),
        (
            "body changed",
            body.replace("subscription", "subscriptiom"),
            Some(stripe.sign(&body, now)),
        ),
        (
            "garbage header",
            body.clone(),
            Some("t=abc,v1=zz".to_string()),
        ),
    ] {
        assert_eq!(
            stripe.deliver_raw(&body, header.as_deref()).await,
            StatusCode::BAD_REQUEST,
            "{what}"
        );
    }
    assert_eq!(w.count("SELECT count(*) FROM stripe_events").await, 0);
    assert_eq!(plan_in_db(&w, user).await, "free");
    // Signed but not an event: 400; an event type billing does not handle: 200, ignored.
    assert_eq!(
        stripe
            .deliver_raw("[1,2]", Some(&stripe.sign("[1,2]", now)))
            .await,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(stripe.deliver(&stripe.other_event()).await, StatusCode::OK);
    assert_eq!(w.count("SELECT count(*) FROM stripe_events").await, 0);

    // Unknown and unsold plans: 422 naming the field.
    for plan in ["gold", "free"] {
        let (s, e) = a
            .call(
                Method::POST,
                "/billing/checkout",
                Some(json!({"plan": plan})),
            )
            .await;
        assert_eq!(
            (s, e["field"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("plan")),
            "{plan}: {e}"
        );
    }
    // Nothing to change or cancel yet.
    let (s, _) = a.call(Method::DELETE, "/billing/subscription", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // Stripe failing: a clear error and nothing written; the webhook asks Stripe to retry.
    stripe.set_outage(true);
    let (s, e) = a
        .call(
            Method::POST,
            "/billing/checkout",
            Some(json!({"plan": "team"})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_GATEWAY, "{e}");
    assert!(e["error"].as_str().unwrap().contains("nothing was changed"));
    assert!(!e.to_string().contains(STRIPE_KEY));
    assert_ne!(stripe.deliver(&events[0]).await, StatusCode::OK);
    assert_eq!(w.count("SELECT count(*) FROM stripe_events").await, 0);
    assert_eq!(
        count(
            &w,
            "SELECT count(*) FROM billing_subscriptions WHERE user_id = $1",
            user
        )
        .await,
        0
    );
    // Back up: Stripe's retry of the same event does the work.
    stripe.set_outage(false);
    for e in &events {
        assert_eq!(stripe.deliver(e).await, StatusCode::OK);
    }
    assert_eq!(plan_in_db(&w, user).await, "pro");
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_headers_count_down_and_the_limit_holds_exactly_across_two_replicas() {
    let w = World::new().await;
    let stripe = stripe().await;
    let r1 = start(&w, &stripe, Duration::from_secs(3600)).await;
    let r2 = w
        .start_router(billing_config(&w, &stripe, Duration::from_secs(3600)))
        .await;
    let agent = TestAgent::start().await;
    let tenant = w.ready_tenant(&agent, Plan::Free).await;
    // As the web token endpoint does: the user's web chat is their connected chat account.
    w.connect("web", &tenant.user.to_string(), tenant.user)
        .await;
    let token = Web::mint(&Secret::new(WEB_SECRET), tenant.user);
    for r in [&r1, &r2] {
        support::api::wait_usable(r, tenant.user).await;
    }
    let send = |r: &Replica, id: usize| {
        let req = w
            .http
            .post(format!("{}/api/v1/web/messages", r.base))
            .bearer_auth(&token)
            .json(&json!({"id": format!("m{id}"), "text": "hello"}));
        async move { req.send().await.unwrap() }
    };
    // The free plan here allows 3 a day: 3, alternating replicas, then the 4th is refused.
    for (i, r) in [&r1, &r2, &r1].into_iter().enumerate() {
        let resp = send(r, i).await;
        assert_eq!(resp.status(), 200);
        let h = resp.headers();
        assert_eq!(h["x-ratelimit-limit"], "3");
        assert_eq!(h["x-ratelimit-remaining"], (2 - i).to_string().as_str());
        let reset: i64 = h["x-ratelimit-reset"].to_str().unwrap().parse().unwrap();
        assert!((0..=86_400).contains(&reset));
        let events = resp.text().await.unwrap();
        assert!(events.contains("event: reply\ndata: echo"), "{events}");
    }
    let over = send(&r2, 3).await;
    assert_eq!(over.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(over.headers()["x-ratelimit-remaining"], "0");
    assert!(over.headers().contains_key("retry-after"));
    let body: Value = over.json().await.unwrap();
    assert_eq!(
        body["upgrade_url"],
        format!("{DASHBOARD}/dashboard/billing")
    );
    assert!(body["error"].as_str().unwrap().contains("3 messages"));
    // Exactly three reached the agent.
    agent.wait_calls(3, T).await;
    assert_eq!(agent.calls().len(), 3);
    r2.shutdown().await;
    r1.shutdown().await;
}

/// The per-minute limit's 429 carries the headers of that limit (not the daily count, which
/// a refused message does not touch). The minute may turn between sends, so the test sends
/// until refused: within two minutes' worth it must be.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_minute_429_says_its_own_limit_in_the_headers() {
    let w = World::new().await;
    let stripe = stripe().await;
    let mut c = billing_config(&w, &stripe, Duration::from_secs(3600));
    c.limits.rate_limit_per_minute = 2;
    c.accounts.plans = Arc::new(Plans::parse("free: {messagesPerDay: 100}\n").expect("plans"));
    let r = w.start_router(c).await;
    let agent = TestAgent::start().await;
    let tenant = w.ready_tenant(&agent, Plan::Free).await;
    w.connect("web", &tenant.user.to_string(), tenant.user)
        .await;
    support::api::wait_usable(&r, tenant.user).await;
    let token = Web::mint(&Secret::new(WEB_SECRET), tenant.user);
    let mut refused = None;
    for i in 0..5 {
        let resp = w
            .http
            .post(format!("{}/api/v1/web/messages", r.base))
            .bearer_auth(&token)
            .json(&json!({"id": format!("r{i}"), "text": "hello"}))
            .send()
            .await
            .unwrap();
        if resp.status() == StatusCode::TOO_MANY_REQUESTS {
            refused = Some(resp);
            break;
        }
        assert_eq!(resp.status(), 200);
        assert_eq!(
            resp.headers()["x-ratelimit-limit"],
            "100",
            "the daily quota"
        );
    }
    let refused = refused.expect("the third message in a minute is refused");
    let h = refused.headers();
    assert_eq!(
        (&h["x-ratelimit-limit"], &h["x-ratelimit-remaining"]),
        (
            &"2".parse::<reqwest::header::HeaderValue>().unwrap(),
            &"0".parse().unwrap()
        )
    );
    let reset: u64 = h["x-ratelimit-reset"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&reset), "{reset}");
    assert_eq!(h["retry-after"].to_str().unwrap(), reset.to_string());
    r.shutdown().await;
}

/// `GET /billing/usage` per model: a turn OpenClaw answers (it names only itself) counts
/// under the workspace's model, a turn the lite agent answers under the model it names, and
/// a turn with no usage reported is estimated, kept apart; each priced at the plan's price of
/// its model. `/api/v1/usage` still counts them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_is_per_model_with_the_plans_prices_and_estimates_kept_apart() {
    let w = World::new().await;
    let stripe = stripe().await;
    let r = start(&w, &stripe, Duration::from_secs(3600)).await;
    let a = signed_up(&r).await;
    let user = a.user();
    let agent = TestAgent::start().await;
    let ws = clawdbot_accounts::provision::workspace_name(user);
    assert_eq!(w.workspace(&ws).await.spec.model.name, "smollm2");
    w.set_token(&ws, &agent.token).await;
    w.mark_ready(&ws, &agent.base_url).await;
    w.connect("web", &user.to_string(), user).await;
    support::api::wait_usable(&r, user).await;
    let token = Web::mint(&Secret::new(WEB_SECRET), user);
    let send = |id: &str| {
        let req = w
            .http
            .post(format!("{}/api/v1/web/messages", r.base))
            .bearer_auth(&token)
            .json(&json!({"id": id, "text": "hello"}));
        async move {
            let resp = req.send().await.unwrap();
            assert_eq!(resp.status(), 200);
            resp.text().await.unwrap()
        }
    };
    let recorded = |n: i64| {
        let w = &w;
        wait_for("the usage records", T, move || async move {
            (count(
                w,
                "SELECT count(*) FROM usage_records WHERE user_id = $1",
                user,
            )
            .await
                == n)
                .then_some(())
        })
    };
    // As OpenClaw: usage reported (11 + 7), the answer's model is "openclaw".
    agent.state.report_usage.store(true, Ordering::Relaxed);
    send("m1").await;
    recorded(1).await;
    // As the lite agent: it names its provider's model.
    *agent.state.reply_model.lock().unwrap() = Some("gpt-4o-mini".into());
    send("m2").await;
    recorded(2).await;
    // No usage reported: estimated from the text, under the workspace's model.
    *agent.state.reply_model.lock().unwrap() = None;
    agent.state.report_usage.store(false, Ordering::Relaxed);
    send("m3").await;
    recorded(3).await;

    let (s, u) = a.get("/billing/usage").await;
    assert_eq!(s, StatusCode::OK, "{u}");
    assert_eq!(
        (u["messages"].as_i64(), u["estimated_messages"].as_i64()),
        (Some(3), Some(1))
    );
    let models = u["models"].as_array().expect("models");
    let names: Vec<&str> = models
        .iter()
        .map(|m| m["model"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["gpt-4o-mini", "smollm2"], "{u}");
    let (mini, small) = (&models[0], &models[1]);
    // gpt-4o-mini: 11 prompt + 7 completion at the "*" price (3 cents a prompt token, 0 a
    // completion token).
    assert_eq!(mini["reported"]["messages"], 1);
    assert_eq!(mini["reported"]["total_tokens"], 18);
    assert_eq!(mini["reported"]["cost_cents"].as_f64(), Some(33.0));
    assert_eq!(mini["estimated"]["messages"], 0);
    // smollm2: the reported turn at its own price (1 and 2 cents), the estimated one apart.
    assert_eq!(small["reported"]["messages"], 1);
    assert_eq!(small["reported"]["cost_cents"].as_f64(), Some(11.0 + 14.0));
    assert_eq!(small["estimated"]["messages"], 1);
    let est = &small["estimated"];
    let (p, c) = (
        est["prompt_tokens"].as_f64().unwrap(),
        est["completion_tokens"].as_f64().unwrap(),
    );
    assert!(p > 0.0 && c > 0.0, "{est}");
    assert_eq!(est["cost_cents"].as_f64(), Some(p + 2.0 * c));
    assert_eq!(
        u["estimated_tokens"].as_f64(),
        Some(p + c),
        "the totals agree with the models"
    );
    assert_eq!(u["reported_tokens"], 36);

    let (s, days) = a.get("/usage?days=1").await;
    assert_eq!(s, StatusCode::OK, "{days}");
    assert_eq!(days["total_messages"], 3, "{days}");
    // The dashboard's billing page shows the same, per model.
    let page = no_redirects()
        .get(format!("{}/dashboard/billing", r.base))
        .header("cookie", dashboard_cookies(&a))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let table = &page[page.find("id=\"model-usage\"").expect("the model table")..];
    assert!(
        table.contains("gpt-4o-mini") && table.contains("18 · $0.3300"),
        "{table}"
    );
    r.shutdown().await;
}

/// Deleting an account cancels its subscription at Stripe at once, through the production
/// client; while Stripe fails nothing is deleted (502, the user retries), and a
/// deletion retried after the cancellation went through is not held up by it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_account_cancels_the_subscription_at_once_or_deletes_nothing() {
    let w = World::new().await;
    let stripe = stripe().await;
    let r = start(&w, &stripe, Duration::from_secs(3600)).await;
    let a = signed_up(&r).await;
    let user = a.user();
    let sub = subscribe(&a, &stripe, "pro").await;
    let users = "SELECT count(*) FROM users WHERE id = $1";

    stripe.set_outage(true);
    let (s, e) = a.call(Method::DELETE, "/users/me", None).await;
    assert_eq!(s, StatusCode::BAD_GATEWAY, "{e}");
    assert!(
        e["error"].as_str().unwrap().contains("nothing was changed"),
        "{e}"
    );
    assert_eq!(count(&w, users, user).await, 1, "nothing deleted");
    assert_eq!(plan_in_db(&w, user).await, "pro");
    assert_eq!(stripe.subscription(&sub).unwrap()["status"], "active");

    stripe.set_outage(false);
    let (s, e) = a.call(Method::DELETE, "/users/me", None).await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{e}");
    assert_eq!(count(&w, users, user).await, 0);
    let cancel = stripe
        .requests()
        .into_iter()
        .rfind(|q| q.method == "DELETE")
        .expect("a cancellation");
    assert_eq!(cancel.path, format!("/v1/subscriptions/{sub}"));
    let ended = stripe.subscription(&sub).unwrap();
    assert_eq!(
        (
            ended["status"].as_str(),
            ended["cancel_at_period_end"].as_bool()
        ),
        (Some("canceled"), Some(false)),
        "ended now, not at the period's end: {ended}"
    );

    // Cancelled at Stripe, but the deletion did not finish (stored row still live): a retry
    // finds the subscription over and goes on.
    let b = signed_up(&r).await;
    let sub_b = subscribe(&b, &stripe, "pro").await;
    // Stripe's event is not delivered: the stored row still says active.
    let _undelivered = stripe.end_subscription(&sub_b);
    let (s, e) = b.call(Method::DELETE, "/users/me", None).await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{e}");
    assert_eq!(count(&w, users, b.user()).await, 0);
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plans_channel_limit_holds_at_redemption_and_rises_with_an_upgrade() {
    let w = World::new().await;
    let stripe = stripe().await;
    let mut config = billing_config(&w, &stripe, Duration::from_secs(3600));
    // The account's assistant never runs here: a message for it is held at once.
    config.limits.wake_hold = Duration::from_millis(200);
    config.accounts.plans = Arc::new(
        Plans::parse(&format!(
            "free: {{maxChannels: 1}}\npro: {{stripePriceId: {PRICE_PRO}, maxChannels: 2}}\n"
        ))
        .expect("plans"),
    );
    let r = w.start_router(config).await;
    stripe.set_webhook_url(&format!("{}/webhooks/stripe", r.base));
    let a = signed_up(&r).await;
    let user = a.user();
    // Two codes while nothing is connected: each is within the limit when made.
    let mut codes = Vec::new();
    for _ in 0..2 {
        let (s, c) = a.call(Method::POST, "/channels/codes", None).await;
        assert_eq!(s, StatusCode::CREATED, "{c}");
        codes.push(c["code"].as_str().unwrap().to_string());
    }
    let start = |update: i64, chat: i64, code: &str| {
        telegram_text_update(update, chat, &format!("/start {code}"))
    };
    assert_eq!(
        w.telegram_update(&r, &start(1, 5001, &codes[0]))
            .await
            .status(),
        200
    );
    w.telegram.wait_for_messages(5001, 1, T).await;
    // The second redemption would pass the free plan's one account: refused, said why.
    assert_eq!(
        w.telegram_update(&r, &start(2, 5002, &codes[1]))
            .await
            .status(),
        200
    );
    let told = w.telegram.wait_for_messages(5002, 1, T).await;
    assert!(
        told[0].text.contains("at most 1 chat accounts"),
        "{:?}",
        told[0].text
    );
    assert_eq!(
        count(
            &w,
            "SELECT count(*) FROM user_channel_connections WHERE user_id = $1",
            user
        )
        .await,
        1
    );
    let (s, e) = a.call(Method::POST, "/channels/codes", None).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{e}");
    // Pro allows two: the same code, unused, now connects.
    let sub = subscribe(&a, &stripe, "pro").await;
    assert_eq!(
        w.telegram_update(&r, &start(3, 5002, &codes[1]))
            .await
            .status(),
        200
    );
    w.telegram.wait_for_messages(5002, 2, T).await;
    assert_eq!(
        count(
            &w,
            "SELECT count(*) FROM user_channel_connections WHERE user_id = $1",
            user
        )
        .await,
        2
    );

    // Back to free (one account) with two connected: the newer chat stays connected but is
    // not answered, the older one still reaches the assistant, nothing is deleted.
    let ended = stripe.end_subscription(&sub);
    assert_eq!(stripe.deliver(&ended).await, StatusCode::OK);
    wait_for("the plan back to free", T, || async {
        (plan_in_db(&w, user).await == "free").then_some(())
    })
    .await;
    let free_limit = r
        .core
        .config
        .accounts
        .plans
        .policy(Plan::Free)
        .messages_per_day;
    wait_router_limit(&r, user, free_limit).await;
    // Sends a Telegram message and returns the outcome the router decided for it (None while
    // it is held for a sleeping assistant).
    let send = |update: i64, chat: i64| {
        let (w, r) = (&w, &r);
        async move {
            let status = w
                .telegram_update(r, &telegram_text_update(update, chat, "still there?"))
                .await
                .status();
            assert_eq!(status, 200, "the update taken");
            wait_for("the message decided", T, || async {
                let row: Option<(String, Option<String>)> = sqlx::query_as(
                    "SELECT state, outcome FROM inbound_messages
                     WHERE channel = 'telegram' AND external_id = $1 AND state <> 'received'",
                )
                .bind(update.to_string())
                .fetch_optional(&w.db)
                .await
                .expect("the message's record");
                row.map(|(_, outcome)| outcome)
            })
            .await
        }
    };
    assert_eq!(send(4, 5002).await.as_deref(), Some("channel_paused"));
    let told = w.telegram.wait_for_messages(5002, 3, T).await;
    assert!(
        told[2].text.contains("free plan connects 1 chat accounts")
            && told[2].text.contains("nothing was deleted"),
        "{:?}",
        told[2].text
    );
    assert_ne!(
        send(5, 5001).await.as_deref(),
        Some("channel_paused"),
        "the oldest chat is in use"
    );
    assert_eq!(
        count(
            &w,
            "SELECT count(*) FROM user_channel_connections WHERE user_id = $1",
            user
        )
        .await,
        2,
        "nothing deleted"
    );
    // Removing the older chat puts the newer one in use, on every replica at once.
    let (s, list) = a.call(Method::GET, "/channels/connections", None).await;
    assert_eq!(s, StatusCode::OK, "{list}");
    let older = list
        .as_array()
        .or_else(|| list["connections"].as_array())
        .expect("connections")
        .iter()
        .find(|c| c["sender_id"] == "5001")
        .expect("the older chat")["id"]
        .as_str()
        .expect("id")
        .to_string();
    let (s, e) = a
        .call(
            Method::DELETE,
            &format!("/channels/connections/{older}"),
            None,
        )
        .await;
    assert!(s.is_success(), "{s} {e}");
    let mut update = 6;
    wait_for("the newer chat in use", T, || {
        update += 1;
        let n = update;
        let send = &send;
        async move { (send(n, 5002).await.as_deref() != Some("channel_paused")).then_some(()) }
    })
    .await;
    r.shutdown().await;
}

/// The dashboard's cookies for `a`'s session, with a CSRF token for its forms.
const CSRF: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn dashboard_cookies(a: &ApiClient) -> String {
    format!(
        "cb_csrf={CSRF}; cb_session={}",
        a.access.as_deref().expect("signed in")
    )
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// Connects a Telegram chat to `a`'s account with a code, as a user does.
async fn connect_telegram(w: &World, r: &Replica, a: &ApiClient, chat: i64) {
    let (s, c) = a.call(Method::POST, "/channels/codes", None).await;
    assert_eq!(s, StatusCode::CREATED, "{c}");
    let start = telegram_text_update(
        chat,
        chat,
        &format!("/start {}", c["code"].as_str().expect("code")),
    );
    assert_eq!(w.telegram_update(r, &start).await.status(), 200);
    w.telegram.wait_for_messages(chat, 1, T).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_payment_is_told_once_in_chat_and_on_the_dashboard_with_the_grace_deadline() {
    let w = World::new().await;
    let stripe = stripe().await;
    let r = start(&w, &stripe, Duration::from_secs(3600)).await;
    let a = signed_up(&r).await;
    let chat = 5_301 + i64::from(rand::random::<u16>());
    connect_telegram(&w, &r, &a, chat).await;
    let sub = subscribe(&a, &stripe, "pro").await;
    let before = w.telegram.sent_to(chat).len();
    let http = no_redirects();
    let home = http
        .get(format!("{}/dashboard", r.base))
        .header("cookie", dashboard_cookies(&a))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!home.contains("payment-failed"), "no notice while paid");

    let events = stripe.fail_payment(&sub);
    for e in &events {
        assert_eq!(stripe.deliver(e).await, StatusCode::OK);
    }
    // Stripe retries the failure event: still one message.
    assert_eq!(stripe.deliver(&events[0]).await, StatusCode::OK);
    let (_, view) = a.get("/billing/subscription").await;
    let until: chrono::DateTime<chrono::Utc> = view["subscription"]["grace_until"]
        .as_str()
        .expect("grace_until")
        .parse()
        .expect("a time");
    let shown = until.format("%Y-%m-%d %H:%M UTC").to_string();
    // The webhook answers after the notice is sent: no waiting needed.
    let sent = w.telegram.sent_to(chat);
    assert_eq!(sent.len(), before + 1, "told once: {sent:?}");
    let told = &sent[before].text;
    assert!(
        told.contains("did not go through")
            && told.contains(&shown)
            && told.contains(&format!("{DASHBOARD}/dashboard/billing")),
        "{told}"
    );

    for path in ["/dashboard", "/dashboard/billing"] {
        let page = http
            .get(format!("{}{path}", r.base))
            .header("cookie", dashboard_cookies(&a))
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), 200, "{path}");
        let body = page.text().await.unwrap();
        assert!(
            body.contains("id=\"payment-failed\"") && body.contains(&shown),
            "{path}: {body}"
        );
    }

    // Paid again: no notice anywhere, and nothing more in chat.
    for e in stripe.pay(&sub) {
        assert_eq!(stripe.deliver(&e).await, StatusCode::OK);
    }
    assert_eq!(w.telegram.sent_to(chat).len(), before + 1);
    let home = http
        .get(format!("{}/dashboard", r.base))
        .header("cookie", dashboard_cookies(&a))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!home.contains("payment-failed"));
    r.shutdown().await;
}

/// The failed-payment notice reaches every chat the user connected where the bot may write
/// first (Telegram, a Discord DM it opens, WhatsApp's approved template), once, in the
/// language the user chose on the dashboard. The web chat has nowhere to push to: the
/// dashboard shows the notice (the test above).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_payment_is_told_once_on_every_connected_chat_in_the_users_language() {
    const WA_NUMBER_ID: &str = "106540352242922";
    let w = World::new().await;
    let stripe = stripe().await;
    let mut c = billing_config(&w, &stripe, Duration::from_secs(3600));
    c.discord.bot_token = Some(Secret::new(support::DISCORD_BOT_TOKEN));
    c.whatsapp.phone_number_id = Some(WA_NUMBER_ID.into());
    let r = w.start_router(c).await;
    stripe.set_webhook_url(&format!("{}/webhooks/stripe", r.base));
    let a = signed_up(&r).await;
    let user = a.user();

    // Russian, switched on the dashboard: remembered for chat.
    let switched = no_redirects()
        .post(format!("{}/dashboard/prefs", r.base))
        .header("cookie", dashboard_cookies(&a))
        .form(&[
            ("csrf", CSRF),
            ("lang", "ru"),
            ("back", "/dashboard/billing"),
        ])
        .send()
        .await
        .unwrap();
    assert!(switched.status().is_redirection(), "{}", switched.status());
    let lang: Option<String> = sqlx::query_scalar("SELECT lang FROM users WHERE id = $1")
        .bind(user)
        .fetch_one(&w.db)
        .await
        .unwrap();
    assert_eq!(lang.as_deref(), Some("ru"));

    let chat = 7_301 + i64::from(rand::random::<u16>());
    let discord_user = "1180000000000000042";
    let phone = "15551234567";
    for (channel, sender) in [
        ("telegram", chat.to_string()),
        ("discord", discord_user.to_string()),
        ("whatsapp", phone.to_string()),
        ("web", user.to_string()),
    ] {
        w.connect(channel, &sender, user).await;
    }
    let sub = subscribe(&a, &stripe, "pro").await;
    let events = stripe.fail_payment(&sub);
    for e in &events {
        assert_eq!(stripe.deliver(e).await, StatusCode::OK);
    }
    assert_eq!(stripe.deliver(&events[0]).await, StatusCode::OK, "a retry");

    // The webhook answers after the notices are sent: no waiting needed.
    let said = |text: &str| {
        text.contains("Платёж за тариф pro не прошёл")
            && text.contains(&format!("{DASHBOARD}/dashboard/billing"))
    };
    let telegram = w.telegram.sent_to(chat);
    assert_eq!(telegram.len(), 1, "{telegram:?}");
    assert!(said(&telegram[0].text), "{}", telegram[0].text);

    let dm = clawdbot_testkit::fake_chat::discord_dm_channel(discord_user);
    let discord = w.discord.channel_messages(&dm);
    assert_eq!(discord.len(), 1, "{discord:?}");
    assert!(said(&discord[0]), "{}", discord[0]);
    let opened: Vec<_> = w
        .discord
        .requests()
        .into_iter()
        .filter(|q| q.path == "/users/@me/channels")
        .collect();
    assert_eq!(opened.len(), 1);
    assert_eq!(opened[0].body["recipient_id"], discord_user);

    let whatsapp: Vec<_> = w
        .whatsapp
        .requests()
        .into_iter()
        .filter(|q| q.body["to"] == phone)
        .collect();
    assert_eq!(whatsapp.len(), 1, "{whatsapp:?}");
    assert!(
        whatsapp[0]
            .path
            .ends_with(&format!("/{WA_NUMBER_ID}/messages"))
    );
    assert_eq!(
        whatsapp[0].body["type"], "template",
        "outside any service window"
    );
    let param = whatsapp[0].body["template"]["components"][0]["parameters"][0]["text"]
        .as_str()
        .unwrap();
    assert!(said(param), "{param}");
    r.shutdown().await;
}

/// A user who never opened the dashboard is told in the language their chat app reports
/// (Telegram's `language_code`, noted when the chat was connected).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_payment_is_told_in_the_language_telegram_reports() {
    let w = World::new().await;
    let stripe = stripe().await;
    let r = start(&w, &stripe, Duration::from_secs(3600)).await;
    let a = signed_up(&r).await;
    let chat = 9_301 + i64::from(rand::random::<u16>());
    let (s, c) = a.call(Method::POST, "/channels/codes", None).await;
    assert_eq!(s, StatusCode::CREATED, "{c}");
    let mut start = telegram_text_update(
        chat,
        chat,
        &format!("/start {}", c["code"].as_str().expect("code")),
    );
    start["message"]["from"]["language_code"] = json!("ru");
    assert_eq!(w.telegram_update(&r, &start).await.status(), 200);
    w.telegram.wait_for_messages(chat, 1, T).await;
    let lang: Option<String> = sqlx::query_scalar("SELECT lang FROM users WHERE id = $1")
        .bind(a.user())
        .fetch_one(&w.db)
        .await
        .unwrap();
    assert_eq!(lang.as_deref(), Some("ru"));

    let sub = subscribe(&a, &stripe, "pro").await;
    for e in stripe.fail_payment(&sub) {
        assert_eq!(stripe.deliver(&e).await, StatusCode::OK);
    }
    let sent = w.telegram.sent_to(chat);
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert!(
        sent[1].text.contains("Платёж за тариф pro не прошёл"),
        "{}",
        sent[1].text
    );
    r.shutdown().await;
}

/// The dashboard's billing forms call the same operations as the API: the upgrade sends the
/// browser to the Checkout Session's page (the local Stripe's hosted page, whose Pay button
/// completes the session, delivers the signed webhooks and sends the browser back), then a
/// plan change, the Billing Portal and a cancellation. Forms without the token change nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_upgrades_through_the_hosted_checkout_page_then_manages_the_subscription() {
    let w = World::new().await;
    let stripe = stripe().await;
    let r = start(&w, &stripe, Duration::from_secs(3600)).await;
    let a = signed_up(&r).await;
    let user = a.user();
    let http = no_redirects();
    let post = |path: &str, form: &[(&str, &str)], token: &str| {
        let mut form: Vec<(String, String)> = form
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        form.push(("csrf".into(), token.into()));
        http.post(format!("{}{path}", r.base))
            .header("cookie", dashboard_cookies(&a))
            .form(&form)
            .send()
    };

    let page = http
        .get(format!("{}/dashboard/billing", r.base))
        .header("cookie", dashboard_cookies(&a))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        csp.contains(&format!("form-action 'self' {}", stripe.url()))
            && csp.contains("script-src 'self'")
            && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    let body = page.text().await.unwrap();
    for part in [
        "id=\"plan-free\"",
        "id=\"plan-pro\"",
        "id=\"plan-team\"",
        "id=\"upgrade-pro\"",
        "$12.00",
    ] {
        assert!(body.contains(part), "{part}: {body}");
    }
    assert!(body.contains(&format!("name=\"csrf\" value=\"{CSRF}\"")));

    let forged = post("/dashboard/billing/checkout", &[("plan", "pro")], "f00d")
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    assert!(stripe.requests().is_empty(), "Stripe was not asked");

    let unknown = post("/dashboard/billing/checkout", &[("plan", "gold")], CSRF)
        .await
        .unwrap();
    assert_eq!(unknown.status(), 422);
    assert!(unknown.text().await.unwrap().contains("role=\"alert\""));

    let go = post("/dashboard/billing/checkout", &[("plan", "pro")], CSRF)
        .await
        .unwrap();
    assert_eq!(go.status(), 303);
    let checkout = go.headers()["location"].to_str().unwrap().to_string();
    assert!(
        checkout.starts_with(&format!("{}/pay/cs_test_", stripe.url())),
        "{checkout}"
    );
    assert_eq!(
        plan_in_db(&w, user).await,
        "free",
        "a session is no payment"
    );

    let hosted = http.get(&checkout).send().await.unwrap();
    assert_eq!(hosted.status(), 200);
    let hosted = hosted.text().await.unwrap();
    assert!(
        hosted.contains("id=\"pay\"") && !hosted.contains("<script"),
        "{hosted}"
    );
    let paid = http.post(&checkout).send().await.unwrap();
    assert_eq!(paid.status(), 303);
    let back = paid.headers()["location"].to_str().unwrap().to_string();
    let session = checkout.rsplit('/').next().unwrap();
    assert_eq!(
        back,
        format!("{DASHBOARD}/dashboard/billing?checkout=success&session_id={session}")
    );
    // The webhooks were delivered before the browser came back.
    assert_eq!(plan_in_db(&w, user).await, "pro");
    assert_eq!(workspace_plan(&w, user).await, Plan::Pro);
    let page = http
        .get(format!("{}/dashboard/billing?checkout=success", r.base))
        .header("cookie", dashboard_cookies(&a))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // The badge is inside the pro card: after it starts, before the team card.
    let at = |part: &str| page.find(part).unwrap_or(usize::MAX);
    assert!(
        at("id=\"plan-pro\"") < at("id=\"current-plan\"")
            && at("id=\"current-plan\"") < at("id=\"plan-team\""),
        "{page}"
    );
    assert!(page.contains("id=\"switch-team\"") && page.contains("id=\"cancel\""));
    // Paying the same session again changes nothing.
    assert_eq!(http.post(&checkout).send().await.unwrap().status(), 200);

    let changed = post("/dashboard/billing/change", &[("plan", "team")], CSRF)
        .await
        .unwrap();
    assert_eq!(changed.status(), 303);
    assert_eq!(
        changed.headers()["location"],
        "/dashboard/billing?done=plan_changed"
    );
    assert_eq!(plan_in_db(&w, user).await, "team");

    let portal = post("/dashboard/billing/portal", &[], CSRF).await.unwrap();
    assert_eq!(portal.status(), 303);
    assert!(
        portal.headers()["location"]
            .to_str()
            .unwrap()
            .starts_with(&stripe.url())
    );

    let canceled = post("/dashboard/billing/cancel", &[], CSRF).await.unwrap();
    assert_eq!(canceled.status(), 303);
    let (_, view) = a.get("/billing/subscription").await;
    assert_eq!(view["subscription"]["cancel_at_period_end"], true);
    assert_eq!(
        plan_in_db(&w, user).await,
        "team",
        "kept until the period ends"
    );

    // Stripe down: said in words, nothing changed.
    stripe.set_outage(true);
    let down = post("/dashboard/billing/change", &[("plan", "pro")], CSRF)
        .await
        .unwrap();
    assert_eq!(down.status(), 502);
    assert!(down.text().await.unwrap().contains("nothing was changed"));
    assert_eq!(plan_in_db(&w, user).await, "team");
    r.shutdown().await;
}
