//! The local kube-apiserver: a client, a fresh namespace per test, the committed CRDs.

use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Client, Config};
use tokio::sync::OnceCell;

/// A client of the local API server (admin).
pub async fn client() -> Client {
    let env = crate::env::get();
    let kubeconfig = Kubeconfig::read_from(&env.kubeconfig).expect("read kubeconfig");
    // kube's own read timeout (295 s) on purpose: it is longer than a watch's 290 s. A 60 s one
    // cut every watch that had nothing to say for a minute ("error reading a body from
    // connection"), and the watchers' growing back-off after those errors left the in-process
    // router and operator blind for up to 30 s at a time: the wake benchmark's 60 s outliers.
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig");
    Client::try_from(config).expect("client")
}

/// Creates a namespace with a unique name starting with `prefix`. Its pods are never scheduled
/// on the real node (see [`crate::node::NO_NODE_ANNOTATION`]): the tests using it play the
/// kubelet's part; [`crate::node::fresh_namespace`] gives one whose pods run.
pub async fn fresh_namespace(client: &Client, prefix: &str) -> String {
    let name = format!("{prefix}-{:08x}", rand::random::<u32>());
    let ns: Namespace = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name,
            "annotations": {crate::node::NO_NODE_ANNOTATION: crate::node::NO_NODE_SELECTOR}}
    }))
    .expect("namespace");
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("create namespace");
    name
}

static CRDS: OnceCell<()> = OnceCell::const_new();

/// Applies every committed `crds/*.yaml` (what the chart installs) and waits until each is
/// established. Once per test process.
pub async fn install_crds(client: &Client) {
    CRDS.get_or_init(|| async {
        let api = Api::<CustomResourceDefinition>::all(client.clone());
        let version = client.apiserver_version().await.expect("server version");
        let minor: u32 = version.minor.trim_end_matches('+').parse().unwrap_or(0);
        // CEL rules (x-kubernetes-validations) arrived in 1.25; the local 1.20 server refuses
        // them in a server-side apply. The operator checks the same rules itself, which is
        // what the tests then exercise.
        let strip_cel = version.major == "1" && minor < 25;
        let dir = crate::repo_root().join("crds");
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&dir).expect("crds/") {
            let path = entry.expect("entry").path();
            if path.extension().is_some_and(|e| e == "yaml") {
                let text = std::fs::read_to_string(&path).expect("read crd");
                let mut value: serde_json::Value = serde_yaml::from_str(&text).expect("parse crd");
                if strip_cel {
                    strip_key(&mut value, "x-kubernetes-validations");
                }
                let crd: CustomResourceDefinition = serde_json::from_value(value).expect("crd");
                let name = crd.metadata.name.clone().expect("crd name");
                api.patch(
                    &name,
                    &PatchParams::apply("clawdbot-testkit").force(),
                    &Patch::Apply(&crd),
                )
                .await
                .unwrap_or_else(|e| panic!("apply {}: {e}", path.display()));
                names.push(name);
            }
        }
        for name in names {
            let established = await_condition(api.clone(), &name, conditions::is_crd_established());
            tokio::time::timeout(Duration::from_secs(30), established)
                .await
                .expect("crd established in time")
                .expect("crd watch");
        }
    })
    .await;
}

fn strip_key(value: &mut serde_json::Value, key: &str) {
    match value {
        serde_json::Value::Object(map) => {
            map.remove(key);
            map.values_mut().for_each(|v| strip_key(v, key));
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(|v| strip_key(v, key)),
        _ => {}
    }
}
