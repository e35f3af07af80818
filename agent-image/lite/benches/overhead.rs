//! Agent overhead per message, excluding model time, and the agent's memory.
//!
//! Runs the real binary as a child process against an instant local model (the testkit's
//! OpenAI fake in echo mode), sends messages the way the router does and reads:
//! - the agent's own time per message from its `server-timing` header (`agent;dur=`: the
//!   handler's time minus the time waiting for the model), p50/p99, and the client's
//!   end-to-end latency for comparison;
//! - the same for a session holding 100,000 stored messages;
//! - VmRSS of the child when idle and after concurrent load, and its peak (VmHWM).
//!
//! `cargo bench -p clawdbot-lite-agent --bench overhead`. Targets: p99 < 5 ms, RSS < 50 MB.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use clawdbot_api::gateway::SESSION_KEY_HEADER;
use clawdbot_testkit::fake_llm::FakeLlm;
use serde_json::json;

const TOKEN: &str = "bench-token";
const WARMUP: usize = 100;
const MESSAGES: usize = 2_000;
const STORED: usize = 100_000;
const CONCURRENT_SESSIONS: usize = 16;
const CONCURRENT_MESSAGES: usize = 50;

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run());
}

struct Sample {
    agent: Vec<f64>,
    client: Vec<f64>,
}

fn pct(v: &mut [f64], p: usize) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[(v.len() * p / 100).min(v.len() - 1)]
}

fn rss_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

async fn send(http: &reqwest::Client, url: &str, session: &str, text: &str) -> (f64, f64) {
    let started = Instant::now();
    let resp = http
        .post(format!("{url}/v1/chat/completions"))
        .bearer_auth(TOKEN)
        .header(SESSION_KEY_HEADER, session)
        .json(&json!({"model": "openclaw", "messages": [{"role": "user", "content": text}]}))
        .send()
        .await
        .expect("agent reachable");
    assert_eq!(resp.status(), 200);
    let timing = resp
        .headers()
        .get("server-timing")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body: serde_json::Value = resp.json().await.expect("json reply");
    assert!(
        body["choices"][0]["message"]["content"]
            .as_str()
            .is_some_and(|t| t.starts_with("echo:")),
        "{body}"
    );
    let client = started.elapsed().as_secs_f64() * 1e3;
    let agent = timing
        .split(',')
        .find_map(|p| p.trim().strip_prefix("agent;dur="))
        .and_then(|v| v.parse().ok())
        .expect("server-timing agent");
    (agent, client)
}

async fn measure(http: &reqwest::Client, url: &str, session: &str, n: usize) -> Sample {
    let mut s = Sample {
        agent: Vec::with_capacity(n),
        client: Vec::with_capacity(n),
    };
    for i in 0..n {
        let (a, c) = send(
            http,
            url,
            session,
            &format!("message number {i}, how are you today?"),
        )
        .await;
        s.agent.push(a);
        s.client.push(c);
    }
    s
}

fn report(name: &str, mut s: Sample) {
    println!(
        "{name:<44} agent overhead p50 {:>6.3} ms  p99 {:>6.3} ms | client end-to-end p50 {:>6.3} ms  p99 {:>6.3} ms  (n={})",
        pct(&mut s.agent, 50),
        pct(&mut s.agent, 99),
        pct(&mut s.client, 50),
        pct(&mut s.client, 99),
        s.agent.len()
    );
}

async fn run() {
    let llm = FakeLlm::openai().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).expect("data dir");
    std::fs::write(dir.path().join("token"), TOKEN).expect("token");

    let seeded = Instant::now();
    clawdbot_lite_agent::store::seed_session(
        &data,
        "bench:dm:big",
        STORED,
        "A stored message of an old conversation, about as long as a chat message usually is.",
    )
    .await
    .expect("seed");
    println!(
        "seeded {STORED} messages in {:.1} s",
        seeded.elapsed().as_secs_f64()
    );

    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
        l.local_addr().expect("addr").port()
    };
    let config = json!({
        "listen": format!("127.0.0.1:{port}"),
        "dataDir": data,
        "tokenFile": dir.path().join("token"),
        "model": {"provider": "platform", "baseUrl": llm.base_url(), "model": "fake-model"},
        "storageLimitBytes": 10_000_000_000u64,
    });
    let config_path = dir.path().join("agent.json");
    std::fs::write(&config_path, config.to_string()).expect("config");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_clawdbot-lite-agent"))
        .arg("--config")
        .arg(&config_path)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("start the agent binary");
    let pid = child.id().expect("pid");
    let url = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    clawdbot_testkit::wait_for("the agent to be ready", Duration::from_secs(30), || {
        let http = http.clone();
        let url = url.clone();
        async move {
            let r = http.get(format!("{url}/readyz")).send().await.ok()?;
            r.status().is_success().then_some(())
        }
    })
    .await;
    let idle_start = rss_kib(pid, "VmRSS:");

    measure(&http, &url, "bench:dm:warmup", WARMUP).await;
    report(
        "fresh session (history grows to 4,000)",
        measure(&http, &url, "bench:dm:fresh", MESSAGES).await,
    );
    report(
        &format!("session with {STORED} stored messages"),
        measure(&http, &url, "bench:dm:big", MESSAGES).await,
    );

    // Busy: many sessions at once.
    let started = Instant::now();
    let mut tasks = Vec::new();
    for s in 0..CONCURRENT_SESSIONS {
        let http = http.clone();
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            measure(&http, &url, &format!("bench:dm:c{s}"), CONCURRENT_MESSAGES).await
        }));
    }
    let mut all = Sample {
        agent: Vec::new(),
        client: Vec::new(),
    };
    for t in tasks {
        let s = t.await.expect("task");
        all.agent.extend(s.agent);
        all.client.extend(s.client);
    }
    let busy_now = rss_kib(pid, "VmRSS:");
    let total = all.agent.len();
    report(&format!("{CONCURRENT_SESSIONS} sessions concurrently"), all);
    println!(
        "  throughput {:.0} messages/s with {CONCURRENT_SESSIONS} concurrent sessions",
        total as f64 / started.elapsed().as_secs_f64()
    );

    let peak = rss_kib(pid, "VmHWM:");
    println!(
        "RSS: idle {:.1} MB, after concurrent load {:.1} MB, peak {:.1} MB",
        idle_start as f64 / 1024.0,
        busy_now as f64 / 1024.0,
        peak as f64 / 1024.0
    );
    println!(
        "volume after the run: {:.1} MB",
        dir_size(&data) as f64 / 1e6
    );

    // SIGTERM, as the kubelet sends: the agent drains and exits 0.
    let _ = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status();
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
    println!("agent exit after SIGTERM: {status:?}");
}

fn dir_size(p: &Path) -> u64 {
    std::fs::read_dir(p)
        .map(|rd| {
            rd.flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_size(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}
