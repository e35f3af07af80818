//! The operator against a real kube-apiserver, etcd and controller-manager.

// Test code: a panic with its message is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use clawdbot_api::conditions::*;
use clawdbot_api::names;
use clawdbot_api::workspace::{Phase, UserWorkspace};
use clawdbot_testkit::wait_for;
use common::*;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{
    ConfigMap, Event, PersistentVolume, PersistentVolumeClaim, Pod, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};

async fn exists<K>(client: &Client, ns: &str, name: &str) -> Option<K>
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned,
{
    Api::<K>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .expect("get")
}

async fn replicas(client: &Client, ns: &str, ws: &str) -> i32 {
    exists::<Deployment>(client, ns, &names::agent(ws))
        .await
        .and_then(|d| d.spec?.replicas)
        .unwrap_or(-1)
}

async fn events_for(client: &Client, ns: &str, name: &str) -> Vec<(String, String, String)> {
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    events
        .list(&ListParams::default())
        .await
        .expect("events")
        .items
        .into_iter()
        .filter(|e| e.involved_object.name.as_deref() == Some(name))
        .map(|e| {
            (
                e.type_.unwrap_or_default(),
                e.reason.unwrap_or_default(),
                e.message.unwrap_or_default(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workspace_becomes_a_running_tenant() {
    let (client, ns) = setup("create").await;
    let op = start_operator(&client, &ns, "op-a").await;
    create_endpoint(&client, &ns, "shared").await;
    create(&client, &ns, &workspace("alice", SIMPLE_SPEC)).await;

    let ws = wait_ws(&client, &ns, "alice", "status Provisioning", |w| {
        w.status
            .as_ref()
            .is_some_and(|s| s.phase == Phase::Provisioning)
    })
    .await;
    let status = ws.status.clone().unwrap();
    assert_eq!(status.observed_generation, ws.metadata.generation);
    assert_eq!(
        status.url.as_deref(),
        Some(format!("http://claw-alice.{ns}.svc:18789").as_str())
    );
    assert_eq!(condition(&ws, PROVISIONED).unwrap().status, "True");
    assert_eq!(condition(&ws, READY).unwrap().reason, REASON_AGENT_STARTING);
    assert_eq!(condition(&ws, MODEL_READY).unwrap().status, "False");
    // No finalizer: deletion is garbage collection's.
    assert!(ws.finalizers().is_empty(), "{:?}", ws.finalizers());

    // Every child exists and is owned by the workspace; the volume is not (retention: Retain,
    // the default, keeps it after the workspace).
    assert!(
        exists::<PersistentVolumeClaim>(&client, &ns, &names::agent("alice"))
            .await
            .unwrap()
            .owner_references()
            .is_empty()
    );
    let uid = ws.uid().unwrap();
    let name = names::agent("alice");
    let owners = vec![
        exists::<ServiceAccount>(&client, &ns, &name)
            .await
            .unwrap()
            .owner_references()
            .to_vec(),
        exists::<ConfigMap>(&client, &ns, &name)
            .await
            .unwrap()
            .owner_references()
            .to_vec(),
        exists::<Secret>(&client, &ns, &names::gateway_token_secret("alice"))
            .await
            .unwrap()
            .owner_references()
            .to_vec(),
        exists::<Deployment>(&client, &ns, &name)
            .await
            .unwrap()
            .owner_references()
            .to_vec(),
        exists::<Service>(&client, &ns, &name)
            .await
            .unwrap()
            .owner_references()
            .to_vec(),
        exists::<NetworkPolicy>(&client, &ns, &name)
            .await
            .unwrap()
            .owner_references()
            .to_vec(),
    ];
    for o in owners {
        assert_eq!(o.len(), 1);
        assert_eq!(o[0].uid, uid);
        assert_eq!(o[0].controller, Some(true));
    }
    let secret = exists::<Secret>(&client, &ns, &names::gateway_token_secret("alice"))
        .await
        .unwrap();
    let token = secret.data.unwrap()[names::GATEWAY_TOKEN_KEY].0.clone();
    assert_eq!(token.len(), 64, "a 32-byte hex token");
    assert_eq!(replicas(&client, &ns, "alice").await, 1);

    // The model server becomes ready, then the agent: the workspace is Running.
    mark_pods_ready(&client, &ns, "clawdbot.io/model-endpoint=shared").await;
    mark_pods_ready(&client, &ns, "clawdbot.io/workspace=alice").await;
    let ws = wait_ws(&client, &ns, "alice", "Running with the model ready", |w| {
        w.status.as_ref().is_some_and(|s| s.phase == Phase::Running)
            && condition(w, MODEL_READY).is_some_and(|c| c.status == "True")
    })
    .await;
    assert!(ws.is_ready());
    let ep: clawdbot_api::ModelEndpoint = exists(&client, &ns, "shared").await.unwrap();
    let ep_status = ep.status.unwrap();
    assert_eq!(ep_status.ready_replicas, 1);
    assert_eq!(
        ep_status.url.as_deref(),
        Some(format!("http://mep-shared.{ns}.svc:8000/v1").as_str())
    );

    // The token survives reconciles: it is generated once.
    let again = exists::<Secret>(&client, &ns, &names::gateway_token_secret("alice"))
        .await
        .unwrap();
    assert_eq!(again.data.unwrap()[names::GATEWAY_TOKEN_KEY].0, token);

    // A tenant at rest costs nothing: its own no-op applies must not wake the controller
    // again (on this API server they bump the children's resourceVersion).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = reconcile_count(&op.metrics().await);
    tokio::time::sleep(Duration::from_secs(8)).await;
    let after = reconcile_count(&op.metrics().await);
    eprintln!("RECONCILES before={before} after={after}");
    assert_eq!(before, after, "an idle Running tenant was reconciled again");

    let metrics = op.metrics().await;
    assert!(
        metrics.contains(r#"clawdbot_operator_tenants{phase="Running"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains("clawdbot_operator_leader 1"), "{metrics}");
    op.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spec_change_rolls_the_workload_and_drift_is_repaired() {
    let (client, ns) = setup("update").await;
    let op = start_operator(&client, &ns, "op-a").await;
    create_endpoint(&client, &ns, "shared").await;
    create(&client, &ns, &workspace("bob", SIMPLE_SPEC)).await;
    wait_ws(&client, &ns, "bob", "provisioned", |w| {
        condition(w, PROVISIONED).is_some_and(|c| c.status == "True")
    })
    .await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let hash = |d: &Deployment| {
        d.spec
            .as_ref()
            .unwrap()
            .template
            .metadata
            .as_ref()
            .unwrap()
            .annotations
            .as_ref()
            .unwrap()["clawdbot.io/config-hash"]
            .clone()
    };
    let before = hash(&deployments.get(&names::agent("bob")).await.unwrap());

    let api: Api<UserWorkspace> = Api::namespaced(client.clone(), &ns);
    api.patch(
        "bob",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"spec": {"model": {"temperature": 0.2}}})),
    )
    .await
    .unwrap();
    let ws = wait_ws(&client, &ns, "bob", "generation 2 observed", |w| {
        w.status.as_ref().and_then(|s| s.observed_generation) == Some(2)
    })
    .await;
    assert_eq!(ws.metadata.generation, Some(2));
    let cm = exists::<ConfigMap>(&client, &ns, &names::agent("bob"))
        .await
        .unwrap();
    assert!(cm.data.unwrap()[names::LITE_CONFIG_FILE].contains("\"temperature\": 0.2"));
    let after = hash(&deployments.get(&names::agent("bob")).await.unwrap());
    assert_ne!(
        before, after,
        "a config change must change the pod template"
    );

    // Someone deletes the Service and edits the ConfigMap by hand: both come back.
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    let old_uid = services.get(&names::agent("bob")).await.unwrap().uid();
    services
        .delete(&names::agent("bob"), &DeleteParams::default())
        .await
        .unwrap();
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    configmaps
        .patch(
            &names::agent("bob"),
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"data": {"agent.json": "{}"}})),
        )
        .await
        .unwrap();
    wait_for("the Service to be recreated", TIMEOUT, || {
        let services = services.clone();
        let old_uid = old_uid.clone();
        async move {
            services
                .get_opt(&names::agent("bob"))
                .await
                .ok()
                .flatten()
                .filter(|s| s.uid() != old_uid)
        }
    })
    .await;
    wait_for("the ConfigMap to be restored", TIMEOUT, || {
        let configmaps = configmaps.clone();
        async move {
            let cm = configmaps.get(&names::agent("bob")).await.ok()?;
            cm.data?
                .get("agent.json")
                .filter(|v| v.contains("smollm2"))
                .cloned()
        }
    })
    .await;
    op.stop().await.unwrap();
}

async fn delete_and_wait_gone(client: &Client, ns: &str, name: &str) {
    let api: Api<UserWorkspace> = Api::namespaced(client.clone(), ns);
    api.delete(name, &DeleteParams::default()).await.unwrap();
    wait_for("the workspace to be gone", TIMEOUT, || {
        let api = api.clone();
        async move {
            api.get_opt(name)
                .await
                .ok()
                .and_then(|o| o.is_none().then_some(()))
        }
    })
    .await;
}

/// The reasons of the events about `name`, once `reason` is among them (events are
/// published by the operator after the deletion it reports, asynchronously).
async fn wait_event(client: &Client, ns: &str, name: &str, reason: &str) -> Vec<String> {
    wait_for(
        &format!("event {reason} for {name}"),
        TIMEOUT,
        || async move {
            let reasons: Vec<String> = events_for(client, ns, name)
                .await
                .into_iter()
                .map(|e| e.1)
                .collect();
            reasons.iter().any(|r| r == reason).then_some(reasons)
        },
    )
    .await
}

/// The volume claim's owner reference carries `storage.retention` (no finalizer): `Retain`
/// leaves it unowned and it outlives the workspace, `Delete` makes the workspace its owner and
/// garbage collection takes it; a policy changed on a live workspace moves the reference. A
/// workspace that still carries the finalizer of an earlier operator is let go by it, with
/// its retention honoured.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletion_honours_the_retention_policy() {
    let (client, ns) = setup("delete").await;
    let op = start_operator(&client, &ns, "op-a").await;
    create_endpoint(&client, &ns, "shared").await;
    create(&client, &ns, &workspace("keep", SIMPLE_SPEC)).await;
    let delete_spec = format!("{SIMPLE_SPEC}storage: {{size: 1Gi, retention: Delete}}\n");
    create(&client, &ns, &workspace("drop", &delete_spec)).await;
    create(&client, &ns, &workspace("switch", SIMPLE_SPEC)).await;
    let mut legacy = workspace("legacy", &delete_spec);
    legacy.metadata.finalizers = Some(vec![names::WORKSPACE_FINALIZER.to_string()]);
    create(&client, &ns, &legacy).await;
    let mut uids = std::collections::HashMap::new();
    for n in ["keep", "drop", "switch", "legacy"] {
        let w = wait_ws(&client, &ns, n, "provisioned", |w| {
            condition(w, PROVISIONED).is_some_and(|c| c.status == "True")
        })
        .await;
        uids.insert(n, w.uid().unwrap());
    }
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
    let owner_of = |name: &'static str| {
        let pvcs = pvcs.clone();
        async move {
            pvcs.get(&names::agent(name))
                .await
                .expect("volume")
                .owner_references()
                .iter()
                .map(|o| o.uid.clone())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(owner_of("keep").await, Vec::<String>::new());
    assert_eq!(owner_of("drop").await, vec![uids["drop"].clone()]);
    assert_eq!(owner_of("legacy").await, vec![uids["legacy"].clone()]);
    assert_eq!(owner_of("switch").await, Vec::<String>::new());

    // Retain -> Delete on a live workspace: the claim gets its owner.
    let api: Api<UserWorkspace> = Api::namespaced(client.clone(), &ns);
    api.patch(
        "switch",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"spec": {"storage": {"retention": "Delete"}}})),
    )
    .await
    .unwrap();
    wait_for("the switched volume to be owned", TIMEOUT, || {
        let pvcs = pvcs.clone();
        let uid = uids["switch"].clone();
        async move {
            let p = pvcs.get(&names::agent("switch")).await.ok()?;
            p.owner_references()
                .iter()
                .any(|o| o.uid == uid)
                .then_some(())
        }
    })
    .await;

    for n in ["keep", "drop", "switch", "legacy"] {
        delete_and_wait_gone(&client, &ns, n).await;
    }

    // Garbage collection removes the owned children of all.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    wait_none_labelled(
        &deployments,
        "app.kubernetes.io/name=clawdbot-agent",
        "garbage collection of the Deployments",
    )
    .await;
    // Delete: the volumes go (a PVC with the protection finalizer may linger as terminating).
    for n in ["drop", "switch", "legacy"] {
        wait_for(&format!("the volume of {n} to go"), TIMEOUT, || {
            let pvcs = pvcs.clone();
            async move {
                match pvcs.get_opt(&names::agent(n)).await.ok()? {
                    None => Some(()),
                    Some(p) => p.metadata.deletion_timestamp.map(|_| ()),
                }
            }
        })
        .await;
    }
    // Retain: the volume stays, unowned, still labelled with its workspace.
    let kept = pvcs
        .get(&names::agent("keep"))
        .await
        .expect("retained volume");
    assert!(kept.metadata.deletion_timestamp.is_none());
    assert!(
        kept.owner_references().is_empty(),
        "{:?}",
        kept.owner_references()
    );
    assert_eq!(kept.labels()["clawdbot.io/workspace"], "keep");

    wait_event(&client, &ns, "keep", "VolumeRetained").await;
    // A workspace of the same name takes the retained volume up again: the same claim.
    create(&client, &ns, &workspace("keep", SIMPLE_SPEC)).await;
    wait_ws(&client, &ns, "keep", "provisioned again", |w| {
        condition(w, PROVISIONED).is_some_and(|c| c.status == "True")
    })
    .await;
    let again = pvcs.get(&names::agent("keep")).await.expect("volume");
    assert_eq!(again.uid(), kept.uid());
    assert!(again.owner_references().is_empty());
    for n in ["drop", "switch", "legacy"] {
        let reasons = wait_event(&client, &ns, n, "VolumeDeleted").await;
        // One event per deletion, also where the legacy finalizer did the cleanup.
        assert_eq!(
            reasons.iter().filter(|r| *r == "VolumeDeleted").count(),
            1,
            "{n}: {reasons:?}"
        );
    }
    op.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_workspace_hibernates_and_wakes_on_activity() {
    let (client, ns) = setup("hibernate").await;
    let op = start_operator(&client, &ns, "op-a").await;
    create_endpoint(&client, &ns, "shared").await;
    create(
        &client,
        &ns,
        &workspace("sleepy", &format!("{SIMPLE_SPEC}idleTimeout: 3s\n")),
    )
    .await;
    // Idle counts while the agent could answer: from the moment its pod is ready.
    mark_pods_ready(&client, &ns, "clawdbot.io/workspace=sleepy").await;
    wait_ws(&client, &ns, "sleepy", "Running", |w| {
        w.status.as_ref().is_some_and(|s| s.phase == Phase::Running)
    })
    .await;

    let ws = wait_ws(&client, &ns, "sleepy", "Hibernated after 3 s idle", |w| {
        w.status
            .as_ref()
            .is_some_and(|s| s.phase == Phase::Hibernated)
    })
    .await;
    assert_eq!(replicas(&client, &ns, "sleepy").await, 0);
    let hib = condition(&ws, HIBERNATED).unwrap();
    assert_eq!(
        (hib.status.as_str(), hib.reason.as_str()),
        ("True", REASON_IDLE)
    );
    assert!(ws.status.as_ref().unwrap().hibernated_since.is_some());
    // The old pod gone before the wake, so that the pod marked ready below is the new one.
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    wait_none_labelled(
        &pods,
        "clawdbot.io/workspace=sleepy",
        "the hibernated pod gone",
    )
    .await;

    // The router's wake signal: a fresh last-activity annotation.
    let api: Api<UserWorkspace> = Api::namespaced(client.clone(), &ns);
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    api.patch(
        "sleepy",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"metadata": {"annotations": {clawdbot_api::annotations::LAST_ACTIVITY: now}}})),
    )
    .await
    .unwrap();
    wait_ws(&client, &ns, "sleepy", "awake again", |w| {
        w.status
            .as_ref()
            .is_some_and(|s| s.phase == Phase::Provisioning && s.hibernated_since.is_none())
    })
    .await;
    assert_eq!(replicas(&client, &ns, "sleepy").await, 1);
    mark_pods_ready(&client, &ns, "clawdbot.io/workspace=sleepy").await;
    let ws = wait_ws(&client, &ns, "sleepy", "Running", |w| {
        w.status.as_ref().is_some_and(|s| s.phase == Phase::Running)
    })
    .await;
    assert!(ws.status.unwrap().last_activity_time.is_some());
    let reasons: Vec<String> = events_for(&client, &ns, "sleepy")
        .await
        .into_iter()
        .map(|e| e.1)
        .collect();
    assert!(
        reasons.contains(&"Hibernated".to_string()) && reasons.contains(&"Woken".to_string()),
        "{reasons:?}"
    );

    // And suspend keeps it at zero whatever the activity.
    api.patch(
        "sleepy",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"spec": {"suspend": true}})),
    )
    .await
    .unwrap();
    let ws = wait_ws(&client, &ns, "sleepy", "suspended", |w| {
        condition(w, HIBERNATED).is_some_and(|c| c.reason == REASON_SUSPENDED)
    })
    .await;
    assert_eq!(ws.status.unwrap().phase, Phase::Hibernated);
    assert_eq!(replicas(&client, &ns, "sleepy").await, 0);
    op.stop().await.unwrap();
}

