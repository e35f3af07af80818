//! The pure builders, without a cluster: field-level checks plus YAML snapshots of every object
//! a tenant and a model endpoint get.

// Test code: a panic with its message is the failure report.
#![allow(clippy::unwrap_used)]

use clawdbot_api::model_endpoint::ModelEndpoint;
use clawdbot_api::names;
use clawdbot_api::plan::Runtime;
use clawdbot_api::workspace::UserWorkspace;
use clawdbot_api::{Plan, PlanPolicy};
use clawdbot_operator::build::agent::{self, AgentInputs};
use clawdbot_operator::build::model;
use clawdbot_operator::config::OperatorConfig;
use serde::Deserialize;

fn ws(spec: &str) -> UserWorkspace {
    let mut ws = UserWorkspace::new("alice", serde_yaml::from_str(spec).unwrap());
    ws.metadata.namespace = Some("tenants".into());
    ws.metadata.uid = Some("1111-2222".into());
    ws
}

const LITE: &str = r#"
ownerId: user-1
plan: free
runtime: lite
model: {name: smollm2, endpointRef: {name: shared}, temperature: 0.7, maxTokens: 256}
storage: {size: 1Gi, storageClassName: fast}
"#;

fn inputs<'a>(ws: &'a UserWorkspace, cfg: &'a OperatorConfig, awake: bool) -> AgentInputs<'a> {
    let policy = cfg.policy(ws.spec.plan);
    AgentInputs {
        workspace: ws,
        config: cfg,
        runtime: ws.effective_runtime(&policy),
        policy,
        model: agent::model_target(
            ws,
            cfg,
            Some("http://mep-shared.tenants.svc:8000/v1".into()),
        ),
        model_endpoint: Some(("shared".into(), 8000)),
        awake,
    }
}

#[test]
fn tenant_objects_snapshot() {
    let cfg = OperatorConfig::default();
    let w = ws(LITE);
    let i = inputs(&w, &cfg, true);
    let cm = agent::build_config_map(&i).unwrap();
    insta::assert_yaml_snapshot!("service_account", agent::build_service_account(&w).unwrap());
    insta::assert_yaml_snapshot!("config_map", cm);
    insta::assert_yaml_snapshot!("pvc", agent::build_pvc(&w, true).unwrap());
    insta::assert_yaml_snapshot!(
        "deployment",
        agent::build_deployment(&i, &agent::config_hash(&cm)).unwrap()
    );
    insta::assert_yaml_snapshot!("service", agent::build_service(&w).unwrap());
    insta::assert_yaml_snapshot!("network_policy", agent::build_network_policy(&i).unwrap());
}

#[test]
fn model_endpoint_objects_snapshot() {
    let cfg = OperatorConfig::default();
    let mut ep = ModelEndpoint::new(
        "shared",
        serde_yaml::from_str(
            "engine: vllm\nmodels: [{name: qwen, source: Qwen/Qwen2.5-7B-Instruct}]\nreplicas: 2\ngpusPerReplica: 1\nmodelCache: {size: 50Gi}\ntolerations: [{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}]\n",
        )
        .unwrap(),
    );
    ep.metadata.namespace = Some("tenants".into());
    ep.metadata.uid = Some("3333".into());
    insta::assert_yaml_snapshot!(
        "model_server_deployment",
        model::build_server_deployment(&ep, &cfg).unwrap()
    );
    insta::assert_yaml_snapshot!(
        "model_server_service",
        model::build_server_service(&ep).unwrap()
    );
    insta::assert_yaml_snapshot!("model_cache_pvc", model::build_cache_pvc(&ep).unwrap());
    assert_eq!(
        model::endpoint_url(&ep).unwrap(),
        "http://mep-shared.tenants.svc:8000/v1"
    );
}

#[test]
fn agent_pod_meets_the_restricted_pod_security_standard() {
    let cfg = OperatorConfig::default();
    for runtime in ["lite", "openclaw"] {
        let w = ws(&LITE.replace("runtime: lite", &format!("runtime: {runtime}")));
        let d = agent::build_deployment(&inputs(&w, &cfg, true), "h").unwrap();
        let pod = d.spec.unwrap().template.spec.unwrap();
        let psc = pod.security_context.unwrap();
        assert_eq!(psc.run_as_non_root, Some(true));
        assert_eq!(psc.seccomp_profile.unwrap().type_, "RuntimeDefault");
        assert_eq!(pod.automount_service_account_token, Some(false));
        for c in pod.containers {
            let sc = c.security_context.unwrap();
            assert_eq!(sc.allow_privilege_escalation, Some(false), "{runtime}");
            assert_eq!(sc.read_only_root_filesystem, Some(true), "{runtime}");
            assert_eq!(
                sc.capabilities.unwrap().drop,
                Some(vec!["ALL".to_string()]),
                "{runtime}"
            );
            assert!(sc.privileged.is_none_or(|p| !p));
            // The data volume is writable; the root filesystem is not.
            let mounts = c.volume_mounts.unwrap();
            assert!(
                mounts
                    .iter()
                    .any(|m| m.mount_path == names::DATA_MOUNT && m.read_only == Some(false))
            );
        }
    }
}

