//! Start-up: the health/metrics server, leader election through a Lease, and the two
//! controllers, which run only while this replica leads.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use clawdbot_api::model_endpoint::ModelEndpoint;
use clawdbot_api::names;
use clawdbot_api::workspace::UserWorkspace;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolumeClaim, Pod, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::runtime::controller::{self, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::reflector::store::Writer;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, Client, ResourceExt};
use kube_lease_manager::LeaseManagerBuilder;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{error, info};

use crate::build::storage::ExistingVolume;
use crate::changes;
use crate::config::OperatorConfig;
use crate::controller::{self as ctrl, Context};
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::status;

/// How one operator replica runs.
#[derive(Clone, Debug)]
pub struct Settings {
    pub config: OperatorConfig,
    pub watch_namespace: Option<String>,
    pub lease_namespace: String,
    pub lease_name: String,
    pub identity: String,
    pub lease_duration: Duration,
    pub concurrency: u16,
}

#[derive(Clone)]
struct Health {
    metrics: Arc<Metrics>,
    started: Arc<AtomicBool>,
    leader: Arc<AtomicBool>,
}

/// `/metrics`, `/healthz`, `/readyz` (ready once leader election runs; the body says whether
/// this replica leads or stands by).
fn health_app(h: Health) -> axum::Router {
    axum::Router::new()
        .route(
            "/metrics",
            get(|State(h): State<Health>| async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    h.metrics.encode(),
                )
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|State(h): State<Health>| async move {
                if !h.started.load(Ordering::Relaxed) {
                    return (StatusCode::SERVICE_UNAVAILABLE, "starting");
                }
                (
                    StatusCode::OK,
                    if h.leader.load(Ordering::Relaxed) {
                        "leader"
                    } else {
                        "standby"
                    },
                )
            }),
        )
        .with_state(h)
}

/// Runs one replica until `shutdown` resolves (Ok) or it loses the lease (Err: the process
/// should exit so that it restarts as a follower).
pub async fn run(
    client: Client,
    settings: Settings,
    metrics_listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    run_with_metrics(
        client,
        settings,
        Arc::new(Metrics::new()),
        metrics_listener,
        shutdown,
    )
    .await
}

/// [`run`] with a registry made beforehand, so that the client's own layer can count its
/// requests there ([`crate::metrics::counted_client`]).
pub async fn run_with_metrics(
    client: Client,
    settings: Settings,
    metrics: Arc<Metrics>,
    metrics_listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let health = Health {
        metrics: metrics.clone(),
        started: Arc::default(),
        leader: Arc::default(),
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut http_stop = stop_rx.clone();
    let http = tokio::spawn(
        axum::serve(metrics_listener, health_app(health.clone()))
            .with_graceful_shutdown(async move {
                until(&mut http_stop, true).await;
            })
            .into_future(),
    );
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });

    let lease = LeaseManagerBuilder::new(client.clone(), &settings.lease_name)
        .with_namespace(&settings.lease_namespace)
        .with_identity(&settings.identity)
        .with_field_manager(names::lease_field_manager(
            names::FIELD_MANAGER,
            &settings.identity,
        ))
        .with_duration(settings.lease_duration.as_secs().max(2))
        .with_grace((settings.lease_duration.as_secs() / 3).max(1))
        .build()
        .await?;
    let (mut leading, lease_task) = lease.watch().await;
    health.started.store(true, Ordering::Relaxed);
    info!(identity = %settings.identity, "waiting for the leader lease");

    let mut stop = stop_rx.clone();
    let outcome = loop {
        tokio::select! {
            _ = until(&mut stop, true) => break Ok(()),
            changed = leading.changed() => {
                if changed.is_err() { break Err(Error::LostLeadership) }
                let is_leader = *leading.borrow_and_update();
                if is_leader {
                    break run_leader(&client, &settings, &metrics, &health, &mut leading, stop_rx.clone()).await;
                }
            }
        }
    };
    health.leader.store(false, Ordering::Relaxed);
    metrics.set_leader(false);
    drop(leading);
    // Hand the lease over at once on a clean stop instead of making the next leader wait for it
    // to expire.
    match lease_task.await {
        Ok(Ok(manager)) => {
            if let Err(e) = manager.release().await {
                error!(error = %e, "releasing the lease failed");
            }
        }
        Ok(Err(e)) => error!(error = %e, "lease manager failed"),
        Err(e) => error!(error = %e, "lease task panicked"),
    }
    let _ = http.await;
    outcome
}