fn reconcile_count(metrics: &str) -> u64 {
    reconciles_of(metrics, "userworkspace")
}

fn reconciles_of(metrics: &str, controller: &str) -> u64 {
    counter_sum(
        metrics,
        &format!("clawdbot_operator_reconciles_total{{controller=\"{controller}\""),
    )
}

/// The sum of the samples whose lines start with `prefix` (a counter over its other labels).
fn counter_sum(metrics: &str, prefix: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_spec_is_reported_without_a_retry_loop_and_recovers() {
    let (client, ns) = setup("invalid").await;
    let op = start_operator(&client, &ns, "op-a").await;
    // Own key on the free plan, and no Secret named: two problems, one clear message.
    let bad = "ownerId: u\nplan: free\nmodel: {provider: openai, name: gpt-4o-mini}\n";
    create(&client, &ns, &workspace("bad", bad)).await;
    let ws = wait_ws(&client, &ns, "bad", "Failed", |w| {
        w.status.as_ref().is_some_and(|s| s.phase == Phase::Failed)
    })
    .await;
    let ready = condition(&ws, READY).unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", REASON_INVALID_SPEC)
    );
    assert!(
        ready.message.contains("not available on the free plan"),
        "{}",
        ready.message
    );
    assert!(
        ready.message.contains("spec.keysSecretRef"),
        "{}",
        ready.message
    );
    let events = wait_for("a Warning event", TIMEOUT, || {
        let client = client.clone();
        let ns = ns.clone();
        async move {
            let e = events_for(&client, &ns, "bad").await;
            e.iter()
                .any(|e| e.0 == "Warning" && e.1 == REASON_INVALID_SPEC)
                .then_some(e)
        }
    })
    .await;
    assert!(events.iter().any(|e| e.2.contains("free plan")));
    // Nothing was provisioned for it.
    assert!(
        exists::<Deployment>(&client, &ns, &names::agent("bad"))
            .await
            .is_none()
    );

    // No hot loop: the count of reconciles stands still while nothing changes.
    let before = reconcile_count(&op.metrics().await);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = reconcile_count(&op.metrics().await);
    assert!(
        after <= before + 1,
        "reconciles went from {before} to {after} with no change"
    );

    // Fixing the spec recovers it.
    let api: Api<UserWorkspace> = Api::namespaced(client.clone(), &ns);
    create_endpoint(&client, &ns, "shared").await;
    api.patch(
        "bad",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"spec": {"model": {"provider": "platform", "name": "smollm2", "endpointRef": {"name": "shared"}}}})),
    )
    .await
    .unwrap();
    wait_ws(&client, &ns, "bad", "Provisioning", |w| {
        w.status
            .as_ref()
            .is_some_and(|s| s.phase == Phase::Provisioning)
    })
    .await;
    op.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_references_wait_and_recover_by_themselves() {
    let (client, ns) = setup("missing").await;
    let op = start_operator(&client, &ns, "op-a").await;
    create(&client, &ns, &workspace("early", SIMPLE_SPEC)).await;
    let own_key = "ownerId: u2\nplan: pro\nruntime: lite\nkeysSecretRef: {name: u2-keys}\nmodel: {provider: anthropic, name: claude-sonnet-4-5}\n";
    create(&client, &ns, &workspace("byok", own_key)).await;

    let ws = wait_ws(&client, &ns, "early", "Pending", |w| {
        w.status.as_ref().is_some_and(|s| s.phase == Phase::Pending)
    })
    .await;
    let ready = condition(&ws, READY).unwrap();
    assert_eq!(ready.reason, REASON_MODEL_ENDPOINT_MISSING);
    assert!(
        ready
            .message
            .contains("ModelEndpoint \"shared\" does not exist"),
        "{}",
        ready.message
    );
    let ws = wait_ws(&client, &ns, "byok", "Pending", |w| {
        w.status.as_ref().is_some_and(|s| s.phase == Phase::Pending)
    })
    .await;
    assert_eq!(condition(&ws, READY).unwrap().reason, REASON_SECRET_MISSING);

    create_endpoint(&client, &ns, "shared").await;
    let secret: Secret = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "u2-keys"},
        "stringData": {"ANTHROPIC_API_KEY": "sk-ant-test"}
    }))
    .unwrap();
    create(&client, &ns, &secret).await;
    for n in ["early", "byok"] {
        wait_ws(
            &client,
            &ns,
            n,
            "provisioned after the reference appeared",
            |w| condition(w, PROVISIONED).is_some_and(|c| c.status == "True"),
        )
        .await;
    }
    // The key reaches the pod as a mounted file, never through the ConfigMap.
    let cm = exists::<ConfigMap>(&client, &ns, &names::agent("byok"))
        .await
        .unwrap();
    let config = &cm.data.unwrap()[names::LITE_CONFIG_FILE];
    assert!(!config.contains("sk-ant-test"));
    assert!(
        config.contains("/var/run/clawdbot/keys/ANTHROPIC_API_KEY"),
        "{config}"
    );
    op.stop().await.unwrap();
}

