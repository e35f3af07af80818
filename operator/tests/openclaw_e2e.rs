//! The OpenClaw runtime end to end: the pinned runtime installed the way the image installs it
//! (`hack/install-openclaw.sh` runs `agent-image/openclaw/install-runtime.sh`), configured with
//! exactly what the operator renders for a real `UserWorkspace` (its ConfigMap and its
//! Deployment's env), pointed at the real SmolLM2 model server, and driven the way the router
//! drives it.
//!
//! Only the container paths are moved under a temp dir (`/data`, `/etc/clawdbot`, `/tmp`), the
//! port is a free one, and the `secretKeyRef` env vars are filled from the Secret values, which
//! is what the kubelet would do. The ConfigMap is laid out like the kubelet's volume (a
//! `..data` symlink swapped atomically on update) and stays read-only to the gateway.
//!
//! Between OpenClaw and the model sits a byte-for-byte TCP relay that records the requests, so
//! the test can check what actually reached the model: the rendered temperature and reply cap,
//! and the session history after a restart.
//!
//! `cargo test -p clawdbot-operator --test openclaw_e2e -- --nocapture` prints the figures
//! (start-up, RSS, prompt size, overhead over a direct model call).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clawdbot_api::conversations::{
    ConversationExport, EXPORT_PATH, MESSAGES_PATH, MessagePage, SESSIONS_PATH, SessionList,
};
use clawdbot_api::gateway::{ChatCompletionResponse, Role, SESSION_KEY_HEADER, estimate_tokens};
use clawdbot_api::names;
use clawdbot_api::plan::Runtime;
use clawdbot_api::workspace::UserWorkspace;
use clawdbot_operator::build::agent::{
    AgentInputs, build_config_map, build_deployment, config_hash, model_target,
};
use clawdbot_operator::config::OperatorConfig;
use clawdbot_operator::openclaw::{self, RenderInput};
use clawdbot_testkit::model_server;
use k8s_openapi::api::core::v1::EnvVar;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

/// One model turn on 2 shared cores: OpenClaw's ~2,500-token prompt takes 25-130 s to process
/// when the machine is busy (measured). Generous, so a slow CI box does not flake.
const TURN_TIMEOUT: Duration = Duration::from_secs(300);
/// Gateway start-up: 8-20 s on a quiet machine, over a minute under load with a cold cache.
const START_TIMEOUT: Duration = Duration::from_secs(240);
/// Reply cap for the test tenant: keeps SmolLM2 from looping for minutes.
const MAX_TOKENS: u32 = 48;

const GATEWAY_TOKEN: &str = "e2e-token-0123456789abcdef";