async fn run_leader(
    client: &Client,
    settings: &Settings,
    metrics: &Arc<Metrics>,
    health: &Health,
    leading: &mut watch::Receiver<bool>,
    mut stop: watch::Receiver<bool>,
) -> Result<()> {
    info!(identity = %settings.identity, "became leader; starting controllers");
    health.leader.store(true, Ordering::Relaxed);
    metrics.set_leader(true);
    let (endpoints, endpoints_writer) = reflector::store();
    let ctx = Arc::new(Context::new(
        client.clone(),
        settings.config.clone(),
        metrics.clone(),
        endpoints,
        &settings.identity,
    ));

    // Both controllers stop when asked to, or when the lease is lost.
    let (halt_tx, halt_rx) = watch::channel(false);
    let halted = move || {
        let mut rx = halt_rx.clone();
        async move {
            until(&mut rx, true).await;
        }
    };
    let workspaces = workspace_controller(
        client.clone(),
        settings.clone(),
        ctx.clone(),
        endpoints_writer,
        halted(),
    );
    let endpoints = endpoint_controller(client.clone(), settings.clone(), ctx, halted());
    let mut controllers = tokio::spawn(async move { futures::join!(workspaces, endpoints) });

    let lost = tokio::select! {
        _ = until(&mut stop, true) => false,
        _ = until(leading, false) => true,
        _ = &mut controllers => false,
    };
    let _ = halt_tx.send(true);
    let _ = controllers.await;
    if lost {
        error!("lost the leader lease; controllers stopped");
        Err(Error::LostLeadership)
    } else {
        info!("controllers stopped");
        Ok(())
    }
}

fn api<K>(client: &Client, ns: &Option<String>) -> Api<K>
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
{
    match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// A child kind's watch, passing on only real changes and deletions (see [`changes`]).
fn owned<K>(
    client: &Client,
    ns: &Option<String>,
    config: &watcher::Config,
    ctx: &Arc<Context>,
) -> impl futures::Stream<Item = std::result::Result<K, watcher::Error>> + Send + 'static
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
    K: k8s_openapi::Resource,
    K: Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug + Send + 'static,
{
    owned_seen(client, ns, config, ctx, |_: &watcher::Event<K>| {})
}

/// [`owned`] for the ModelEndpoint controller: its events are not counted as workspace
/// triggers.
fn owned_by_endpoints<K>(
    client: &Client,
    ns: &Option<String>,
    config: &watcher::Config,
    ctx: &Arc<Context>,
) -> impl futures::Stream<Item = std::result::Result<K, watcher::Error>> + Send + 'static
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
    K: Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug + Send + 'static,
{
    changes::changed_objects(
        watcher::watcher(api::<K>(client, ns), config.clone()).default_backoff(),
        ctx.applied.clone(),
    )
}

/// [`owned`], showing every event (also those that pass on nothing) to `seen` first.
fn owned_seen<K>(
    client: &Client,
    ns: &Option<String>,
    config: &watcher::Config,
    ctx: &Arc<Context>,
    mut seen: impl FnMut(&watcher::Event<K>) + Send + 'static,
) -> impl futures::Stream<Item = std::result::Result<K, watcher::Error>> + Send + 'static
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
    K: k8s_openapi::Resource,
    K: Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug + Send + 'static,
{
    let metrics = ctx.metrics.clone();
    changes::changed_objects(
        watcher::watcher(api::<K>(client, ns), config.clone())
            .default_backoff()
            .inspect_ok(move |event| seen(event)),
        ctx.applied.clone(),
    )
    .inspect_ok(move |_| metrics.triggered(K::KIND))
}

/// The tenants' agent pods: kept (the little that is read) in [`Context::agent_pods`], and
/// passed on only when their trouble changes ([`status::pod_trouble`]: a stuck container, a
/// scheduler that has no room). A pod created, scheduled or started costs no reconcile; that
/// the workload became ready comes through its Deployment. Watching instead of listing them
/// after each apply is what gives a new tenant one reconcile (issue 15: a look at the pods
/// right after the Deployment apply found none yet and came back with a backoff, every
/// tenant).
fn agent_pods(
    client: &Client,
    ns: &Option<String>,
    ctx: &Arc<Context>,
) -> impl futures::Stream<Item = std::result::Result<Pod, watcher::Error>> + Send + 'static {
    let config = watcher::Config::default().labels("app.kubernetes.io/name=clawdbot-agent");
    let index = ctx.clone();
    let mut trouble: HashMap<String, String> = HashMap::new();
    watcher::watcher(api::<Pod>(client, ns), config)
        .default_backoff()
        .inspect_ok(move |event| {
            index
                .agent_pods
                .observe(event, pod_group, |p| Some(status::pod_facts(p)))
        })
        .try_filter(move |event| {
            let pass = match event {
                watcher::Event::Apply(pod) | watcher::Event::InitApply(pod) => {
                    let key = format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any());
                    match status::pod_trouble(pod) {
                        Some(t) => trouble.insert(key, t.clone()).as_ref() != Some(&t),
                        None => trouble.remove(&key).is_some(),
                    }
                }
                watcher::Event::Delete(pod) => {
                    let key = format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any());
                    trouble.remove(&key).is_some()
                }
                watcher::Event::Init | watcher::Event::InitDone => false,
            };
            futures::future::ready(pass)
        })
        .inspect_ok({
            let metrics = ctx.metrics.clone();
            move |_| metrics.triggered("Pod")
        })
        .try_filter_map(|event| {
            futures::future::ready(Ok(match event {
                watcher::Event::Apply(pod)
                | watcher::Event::InitApply(pod)
                | watcher::Event::Delete(pod) => Some(pod),
                _ => None,
            }))
        })
}