async fn lease_holder(client: &Client, ns: &str) -> Option<String> {
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(client.clone(), ns);
    leases
        .get_opt("clawdbot-operator")
        .await
        .ok()??
        .spec?
        .holder_identity
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_elect_one_leader_and_fail_over() {
    let (client, ns) = setup("leader").await;
    let a = start_operator(&client, &ns, "op-a").await;
    let b = start_operator(&client, &ns, "op-b").await;
    create_endpoint(&client, &ns, "shared").await;
    create(&client, &ns, &workspace("one", SIMPLE_SPEC)).await;
    wait_ws(&client, &ns, "one", "provisioned", |w| {
        condition(w, PROVISIONED).is_some_and(|c| c.status == "True")
    })
    .await;

    let holder = wait_for("a lease holder", TIMEOUT, || {
        let client = client.clone();
        let ns = ns.clone();
        async move { lease_holder(&client, &ns).await }
    })
    .await;
    let (leader, follower) = if holder == "op-a" { (a, b) } else { (b, a) };
    assert_eq!(leader.readyz().await, "leader");
    assert_eq!(follower.readyz().await, "standby");
    assert!(
        follower
            .metrics()
            .await
            .contains("clawdbot_operator_leader 0")
    );
    assert_eq!(
        reconcile_count(&follower.metrics().await),
        0,
        "the standby must not reconcile"
    );

    // The leader crashes (no release): the follower takes over once the lease expires.
    leader.kill();
    create(&client, &ns, &workspace("two", SIMPLE_SPEC)).await;
    wait_ws(&client, &ns, "two", "provisioned by the new leader", |w| {
        condition(w, PROVISIONED).is_some_and(|c| c.status == "True")
    })
    .await;
    assert_eq!(
        lease_holder(&client, &ns).await.as_deref(),
        Some(follower.identity.as_str())
    );
    assert_eq!(follower.readyz().await, "leader");
    // A clean stop hands the lease over at once instead of letting it expire.
    follower.stop().await.unwrap();
    let holder = lease_holder(&client, &ns).await;
    assert!(
        holder.as_deref().is_none_or(str::is_empty),
        "lease still held by {holder:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_midway_leaves_no_duplicates_or_orphans() {
    let (client, ns) = setup("restart").await;
    create_endpoint(&client, &ns, "shared").await;
    let op = start_operator(&client, &ns, "op-a").await;
    for i in 0..20 {
        create(&client, &ns, &workspace(&format!("t{i}"), SIMPLE_SPEC)).await;
    }
    // Crash as soon as the first few are done.
    wait_ws(&client, &ns, "t0", "first provisioned", |w| {
        condition(w, PROVISIONED).is_some_and(|c| c.status == "True")
    })
    .await;
    op.kill();
    let op = start_operator(&client, &ns, "op-b").await;
    for i in 0..20 {
        wait_ws(
            &client,
            &ns,
            &format!("t{i}"),
            "provisioned after restart",
            |w| condition(w, PROVISIONED).is_some_and(|c| c.status == "True"),
        )
        .await;
    }
    let lp = ListParams::default().labels("app.kubernetes.io/name=clawdbot-agent");
    let count = |n: usize, kind: &str| assert_eq!(n, 20, "{kind}: one per tenant");
    count(
        Api::<Deployment>::namespaced(client.clone(), &ns)
            .list(&lp)
            .await
            .unwrap()
            .items
            .len(),
        "Deployment",
    );
    count(
        Api::<Service>::namespaced(client.clone(), &ns)
            .list(&lp)
            .await
            .unwrap()
            .items
            .len(),
        "Service",
    );
    count(
        Api::<ConfigMap>::namespaced(client.clone(), &ns)
            .list(&lp)
            .await
            .unwrap()
            .items
            .len(),
        "ConfigMap",
    );
    count(
        Api::<ServiceAccount>::namespaced(client.clone(), &ns)
            .list(&lp)
            .await
            .unwrap()
            .items
            .len(),
        "ServiceAccount",
    );
    count(
        Api::<PersistentVolumeClaim>::namespaced(client.clone(), &ns)
            .list(&lp)
            .await
            .unwrap()
            .items
            .len(),
        "PVC",
    );
    count(
        Api::<NetworkPolicy>::namespaced(client.clone(), &ns)
            .list(&lp)
            .await
            .unwrap()
            .items
            .len(),
        "NetworkPolicy",
    );
    count(
        Api::<Secret>::namespaced(client.clone(), &ns)
            .list(&lp)
            .await
            .unwrap()
            .items
            .len(),
        "Secret",
    );
    // Each has exactly one ReplicaSet: the restart did not roll anything. The deployment
    // controller creates them on its own schedule: wait for all 20 first, then make sure
    // every Deployment settled on its first revision.
    let rs: Api<k8s_openapi::api::apps::v1::ReplicaSet> = Api::namespaced(client.clone(), &ns);
    let sets = wait_for("a ReplicaSet per Deployment", TIMEOUT, || {
        let rs = rs.clone();
        let lp = lp.clone();
        async move {
            let items = rs.list(&lp).await.ok()?.items;
            (items.len() >= 20).then_some(items)
        }
    })
    .await;
    assert_eq!(sets.len(), 20);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let revisions = wait_for("a revision on every Deployment", TIMEOUT, || {
        let deployments = deployments.clone();
        let lp = lp.clone();
        async move {
            let items = deployments.list(&lp).await.ok()?.items;
            let revisions: Vec<String> = items
                .iter()
                .filter_map(|d| {
                    d.annotations()
                        .get("deployment.kubernetes.io/revision")
                        .cloned()
                })
                .collect();
            (revisions.len() == 20).then_some(revisions)
        }
    })
    .await;
    assert!(revisions.iter().all(|r| r == "1"), "rolled: {revisions:?}");
    op.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dedicated_model_gets_its_own_gpu_endpoint() {
    let (client, ns) = setup("dedicated").await;
    let op = start_operator(&client, &ns, "op-a").await;
    let spec = r#"
ownerId: u3
plan: team
runtime: lite
model:
  name: qwen
  dedicated:
    engine: ollama
    models: [{name: qwen}]
    gpusPerReplica: 2
    nodeSelector: {pool: gpu}
    tolerations: [{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}]
"#;
    let ws = create(&client, &ns, &workspace("solo", spec)).await;
    wait_ws(&client, &ns, "solo", "provisioned", |w| {
        condition(w, PROVISIONED).is_some_and(|c| c.status == "True")
    })
    .await;
    let ep: clawdbot_api::ModelEndpoint =
        exists(&client, &ns, &names::dedicated_model_endpoint("solo"))
            .await
            .unwrap();
    assert_eq!(ep.owner_references()[0].uid, ws.uid().unwrap());
    let server: Deployment = wait_for("the model server Deployment", TIMEOUT, || {
        let client = client.clone();
        let ns = ns.clone();
        async move { exists::<Deployment>(&client, &ns, "mep-solo-model").await }
    })
    .await;
    let pod = server.spec.unwrap().template.spec.unwrap();
    let limits = pod.containers[0]
        .resources
        .as_ref()
        .unwrap()
        .limits
        .clone()
        .unwrap();
    assert_eq!(limits["nvidia.com/gpu"].0, "2");
    assert_eq!(pod.node_selector.unwrap()["pool"], "gpu");
    // The agent's config points at the dedicated server.
    let cm = exists::<ConfigMap>(&client, &ns, &names::agent("solo"))
        .await
        .unwrap();
    assert!(
        cm.data.unwrap()[names::LITE_CONFIG_FILE]
            .contains(&format!("http://mep-solo-model.{ns}.svc:11434/v1"))
    );
    op.stop().await.unwrap();
}

/// A StorageClass (cluster-scoped, named after the test's namespace so that nothing shared is
/// touched) and a PersistentVolume already bound to the tenant volume `claim`: the
/// controller-manager binds them at once, as a provisioner would.
async fn class_and_volume(client: &Client, ns: &str, class: &str, expands: bool, claim: &str) {
    let classes: Api<StorageClass> = Api::all(client.clone());
    let sc: StorageClass = serde_json::from_value(serde_json::json!({
        "metadata": {"name": class, "labels": {"clawdbot.io/test-namespace": ns}},
        "provisioner": "kubernetes.io/no-provisioner",
        "volumeBindingMode": "Immediate",
        "allowVolumeExpansion": expands,
    }))
    .unwrap();
    classes.create(&PostParams::default(), &sc).await.unwrap();
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    let pv: PersistentVolume = serde_json::from_value(serde_json::json!({
        "metadata": {"name": class, "labels": {"clawdbot.io/test-namespace": ns}},
        "spec": {
            "capacity": {"storage": "100Gi"},
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": class,
            "persistentVolumeReclaimPolicy": "Retain",
            "hostPath": {"path": format!("/tmp/clawdbot-test-volumes/{class}")},
            "claimRef": {"namespace": ns, "name": claim},
        }
    }))
    .unwrap();
    volumes.create(&PostParams::default(), &pv).await.unwrap();
}

async fn remove_class_and_volume(client: &Client, class: &str) {
    let _ = Api::<PersistentVolume>::all(client.clone())
        .delete(class, &DeleteParams::default())
        .await;
    let _ = Api::<StorageClass>::all(client.clone())
        .delete(class, &DeleteParams::default())
        .await;
}

fn requested(pvc: &PersistentVolumeClaim) -> String {
    pvc.spec
        .as_ref()
        .unwrap()
        .resources
        .as_ref()
        .unwrap()
        .requests
        .as_ref()
        .unwrap()["storage"]
        .0
        .clone()
}

/// An upgrade that gives more storage grows a bound volume whose StorageClass allows
/// expansion; where the class does not, the volume keeps its size, the workspace stays
/// provisioned, and the StorageSized condition says why. Downgrading never shrinks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_grows_the_volume_where_its_class_allows_and_says_why_not_elsewhere() {
    let (client, ns) = setup("storage").await;
    let op = start_counted_operator(&ns, "op-a").await;
    create_endpoint(&client, &ns, "shared").await;
    let grows = format!("{ns}-grows");
    let fixed = format!("{ns}-fixed");
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
    let api: Api<UserWorkspace> = Api::namespaced(client.clone(), &ns);
    for (ws, class, expands) in [("grows", &grows, true), ("fixed", &fixed, false)] {
        class_and_volume(&client, &ns, class, expands, &names::agent(ws)).await;
        let spec = format!("{SIMPLE_SPEC}storage: {{size: 1Gi, storageClassName: {class}}}\n");
        create(&client, &ns, &workspace(ws, &spec)).await;
        wait_for("the volume to be bound", TIMEOUT, || {
            let pvcs = pvcs.clone();
            async move {
                let pvc = pvcs.get_opt(&names::agent(ws)).await.ok().flatten()?;
                (pvc.status?.phase.as_deref() == Some("Bound")).then_some(())
            }
        })
        .await;
        let w = wait_ws(&client, &ns, ws, "storage sized", |w| {
            condition(w, STORAGE_SIZED).is_some_and(|c| c.status == "True")
        })
        .await;
        assert_eq!(condition(&w, STORAGE_SIZED).unwrap().reason, REASON_SIZED);
    }

    // The plan changes as accounts writes it: the plan and the plan's storage.
    for ws in ["grows", "fixed"] {
        api.patch(
            ws,
            &PatchParams::default(),
            &Patch::Merge(
                serde_json::json!({"spec": {"plan": "pro", "storage": {"size": "10Gi"}}}),
            ),
        )
        .await
        .unwrap();
    }
    wait_for("the expandable volume to grow", TIMEOUT, || {
        let pvcs = pvcs.clone();
        async move {
            let pvc = pvcs.get_opt(&names::agent("grows")).await.ok().flatten()?;
            (requested(&pvc) == "10Gi").then_some(())
        }
    })
    .await;
    let w = wait_ws(&client, &ns, "fixed", "expansion refused", |w| {
        condition(w, STORAGE_SIZED).is_some_and(|c| c.status == "False")
    })
    .await;
    let c = condition(&w, STORAGE_SIZED).unwrap();
    assert_eq!(c.reason, REASON_EXPANSION_NOT_ALLOWED);
    assert!(
        c.message.contains(&fixed) && c.message.contains("allowVolumeExpansion"),
        "{}",
        c.message
    );
    assert_eq!(condition(&w, PROVISIONED).unwrap().status, "True");
    assert_eq!(
        requested(&pvcs.get(&names::agent("fixed")).await.unwrap()),
        "1Gi"
    );
    let w = wait_ws(&client, &ns, "grows", "generation 2 observed", |w| {
        w.status.as_ref().and_then(|s| s.observed_generation) == Some(2)
    })
    .await;
    assert_eq!(condition(&w, STORAGE_SIZED).unwrap().status, "True");

    // Reconciles of "fixed" (someone's finalizer added, then removed) find the refusal standing
    // and do not ask the API server again.
    let before = op.metrics().await;
    let finalizer_changes = [
        serde_json::json!(["example.com/keep"]),
        serde_json::json!(null),
    ];
    for (n, finalizers) in (1..).zip(finalizer_changes) {
        let change = serde_json::json!({"metadata": {"finalizers": finalizers}});
        api.patch("fixed", &PatchParams::default(), &Patch::Merge(&change))
            .await
            .unwrap();
        wait_for("another reconcile", TIMEOUT, || {
            let op = &op;
            let before = &before;
            async move {
                (reconcile_count(&op.metrics().await) >= reconcile_count(before) + n).then_some(())
            }
        })
        .await;
    }
    let after = op.metrics().await;
    assert_eq!(
        requests(&after, "patch"),
        requests(&before, "patch"),
        "a refused growth was asked for again\n{after}"
    );
    let w = api.get("fixed").await.unwrap();
    assert_eq!(
        condition(&w, STORAGE_SIZED).unwrap().reason,
        REASON_EXPANSION_NOT_ALLOWED
    );

    // Back to free: the volume keeps its 10Gi (claims never shrink), and says so.
    api.patch(
        "grows",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"spec": {"plan": "free", "storage": {"size": "1Gi"}}})),
    )
    .await
    .unwrap();
    let w = wait_ws(&client, &ns, "grows", "larger than requested", |w| {
        condition(w, STORAGE_SIZED).is_some_and(|c| c.reason == REASON_LARGER_THAN_REQUESTED)
    })
    .await;
    assert_eq!(condition(&w, PROVISIONED).unwrap().status, "True");
    assert_eq!(
        requested(&pvcs.get(&names::agent("grows")).await.unwrap()),
        "10Gi"
    );
    op.stop().await.unwrap();
    for class in [&grows, &fixed] {
        remove_class_and_volume(&client, class).await;
    }
}

