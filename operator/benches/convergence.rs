//! Convergence benchmark: how long the operator takes to give N UserWorkspaces all their
//! children and a status, against the time a plain client needs to create the same objects
//! directly (the API server's own limit on this machine), and the operator's peak RSS.
//!
//! `cargo bench -p clawdbot-operator --bench convergence` (BENCH_TENANTS=1000,5000 by default).
//! Runs against the local control plane of `hack/dev-env.sh`; the operator is the real binary
//! in its own process, so its memory is its own. It also prints the operator's reconciles
//! until convergence and in the 30 s after (an idle fleet should cost none). To see what
//! triggers them: `BENCH_OPERATOR_LOG=info,clawdbot_operator=debug
//! BENCH_OPERATOR_LOG_FILE=/tmp/op.log` (each passing child change is logged). To see what
//! holds its memory: `BENCH_OPERATOR_WRAPPER=heaptrack` (the profile lands in the working
//! directory; the RSS column is then the wrapper's). `BENCH_PLAIN_APPLY=1` makes the plain
//! client write with server-side apply instead of creates. `BENCH_OPERATOR_BIN=<path>` runs
//! that operator binary instead of this build's (an A/B of two builds).
//!
//! Requests per tenant are the operator's own count (`clawdbot_operator_api_requests_total`,
//! a counting layer on its client: reads, writes, watches, lease renewals, events) until
//! convergence, divided by the tenants. The plain client's namespace is deleted (and gone)
//! before the operator starts, so that both are measured on an equally quiet cluster; the
//! operator's after its row is printed (`BENCH_KEEP=1` keeps both, and the operator then
//! shares the cluster with the plain client's leftovers).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use clawdbot_api::workspace::UserWorkspace;
use clawdbot_api::{ModelEndpoint, conditions, names};
use clawdbot_operator::build::agent::{self, AgentInputs};
use clawdbot_operator::build::tenant;
use clawdbot_operator::config::OperatorConfig;
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};

const IN_FLIGHT: usize = 32;

fn workspace(name: &str, ns: &str) -> UserWorkspace {
    let mut ws = UserWorkspace::new(
        name,
        serde_yaml::from_str("ownerId: bench\nplan: free\nruntime: lite\nmodel: {name: smollm2, endpointRef: {name: shared}}\n")
            .expect("spec"),
    );
    ws.metadata.namespace = Some(ns.to_string());
    ws
}