/// The pinned runtime, installed (or found in the cache) by the project's own script.
fn install_openclaw() -> PathBuf {
    let script = clawdbot_testkit::repo_root().join("hack/install-openclaw.sh");
    let out = std::process::Command::new("bash")
        .arg(&script)
        .output()
        .expect("running hack/install-openclaw.sh");
    assert!(
        out.status.success(),
        "install-openclaw.sh failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    model_server::cache_dir().join("openclaw-2026.9.6")
}

/// The cached runtime's `node` and `openclaw.mjs`.
fn node_and_entry(runtime: &Path) -> (PathBuf, PathBuf) {
    (
        runtime.join("node/bin/node"),
        runtime.join("app/node_modules/openclaw/openclaw.mjs"),
    )
}

fn workspace(yaml: &str) -> UserWorkspace {
    serde_yaml::from_str(yaml).expect("UserWorkspace YAML")
}

/// The test tenant: the free plan's policy (no background jobs, minimal tools) on the OpenClaw
/// runtime, with the platform model.
const TENANT: &str = r#"
apiVersion: clawdbot.io/v1alpha1
kind: UserWorkspace
metadata: {name: e2e, namespace: tenants, uid: 6c1b7a0e-0000-4000-8000-000000000001}
spec:
  ownerId: user-e2e
  plan: free
  runtime: openclaw
  model:
    provider: platform
    name: smollm2
    endpointRef: {name: shared}
    temperature: 0.2
    maxTokens: 48
    contextWindow: 8192
"#;

/// What the operator produces for a tenant: the config file and the container env.
struct Rendered {
    config: Value,
    env: Vec<EnvVar>,
}

/// Renders the way the reconciler does: validate, resolve the model, build the ConfigMap and
/// the Deployment, and take the config and env out of them.
fn render_as_operator(ws: &UserWorkspace, model_url: &str) -> Rendered {
    let cfg = OperatorConfig::default();
    let policy = cfg.policy(ws.spec.plan);
    ws.validate(&policy).expect("the tenant is valid");
    assert_eq!(ws.effective_runtime(&policy), Runtime::Openclaw);
    let inputs = AgentInputs {
        workspace: ws,
        config: &cfg,
        policy: policy.clone(),
        runtime: Runtime::Openclaw,
        model: model_target(ws, &cfg, Some(model_url.to_string())),
        model_endpoint: Some(("shared".into(), 8000)),
        awake: true,
    };
    let cm = build_config_map(&inputs).expect("ConfigMap");
    let text = cm
        .data
        .as_ref()
        .and_then(|d| d.get(names::OPENCLAW_CONFIG_FILE))
        .expect("openclaw.json in the ConfigMap");
    let deployment = build_deployment(&inputs, &config_hash(&cm)).expect("Deployment");
    let pod = deployment
        .spec
        .and_then(|s| s.template.spec)
        .expect("pod spec");
    let container = pod
        .containers
        .into_iter()
        .find(|c| c.name == "agent")
        .expect("agent container");
    Rendered {
        config: serde_json::from_str(text).expect("openclaw.json is JSON"),
        env: container.env.unwrap_or_default(),
    }
}

/// A temp root standing in for the pod's filesystem, and the cached runtime standing in for
/// the image's `/opt/openclaw`.
struct PodFs {
    root: tempfile::TempDir,
    runtime: PathBuf,
}

impl PodFs {
    fn new(runtime: &Path) -> Self {
        let fs = PodFs {
            root: tempfile::tempdir().expect("temp dir"),
            runtime: runtime.to_path_buf(),
        };
        // The mount points exist; the volumes behind them start empty.
        for mount in [names::DATA_MOUNT, openclaw::TMP_DIR] {
            std::fs::create_dir_all(fs.path(mount)).expect("mount point");
        }
        fs
    }

    /// Maps a container path to its place under the temp root (only the pod's mounts move),
    /// or in the cached runtime (the image's plugins).
    fn path(&self, container_path: &str) -> String {
        if let Some(rest) = container_path.strip_prefix(openclaw::RUNTIME_DIR)
            && (rest.is_empty() || rest.starts_with('/'))
        {
            return format!("{}{rest}", self.runtime.display());
        }
        for mount in [names::DATA_MOUNT, names::CONFIG_MOUNT, openclaw::TMP_DIR] {
            if container_path == mount || container_path.starts_with(&format!("{mount}/")) {
                return format!("{}{container_path}", self.root.path().display());
            }
        }
        container_path.to_string()
    }

    /// The config with its container paths moved and the gateway on `port`.
    fn localize(&self, config: &Value, port: u16) -> Value {
        fn walk(v: &Value, fs: &PodFs) -> Value {
            match v {
                Value::String(s) => Value::String(fs.path(s)),
                Value::Array(a) => Value::Array(a.iter().map(|x| walk(x, fs)).collect()),
                Value::Object(o) => {
                    Value::Object(o.iter().map(|(k, x)| (k.clone(), walk(x, fs))).collect())
                }
                other => other.clone(),
            }
        }
        let mut out = walk(config, self);
        out["gateway"]["port"] = json!(port);
        out
    }

    /// Writes the ConfigMap volume as the kubelet does: `..<ts>/openclaw.json`, a `..data`
    /// symlink to it, and `openclaw.json -> ..data/openclaw.json`; an update swaps `..data`.
    fn write_config(&self, config: &Value) {
        let dir = PathBuf::from(self.path(names::CONFIG_MOUNT));
        std::fs::create_dir_all(&dir).expect("config dir");
        let stamp = format!("..{}", rand::random::<u64>());
        std::fs::create_dir(dir.join(&stamp)).expect("timestamped dir");
        let file = dir.join(&stamp).join(names::OPENCLAW_CONFIG_FILE);
        std::fs::write(&file, serde_json::to_vec_pretty(config).expect("JSON"))
            .expect("write config");
        let mut perms = std::fs::metadata(&file).expect("metadata").permissions();
        perms.set_readonly(true);
        std::fs::set_permissions(&file, perms).expect("read-only config");
        let previous = std::fs::read_link(dir.join("..data")).ok();
        let tmp_link = dir.join("..data_tmp");
        let _ = std::fs::remove_file(&tmp_link);
        std::os::unix::fs::symlink(&stamp, &tmp_link).expect("..data_tmp");
        std::fs::rename(&tmp_link, dir.join("..data")).expect("swap ..data");
        // The kubelet then deletes the old version; that is the event OpenClaw's watcher sees.
        if let Some(previous) = previous {
            std::fs::remove_dir_all(dir.join(previous)).expect("removing the old config version");
        }
        let link = dir.join(names::OPENCLAW_CONFIG_FILE);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(format!("..data/{}", names::OPENCLAW_CONFIG_FILE), &link)
                .expect("config link");
        }
    }

    /// The env the kubelet would give the container: values with container paths moved,
    /// `secretKeyRef`s filled from `secrets` (name -> key -> value).
    fn env(&self, env: &[EnvVar], secrets: &BTreeMap<(&str, &str), &str>) -> Vec<(String, String)> {
        env.iter()
            .map(|e| {
                let value = match (&e.value, &e.value_from) {
                    (Some(v), _) => self.path(v),
                    (None, Some(from)) => {
                        let sel = from
                            .secret_key_ref
                            .as_ref()
                            .expect("only secretKeyRef env sources");
                        secrets
                            .get(&(sel.name.as_str(), sel.key.as_str()))
                            .unwrap_or_else(|| {
                                panic!("no Secret value for {}/{}", sel.name, sel.key)
                            })
                            .to_string()
                    }
                    (None, None) => String::new(),
                };
                (e.name.clone(), value)
            })
            .collect()
    }
}