#[test]
fn hibernated_or_suspended_agent_has_zero_replicas_and_keeps_its_objects() {
    let cfg = OperatorConfig::default();
    let w = ws(LITE);
    let asleep = agent::build_deployment(&inputs(&w, &cfg, false), "h").unwrap();
    let awake = agent::build_deployment(&inputs(&w, &cfg, true), "h").unwrap();
    assert_eq!(asleep.spec.as_ref().unwrap().replicas, Some(0));
    assert_eq!(awake.spec.as_ref().unwrap().replicas, Some(1));
    // Only the replica count differs: waking is a scale, not a rebuild.
    let mut a = asleep.spec.unwrap();
    a.replicas = Some(1);
    assert_eq!(a, awake.spec.unwrap());
}

#[test]
fn config_change_changes_the_hash_and_secrets_stay_out_of_the_config() {
    let cfg = OperatorConfig::default();
    let w1 = ws(LITE);
    let w2 = ws(&LITE.replace("temperature: 0.7", "temperature: 0.1"));
    let h1 = agent::config_hash(&agent::build_config_map(&inputs(&w1, &cfg, true)).unwrap());
    let h2 = agent::config_hash(&agent::build_config_map(&inputs(&w2, &cfg, true)).unwrap());
    assert_ne!(h1, h2);
    let token = agent::generate_token();
    assert_eq!(token.len(), 64);
    assert_ne!(token, agent::generate_token());
    let secret = agent::build_gateway_secret(&w1, &token).unwrap();
    assert_eq!(
        secret.metadata.labels.unwrap()[names::LABEL_SECRET_KIND],
        names::SECRET_KIND_GATEWAY_TOKEN
    );
    let cm = agent::build_config_map(&inputs(&w1, &cfg, true)).unwrap();
    assert!(!serde_json::to_string(&cm).unwrap().contains(&token));
}

#[test]
fn network_policy_admits_only_the_router_and_blocks_private_ranges() {
    let cfg = OperatorConfig {
        router_namespace: "clawdbot-system".into(),
        ..OperatorConfig::default()
    };
    let w = ws(LITE);
    let np = agent::build_network_policy(&inputs(&w, &cfg, true))
        .unwrap()
        .spec
        .unwrap();
    assert_eq!(np.policy_types.unwrap(), vec!["Ingress", "Egress"]);
    let ingress = np.ingress.unwrap();
    assert_eq!(ingress.len(), 1);
    let from = &ingress[0].from.as_ref().unwrap()[0];
    assert_eq!(
        from.pod_selector
            .as_ref()
            .unwrap()
            .match_labels
            .as_ref()
            .unwrap()[names::LABEL_ROUTER],
        "true"
    );
    assert_eq!(
        from.namespace_selector
            .as_ref()
            .unwrap()
            .match_labels
            .as_ref()
            .unwrap()["kubernetes.io/metadata.name"],
        "clawdbot-system"
    );
    let egress = np.egress.unwrap();
    let model_rule = egress.iter().find(|r| {
        r.to.as_ref().unwrap()[0]
            .pod_selector
            .as_ref()
            .and_then(|s| s.match_labels.as_ref())
            .is_some_and(|l| {
                l.get(names::LABEL_MODEL_ENDPOINT).map(String::as_str) == Some("shared")
            })
    });
    assert!(model_rule.is_some(), "egress to the model endpoint");
    let internet = egress
        .iter()
        .find_map(|r| r.to.as_ref().unwrap()[0].ip_block.clone())
        .unwrap();
    assert_eq!(internet.cidr, "0.0.0.0/0");
    assert!(internet.except.unwrap().contains(&"10.0.0.0/8".to_string()));
}

