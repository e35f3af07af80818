//! What the router's benchmarks share: settings from the environment and the machine's
//! readings (a process's CPU time as utime + stime of `/proc/<pid>/stat`, all its threads,
//! living and gone; the load average).
#![allow(dead_code)] // each benchmark uses a different part

use std::process::Command;

/// A setting from the environment, or `default` when unset or unparsable.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A comma-separated list from the environment, or `default`.
pub fn env_list<T: std::str::FromStr>(name: &str, default: &str) -> Vec<T> {
    std::env::var(name)
        .unwrap_or_else(|_| default.into())
        .split(',')
        .filter_map(|v| v.trim().parse().ok())
        .collect()
}

/// The machine's load average over 1, 5 and 15 minutes.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// utime + stime of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("proc stat");
    // The command name may hold spaces: the fields are counted after its closing paren.
    // utime and stime are fields 14 and 15; the first after the paren is field 3.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .expect("stat format")
        .1
        .split_whitespace()
        .collect();
    let field = |n: usize| fields[n - 3].parse::<u64>().expect("stat field");
    field(14) + field(15)
}

/// Clock ticks per second of `/proc/<pid>/stat`.
pub fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// CPU ticks (utime + stime) and context switches (voluntary + involuntary, all threads) of
/// a process.
pub fn usage(pid: u32) -> (u64, u64) {
    let mut switches = 0;
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("tasks");
    for task in tasks.flatten() {
        let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
        for line in status.lines() {
            if let Some(n) = line
                .strip_prefix("voluntary_ctxt_switches:")
                .or_else(|| line.strip_prefix("nonvoluntary_ctxt_switches:"))
            {
                switches += n.trim().parse::<u64>().unwrap_or(0);
            }
        }
    }
    (cpu_ticks(pid), switches)
}

/// The CPU time of the calling thread, in microseconds: the scheduler's own count in
/// nanoseconds (`/proc/thread-self/schedstat`), not the 10 ms ticks of `stat`.
pub fn thread_cpu_us() -> f64 {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").expect("schedstat");
    let ns: u64 = s
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .expect("schedstat format");
    ns as f64 / 1e3
}

/// What one wake-up costs on this machine: a thread blocked reading a socket is woken by one
/// byte and writes it back, `n` times, a `gap` apart (zero: back to back). Its CPU per round
/// trip (one sleep, one wake, one read, one write) is the price of every hop a process waits
/// for alone, whatever its code.
pub fn wake_cost_us(gap: std::time::Duration, n: u32) -> f64 {
    use std::io::{Read, Write};
    let (mut a, mut b) = std::os::unix::net::UnixStream::pair().expect("socket pair");
    let echo = std::thread::spawn(move || {
        let mut byte = [0u8];
        b.read_exact(&mut byte).expect("first byte");
        b.write_all(&byte).expect("echo");
        // The first round trip warms up; the rest are counted.
        let start = thread_cpu_us();
        for _ in 0..n {
            b.read_exact(&mut byte).expect("byte");
            b.write_all(&byte).expect("echo");
        }
        (thread_cpu_us() - start) / n as f64
    });
    let mut byte = [1u8];
    for _ in 0..=n {
        a.write_all(&byte).expect("ping");
        a.read_exact(&mut byte).expect("pong");
        if !gap.is_zero() {
            std::thread::sleep(gap);
        }
    }
    echo.join().expect("echo thread")
}

/// An open loop's clock: waits until the `i`-th message of a run at `rate` per second that
/// started at `start` is due (at once when the loop is behind).
pub async fn pace(start: std::time::Instant, rate: u64, i: u64) {
    let due = start + std::time::Duration::from_secs_f64(i as f64 / rate as f64);
    let now = std::time::Instant::now();
    if due > now {
        tokio::time::sleep(due - now).await;
    }
}

/// A closed loop's total: what each of its workers counted.
pub async fn total(workers: Vec<tokio::task::JoinHandle<u64>>) -> u64 {
    let mut n = 0;
    for w in workers {
        n += w.await.expect("closed-loop worker");
    }
    n
}

