//! Harness for the operator's integration tests: a real control plane, an operator replica
//! running in-process against it, and the kubelet's one job we need (marking pods ready).

// Test code: a panic with its message is the failure report.
#![allow(clippy::unwrap_used)]
#![allow(dead_code)]

use std::time::Duration;

use clawdbot_api::workspace::UserWorkspace;
use clawdbot_operator::config::OperatorConfig;
use clawdbot_operator::run::{Settings, run, run_with_metrics};
use clawdbot_testkit::wait_for;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const TIMEOUT: Duration = Duration::from_secs(60);

pub struct Operator {
    pub identity: String,
    pub metrics_url: String,
    stop: Option<oneshot::Sender<()>>,
    pub handle: JoinHandle<clawdbot_operator::Result<()>>,
}

impl Operator {
    /// Stops gracefully (releases the lease) and returns the outcome.
    pub async fn stop(mut self) -> clawdbot_operator::Result<()> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        (&mut self.handle).await.expect("operator task")
    }

    /// Kills it mid-flight, as a crash would (the lease is not released).
    pub fn kill(self) {
        self.handle.abort();
    }

    pub async fn metrics(&self) -> String {
        reqwest::get(format!("{}/metrics", self.metrics_url))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("body")
    }

    pub async fn readyz(&self) -> String {
        reqwest::get(format!("{}/readyz", self.metrics_url))
            .await
            .expect("readyz")
            .text()
            .await
            .expect("body")
    }
}

pub async fn setup(prefix: &str) -> (Client, String) {
    clawdbot_testkit::init_tracing();
    let client = clawdbot_testkit::kube::client().await;
    clawdbot_testkit::kube::install_crds(&client).await;
    let ns = clawdbot_testkit::kube::fresh_namespace(&client, prefix).await;
    (client, ns)
}

/// The operators' leader lease: renewed 2 s before it runs out (a third of it), so a renewal
/// slowed by a busy API server does not hand it to the standby while the leader lives (with
/// 3 s the margin was 1 s).
const LEASE: Duration = Duration::from_secs(6);

/// Starts an operator replica that watches `ns` and elects its leader through a Lease there.
pub async fn start_operator(client: &Client, ns: &str, identity: &str) -> Operator {
    start_operator_with(client, ns, identity, OperatorConfig::default()).await
}

pub async fn start_operator_with(
    client: &Client,
    ns: &str,
    identity: &str,
    config: OperatorConfig,
) -> Operator {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let metrics_url = format!("http://{}", listener.local_addr().expect("addr"));
    let settings = Settings {
        config,
        watch_namespace: Some(ns.to_string()),
        lease_namespace: ns.to_string(),
        lease_name: "clawdbot-operator".into(),
        identity: identity.to_string(),
        lease_duration: LEASE,
        concurrency: 16,
    };
    let (tx, rx) = oneshot::channel();
    let handle = tokio::spawn(run(client.clone(), settings, listener, async move {
        let _ = rx.await;
    }));
    Operator {
        identity: identity.into(),
        metrics_url,
        stop: Some(tx),
        handle,
    }
}

/// [`start_operator`] with its own client, whose every request is counted in its metrics
/// (`clawdbot_operator_api_requests_total` by verb).
pub async fn start_counted_operator(ns: &str, identity: &str) -> Operator {
    let kubeconfig =
        kube::config::Kubeconfig::read_from(&clawdbot_testkit::env::get().kubeconfig).unwrap();
    let config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .unwrap();
    let metrics = std::sync::Arc::new(clawdbot_operator::metrics::Metrics::new());
    let client = clawdbot_operator::metrics::counted_client(config, &metrics).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let metrics_url = format!("http://{}", listener.local_addr().expect("addr"));
    let settings = Settings {
        config: OperatorConfig::default(),
        watch_namespace: Some(ns.to_string()),
        lease_namespace: ns.to_string(),
        lease_name: "clawdbot-operator".into(),
        identity: identity.to_string(),
        lease_duration: LEASE,
        concurrency: 16,
    };
    let (tx, rx) = oneshot::channel();
    let handle = tokio::spawn(run_with_metrics(
        client,
        settings,
        metrics,
        listener,
        async move {
            let _ = rx.await;
        },
    ));
    Operator {
        identity: identity.into(),
        metrics_url,
        stop: Some(tx),
        handle,
    }
}

/// A workspace from YAML (the way a platform engineer writes it).
pub fn workspace(name: &str, spec_yaml: &str) -> UserWorkspace {
    let spec = serde_yaml::from_str(spec_yaml).expect("spec yaml");
    UserWorkspace::new(name, spec)
}

pub const SIMPLE_SPEC: &str = r#"
ownerId: user-1
plan: free
runtime: lite
model:
  name: smollm2
  endpointRef: {name: shared}
"#;

pub const SHARED_ENDPOINT: &str = r#"
engine: vllm
models: [{name: smollm2, source: HuggingFaceTB/SmolLM2-135M-Instruct}]
replicas: 1
gpusPerReplica: 1
"#;

pub async fn create<K>(client: &Client, ns: &str, obj: &K) -> K
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::Serialize
        + serde::de::DeserializeOwned,
{
    Api::<K>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), obj)
        .await
        .expect("create")
}

pub async fn create_endpoint(client: &Client, ns: &str, name: &str) {
    let ep = clawdbot_api::ModelEndpoint::new(
        name,
        serde_yaml::from_str(SHARED_ENDPOINT).expect("endpoint yaml"),
    );
    create(client, ns, &ep).await;
}

/// Waits until the workspace's status satisfies `pred`, returning the workspace.
pub async fn wait_ws(
    client: &Client,
    ns: &str,
    name: &str,
    what: &str,
    pred: impl Fn(&UserWorkspace) -> bool,
) -> UserWorkspace {
    let api: Api<UserWorkspace> = Api::namespaced(client.clone(), ns);
    wait_for(what, TIMEOUT, || {
        let api = api.clone();
        let pred = &pred;
        async move { api.get_opt(name).await.ok().flatten().filter(|w| pred(w)) }
    })
    .await
}

/// Waits until no object of `api` carries the labels of `selector`.
pub async fn wait_none_labelled<K>(api: &Api<K>, selector: &str, what: &str)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    wait_for(what, TIMEOUT, || {
        let api = api.clone();
        async move {
            let list = api
                .list(&ListParams::default().labels(selector))
                .await
                .ok()?;
            list.items.is_empty().then_some(())
        }
    })
    .await
}

/// Plays the kubelet: marks every pod matching `selector` Running and Ready, so that the real
/// ReplicaSet and Deployment controllers report ready replicas.
pub async fn mark_pods_ready(client: &Client, ns: &str, selector: &str) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let list = wait_for(
        "pods to be created by the ReplicaSet controller",
        TIMEOUT,
        || {
            let pods = pods.clone();
            async move {
                let list = pods
                    .list(&ListParams::default().labels(selector))
                    .await
                    .ok()?;
                (!list.items.is_empty()).then_some(list)
            }
        },
    )
    .await;
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    for pod in list.items {
        let status = serde_json::json!({"status": {
            "phase": "Running",
            "conditions": [
                {"type": "Ready", "status": "True", "lastTransitionTime": now},
                {"type": "ContainersReady", "status": "True", "lastTransitionTime": now},
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": now}
            ]
        }});
        pods.patch_status(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&status),
        )
        .await
        .expect("patch pod status");
    }
}

pub fn condition<'a>(
    ws: &'a UserWorkspace,
    type_: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    ws.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
}