#[test]
fn own_key_is_mounted_from_the_users_secret() {
    let cfg = OperatorConfig::default();
    let w = ws(
        "ownerId: u\nplan: pro\nruntime: lite\nkeysSecretRef: {name: my-keys}\nmodel: {provider: openai, name: gpt-4o-mini}\n",
    );
    let mut i = inputs(&w, &cfg, true);
    i.model = agent::model_target(&w, &cfg, None);
    i.model_endpoint = None;
    let lite = agent::lite_config(&i);
    assert_eq!(lite.model.base_url, "https://api.openai.com/v1");
    assert_eq!(
        lite.model.api_key_file.as_deref(),
        Some("/var/run/clawdbot/keys/OPENAI_API_KEY")
    );
    let pod = agent::build_deployment(&i, "h")
        .unwrap()
        .spec
        .unwrap()
        .template
        .spec
        .unwrap();
    let keys = pod
        .volumes
        .unwrap()
        .into_iter()
        .find(|v| v.name == "provider-keys")
        .unwrap()
        .secret
        .unwrap();
    assert_eq!(keys.secret_name.as_deref(), Some("my-keys"));
    assert_eq!(keys.items.unwrap()[0].key, "OPENAI_API_KEY");
}

#[test]
fn plan_decides_runtime_and_web_search() {
    let cfg = OperatorConfig {
        web_search_url: Some("http://searxng:8080".into()),
        ..OperatorConfig::default()
    };
    let free = ws(&LITE.replace("runtime: lite\n", ""));
    assert_eq!(
        free.effective_runtime(&PlanPolicy::default_for(Plan::Free)),
        Runtime::Lite
    );
    let pro = ws(&(LITE
        .replace("runtime: lite\n", "")
        .replace("plan: free", "plan: pro")
        + "features: {webSearch: true}\n"));
    assert_eq!(
        pro.effective_runtime(&PlanPolicy::default_for(Plan::Pro)),
        Runtime::Openclaw
    );
    let lite_pro = ws(&(LITE.replace("plan: free", "plan: pro") + "features: {webSearch: true}\n"));
    let c = agent::lite_config(&inputs(&lite_pro, &cfg, true));
    let search = c.web_search.unwrap();
    assert_eq!(search.base_url, "http://searxng:8080");
    assert_eq!(
        search.max_per_day,
        PlanPolicy::default_for(Plan::Pro).web_searches_per_day
    );
    assert!(
        agent::lite_config(&inputs(&ws(LITE), &cfg, true))
            .web_search
            .is_none()
    );
}

#[test]
fn committed_crds_match_the_rust_types() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds");
    for (file, yaml) in clawdbot_operator::crds() {
        let committed = std::fs::read_to_string(dir.join(&file)).unwrap_or_default();
        assert!(
            committed == yaml,
            "crds/{file} is stale: run `cargo run -p clawdbot-operator --bin crdgen`"
        );
    }
}

#[test]
fn crds_read_well_in_kubectl() {
    use kube::CustomResourceExt;
    let crd = UserWorkspace::crd();
    assert_eq!(crd.spec.names.short_names, Some(vec!["uws".to_string()]));
    let v = &crd.spec.versions[0];
    let columns: Vec<&str> = v
        .additional_printer_columns
        .as_ref()
        .unwrap()
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(columns, vec!["Phase", "Plan", "Model", "Ready", "Age"]);
    let schema = serde_json::to_value(v.schema.as_ref().unwrap()).unwrap();
    let spec = &schema["openAPIV3Schema"]["properties"]["spec"]["properties"];
    // Every spec field has a description for `kubectl explain`.
    for (field, s) in spec.as_object().unwrap() {
        assert!(
            s.get("description").is_some(),
            "spec.{field} has no description"
        );
    }
    assert_eq!(
        spec["ownerId"]["x-kubernetes-validations"][0]["rule"],
        "self == oldSelf"
    );
    let conditions = &schema["openAPIV3Schema"]["properties"]["status"]["properties"]["conditions"];
    assert_eq!(conditions["x-kubernetes-list-type"], "map");
    assert_eq!(
        ModelEndpoint::crd().spec.names.short_names,
        Some(vec!["mep".to_string()])
    );
}

#[test]
fn examples_parse_and_validate() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value = serde_yaml::Value::deserialize(doc).unwrap();
            match value["kind"].as_str() {
                Some("UserWorkspace") => {
                    let ws: UserWorkspace = serde_yaml::from_value(value).unwrap();
                    let policy = PlanPolicy::default_for(ws.spec.plan);
                    assert_eq!(ws.validate(&policy), Ok(()), "{}", path.display());
                    seen += 1;
                }
                Some("ModelEndpoint") => {
                    let ep: ModelEndpoint = serde_yaml::from_value(value).unwrap();
                    assert_eq!(ep.validate(), Ok(()), "{}", path.display());
                    seen += 1;
                }
                _ => {}
            }
        }
    }
    assert!(seen >= 4, "examples/ holds the CRD examples");
}

