//! The floor under the router's CPU per message with the router's own libraries: a relay that
//! does a message's six hops through them and nothing else.
//!
//!   eval "$(bash hack/dev-env.sh env)"; cargo bench -p clawdbot-router --bench libs
//!
//! `hops` measures bare round trips; this one puts back what every router must pay for the
//! same hops, and leaves out what is the router's own (tenant resolution, caches, quotas,
//! group commits, metrics, tracing). A relay process (this binary, started again with
//! `LIBS_RELAY=<echo URL>`; tokio's single-threaded runtime and mimalloc, as the router ships)
//! answers `POST /webhook` (axum; a Telegram update parsed with serde_json) after a Redis
//! script (redis-rs `Script`, as the claim is) and an `INSERT ... UNNEST ... RETURNING` on a
//! kept Postgres connection (sqlx, as the record), then, on a task of its own as the router
//! does: an agent call (reqwest, JSON in and out), a Telegram `sendMessage` (reqwest, JSON in
//! and out) and an `UPDATE` (sqlx, as the finish). The echo server for the two HTTP calls
//! runs in this process; Redis and Postgres are the dev servers (`CLAWDBOT_TEST_REDIS_URL`,
//! `CLAWDBOT_TEST_DATABASE_URL`; the table `libs_floor_bench` is made and dropped).
//!
//! An open loop at each of `BENCH_RATES` (default 200,500,1000,2000) messages/s for
//! `BENCH_SECONDS` (default 5), then a closed loop with 64 in flight, prints per rate: the
//! relay's CPU per message (utime + stime over the window, until every message's
//! `sendMessage` arrived), its context switches per message, and the webhook's p50/p99; first,
//! what one wake-up of a sleeping thread costs on this machine (`common::wake_cost_us`), the
//! price of each hop a process waits for alone.
//! `BENCH_LIBS=all,none,redis,record,agent,telegram,finish` runs the relay once per entry:
//! every hop (the default), the webhook alone, or the webhook and one hop, to say what each
//! hop costs. Compare with the router benchmark's figures of the same sitting: what is left
//! between the two is the router's own code.

#[path = "common/mod.rs"]
mod common;

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use common::{
    RelayChild, Run, Since, env_list, env_or, latencies, load_average, load_generator, pace, total,
    wake_cost_us,
};
use hdrhistogram::Histogram;
use serde::Deserialize;
use serde_json::json;
use sqlx::Connection;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const IN_FLIGHT: usize = 64;

fn main() {
    if let Ok(echo) = std::env::var("LIBS_RELAY") {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(relay(
                echo,
                Hops::parse(&env_or("LIBS_RELAY_HOPS", "all".to_string())),
            ));
        return;
    }
    load_generator(bench());
}

#[derive(Deserialize)]
struct Update {
    update_id: i64,
    message: Message,
}

#[derive(Deserialize)]
struct Message {
    chat: Chat,
    text: String,
}

#[derive(Deserialize)]
struct Chat {
    id: i64,
}

#[derive(Deserialize)]
struct Completion {
    choices: Vec<Choice>,
}

#[derive(Deserialize)]
struct Choice {
    message: Reply,
}

#[derive(Deserialize)]
struct Reply {
    content: String,
}

#[derive(Deserialize)]
struct Sent {
    ok: bool,
}

struct Relay {
    redis: redis::aio::ConnectionManager,
    claim: redis::Script,
    /// Kept connections, as the router's group commits keep theirs (a pool tests each one
    /// handed back with a round trip).
    record: tokio::sync::Mutex<sqlx::PgConnection>,
    finish: Arc<tokio::sync::Mutex<sqlx::PgConnection>>,
    http: reqwest::Client,
    echo: String,
    hops: Hops,
}

/// Which of the five hops after the webhook's own the relay makes.
#[derive(Clone, Copy)]
struct Hops {
    redis: bool,
    record: bool,
    agent: bool,
    telegram: bool,
    finish: bool,
}

impl Hops {
    /// `all`, `none` (the webhook alone), or one hop's name (the webhook and that hop).
    fn parse(config: &str) -> Hops {
        let all = config == "all";
        let hops = Hops {
            redis: all || config == "redis",
            record: all || config == "record",
            agent: all || config == "agent",
            telegram: all || config == "telegram",
            finish: all || config == "finish",
        };
        let known = [
            "all", "none", "redis", "record", "agent", "telegram", "finish",
        ];
        assert!(
            known.contains(&config),
            "BENCH_LIBS: {config}? one of {known:?}"
        );
        hops
    }
}

