//! The Helm chart installed for real on the node (`hack/helm.py install`: Helm's own Go
//! library, no helm binary): the operator and the router run in pods (they reach the API server
//! through the `kubernetes` Service, Postgres and Redis through forwarders this test opens on
//! the node's bridge address), the listed tenants' lite agents run, a web chat message goes
//! through the installed router's Service to a tenant's agent and a local model; `helm upgrade`
//! with a changed `tenants:` list adds, re-plans and removes UserWorkspaces; `helm test`
//! passes; `helm uninstall` keeps or deletes each tenant's volume as its retention says.
//!
//! The release is alone in a fresh namespace: the operator watches only it (`WATCH_NAMESPACE`,
//! Roles, no ClusterRoles), the CRDs are already in the cluster (Helm leaves an existing CRD of
//! `crds/` alone), so the operators and workspaces of other tests running at the same time are
//! never touched. Needs `hack/dev-env.sh up` and `hack/build-images.sh operator router lite
//! chart-test` (hack/test.sh runs both).

use std::io::Write;
use std::time::{Duration, Instant};

use clawdbot_api::workspace::{Phase, UserWorkspace};
use clawdbot_api::{Plan, names};
use clawdbot_testkit::fake_llm::{FakeLlm, Flavor, Reply};
use clawdbot_testkit::node::{self, Forward};
use clawdbot_testkit::wait_for;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Secret, Service};
use kube::api::{Api, ListParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use uuid::Uuid;

const IMAGES: &[(&str, &str)] = &[
    ("ghcr.io/clawdbot/operator:0.1.0", "operator"),
    ("ghcr.io/clawdbot/router:0.1.0", "router"),
    ("ghcr.io/clawdbot/agent-lite:0.1.0", "lite"),
    ("ghcr.io/clawdbot/chart-test:0.1.0", "chart-test"),
];
const API_KEY: &str = "sk-chart-install-key";
/// How long the release's pods may take to start on the busy 2-core machine.
const START: Duration = Duration::from_secs(240);

/// One installed release and what it runs against.
struct Release {
    kube: Client,
    ns: String,
    name: String,
    llm_url: String,
    database_url: String,
    redis_url: String,
    redis_prefix: String,
}

impl Release {
    /// The chart's values for this node: one operator and one router with small requests,
    /// Service addresses by ClusterIP (no cluster DNS here), the stores through the
    /// forwarders, the local test image, and lite tenants whose "OpenAI" is the local model.
    fn values(&self, tenants: Value) -> tempfile::NamedTempFile {
        let small =
            json!({"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "512Mi"}});
        let values = json!({
            "operator": {
                "serviceAddresses": "cluster-ip",
                "openaiBaseUrl": self.llm_url,
                "concurrency": 4,
                "resources": small,
            },
            "router": {
                "replicas": 1,
                "autoscaling": {"enabled": false},
                "podDisruptionBudget": {"enabled": false},
                "settings": {"redisPrefix": self.redis_prefix, "databaseMaxConnections": 4,
                             "agentTimeout": "60s"},
                "resources": small,
            },
            "database": {"url": self.database_url},
            "redis": {"url": self.redis_url},
            "tests": {"image": "ghcr.io/clawdbot/chart-test:0.1.0"},
            "tenantDefaults": {
                "runtime": "lite",
                "keysSecretRef": {"name": "keys"},
                "model": {"provider": "openai", "name": "fake-model", "maxTokens": 64},
                "storage": {"size": "1Gi", "retention": "Retain"},
                "idleTimeout": "0",
            },
            "tenants": tenants,
        });
        // JSON is YAML: Helm reads the file as a values file.
        let mut f = tempfile::Builder::new()
            .suffix(".yaml")
            .tempfile()
            .expect("values file");
        f.write_all(values.to_string().as_bytes())
            .expect("write values");
        f
    }

    /// `hack/helm.py <verb> <release> ...` off the runtime's threads (the forwarders and the
    /// model the pods call run on them).
    async fn helm(&self, verb: &str, extra: &[&str]) -> Result<String, String> {
        let chart = clawdbot_testkit::repo_root().join("charts/clawdbot");
        let mut args: Vec<String> = vec![verb.into(), self.name.clone()];
        if verb == "install" || verb == "upgrade" {
            args.push(chart.to_string_lossy().into_owned());
        }
        args.extend(["-n".into(), self.ns.clone()]);
        args.extend(extra.iter().map(|s| s.to_string()));
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            clawdbot_testkit::helm::helm(&args)
        })
        .await
        .expect("helm task")
    }

    /// Like [`Release::helm`], panicking with what the pods say on a failure.
    async fn helm_ok(&self, verb: &str, extra: &[&str]) -> String {
        match self.helm(verb, extra).await {
            Ok(out) => out,
            Err(e) => panic!("helm {verb}: {e}\n{}", self.diagnose().await),
        }
    }

    fn selector(&self, component: &str) -> String {
        format!(
            "app.kubernetes.io/instance={},app.kubernetes.io/component={component}",
            self.name
        )
    }

    /// Waits until `n` pods match `selector` and all are Ready; panics with what the pods say.
    async fn ready_pods(&self, what: &str, selector: &str, n: usize, timeout: Duration) {
        let found = tokio::time::timeout(timeout, async {
            loop {
                let pods = node::pods(&self.kube, &self.ns, selector).await;
                let live: Vec<&Pod> = pods
                    .iter()
                    .filter(|p| p.metadata.deletion_timestamp.is_none())
                    .collect();
                if live.len() == n && live.iter().all(|p| node::pod_ready(p)) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
        .await;
        if found.is_err() {
            panic!(
                "{what}: {n} ready pods ({selector}) not there after {timeout:?}\n{}",
                self.diagnose().await
            );
        }
    }

    async fn workspace(&self, name: &str) -> Option<UserWorkspace> {
        Api::<UserWorkspace>::namespaced(self.kube.clone(), &self.ns)
            .get_opt(name)
            .await
            .expect("get workspace")
    }

    /// Waits until the workspace is Running with its current spec (observedGeneration).
    async fn running(&self, name: &str) -> UserWorkspace {
        let found = tokio::time::timeout(START, async {
            loop {
                if let Some(ws) = self.workspace(name).await
                    && ws.status.as_ref().is_some_and(|s| {
                        s.phase == Phase::Running && s.observed_generation == ws.metadata.generation
                    })
                {
                    return ws;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
        .await;
        match found {
            Ok(ws) => ws,
            Err(_) => panic!(
                "workspace {name} not Running after {START:?}\n{}",
                self.diagnose().await
            ),
        }
    }

    async fn claim_exists(&self, workspace: &str) -> bool {
        Api::<PersistentVolumeClaim>::namespaced(self.kube.clone(), &self.ns)
            .get_opt(&names::agent(workspace))
            .await
            .expect("get claim")
            .is_some_and(|c| c.metadata.deletion_timestamp.is_none())
    }

    /// Every pod of the namespace with its state and logs, for a failure message.
    async fn diagnose(&self) -> String {
        let mut out = String::new();
        for ws in Api::<UserWorkspace>::namespaced(self.kube.clone(), &self.ns)
            .list(&ListParams::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default()
        {
            out.push_str(&format!("workspace {}: {:?}\n", ws.name_any(), ws.status));
        }
        for p in node::pods(&self.kube, &self.ns, "").await {
            let logs = node::pod_logs(&p);
            let lines: Vec<&str> = logs.lines().collect();
            let tail = lines[lines.len().saturating_sub(30)..].join("\n");
            out.push_str(&format!(
                "pod {} at {:?}: {:?}\n{tail}\n",
                p.name_any(),
                p.status.as_ref().and_then(|s| s.pod_ip.as_ref()),
                p.status.as_ref().map(|s| (&s.phase, &s.conditions))
            ));
        }
        out
    }
}

/// A fresh database on the shared server, migrated as the router would at its start.
async fn fresh_database() -> (String, sqlx::PgPool) {
    let base = &clawdbot_testkit::env::get().database_url;
    let admin = sqlx::PgPool::connect(base).await.expect("connect postgres");
    let name = format!("chart_t_{:016x}", rand::random::<u64>());
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&admin)
        .await
        .expect("create database");
    admin.close().await;
    let (prefix, _) = base.rsplit_once('/').expect("database url has a path");
    let url = format!("{prefix}/{name}");
    let db = clawdbot_router::store::connect(&url, 2)
        .await
        .expect("migrate");
    (name, db)
}

fn tenant(name: &str, owner: Uuid, plan: &str, retention: &str) -> Value {
    json!({"name": name, "ownerId": owner.to_string(), "plan": plan,
           "storage": {"size": "1Gi", "retention": retention}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chart_installs_on_the_node_answers_chat_follows_tenants_and_uninstalls() {
    clawdbot_testkit::init_tracing();
    for (image, build) in IMAGES {
        node::require_image(image, build);
    }
    let kube = clawdbot_testkit::kube::client().await;
    // What the chart's README says to do first on a 1.20 cluster (`kubectl apply
    // --validate=false -f charts/clawdbot/crds/`, files identical to crds/); Helm then leaves
    // the existing CRDs alone.
    clawdbot_testkit::kube::install_crds(&kube).await;
    let ns = node::fresh_namespace(&kube, "chart-install").await;

    // Stores: the test's own database and Redis prefix, reached by the pods through
    // forwarders on the bridge address (the shared servers listen on loopback only).
    let env = clawdbot_testkit::env::get();
    let (db_name, db) = fresh_database().await;
    let pg = Forward::start(&node::host_port(&env.database_url)).await;
    let redis = Forward::start(&node::host_port(&env.redis_url)).await;
    let llm = FakeLlm::start_on(Flavor::OpenAi, &node::host_ip()).await;
    llm.require_api_key(API_KEY);
    llm.push(Reply::text("Hello Alice, from the installed chart."));

    let mut owners = std::collections::BTreeMap::new();
    for name in ["alice", "bob", "carol"] {
        let id = clawdbot_router::store::create_user(&db, None, Plan::Pro)
            .await
            .expect("user");
        owners.insert(name, id);
    }
    // The tenants' own "OpenAI" key (their plan allows one), read by the operator.
    let keys: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "keys"},
        "stringData": {names::OPENAI_API_KEY: API_KEY}
    }))
    .expect("secret");
    Api::<Secret>::namespaced(kube.clone(), &ns)
        .create(&PostParams::default(), &keys)
        .await
        .expect("create keys secret");

    let release = Release {
        kube: kube.clone(),
        name: format!("clawdbot-{:08x}", rand::random::<u32>()),
        llm_url: llm.base_url(),
        database_url: format!("postgres://clawdbot:clawdbot@{}/{db_name}", pg.addr()),
        redis_url: format!("redis://{}", redis.addr()),
        redis_prefix: format!("chart{:08x}:", rand::random::<u32>()),
        ns: ns.clone(),
    };

    // Install: the operator and router Deployments (waited for by Helm), then the tenants.
    let values = release.values(json!([
        tenant("alice", owners["alice"], "pro", "Retain"),
        tenant("bob", owners["bob"], "pro", "Delete"),
    ]));
    let started = Instant::now();
    let out = release
        .helm_ok(
            "install",
            &[
                "-f",
                values.path().to_str().expect("path"),
                // The CRDs are in the cluster (applied above, as the README says for 1.20):
                // Helm 4 would server-side apply them again, which 1.20 refuses (CEL rules).
                "--skip-crds",
                "--wait",
                "--timeout",
                "5m",
            ],
        )
        .await;
    let helm_waited = started.elapsed();
    assert!(out.contains("STATUS: deployed"), "{out}");
    release
        .ready_pods("operator", &release.selector("operator"), 1, START)
        .await;
    release
        .ready_pods("router", &release.selector("router"), 1, START)
        .await;
    for name in ["alice", "bob"] {
        release
            .ready_pods(
                name,
                &format!("{}={name}", names::LABEL_WORKSPACE),
                1,
                START,
            )
            .await;
    }
    let all_running = started.elapsed();
    for name in ["alice", "bob"] {
        let ws = release.running(name).await;
        let url = ws.status.and_then(|s| s.url).expect("status url");
        assert!(url.starts_with("http://10."), "a ClusterIP URL: {url}");
    }
    println!(
        "chart install: helm install --wait returned after {:.1} s; operator, router and 2 lite \
         agents Ready after {:.1} s",
        helm_waited.as_secs_f64(),
        all_running.as_secs_f64()
    );

    // A web chat message through the installed router (its Service's ClusterIP, from this
    // host through kube-proxy) to alice's agent pod and the local model.
    let router_name = format!("{}-router", release.name);
    let svc = Api::<Service>::namespaced(kube.clone(), &ns)
        .get(&router_name)
        .await
        .expect("router service");
    let ip = svc.spec.and_then(|s| s.cluster_ip).expect("cluster ip");
    let base = format!("http://{ip}:80");
    // A Ready pod is not yet a reachable Service: the endpoints controller and then kube-proxy
    // have to follow (a connection in that gap is refused; seen once in CI, 2026-12-02).
    wait_for(
        "the router's Service to accept connections after its pod was Ready",
        Duration::from_secs(60),
        || async { tokio::net::TcpStream::connect((ip.as_str(), 80)).await.ok() },
    )
    .await;
    let secret = Api::<Secret>::namespaced(kube.clone(), &ns)
        .get(&format!("{}-secrets", release.name))
        .await
        .expect("the chart's secret");
    let admin = secret
        .data
        .as_ref()
        .and_then(|d| d.get("ROUTER_ADMIN_TOKEN"))
        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
        .expect("generated admin token");
    let http = reqwest::Client::new();
    let response = http
        .post(format!("{base}/api/v1/web/token"))
        .bearer_auth(&admin)
        .json(&json!({"user_id": owners["alice"]}))
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .expect("web token");
    // The body says who answered: the router's errors are `{"error": ...}` (a 404 here was seen
    // once in CI, 2026-12-03, with nothing in the router's log).
    let status = response.status();
    let text = response.text().await.expect("web token body");
    assert!(
        status.is_success(),
        "web token: {status} {text}\n{}",
        release.diagnose().await
    );
    let token: Value = serde_json::from_str(&text).expect("token json");
    let token = token["token"].as_str().expect("token").to_string();
    let body = node::web_chat(
        &http,
        &base,
        &token,
        "chart-1",
        "Hi, I am Alice.",
        Duration::from_secs(120),
    )
    .await;
    assert!(
        body.contains("Hello Alice, from the installed chart."),
        "the model's reply through the installed router and alice's pod: {body}\n{}",
        release.diagnose().await
    );
    let calls = llm.completions();
    assert!(
        calls
            .last()
            .is_some_and(|c| c.body.to_string().contains("Hi, I am Alice.")),
        "the message reached the model from the agent pod"
    );

    // Upgrade with a changed list: alice re-planned, bob removed (retention Delete), carol
    // added. Nothing else changes: the operator and router pods stay.
    let operator_pods: Vec<String> = node::pods(&kube, &ns, &release.selector("operator"))
        .await
        .iter()
        .map(|p| p.name_any())
        .collect();
    let alice_generation = release
        .workspace("alice")
        .await
        .and_then(|w| w.metadata.generation);
    let values = release.values(json!([
        tenant("alice", owners["alice"], "team", "Retain"),
        tenant("carol", owners["carol"], "pro", "Delete"),
    ]));
    let out = release
        .helm_ok(
            "upgrade",
            &[
                "-f",
                values.path().to_str().expect("path"),
                "--wait",
                "--timeout",
                "5m",
            ],
        )
        .await;
    assert!(out.contains("REVISION: 2"), "{out}");
    let alice = release.running("alice").await;
    assert_eq!(alice.spec.plan, Plan::Team, "alice re-planned");
    assert!(
        alice.metadata.generation > alice_generation,
        "a new spec for alice"
    );
    release.running("carol").await;
    wait_for("bob's workspace removed", START, || async {
        release.workspace("bob").await.is_none().then_some(())
    })
    .await;
    wait_for("bob's volume deleted (retention Delete)", START, || async {
        (!release.claim_exists("bob").await).then_some(())
    })
    .await;
    assert!(
        release.claim_exists("alice").await,
        "alice keeps her volume"
    );
    assert_eq!(
        node::pods(&kube, &ns, &release.selector("operator"))
            .await
            .iter()
            .map(|p| p.name_any())
            .collect::<Vec<_>>(),
        operator_pods,
        "a tenants-only change does not roll the operator"
    );

    // helm test: the router answers /readyz and both CRDs are served, from a pod.
    let out = release.helm_ok("test", &["--timeout", "3m"]).await;
    assert!(out.contains("Phase:          Succeeded"), "{out}");

    // Uninstall: the release's tenants go first (the pre-delete hook, while the operator
    // still runs), each volume as its retention says; then the rest. The chart's Secret is
    // kept (it holds the master key).
    let out = release
        .helm_ok("uninstall", &["--wait", "--timeout", "5m"])
        .await;
    assert!(out.contains("uninstalled"), "{out}");
    let left = Api::<UserWorkspace>::namespaced(kube.clone(), &ns)
        .list(&ListParams::default())
        .await
        .expect("list workspaces")
        .items;
    assert!(
        left.is_empty(),
        "no tenant left behind (none stuck Terminating): {:?}",
        left.iter().map(|w| w.name_any()).collect::<Vec<_>>()
    );
    wait_for(
        "carol's volume deleted (retention Delete)",
        START,
        || async { (!release.claim_exists("carol").await).then_some(()) },
    )
    .await;
    assert!(
        release.claim_exists("alice").await,
        "alice's volume kept (retention Retain)"
    );
    assert!(
        Api::<Deployment>::namespaced(kube.clone(), &ns)
            .list(&ListParams::default())
            .await
            .expect("deployments")
            .items
            .is_empty(),
        "the operator and router are gone"
    );
    assert!(
        Api::<Secret>::namespaced(kube.clone(), &ns)
            .get_opt(&format!("{}-secrets", release.name))
            .await
            .expect("get secret")
            .is_some(),
        "the chart's Secret is kept"
    );

    drop(db);
    node::delete_namespace(&kube, &ns).await;
}
