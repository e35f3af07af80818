//! The real small chat model for tests: SmolLM2-135M-Instruct (Q4_1 GGUF) behind
//! llama-cpp-python's OpenAI-compatible server, on 127.0.0.1 and a free port.
//!
//! ```no_run
//! # async fn demo() {
//! let model = clawdbot_testkit::model_server::start().await;
//! // POST {base_url}/chat/completions with {"model": model.model_name(), ...}
//! println!("{} {}", model.base_url(), model.model_name());
//! # }
//! ```
//!
//! The venv and the weights come from `hack/install-model-server.sh` (cached under
//! `~/.cache/clawdbot`); [`start`] runs that script first when the cache is missing, which
//! takes about 7 minutes once per machine. The server is killed when the handle drops.
//!
//! Figures to plan tests with (2 shared cores, one inference thread): start-up about 1-2 s,
//! 10-90 generated tokens/s and 45-95 prompt tokens/s depending on how busy the machine is.
//! OpenClaw sends about 2,500 prompt tokens per turn, so a first OpenClaw turn costs 25-110 s
//! (later turns of a session reuse the cached prefix: seconds); cap `max_tokens`, keep the
//! number of real-model turns small and give them generous timeouts. The server handles one
//! request at a time. SmolLM2-135M loops on long greedy generations and cannot follow complex
//! prompts: assert on well-formed, non-empty replies, not on their text. It reads `max_tokens`
//! and ignores `max_completion_tokens`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

/// The alias the server answers to in `model` fields and lists in `/v1/models`.
pub const MODEL_NAME: &str = "smollm2";
/// File name of the weights inside the cache.
pub const GGUF_NAME: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// How to start the server. `Options::default()` suits both runtimes' tests.
#[derive(Clone, Debug)]
pub struct Options {
    /// Context window in tokens. OpenClaw's ~2,500-token prompt plus a capped reply fits in
    /// 4096; a smaller window is faster for the lite agent's short prompts.
    pub n_ctx: u32,
    /// CPU threads for inference. One by default: ggml's threads spin on barriers, and on
    /// shared, oversubscribed cores (CI, four engineers on two cores) two threads generated
    /// 5x slower than one (measured: 96 tokens in 27-49 s with two, 6-10 s with one).
    pub n_threads: u32,
    /// How long to wait for `/v1/models` to answer.
    pub startup_timeout: Duration,
    /// Address to listen on: loopback, or the node's bridge address for agents in pods.
    pub host: String,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            n_ctx: 4096,
            n_threads: 1,
            startup_timeout: Duration::from_secs(120),
            host: "127.0.0.1".into(),
        }
    }
}

/// A running model server; killed on drop.
#[derive(Debug)]
pub struct ModelServer {
    child: Child,
    host: String,
    port: u16,
    log: PathBuf,
    _dir: TempDir,
}

impl ModelServer {
    /// OpenAI-compatible base URL, ending in `/v1` (`{base_url}/chat/completions`).
    pub fn base_url(&self) -> String {
        format!("http://{}:{}/v1", self.host, self.port)
    }
    /// The model name to send in requests.
    pub fn model_name(&self) -> &'static str {
        MODEL_NAME
    }
    /// TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }
    /// Process id of the server (for RSS measurements).
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }
    /// Path of the server's combined stdout and stderr.
    pub fn log_path(&self) -> PathBuf {
        self.log.clone()
    }
    /// The server's combined stdout and stderr so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Starts the server with [`Options::default`].
pub async fn start() -> ModelServer {
    start_with(Options::default()).await
}

/// Starts the server and waits until `/v1/models` answers. Panics with the server's log when
/// it exits early or does not answer in time.
pub async fn start_with(options: Options) -> ModelServer {
    let install = ensure_installed().await;
    let dir = TempDir::new("clawdbot-model-server");
    let log = dir.path().join("server.log");
    // The port is free when picked and bound by the server a moment later: should another
    // process take it in between, the server exits at once and is started on another.
    let mut attempt = 1;
    let (child, port) = loop {
        match spawn_and_wait(&install, &options, &log).await {
            Ok(started) => break started,
            Err(log_text) if attempt < 3 && log_text.contains("address already in use") => {
                attempt += 1;
            }
            Err(log_text) => panic!("{log_text}"),
        }
    };
    ModelServer {
        child,
        host: options.host.clone(),
        port,
        log,
        _dir: dir,
    }
}