/// The operator's count of its requests to the API server with this verb.
fn requests(metrics: &str, verb: &str) -> u64 {
    counter_sum(
        metrics,
        &format!("clawdbot_operator_api_requests_total{{verb=\"{verb}\"}}"),
    )
}

/// A new tenant converges in one reconcile (seven creates, a status patch); a second
/// reconcile of a tenant that did not change writes nothing (no apply, no status patch); and a
/// child someone edits or deletes is still repaired (issue 15).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_tenant_converges_in_one_reconcile_and_an_unchanged_one_writes_nothing() {
    let (client, ns) = setup("once").await;
    let op = start_counted_operator(&ns, "op-a").await;
    create_endpoint(&client, &ns, "shared").await;
    // The endpoint's first status (its URL) is a reason to reconcile its workspaces: let it be
    // written before the workspace exists, so that only the workspace's own creation counts.
    let endpoints: Api<clawdbot_api::ModelEndpoint> = Api::namespaced(client.clone(), &ns);
    wait_for("the endpoint's status", TIMEOUT, || {
        let endpoints = endpoints.clone();
        async move {
            let ep = endpoints.get("shared").await.ok()?;
            ep.status?.url.map(|_| ())
        }
    })
    .await;
    // Its status write comes back as a watch event and a second reconcile of the endpoint,
    // which has nothing to write: its children are as it applied them.
    let before = op.metrics().await;
    wait_for("the endpoint's echo reconcile", TIMEOUT, || {
        let op = &op;
        async move { (reconciles_of(&op.metrics().await, "modelendpoint") >= 2).then_some(()) }
    })
    .await;
    let echoed = op.metrics().await;
    for verb in ["patch", "patch_status", "create"] {
        assert_eq!(
            requests(&echoed, verb),
            requests(&before, verb),
            "the endpoint's echo reconcile sent a {verb}\n{echoed}"
        );
    }
    let before = echoed;
    create(&client, &ns, &workspace("carol", SIMPLE_SPEC)).await;
    let w = wait_ws(&client, &ns, "carol", "provisioned", |w| {
        condition(w, PROVISIONED).is_some_and(|c| c.status == "True")
    })
    .await;
    assert!(w.finalizers().is_empty(), "{:?}", w.finalizers());
    // The status is written inside the reconcile and the reconcile is counted when it returns:
    // the status can be seen a moment before the count (one CI run read 0 here).
    let m = wait_for("the reconcile to be counted", TIMEOUT, || {
        let op = &op;
        async move {
            let m = op.metrics().await;
            (reconcile_count(&m) >= 1).then_some(m)
        }
    })
    .await;
    assert_eq!(
        reconcile_count(&m),
        1,
        "one reconcile for a new tenant\n{m}"
    );
    // Seven creates (six children and the gateway Secret with a new token: a new tenant's
    // children do not exist yet, and a create costs the API server less than an apply; no
    // finalizer); one status patch. No read: what the reconcile reads comes from the watches.
    let sent = |verb| requests(&m, verb) - requests(&before, verb);
    assert_eq!(
        (sent("patch"), sent("create"), sent("patch_status")),
        (0, 7, 1),
        "{m}"
    );

    // Someone else's finalizer is a reason to reconcile, and nothing else changed.
    let api: Api<UserWorkspace> = Api::namespaced(client.clone(), &ns);
    let both = serde_json::json!({"metadata": {"finalizers": ["example.com/keep"]}});
    api.patch("carol", &PatchParams::default(), &Patch::Merge(&both))
        .await
        .unwrap();
    wait_for("a second reconcile", TIMEOUT, || {
        let op = &op;
        async move { (reconcile_count(&op.metrics().await) >= 2).then_some(()) }
    })
    .await;
    let again = op.metrics().await;
    for verb in ["patch", "patch_status", "create", "update", "delete"] {
        assert_eq!(
            requests(&again, verb),
            requests(&m, verb),
            "a reconcile of an unchanged tenant sent a {verb}\n{again}"
        );
    }
    let none = serde_json::json!({"metadata": {"finalizers": null}});
    api.patch("carol", &PatchParams::default(), &Patch::Merge(&none))
        .await
        .unwrap();

    // Drift is repaired: the workload scaled by hand, the gateway Secret deleted.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    deployments
        .patch(
            &names::agent("carol"),
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"replicas": 3}})),
        )
        .await
        .unwrap();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let token_secret = names::gateway_token_secret("carol");
    let old_uid = secrets.get(&token_secret).await.unwrap().uid();
    secrets
        .delete(&token_secret, &DeleteParams::default())
        .await
        .unwrap();
    wait_for("the workload's replicas to be restored", TIMEOUT, || {
        let client = client.clone();
        let ns = ns.clone();
        async move { (replicas(&client, &ns, "carol").await == 1).then_some(()) }
    })
    .await;
    let secret = wait_for("the gateway Secret to be recreated", TIMEOUT, || {
        let secrets = secrets.clone();
        let token_secret = token_secret.clone();
        let old_uid = old_uid.clone();
        async move {
            secrets
                .get_opt(&token_secret)
                .await
                .ok()
                .flatten()
                .filter(|s| s.uid() != old_uid)
        }
    })
    .await;
    assert!(
        secret
            .data
            .unwrap()
            .get(names::GATEWAY_TOKEN_KEY)
            .is_some_and(|t| !t.0.is_empty())
    );
    op.stop().await.unwrap();
}

