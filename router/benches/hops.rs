//! The floor under the router's CPU per message on this machine: what a message's hops cost
//! when nothing else is done.
//!
//!   cargo bench -p clawdbot-router --bench hops
//!
//! A relay process (this binary, started again with `HOPS_RELAY=<echo address>`) answers each
//! request after `BENCH_HOPS` (default 6: the router's Redis claim, record, agent call, Telegram
//! send, finish, and the webhook's own answer counted as the request) sequential round trips to
//! an echo server in this process, on connections it keeps, from the request's own task: no
//! HTTP, no JSON, no task hand-over, no allocation per hop. It runs on tokio's default runtime,
//! as the router does. An open loop at each of `BENCH_RATES` (default 200,500,1000,2000)
//! requests/s for `BENCH_SECONDS` (default 5) over 64 kept connections, then a closed loop with
//! 64 in flight, prints per rate: the relay's CPU per request (utime+stime from
//! `/proc/<pid>/stat` over the window, as the router benchmark measures the router), its
//! context switches per request (`/proc/<pid>/status`, all threads), and latency p50/p99.
//! `BENCH_HOPS=1,6` runs each hop count in turn; `BENCH_DRIVER=0,1` runs each also with every
//! hop handed to a task that owns the connection and answers through a oneshot, the shape of
//! hyper's client connections, the Redis multiplexer and the router's group commits.
//!
//! The router's figure at a rate cannot be below this one for the same hops: what is left
//! between them is the router's own work.

#[path = "common/mod.rs"]
mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{
    RelayChild, Run, Since, env_list, env_or, latencies, load_average, load_generator, pace, total,
};
use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Connections from the load generator to the relay, and requests in flight in the closed loop.
const CONNECTIONS: usize = 64;

fn main() {
    if let Ok(echo) = std::env::var("HOPS_RELAY") {
        let hops: usize = env_or("HOPS_RELAY_HOPS", 6);
        let driver = std::env::var("HOPS_RELAY_DRIVER").is_ok_and(|v| v == "1");
        // The router's runtime: `#[tokio::main]`, one worker per core.
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(relay(echo.parse().expect("echo address"), hops, driver));
        return;
    }
    load_generator(bench());
}

/// Reads exactly one 8-byte frame; `None` when the peer closed.
async fn frame(s: &mut TcpStream) -> Option<[u8; 8]> {
    let mut b = [0u8; 8];
    s.read_exact(&mut b).await.ok()?;
    Some(b)
}

/// One round trip: a frame written, its answer read; `None` when the peer closed.
async fn round_trip(s: &mut TcpStream, req: [u8; 8]) -> Option<[u8; 8]> {
    s.write_all(&req).await.ok()?;
    frame(s).await
}

type Hop = ([u8; 8], tokio::sync::oneshot::Sender<[u8; 8]>);

/// How the relay reaches the echo server.
enum Echo {
    /// The request's own task does each round trip.
    Direct(TcpStream),
    /// A task owning the connection does them, answering through a oneshot.
    Driver(tokio::sync::mpsc::Sender<Hop>),
}

impl Echo {
    fn new(s: TcpStream, driver: bool) -> Echo {
        if !driver {
            return Echo::Direct(s);
        }
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Hop>(16);
        let mut s = s;
        tokio::spawn(async move {
            while let Some((req, answer)) = rx.recv().await {
                let _ = answer.send(round_trip(&mut s, req).await.expect("hop"));
            }
        });
        Echo::Driver(tx)
    }

    async fn hop(&mut self, req: [u8; 8]) {
        match self {
            Echo::Direct(s) => {
                round_trip(s, req).await.expect("hop");
            }
            Echo::Driver(tx) => {
                let (answer, answered) = tokio::sync::oneshot::channel();
                tx.send((req, answer)).await.expect("driver");
                answered.await.expect("hop answer");
            }
        }
    }
}

/// The relay: for each request, `hops` round trips to the echo server, then the answer.
async fn relay(echo: SocketAddr, hops: usize, handed_over: bool) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    println!("{}", listener.local_addr().expect("addr"));
    std::io::stdout().flush().expect("stdout");
    loop {
        let (mut inbound, _) = listener.accept().await.expect("accept");
        inbound.set_nodelay(true).expect("nodelay");
        tokio::spawn(async move {
            let outbound = TcpStream::connect(echo).await.expect("echo");
            outbound.set_nodelay(true).expect("nodelay");
            let mut echo = Echo::new(outbound, handed_over);
            while let Some(req) = frame(&mut inbound).await {
                for _ in 0..hops {
                    echo.hop(req).await;
                }
                if inbound.write_all(&req).await.is_err() {
                    return;
                }
            }
        });
    }
}

