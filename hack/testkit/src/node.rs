//! The real single-node Kubernetes of `hack/dev-env.sh up`: kubelet, containerd and kube-proxy
//! on this machine, pods on a bridge private to it. Tests whose pods must really run use a
//! namespace from [`fresh_namespace`]; the images come from `hack/build-images.sh`.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::Client;
use kube::api::{Api, ListParams, PostParams};

/// The namespace annotation of the API server's PodNodeSelector admission plugin: a pod in an
/// annotated namespace only fits a node with this label, which no node has, so it stays
/// Pending. Tests that play the kubelet's part themselves (marking pods Ready) use it, so the
/// real kubelet does not race them.
pub const NO_NODE_ANNOTATION: &str = "scheduler.alpha.kubernetes.io/node-selector";
pub const NO_NODE_SELECTOR: &str = "clawdbot.io/no-kubelet=true";

/// The host's address on the pods' bridge: a server a pod must reach (a fake model, the
/// Telegram fake) listens here. Panics, saying what to do, when the node is not running.
pub fn host_ip() -> String {
    crate::env::get().node_host_ip.clone().unwrap_or_else(|| {
        panic!(
            "this test needs the real node (kubelet, containerd): `hack/dev-env.sh up` starts it \
             unless CLAWDBOT_NODE=0"
        )
    })
}

/// Images the node's containerd holds (`ctr -n k8s.io images ls -q`).
pub fn images() -> Vec<String> {
    let address = crate::env::get()
        .containerd_address
        .clone()
        .unwrap_or_else(|| panic!("no node: `hack/dev-env.sh up` starts it"));
    let out = std::process::Command::new("ctr")
        .args(["--address", &address, "-n", "k8s.io", "images", "ls", "-q"])
        .output()
        .expect("running ctr");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// Panics with the command that builds it when the node lacks `reference`.
pub fn require_image(reference: &str, build: &str) {
    assert!(
        images().iter().any(|i| i == reference),
        "the node has no image {reference}: run `hack/build-images.sh {build}` (hack/test.sh does)"
    );
}

/// A fresh namespace whose pods really run on the node.
pub async fn fresh_namespace(client: &Client, prefix: &str) -> String {
    host_ip();
    let name = format!("{prefix}-{:08x}", rand::random::<u32>());
    let ns: Namespace = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}
    }))
    .expect("namespace");
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("create namespace");
    name
}

/// Deletes a namespace made by [`fresh_namespace`] at the end of a passing test: its pods
/// really run (an OpenClaw gateway takes a good part of a core), so leaving them would slow
/// every later test on this machine. A failing test keeps its namespace for diagnosis.
pub async fn delete_namespace(client: &Client, ns: &str) {
    let _ = Api::<Namespace>::all(client.clone())
        .delete(ns, &kube::api::DeleteParams::default())
        .await;
}

/// The pods of `ns` matching `selector`.
pub async fn pods(client: &Client, ns: &str, selector: &str) -> Vec<Pod> {
    Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(selector))
        .await
        .map(|l| l.items)
        .unwrap_or_default()
}

/// Whether a pod is Ready (the kubelet's readiness probe passed).
pub fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Whether a pod is on its way out with its containers stopped: its deletion asked for and
/// none of them running. The kubelet deletes the object itself once it has cleaned up after
/// the pod (volumes, cgroup), which on a busy machine has come more than a minute after the
/// container stopped (seen in CI: a hibernated agent's pod stopped at once, still listed 56 s
/// later).
pub fn pod_stopped(pod: &Pod) -> bool {
    let running = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c.state.as_ref().is_none_or(|s| s.running.is_some()))
        });
    pod.metadata.deletion_timestamp.is_some() && !running
}

/// The container logs the kubelet wrote for a pod (`kubectl logs` needs the kubelet on a
/// non-loopback address; the files are on this machine): for failure messages.
pub fn pod_logs(pod: &Pod) -> String {
    let meta = &pod.metadata;
    let dir = format!(
        "/var/log/pods/{}_{}_{}",
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default(),
        meta.uid.as_deref().unwrap_or_default()
    );
    let mut out = String::new();
    for container in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        for file in std::fs::read_dir(container.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            out.push_str(&format!("--- {}\n", file.path().display()));
            out.push_str(&std::fs::read_to_string(file.path()).unwrap_or_default());
        }
    }
    out
}

/// How long a lite agent pod may take from creation to Ready on a busy 2-core machine.
pub const POD_START: Duration = Duration::from_secs(90);

/// Gives an image the node holds a second name (`ctr images tag`), as a push of it would.
pub fn tag_image(source: &str, target: &str) {
    let address = crate::env::get()
        .containerd_address
        .clone()
        .unwrap_or_else(|| panic!("no node: `hack/dev-env.sh up` starts it"));
    let out = std::process::Command::new("ctr")
        .args([
            "--address",
            &address,
            "-n",
            "k8s.io",
            "images",
            "tag",
            "--force",
            source,
            target,
        ])
        .output()
        .expect("running ctr");
    assert!(
        out.status.success(),
        "ctr images tag {source} {target}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A TCP forwarder on the node's bridge address to a server on this machine's loopback (the
/// shared Postgres and Redis listen there only): pods reach it at [`Forward::addr`] for as long
/// as this value lives, so a test that installs the chart can give its pods store URLs without
/// opening the shared servers to every pod on the node.
pub struct Forward {
    addr: std::net::SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Forward {
    /// Listens on a free port of the bridge address and forwards each connection to `target`
    /// (`host:port`).
    pub async fn start(target: &str) -> Forward {
        let listener = tokio::net::TcpListener::bind((host_ip().as_str(), 0))
            .await
            .expect("bind on the node's bridge address");
        let addr = listener.local_addr().expect("forwarder address");
        let target = target.to_string();
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let target = target.clone();
                tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Forward { addr, task }
    }

    /// Where pods reach the target.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }
}

impl Drop for Forward {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `host:port` of a URL such as `postgres://u:p@127.0.0.1:15432/db` or `redis://127.0.0.1:16379`.
pub fn host_port(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or(rest);
    authority
        .rsplit_once('@')
        .map_or(authority, |(_, h)| h)
        .to_string()
}

/// Sends one web chat message to the router at `base` with the chat `token` and returns the
/// whole event stream (`event: typing`, `event: reply` ...) once the router ends it.
pub async fn web_chat(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    id: &str,
    text: &str,
    timeout: std::time::Duration,
) -> String {
    http.post(format!("{base}/api/v1/web/messages"))
        .bearer_auth(token)
        .json(&serde_json::json!({"id": id, "text": text}))
        .timeout(timeout)
        .send()
        .await
        .expect("web message")
        .text()
        .await
        .expect("event stream")
}