/// A new tenant's children are created (POST), so the operator's field manager owns them
/// through an `Update` entry, which an apply does not take over. The first apply of a changed
/// child hands that entry over, so a field the new desired object drops is removed rather
/// than left behind; after it, the manager has one `Apply` entry. An operator restarted in
/// between (no record of its writes) does the same; its apply of an unchanged child (every
/// child is applied once after a restart) hands nothing over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_created_child_is_handed_over_to_apply_and_loses_what_the_spec_drops() {
    use k8s_openapi::api::core::v1::ResourceRequirements;

    let (client, ns) = setup("handover").await;
    let op = start_operator(&client, &ns, "op-a").await;
    create_endpoint(&client, &ns, "shared").await;
    let limited = format!("{SIMPLE_SPEC}resources: {{limits: {{cpu: 700m}}}}\n");
    create(&client, &ns, &workspace("dora", &limited)).await;
    create(&client, &ns, &workspace("erin", &limited)).await;
    create(&client, &ns, &workspace("fay", &limited)).await;
    for n in ["dora", "erin", "fay"] {
        wait_ws(&client, &ns, n, "provisioned", |w| {
            condition(w, PROVISIONED).is_some_and(|c| c.status == "True")
        })
        .await;
    }
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let limits = |d: &Deployment| -> ResourceRequirements {
        d.spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .containers[0]
            .resources
            .clone()
            .unwrap()
    };
    let ours = |d: &Deployment| -> Vec<String> {
        let mut ops: Vec<String> = d
            .managed_fields()
            .iter()
            .filter(|e| e.manager.as_deref() == Some(names::FIELD_MANAGER))
            .map(|e| e.operation.clone().unwrap_or_default())
            .collect();
        ops.sort();
        ops
    };
    for n in ["dora", "erin", "fay"] {
        let d = deployments.get(&names::agent(n)).await.unwrap();
        assert_eq!(ours(&d), ["Update"], "created, not applied");
        assert_eq!(
            limits(&d).limits.unwrap()["cpu"],
            k8s_openapi::apimachinery::pkg::api::resource::Quantity("700m".into())
        );
    }

    // dora's limit is dropped while this operator runs; erin's after a restart.
    let api: Api<UserWorkspace> = Api::namespaced(client.clone(), &ns);
    let unlimited = serde_json::json!({"spec": {"resources": null}});
    api.patch("dora", &PatchParams::default(), &Patch::Merge(&unlimited))
        .await
        .unwrap();
    let unlimited_seen = |name: &'static str| {
        let deployments = deployments.clone();
        async move {
            wait_for(&format!("{name}'s cpu limit to go"), TIMEOUT, || {
                let deployments = deployments.clone();
                async move {
                    let d = deployments.get(&names::agent(name)).await.ok()?;
                    let l = limits(&d).limits.unwrap_or_default();
                    (!l.contains_key("cpu")).then_some(d)
                }
            })
            .await
        }
    };
    let d = unlimited_seen("dora").await;
    assert_eq!(ours(&d), ["Apply"], "{:?}", d.managed_fields());
    // The memory limit it still sets is still there.
    assert!(limits(&d).limits.unwrap().contains_key("memory"));

    op.stop().await.unwrap();
    api.patch("erin", &PatchParams::default(), &Patch::Merge(&unlimited))
        .await
        .unwrap();
    let op = start_operator(&client, &ns, "op-b").await;
    let d = unlimited_seen("erin").await;
    assert_eq!(ours(&d), ["Apply"], "{:?}", d.managed_fields());
    assert!(limits(&d).limits.unwrap().contains_key("memory"));
    // fay did not change: applied once by the new operator, nothing handed over.
    let d = wait_for("fay's workload applied after the restart", TIMEOUT, || {
        let deployments = deployments.clone();
        async move {
            let d = deployments.get(&names::agent("fay")).await.ok()?;
            (ours(&d).len() == 2).then_some(d)
        }
    })
    .await;
    assert_eq!(ours(&d), ["Apply", "Update"], "{:?}", d.managed_fields());
    assert_eq!(
        limits(&d).limits.unwrap()["cpu"],
        k8s_openapi::apimachinery::pkg::api::resource::Quantity("700m".into())
    );
    op.stop().await.unwrap();
}
