//! Watch streams of the operator's children that pass on only real changes.
//!
//! A no-op server-side apply still rewrites `managedFields` (its timestamp) and so bumps the
//! object's `resourceVersion` on some API servers (seen on 1.20 with Deployments). Each such
//! write is a watch event, and a controller that owns the object would reconcile its parent
//! again, apply again, and loop forever: every tenant reconciled every few seconds, ten
//! requests each, for nothing. Here an object passes only when what it says changed, and a
//! deletion always passes, so drift (someone deletes or edits a child) is still repaired.
//!
//! Two more kinds of event say nothing new: the echo of the operator's own write (it knows
//! what it applied; [`Applied`] remembers it), and status the operator does not read (of a
//! child's status it reads only `readyReplicas`).

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;

use futures::{Stream, StreamExt, future};
use kube::Resource;
use kube::runtime::watcher;
use serde::Serialize;

/// A hash of everything an object says that the operator acts on: all but the bookkeeping
/// that changes on every write (`resourceVersion`, `managedFields`), what Kubernetes'
/// own controllers maintain (`*kubernetes.io/*` annotations such as a Deployment's revision,
/// a ServiceAccount's token `secrets`), and the status, of which only `readyReplicas` counts.
pub fn fingerprint<K: Serialize>(obj: &K) -> u64 {
    let mut value = serde_json::to_value(obj).unwrap_or_default();
    if let Some(meta) = value
        .get_mut("metadata")
        .and_then(serde_json::Value::as_object_mut)
    {
        meta.remove("resourceVersion");
        meta.remove("managedFields");
        if let Some(annotations) = meta
            .get_mut("annotations")
            .and_then(serde_json::Value::as_object_mut)
        {
            annotations.retain(|k, _| !k.contains("kubernetes.io/"));
            if annotations.is_empty() {
                meta.remove("annotations");
            }
        }
    }
    if value.get("kind").and_then(serde_json::Value::as_str) == Some("ServiceAccount")
        && let Some(obj) = value.as_object_mut()
    {
        obj.remove("secrets");
    }
    if let Some(obj) = value.as_object_mut()
        && let Some(status) = obj.remove("status")
    {
        obj.insert(
            "readyReplicas".into(),
            status.get("readyReplicas").cloned().unwrap_or_default(),
        );
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    // serde_json keeps object keys sorted (no `preserve_order`), so equal objects print the
    // same text.
    value.to_string().hash(&mut h);
    h.finish()
}

/// What the operator itself last wrote to each child, so that the echo of its own write does
/// not come back as a change. Shared by the reconcilers (which record) and the streams.
#[derive(Debug, Default)]
pub struct Applied {
    written: Mutex<HashMap<String, u64>>,
    /// Applies under way, by kind/namespace/name: an event for such an object is the echo of
    /// that write arriving before its response (or a change the write is about to
    /// overwrite), never something to reconcile again for. Deletions still pass.
    in_flight: Mutex<HashMap<String, usize>>,
}

/// Marks an apply under way until dropped.
pub struct InFlight<'a> {
    applied: &'a Applied,
    key: String,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut m = lock(&self.applied.in_flight);
        if let Some(n) = m.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.key);
            }
        }
    }
}

impl Applied {
    /// Marks an apply of `obj` as under way, until the returned guard is dropped.
    pub fn begin<K: Resource>(&self, obj: &K) -> InFlight<'_>
    where
        K::DynamicType: Default,
    {
        let key = name_key(obj);
        *lock(&self.in_flight).entry(key.clone()).or_insert(0) += 1;
        InFlight { applied: self, key }
    }

    /// Remembers an object as the API server returned it from the operator's write.
    pub fn record<K: Resource + Serialize>(&self, obj: &K) {
        lock(&self.written).insert(identity(obj), fingerprint(obj));
    }

    fn is_own_write(&self, id: &str, fp: u64) -> bool {
        lock(&self.written).get(id) == Some(&fp)
    }

    fn is_being_written(&self, key: &str) -> bool {
        lock(&self.in_flight).contains_key(key)
    }