#[test]
fn openclaw_tenant_gets_its_config_and_token_from_the_secret() {
    let cfg = OperatorConfig::default();
    let w = ws(&LITE.replace("runtime: lite", "runtime: openclaw"));
    let i = inputs(&w, &cfg, true);
    let cm = agent::build_config_map(&i).unwrap();
    let data = cm.data.clone().unwrap();
    assert!(
        data.contains_key(names::OPENCLAW_CONFIG_FILE),
        "{:?}",
        data.keys()
    );
    let config: serde_json::Value =
        serde_json::from_str(&data[names::OPENCLAW_CONFIG_FILE]).unwrap();
    assert_eq!(config["gateway"]["port"], 18789);
    let d = agent::build_deployment(&i, &agent::config_hash(&cm)).unwrap();
    let template = d.spec.unwrap().template;
    // Hot reload, not a roll, carries config changes to OpenClaw.
    assert!(template.metadata.unwrap().annotations.is_none());
    let pod = template.spec.unwrap();
    let c = &pod.containers[0];
    let token = c
        .env
        .as_ref()
        .unwrap()
        .iter()
        .find(|e| e.name == "OPENCLAW_GATEWAY_TOKEN")
        .unwrap();
    assert!(
        token.value.is_none(),
        "the token never appears in the pod spec"
    );
    let key_ref = token
        .value_from
        .as_ref()
        .unwrap()
        .secret_key_ref
        .as_ref()
        .unwrap();
    assert_eq!(key_ref.name, names::gateway_token_secret("alice"));
    assert_eq!(key_ref.key, names::GATEWAY_TOKEN_KEY);
    let startup = c.startup_probe.as_ref().unwrap();
    assert_eq!(
        startup.http_get.as_ref().unwrap().path.as_deref(),
        Some("/readyz")
    );
    assert!(startup.period_seconds.unwrap() * startup.failure_threshold.unwrap() >= 180);
    assert_eq!(pod.termination_grace_period_seconds, Some(60));
}

/// The build step of a reconcile: every desired object of a tenant at once, each stamped with
/// the hash of what it says, so that the apply step can leave alone what did not change.
#[test]
fn build_tenant_returns_every_object_stamped_with_what_it_says() {
    use clawdbot_operator::build::tenant::{TenantObjects, build_tenant, with_token};
    use clawdbot_operator::changes::DESIRED_HASH;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use kube::Resource;

    fn hashes(t: &TenantObjects) -> Vec<(String, String)> {
        fn h<K: Resource>(o: &K) -> (String, String) {
            (
                o.meta().name.clone().unwrap(),
                o.meta().annotations.as_ref().unwrap()[DESIRED_HASH].clone(),
            )
        }
        let mut v = vec![
            h(&t.service_account),
            h(&t.config_map),
            h(&t.gateway_secret),
            h(&t.pvc),
            h(&t.deployment),
            h(&t.service),
            h(&t.network_policy),
        ];
        v.extend(t.dedicated_endpoint.as_ref().map(h));
        v
    }

    let cfg = OperatorConfig::default();
    let w = ws(LITE);
    let size = Quantity("1Gi".into());
    let t = build_tenant(&inputs(&w, &cfg, true), &size).unwrap();
    // The same objects the single builders make, plus the stamp; the tenant's one volume at
    // the size given (the storage plan's, not necessarily the spec's).
    let cm = agent::build_config_map(&inputs(&w, &cfg, true)).unwrap();
    assert_eq!(t.config_map.data, cm.data);
    assert_eq!(
        t.deployment.spec,
        agent::build_deployment(&inputs(&w, &cfg, true), &agent::config_hash(&cm))
            .unwrap()
            .spec
    );
    let bigger = build_tenant(&inputs(&w, &cfg, true), &Quantity("10Gi".into())).unwrap();
    assert_eq!(
        bigger
            .pvc
            .spec
            .as_ref()
            .unwrap()
            .resources
            .as_ref()
            .unwrap()
            .requests
            .as_ref()
            .unwrap()["storage"],
        Quantity("10Gi".into())
    );
    assert!(t.dedicated_endpoint.is_none());
    // The token is not derived from the workspace: the apply step adds it.
    assert!(t.gateway_secret.data.is_none());
    let with = with_token(t.gateway_secret.clone(), "tok");
    assert_eq!(
        with.data.unwrap()[names::GATEWAY_TOKEN_KEY].0,
        b"tok".to_vec()
    );

    // Deterministic: the same workspace gives the same hashes, all distinct.
    let again = build_tenant(&inputs(&w, &cfg, true), &size).unwrap();
    assert_eq!(hashes(&t), hashes(&again));
    let mut distinct: Vec<_> = hashes(&t).into_iter().map(|(_, h)| h).collect();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 7);

    // A change stamps only what it changes: a new temperature is new config (and a new pod
    // template through the config hash), nothing else; a bigger volume is only a new claim.
    let changed = |a: &TenantObjects, b: &TenantObjects| -> Vec<String> {
        hashes(a)
            .into_iter()
            .zip(hashes(b))
            .filter(|(x, y)| x.1 != y.1)
            .map(|(x, _)| x.0)
            .collect()
    };
    let mut warmer = w.clone();
    warmer.spec.model.temperature = Some(0.2);
    let t2 = build_tenant(&inputs(&warmer, &cfg, true), &size).unwrap();
    assert_eq!(changed(&t, &t2), ["claw-alice", "claw-alice"]);
    assert!(
        t2.config_map.meta().annotations.as_ref().unwrap()[DESIRED_HASH]
            != t.config_map.meta().annotations.as_ref().unwrap()[DESIRED_HASH]
    );
    assert!(
        t2.deployment.meta().annotations.as_ref().unwrap()[DESIRED_HASH]
            != t.deployment.meta().annotations.as_ref().unwrap()[DESIRED_HASH]
    );
    assert_eq!(changed(&t, &bigger), ["claw-alice"]);
    assert!(
        bigger.pvc.meta().annotations.as_ref().unwrap()[DESIRED_HASH]
            != t.pvc.meta().annotations.as_ref().unwrap()[DESIRED_HASH]
    );
    // Asleep: only the workload changes (zero replicas).
    let asleep = build_tenant(&inputs(&w, &cfg, false), &size).unwrap();
    assert_eq!(changed(&t, &asleep).len(), 1);
    assert_eq!(asleep.deployment.spec.as_ref().unwrap().replicas, Some(0));
}

