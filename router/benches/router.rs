//! Added latency and throughput of the router, against the same agent called directly, in one
//! run. Real Postgres, Redis and API server; fake Telegram; the gateway-protocol test agent.
//!
//!   cargo bench -p clawdbot-router --bench router
//!
//! For 1,000 and then 10,000 connected users (`BENCH_USERS`), each with a ready
//! UserWorkspace and gateway Secret, and after one warm-up message from each, an open-loop
//! load at each of `BENCH_RATES` messages/s (default 1000,2500,5000) for `BENCH_SECONDS`
//! (default 4) goes (a) straight to the agent and (b) through Telegram webhooks to the router.
//! Latency is webhook sent -> agent received (the agent runs in this process: one clock).
//! Then a closed loop with 64 in flight gives the most messages/s of each path.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use clawdbot_api::Plan;
use clawdbot_api::gateway::{ChatCompletionRequest, SESSION_KEY_HEADER};
use futures::StreamExt;
use hdrhistogram::Histogram;
use k8s_openapi::api::core::v1::Secret as KubeSecret;
use kube::api::{Api, PostParams};
use support::{TELEGRAM_SECRET, TestAgent, World};
use tokio::sync::Mutex;
use uuid::Uuid;

// The same allocator as the router binary, since the router runs in this process.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A comma-separated list from the environment, or `default`.
fn env_list<T: std::str::FromStr>(name: &str, default: &str) -> Vec<T> {
    std::env::var(name)
        .unwrap_or_else(|_| default.into())
        .split(',')
        .filter_map(|v| v.trim().parse().ok())
        .collect()
}

#[derive(Default)]
struct Run {
    sent: u64,
    received: u64,
    errors: u64,
    elapsed: Duration,
    latency: Option<Histogram<u64>>,
}

fn us(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(bench());
}

async fn bench() {
    // Several rates find the knee; 5,000 msg/s is the target's.
    let rates: Vec<u64> = env_list("BENCH_RATES", "1000,2500,5000");
    let seconds: u64 = env_or("BENCH_SECONDS", 4);
    let w = World::new().await;
    let mut config = w.config();
    // The outbound Telegram queue keeps to Telegram's limits in production; here it would
    // throttle the replies of 5,000 msg/s to 30/s, which is not what is measured.
    config.telegram.global_rate = 0.0;
    config.telegram.chat_rate = 0.0;
    config.limits.rate_limit_per_minute = 1_000_000;
    config.database.max_connections = 32;
    let agent = TestAgent::start().await;
    agent.state.record.store(false, Ordering::Relaxed);
    let router = w.start_router(config).await;

    let mut users: Vec<(Uuid, i64)> = Vec::new();
    println!(
        "router benchmark: open loop at {rates:?} msg/s for {seconds} s per path, 2 worker threads"
    );
    println!(
        "{:>6} {:>6} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7}",
        "users",
        "rate",
        "path",
        "sent",
        "recv/s",
        "p50 us",
        "p99 us",
        "p99.9 us",
        "max us",
        "added p99",
        "errors"
    );
    let user_counts: Vec<usize> = env_list("BENCH_USERS", "1000,10000");
    for target in user_counts {
        let before = users.len();
        add_tenants(&w, &agent, &router, &mut users, target).await;
        warm_up(&agent, &router, &users[before..]).await;
        for &rate in &rates {
            let direct = open_loop(&w, &agent, &router, &users, rate, seconds, false).await;
            let before = Stages::read(&router).await;
            let routed = open_loop(&w, &agent, &router, &users, rate, seconds, true).await;
            let stages = Stages::read(&router).await.since(&before);
            let (d, r) = (
                direct.latency.as_ref().expect("hist"),
                routed.latency.as_ref().expect("hist"),
            );
            for (name, run, h) in [("direct", &direct, d), ("router", &routed, r)] {
                println!(
                    "{:>6} {:>6} {:>8} {:>9} {:>9.0} {:>9.0} {:>9.0} {:>9.0} {:>9.0} {:>9} {:>7}",
                    target,
                    rate,
                    name,
                    run.sent,
                    run.received as f64 / run.elapsed.as_secs_f64(),
                    us(h, 0.5),
                    us(h, 0.99),
                    us(h, 0.999),
                    h.max() as f64 / 1000.0,
                    if name == "router" {
                        format!("{:.0}", us(r, 0.99) - us(d, 0.99))
                    } else {
                        String::new()
                    },
                    run.errors
                );
            }
            println!(
                "{:>6} {:>6} inside the router (means): {}",
                target,
                rate,
                stages.means()
            );
            println!(
                "{:>6} {:>6} added latency: p50 {:.0} us, p99 {:.0} us; router/direct p50 ratio {:.2}, p99 ratio {:.2}",
                target,
                rate,
                us(r, 0.5) - us(d, 0.5),
                us(r, 0.99) - us(d, 0.99),
                us(r, 0.5) / us(d, 0.5),
                us(r, 0.99) / us(d, 0.99)
            );
        }
        let direct_max = closed_loop(&w, &agent, &router, &users, 64, seconds, false).await;
        let routed_max = closed_loop(&w, &agent, &router, &users, 64, seconds, true).await;
        println!(
            "{:>6} most messages/s (64 in flight): direct {:.0}, router {:.0} (ratio {:.2})",
            target,
            direct_max,
            routed_max,
            routed_max / direct_max
        );
    }
    let metrics = router.metrics().await;
    for line in metrics
        .lines()
        .filter(|l| l.starts_with("router_messages_total"))
    {
        println!("{line}");
    }
    router.shutdown().await;
}