/// A running gateway; killed on drop.
struct Gateway {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Gateway {
    /// Starts the gateway through the image's entrypoint (`agent-image/openclaw/entrypoint.sh`),
    /// with the cached runtime in place of `/opt/openclaw`.
    async fn start(
        runtime: &Path,
        env: &[(String, String)],
        port: u16,
        log: PathBuf,
    ) -> (Gateway, Duration) {
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("gateway log");
        let started = Instant::now();
        let entrypoint = clawdbot_testkit::repo_root().join("agent-image/openclaw/entrypoint.sh");
        let child = Command::new("sh")
            .arg(entrypoint)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("OPENCLAW_RUNTIME", runtime)
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("log handle"))
            .stderr(log_file)
            .kill_on_drop(true)
            // Its own process group, so that drop can take its workers down with it.
            .process_group(0)
            .spawn()
            .expect("spawning the OpenClaw gateway");
        let mut gw = Gateway { child, port, log };
        gw.wait_ready().await;
        (gw, started.elapsed())
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for `/readyz` (what the pod's readiness probe asks), failing fast if it exits.
    async fn wait_ready(&mut self) {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + START_TIMEOUT;
        let mut delay = Duration::from_millis(100);
        loop {
            if let Ok(r) = client
                .get(self.url("/readyz"))
                .timeout(Duration::from_secs(5))
                .send()
                .await
                && r.status().is_success()
                && r.json::<Value>().await.is_ok_and(|v| v["ready"] == true)
            {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "the gateway exited with {status} before it was ready:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "the gateway was not ready within {START_TIMEOUT:?}:\n{}",
                self.log()
            );
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_millis(500));
        }
    }

    /// SIGTERM, as the kubelet sends, then waits for the exit.
    async fn stop(mut self) -> Duration {
        let started = Instant::now();
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        match tokio::time::timeout(Duration::from_secs(60), self.child.wait()).await {
            Ok(status) => {
                let status = status.expect("wait");
                assert!(
                    status.success() || status.code().is_none(),
                    "gateway exit {status}:\n{}",
                    self.log()
                );
            }
            Err(_) => panic!(
                "the gateway did not stop within 60 s of SIGTERM:\n{}",
                self.log()
            ),
        }
        started.elapsed()
    }

    /// Resident memory of the gateway and its worker processes, in MiB.
    fn rss_mib(&self) -> (u64, u64) {
        let Some(pid) = self.child.id() else {
            return (0, 0);
        };
        let main = rss_kib(pid);
        let children: u64 = child_pids(pid).into_iter().map(rss_kib).sum();
        (main / 1024, (main + children) / 1024)
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        // The gateway's worker processes share its process group; a failed test must not
        // leave them running.
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .status();
        }
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .map(String::from)
        })
        .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

fn child_pids(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .flat_map(|p| std::iter::once(p).chain(child_pids(p)))
        .collect()
}

