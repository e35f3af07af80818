//! The async edge: reconcilers that read the cluster, call the pure builders, apply with
//! server-side apply and write status.

pub mod endpoint;
pub mod workspace;

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};

use clawdbot_api::model_endpoint::ModelEndpoint;
use clawdbot_api::names::FIELD_MANAGER;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::build::storage::{ExistingVolume, Refusals};
use crate::cache::Index;
use crate::changes::{Applied, Triggers, as_created, handover};
use crate::config::OperatorConfig;
use crate::error::{Error, Result};
use crate::metrics::Metrics;

/// State shared by every reconcile.
pub struct Context {
    pub client: Client,
    pub config: OperatorConfig,
    pub metrics: Arc<Metrics>,
    pub recorder: Recorder,
    /// What the operator last wrote to each child (see [`changes`](crate::changes)).
    pub applied: Arc<Applied>,
    /// The workspace writes the operator is about to make (see [`changes`](crate::changes)).
    pub triggers: Arc<Triggers>,
    /// Every ModelEndpoint in the watched namespaces, from the watch the workspace controller
    /// holds anyway: a workspace's reconcile reads its endpoint here instead of from the API.
    pub endpoints: Store<ModelEndpoint>,
    /// Tenant volumes as they are, by namespace/claim name (see [`cache`](crate::cache)).
    pub volumes: Index<ExistingVolume>,
    /// Tenant agent pods, the little of them that is read, by namespace/workspace.
    pub agent_pods: Index<Pod>,
    /// Volume growths the API server refused (see [`Refusals`]).
    pub refused_growths: Refusals,
    /// Consecutive failures per object, for per-object backoff.
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    pub fn new(
        client: Client,
        config: OperatorConfig,
        metrics: Arc<Metrics>,
        endpoints: Store<ModelEndpoint>,
        identity: &str,
    ) -> Self {
        let reporter = Reporter {
            controller: "clawdbot-operator".into(),
            instance: Some(identity.to_string()),
        };
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            config,
            metrics,
            applied: Arc::default(),
            triggers: Arc::default(),
            endpoints,
            volumes: Index::new("PersistentVolumeClaim"),
            agent_pods: Index::new("Pod"),
            refused_growths: Refusals::default(),
            failures: Mutex::default(),
        }
    }

    /// A ModelEndpoint from the cache, once the cache holds the first full list.
    pub async fn endpoint(&self, ns: &str, name: &str) -> Result<Option<Arc<ModelEndpoint>>> {
        self.endpoints
            .wait_until_ready()
            .await
            .map_err(|_| Error::CacheStopped("ModelEndpoint"))?;
        Ok(self.endpoints.get(&ObjectRef::new(name).within(ns)))
    }

    /// Counts one more failure of `key` and returns the count.
    pub fn failed(&self, key: &str) -> u32 {
        let mut f = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let n = f.entry(key.to_string()).or_insert(0);
        *n = n.saturating_add(1);
        *n
    }

    pub fn succeeded(&self, key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }

    /// Publishes an event on `obj`. Event failures are logged, never fatal: the status
    /// carries the same information.
    pub async fn event<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let ev = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: action.into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, &obj.object_ref(&())).await {
            tracing::warn!(error = %e, reason, "publishing event failed");
        }
    }
}

/// `namespace/name` of an object, for logs and backoff bookkeeping.
pub fn key<K: Resource<DynamicType = ()>>(obj: &K) -> String {
    ObjectRef::from_obj(obj).to_string()
}

/// What the operator applies: a namespaced object it can send and read back.
pub trait Child:
    Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
    + Clone
    + Debug
    + Serialize
    + DeserializeOwned
{
}

impl<K> Child for K where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned
{
}

/// Server-side apply of a child with the operator's one field manager. The result is
/// remembered so that its watch event is not taken for a change.
///
/// A child the operator created with a POST ([`create`]) is owned by an `Update` entry of its
/// field manager, which an apply does not take over: a field a later desired object drops
/// would stay, owned by that entry. The first apply of a desired object other than the one
/// the child was created from hands the entry over ([`handover`]: its fields join the
/// manager's `Apply` entry, guarded by the resourceVersion the apply returned) and applies
/// again, which removes what the desired object no longer has (the created-hash annotation
/// too). Two more requests, once per created child that changes; an apply of the object it
/// was created from (an operator restart applies every child once) costs nothing more.
pub async fn apply<K: Child>(ctx: &Context, obj: &K) -> Result<K> {
    let ns = obj.meta().namespace.clone().unwrap_or_default();
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &ns);
    let _in_flight = ctx.applied.begin(obj);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let mut applied = api
        .patch(&obj.name_any(), &params, &Patch::Apply(obj))
        .await?;
    if let Some(fields) = handover(&applied, FIELD_MANAGER) {
        // A merge patch replaces the list whole; the resourceVersion makes it apply to the
        // version the apply returned, or fail with a conflict (retried by the reconcile).
        let handover = serde_json::json!({
            "metadata": {
                "resourceVersion": applied.resource_version(),
                "managedFields": fields,
            }
        });
        api.patch(
            &obj.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&handover),
        )
        .await?;
        applied = api
            .patch(&obj.name_any(), &params, &Patch::Apply(obj))
            .await?;
    }
    ctx.applied.record(&applied);
    Ok(applied)
}

/// Creates a child with a POST, for a child that should not exist yet (a new tenant's): the
/// API server does less for a create than for an apply (the plain client of the convergence
/// benchmark took 9% longer applying than creating, issue 15). `None` when it exists after
/// all (then it is applied). The result is remembered as an apply's is.
pub async fn create<K: Child>(ctx: &Context, obj: &K) -> Result<Option<K>> {
    let ns = obj.meta().namespace.clone().unwrap_or_default();
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &ns);
    let _in_flight = ctx.applied.begin(obj);
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PostParams::default()
    };
    match api.create(&params, &as_created(obj)).await {
        Ok(created) => {
            ctx.applied.record(&created);
            Ok(Some(created))
        }
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// How a child the operator has no record of is written: a new tenant's children do not
/// exist yet and are created; any other is applied (it may exist: an operator restart).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unknown {
    Create,
    Apply,
}

/// [`apply`] (or [`create`], see [`Unknown`]), unless the operator's last accepted write of
/// this child was made from the same desired object and the child has not changed since
/// (see [`changes`](crate::changes)). Returns the child's ready replicas (of a workload;
/// `None` for other kinds).
pub async fn apply_changed<K: Child>(
    ctx: &Context,
    obj: &K,
    unknown: Unknown,
) -> Result<Option<i64>> {
    if let Some(ready) = ctx.applied.unchanged(obj) {
        return Ok(ready);
    }
    let written = write(ctx, obj, unknown).await?;
    Ok(crate::changes::fingerprint(&written).ready_replicas)
}

/// [`apply_changed`], returning what the API server answered; `None` for a child unchanged
/// since the last accepted write.
pub async fn apply_if_changed<K: Child>(
    ctx: &Context,
    obj: &K,
    unknown: Unknown,
) -> Result<Option<K>> {
    match ctx.applied.unchanged(obj) {
        Some(_) => Ok(None),
        None => write(ctx, obj, unknown).await.map(Some),
    }
}

async fn write<K: Child>(ctx: &Context, obj: &K, unknown: Unknown) -> Result<K> {
    if unknown == Unknown::Create
        && !ctx.applied.known(obj)
        && let Some(created) = create(ctx, obj).await?
    {
        return Ok(created);
    }
    apply(ctx, obj).await
}
