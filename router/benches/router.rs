//! The router as it is deployed: its release binary in a process of its own, measured against
//! the same agent called directly, in one run. Real Postgres, Redis and API server; fake
//! Telegram, the gateway-protocol test agent and the load generator in this process.
//!
//!   cargo bench -p clawdbot-router --bench router
//!
//! `cargo bench` builds `target/release/clawdbot-router` with the benchmark and this starts it;
//! `BENCH_ROUTER_BIN=<a>,<b>` runs other builds instead, side by side against the same world,
//! taking turns at each rate (an A/B in one sitting). For
//! `BENCH_USERS` connected users (default 10,000), each with a ready UserWorkspace and gateway
//! Secret, and after one warm-up message from each, an open loop at each of `BENCH_RATES`
//! messages/s (default 200,500,1000,2000) for `BENCH_SECONDS` (default 5) goes (a) straight to
//! the agent and (b) through Telegram webhooks to the router. Per rate it prints latency
//! (webhook sent -> agent received, one clock: the agent runs here) and what the router added
//! at p50/p99, messages received, shed (503 + `Retry-After`), and the router's CPU per routed
//! message: the router process's utime+stime (`/proc/<pid>/stat`) over the rate's window,
//! divided by the messages that reached the agent. Then a closed loop with 64 in flight gives
//! the most messages/s of each path. The router's own stage means (`router_stage_seconds`,
//! scraped from its /metrics) say where its time goes, with the activity notes it wrote (the
//! tenants start noted at ages spread over the activity window, so notes come at their steady
//! rate, about 11 a second for 10,000 tenants, not one per tenant's first measured message).
//! `BENCH_PERF=<rate>` records a profile of the router at that rate; `BENCH_PERF_STAT=<rate>`
//! counts its syscalls and context switches per routed message (`perf stat`), which is what a
//! message's hops cost.

#[path = "common/mod.rs"]
mod common;
#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::{HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clawdbot_api::Plan;
use clawdbot_api::gateway::{ChatCompletionRequest, SESSION_KEY_HEADER};
use common::{Since, Used, env_list, env_or, load_average, pace};
use futures::StreamExt;
use hdrhistogram::Histogram;
use k8s_openapi::api::core::v1::Secret as KubeSecret;
use kube::api::{Api, Patch, PatchParams, PostParams};
use support::{ADMIN_TOKEN, TELEGRAM_SECRET, TELEGRAM_TOKEN, TestAgent, World};
use uuid::Uuid;

// The router's allocator here too: the load generator shares the router's two cores, and the
// lighter it is the more of them the router gets.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Telegram update ids are 32-bit and must not repeat within a run (a repeat is a platform
/// retry to the router): one counter for every phase.
static NEXT_UPDATE_ID: AtomicI64 = AtomicI64::new(1);