/// A process's CPU time and context switches at one moment, to be shared out among what it
/// did after (`used`).
pub struct Since {
    pid: u32,
    ticks: u64,
    switches: u64,
    at: std::time::Instant,
}

impl Since {
    pub fn now(pid: u32) -> Since {
        let (ticks, switches) = usage(pid);
        Since {
            pid,
            ticks,
            switches,
            at: std::time::Instant::now(),
        }
    }

    /// What the process has used since, read now.
    pub fn used(&self) -> Used {
        let (ticks, switches) = usage(self.pid);
        Used {
            ticks: ticks - self.ticks,
            switches: switches - self.switches,
            wall: self.at.elapsed(),
        }
    }
}

/// A process's CPU time and context switches over a stretch of wall time.
pub struct Used {
    ticks: u64,
    switches: u64,
    wall: std::time::Duration,
}

impl Used {
    /// Microseconds of CPU per item, for `n` items.
    pub fn cpu_us_per(&self, n: u64) -> f64 {
        self.ticks as f64 / clock_ticks() * 1e6 / n.max(1) as f64
    }

    /// Context switches per item, for `n` items.
    pub fn switches_per(&self, n: u64) -> f64 {
        self.switches as f64 / n.max(1) as f64
    }

    /// The share of one core the process used over the stretch, in percent.
    pub fn percent_of_a_core(&self) -> f64 {
        self.ticks as f64 / clock_ticks() * 100.0 / self.wall.as_secs_f64().max(1e-9)
    }
}

/// A latency histogram's quantile `q`, recorded in microseconds, in milliseconds.
pub fn ms(h: &hdrhistogram::Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

/// A latency histogram for microseconds up to a minute, shared by a run's tasks.
pub fn latencies() -> std::sync::Arc<std::sync::Mutex<hdrhistogram::Histogram<u64>>> {
    std::sync::Arc::new(std::sync::Mutex::new(
        hdrhistogram::Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram"),
    ))
}

/// What one loop of a relay benchmark measured: per item done, the relay's CPU and context
/// switches; the items' latency.
pub struct Run {
    pub done: u64,
    pub elapsed: std::time::Duration,
    pub cpu_us: f64,
    pub switches: f64,
    pub latency: hdrhistogram::Histogram<u64>,
}

impl Run {
    /// The run that started at `start`, with `since` taken then, has done `done` items.
    pub fn end(
        done: u64,
        start: std::time::Instant,
        since: &Since,
        latency: &std::sync::Mutex<hdrhistogram::Histogram<u64>>,
    ) -> Run {
        let elapsed = start.elapsed();
        let used = since.used();
        let (cpu_us, switches) = (used.cpu_us_per(done), used.switches_per(done));
        Run {
            done,
            elapsed,
            cpu_us,
            switches,
            latency: latency.lock().expect("histogram").clone(),
        }
    }

    /// One line of a relay benchmark's table: done/s, CPU per item, switches per item, p50
    /// and p99 in milliseconds.
    pub fn row(&self) -> String {
        format!(
            "{:>9.0} {:>13.0} {:>14.1} {:>9.2} {:>9.2}",
            self.done as f64 / self.elapsed.as_secs_f64(),
            self.cpu_us,
            self.switches,
            ms(&self.latency, 0.5),
            ms(&self.latency, 0.99),
        )
    }
}

/// This benchmark's binary started again as a relay (chosen by `env`), which prints the
/// address it listens on as its first line; killed when dropped.
pub struct RelayChild {
    pub child: std::process::Child,
    /// The relay's first line: where it listens.
    pub addr: String,
}

impl RelayChild {
    pub fn start(env: &[(&str, String)]) -> RelayChild {
        use std::io::BufRead;
        let mut child = Command::new(std::env::current_exe().expect("this binary"))
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("start the relay");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("relay address");
        RelayChild {
            child,
            addr: line.trim().to_string(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for RelayChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a benchmark's own side (load generator, fakes) on two worker threads.
pub fn load_generator<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}