/// A byte-for-byte TCP relay in front of the model server that keeps what clients sent.
struct RecordingRelay {
    port: u16,
    sent: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl RecordingRelay {
    async fn start(upstream: u16) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("relay bind");
        let port = listener.local_addr().expect("relay addr").port();
        let sent: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
        let record = sent.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let record = record.clone();
                tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                    else {
                        return;
                    };
                    let index = {
                        let mut r = record.lock().expect("relay record");
                        r.push(Vec::new());
                        r.len() - 1
                    };
                    let (mut cr, mut cw) = client.into_split();
                    let (mut sr, mut sw) = server.into_split();
                    let up = async {
                        let mut buf = vec![0u8; 64 * 1024];
                        while let Ok(n) = cr.read(&mut buf).await {
                            if n == 0 || sw.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                            record.lock().expect("relay record")[index]
                                .extend_from_slice(&buf[..n]);
                        }
                        let _ = sw.shutdown().await;
                    };
                    let down = async {
                        let _ = tokio::io::copy(&mut sr, &mut cw).await;
                        let _ = cw.shutdown().await;
                    };
                    tokio::join!(up, down);
                });
            }
        });
        RecordingRelay { port, sent }
    }

    fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.port)
    }

    /// Bodies of the chat completion requests seen so far, oldest first.
    fn chat_requests(&self) -> Vec<Value> {
        let streams = self.sent.lock().expect("relay record").clone();
        streams
            .iter()
            .flat_map(|s| parse_requests(s))
            .filter(|(path, _)| path.ends_with("/chat/completions"))
            .map(|(_, b)| b)
            .collect()
    }
}

/// Splits an HTTP/1.1 byte stream into `(path, JSON body)` requests (Content-Length or chunked).
fn parse_requests(mut bytes: &[u8]) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    while let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
        let head = String::from_utf8_lossy(&bytes[..end]).to_string();
        let mut rest = &bytes[end + 4..];
        let path = head
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_string();
        let header = |name: &str| {
            head.lines()
                .find(|l| l.to_ascii_lowercase().starts_with(&format!("{name}:")))
                .map(|l| l[name.len() + 1..].trim().to_string())
        };
        let mut body = Vec::new();
        if let Some(len) = header("content-length").and_then(|l| l.parse::<usize>().ok()) {
            let len = len.min(rest.len());
            body.extend_from_slice(&rest[..len]);
            rest = &rest[len..];
        } else if header("transfer-encoding").is_some_and(|t| t.contains("chunked")) {
            while let Some(line_end) = rest.windows(2).position(|w| w == b"\r\n") {
                let size =
                    usize::from_str_radix(String::from_utf8_lossy(&rest[..line_end]).trim(), 16)
                        .unwrap_or(0);
                rest = &rest[line_end + 2..];
                if size == 0 {
                    rest = rest.get(2..).unwrap_or_default();
                    break;
                }
                let size = size.min(rest.len());
                body.extend_from_slice(&rest[..size]);
                rest = rest.get(size + 2..).unwrap_or_default();
            }
        }
        out.push((path, serde_json::from_slice(&body).unwrap_or(Value::Null)));
        bytes = rest;
    }
    out
}

/// All text of a model request's messages (system prompt, history, the new message).
fn prompt_text(request: &Value) -> String {
    let mut text = String::new();
    for m in request["messages"].as_array().into_iter().flatten() {
        match &m["content"] {
            Value::String(s) => text.push_str(s),
            Value::Array(parts) => {
                for p in parts {
                    text.push_str(p["text"].as_str().unwrap_or_default());
                }
            }
            _ => {}
        }
        text.push('\n');
    }
    text
}

/// Tokens of `text` by the model's own tokenizer (llama-cpp-python's `/extras/tokenize`).
async fn count_tokens(model: &model_server::ModelServer, text: &str) -> Option<usize> {
    let url = format!("http://127.0.0.1:{}/extras/tokenize", model.port());
    let v: Value = reqwest::Client::new()
        .post(url)
        .json(&json!({"input": text}))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    v["tokens"].as_array().map(Vec::len)
}

/// One message as the router sends it; returns the parsed reply and the time it took.
async fn send(
    gw: &Gateway,
    token: &str,
    session: &str,
    text: &str,
) -> (reqwest::StatusCode, String, Duration) {
    let started = Instant::now();
    let response = reqwest::Client::new()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(token)
        .header(SESSION_KEY_HEADER, session)
        .json(&json!({"model": "openclaw", "messages": [{"role": "user", "content": text}]}))
        .timeout(TURN_TIMEOUT)
        .send()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "POST /v1/chat/completions ({session}): {e}\n{}\n{}",
                gw.log(),
                DIAG.lock().map(|d| d.clone()).unwrap_or_default()
            )
        });
    let status = response.status();
    let body = response.text().await.expect("response body");
    (status, body, started.elapsed())
}

/// What the model saw so far (requests through the relay, the model server's log tail), kept
/// current by a background task so that a timed-out turn can say where the time went.
static DIAG: Mutex<String> = Mutex::new(String::new());