fn next_update_id() -> i64 {
    NEXT_UPDATE_ID.fetch_add(1, Ordering::Relaxed)
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
    let rates: Vec<u64> = env_list("BENCH_RATES", "200,500,1000,2000");
    let seconds: u64 = env_or("BENCH_SECONDS", 5);
    let target: usize = env_or("BENCH_USERS", 10_000);
    let in_flight: usize = env_or("BENCH_IN_FLIGHT", 64);
    // Several builds (comma-separated) run side by side against the same world, taking turns
    // at each rate: an A/B in one sitting, the tenants created once.
    let bins: Vec<String> = match std::env::var("BENCH_ROUTER_BIN") {
        Ok(list) => list.split(',').map(|b| b.trim().to_string()).collect(),
        Err(_) => vec![env!("CARGO_BIN_EXE_clawdbot-router").to_string()],
    };
    for bin in &bins {
        assert!(
            std::path::Path::new(bin).is_file(),
            "no router binary at {bin}: `cargo bench -p clawdbot-router --bench router` builds it \
             (or set BENCH_ROUTER_BIN to release builds of clawdbot-router)"
        );
    }
    let w = World::new().await;
    let agent = TestAgent::start().await;
    agent.state.record.store(false, Ordering::Relaxed);
    println!(
        "router benchmark: {target} users, open loop at {rates:?} msg/s for {seconds} s per path; \
         load generator, agent and fake Telegram in this process (2 worker threads); load average {}",
        load_average()
    );
    let mut users: Vec<(Uuid, i64)> = Vec::new();
    add_tenants(&w, &agent, &mut users, target).await;
    let mut routers = Vec::new();
    for (i, bin) in bins.iter().enumerate() {
        let router = RouterProcess::start(&w, bin).await;
        println!("[{i}] {bin} (pid {})", router.pid);
        warm_up(&agent, &router, &users).await;
        routers.push(router);
    }
    for (i, router) in routers.iter().enumerate() {
        let idle = router.cpu();
        tokio::time::sleep(Duration::from_secs(3)).await;
        println!(
            "[{i}] at rest: {:.1}% of a core",
            idle.used().percent_of_a_core()
        );
    }
    // The builds take turns at each rate, so that what else the machine does falls on both.
    println!(
        "{:>6} {:>8} {:>7} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8} {:>8}",
        "rate",
        "path",
        "sent",
        "recv",
        "recv/s",
        "p50 us",
        "p99 us",
        "max us",
        "+p50 us",
        "+p99 us",
        "shed",
        "errors",
        "cpu/msg",
        "cpu %"
    );
    for &rate in &rates {
        let direct = open_loop(&agent, &routers[0], &users, rate, seconds, false).await;
        print_row(rate, "direct", &direct, &direct);
        for (i, router) in routers.iter().enumerate() {
            let before = Stages::read(router).await;
            let profile = router.profile(rate, seconds);
            let counts = router.count(rate, seconds);
            let routed = open_loop(&agent, router, &users, rate, seconds, true).await;
            if let Some(mut perf) = profile {
                let _ = perf.wait();
            }
            if let Some((mut perf, out)) = counts {
                let _ = perf.wait();
                print_counts(rate, i, &out, routed.received);
            }
            let stages = Stages::read(router).await.since(&before);
            print_row(rate, &format!("router{i}"), &routed, &direct);
            println!(
                "{:>6} [{i}] inside the router (means): {}",
                rate,
                stages.means()
            );
            println!(
                "{:>6} [{i}] this process (load generator, agent, fake Telegram): {:.0} us of CPU per message routed, {:.0} us per direct call",
                rate,
                routed.own_cpu.cpu_us_per(routed.received),
                direct.own_cpu.cpu_us_per(direct.received)
            );
        }
    }
    let direct_max = closed_loop(&agent, &routers[0], &users, in_flight, seconds, false).await;
    println!(
        "closed loop ({in_flight} in flight): direct {:.0} msg/s",
        direct_max.per_second
    );
    for (i, router) in routers.iter().enumerate() {
        let routed_max = closed_loop(&agent, router, &users, in_flight, seconds, true).await;
        println!(
            "closed loop ({in_flight} in flight): [{i}] router {:.0} msg/s (ratio {:.2}); \
             router CPU {:.0} us per message at {:.0}% of a core, {} shed",
            routed_max.per_second,
            routed_max.per_second / direct_max.per_second,
            routed_max
                .router_cpu
                .as_ref()
                .map_or(0.0, |c| c.cpu_us_per(routed_max.received)),
            routed_max
                .router_cpu
                .as_ref()
                .map_or(0.0, Used::percent_of_a_core),
            routed_max.shed
        );
    }
    for (i, router) in routers.iter().enumerate() {
        let metrics = router.metrics().await;
        for line in metrics
            .lines()
            .filter(|l| l.starts_with("router_messages_total"))
        {
            println!("[{i}] {line}");
        }
    }
    println!("(load average at the end: {})", load_average());
    drop(routers);
    // Ten thousand workspaces and Secrets left behind slow the API server for every later run
    // and test on this machine (after five runs, 52,173 workspaces: a list of them took 2 min
    // and a dashboard test's account deletion timed out).
    clawdbot_testkit::node::delete_namespace(&w.kube, &w.namespace).await;
}