/// Starts the server on a free port and waits until `/v1/models` answers: the server and its
/// port, or why not with the server's log.
async fn spawn_and_wait(
    install: &Install,
    options: &Options,
    log: &Path,
) -> Result<(Child, u16), String> {
    let log_file = std::fs::File::create(log).expect("model server log file");
    let port = free_port();
    let mut child = Command::new(&install.python)
        .args(["-m", "llama_cpp.server", "--model"])
        .arg(&install.gguf)
        .args(["--model_alias", MODEL_NAME, "--host", &options.host])
        .args(["--port", &port.to_string()])
        .args(["--n_ctx", &options.n_ctx.to_string()])
        .args(["--n_threads", &options.n_threads.to_string()])
        .env("PYTHONUNBUFFERED", "1")
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().expect("log file handle"))
        .stderr(log_file)
        .kill_on_drop(true)
        .spawn()
        .expect("spawning llama_cpp.server");

    let deadline = tokio::time::Instant::now() + options.startup_timeout;
    let mut delay = Duration::from_millis(50);
    loop {
        if http_get_ok(&options.host, port, "/v1/models").await {
            return Ok((child, port));
        }
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            return Err(format!(
                "model server exited with {status} before answering:\n{log}"
            ));
        }
        if tokio::time::Instant::now() >= deadline {
            let _ = child.start_kill();
            let log = std::fs::read_to_string(log).unwrap_or_default();
            return Err(format!(
                "model server did not answer /v1/models within {:?}:\n{log}",
                options.startup_timeout
            ));
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(250));
    }
}

/// Paths of the cached install.
#[derive(Clone, Debug)]
pub struct Install {
    pub python: PathBuf,
    pub gguf: PathBuf,
}

/// The cache directory shared by the `hack/install-*.sh` scripts.
pub fn cache_dir() -> PathBuf {
    match std::env::var_os("CLAWDBOT_CACHE") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
            .join(".cache/clawdbot"),
    }
}

/// Runs `hack/install-model-server.sh` unless its result is already cached (once per process).
pub async fn ensure_installed() -> Install {
    static INSTALLED: Mutex<Option<Install>> = Mutex::new(None);
    if let Some(install) = INSTALLED.lock().expect("install lock").clone() {
        return install;
    }
    let cache = cache_dir();
    let install = Install {
        python: cache.join("llama-venv/bin/python"),
        gguf: cache.join("models").join(GGUF_NAME),
    };
    if !(install.python.exists() && install.gguf.exists()) {
        let script = crate::repo_root().join("hack/install-model-server.sh");
        let out = tokio::process::Command::new("bash")
            .arg(&script)
            .output()
            .await
            .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
        assert!(
            out.status.success(),
            "{} failed:\n{}\n{}",
            script.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    *INSTALLED.lock().expect("install lock") = Some(install.clone());
    install
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding a free port")
}

/// Whether `GET path` on host:port answers 200 (a plain HTTP/1.0 request, no client crate).
async fn http_get_ok(host: &str, port: u16, path: &str) -> bool {
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect((host, port)).await.ok()?;
        let request = format!("GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut head = [0u8; 16];
        let n = stream.read(&mut head).await.ok()?;
        let line = std::str::from_utf8(&head[..n]).ok()?;
        Some(line.starts_with("HTTP/1.1 200") || line.starts_with("HTTP/1.0 200"))
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(2), attempt).await,
        Ok(Some(true))
    )
}

/// A directory removed on drop (kept small: testkit has no tempfile dependency).
#[derive(Debug)]
struct TempDir(PathBuf);

impl TempDir {
    fn new(prefix: &str) -> Self {
        let path = std::env::temp_dir().join(format!(
            "{prefix}-{}-{:016x}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&path).expect("creating a temp dir");
        TempDir(path)
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Starts the real server and asks it one short question.
    #[tokio::test]
    async fn answers_models_and_a_chat_completion() {
        let server = start_with(Options {
            n_ctx: 1024,
            ..Options::default()
        })
        .await;
        assert!(server.base_url().ends_with("/v1"));
        let body = serde_json::json!({
            "model": server.model_name(),
            "messages": [{"role": "user", "content": "What is the capital of France?"}],
            "max_tokens": 16,
            "temperature": 0.0
        })
        .to_string();
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", server.port()))
            .await
            .expect("connect");
        let request = format!(
            "POST /v1/chat/completions HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut response = String::new();
        tokio::time::timeout(
            Duration::from_secs(120),
            stream.read_to_string(&mut response),
        )
        .await
        .expect("a reply within 120 s")
        .expect("read");
        let (head, json) = response.split_once("\r\n\r\n").expect("an HTTP response");
        assert!(
            head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200"),
            "{head}\n{}",
            server.log()
        );
        let reply: serde_json::Value = serde_json::from_str(json).expect("JSON body");
        let text = reply["choices"][0]["message"]["content"]
            .as_str()
            .expect("a message");
        assert!(!text.trim().is_empty(), "empty reply: {reply}");
    }
}