fn spawn_diagnostics(
    relay: &RecordingRelay,
    model: &model_server::ModelServer,
) -> tokio::task::JoinHandle<()> {
    let sent = relay.sent.clone();
    let log = model.log_path();
    tokio::spawn(async move {
        loop {
            let streams = sent.lock().map(|s| s.clone()).unwrap_or_default();
            let mut text = String::from("model requests:\n");
            for (path, body) in streams.iter().flat_map(|s| parse_requests(s)) {
                text.push_str(&format!(
                    "  {path} prompt {} bytes, max_tokens {}, stream {}\n",
                    prompt_text(&body).len(),
                    body.get("max_tokens")
                        .or(body.get("max_completion_tokens"))
                        .unwrap_or(&Value::Null),
                    body["stream"]
                ));
            }
            let server_log = std::fs::read_to_string(&log).unwrap_or_default();
            if let Ok(dir) = std::env::var("OPENCLAW_E2E_DUMP") {
                let _ = std::fs::create_dir_all(&dir);
                let _ = std::fs::write(format!("{dir}/model.log"), &server_log);
                for (i, (_, body)) in streams.iter().flat_map(|s| parse_requests(s)).enumerate() {
                    let _ = std::fs::write(format!("{dir}/request-{i}.json"), body.to_string());
                }
            }
            let tail: String = server_log
                .lines()
                .filter(|l| l.contains("perf_context") || l.contains("POST"))
                .collect::<Vec<_>>()
                .join("\n");
            text.push_str(&format!(
                "model server:\n{}\n",
                &tail[tail.len().saturating_sub(3000)..]
            ));
            if let Ok(mut d) = DIAG.lock() {
                *d = text;
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    })
}

/// A reply the router can forward: 200, OpenAI JSON, one non-empty assistant message.
fn assert_well_formed(
    status: reqwest::StatusCode,
    body: &str,
    gw: &Gateway,
) -> ChatCompletionResponse {
    assert_eq!(status, 200, "{body}\n{}", gw.log());
    let reply: ChatCompletionResponse =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert_eq!(reply.object, "chat.completion");
    let text = reply.reply_text().unwrap_or_default();
    assert!(!text.trim().is_empty(), "empty reply: {body}");
    reply
}

/// Polls the gateway log until `needle` appears after byte `from`.
async fn wait_for_log(gw: &Gateway, from: usize, needle: &str, timeout: Duration) {
    clawdbot_testkit::wait_for(needle, timeout, || async {
        let log = gw.log();
        let fresh = log.get(from..).unwrap_or_default();
        if fresh.contains("config reload skipped") {
            panic!("the gateway refused the new config:\n{fresh}");
        }
        fresh.contains(needle).then_some(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openclaw_serves_the_router_with_the_rendered_config() {
    clawdbot_testkit::init_tracing();
    let test_started = Instant::now();
    let runtime = tokio::task::spawn_blocking(install_openclaw)
        .await
        .expect("install task");
    // SmolLM2 supports 8k; OpenClaw admits a full prompt only with room above its ~3k estimate.
    let model = model_server::start_with(model_server::Options {
        n_ctx: 8192,
        ..Default::default()
    })
    .await;
    let relay = RecordingRelay::start(model.port()).await;
    let diagnostics = spawn_diagnostics(&relay, &model);

    // The operator's rendering of a real UserWorkspace.
    let ws = workspace(TENANT);
    let rendered = render_as_operator(&ws, &relay.base_url());
    assert_eq!(
        rendered.config["agents"]["defaults"]["model"]["primary"],
        "platform/smollm2"
    );
    assert!(!rendered.config.to_string().contains(GATEWAY_TOKEN));

    let fs = PodFs::new(&runtime);
    let port = model_server::free_port();
    fs.write_config(&fs.localize(&rendered.config, port));
    let secrets = BTreeMap::from([(
        (
            names::gateway_token_secret("e2e").leak() as &str,
            names::GATEWAY_TOKEN_KEY,
        ),
        GATEWAY_TOKEN,
    )]);
    let env = fs.env(&rendered.env, &secrets);
    let log = fs.root.path().join("gateway.log");

    let (gw, startup) = Gateway::start(&runtime, &env, port, log.clone()).await;
    let (idle_main, idle_total) = gw.rss_mib();

    // Only the router's token opens the gateway.
    let (status, body, _) = send(&gw, "not-the-token", "telegram:dm:4242", "hello").await;
    assert_eq!(status, 401, "{body}");
    let no_token = reqwest::Client::new()
        .post(gw.url("/v1/chat/completions"))
        .json(&json!({"model": "openclaw", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .expect("request without a token");
    assert_eq!(no_token.status(), 401);
    assert!(
        relay.chat_requests().is_empty(),
        "a refused request reached the model"
    );

    // First message of a conversation.
    let marker = "Zanzibar";
    let session = "telegram:dm:4242";
    let (status, body, turn1) = send(
        &gw,
        GATEWAY_TOKEN,
        session,
        &format!("Hi! My name is {marker}."),
    )
    .await;
    let reply1 = assert_well_formed(status, &body, &gw);
    let requests = relay.chat_requests();
    let first = requests.last().expect("the turn reached the model").clone();
    // The rendered sampling settings reach the model on the wire.
    assert_eq!(first["model"], "smollm2", "{first}");
    assert_eq!(first["temperature"], json!(0.2), "{first}");
    // The platform provider sends the cap as `max_tokens`, the field llama.cpp, vLLM and
    // Ollama read (OpenClaw's default `max_completion_tokens` is ignored by llama.cpp).
    assert_eq!(first["max_tokens"], json!(MAX_TOKENS), "{first}");
    assert!(first.get("max_completion_tokens").is_none(), "{first}");
    let prompt1 = prompt_text(&first);
    assert!(prompt1.contains(marker));

    // Second message, same session: the agent keeps the history, the router sends only the new text.
    let (status, body, turn2) = send(&gw, GATEWAY_TOKEN, session, "What is my name?").await;
    assert_well_formed(status, &body, &gw);
    let second = relay
        .chat_requests()
        .last()
        .cloned()
        .expect("second request");
    let prompt2 = prompt_text(&second);
    assert!(
        prompt2.contains(marker) && prompt2.contains("What is my name?"),
        "history missing from the second turn"
    );

    let (busy_main, busy_total) = gw.rss_mib();

    // A config change reaches the running gateway: a new temperature through the ConfigMap's
    // atomic symlink swap, applied without a restart.
    let mut ws2 = ws.clone();
    ws2.spec.model.temperature = Some(0.7);
    let rendered2 = render_as_operator(&ws2, &relay.base_url());
    let log_len = gw.log().len();
    fs.write_config(&fs.localize(&rendered2.config, port));
    wait_for_log(
        &gw,
        log_len,
        "config hot reload applied",
        Duration::from_secs(60),
    )
    .await;

    // Restart (a pod replaced or woken from hibernation): the session survives on the volume.
    let stopped_in = gw.stop().await;
    // A new pod gets a fresh emptyDir for /tmp (logs, compile cache); the volume stays.
    std::fs::remove_dir_all(fs.path(openclaw::TMP_DIR)).expect("clearing /tmp");
    std::fs::create_dir_all(fs.path(openclaw::TMP_DIR)).expect("fresh /tmp");
    let (gw, restart) = Gateway::start(&runtime, &env, port, log.clone()).await;
    let (status, body, turn3) = send(&gw, GATEWAY_TOKEN, session, "Thanks. Say hi again.").await;
    assert_well_formed(status, &body, &gw);
    let third = relay
        .chat_requests()
        .last()
        .cloned()
        .expect("third request");
    assert_eq!(
        third["temperature"],
        json!(0.7),
        "the changed config did not reach the model"
    );
    let prompt3 = prompt_text(&third);
    assert!(
        prompt3.contains(marker),
        "the session was lost in the restart"
    );

    // Another conversation does not see this one.
    let (status, body, _) = send(&gw, GATEWAY_TOKEN, "telegram:dm:9999", "Hello.").await;
    assert_well_formed(status, &body, &gw);
    let other = prompt_text(relay.chat_requests().last().expect("fourth request"));
    assert!(!other.contains(marker), "sessions leaked into each other");

    // The conversations, read as the router reads them (the image's plugin, the router's
    // token), after the restart: what the user's dashboard and data export show.
    check_conversations(&gw, session, marker).await;

    // Overhead over a direct model call with the same message and cap.
    let direct_started = Instant::now();
    let direct: Value = reqwest::Client::new()
        .post(format!("{}/chat/completions", model.base_url()))
        .json(&json!({"model": "smollm2", "messages": [{"role": "user", "content": "Thanks. Say hi again."}],
                      "max_tokens": MAX_TOKENS, "temperature": 0.7}))
        .timeout(TURN_TIMEOUT)
        .send()
        .await
        .expect("direct model call")
        .json()
        .await
        .expect("direct model reply");
    let direct_time = direct_started.elapsed();
    assert!(direct["choices"][0]["message"]["content"].is_string());

    let usage = reply1.usage.unwrap_or_default();
    let tokens1 = count_tokens(&model, &prompt1).await.unwrap_or(0);
    let tokens3 = count_tokens(&model, &prompt3).await.unwrap_or(0);
    eprintln!(
        "openclaw figures:\n  start-up to /readyz: first {startup:.1?}, restart {restart:.1?}; SIGTERM to exit {stopped_in:.1?}\n  RSS idle: gateway {idle_main} MiB, with workers {idle_total} MiB\n  RSS after turns: gateway {busy_main} MiB, with workers {busy_total} MiB\n  prompt per turn: {} bytes, {tokens1} tokens (SmolLM2 tokenizer), {} estimated; after 3 turns {} bytes, {tokens3} tokens\n  reported usage: {usage:?}\n  turn times: first {turn1:.1?}, second {turn2:.1?}, after restart {turn3:.1?}; direct model call {direct_time:.1?}\n  whole test {:.1?}",
        prompt1.len(),
        estimate_tokens(&prompt1),
        prompt3.len(),
        test_started.elapsed(),
    );
    gw.stop().await;
    diagnostics.abort();
}

async fn get_json<T: serde::de::DeserializeOwned>(
    gw: &Gateway,
    path: &str,
    token: &str,
) -> (u16, String, Option<T>) {
    let resp = reqwest::Client::new()
        .get(gw.url(path))
        .bearer_auth(token)
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .expect("conversations request");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    let parsed = serde_json::from_str(&text).ok();
    (status, text, parsed)
}

/// The conversations API (`clawdbot_api::conversations`) as OpenClaw serves it through the
/// image's `clawdbot-conversations` plugin: the shapes the lite agent answers, so the router
/// does not branch on the runtime.
async fn check_conversations(gw: &Gateway, session: &str, marker: &str) {
    let (status, body, _) = get_json::<Value>(gw, SESSIONS_PATH, "not-the-token").await;
    assert_eq!(status, 401, "{body}");

    let (status, body, list) = get_json::<SessionList>(gw, SESSIONS_PATH, GATEWAY_TOKEN).await;
    let list = list.unwrap_or_else(|| panic!("HTTP {status}: {body}"));
    let keys: Vec<&str> = list.sessions.iter().map(|s| s.key.as_str()).collect();
    assert!(
        keys.contains(&session) && keys.contains(&"telegram:dm:9999"),
        "{keys:?}"
    );
    let ours = list
        .sessions
        .iter()
        .find(|s| s.key == session)
        .expect("listed");
    assert_eq!(
        (
            ours.channel.as_str(),
            ours.kind.as_str(),
            ours.peer.as_str()
        ),
        ("telegram", "dm", "4242")
    );
    // Three turns: at least the three messages and three replies.
    assert!(ours.message_count >= 6, "{ours:?}");
    assert!(ours.last_activity.is_some());
    let (_, body, other_channel) = get_json::<SessionList>(
        gw,
        &format!("{SESSIONS_PATH}?channel=whatsapp"),
        GATEWAY_TOKEN,
    )
    .await;
    assert!(other_channel.expect(&body).sessions.is_empty());

    let (status, body, page) = get_json::<MessagePage>(
        gw,
        &format!("{MESSAGES_PATH}?key={session}&limit=2"),
        GATEWAY_TOKEN,
    )
    .await;
    let page = page.unwrap_or_else(|| panic!("HTTP {status}: {body}"));
    assert_eq!(page.messages.len(), 2, "{body}");
    assert_eq!(
        page.messages[0].role,
        Role::Assistant,
        "newest first: {body}"
    );
    let last_user = page
        .messages
        .iter()
        .find(|m| m.role == Role::User)
        .expect("a user message");
    assert_eq!(last_user.content, "Thanks. Say hi again.");
    let cursor = page.next_before.clone().expect("older pages");
    let (_, body, older) = get_json::<MessagePage>(
        gw,
        &format!("{MESSAGES_PATH}?key={session}&limit=200&before={cursor}"),
        GATEWAY_TOKEN,
    )
    .await;
    let older = older.expect(&body);
    assert!(
        older.messages.iter().all(|m| !page.messages.contains(m)),
        "pages overlap"
    );
    let (status, _, _) = get_json::<Value>(
        gw,
        &format!("{MESSAGES_PATH}?key=telegram:dm:1"),
        GATEWAY_TOKEN,
    )
    .await;
    assert_eq!(status, 404);

    let (status, body, export) =
        get_json::<ConversationExport>(gw, EXPORT_PATH, GATEWAY_TOKEN).await;
    let export = export.unwrap_or_else(|| panic!("HTTP {status}: {body}"));
    assert_eq!(export.runtime, "openclaw");
    assert!(!body.contains(GATEWAY_TOKEN), "the token is not exported");
    let ours = export
        .sessions
        .iter()
        .find(|s| s.session.key == session)
        .expect("exported");
    let said: Vec<&str> = ours
        .messages
        .iter()
        .filter(|m| m.role == Role::User)
        .map(|m| m.content.as_str())
        .collect();
    assert_eq!(
        said,
        [
            format!("Hi! My name is {marker}.").as_str(),
            "What is my name?",
            "Thanks. Say hi again."
        ],
        "oldest first"
    );
}

/// Every plan x provider the operator can render is a config the real OpenClaw accepts
/// (`openclaw config validate`), and the env it reads is complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rendered_config_passes_openclaw_validation() {
    let runtime = tokio::task::spawn_blocking(install_openclaw)
        .await
        .expect("install task");
    let (node, entry) = node_and_entry(&runtime);
    let fs = PodFs::new(&runtime);
    let cfg = OperatorConfig::default();
    let mut checked = 0;
    for plan in ["free", "pro", "team"] {
        for (provider, source) in [
            ("platform", "endpointRef: {name: shared}"),
            ("openai", "name: gpt-4o-mini"),
            ("anthropic", "name: claude-sonnet-4-5"),
        ] {
            for web_search in [false, true] {
                let name = if provider == "platform" {
                    "qwen2.5-7b-instruct"
                } else {
                    ""
                };
                let ws = workspace(&format!(
                    r#"
apiVersion: clawdbot.io/v1alpha1
kind: UserWorkspace
metadata: {{name: v, namespace: tenants, uid: 6c1b7a0e-0000-4000-8000-000000000002}}
spec:
  ownerId: user-v
  plan: {plan}
  runtime: openclaw
  keysSecretRef: {{name: v-keys}}
  features: {{webSearch: {web_search}}}
  model:
    provider: {provider}
    {}
    temperature: 0.5
    contextWindow: 32768
"#,
                    if provider == "platform" {
                        format!("name: {name}\n    {source}")
                    } else {
                        source.to_string()
                    }
                ));
                let policy = cfg.policy(ws.spec.plan);
                let model = model_target(
                    &ws,
                    &cfg,
                    Some("http://mep-shared.tenants.svc:8000/v1".into()),
                );
                let input = RenderInput {
                    workspace: &ws,
                    policy: &policy,
                    model,
                    web_search_url: (web_search && policy.allows_web_search)
                        .then(|| "http://searxng.clawdbot-system.svc:8080".to_string()),
                };
                let config = match openclaw::render_config(&input) {
                    Ok(c) => c,
                    Err(e) => {
                        // Only the plan rules refuse here, with a reason a person can act on.
                        assert!(
                            e.contains(&format!("not available on the {plan} plan")),
                            "{plan}/{provider}: {e}"
                        );
                        continue;
                    }
                };
                let path = PathBuf::from(fs.path(&format!(
                    "{}/{plan}-{provider}-{web_search}.json",
                    names::CONFIG_MOUNT
                )));
                std::fs::create_dir_all(path.parent().expect("parent")).expect("dir");
                std::fs::write(
                    &path,
                    serde_json::to_vec_pretty(&fs.localize(&config, 18789)).expect("JSON"),
                )
                .expect("write");
                let secrets = BTreeMap::from([
                    (("claw-v-gateway", "token"), "t"),
                    (("v-keys", "OPENAI_API_KEY"), "sk-test"),
                    (("v-keys", "ANTHROPIC_API_KEY"), "sk-ant-test"),
                ]);
                let mut env = fs.env(&openclaw::container_env(&input), &secrets);
                env.retain(|(k, _)| k != "OPENCLAW_CONFIG_PATH");
                for (k, v) in &env {
                    if matches!(k.as_str(), "HOME" | "TMPDIR" | "OPENCLAW_STATE_DIR") {
                        std::fs::create_dir_all(v).expect("dir");
                    }
                }
                let out = Command::new(&node)
                    .arg(&entry)
                    .args(["config", "validate", "--json"])
                    .env_clear()
                    .env("PATH", "/usr/bin:/bin")
                    .env("OPENCLAW_CONFIG_PATH", &path)
                    .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                    .output()
                    .await
                    .expect("openclaw config validate");
                let stdout = String::from_utf8_lossy(&out.stdout);
                assert!(
                    out.status.success(),
                    "{plan}/{provider}/web={web_search}: openclaw rejected the rendered config:\n{stdout}\n{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                let verdict: Value = serde_json::from_str(&stdout).unwrap_or(Value::Null);
                assert_eq!(
                    verdict["valid"], true,
                    "{plan}/{provider}/web={web_search}: {stdout}"
                );
                checked += 1;
            }
        }
    }
    // free: platform only (with and without the web search flag refused: 1); pro and team: all.
    assert!(checked >= 13, "only {checked} combinations validated");
}
