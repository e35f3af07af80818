//! The platform on the real node, shared by `tests/node.rs` and `benches/wake.rs`: the
//! operator in-process (Service addresses by ClusterIP: no cluster DNS here), lite workspaces
//! with the user's own "OpenAI" key pointed at a local server on the node's bridge address.

use std::time::Duration;

use clawdbot_api::workspace::Phase;
use clawdbot_api::{UserWorkspace, names};
use clawdbot_operator::config::{OperatorConfig, ServiceAddresses};
use clawdbot_operator::run::{Settings, run};
use clawdbot_testkit::{node, wait_for};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};
use tokio::sync::oneshot;
use uuid::Uuid;

use super::World;

pub const LITE_IMAGE: &str = "ghcr.io/clawdbot/agent-lite:0.1.0";
pub const OPENCLAW_IMAGE: &str = "ghcr.io/clawdbot/agent-openclaw:2026.9.6";
pub const API_KEY: &str = "sk-local-test-key";

/// An operator replica in this process, watching the test's namespace.
pub struct Operator {
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<clawdbot_operator::Result<()>>,
}

impl Operator {
    pub async fn start(client: &Client, ns: &str, config: OperatorConfig) -> Operator {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let settings = Settings {
            config,
            watch_namespace: Some(ns.to_string()),
            lease_namespace: ns.to_string(),
            lease_name: "clawdbot-operator".into(),
            identity: "node-test".into(),
            lease_duration: Duration::from_secs(3),
            concurrency: 4,
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(run(client.clone(), settings, listener, async move {
            let _ = stopped.await;
        }));
        Operator {
            stop: Some(stop),
            task,
        }
    }

    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = (&mut self.task).await;
    }
}

/// The operator's settings on this node: Service addresses by ClusterIP, "OpenAI" local.
pub fn operator_config(llm_base_url: String) -> OperatorConfig {
    OperatorConfig {
        openai_base_url: llm_base_url,
        service_addresses: ServiceAddresses::ClusterIp,
        ..OperatorConfig::default()
    }
}

/// A lite workspace of `user` with their own key (in Secret `keys`) and an idle timeout.
pub async fn create_workspace(w: &World, name: &str, user: Uuid, idle_timeout: &str) {
    create_workspace_as(w, name, user, "lite", idle_timeout, "fake-model").await
}

/// An OpenClaw workspace without hibernation, own-key model `fake-model`.
pub async fn create_openclaw_workspace(w: &World, name: &str, user: Uuid) {
    create_workspace_as(w, name, user, "openclaw", "0", "fake-model").await
}

/// A lite workspace without hibernation whose own-key model is `model`.
pub async fn create_workspace_with_model(w: &World, name: &str, user: Uuid, model: &str) {
    create_workspace_as(w, name, user, "lite", "0", model).await
}

async fn create_workspace_as(
    w: &World,
    name: &str,
    user: Uuid,
    runtime: &str,
    idle_timeout: &str,
    model: &str,
) {
    let secret: Secret = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "keys"},
        "stringData": {names::OPENAI_API_KEY: API_KEY}
    }))
    .expect("secret");
    Api::<Secret>::namespaced(w.kube.clone(), &w.namespace)
        .create(&PostParams::default(), &secret)
        .await
        .expect("create keys secret");
    let spec = serde_json::from_value(serde_json::json!({
        "ownerId": user.to_string(), "plan": "pro", "runtime": runtime,
        "idleTimeout": idle_timeout, "keysSecretRef": {"name": "keys"},
        "model": {"provider": "openai", "name": model, "maxTokens": 64},
        "storage": {"size": "1Gi", "retention": "Delete"}
    }))
    .expect("spec");
    Api::<UserWorkspace>::namespaced(w.kube.clone(), &w.namespace)
        .create(&PostParams::default(), &UserWorkspace::new(name, spec))
        .await
        .expect("create workspace");
}

pub async fn wait_phase(w: &World, name: &str, phase: Phase, timeout: Duration) -> UserWorkspace {
    let api: Api<UserWorkspace> = Api::namespaced(w.kube.clone(), &w.namespace);
    let what = format!("workspace {name} {phase:?}");
    let found = tokio::time::timeout(timeout, async {
        // The outer timeout fires first, so the failure message carries the diagnosis.
        wait_for(&what, timeout + Duration::from_secs(5), || {
            let api = api.clone();
            async move {
                api.get_opt(name)
                    .await
                    .ok()
                    .flatten()
                    .filter(|ws| ws.status.as_ref().is_some_and(|s| s.phase == phase))
            }
        })
        .await
    })
    .await;
    match found {
        Ok(ws) => ws,
        Err(_) => panic!("{what}: {}", diagnose(w, name).await),
    }
}

/// What the workspace and its pods say, for a failure message.
pub async fn diagnose(w: &World, name: &str) -> String {
    let ws = Api::<UserWorkspace>::namespaced(w.kube.clone(), &w.namespace)
        .get_opt(name)
        .await
        .ok()
        .flatten();
    let pods = node::pods(
        &w.kube,
        &w.namespace,
        &format!("{}={name}", names::LABEL_WORKSPACE),
    )
    .await;
    let mut out = format!("status: {:?}\n", ws.and_then(|w| w.status));
    for p in &pods {
        out.push_str(&format!(
            "pod {}: {:?}\n{}\n",
            p.name_any(),
            p.status,
            node::pod_logs(p)
        ));
    }
    out
}
