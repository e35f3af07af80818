//! Limit checks per second and their latency: `Limits::admit_counted`, the check every
//! message (and every web chat request, whose `X-RateLimit-*` headers it gives) makes. One
//! Redis call per check (a Lua script: per-minute counter, daily quota, the count left). Real
//! Redis from `hack/dev-env.sh`.
//!
//!   cargo bench -p clawdbot-router --bench limits
//!
//! `BENCH_CHECKS` checks (default 20000) over `BENCH_USERS` users (default 1000), one at a
//! time (latency) and then with `BENCH_IN_FLIGHT` in flight (default 64, throughput), each
//! `BENCH_ROUNDS` times (default 5); the medians of the rounds are printed.

#[path = "common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::Instant;

use clawdbot_router::limits::Limits;
use common::env_or;
use hdrhistogram::Histogram;
use uuid::Uuid;

/// Script calls (`EVAL`, `EVALSHA`) and all commands (including the ones a script runs) the
/// Redis server has run (`INFO commandstats`). Other users of the shared server add to them:
/// the figures are upper bounds.
async fn redis_commands(url: &str) -> (u64, u64) {
    let client = redis::Client::open(url).expect("redis url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut conn)
        .await
        .expect("info");
    let calls = |l: &str| {
        l.split_once("calls=")?
            .1
            .split(',')
            .next()?
            .parse::<u64>()
            .ok()
    };
    let scripts = info
        .lines()
        .filter(|l| l.starts_with("cmdstat_evalsha:") || l.starts_with("cmdstat_eval:"))
        .filter_map(calls)
        .sum();
    (scripts, info.lines().filter_map(calls).sum())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
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
    let checks: usize = env_or("BENCH_CHECKS", 20_000);
    let users: usize = env_or("BENCH_USERS", 1_000);
    let in_flight: usize = env_or("BENCH_IN_FLIGHT", 64);
    let rounds: usize = env_or("BENCH_ROUNDS", 5);
    let env = clawdbot_testkit::env::get();
    let prefix = format!("bench{:08x}:", rand::random::<u32>());
    let limits = Arc::new(
        Limits::connect(&env.redis_url, &prefix)
            .await
            .expect("redis"),
    );
    let ids: Arc<Vec<Uuid>> = Arc::new((0..users).map(|_| Uuid::new_v4()).collect());
    // Limits high enough that every check is admitted: the common path.
    let (per_minute, per_day) = (u32::MAX / 2, u32::MAX / 2);

    // Warm: the script is loaded once per connection, then called by its hash.
    limits
        .admit_counted(ids[0], per_minute, per_day)
        .await
        .expect("check");
    let before = redis_commands(&env.redis_url).await;
    let (mut p50s, mut p99s, mut serial_rates, mut rates) = (vec![], vec![], vec![], vec![]);
    for round in 0..rounds {
        let mut h = Histogram::<u64>::new(3).expect("histogram");
        let started = Instant::now();
        for i in 0..checks {
            let t = Instant::now();
            limits
                .admit_counted(ids[i % users], per_minute, per_day)
                .await
                .expect("check");
            h.record(t.elapsed().as_nanos() as u64).expect("record");
        }
        let serial = checks as f64 / started.elapsed().as_secs_f64();
        let started = Instant::now();
        let mut tasks = Vec::new();
        for worker in 0..in_flight {
            let (limits, ids) = (limits.clone(), ids.clone());
            tasks.push(tokio::spawn(async move {
                let mut i = worker;
                while i < checks {
                    limits
                        .admit_counted(ids[i % ids.len()], per_minute, per_day)
                        .await
                        .expect("check");
                    i += in_flight;
                }
            }));
        }
        for t in tasks {
            t.await.expect("worker");
        }
        let rate = checks as f64 / started.elapsed().as_secs_f64();
        let (p50, p99) = (
            h.value_at_quantile(0.5) as f64 / 1000.0,
            h.value_at_quantile(0.99) as f64 / 1000.0,
        );
        println!(
            "round {round}: one at a time p50 {p50:.0} us p99 {p99:.0} us ({serial:.0}/s); {in_flight} in flight {rate:.0} checks/s"
        );
        p50s.push(p50);
        p99s.push(p99);
        serial_rates.push(serial);
        rates.push(rate);
    }
    let after = redis_commands(&env.redis_url).await;
    let total_checks = (2 * checks * rounds) as f64;
    println!(
        "Redis round trips (script calls) per check: {:.3}; commands per check, the script's INCRs \
         and EXPIREs included: {:.3}",
        (after.0 - before.0) as f64 / total_checks,
        // Minus the two INFO calls.
        (after.1 - before.1 - 2) as f64 / total_checks
    );
    println!(
        "limit checks (median of {rounds} rounds, {checks} checks over {users} users, one Redis call each): \
         one at a time p50 {:.0} us, p99 {:.0} us, {:.0}/s; {in_flight} in flight {:.0} checks/s",
        median(p50s),
        median(p99s),
        median(serial_rates),
        median(rates)
    );
    // Leave nothing behind in the shared Redis.
    for id in ids.iter() {
        limits
            .forget_user(*id, "bench", &[], &[])
            .await
            .expect("cleanup");
    }
}