/// What `BENCH_PERF_STAT` counts: every syscall, the scheduler's switches, and the calls a
/// message's hops are made of (socket reads and writes, the runtime's parking and waking).
const COUNTED: &[&str] = &[
    "context-switches",
    "cpu-migrations",
    "raw_syscalls:sys_enter",
    "syscalls:sys_enter_futex",
    "syscalls:sys_enter_epoll_wait",
    "syscalls:sys_enter_epoll_ctl",
    "syscalls:sys_enter_recvfrom",
    "syscalls:sys_enter_sendto",
    "syscalls:sys_enter_read",
    "syscalls:sys_enter_write",
    "syscalls:sys_enter_writev",
    "syscalls:sys_enter_accept4",
    "syscalls:sys_enter_sched_yield",
    "syscalls:sys_enter_madvise",
    "page-faults",
];

/// `perf stat -x ,` output (value,unit,event,...) as counts per routed message.
fn print_counts(rate: u64, router: usize, out: &str, messages: u64) {
    let Ok(text) = std::fs::read_to_string(out) else {
        println!("{rate:>6} [{router}] (no perf stat output in {out})");
        return;
    };
    let per: Vec<String> = text
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            let n: f64 = f.first()?.trim().parse().ok()?;
            let name = f.get(2)?.trim_start_matches("syscalls:sys_enter_");
            Some(format!("{name} {:.1}", n / messages.max(1) as f64))
        })
        .collect();
    println!("{rate:>6} [{router}] per message: {}", per.join(", "));
}

/// One line of the table; `direct` is the same rate's direct run, for what the router adds.
fn print_row(rate: u64, name: &str, run: &Run, direct: &Run) {
    let (h, d) = (&run.latency, &direct.latency);
    let added = |q: f64| {
        if run.router_cpu.is_some() {
            format!("{:.0}", us(h, q) - us(d, q))
        } else {
            String::new()
        }
    };
    let (cpu_msg, cpu_pct) = match &run.router_cpu {
        Some(cpu) => (
            format!("{:.0}", cpu.cpu_us_per(run.received)),
            format!("{:.0}", cpu.percent_of_a_core()),
        ),
        None => (String::new(), String::new()),
    };
    println!(
        "{:>6} {:>8} {:>7} {:>7} {:>9.0} {:>9.0} {:>9.0} {:>9.0} {:>9} {:>9} {:>9} {:>9} {:>8} {:>8}",
        rate,
        name,
        run.sent,
        run.received,
        run.received as f64 / run.elapsed.as_secs_f64(),
        us(h, 0.5),
        us(h, 0.99),
        h.max() as f64 / 1000.0,
        added(0.5),
        added(0.99),
        run.shed,
        run.errors,
        cpu_msg,
        cpu_pct
    );
}