async fn relay(echo: String, hops: Hops) {
    let db = std::env::var("CLAWDBOT_TEST_DATABASE_URL").expect("CLAWDBOT_TEST_DATABASE_URL");
    let redis_url = std::env::var("CLAWDBOT_TEST_REDIS_URL").expect("CLAWDBOT_TEST_REDIS_URL");
    let client = redis::Client::open(redis_url).expect("redis url");
    let state = Arc::new(Relay {
        redis: redis::aio::ConnectionManager::new(client)
            .await
            .expect("redis"),
        // The claim's shape: a key set if absent with an expiry, and a counter.
        claim: redis::Script::new(
            "local new = redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', 30) \
             local n = redis.call('INCR', KEYS[2]) \
             redis.call('EXPIRE', KEYS[2], 60) \
             if new then return n end return -1",
        ),
        record: tokio::sync::Mutex::new(sqlx::PgConnection::connect(&db).await.expect("pg")),
        finish: Arc::new(tokio::sync::Mutex::new(
            sqlx::PgConnection::connect(&db).await.expect("pg"),
        )),
        http: reqwest::Client::builder()
            .tcp_nodelay(true)
            .build()
            .expect("client"),
        echo,
        hops,
    });
    let app = Router::new()
        .route("/webhook", post(webhook))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    println!("{}", listener.local_addr().expect("addr"));
    std::io::stdout().flush().expect("stdout");
    axum::serve(listener, app).await.expect("serve");
}

async fn webhook(
    State(r): State<Arc<Relay>>,
    Json(update): Json<Update>,
) -> Json<serde_json::Value> {
    let chat = update.message.chat.id;
    let mut claimed = 0i64;
    if r.hops.redis {
        claimed = r
            .claim
            .key(format!("floor:seen:{}", update.update_id))
            .key(format!("floor:count:{chat}"))
            .arg(1)
            .invoke_async(&mut r.redis.clone())
            .await
            .expect("claim");
    }
    let mut id = 0;
    if r.hops.record {
        let ids: Vec<(i64,)> = sqlx::query_as(
            "INSERT INTO libs_floor_bench (chat, body)
             SELECT * FROM UNNEST($1::int8[], $2::text[]) RETURNING id",
        )
        .bind(vec![chat])
        .bind(vec![update.message.text.clone()])
        .fetch_all(&mut *r.record.lock().await)
        .await
        .expect("record");
        id = ids[0].0;
    }
    let r2 = r.clone();
    tokio::spawn(async move {
        let mut reply = String::from("pong");
        if r2.hops.agent {
            let answer: Completion = r2
                .http
                .post(format!("{}/v1/chat/completions", r2.echo))
                .bearer_auth("token")
                .json(&json!({"messages": [{"role": "user", "content": update.message.text}]}))
                .send()
                .await
                .expect("agent")
                .json()
                .await
                .expect("agent answer");
            reply = answer
                .choices
                .into_iter()
                .next()
                .expect("a choice")
                .message
                .content;
        }
        if r2.hops.telegram {
            let sent: Sent = r2
                .http
                .post(format!("{}/botTOKEN/sendMessage", r2.echo))
                .json(&json!({"chat_id": chat, "text": reply}))
                .send()
                .await
                .expect("telegram")
                .json()
                .await
                .expect("telegram answer");
            assert!(sent.ok);
        }
        if r2.hops.finish {
            sqlx::query("UPDATE libs_floor_bench SET done = true WHERE id = ANY($1)")
                .bind(vec![id])
                .execute(&mut *r2.finish.lock().await)
                .await
                .expect("finish");
        }
    });
    Json(json!({ "claimed": claimed >= 0 }))
}

/// The agent and Telegram in one: answers a completion or a sent message, counting the sends.
async fn echo_server(listener: tokio::net::TcpListener, sent: Arc<AtomicU64>) {
    let app = Router::new()
        .route(
            "/v1/chat/completions",
            post(|Json(_): Json<serde_json::Value>| async {
                Json(json!({
                    "id": "c", "object": "chat.completion", "model": "m",
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": "pong"},
                                 "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}
                }))
            }),
        )
        .route(
            "/botTOKEN/sendMessage",
            post(move |Json(_): Json<serde_json::Value>| async move {
                sent.fetch_add(1, Ordering::Relaxed);
                Json(json!({"ok": true, "result": {"message_id": 1, "date": 0,
                            "chat": {"id": 1, "type": "private"}, "text": "pong"}}))
            }),
        );
    axum::serve(listener, app).await.expect("echo");
}

struct RelayProcess {
    process: RelayChild,
    url: String,
    /// Whether each message ends with a `sendMessage` the echo server counts.
    sends: bool,
}

impl RelayProcess {
    fn start(echo: &str, hops: &str) -> RelayProcess {
        let process = RelayChild::start(&[
            ("LIBS_RELAY", echo.to_string()),
            ("LIBS_RELAY_HOPS", hops.to_string()),
        ]);
        RelayProcess {
            url: format!("http://{}/webhook", process.addr),
            process,
            sends: Hops::parse(hops).telegram,
        }
    }
}

static NEXT_UPDATE: AtomicU64 = AtomicU64::new(1);

fn update(chat: i64) -> serde_json::Value {
    let id = NEXT_UPDATE.fetch_add(1, Ordering::Relaxed);
    json!({
        "update_id": id,
        "message": {
            "message_id": id, "date": 1_700_000_000,
            "from": {"id": chat, "is_bot": false, "first_name": "Bench"},
            "chat": {"id": chat, "type": "private"},
            "text": "hello, what is the weather like?"
        }
    })
}

