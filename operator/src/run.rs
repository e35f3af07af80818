//! Start-up: the health/metrics server, leader election through a Lease, and the two
//! controllers, which run only while this replica leads.

use std::collections::HashMap;
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use clawdbot_api::model_endpoint::ModelEndpoint;
use clawdbot_api::names;
use clawdbot_api::workspace::UserWorkspace;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolumeClaim, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::runtime::controller::{self, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{PredicateConfig, WatchStreamExt, reflector, watcher};
use kube::{Api, Client, ResourceExt};
use kube_lease_manager::LeaseManagerBuilder;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{error, info};

use crate::changes;
use crate::config::OperatorConfig;
use crate::controller::{self as ctrl, Context};
use crate::error::{Error, Result};
use crate::metrics::Metrics;

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
    let metrics = Arc::new(Metrics::new());
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
    let ctx = Arc::new(Context::new(
        client.clone(),
        settings.config.clone(),
        metrics.clone(),
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
    let workspaces = workspace_controller(client.clone(), settings.clone(), ctx.clone(), halted());
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
    applied: &Arc<changes::Applied>,
) -> impl futures::Stream<Item = std::result::Result<K, watcher::Error>> + Send + 'static
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
    K: Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug + Send + 'static,
{
    changes::changed_objects(
        watcher::watcher(api::<K>(client, ns), config.clone()).default_backoff(),
        applied.clone(),
    )
}

async fn workspace_controller(
    client: Client,
    settings: Settings,
    ctx: Arc<Context>,
    halt: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let (client, ns) = (&client, &settings.watch_namespace);
    // Only the operator's own children: a user's key Secrets never enter its caches.
    let children = watcher::Config::default().labels(&format!(
        "app.kubernetes.io/managed-by={}",
        names::MANAGED_BY
    ));
    // Our own status writes must not trigger another reconcile (at 10,000 tenants every one
    // of them would cost ten requests for nothing): only the spec, the wake signal, the
    // finalizers and deletion do.
    let (store, writer) = reflector::store();
    let workspaces = watcher::watcher(
        api::<UserWorkspace>(client, ns),
        watcher::Config::default().any_semantic(),
    )
    .default_backoff()
    .reflect(writer)
    .applied_objects()
    .predicate_filter(workspace_trigger, PredicateConfig::default());
    // A ModelEndpoint matters to the workspaces that reference it only when it appears or its
    // readiness or URL changes; fanning out on every event of a shared endpoint would
    // reconcile every tenant each time its Deployment status moves.
    let seen: Arc<Mutex<HashMap<EndpointKey, EndpointState>>> = Arc::default();
    let mapper_store = store.clone();
    Controller::for_stream(workspaces, store)
        .with_config(
            controller::Config::default()
                .concurrency(settings.concurrency)
                .debounce(Duration::from_millis(500)),
        )
        .owns_stream(owned::<Deployment>(client, ns, &children, &ctx.applied))
        .owns_stream(owned::<Service>(client, ns, &children, &ctx.applied))
        .owns_stream(owned::<ConfigMap>(client, ns, &children, &ctx.applied))
        .owns_stream(owned::<Secret>(client, ns, &children, &ctx.applied))
        .owns_stream(owned::<ServiceAccount>(client, ns, &children, &ctx.applied))
        .owns_stream(owned::<PersistentVolumeClaim>(
            client,
            ns,
            &children,
            &ctx.applied,
        ))
        .owns_stream(owned::<NetworkPolicy>(client, ns, &children, &ctx.applied))
        .watches(
            api::<ModelEndpoint>(client, ns),
            watcher::Config::default(),
            move |ep| {
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
                owners.into_iter().chain(referencing)
            },
        )
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
    let children = watcher::Config::default().labels(&format!(
        "app.kubernetes.io/managed-by={}",
        names::MANAGED_BY
    ));
    Controller::new(
        api::<ModelEndpoint>(client, ns),
        watcher::Config::default().any_semantic(),
    )
    .with_config(controller::Config::default().concurrency(settings.concurrency))
    .owns_stream(owned::<Deployment>(client, ns, &children, &ctx.applied))
    .owns_stream(owned::<Service>(client, ns, &children, &ctx.applied))
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

/// What in a UserWorkspace asks for a reconcile: everything but the status.
fn workspace_trigger(ws: &UserWorkspace) -> Option<u64> {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    ws.metadata.generation.hash(&mut h);
    ws.annotations()
        .get(clawdbot_api::annotations::LAST_ACTIVITY)
        .hash(&mut h);
    ws.metadata
        .deletion_timestamp
        .as_ref()
        .map(|t| t.0.as_second())
        .hash(&mut h);
    ws.finalizers().hash(&mut h);
    // A status someone else removed or replaced is rewritten.
    ws.status.is_none().hash(&mut h);
    Some(h.finish())
}