/// A pod's tenant (namespace/workspace), from the label every agent pod carries.
fn pod_group(pod: &Pod) -> Option<(String, String)> {
    let ws = pod.labels().get(names::LABEL_WORKSPACE)?;
    Some((
        format!("{}/{ws}", pod.namespace()?),
        pod.metadata.name.clone()?,
    ))
}

/// The workspace an object belongs to, by the label every tenant object carries (for those
/// the workspace does not own: a retained volume, the Deployment's pods).
fn labelled_workspace<K: kube::Resource>(obj: K) -> Option<ObjectRef<UserWorkspace>> {
    let ws = obj.labels().get(names::LABEL_WORKSPACE)?;
    Some(ObjectRef::new(ws).within(&obj.namespace().unwrap_or_default()))
}

/// A tenant volume's claim as it is, for [`Context::volumes`].
fn volume_entry(pvc: &PersistentVolumeClaim) -> Option<(String, String)> {
    Some((
        format!("{}/{}", pvc.namespace()?, pvc.metadata.name.clone()?),
        String::new(),
    ))
}

async fn workspace_controller(
    client: Client,
    settings: Settings,
    ctx: Arc<Context>,
    endpoints: Writer<ModelEndpoint>,
    halt: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let (client, ns) = (&client, &settings.watch_namespace);
    // Only the operator's own children: a user's key Secrets never enter its caches.
    let children = watcher::Config::default().labels(&format!(
        "app.kubernetes.io/managed-by={}",
        names::MANAGED_BY
    ));
    // Our own writes must not trigger another reconcile (at 10,000 tenants every one of them
    // would cost requests for nothing): only the spec, the wake signal, the finalizers and
    // deletion do, when someone else changes them.
    let (store, writer) = reflector::store();
    let workspaces = changes::changed_workspaces(
        watcher::watcher(
            api::<UserWorkspace>(client, ns),
            watcher::Config::default().any_semantic(),
        )
        .default_backoff()
        // Nothing reads who wrote which field; cached for thousands of tenants, the
        // managedFields would be a good part of the operator's memory.
        .modify(|ws| ws.managed_fields_mut().clear())
        .reflect(writer)
        .inspect_ok({
            // A deleted workspace is never reconciled again (no finalizer holds it): what
            // its deletion asks of the operator is done here.
            let ctx = ctx.clone();
            move |event| {
                if let watcher::Event::Delete(ws) = event {
                    let (ws, ctx) = (ws.clone(), ctx.clone());
                    tokio::spawn(async move { ctrl::workspace::deleted(&ws, &ctx).await });
                }
            }
        }),
        ctx.triggers.clone(),
        ctrl::workspace::trigger,
    )
    .inspect_ok({
        let metrics = ctx.metrics.clone();
        move |_| metrics.triggered("UserWorkspace")
    });
    // The cache of ModelEndpoints the reconciles read is filled by the same watch that
    // triggers them, before the trigger: a reconcile never sees an older endpoint than the
    // event that started it. A dedicated endpoint that changed is applied again.
    let endpoint_events = changes::tracked(
        watcher::watcher(api::<ModelEndpoint>(client, ns), watcher::Config::default())
            .default_backoff()
            .modify(|ep| ep.managed_fields_mut().clear())
            .reflect(endpoints),
        ctx.applied.clone(),
    )
    .touched_objects();
    // A ModelEndpoint matters to the workspaces that reference it only when it appears or its
    // readiness or URL changes; fanning out on every event of a shared endpoint would
    // reconcile every tenant each time its Deployment status moves.
    let seen: Arc<Mutex<HashMap<EndpointKey, EndpointState>>> = Arc::default();
    let mapper_store = store.clone();
    let endpoint_metrics = ctx.metrics.clone();
    Controller::for_stream(workspaces, store)
        .with_config(
            controller::Config::default()
                .concurrency(settings.concurrency)
                .debounce(Duration::from_millis(500)),
        )
        .owns_stream(owned::<Deployment>(client, ns, &children, &ctx))
        .owns_stream(owned::<Service>(client, ns, &children, &ctx))
        .owns_stream(owned::<ConfigMap>(client, ns, &children, &ctx))
        .owns_stream(owned::<Secret>(client, ns, &children, &ctx))
        .owns_stream(owned::<ServiceAccount>(client, ns, &children, &ctx))
        // A retained volume has no owner (see `build::tenant::volume_claim`): its workspace
        // is found by the label every claim carries.
        .watches_stream(
            owned_seen::<PersistentVolumeClaim>(client, ns, &children, &ctx, {
                let ctx = ctx.clone();
                move |event| ctx.volumes.observe(event, volume_entry, ExistingVolume::of)
            }),
            labelled_workspace,
        )
        .watches_stream(agent_pods(client, ns, &ctx), labelled_workspace)
        .owns_stream(owned::<NetworkPolicy>(client, ns, &children, &ctx))
        .watches_stream(endpoint_events, move |ep| {
            let ns = ep.namespace();
            let name = ep.name_any();
            let state = (
                ep.is_ready(),
                ep.status.as_ref().and_then(|s| s.url.clone()),
            );
            let changed = {
                let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
                seen.insert(
                    (ns.clone().unwrap_or_default(), name.clone()),
                    state.clone(),
                ) != Some(state)
            };
            let owners: Vec<ObjectRef<UserWorkspace>> = ep
                .owner_references()
                .iter()
                .filter(|o| o.kind == "UserWorkspace")
                .map(|o| ObjectRef::new(&o.name).within(ns.as_deref().unwrap_or_default()))
                .collect();
            let referencing: Vec<ObjectRef<UserWorkspace>> = if changed {
                mapper_store
                    .state()
                    .iter()
                    .filter(|ws| ws.namespace() == ns)
                    .filter(|ws| {
                        ws.spec
                            .model
                            .endpoint_ref
                            .as_ref()
                            .is_some_and(|r| r.name == name)
                    })
                    .map(|ws| ObjectRef::from_obj(ws.as_ref()))
                    .collect()
            } else {
                Vec::new()
            };
            if !owners.is_empty() || !referencing.is_empty() {
                endpoint_metrics.triggered("ModelEndpoint");
            }
            owners.into_iter().chain(referencing)
        })
        .graceful_shutdown_on(halt)
        .run(
            ctrl::workspace::reconcile,
            ctrl::workspace::error_policy,
            ctx,
        )
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(error = %e, "workspace controller event");
            }
        })
        .await;
}

