//! What authentication costs: p50/p99 of `GET /api/v1/users/me` (token check plus the
//! account read) against `GET /healthz` in the same run, and logins per second with the
//! production Argon2id parameters. Real Postgres, Redis and API server.
//!
//!   cargo bench -p clawdbot-router --bench api
//!
//! `BENCH_REQUESTS` (default 5000) requests of each kind, alternating, one at a time over one
//! keep-alive connection; then `BENCH_LOGINS` (default 40) logins, 1 and then 4 in flight.

#[path = "common/mod.rs"]
mod common;
#[path = "../tests/support/mod.rs"]
mod support;

use std::time::Instant;

use common::env_or;
use hdrhistogram::Histogram;
use support::World;
use support::api::ApiClient;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(bench());
}

fn us(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

async fn bench() {
    let requests: usize = env_or("BENCH_REQUESTS", 5000);
    let logins: usize = env_or("BENCH_LOGINS", 40);
    let w = World::new().await;
    let mut config = w.api_config();
    config.accounts.login_attempts_per_account = 1_000_000;
    let r = w.start_router(config).await;
    let mail = format!("bench-{:08x}@example.com", rand::random::<u32>());
    let password = "benchmark password 2026";
    let mut client = ApiClient::new(&r);
    client.register(&mail, password).await;
    let http = reqwest::Client::new();
    let token = client.access.clone().expect("token");
    let me = format!("{}/api/v1/users/me", r.base);
    let health = format!("{}/healthz", r.base);

    let mut h_me = Histogram::<u64>::new(3).expect("histogram");
    let mut h_health = Histogram::<u64>::new(3).expect("histogram");
    for i in 0..requests + 200 {
        let t = Instant::now();
        let s = http.get(&health).send().await.expect("healthz").status();
        let health_ns = t.elapsed().as_nanos() as u64;
        let t = Instant::now();
        let m = http.get(&me).bearer_auth(&token).send().await.expect("me");
        let me_status = m.status();
        let _ = m.bytes().await;
        let me_ns = t.elapsed().as_nanos() as u64;
        assert!(s.is_success() && me_status.is_success());
        // The first 200 of each warm connections and caches.
        if i >= 200 {
            h_health.record(health_ns).expect("record");
            h_me.record(me_ns).expect("record");
        }
    }
    println!(
        "GET /healthz      p50 {:>8.1} us  p99 {:>8.1} us  ({requests} requests)",
        us(&h_health, 0.5),
        us(&h_health, 0.99)
    );
    println!(
        "GET /users/me     p50 {:>8.1} us  p99 {:>8.1} us",
        us(&h_me, 0.5),
        us(&h_me, 0.99)
    );
    println!(
        "authentication adds p50 {:.1} us, p99 {:.1} us",
        us(&h_me, 0.5) - us(&h_health, 0.5),
        us(&h_me, 0.99) - us(&h_health, 0.99)
    );

    for in_flight in [1usize, 4] {
        let started = Instant::now();
        let mut done = 0;
        while done < logins {
            let batch = in_flight.min(logins - done);
            let tasks: Vec<_> = (0..batch)
                .map(|_| {
                    let mut c = ApiClient::new(&r);
                    let mail = mail.clone();
                    tokio::spawn(async move { c.login(&mail, password).await.0 })
                })
                .collect();
            for t in tasks {
                assert!(t.await.expect("login task").is_success());
            }
            done += batch;
        }
        let secs = started.elapsed().as_secs_f64();
        println!(
            "logins ({in_flight} in flight): {:.1}/s, {:.1} ms each",
            logins as f64 / secs,
            secs * 1000.0 / logins as f64 * in_flight as f64
        );
    }
    r.shutdown().await;
}