fn us(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

/// The router binary, running with this benchmark's world.
struct RouterProcess {
    child: Child,
    pid: u32,
    base: String,
    metrics_url: String,
    http: reqwest::Client,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port()
}

impl RouterProcess {
    /// Starts the router with the world's Postgres, Redis prefix, namespace and fake Telegram,
    /// and waits until it is ready (tenant directory synced, Postgres and Redis answering).
    async fn start(w: &World, bin: &str) -> RouterProcess {
        let env = clawdbot_testkit::env::get();
        let (port, metrics_port) = (free_port(), free_port());
        let mut cmd = Command::new(bin);
        cmd.env("KUBECONFIG", &env.kubeconfig)
            .env("DATABASE_URL", &w.database_url)
            .env("ROUTER_DATABASE_MAX_CONNECTIONS", "32")
            .env("REDIS_URL", &env.redis_url)
            .env("ROUTER_REDIS_PREFIX", &w.redis_prefix)
            .env("ROUTER_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("ROUTER_LISTEN", format!("127.0.0.1:{port}"))
            .env("ROUTER_METRICS_LISTEN", format!("127.0.0.1:{metrics_port}"))
            .env("ROUTER_WATCH_NAMESPACE", &w.namespace)
            .env("POD_NAMESPACE", &w.namespace)
            .env("POD_NAME", "bench-router")
            .env("ROUTER_REGISTRATION_URL", "https://clawdbot.test/signup")
            .env("TELEGRAM_BOT_TOKEN", TELEGRAM_TOKEN)
            .env("TELEGRAM_WEBHOOK_SECRET", TELEGRAM_SECRET)
            .env("TELEGRAM_API_BASE", w.telegram.base_url())
            .env("TELEGRAM_UPDATES", "webhook")
            // The outbound queue keeps to Telegram's limits in production (30 replies/s per
            // bot); here it would throttle the replies, which is not what is measured.
            .env("TELEGRAM_GLOBAL_RATE", "0")
            .env("TELEGRAM_CHAT_RATE", "0")
            .env("ROUTER_RATE_LIMIT_PER_MINUTE", "1000000")
            .env("ROUTER_AGENT_TIMEOUT", "10s")
            .stdin(Stdio::null())
            .stdout(match std::env::var_os("BENCH_ROUTER_LOG_FILE") {
                Some(path) => std::fs::File::create(path).expect("log file").into(),
                None => Stdio::null(),
            });
        // As deployed, the chart's default filter (info); BENCH_ROUTER_LOG to change it.
        match std::env::var("BENCH_ROUTER_LOG") {
            Ok(filter) => cmd.env("RUST_LOG", filter),
            Err(_) => cmd.env_remove("RUST_LOG"),
        };
        let child = cmd.spawn().expect("start the router");
        let pid = child.id();
        let mut router = RouterProcess {
            child,
            pid,
            base: format!("http://127.0.0.1:{port}"),
            metrics_url: format!("http://127.0.0.1:{metrics_port}/metrics"),
            http: reqwest::Client::new(),
        };
        let ready = format!("{}/readyz", router.base);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = router.child.try_wait().expect("router status") {
                panic!(
                    "the router exited at start ({status}); BENCH_ROUTER_LOG_FILE=<path> keeps its log"
                );
            }
            let ok = router
                .http
                .get(&ready)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ok {
                break;
            }
            assert!(Instant::now() < deadline, "router not ready within 60 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        router
    }

    /// With `BENCH_PERF=<rate>`: `perf record` of the router (flat, 999 Hz) for the routed run
    /// at that rate, into `/tmp/router-<pid>.perf` (`perf report -i ... --sort sym`).
    fn profile(&self, rate: u64, seconds: u64) -> Option<Child> {
        let out = format!("/tmp/router-{}.perf", self.pid);
        let child = self.perf("BENCH_PERF", rate, seconds, &["record", "-F", "999"], &out)?;
        println!("(perf record of the router at {rate} msg/s into {out})");
        Some(child)
    }

    /// With `BENCH_PERF_STAT=<rate>`: `perf stat` of the router's syscalls and context
    /// switches for the routed run at that rate, into `/tmp/router-<pid>.stat`; printed per
    /// message after the run. Says how many hops (wake-ups, socket calls) a message costs.
    fn count(&self, rate: u64, seconds: u64) -> Option<(Child, String)> {
        let out = format!("/tmp/router-{}.stat", self.pid);
        let events = COUNTED.join(",");
        let args = ["stat", "-x", ",", "-e", &events];
        let child = self.perf("BENCH_PERF_STAT", rate, seconds, &args, &out)?;
        Some((child, out))
    }

    /// `perf <args> -p <router> -o <out> -- sleep <seconds>`, when the environment variable
    /// `var` names this rate.
    fn perf(&self, var: &str, rate: u64, seconds: u64, args: &[&str], out: &str) -> Option<Child> {
        if env_or(var, 0u64) != rate {
            return None;
        }
        Command::new("perf")
            .args(args)
            .args(["-p", &self.pid.to_string(), "-o", out])
            .args(["--", "sleep", &seconds.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| println!("(no perf: {e})"))
            .ok()
    }

    fn cpu(&self) -> Since {
        Since::now(self.pid)
    }

    fn webhook_url(&self) -> String {
        format!("{}/webhooks/telegram", self.base)
    }

    /// The router's `/metrics` text.
    async fn metrics(&self) -> String {
        self.http
            .get(&self.metrics_url)
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics body")
    }
}

impl Drop for RouterProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Creates users, connections, workspaces (ready, pointing at the agent) and gateway Secrets
/// until there are `target`.
async fn add_tenants(w: &World, agent: &TestAgent, users: &mut Vec<(Uuid, i64)>, target: usize) {
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
                let name = format!("bench-{target}-{i}");
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
                // As a running replica finds its tenants: each noted active at some moment of
                // the last activity window, so that notes come due at the steady rate (one per
                // tenant per window), not on every tenant's first measured message.
                // The bench's tenants have no idle timeout: noted once per this window.
                let window = clawdbot_router::directory::ACTIVITY_WITHOUT_IDLE_TIMEOUT;
                let age = rand::random_range(0..window.as_millis() as i64);
                let noted = chrono::Utc::now() - chrono::Duration::milliseconds(age);
                let patch = serde_json::json!({"metadata": {"annotations": {
                    clawdbot_api::annotations::LAST_ACTIVITY:
                        noted.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
                }}});
                Api::<clawdbot_api::UserWorkspace>::namespaced(w.kube.clone(), &w.namespace)
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .expect("last activity");
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
    println!(
        "({} tenants created in {:.1} s)",
        users.len(),
        started.elapsed().as_secs_f64()
    );
}

/// One message from each user through the router until each has reached the agent, before
/// anything is measured. The router in its own process cannot be asked whether its reflector
/// knows a tenant yet; a message that reaches the agent says so. The first message of a tenant
/// also fills the sender cache: the figures are of the steady state after that. Activity
/// notes (one API server patch per tenant per window) come due at their steady rate from the
/// ages `add_tenants` gave them; each rate's line counts them.
async fn warm_up(agent: &TestAgent, router: &RouterProcess, users: &[(Uuid, i64)]) {
    let started = Instant::now();
    let client = reqwest::Client::new();
    let url = router.webhook_url();
    agent.state.calls.lock().expect("calls").clear();
    agent.state.record.store(true, Ordering::Relaxed);
    let mut pending: Vec<i64> = users.iter().map(|(_, chat)| *chat).collect();
    let mut rounds = 0;
    while !pending.is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "{} users' messages still do not reach the agent after 10 minutes",
            pending.len()
        );
        rounds += 1;
        let before = agent.state.count.load(Ordering::Relaxed);
        futures::stream::iter(pending.iter())
            .map(|chat| {
                let (client, url) = (client.clone(), url.clone());
                async move {
                    let _ = client
                        .post(url)
                        .header("x-telegram-bot-api-secret-token", TELEGRAM_SECRET)
                        .json(&clawdbot_testkit::fake_chat::telegram_text_update(
                            next_update_id(),
                            *chat,
                            "warm-up",
                        ))
                        .send()
                        .await;
                }
            })
            .buffer_unordered(32)
            .collect::<Vec<()>>()
            .await;
        // Until the agent has seen them all or stopped seeing more for a second.
        let mut last = agent.state.count.load(Ordering::Relaxed);
        while last - before < pending.len() as u64 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let now = agent.state.count.load(Ordering::Relaxed);
            if now == last {
                break;
            }
            last = now;
        }
        let seen: HashSet<String> = agent
            .state
            .calls
            .lock()
            .expect("calls")
            .iter()
            .map(|c| c.session_key.clone())
            .collect();
        pending.retain(|chat| !seen.contains(&format!("telegram:dm:{chat}")));
    }
    agent.state.record.store(false, Ordering::Relaxed);
    agent.state.calls.lock().expect("calls").clear();
    // Let the activity patches and their watch events settle.
    tokio::time::sleep(Duration::from_secs(3)).await;
    println!(
        "(warm-up: every one of {} users reached the agent through the router, {rounds} rounds, {:.1} s)",
        users.len(),
        started.elapsed().as_secs_f64()
    );
}

struct Run {
    sent: u64,
    received: u64,
    /// Answered 503 with `Retry-After`: the router's load shedding.
    shed: u64,
    /// Any other failure.
    errors: u64,
    elapsed: Duration,
    latency: Histogram<u64>,
    router_cpu: Option<Used>,
    own_cpu: Used,
}

/// How a send ended, for the counters.
fn outcome(result: reqwest::Result<reqwest::Response>, shed: &AtomicU64, errors: &AtomicU64) {
    match result {
        Ok(r) if r.status().is_success() => {}
        Ok(r)
            if r.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE
                && r.headers().contains_key("retry-after") =>
        {
            shed.fetch_add(1, Ordering::Relaxed);
        }
        _ => {
            errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Sends `rate` msg/s for `seconds` to random users; returns send->agent latencies and the CPU
/// the router (when `via_router`) and this process spent until the agent had every message.
async fn open_loop(
    agent: &TestAgent,
    router: &RouterProcess,
    users: &[(Uuid, i64)],
    rate: u64,
    seconds: u64,
    via_router: bool,
) -> Run {
    let total = rate * seconds;
    let mut sent_at: HashMap<String, Instant> = HashMap::with_capacity(total as usize);
    let shed = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let before = agent.state.count.load(Ordering::Relaxed);
    agent.state.calls.lock().expect("calls").clear();
    agent.state.record.store(true, Ordering::Relaxed);
    let client = reqwest::Client::builder()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(512)
        .build()
        .expect("client");
    let (router_cpu, own_cpu) = (router.cpu(), Since::now(std::process::id()));
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(total as usize);
    let run_id = rand::random::<u32>();
    for i in 0..total {
        pace(start, rate, i).await;
        let (_, chat) = users[rand::random_range(0..users.len())];
        let tag = format!("m{run_id}-{i}");
        sent_at.insert(tag.clone(), Instant::now());
        let client = client.clone();
        let (shed, errors) = (shed.clone(), errors.clone());
        let url = if via_router {
            router.webhook_url()
        } else {
            format!("{}/v1/chat/completions", agent.base_url)
        };
        let token = agent.token.clone();
        tasks.push(tokio::spawn(async move {
            let result = if via_router {
                client
                    .post(url)
                    .header("x-telegram-bot-api-secret-token", TELEGRAM_SECRET)
                    .json(&clawdbot_testkit::fake_chat::telegram_text_update(
                        next_update_id(),
                        chat,
                        &tag,
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
            outcome(result, &shed, &errors);
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    // Wait for the agent to have seen everything the router accepted (bounded).
    let expected = total - shed.load(Ordering::Relaxed) - errors.load(Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(60);
    while agent.state.count.load(Ordering::Relaxed) - before < expected && Instant::now() < deadline
    {
        let notified = agent.state.notify.notified();
        let _ = tokio::time::timeout(Duration::from_millis(200), notified).await;
    }
    let elapsed = start.elapsed();
    // The reply to Telegram and the finish of the last messages follow the agent's answer.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (router_cpu, own_cpu) = (router_cpu.used(), own_cpu.used());
    agent.state.record.store(false, Ordering::Relaxed);
    let calls = std::mem::take(&mut *agent.state.calls.lock().expect("calls"));
    let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("hist");
    for call in &calls {
        if let Some(t0) = sent_at.get(&call.text) {
            let _ = h.record(call.at.saturating_duration_since(*t0).as_nanos().max(1) as u64);
        }
    }
    Run {
        sent: total,
        received: calls.len() as u64,
        shed: shed.load(Ordering::Relaxed),
        errors: errors.load(Ordering::Relaxed),
        elapsed,
        latency: h,
        router_cpu: via_router.then_some(router_cpu),
        own_cpu,
    }
}

struct ClosedLoop {
    per_second: f64,
    received: u64,
    shed: u64,
    router_cpu: Option<Used>,
}

/// `in_flight` senders back to back for `seconds`; returns agent calls per second.
async fn closed_loop(
    agent: &TestAgent,
    router: &RouterProcess,
    users: &[(Uuid, i64)],
    in_flight: usize,
    seconds: u64,
    via_router: bool,
) -> ClosedLoop {
    let before = agent.state.count.load(Ordering::Relaxed);
    let client = reqwest::Client::builder()
        .tcp_nodelay(true)
        .build()
        .expect("client");
    let router_cpu = router.cpu();
    let start = Instant::now();
    let stop = start + Duration::from_secs(seconds);
    let users = Arc::new(users.to_vec());
    let (shed, errors) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let workers: Vec<_> = (0..in_flight)
        .map(|_| {
            let client = client.clone();
            let users = users.clone();
            let router_url = router.webhook_url();
            let agent_url = format!("{}/v1/chat/completions", agent.base_url);
            let token = agent.token.clone();
            let (shed, errors) = (shed.clone(), errors.clone());
            tokio::spawn(async move {
                while Instant::now() < stop {
                    let (_, chat) = users[rand::random_range(0..users.len())];
                    let result = if via_router {
                        client
                            .post(&router_url)
                            .header("x-telegram-bot-api-secret-token", TELEGRAM_SECRET)
                            .json(&clawdbot_testkit::fake_chat::telegram_text_update(
                                next_update_id(),
                                chat,
                                "x",
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
                    outcome(result, &shed, &errors);
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
    let received = last - before;
    // The idle 200 ms just waited out are not the messages' (a few ms of a core at rest).
    let router_cpu = router_cpu.used();
    ClosedLoop {
        per_second: received as f64 / start.elapsed().as_secs_f64(),
        received,
        shed: shed.load(Ordering::Relaxed),
        router_cpu: via_router.then_some(router_cpu),
    }
}

/// What the benchmark reads of the router's own histograms: (what, histogram, label filter).
/// The dedupe stage is the one Redis call that claims the message id (and, for a sender the
/// replica knows, counts the message against the user's limits, so "admit" has no calls then).
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

/// Sum and count of each of [`STAGES`], to tell where a message's time goes, and the
/// activity notes written (`router_activity_notes_total`).
struct Stages(Vec<(f64, f64)>, f64);

impl Stages {
    async fn read(router: &RouterProcess) -> Stages {
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
            value("router_activity_notes_total".into(), ""),
        )
    }

    fn since(&self, before: &Stages) -> Stages {
        Stages(
            self.0
                .iter()
                .zip(&before.0)
                .map(|((s, c), (s0, c0))| (s - s0, c - c0))
                .collect(),
            self.1 - before.1,
        )
    }

    /// "webhook answered 1828 us (5000), dedupe 398 us (5000), ...": the mean of each over the
    /// run, and how many it was taken of.
    fn means(&self) -> String {
        let stages = STAGES
            .iter()
            .zip(&self.0)
            .map(|((name, _, _), (s, c))| format!("{name} {:.0} us ({c:.0})", s / c.max(1.0) * 1e6))
            .collect::<Vec<_>>()
            .join(", ");
        format!("{stages}; activity notes written {:.0}", self.1)
    }
}