/// Creates users, connections, workspaces (ready, pointing at the agent) and gateway Secrets
/// until there are `target`, and waits until the router's reflector knows them all.
async fn add_tenants(
    w: &World,
    agent: &TestAgent,
    router: &support::Replica,
    users: &mut Vec<(Uuid, i64)>,
    target: usize,
) {
    let started = Instant::now();
    let new: Vec<(Uuid, i64)> = (users.len()..target)
        .map(|i| (Uuid::new_v4(), 9_000_000 + i as i64))
        .collect();
    let ids: Vec<Uuid> = new.iter().map(|(u, _)| *u).collect();
    let senders: Vec<String> = new.iter().map(|(_, c)| c.to_string()).collect();
    sqlx::query("INSERT INTO users (id, plan) SELECT unnest($1::uuid[]), 'team'")
        .bind(&ids)
        .execute(&w.db)
        .await
        .expect("users");
    sqlx::query("INSERT INTO user_channel_connections (channel, sender_id, user_id) SELECT 'telegram', unnest($1::text[]), unnest($2::uuid[])")
        .bind(&senders)
        .bind(&ids)
        .execute(&w.db)
        .await
        .expect("connections");
    let secrets: Api<KubeSecret> = Api::namespaced(w.kube.clone(), &w.namespace);
    futures::stream::iter(new.iter().enumerate())
        .map(|(i, (user, _))| {
            let secrets = secrets.clone();
            async move {
                let name = format!("bench-{}", users_len_name(i, target));
                let req = clawdbot_router::admin::WorkspaceRequest {
                    namespace: w.namespace.clone(),
                    name: name.clone(),
                    owner: *user,
                    plan: Plan::Team,
                    model: "m".into(),
                    endpoint: "shared".into(),
                    idle_timeout: None,
                };
                clawdbot_router::admin::apply_workspace(w.kube.clone(), &req).await.expect("workspace");
                let secret: KubeSecret = serde_json::from_value(serde_json::json!({
                    "apiVersion": "v1", "kind": "Secret",
                    "metadata": {"name": clawdbot_api::names::gateway_token_secret(&name), "namespace": w.namespace,
                                 "labels": {clawdbot_api::names::LABEL_SECRET_KIND: clawdbot_api::names::SECRET_KIND_GATEWAY_TOKEN}},
                    "stringData": {"token": agent.token}
                }))
                .expect("secret");
                secrets.create(&PostParams::default(), &secret).await.expect("secret");
                w.mark_ready(&name, &agent.base_url).await;
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<()>>()
        .await;
    users.extend(new);
    let last = users.last().expect("users").0.to_string();
    let first = users[0].0.to_string();
    clawdbot_testkit::wait_for(
        "router knows every tenant",
        Duration::from_secs(120),
        || async {
            let core = &router.core;
            [&first, &last]
                .iter()
                .all(|u| {
                    core.directory
                        .tenant_of(u)
                        .is_some_and(|t| t.ready && t.token.is_some())
                })
                .then_some(())
        },
    )
    .await;
    println!(
        "({} tenants ready in {:.1} s)",
        users.len(),
        started.elapsed().as_secs_f64()
    );
}

fn users_len_name(i: usize, target: usize) -> String {
    format!("{target}-{i}")
}

/// One message from each new user through the router before anything is measured: the
/// first message of a tenant notes its activity on the UserWorkspace (one API server patch,
/// then one per activity window) and fills the sender cache; the figures are of the steady
/// state after that.
async fn warm_up(agent: &TestAgent, router: &support::Replica, users: &[(Uuid, i64)]) {
    let started = Instant::now();
    let before = agent.state.count.load(Ordering::Relaxed);
    let client = reqwest::Client::new();
    let url = format!("{}/webhooks/telegram", router.base);
    let run_id = rand::random::<u32>() as i64 % 100;
    futures::stream::iter(users.iter().enumerate())
        .map(|(i, (_, chat))| {
            let (client, url) = (client.clone(), url.clone());
            // Telegram update ids are 32-bit; the measured runs use ids below 2e9.
            let update_id = 2_100_000_000 + run_id * 20_000 + i as i64;
            async move {
                let _ = client
                    .post(url)
                    .header("x-telegram-bot-api-secret-token", TELEGRAM_SECRET)
                    .json(&clawdbot_testkit::fake_chat::telegram_text_update(
                        update_id, *chat, "warm-up",
                    ))
                    .send()
                    .await;
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<()>>()
        .await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while agent.state.count.load(Ordering::Relaxed) - before < users.len() as u64
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Let the activity patches and their watch events settle.
    tokio::time::sleep(Duration::from_secs(3)).await;
    println!(
        "(warm-up: one message from each of {} users in {:.1} s)",
        users.len(),
        started.elapsed().as_secs_f64()
    );
}

/// Sends `rate` msg/s for `seconds`; returns send->agent latencies.
async fn open_loop(
    w: &World,
    agent: &TestAgent,
    router: &support::Replica,
    users: &[(Uuid, i64)],
    rate: u64,
    seconds: u64,
    via_router: bool,
) -> Run {
    let total = rate * seconds;
    let sent_at: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let hist = Arc::new(std::sync::Mutex::new(
        Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("hist"),
    ));
    let errors = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let before = agent.state.count.load(Ordering::Relaxed);
    agent.state.record.store(true, Ordering::Relaxed);
    agent.state.calls.lock().expect("calls").clear();
    let client = reqwest::Client::builder()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(512)
        .build()
        .expect("client");
    let start = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let mut tasks = Vec::with_capacity(total as usize);
    let run_id = rand::random::<u32>();
    for i in 0..total {
        let due = start + interval * i as u32;
        let now = Instant::now();
        if due > now {
            tokio::time::sleep(due - now).await;
        }
        let (_, chat) = users[rand::random_range(0..users.len())];
        let tag = format!("m{run_id}-{i}");
        sent_at.lock().await.insert(tag.clone(), Instant::now());
        let client = client.clone();
        let errors = errors.clone();
        let url = if via_router {
            format!("{}/webhooks/telegram", router.base)
        } else {
            format!("{}/v1/chat/completions", agent.base_url)
        };
        let token = agent.token.clone();
        // Telegram update ids are 32-bit.
        let update_id = (run_id as i64 % 200) * 10_000_000 + i as i64;
        tasks.push(tokio::spawn(async move {
            let result = if via_router {
                client
                    .post(url)
                    .header("x-telegram-bot-api-secret-token", TELEGRAM_SECRET)
                    .json(&clawdbot_testkit::fake_chat::telegram_text_update(
                        update_id, chat, &tag,
                    ))
                    .send()
                    .await
            } else {
                client
                    .post(url)
                    .bearer_auth(token)
                    .header(SESSION_KEY_HEADER, format!("telegram:dm:{chat}"))
                    .json(&ChatCompletionRequest::user_message(tag))
                    .send()
                    .await
            };
            if !result.is_ok_and(|r| r.status().is_success()) {
                errors.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    // Wait for the agent to have seen everything the router accepted (bounded).
    let expected = total - errors.load(Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(60);
    while agent.state.count.load(Ordering::Relaxed) - before < expected && Instant::now() < deadline
    {
        let notified = agent.state.notify.notified();
        let _ = tokio::time::timeout(Duration::from_millis(200), notified).await;
    }
    let elapsed = start.elapsed();
    agent.state.record.store(false, Ordering::Relaxed);
    let calls = std::mem::take(&mut *agent.state.calls.lock().expect("calls"));
    let sent_at = sent_at.lock().await;
    let mut h = hist.lock().expect("hist").clone();
    for call in &calls {
        if let Some(t0) = sent_at.get(&call.text) {
            let _ = h.record(call.at.saturating_duration_since(*t0).as_nanos().max(1) as u64);
        }
    }
    let _ = w;
    Run {
        sent: total,
        received: calls.len() as u64,
        errors: errors.load(Ordering::Relaxed),
        elapsed,
        latency: Some(h),
    }
}

/// `in_flight` senders back to back for `seconds`; returns agent calls per second.
async fn closed_loop(
    _w: &World,
    agent: &TestAgent,
    router: &support::Replica,
    users: &[(Uuid, i64)],
    in_flight: usize,
    seconds: u64,
    via_router: bool,
) -> f64 {
    let before = agent.state.count.load(Ordering::Relaxed);
    let client = reqwest::Client::builder()
        .tcp_nodelay(true)
        .build()
        .expect("client");
    let start = Instant::now();
    let stop = start + Duration::from_secs(seconds);
    // Telegram's message ids are 32-bit signed; the open loop uses ids below 2e9.
    let run_id = rand::random::<u32>() as i64 % 100;
    let users = Arc::new(users.to_vec());
    let workers: Vec<_> = (0..in_flight)
        .map(|k| {
            let client = client.clone();
            let users = users.clone();
            let router_url = format!("{}/webhooks/telegram", router.base);
            let agent_url = format!("{}/v1/chat/completions", agent.base_url);
            let token = agent.token.clone();
            tokio::spawn(async move {
                let mut i = 0i64;
                while Instant::now() < stop {
                    let (_, chat) = users[rand::random_range(0..users.len())];
                    i += 1;
                    let update_id = 2_000_000_000 + run_id * 1_000_000 + k as i64 * 15_000 + i;
                    debug_assert!(update_id < i64::from(i32::MAX));
                    let _ = if via_router {
                        client
                            .post(&router_url)
                            .header("x-telegram-bot-api-secret-token", TELEGRAM_SECRET)
                            .json(&clawdbot_testkit::fake_chat::telegram_text_update(
                                update_id, chat, "x",
                            ))
                            .send()
                            .await
                    } else {
                        client
                            .post(&agent_url)
                            .bearer_auth(&token)
                            .header(SESSION_KEY_HEADER, format!("telegram:dm:{chat}"))
                            .json(&ChatCompletionRequest::user_message("x"))
                            .send()
                            .await
                    };
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.await;
    }
    // Through the router the agent call happens after the webhook's answer: let it finish.
    let mut last = agent.state.count.load(Ordering::Relaxed);
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = agent.state.count.load(Ordering::Relaxed);
        if now == last {
            break;
        }
        last = now;
    }
    (last - before) as f64 / start.elapsed().as_secs_f64()
}

/// What the benchmark reads of the router's own histograms: (what, histogram, label filter).
const STAGES: [(&str, &str, &str); 5] = [
    (
        "webhook answered",
        "http_request_duration_seconds",
        "/webhooks/telegram",
    ),
    ("dedupe", "router_stage_seconds", "stage=\"dedupe\""),
    ("record", "router_stage_seconds", "stage=\"record\""),
    ("admit", "router_stage_seconds", "stage=\"admit\""),
    ("agent call", "router_agent_latency_seconds", ""),
];

/// Sum and count of each of [`STAGES`], to tell where a message's time goes.
struct Stages(Vec<(f64, f64)>);

impl Stages {
    async fn read(router: &support::Replica) -> Stages {
        let text = router.metrics().await;
        let value = |series: String, filter: &str| {
            text.lines()
                .filter(|l| l.starts_with(&series) && l.contains(filter))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum::<f64>()
        };
        Stages(
            STAGES
                .iter()
                .map(|(_, histogram, filter)| {
                    (
                        value(format!("{histogram}_sum"), filter),
                        value(format!("{histogram}_count"), filter),
                    )
                })
                .collect(),
        )
    }

    fn since(&self, before: &Stages) -> Stages {
        Stages(
            self.0
                .iter()
                .zip(&before.0)
                .map(|((s, c), (s0, c0))| (s - s0, c - c0))
                .collect(),
        )
    }

    /// "webhook answered 1828 us, dedupe 398 us, ...": the mean of each over the run.
    fn means(&self) -> String {
        STAGES
            .iter()
            .zip(&self.0)
            .map(|((name, _, _), (s, c))| format!("{name} {:.0} us", s / c.max(1.0) * 1e6))
            .collect::<Vec<_>>()
            .join(", ")
    }
}