    fn forget(&self, id: &str) {
        lock(&self.written).remove(id);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// kind/namespace/name: what an apply knows of its object before the server answers.
fn name_key<K: Resource>(obj: &K) -> String
where
    K::DynamicType: Default,
{
    let m = obj.meta();
    format!(
        "{}/{}/{}",
        K::kind(&Default::default()),
        m.namespace.as_deref().unwrap_or_default(),
        m.name.as_deref().unwrap_or_default()
    )
}

/// The objects of a watch whose content changed since this stream last saw them, other than
/// by the operator's own write, and every deleted one.
pub fn changed_objects<K, S>(
    events: S,
    applied: std::sync::Arc<Applied>,
) -> impl Stream<Item = Result<K, watcher::Error>> + Send
where
    K: Resource + Serialize + Send + 'static,
    K::DynamicType: Default,
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send,
{
    let mut seen: HashMap<String, u64> = HashMap::new();
    // Objects listed again after a watch restart; whatever is not among them went away
    // while the watch was down and is forgotten (the hourly requeue repairs such a loss).
    let mut relisted: Option<std::collections::HashSet<String>> = None;
    events.filter_map(move |event| {
        future::ready(match event {
            Ok(watcher::Event::Apply(obj) | watcher::Event::InitApply(obj)) => {
                let id = identity(&obj);
                if let Some(r) = relisted.as_mut() {
                    r.insert(id.clone());
                }
                let fp = fingerprint(&obj);
                let new_to_us = seen.insert(id.clone(), fp) != Some(fp);
                let changed = new_to_us
                    && !applied.is_own_write(&id, fp)
                    && !applied.is_being_written(&name_key(&obj));
                if changed {
                    tracing::debug!(kind = %K::kind(&Default::default()), name = %obj.meta().name.as_deref().unwrap_or_default(), "child changed");
                }
                changed.then_some(Ok(obj))
            }
            Ok(watcher::Event::Delete(obj)) => {
                let id = identity(&obj);
                seen.remove(&id);
                applied.forget(&id);
                Some(Ok(obj))
            }
            Ok(watcher::Event::Init) => {
                relisted = Some(Default::default());
                None
            }
            Ok(watcher::Event::InitDone) => {
                if let Some(r) = relisted.take() {
                    seen.retain(|id, _| {
                        let listed = r.contains(id);
                        if !listed {
                            applied.forget(id);
                        }
                        listed
                    });
                }
                None
            }
            Err(e) => Some(Err(e)),
        })
    })
}

/// The uid, or namespace/name for an object that has none (never from an API server).
fn identity<K: Resource>(obj: &K) -> String {
    let m = obj.meta();
    m.uid.clone().unwrap_or_else(|| {
        format!(
            "{}/{}",
            m.namespace.as_deref().unwrap_or_default(),
            m.name.as_deref().unwrap_or_default()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ManagedFieldsEntry, ObjectMeta, Time};

    fn cm(rv: &str, data: &str, managed_at: i64) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some("claw-a".into()),
                namespace: Some("t".into()),
                uid: Some("u-1".into()),
                resource_version: Some(rv.into()),
                managed_fields: Some(vec![ManagedFieldsEntry {
                    manager: Some("clawdbot-operator".into()),
                    time: Some(Time(
                        k8s_openapi::jiff::Timestamp::from_second(managed_at).unwrap(),
                    )),
                    ..Default::default()
                }]),
                ..Default::default()
            },
            data: Some([("config.json".to_string(), data.to_string())].into()),
            ..Default::default()
        }
    }

    #[test]
    fn bookkeeping_is_not_a_change_but_content_is() {
        assert_eq!(
            fingerprint(&cm("1", "{}", 100)),
            fingerprint(&cm("2", "{}", 200))
        );
        assert_ne!(
            fingerprint(&cm("1", "{}", 100)),
            fingerprint(&cm("2", "{\"a\":1}", 100))
        );
    }

    #[tokio::test]
    async fn only_changes_and_deletions_pass() {
        use watcher::Event::*;
        let events = futures::stream::iter(vec![
            Ok(Init),
            Ok(InitApply(cm("1", "{}", 1))),
            Ok(InitDone),
            // A no-op apply: new resourceVersion and managedFields time only.
            Ok(Apply(cm("2", "{}", 2))),
            // Someone edits the data: drift to repair.
            Ok(Apply(cm("3", "{\"x\":1}", 3))),
            // Someone deletes it.
            Ok(Delete(cm("3", "{\"x\":1}", 3))),
            // Re-created with the same content: new to the stream after its deletion.
            Ok(Apply(cm("4", "{\"x\":1}", 4))),
        ]);
        let passed: Vec<String> = changed_objects(events, Default::default())
            .map(|r| r.unwrap().metadata.resource_version.unwrap())
            .collect()
            .await;
        assert_eq!(passed, ["1", "3", "3", "4"]);
    }

    #[tokio::test]
    async fn a_relist_forgets_what_went_away_meanwhile() {
        use watcher::Event::*;
        let mut other = cm("1", "{}", 1);
        other.metadata.uid = Some("u-2".into());
        let mut other_again = other.clone();
        other_again.metadata.resource_version = Some("9".into());
        let events = futures::stream::iter(vec![
            Ok(Init),
            Ok(InitApply(cm("1", "{}", 1))),
            Ok(InitApply(other)),
            Ok(InitDone),
            // The watch restarts and u-2 is not listed: it went away meanwhile and is
            // forgotten, so its (test-only) return with the same content counts as new.
            Ok(Init),
            Ok(InitApply(cm("1", "{}", 1))),
            Ok(InitDone),
            Ok(Apply(other_again)),
        ]);
        let passed: Vec<String> = changed_objects(events, Default::default())
            .map(|r| r.unwrap().metadata.resource_version.unwrap())
            .collect()
            .await;
        assert_eq!(passed, ["1", "1", "9"]);
    }

    #[tokio::test]
    async fn the_echo_of_our_own_write_is_not_a_change() {
        use watcher::Event::*;
        let applied = std::sync::Arc::new(Applied::default());
        applied.record(&cm("5", "{\"ours\":1}", 5));
        let events = futures::stream::iter(vec![
            Ok(Apply(cm("5", "{\"ours\":1}", 5))),
            Ok(Apply(cm("6", "{\"theirs\":1}", 6))),
            // Back to what we wrote: nothing to repair.
            Ok(Apply(cm("7", "{\"ours\":1}", 7))),
        ]);
        let passed: Vec<String> = changed_objects(events, applied)
            .map(|r| r.unwrap().metadata.resource_version.unwrap())
            .collect()
            .await;
        assert_eq!(passed, ["6"]);
    }

    #[tokio::test]
    async fn an_echo_that_beats_the_apply_response_is_not_a_change() {
        use watcher::Event::*;
        let applied = std::sync::Arc::new(Applied::default());
        let guard = applied.begin(&cm("0", "{}", 0));
        let during = changed_objects(
            futures::stream::iter(vec![Ok(Apply(cm("5", "{\"new\":1}", 5)))]),
            applied.clone(),
        )
        .count()
        .await;
        assert_eq!(during, 0);
        drop(guard);
        // Once the apply is over, a change by someone else passes again.
        let after = changed_objects(
            futures::stream::iter(vec![Ok(Apply(cm("6", "{\"theirs\":1}", 6)))]),
            applied,
        )
        .count()
        .await;
        assert_eq!(after, 1);
    }

    #[test]
    fn what_kubernetes_controllers_maintain_is_not_a_change() {
        use k8s_openapi::api::core::v1::{ObjectReference, ServiceAccount};
        let mut a = cm("1", "{}", 1);
        a.metadata.annotations = Some(
            [(
                "deployment.kubernetes.io/revision".to_string(),
                "1".to_string(),
            )]
            .into(),
        );
        assert_eq!(fingerprint(&a), fingerprint(&cm("1", "{}", 1)));
        a.metadata.annotations = Some([("team".to_string(), "x".to_string())].into());
        assert_ne!(fingerprint(&a), fingerprint(&cm("1", "{}", 1)));

        let sa = |secrets: Option<Vec<ObjectReference>>| ServiceAccount {
            secrets,
            ..Default::default()
        };
        let token = ObjectReference {
            name: Some("claw-a-token-x".into()),
            ..Default::default()
        };
        assert_eq!(fingerprint(&sa(None)), fingerprint(&sa(Some(vec![token]))));
    }

    #[test]
    fn only_ready_replicas_of_the_status_counts() {
        use k8s_openapi::api::apps::v1::{Deployment, DeploymentStatus};
        let dep = |ready: Option<i32>, observed: i64| Deployment {
            status: Some(DeploymentStatus {
                ready_replicas: ready,
                observed_generation: Some(observed),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(fingerprint(&dep(None, 1)), fingerprint(&dep(None, 2)));
        assert_ne!(fingerprint(&dep(None, 1)), fingerprint(&dep(Some(1), 1)));
    }
}
