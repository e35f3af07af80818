//! The Helm chart `charts/clawdbot`, rendered and linted by Helm's own Go library (PyPI
//! `helm-python-sdk`, installed by `hack/install-helm.sh`, driven through `hack/helm.py`): the
//! CRDs are the generated ones, every values file renders and lints clean, the schema refuses
//! bad values by name, tenants become valid UserWorkspaces, secrets stay out of NOTES, every
//! manifest passes the real API server's validation (`kubectl apply --dry-run=server`), and the
//! operator reconciles tenants with nothing but the chart's RBAC.

// Test code: a panic with its message is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use clawdbot_api::workspace::{Phase, UserWorkspace};
use clawdbot_api::{ModelEndpoint, Plan};
use clawdbot_operator::config::{OperatorConfig, parse_plans};
use clawdbot_testkit::helm::helm;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::api::{Api, DeleteParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_yaml::Value;

use common::*;

/// The two Kubernetes versions the chart is rendered for: the local API server's and a
/// current one.
const OLD_KUBE: &str = "v1.20.2";
const NEW_KUBE: &str = "v1.30.0";

/// The least a render needs besides the defaults: where Postgres and Redis are.
const STORES: &[&str] = &[
    "--set",
    "database.url=postgres://clawdbot:pw@db.example:5432/clawdbot",
    "--set",
    "redis.url=redis://redis.example:6379",
];

fn root() -> PathBuf {
    clawdbot_testkit::repo_root()
}

fn chart() -> PathBuf {
    root().join("charts/clawdbot")
}

/// `helm template` of the chart as release `clawdbot` in `ns`.
fn render(ns: &str, kube: &str, extra: &[&str]) -> Result<String, String> {
    let chart = chart();
    let mut args = vec![
        "template",
        "clawdbot",
        chart.to_str().unwrap(),
        "-n",
        ns,
        "--kube-version",
        kube,
    ];
    args.extend_from_slice(extra);
    helm(&args)
}

fn render_ok(ns: &str, kube: &str, extra: &[&str]) -> String {
    render(ns, kube, extra).unwrap_or_else(|e| panic!("render {extra:?}: {e}"))
}

fn docs(yaml: &str) -> Vec<Value> {
    use serde::Deserialize;
    serde_yaml::Deserializer::from_str(yaml)
        .map(|d| Value::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

fn kind(v: &Value) -> &str {
    v["kind"].as_str().unwrap_or_default()
}

fn of_kind<'a>(all: &'a [Value], k: &str) -> Vec<&'a Value> {
    all.iter().filter(|v| kind(v) == k).collect()
}

fn example(name: &str) -> String {
    root()
        .join("examples")
        .join(name)
        .to_str()
        .unwrap()
        .to_string()
}

/// A values file written for one test.
fn values_file(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f
}

/// The plans file the chart renders, read by the operator's own parser.
fn rendered_plans(all: &[Value]) -> std::collections::BTreeMap<Plan, clawdbot_api::PlanPolicy> {
    let cm = of_kind(all, "ConfigMap")
        .into_iter()
        .find(|c| c["metadata"]["name"].as_str().unwrap().ends_with("-plans"))
        .expect("plans ConfigMap");
    parse_plans(cm["data"]["plans.yaml"].as_str().unwrap()).unwrap()
}

#[test]
fn chart_crds_are_the_generated_ones() {
    let names = |dir: &Path| {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let (generated, charted) = (root().join("crds"), chart().join("crds"));
    assert_eq!(
        names(&generated),
        names(&charted),
        "charts/clawdbot/crds/ must hold exactly the files of crds/"
    );
    for name in names(&generated) {
        assert!(
            std::fs::read(generated.join(&name)).unwrap()
                == std::fs::read(charted.join(&name)).unwrap(),
            "charts/clawdbot/crds/{name} differs from crds/{name}: run `cp crds/*.yaml charts/clawdbot/crds/`"
        );
    }
}

#[test]
fn chart_lints_clean_with_every_values_file() {
    let stores =
        values_file("database: {url: postgres://u:p@db:5432/x}\nredis: {url: redis://r:6379}\n");
    let small = example("values-small.yaml");
    let large = example("values-large.yaml");
    let local = example("values-local-node.yaml");
    let chart = chart();
    for file in [
        stores.path().to_str().unwrap(),
        small.as_str(),
        large.as_str(),
        local.as_str(),
    ] {
        for kube in [OLD_KUBE, NEW_KUBE] {
            let out = helm(&[
                "lint",
                chart.to_str().unwrap(),
                "--strict",
                "--kube-version",
                kube,
                "-f",
                file,
            ])
            .unwrap_or_else(|e| panic!("lint with {file} on {kube}: {e}"));
            assert!(
                !out.contains("[WARNING]") && !out.contains("[ERROR]"),
                "lint with {file} on {kube}:\n{out}"
            );
            assert!(
                out.contains("1 chart(s) linted, 0 chart(s) failed"),
                "{out}"
            );
        }
    }
}

/// Every container of every pod template runs under the restricted Pod Security Standard.
fn assert_restricted(all: &[Value]) {
    let mut pods = 0;
    for obj in all {
        let spec = match kind(obj) {
            "Deployment" | "StatefulSet" => &obj["spec"]["template"]["spec"],
            "Pod" => &obj["spec"],
            _ => continue,
        };
        pods += 1;
        let name = obj["metadata"]["name"].as_str().unwrap();
        let pod = &spec["securityContext"];
        assert_eq!(pod["runAsNonRoot"], Value::Bool(true), "{name}");
        assert_eq!(pod["seccompProfile"]["type"], "RuntimeDefault", "{name}");
        for c in spec["containers"].as_sequence().unwrap() {
            let sc = &c["securityContext"];
            assert_eq!(sc["allowPrivilegeEscalation"], Value::Bool(false), "{name}");
            assert_eq!(sc["readOnlyRootFilesystem"], Value::Bool(true), "{name}");
            assert_eq!(sc["capabilities"]["drop"][0], "ALL", "{name}");
        }
    }
    assert!(pods > 0);
}

#[test]
fn default_values_render_for_old_and_current_kubernetes() {
    // Nothing says where Postgres and Redis are: refused, naming the setting.
    let err = render("clawdbot", NEW_KUBE, &[]).unwrap_err();
    assert!(err.contains("database.url"), "{err}");

    for (kube, pdb, hpa) in [
        (OLD_KUBE, "policy/v1beta1", "autoscaling/v2beta2"),
        (NEW_KUBE, "policy/v1", "autoscaling/v2"),
    ] {
        let all = docs(&render_ok("clawdbot", kube, STORES));
        let api = |k: &str| {
            of_kind(&all, k)[0]["apiVersion"]
                .as_str()
                .unwrap()
                .to_string()
        };
        assert_eq!(api("PodDisruptionBudget"), pdb, "{kube}");
        assert_eq!(api("HorizontalPodAutoscaler"), hpa, "{kube}");
        assert_eq!(of_kind(&all, "Deployment").len(), 2, "operator and router");
        assert!(of_kind(&all, "UserWorkspace").is_empty());
        // Off by default: bundled stores, Ingress, Prometheus Operator objects.
        for k in ["StatefulSet", "Ingress", "ServiceMonitor", "PrometheusRule"] {
            assert!(of_kind(&all, k).is_empty(), "{k} rendered by default");
        }
        assert_restricted(&all);
        // The operator gets the plans file; both components watch the tenant namespace only.
        let operator = of_kind(&all, "Deployment")
            .into_iter()
            .find(|d| d["metadata"]["name"] == "clawdbot-operator")
            .unwrap();
        let c = &operator["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["args"][1], "/etc/clawdbot/plans/plans.yaml");
        let env: Vec<&str> = c["env"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap())
            .collect();
        assert!(env.contains(&"WATCH_NAMESPACE") && env.contains(&"POD_NAME"));
        let plans = rendered_plans(&all);
        assert_eq!(plans.len(), 3);
        for plan in Plan::ALL {
            assert_eq!(
                plans[&plan],
                clawdbot_api::PlanPolicy::default_for(plan),
                "values.yaml's plans are the built-in defaults"
            );
        }
    }
}

#[test]
fn every_example_renders() {
    let small = example("values-small.yaml");
    let small = docs(&render_ok("clawdbot", NEW_KUBE, &["-f", small.as_str()]));
    assert_eq!(of_kind(&small, "UserWorkspace").len(), 10);
    assert_eq!(
        of_kind(&small, "StatefulSet").len(),
        2,
        "bundled Postgres and Redis"
    );
    assert!(of_kind(&small, "HorizontalPodAutoscaler").is_empty());
    let router = of_kind(&small, "Deployment")
        .into_iter()
        .find(|d| d["metadata"]["name"] == "clawdbot-router")
        .unwrap();
    assert_eq!(router["spec"]["replicas"], 1);
    assert_restricted(&small);

    let large = example("values-large.yaml");
    let large = docs(&render_ok("clawdbot", NEW_KUBE, &["-f", large.as_str()]));
    let hpa = of_kind(&large, "HorizontalPodAutoscaler")[0];
    assert_eq!(hpa["spec"]["minReplicas"], 6);
    assert_eq!(of_kind(&large, "ServiceMonitor").len(), 2);
    assert_eq!(of_kind(&large, "PrometheusRule").len(), 1);
    assert_eq!(of_kind(&large, "Namespace").len(), 1);
    assert!(
        of_kind(&large, "Secret").is_empty(),
        "existingSecret: the chart writes no Secret of its own"
    );
    // Tenant objects and the tenant Roles are in the tenant namespace.
    for k in ["UserWorkspace", "ModelEndpoint", "Role"] {
        assert!(
            of_kind(&large, k)
                .iter()
                .any(|o| o["metadata"]["namespace"] == "clawdbot-tenants"),
            "{k}"
        );
    }

    // Model endpoints from values and the Ollama example are valid ModelEndpoints.
    let mut endpoints: Vec<ModelEndpoint> = [&small, &large]
        .iter()
        .flat_map(|all| of_kind(all, "ModelEndpoint"))
        .map(|v| serde_yaml::from_value(v.clone()).unwrap())
        .collect();
    let ollama = std::fs::read_to_string(example("model-endpoint-ollama.yaml")).unwrap();
    endpoints.push(serde_yaml::from_str(&ollama).unwrap());
    for ep in &endpoints {
        assert_eq!(ep.validate(), Ok(()), "{:?}", ep.metadata.name);
    }
    assert!(endpoints.iter().any(|e| e.spec.gpus_per_replica > 0));
    assert!(endpoints.iter().any(|e| e.spec.gpus_per_replica == 0));

    // Every rendered tenant passes the operator's own validation under the rendered plans.
    for all in [&small, &large] {
        let plans = rendered_plans(all);
        for v in of_kind(all, "UserWorkspace") {
            let ws: UserWorkspace = serde_yaml::from_value(v.clone()).unwrap();
            assert_eq!(
                ws.validate(&plans[&ws.spec.plan]),
                Ok(()),
                "{:?}",
                ws.metadata.name
            );
        }
    }
}

#[test]
fn schema_rejects_bad_values_with_a_message_naming_them() {
    let tenant = "tenants[0].name=alice,tenants[0].ownerId=u-1";
    let cases: &[(&str, &[&str])] = &[
        ("router.replica=3", &["/router", "'replica' not allowed"]),
        (
            "tenancy.namespaces=x",
            &["/tenancy", "'namespaces' not allowed"],
        ),
        (
            &format!("{tenant},tenants[0].plan=gold"),
            &["/tenants/0/plan", "'free', 'pro', 'team'"],
        ),
        (
            &format!("{tenant},tenants[0].storage.size=-1Gi"),
            &["/tenants/0/storage/size", "-1Gi"],
        ),
        (
            &format!("{tenant},tenants[0].storge.size=1Gi"),
            &["/tenants/0", "'storge' not allowed"],
        ),
        (
            "plans.gold.messagesPerDay=5",
            &["/plans", "'gold' not allowed"],
        ),
        (
            "plans.free.messagesPerDay=-5",
            &["/plans/free/messagesPerDay", "-5"],
        ),
        ("operator.replicas=-1", &["/operator/replicas", "-1"]),
        (
            "router.settings.workerThreads=0",
            &["/router/settings/workerThreads", "0"],
        ),
        (
            "tenants[0].name=Bad_Name,tenants[0].ownerId=u",
            &["/tenants/0/name", "Bad_Name"],
        ),
        ("tenants[0].name=alice", &["/tenants/0", "ownerId"]),
        (
            "modelEndpoints[0].name=m,modelEndpoints[0].engine=tgi,modelEndpoints[0].models[0].name=x",
            &["/modelEndpoints/0/engine", "vllm"],
        ),
        (
            "router.billing.gracePeriod=3 days",
            &["/router/billing/gracePeriod", "3 days"],
        ),
        (
            "router.billing.secretKey=sk_live_x",
            &["/router/billing", "'secretKey' not allowed"],
        ),
    ];
    for (set, expect) in cases {
        let mut args = STORES.to_vec();
        args.extend(["--set", set]);
        let err = render("clawdbot", NEW_KUBE, &args)
            .err()
            .unwrap_or_else(|| panic!("{set} was accepted"));
        for e in *expect {
            assert!(
                err.contains(e),
                "{set}: the error should name {e:?}:\n{err}"
            );
        }
    }
    // Two tenants with one name: refused by the template, naming it.
    let mut args = STORES.to_vec();
    args.extend([
        "--set",
        "tenants[0].name=a,tenants[0].ownerId=o1,tenants[1].name=a,tenants[1].ownerId=o2",
    ]);
    let err = render("clawdbot", NEW_KUBE, &args).unwrap_err();
    assert!(
        err.contains("tenants[1]") && err.contains("\"a\" is used twice"),
        "{err}"
    );
}

const TENANTS: &str = r#"
database: {url: "postgres://u:p@db:5432/x"}
redis: {url: "redis://r:6379"}
plans:
  free: {messagesPerDay: 7, maxStorageBytes: 2147483648}
tenantDefaults:
  model: {name: qwen2.5-7b-instruct, endpointRef: {name: shared}}
  storage: {size: 1Gi, retention: Retain}
  idleTimeout: 30m
tenants:
  - {name: alice, ownerId: owner-alice, plan: free}
  - {name: bob, ownerId: owner-bob, plan: pro, runtime: openclaw}
  - name: acme
    ownerId: owner-acme
    plan: team
    storage: {size: 20Gi}
    idleTimeout: "0"
    labels: {team: acme}
  - name: dana
    ownerId: owner-dana
    plan: team
    model: {name: llama3.1:8b, dedicated: {engine: ollama, models: [{name: llama3.1:8b}]}}
  - name: erik
    ownerId: owner-erik
    plan: pro
    model: {provider: anthropic, name: claude-sonnet-4-5}
    keysSecretRef: {name: erik-keys}
"#;

fn workspaces(all: &[Value]) -> Vec<UserWorkspace> {
    of_kind(all, "UserWorkspace")
        .into_iter()
        .map(|v| serde_yaml::from_value(v.clone()).unwrap())
        .collect()
}

#[test]
fn tenants_become_userworkspaces() {
    let values = values_file(TENANTS);
    let all = docs(&render_ok(
        "platform",
        NEW_KUBE,
        &["-f", values.path().to_str().unwrap()],
    ));
    let plans = rendered_plans(&all);
    assert_eq!(
        plans[&Plan::Free].messages_per_day,
        7,
        "a plan figure from values"
    );
    assert_eq!(plans[&Plan::Free].max_storage_bytes, 2_147_483_648);
    assert_eq!(
        plans[&Plan::Pro],
        clawdbot_api::PlanPolicy::default_for(Plan::Pro)
    );

    let ws = workspaces(&all);
    let names: Vec<&str> = ws
        .iter()
        .map(|w| w.metadata.name.as_deref().unwrap())
        .collect();
    assert_eq!(names, ["alice", "bob", "acme", "dana", "erik"]);
    for w in &ws {
        assert_eq!(w.metadata.namespace.as_deref(), Some("platform"));
        assert_eq!(w.validate(&plans[&w.spec.plan]), Ok(()), "{names:?}");
    }
    assert_eq!(
        ws[0].spec.model.name, "qwen2.5-7b-instruct",
        "from tenantDefaults"
    );
    // A tenant's own model source replaces the default endpointRef instead of joining it.
    let (dana, erik) = (&ws[3].spec.model, &ws[4].spec.model);
    assert!(dana.dedicated.is_some() && dana.endpoint_ref.is_none());
    assert!(erik.endpoint_ref.is_none() && erik.dedicated.is_none());
    let (alice, bob, acme) = (&ws[0], &ws[1], &ws[2]);
    assert_eq!(alice.spec.owner_id, "owner-alice");
    assert_eq!(alice.spec.plan, Plan::Free);
    assert_eq!(
        alice.idle_timeout(),
        Some(std::time::Duration::from_secs(1800))
    );
    assert_eq!(bob.spec.plan, Plan::Pro);
    assert_eq!(
        bob.effective_runtime(&plans[&Plan::Pro]),
        clawdbot_api::plan::Runtime::Openclaw
    );
    // An override replaces the default field by field: acme's size, the default retention.
    let acme_value = of_kind(&all, "UserWorkspace")[2];
    assert_eq!(acme_value["spec"]["storage"]["size"], "20Gi");
    assert_eq!(acme_value["spec"]["storage"]["retention"], "Retain");
    assert_eq!(acme.idle_timeout(), None, "0: never hibernate");
    assert_eq!(acme_value["metadata"]["labels"]["team"], "acme");
    assert!(
        acme_value["spec"].get("labels").is_none(),
        "labels are metadata, not spec"
    );

    // A changed list: bob leaves, alice moves to pro, carol arrives.
    let changed = values_file(
        &TENANTS
            .replace("  - {name: bob, ownerId: owner-bob, plan: pro, runtime: openclaw}\n", "")
            .replace(
                "{name: alice, ownerId: owner-alice, plan: free}",
                "{name: alice, ownerId: owner-alice, plan: pro}\n  - {name: carol, ownerId: owner-carol, plan: free}",
            ),
    );
    let ws = workspaces(&docs(&render_ok(
        "platform",
        NEW_KUBE,
        &["-f", changed.path().to_str().unwrap()],
    )));
    let now: Vec<(&str, Plan)> = ws
        .iter()
        .map(|w| (w.metadata.name.as_deref().unwrap(), w.spec.plan))
        .collect();
    assert_eq!(
        now,
        [
            ("alice", Plan::Pro),
            ("carol", Plan::Free),
            ("acme", Plan::Team),
            ("dana", Plan::Team),
            ("erik", Plan::Pro)
        ]
    );

    // Every tenant on their own key through tenantDefaults (as on the local node): the
    // chart's default endpointRef must not survive the merge, or the operator refuses them all.
    let own_key = values_file(
        "database: {url: postgres://u:p@db:5432/x}\nredis: {url: redis://r:6379}\n\
         tenantDefaults:\n  model: {provider: openai, name: gpt-4o-mini}\n  keysSecretRef: {name: keys}\n\
         tenants:\n  - {name: fay, ownerId: owner-fay, plan: pro}\n",
    );
    let fay = workspaces(&docs(&render_ok(
        "platform",
        NEW_KUBE,
        &["-f", own_key.path().to_str().unwrap()],
    )))
    .remove(0);
    assert!(
        fay.spec.model.endpoint_ref.is_none(),
        "no endpointRef with an own key: {:?}",
        fay.spec.model
    );
    assert_eq!(
        fay.validate(&OperatorConfig::default().policy(Plan::Pro)),
        Ok(()),
        "the operator accepts the tenant"
    );
}

/// Distinctive values for every secret setting.
const SECRETS: &[(&str, &str)] = &[
    ("adminToken", "admin-tok-9f8e7d"),
    (
        "masterKey",
        "k9:bWFzdGVyLWtleS0xYTJiM2MtbWFzdGVyLWtleS0xYTI=",
    ),
    ("jwtSecret", "jwt-secret-4d5e6f"),
    ("webTokenSecret", "web-secret-7a8b9c"),
    ("telegramBotToken", "123456:tg-bot-secret"),
    ("telegramWebhookSecret", "tg-hook-secret-0a1b"),
    ("whatsappAppSecret", "wa-app-secret-2c3d"),
    ("whatsappVerifyToken", "wa-verify-secret-4e5f"),
    ("whatsappAccessToken", "wa-access-secret-6a7b"),
    ("discordBotToken", "discord-bot-secret-8c9d"),
    ("stripeSecretKey", "sk_test_stripe-secret"),
    ("stripeWebhookSecret", "whsec_stripe-hook-secret"),
];

#[test]
fn secret_values_reach_only_the_secret_never_notes_or_other_manifests() {
    let mut args: Vec<String> = STORES.iter().map(|s| s.to_string()).collect();
    for (k, v) in SECRETS {
        args.push("--set".into());
        args.push(format!("secrets.{k}={v}"));
    }
    args.extend(["--set".into(), "ingress.enabled=true".into()]);
    args.extend(["--set".into(), "ingress.host=bots.example.com".into()]);
    args.extend(["--set".into(), "ingress.tlsSecretName=bots-tls".into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let manifests = render_ok("clawdbot", NEW_KUBE, &args);
    let mut notes_args = args.clone();
    notes_args.push("--notes");
    let notes = render_ok("clawdbot", NEW_KUBE, &notes_args);

    // NOTES says how to connect each bot, with the public URL, and reads secrets by command.
    assert!(
        notes.contains("https://bots.example.com/webhooks/telegram"),
        "{notes}"
    );
    assert!(
        notes.contains("/webhooks/whatsapp") && notes.contains("/webhooks/discord/interactions")
    );
    assert!(notes.contains("s WHATSAPP_VERIFY_TOKEN"), "{notes}");
    // With a public URL the router registers its own Telegram webhook; without one it polls.
    assert!(
        notes.contains("the router registers its own webhook"),
        "{notes}"
    );
    let polling = render_ok("clawdbot", NEW_KUBE, &[STORES, &["--notes"][..]].concat());
    assert!(polling.contains("long-polls Telegram"), "{polling}");

    let all = docs(&manifests);
    let secret = of_kind(&all, "Secret")[0];
    let stored: Vec<String> = secret_data(secret).into_values().collect();
    let postgres_password = "pw@db.example";
    for (key, value) in SECRETS.iter().chain([&("database.url", postgres_password)]) {
        assert!(!notes.contains(value), "NOTES prints {key}");
        assert!(
            stored.iter().any(|s| s.contains(value)),
            "{key} is not in the chart's Secret"
        );
        for obj in all.iter().filter(|o| kind(o) != "Secret") {
            let text = serde_yaml::to_string(obj).unwrap();
            assert!(!text.contains(value), "{key} appears in a {}", kind(obj));
        }
    }
    assert_eq!(
        secret["metadata"]["annotations"]["helm.sh/resource-policy"], "keep",
        "an uninstall must not lose the master key"
    );
}

/// The router container's environment: name -> (value, or `secret/key` of a secretKeyRef).
fn router_env(all: &[Value]) -> std::collections::BTreeMap<String, String> {
    let router = of_kind(all, "Deployment")
        .into_iter()
        .find(|d| {
            d["metadata"]["name"]
                .as_str()
                .is_some_and(|n| n.ends_with("router"))
        })
        .expect("router Deployment");
    router["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_sequence()
        .expect("env")
        .iter()
        .map(|e| {
            let name = e["name"].as_str().unwrap().to_string();
            let value = match e["value"].as_str() {
                Some(v) => v.to_string(),
                None => {
                    let r = &e["valueFrom"]["secretKeyRef"];
                    format!(
                        "{}/{}",
                        r["name"].as_str().unwrap_or("?"),
                        r["key"].as_str().unwrap_or("?")
                    )
                }
            };
            (name, value)
        })
        .collect()
}

#[test]
fn billing_settings_reach_the_router_and_its_keys_only_from_the_secret() {
    let stripe = [
        "--set",
        "secrets.stripeSecretKey=sk_test_wired-key-5x6y",
        "--set",
        "secrets.stripeWebhookSecret=whsec_wired-hook-7z8w",
    ];
    let public = [
        "--set",
        "ingress.enabled=true",
        "--set",
        "ingress.host=bots.example.com",
        "--set",
        "ingress.tlsSecretName=bots-tls",
    ];
    // Defaults, with a public URL: the dashboard's billing page is where Stripe sends users.
    let all = docs(&render_ok(
        "clawdbot",
        NEW_KUBE,
        &[STORES, &stripe[..], &public[..]].concat(),
    ));
    let secret_name = of_kind(&all, "Secret")[0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let env = router_env(&all);
    for key in ["STRIPE_SECRET_KEY", "STRIPE_WEBHOOK_SECRET"] {
        assert_eq!(env[key], format!("{secret_name}/{key}"), "{key}");
        assert!(secret_data(of_kind(&all, "Secret")[0]).contains_key(key));
    }
    assert_eq!(env["STRIPE_API_BASE"], "https://api.stripe.com");
    assert_eq!(env["BILLING_GRACE_PERIOD"], "72h");
    assert_eq!(
        env["BILLING_RETURN_URL"],
        "https://bots.example.com/dashboard/billing"
    );

    // Set from values; the router parses the grace period the schema lets through.
    let set = [
        "--set",
        "router.billing.apiBase=http://stripe.test:12111",
        "--set",
        "router.billing.gracePeriod=36h",
        "--set",
        "router.billing.returnUrl=https://app.example.com/dashboard/billing",
    ];
    let args = [STORES, &stripe[..], &public[..], &set[..]].concat();
    let manifests = render_ok("clawdbot", NEW_KUBE, &args);
    let env = router_env(&docs(&manifests));
    assert_eq!(env["STRIPE_API_BASE"], "http://stripe.test:12111");
    assert_eq!(env["BILLING_GRACE_PERIOD"], "36h");
    assert_eq!(
        env["BILLING_RETURN_URL"],
        "https://app.example.com/dashboard/billing"
    );
    let notes = render_ok(
        "clawdbot",
        NEW_KUBE,
        &[&args[..], &["--notes"][..]].concat(),
    );
    for value in ["sk_test_wired-key-5x6y", "whsec_wired-hook-7z8w"] {
        assert!(!notes.contains(value), "NOTES prints a Stripe secret");
        for obj in docs(&manifests).iter().filter(|o| kind(o) != "Secret") {
            let text = serde_yaml::to_string(obj).unwrap();
            assert!(!text.contains(value), "a Stripe secret in a {}", kind(obj));
        }
    }

    // Without a public URL or a return URL, none is set (the router then needs
    // ROUTER_DASHBOARD_ORIGIN, and says so).
    let env = router_env(&docs(&render_ok("clawdbot", NEW_KUBE, STORES)));
    assert!(!env.contains_key("BILLING_RETURN_URL"));
}

#[test]
fn the_routers_worker_threads_come_from_values() {
    let env = router_env(&docs(&render_ok("clawdbot", NEW_KUBE, STORES)));
    assert_eq!(env["ROUTER_WORKER_THREADS"], "1");
    let set = ["--set", "router.settings.workerThreads=3"];
    let env = router_env(&docs(&render_ok(
        "clawdbot",
        NEW_KUBE,
        &[STORES, &set[..]].concat(),
    )));
    assert_eq!(env["ROUTER_WORKER_THREADS"], "3");
}

/// A rendered Secret's data, decoded (k8s-openapi decodes the base64).
fn secret_data(secret: &Value) -> std::collections::BTreeMap<String, String> {
    let s: k8s_openapi::api::core::v1::Secret = serde_yaml::from_value(secret.clone()).unwrap();
    s.data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8(v.0).unwrap()))
        .collect()
}

#[test]
fn generated_secrets_and_existing_secret() {
    let all = docs(&render_ok("clawdbot", NEW_KUBE, STORES));
    let data = secret_data(of_kind(&all, "Secret")[0]);
    // Generated once (offline there is nothing to look up, so they are new here).
    assert_eq!(data["ROUTER_ADMIN_TOKEN"].len(), 48);
    // The router's key ring format, `id:base64`, with one AES-256 key of 32 random bytes.
    let master = &data["ROUTER_MASTER_KEYS"];
    let key = master.strip_prefix("k1:").expect("key id k1");
    assert!(
        key.len() == 44 && key.ends_with('=') && !key.ends_with("=="),
        "AES-256: 32 random bytes, base64: {} characters",
        key.len()
    );
    assert!(data.contains_key("TELEGRAM_WEBHOOK_SECRET") && data.contains_key("ROUTER_JWT_SECRET"));
    // Not given, not generated: the channel stays off.
    assert!(!data.contains_key("TELEGRAM_BOT_TOKEN") && !data.contains_key("STRIPE_SECRET_KEY"));
    // Two renders generate different keys: nothing fixed is baked into the chart.
    let again = docs(&render_ok("clawdbot", NEW_KUBE, STORES));
    assert_ne!(
        &secret_data(of_kind(&again, "Secret")[0])["ROUTER_MASTER_KEYS"],
        master
    );

    // existingSecret: no Secret of the chart's, every reference points at the user's.
    let all = docs(&render_ok(
        "clawdbot",
        NEW_KUBE,
        &["--set", "secrets.existingSecret=my-secrets"],
    ));
    assert!(of_kind(&all, "Secret").is_empty());
    let text = render_ok(
        "clawdbot",
        NEW_KUBE,
        &["--set", "secrets.existingSecret=my-secrets"],
    );
    assert!(text.contains("name: my-secrets, key: DATABASE_URL"));
    assert!(!text.contains("clawdbot-secrets"));
}

/// `kubectl` against the local API server; stdin is `input`.
fn kubectl(args: &[&str], input: &str) -> (bool, String) {
    let env = clawdbot_testkit::env::get();
    let mut child = Command::new("kubectl")
        .args(args)
        .env("KUBECONFIG", &env.kubeconfig)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// One document of a stream for kubectl, as JSON: serde_yaml writes the string `yes` unquoted,
/// which kubectl's YAML 1.1 reader takes for a boolean.
fn manifest(obj: &Value) -> String {
    format!("---\n{}\n", serde_json::to_string(obj).unwrap())
}

/// Kinds the local API server cannot validate: the Prometheus Operator's CRDs are not
/// installed there (and are not ours to install on a shared server).
const NOT_ON_THE_LOCAL_SERVER: &[&str] = &["ServiceMonitor", "PrometheusRule"];

fn dry_run(all: &[Value], what: &str) {
    let mut input = String::new();
    let mut count = 0;
    // A pod naming a ServiceAccount of the same render (the uninstall hook's): a dry run
    // creates nothing, so the ServiceAccount admission would not find it. The pod is checked
    // with the namespace's default account instead; the account itself is checked above it.
    let accounts: Vec<&str> = of_kind(all, "ServiceAccount")
        .iter()
        .filter_map(|a| a["metadata"]["name"].as_str())
        .collect();
    for obj in all {
        if NOT_ON_THE_LOCAL_SERVER.contains(&kind(obj)) {
            continue;
        }
        let mut obj = obj.clone();
        if kind(&obj) == "Pod"
            && let Some(spec) = obj["spec"].as_mapping_mut()
            && spec
                .get("serviceAccountName")
                .and_then(Value::as_str)
                .is_some_and(|n| accounts.contains(&n))
        {
            spec.remove("serviceAccountName");
        }
        input.push_str(&manifest(&obj));
        count += 1;
    }
    let (ok, out) = kubectl(&["apply", "--dry-run=server", "-f", "-"], &input);
    assert!(ok, "{what}: kubectl apply --dry-run=server failed:\n{out}");
    let applied = out
        .lines()
        .filter(|l| l.ends_with("(server dry run)"))
        .count();
    assert_eq!(applied, count, "{what}: every object is checked:\n{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_manifest_passes_server_side_dry_run() {
    let (client, ns) = setup("chart-dry").await;
    let tenants_ns = clawdbot_testkit::kube::fresh_namespace(&client, "chart-dry-t").await;

    // The CRDs as the chart ships them. The 1.20 server does not know CEL rules; kubectl's own
    // validation would refuse them, the server drops them.
    let mut crds = String::new();
    for entry in std::fs::read_dir(chart().join("crds")).unwrap() {
        crds.push_str("---\n");
        crds.push_str(&std::fs::read_to_string(entry.unwrap().path()).unwrap());
    }
    let (ok, out) = kubectl(
        &["apply", "--dry-run=server", "--validate=false", "-f", "-"],
        &crds,
    );
    assert!(ok, "CRDs: {out}");

    let everything = values_file(&format!(
        r#"
database: {{url: "postgres://u:p@db:5432/x"}}
redis: {{url: "redis://r:6379"}}
postgres: {{enabled: true}}
redis: {{bundled: {{enabled: true}}}}
ingress: {{enabled: true, host: bots.example.com, tlsSecretName: tls}}
metrics:
  serviceMonitor: {{enabled: true}}
  prometheusRule: {{enabled: true}}
  grafanaDashboard: {{enabled: true}}
operator: {{replicas: 2}}
tenancy: {{namespace: {tenants_ns}}}
"#
    ));
    let tenants = values_file(TENANTS);
    let small = example("values-small.yaml");
    let large = example("values-large.yaml");
    let large_ns = format!("tenancy.namespace={tenants_ns},tenancy.createNamespace=false");
    let all_namespaces = [STORES, &["--set", "tenancy.allNamespaces=true"][..]].concat();
    let cases: [(&str, Vec<&str>); 6] = [
        ("defaults", STORES.to_vec()),
        ("tenants", vec!["-f", tenants.path().to_str().unwrap()]),
        (
            "everything on",
            vec!["-f", everything.path().to_str().unwrap()],
        ),
        ("values-small", vec!["-f", small.as_str()]),
        (
            "values-large",
            vec!["-f", large.as_str(), "--set", large_ns.as_str()],
        ),
        ("all namespaces", all_namespaces),
    ];
    for (what, args) in cases {
        let all = docs(&render_ok(&ns, OLD_KUBE, &args));
        dry_run(&all, what);
    }
    // The examples of examples/ that are custom resources.
    for file in ["model-endpoint.yaml", "model-endpoint-ollama.yaml"] {
        let all = docs(&std::fs::read_to_string(example(file)).unwrap());
        let all: Vec<Value> = all
            .into_iter()
            .map(|mut v| {
                v["metadata"]["namespace"] = Value::from(ns.clone());
                v
            })
            .collect();
        dry_run(&all, file);
    }
}

/// The operator, running with nothing but the chart's ServiceAccount and RBAC (the API server
/// impersonates it), reconciles the chart's tenants and model endpoints to the end, deletion
/// included. A verb missing from the Role shows as a Forbidden reconcile that never finishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_runs_under_the_charts_rbac() {
    let (admin, ns) = setup("chart-rbac").await;
    let values = values_file(
        r#"
database: {url: "postgres://u:p@db:5432/x"}
redis: {url: "redis://r:6379"}
modelEndpoints:
  - {name: shared, engine: vllm, models: [{name: qwen2.5-7b-instruct}], gpusPerReplica: 0}
tenantDefaults:
  model: {name: qwen2.5-7b-instruct, endpointRef: {name: shared}}
tenants:
  - {name: alice, ownerId: owner-alice, plan: free, storage: {size: 1Gi, retention: Delete}}
  - name: acme
    ownerId: owner-acme
    plan: team
    model: {name: llama3.1:8b, dedicated: {engine: ollama, models: [{name: llama3.1:8b}], gpusPerReplica: 0}}
"#,
    );
    let all = docs(&render_ok(
        &ns,
        OLD_KUBE,
        &["-f", values.path().to_str().unwrap()],
    ));
    let operator_rbac: Vec<Value> = all
        .iter()
        .filter(|o| {
            ["ServiceAccount", "Role", "RoleBinding"].contains(&kind(o))
                && o["metadata"]["name"]
                    .as_str()
                    .unwrap()
                    .starts_with("clawdbot-operator")
        })
        .cloned()
        .collect();
    assert_eq!(
        operator_rbac.len(),
        5,
        "SA, Role + binding, lease Role + binding"
    );
    let input: String = operator_rbac.iter().map(manifest).collect();
    let (ok, out) = kubectl(&["apply", "-f", "-"], &input);
    assert!(ok, "{out}");

    // A client that the API server treats as the operator's ServiceAccount.
    let env = clawdbot_testkit::env::get();
    let mut config = kube::Config::from_custom_kubeconfig(
        Kubeconfig::read_from(&env.kubeconfig).unwrap(),
        &KubeConfigOptions::default(),
    )
    .await
    .unwrap();
    config.auth_info.impersonate = Some(format!("system:serviceaccount:{ns}:clawdbot-operator"));
    let as_operator = kube::Client::try_from(config).unwrap();
    let op = start_operator_with(&as_operator, &ns, "op-chart", OperatorConfig::default()).await;

    let crs: String = all
        .iter()
        .filter(|o| ["UserWorkspace", "ModelEndpoint"].contains(&kind(o)))
        .map(manifest)
        .collect();
    let (ok, out) = kubectl(&["apply", "-f", "-"], &crs);
    assert!(ok, "{out}");
    for name in ["alice", "acme"] {
        wait_ws(
            &admin,
            &ns,
            name,
            "provisioned under the chart's RBAC",
            |w| {
                w.status
                    .as_ref()
                    .is_some_and(|s| s.phase == Phase::Provisioning)
            },
        )
        .await;
    }
    // The dedicated endpoint was created (apply = create) and got its status.
    let eps: Api<ModelEndpoint> = Api::namespaced(admin.clone(), &ns);
    clawdbot_testkit::wait_for("the dedicated endpoint's status", TIMEOUT, || {
        let eps = eps.clone();
        async move { eps.get_opt("acme-model").await.ok().flatten()?.status }
    })
    .await;

    // Deletion with retention Delete: garbage collection takes the volume with the workspace.
    Api::<UserWorkspace>::namespaced(admin.clone(), &ns)
        .delete("alice", &DeleteParams::default())
        .await
        .unwrap();
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(admin.clone(), &ns);
    let uws: Api<UserWorkspace> = Api::namespaced(admin.clone(), &ns);
    clawdbot_testkit::wait_for("alice and her volume gone", TIMEOUT, || {
        let (pvcs, uws) = (pvcs.clone(), uws.clone());
        async move {
            let pvc = pvcs.get_opt("claw-alice").await.ok()?;
            let gone = pvc.is_none_or(|p| p.metadata.deletion_timestamp.is_some());
            (gone && uws.get_opt("alice").await.ok()?.is_none()).then_some(())
        }
    })
    .await;

    // Its events were published (events.k8s.io: create).
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(admin.clone(), &ns);
    clawdbot_testkit::wait_for("the VolumeDeleted event", TIMEOUT, || {
        let events = events.clone();
        async move {
            let list = events.list(&Default::default()).await.ok()?;
            list.items
                .iter()
                .any(|e| e.reason.as_deref() == Some("VolumeDeleted"))
                .then_some(())
        }
    })
    .await;
    // A Forbidden answer is counted under category "kube".
    let metrics = op.metrics().await;
    assert!(
        !metrics.contains("category=\"kube\""),
        "reconciles failed under the chart's RBAC:\n{metrics}"
    );
    op.stop().await.unwrap();
}