async fn echo_server(listener: TcpListener) {
    loop {
        let Ok((mut s, _)) = listener.accept().await else {
            return;
        };
        s.set_nodelay(true).expect("nodelay");
        tokio::spawn(async move {
            while let Some(b) = frame(&mut s).await {
                if s.write_all(&b).await.is_err() {
                    return;
                }
            }
        });
    }
}

/// The relay process: `hops` round trips to the echo server per request.
struct Relay {
    process: RelayChild,
    addr: SocketAddr,
}

impl Relay {
    fn start(echo: SocketAddr, hops: usize, driver: bool) -> Relay {
        let process = RelayChild::start(&[
            ("HOPS_RELAY", echo.to_string()),
            ("HOPS_RELAY_HOPS", hops.to_string()),
            (
                "HOPS_RELAY_DRIVER",
                if driver { "1" } else { "0" }.to_string(),
            ),
        ]);
        Relay {
            addr: process.addr.parse().expect("relay address"),
            process,
        }
    }
}

/// One request to the relay, its latency recorded in microseconds.
async fn timed(s: &mut TcpStream, latency: &Mutex<Histogram<u64>>) {
    let sent = Instant::now();
    round_trip(s, [1; 8]).await.expect("the relay's answer");
    let us = sent.elapsed().as_micros() as u64;
    latency.lock().expect("histogram").record(us.max(1)).ok();
}

/// `rate` = 0: closed loop, every connection sending its next request as soon as the last
/// one is answered.
async fn run(relay: &Relay, rate: u64, seconds: u64) -> Run {
    let mut conns = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        let s = TcpStream::connect(relay.addr).await.expect("relay");
        s.set_nodelay(true).expect("nodelay");
        conns.push(s);
    }
    // Warm each connection (and the relay's connection to the echo server) up.
    for s in &mut conns {
        round_trip(s, [0; 8]).await.expect("warm-up");
    }
    let latency = latencies();
    let pid = relay.process.pid();
    let since = Since::now(pid);
    let start = Instant::now();
    let requests = if rate == 0 {
        let deadline = start + Duration::from_secs(seconds);
        let tasks: Vec<_> = conns
            .into_iter()
            .map(|mut s| {
                let latency = latency.clone();
                tokio::spawn(async move {
                    let mut n = 0u64;
                    while Instant::now() < deadline {
                        timed(&mut s, &latency).await;
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        total(tasks).await
    } else {
        let (free_tx, mut free_rx) = tokio::sync::mpsc::unbounded_channel::<TcpStream>();
        for s in conns {
            free_tx.send(s).expect("pool");
        }
        let total = rate * seconds;
        let mut tasks = Vec::with_capacity(total as usize);
        for i in 0..total {
            pace(start, rate, i).await;
            let mut s = free_rx.recv().await.expect("a free connection");
            let (latency, free_tx) = (latency.clone(), free_tx.clone());
            tasks.push(tokio::spawn(async move {
                timed(&mut s, &latency).await;
                let _ = free_tx.send(s);
            }));
        }
        for t in tasks {
            t.await.expect("request");
        }
        total
    };
    Run::end(requests, start, &since, &latency)
}

async fn bench() {
    let rates: Vec<u64> = env_list("BENCH_RATES", "200,500,1000,2000");
    let seconds: u64 = env_or("BENCH_SECONDS", 5);
    let hops: Vec<u64> = env_list("BENCH_HOPS", "6");
    let drivers: Vec<u64> = env_list("BENCH_DRIVER", "0");
    let echo = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let echo_addr = echo.local_addr().expect("addr");
    tokio::spawn(echo_server(echo));
    println!("(load average at the start: {})", load_average());
    println!(
        "{:>5} {:>6} {:>8} {:>9} {:>13} {:>14} {:>9} {:>9}",
        "hops", "driver", "rate", "done/s", "relay CPU us", "switches/req", "p50 ms", "p99 ms"
    );
    for (&h, &d) in hops
        .iter()
        .flat_map(|h| drivers.iter().map(move |d| (h, d)))
    {
        let relay = Relay::start(echo_addr, h as usize, d == 1);
        for &rate in rates.iter().chain(std::iter::once(&0)) {
            let r = run(&relay, rate, seconds).await;
            let label = if rate == 0 {
                "closed".to_string()
            } else {
                rate.to_string()
            };
            println!(
                "{:>5} {:>6} {:>8} {}",
                h,
                if d == 1 { "yes" } else { "no" },
                label,
                r.row()
            );
        }
    }
    println!("(load average at the end: {})", load_average());
}