async fn endpoint_controller(
    client: Client,
    settings: Settings,
    ctx: Arc<Context>,
    halt: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let (client, ns) = (&client, &settings.watch_namespace);
    // Only model servers: the tenants' thousands of Deployments and Services are no concern
    // of this controller, and decoding each of their events twice would be.
    let children = watcher::Config::default().labels(&format!(
        "app.kubernetes.io/managed-by={},app.kubernetes.io/name={}",
        names::MANAGED_BY,
        names::MODEL_SERVER_APP
    ));
    Controller::new(
        api::<ModelEndpoint>(client, ns),
        watcher::Config::default().any_semantic(),
    )
    .with_config(controller::Config::default().concurrency(settings.concurrency))
    .owns_stream(owned_by_endpoints::<Deployment>(
        client, ns, &children, &ctx,
    ))
    .owns_stream(owned_by_endpoints::<Service>(client, ns, &children, &ctx))
    .graceful_shutdown_on(halt)
    .run(ctrl::endpoint::reconcile, ctrl::endpoint::error_policy, ctx)
    .for_each(|res| async move {
        if let Err(e) = res {
            tracing::debug!(error = %e, "endpoint controller event");
        }
    })
    .await;
}

/// Resolves once the channel holds `want` (or its sender is gone). Never holds a borrow of the
/// channel across an await, so the futures around it stay `Send`.
async fn until(rx: &mut watch::Receiver<bool>, want: bool) {
    let _ = rx.wait_for(|v| *v == want).await.map(|_| ());
}

/// Namespace and name of a ModelEndpoint.
type EndpointKey = (String, String);
/// What workspaces care about in a ModelEndpoint: readiness and URL.
type EndpointState = (bool, Option<String>);