/// Creates the 7 tenant objects of `n` tenants with a plain client, 32 requests in flight:
/// the objects the operator applies (same build, same annotations), without owners.
/// With `apply` (BENCH_PLAIN_APPLY) it writes with server-side apply, as the operator does,
/// instead of creates: what the apply itself costs the API server.
async fn plain_client(client: &Client, ns: &str, n: usize, apply: bool) -> Duration {
    let cfg = OperatorConfig::default();
    let started = Instant::now();
    stream::iter(0..n)
        .map(|i| {
            let client = client.clone();
            let cfg = cfg.clone();
            let ns = ns.to_string();
            async move {
                let mut ws = workspace(&format!("p{i}"), &ns);
                ws.meta_mut().uid = Some(format!("00000000-0000-0000-0000-{i:012}"));
                let policy = cfg.policy(ws.spec.plan);
                let inputs = AgentInputs {
                    workspace: &ws,
                    config: &cfg,
                    runtime: ws.effective_runtime(&policy),
                    policy,
                    model: agent::model_target(&ws, &cfg, Some("http://mep-shared:8000/v1".into())),
                    model_endpoint: Some(("shared".into(), 8000)),
                    awake: true,
                };
                let pp = PostParams::default();
                // Without owner references: the owner is not a real object here.
                macro_rules! create {
                    ($obj:expr) => {{
                        let mut o = $obj.expect("build");
                        o.meta_mut().owner_references = None;
                        let api = Api::namespaced(client.clone(), &ns);
                        if apply {
                            let name = o.meta().name.clone().unwrap_or_default();
                            api.patch(
                                &name,
                                &PatchParams::apply("bench").force(),
                                &Patch::Apply(&o),
                            )
                            .await
                            .map(|_| ())
                        } else {
                            api.create(&pp, &o).await.map(|_| ())
                        }
                    }};
                }
                let t = tenant::build_tenant(&inputs, &ws.spec.storage.size).expect("build");
                let secret = tenant::with_token(t.gateway_secret, &agent::generate_token());
                create!(Ok::<_, ()>(t.service_account))?;
                create!(Ok::<_, ()>(t.config_map))?;
                create!(Ok::<_, ()>(secret))?;
                create!(Ok::<_, ()>(t.pvc))?;
                create!(Ok::<_, ()>(t.service))?;
                create!(Ok::<_, ()>(t.network_policy))?;
                create!(Ok::<_, ()>(t.deployment))?;
                Ok::<_, kube::Error>(())
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .try_collect::<Vec<_>>()
        .await
        .expect("plain client creates");
    started.elapsed()
}

fn rss_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

struct Run {
    /// Deleted after the row is printed: a namespace of thousands of objects takes minutes.
    namespace: String,
    plain: Duration,
    operator: Duration,
    peak_rss_mib: f64,
    reconciles: u64,
    requests: u64,
    reconciles_at_rest: u64,
    /// Requests by verb and reconcile triggers by source, until convergence.
    requests_by_verb: Vec<(String, u64)>,
    triggers: Vec<(String, u64)>,
}

/// The operator's metrics page.
async fn metrics(port: u16) -> String {
    reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics body")
}

/// The sum of the operator's counters whose lines start with `prefix`, from its metrics.
async fn counter(port: u16, prefix: &str) -> u64 {
    let text = metrics(port).await;
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// The operator's count of workspace reconciles.
async fn reconciles(port: u16) -> u64 {
    counter(
        port,
        "clawdbot_operator_reconciles_total{controller=\"userworkspace\"",
    )
    .await
}

/// The operator's count of its requests to the API server.
async fn requests(port: u16) -> u64 {
    counter(port, "clawdbot_operator_api_requests_total{").await
}

/// The operator's counters of one family by label value (`name{label="value"} n`), for the
/// breakdowns printed under the table.
async fn breakdown(port: u16, family: &str) -> Vec<(String, u64)> {
    let text = metrics(port).await;
    text.lines()
        .filter(|l| l.starts_with(&format!("{family}{{")))
        .filter_map(|l| {
            let label = l.split('"').nth(1)?.to_string();
            Some((label, l.rsplit(' ').next()?.parse().ok()?))
        })
        .collect()
}

/// Deletes a namespace and waits until it is gone (its thousands of objects with it).
async fn delete_namespace(client: &Client, ns: &str) {
    if std::env::var_os("BENCH_KEEP").is_some() {
        return;
    }
    // The operator has been stopped, so nothing would remove the workspaces' finalizers and
    // the namespace would stay Terminating.
    let workspaces: Api<UserWorkspace> = Api::namespaced(client.clone(), ns);
    let names = workspaces
        .list_metadata(&ListParams::default())
        .await
        .expect("workspaces")
        .items
        .into_iter()
        .map(|w| w.name_any());
    stream::iter(names)
        .map(|name| {
            let workspaces = workspaces.clone();
            async move {
                let no_finalizers = serde_json::json!({"metadata": {"finalizers": null}});
                let _ = workspaces
                    .patch(
                        &name,
                        &PatchParams::default(),
                        &Patch::Merge(&no_finalizers),
                    )
                    .await;
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .collect::<Vec<_>>()
        .await;
    let api: Api<Namespace> = Api::all(client.clone());
    let _ = api.delete(ns, &DeleteParams::background()).await;
    clawdbot_testkit::wait_for(
        "the namespace to be deleted",
        Duration::from_secs(900),
        || {
            let api = api.clone();
            async move { api.get_opt(ns).await.ok()?.is_none().then_some(()) }
        },
    )
    .await;
}

async fn run(client: &Client, n: usize, plain_apply: bool) -> Run {
    let plain_ns = clawdbot_testkit::kube::fresh_namespace(client, "bench-plain").await;
    let plain = plain_client(client, &plain_ns, n, plain_apply).await;
    // The cluster works on the plain client's objects long after they are created (a
    // ReplicaSet and a pod per Deployment, to schedule and start): the operator is measured on
    // a cluster as quiet as the one the plain client had, not while that work goes on.
    delete_namespace(client, &plain_ns).await;

    let ns = clawdbot_testkit::kube::fresh_namespace(client, "bench-op").await;
    let ep = ModelEndpoint::new(
        "shared",
        serde_yaml::from_str("engine: vllm\nmodels: [{name: smollm2}]\n").expect("ep"),
    );
    Api::<ModelEndpoint>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &ep)
        .await
        .expect("endpoint");

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port();
    // BENCH_OPERATOR_WRAPPER runs the operator under a profiler (e.g. `heaptrack`); the RSS
    // then measured is the wrapper's and the figures are not comparable.
    // BENCH_OPERATOR_BIN runs another build of the operator (two builds compared in one
    // sitting).
    let operator = std::env::var_os("BENCH_OPERATOR_BIN")
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_operator").into());
    let mut command = match std::env::var_os("BENCH_OPERATOR_WRAPPER") {
        Some(wrapper) => {
            let mut c = std::process::Command::new(wrapper);
            c.arg(&operator);
            c
        }
        None => std::process::Command::new(&operator),
    };
    let mut child = command
        .env("KUBECONFIG", &clawdbot_testkit::env::get().kubeconfig)
        .env("WATCH_NAMESPACE", &ns)
        .env("POD_NAMESPACE", &ns)
        .env("POD_NAME", "bench")
        .env("METRICS_ADDR", format!("127.0.0.1:{port}"))
        .env(
            "RUST_LOG",
            std::env::var("BENCH_OPERATOR_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(match std::env::var_os("BENCH_OPERATOR_LOG_FILE") {
            Some(path) => std::fs::File::create(path).expect("log file").into(),
            None => std::process::Stdio::null(),
        })
        .spawn()
        .expect("start operator");
    let pid = child.id();

    let api: Api<UserWorkspace> = Api::namespaced(client.clone(), &ns);
    let started = Instant::now();
    stream::iter(0..n)
        .map(|i| {
            let api = api.clone();
            let ns = ns.clone();
            async move {
                api.create(&PostParams::default(), &workspace(&format!("w{i}"), &ns))
                    .await
                    .map(|_| ())
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .try_collect::<Vec<_>>()
        .await
        .expect("create workspaces");
    // Follow the workspaces through a watch rather than polling LISTs: at 5,000 tenants a
    // full LIST every few hundred milliseconds would be the heaviest client of the API server.
    let mut done: HashSet<String> = HashSet::new();
    let mut peak = 0;
    let mut events = watcher::watcher(api.clone(), watcher::Config::default())
        .default_backoff()
        .touched_objects()
        .boxed();
    let mut rss_tick = tokio::time::interval(Duration::from_millis(500));
    while done.len() < n {
        tokio::select! {
            ev = events.next() => {
                let w = ev.expect("watch ended").expect("watch");
                let provisioned = w.condition(conditions::PROVISIONED).is_some_and(|c| c.status == "True")
                    && w.status.as_ref().and_then(|s| s.observed_generation) == w.metadata.generation;
                if provisioned {
                    done.insert(w.name_any());
                }
            }
            _ = rss_tick.tick() => peak = peak.max(rss_kib(pid, "VmHWM:")),
        }
    }
    let operator = started.elapsed();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let d = deployments
        .list_metadata(&ListParams::default().labels(&format!(
            "app.kubernetes.io/managed-by={}",
            names::MANAGED_BY
        )))
        .await
        .expect("deployments");
    assert!(
        d.items.len() > n,
        "{} deployments for {n} workspaces",
        d.items.len()
    );
    let at_convergence = reconciles(port).await;
    let requests = requests(port).await;
    let requests_by_verb = breakdown(port, "clawdbot_operator_api_requests_total").await;
    let triggers = breakdown(port, "clawdbot_operator_workspace_triggers_total").await;
    // Then at rest: a converged fleet should cost (almost) no reconciles.
    tokio::time::sleep(Duration::from_secs(30)).await;
    let at_rest = reconciles(port).await - at_convergence;
    peak = peak.max(rss_kib(pid, "VmHWM:"));
    let _ = child.kill();
    let _ = child.wait();
    Run {
        namespace: ns,
        plain,
        operator,
        peak_rss_mib: peak as f64 / 1024.0,
        reconciles: at_convergence,
        requests,
        reconciles_at_rest: at_rest,
        requests_by_verb,
        triggers,
    }
}

#[tokio::main]
async fn main() {
    let sizes: Vec<usize> = std::env::var("BENCH_TENANTS")
        .unwrap_or_else(|_| "1000,5000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let client = clawdbot_testkit::kube::client().await;
    clawdbot_testkit::kube::install_crds(&client).await;
    let plain_apply = std::env::var_os("BENCH_PLAIN_APPLY").is_some();
    if plain_apply {
        println!("(the plain client writes with server-side apply, BENCH_PLAIN_APPLY)");
    }
    println!(
        "tenants | plain client (s) | operator converged (s) | ratio | requests per tenant | reconciles per tenant | operator peak RSS (MiB) | reconciles in the next 30 s"
    );
    for n in sizes {
        let r = run(&client, n, plain_apply).await;
        println!(
            "{n:>7} | {:>16.1} | {:>22.1} | {:>5.2} | {:>19.2} | {:>21.2} | {:>23.1} | {:>27}",
            r.plain.as_secs_f64(),
            r.operator.as_secs_f64(),
            r.operator.as_secs_f64() / r.plain.as_secs_f64(),
            r.requests as f64 / n as f64,
            r.reconciles as f64 / n as f64,
            r.peak_rss_mib,
            r.reconciles_at_rest,
        );
        let per_tenant = |v: &[(String, u64)]| {
            v.iter()
                .map(|(k, c)| format!("{k} {:.2}", *c as f64 / n as f64))
                .collect::<Vec<_>>()
                .join(", ")
        };
        println!(
            "{n:>7} tenants, per tenant until converged: requests by verb: {}; reconcile triggers by source: {}",
            per_tenant(&r.requests_by_verb),
            per_tenant(&r.triggers),
        );
        delete_namespace(&client, &r.namespace).await;
    }
}
