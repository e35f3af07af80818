//! The async edge: reconcilers that read the cluster, call the pure builders, apply with
//! server-side apply and write status.

pub mod endpoint;
pub mod workspace;

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};

use clawdbot_api::names::FIELD_MANAGER;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::changes::Applied;
use crate::config::OperatorConfig;
use crate::error::Result;
use crate::metrics::Metrics;

/// State shared by every reconcile.
pub struct Context {
    pub client: Client,
    pub config: OperatorConfig,
    pub metrics: Arc<Metrics>,
    pub recorder: Recorder,
    /// What the operator last wrote to each child (see [`changes`](crate::changes)).
    pub applied: Arc<Applied>,
    /// Consecutive failures per object, for per-object backoff.
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    pub fn new(
        client: Client,
        config: OperatorConfig,
        metrics: Arc<Metrics>,
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
            failures: Mutex::default(),
        }
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

/// Server-side apply of a child with the operator's one field manager. The result is
/// remembered so that its watch event is not taken for a change.
pub async fn apply<K>(ctx: &Context, obj: &K) -> Result<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned,
{
    let ns = obj.meta().namespace.clone().unwrap_or_default();
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &ns);
    let _in_flight = ctx.applied.begin(obj);
    let applied = api
        .patch(
            &obj.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(obj),
        )
        .await?;
    ctx.applied.record(&applied);
    Ok(applied)
}