/// The retention policy is the volume claim's owner reference (as a StatefulSet's claim
/// retention policy is): `Delete` makes the workspace its owner, so garbage collection takes
/// it with the workspace; `Retain`, the default, leaves it unowned. Changing the policy
/// changes the claim's stamp, so the claim is applied again.
#[test]
fn the_volume_claim_is_owned_by_the_workspace_only_when_its_retention_is_delete() {
    use clawdbot_api::workspace::RetentionPolicy;
    use clawdbot_operator::build::tenant::build_tenant;
    use clawdbot_operator::changes::DESIRED_HASH;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use kube::Resource;

    let cfg = OperatorConfig::default();
    let size = Quantity("1Gi".into());
    let retained = ws(LITE);
    assert_eq!(retained.spec.storage.retention, RetentionPolicy::Retain);
    let mut deleted = retained.clone();
    deleted.spec.storage.retention = RetentionPolicy::Delete;
    let keep = build_tenant(&inputs(&retained, &cfg, true), &size).unwrap();
    let drop = build_tenant(&inputs(&deleted, &cfg, true), &size).unwrap();

    assert!(keep.pvc.meta().owner_references.is_none());
    let owners = drop.pvc.meta().owner_references.clone().unwrap();
    assert_eq!(owners.len(), 1);
    assert_eq!(owners[0].kind, "UserWorkspace");
    assert_eq!(owners[0].name, "alice");
    assert_eq!(owners[0].uid, retained.meta().uid.clone().unwrap());
    // Every other child is owned either way.
    for t in [&keep, &drop] {
        assert_eq!(
            t.deployment.meta().owner_references.as_ref().unwrap().len(),
            1
        );
        assert_eq!(
            t.config_map.meta().owner_references.as_ref().unwrap().len(),
            1
        );
    }
    let stamp = |t: &clawdbot_operator::build::tenant::TenantObjects| {
        t.pvc.meta().annotations.as_ref().unwrap()[DESIRED_HASH].clone()
    };
    assert_ne!(stamp(&keep), stamp(&drop));
    assert_eq!(
        keep.deployment.meta().annotations.as_ref().unwrap()[DESIRED_HASH],
        drop.deployment.meta().annotations.as_ref().unwrap()[DESIRED_HASH]
    );
    // The claim keeps its labels either way: a retained volume can be found by its workspace.
    assert_eq!(
        keep.pvc.meta().labels.as_ref().unwrap()[names::LABEL_WORKSPACE],
        "alice"
    );
}