async fn send(http: &reqwest::Client, url: &str, latency: &Mutex<Histogram<u64>>) {
    let chat = 1_000 + (NEXT_UPDATE.load(Ordering::Relaxed) % 10_000) as i64;
    let sent = Instant::now();
    let status = http
        .post(url)
        .json(&update(chat))
        .send()
        .await
        .expect("the relay's answer")
        .status();
    assert!(status.is_success(), "relay answered {status}");
    let us = sent.elapsed().as_micros() as u64;
    latency.lock().expect("histogram").record(us.max(1)).ok();
}

/// `rate` = 0: closed loop with `IN_FLIGHT` messages in flight.
async fn run(
    relay: &RelayProcess,
    http: &reqwest::Client,
    sent: &AtomicU64,
    rate: u64,
    seconds: u64,
) -> Run {
    let latency = latencies();
    let url: Arc<str> = relay.url.clone().into();
    let pid = relay.process.pid();
    let sent_before = sent.load(Ordering::Relaxed);
    let since = Since::now(pid);
    let start = Instant::now();
    let messages = if rate == 0 {
        let deadline = start + Duration::from_secs(seconds);
        let tasks: Vec<_> = (0..IN_FLIGHT)
            .map(|_| {
                let (http, url, latency) = (http.clone(), url.clone(), latency.clone());
                tokio::spawn(async move {
                    let mut n = 0u64;
                    while Instant::now() < deadline {
                        send(&http, &url, &latency).await;
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        total(tasks).await
    } else {
        let total = rate * seconds;
        let slots = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
        let mut tasks = Vec::with_capacity(total as usize);
        for i in 0..total {
            pace(start, rate, i).await;
            let slot = slots.clone().acquire_owned().await.expect("slot");
            let (http, url, latency) = (http.clone(), url.clone(), latency.clone());
            tasks.push(tokio::spawn(async move {
                send(&http, &url, &latency).await;
                drop(slot);
            }));
        }
        for t in tasks {
            t.await.expect("message");
        }
        total
    };
    // Until every message's reply went out, and the finish after it (or whatever hops run
    // after the answer: a few milliseconds).
    while relay.sends && sent.load(Ordering::Relaxed) - sent_before < messages {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    Run::end(messages, start, &since, &latency)
}

async fn bench() {
    let rates: Vec<u64> = env_list("BENCH_RATES", "200,500,1000,2000");
    let seconds: u64 = env_or("BENCH_SECONDS", 5);
    let db = std::env::var("CLAWDBOT_TEST_DATABASE_URL")
        .expect("CLAWDBOT_TEST_DATABASE_URL (eval \"$(bash hack/dev-env.sh env)\")");
    let mut pg = sqlx::PgConnection::connect(&db).await.expect("postgres");
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS libs_floor_bench
         (id bigserial PRIMARY KEY, chat int8 NOT NULL, body text, done bool NOT NULL DEFAULT false)",
    )
    .execute(&mut pg)
    .await
    .expect("table");
    let sent = Arc::new(AtomicU64::new(0));
    let echo = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let echo_url = format!("http://{}", echo.local_addr().expect("addr"));
    tokio::spawn(echo_server(echo, sent.clone()));
    let configs: Vec<String> = env_list("BENCH_LIBS", "all");
    let http = reqwest::Client::builder()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(IN_FLIGHT)
        .build()
        .expect("client");
    println!("(load average at the start: {})", load_average());
    let wakes = tokio::task::spawn_blocking(|| {
        [5_000, 1_000, 0].map(|gap| wake_cost_us(Duration::from_micros(gap), 1_000))
    })
    .await
    .expect("wake-ups");
    println!(
        "one wake-up (a thread blocked on a socket woken by a byte it echoes): {:.1} us of CPU \
         5 ms apart (as at 200 msg/s), {:.1} us 1 ms apart, {:.1} us back to back",
        wakes[0], wakes[1], wakes[2]
    );
    println!(
        "{:>8} {:>8} {:>9} {:>13} {:>14} {:>9} {:>9}",
        "hops", "rate", "done/s", "relay CPU us", "switches/msg", "p50 ms", "p99 ms"
    );
    for config in &configs {
        let relay = RelayProcess::start(&echo_url, config);
        // Warm the connections and the prepared statements up.
        run(&relay, &http, &sent, 200, 1).await;
        for &rate in rates.iter().chain(std::iter::once(&0)) {
            let r = run(&relay, &http, &sent, rate, seconds).await;
            let label = if rate == 0 {
                "closed".to_string()
            } else {
                rate.to_string()
            };
            println!("{config:>8} {label:>8} {}", r.row());
        }
    }
    sqlx::query("DROP TABLE libs_floor_bench")
        .execute(&mut pg)
        .await
        .expect("drop");
    println!("(load average at the end: {})", load_average());
}
