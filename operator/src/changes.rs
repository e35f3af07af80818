//! Watch streams of the operator's children that pass on only real changes, and the record of
//! what the operator last applied, so that an unchanged child is not applied again.
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
//!
//! Skipping applies: the convergence benchmark measured about ten requests per reconcile, of
//! which seven applies of children that had not changed (issue 15). Each child carries the
//! hash of the desired object it was applied from ([`DESIRED_HASH`]); [`Applied`] keeps, per
//! child, that hash and the content the API server returned. A child is applied again only
//! when its desired object changed, or when the watch showed it changed (edited, deleted)
//! since: then its record is dropped. After a restart the record is empty and every child is
//! applied once (idempotent), which is also what repairs drift made while no operator ran.
//!
//! The workspaces themselves: the operator writes their status (and removes the finalizer an
//! earlier operator put on some), and each write comes back as a watch event. [`Triggers`]
//! remembers what those writes will look like so that their echoes do not reconcile the
//! workspace again.

use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

use futures::{Stream, StreamExt, future};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry, ObjectMeta};
use kube::Resource;
use kube::runtime::watcher;
use serde::Serialize;

/// Annotation on every child: a hash of the desired object the operator applied it from.
pub const DESIRED_HASH: &str = "clawdbot.io/desired-hash";

/// Annotation on a child the operator created with a POST: the [`DESIRED_HASH`] it was
/// created from. Only the create sets it, so it stays until the create's field ownership is
/// handed over to apply (see `controller::apply`), and says whether the desired object has
/// changed since the create.
pub const CREATED_HASH: &str = "clawdbot.io/created-hash";

/// What an object says that the operator acts on: its content and its ready replicas.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fingerprint {
    /// A hash of all but the bookkeeping that changes on every write (`resourceVersion`,
    /// `managedFields`), what Kubernetes' own controllers maintain (`*kubernetes.io/*`
    /// annotations such as a Deployment's revision, a ServiceAccount's token `secrets`), and
    /// the status.
    pub content: u64,
    /// `status.readyReplicas`: the one part of a child's status the operator reads.
    pub ready_replicas: Option<i64>,
}

/// The [`Fingerprint`] of an object.
pub fn fingerprint<K: Serialize>(obj: &K) -> Fingerprint {
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
    let ready_replicas = value
        .as_object_mut()
        .and_then(|o| o.remove("status"))
        .and_then(|s| s.get("readyReplicas")?.as_i64());
    let mut h = std::collections::hash_map::DefaultHasher::new();
    // serde_json keeps object keys sorted (no `preserve_order`), so equal objects print the
    // same text.
    value.to_string().hash(&mut h);
    Fingerprint {
        content: h.finish(),
        ready_replicas,
    }
}

/// The operator's last accepted apply of one child.
#[derive(Clone, Debug)]
struct Written {
    /// [`DESIRED_HASH`] of what was applied.
    desired: String,
    /// What the API server returned, and since then the ready replicas the watch reported.
    seen: Fingerprint,
    /// The watch showed other content since (an edit): apply again. Content back to what was
    /// written is no longer drift.
    drifted: bool,
}

/// What the operator itself last wrote to each child, so that the echo of its own write does
/// not come back as a change and an unchanged child is not applied again. Shared by the
/// reconcilers (which record) and the streams (which drop what drifted).
#[derive(Debug, Default)]
pub struct Applied {
    /// By kind/namespace/name.
    written: Mutex<HashMap<String, Written>>,
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

/// How a watch event of a child relates to the operator's last write of it.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    /// What the operator wrote, which then had these ready replicas.
    OwnWrite { ready_replicas: Option<i64> },
    /// Something else: applied again at the next reconcile.
    Changed,
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
    pub fn record<K: Resource + Serialize>(&self, obj: &K)
    where
        K::DynamicType: Default,
    {
        let desired = desired_hash(obj).unwrap_or_default().to_string();
        lock(&self.written).insert(
            name_key(obj),
            Written {
                desired,
                seen: fingerprint(obj),
                drifted: false,
            },
        );
    }

    /// `Some(ready replicas)` when the operator's last accepted apply of this child was made
    /// from the same desired object and nothing has changed the child since: applying it
    /// again would change nothing.
    pub fn unchanged<K: Resource>(&self, desired: &K) -> Option<Option<i64>>
    where
        K::DynamicType: Default,
    {
        let hash = desired_hash(desired)?;
        lock(&self.written)
            .get(&name_key(desired))
            .filter(|w| w.desired == hash && !w.drifted)
            .map(|w| w.seen.ready_replicas)
    }

    /// Whether the operator has a record of writing this child (since it started, and since
    /// the child was last deleted).
    pub fn known<K: Resource>(&self, obj: &K) -> bool
    where
        K::DynamicType: Default,
    {
        lock(&self.written).contains_key(&name_key(obj))
    }

    /// Compares a watched object with the last write; anything but that write marks it
    /// drifted, so that the next reconcile applies again. The ready replicas seen are kept.
    fn observe(&self, key: &str, fp: Fingerprint) -> Seen {
        let mut written = lock(&self.written);
        match written.get_mut(key) {
            Some(w) if w.seen.content == fp.content => {
                w.drifted = false;
                let before = w.seen.ready_replicas;
                w.seen.ready_replicas = fp.ready_replicas;
                Seen::OwnWrite {
                    ready_replicas: before,
                }
            }
            Some(w) => {
                w.drifted = true;
                Seen::Changed
            }
            None => Seen::Changed,
        }
    }

    fn is_being_written(&self, key: &str) -> bool {
        lock(&self.in_flight).contains_key(key)
    }

    fn forget(&self, key: &str) {
        lock(&self.written).remove(key);
    }
}

fn desired_hash<K: Resource>(obj: &K) -> Option<&str> {
    annotation(obj, DESIRED_HASH)
}

fn annotation<'a, K: Resource>(obj: &'a K, key: &str) -> Option<&'a str> {
    obj.meta()
        .annotations
        .as_ref()?
        .get(key)
        .map(String::as_str)
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
/// by the operator's own write, and every deleted one. Whatever changed is also forgotten
/// by `applied`, so that it is applied again.
pub fn changed_objects<K, S>(
    events: S,
    applied: Arc<Applied>,
) -> impl Stream<Item = Result<K, watcher::Error>> + Send
where
    K: Resource + Serialize + Send + 'static,
    K::DynamicType: Default,
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send,
{
    let mut seen: HashMap<String, Fingerprint> = HashMap::new();
    // Objects listed again after a watch restart; whatever is not among them went away
    // while the watch was down and is forgotten (the hourly requeue repairs such a loss).
    let mut relisted: Option<std::collections::HashSet<String>> = None;
    events.filter_map(move |event| {
        future::ready(match event {
            Ok(watcher::Event::Apply(obj) | watcher::Event::InitApply(obj)) => {
                let key = name_key(&obj);
                if let Some(r) = relisted.as_mut() {
                    r.insert(key.clone());
                }
                let fp = fingerprint(&obj);
                let before = seen.insert(key.clone(), fp);
                // Two controllers watch the same kind (Deployments, Services) with one record
                // of writes: whether readiness moved is judged against what this stream saw
                // before, so that both see it move.
                let changed = before != Some(fp)
                    && !applied.is_being_written(&key)
                    && match applied.observe(&key, fp) {
                        Seen::Changed => true,
                        Seen::OwnWrite { ready_replicas } => {
                            fp.ready_replicas
                                != before.map_or(ready_replicas, |b| b.ready_replicas)
                        }
                    };
                if changed {
                    tracing::debug!(kind = %K::kind(&Default::default()), name = %obj.meta().name.as_deref().unwrap_or_default(), "child changed");
                }
                changed.then_some(Ok(obj))
            }
            Ok(watcher::Event::Delete(obj)) => {
                let key = name_key(&obj);
                seen.remove(&key);
                applied.forget(&key);
                Some(Ok(obj))
            }
            Ok(watcher::Event::Init) => {
                relisted = Some(Default::default());
                None
            }
            Ok(watcher::Event::InitDone) => {
                if let Some(r) = relisted.take() {
                    seen.retain(|key, _| {
                        let listed = r.contains(key);
                        if !listed {
                            applied.forget(key);
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

/// Passes a watch on unchanged, noting in `applied` which of its objects changed since the
/// operator's last write (for objects watched for another reason, such as a workspace's
/// dedicated ModelEndpoint).
pub fn tracked<K, S>(
    events: S,
    applied: Arc<Applied>,
) -> impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send
where
    K: Resource + Serialize + Send + 'static,
    K::DynamicType: Default,
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send,
{
    events.inspect(move |event| match event {
        Ok(watcher::Event::Apply(obj) | watcher::Event::InitApply(obj)) => {
            let key = name_key(obj);
            if !applied.is_being_written(&key) {
                applied.observe(&key, fingerprint(obj));
            }
        }
        Ok(watcher::Event::Delete(obj)) => applied.forget(&name_key(obj)),
        _ => {}
    })
}

/// Trigger hashes of the last writes of each workspace (see [`changed_workspaces`]); the few
/// the operator is about to cause are expected here.
#[derive(Debug, Default)]
pub struct Triggers {
    /// By namespace/name: the triggers that reconcile nothing (the last one seen and those
    /// of the operator's own writes since).
    quiet: Mutex<HashMap<String, VecDeque<u64>>>,
}

/// How many of its own writes of one workspace the operator expects at once (a status write,
/// or the legacy finalizer's removal, with room for the next reconciles').
const EXPECTED: usize = 4;

impl Triggers {
    /// The operator is about to write `after` (the workspace as the write will leave it): its
    /// echo is not a reason to reconcile again.
    pub fn expect<K: Resource>(&self, after: &K, trigger: fn(&K) -> u64) {
        let mut quiet = lock(&self.quiet);
        let q = quiet.entry(object_key(after)).or_default();
        q.push_back(trigger(after));
        while q.len() > EXPECTED {
            q.pop_front();
        }
    }
}

fn object_key<K: Resource>(obj: &K) -> String {
    let m = obj.meta();
    format!(
        "{}/{}",
        m.namespace.as_deref().unwrap_or_default(),
        m.name.as_deref().unwrap_or_default()
    )
}

/// The workspaces whose `trigger` (what asks for a reconcile) changed since the last event,
/// other than by a write the operator announced through [`Triggers::expect`].
pub fn changed_workspaces<K, S>(
    events: S,
    triggers: Arc<Triggers>,
    trigger: fn(&K) -> u64,
) -> impl Stream<Item = Result<K, watcher::Error>> + Send
where
    K: Resource + Send + 'static,
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send,
{
    events.filter_map(move |event| {
        future::ready(match event {
            Ok(watcher::Event::Apply(obj) | watcher::Event::InitApply(obj)) => {
                let t = trigger(&obj);
                let mut quiet = lock(&triggers.quiet);
                let q = quiet.entry(object_key(&obj)).or_default();
                if let Some(i) = q.iter().position(|x| *x == t) {
                    // The echo of an expected write: it and what came before are done with.
                    q.drain(..=i);
                    q.push_front(t);
                    None
                } else {
                    q.clear();
                    q.push_back(t);
                    Some(Ok(obj))
                }
            }
            Ok(watcher::Event::Delete(obj)) => {
                lock(&triggers.quiet).remove(&object_key(&obj));
                None
            }
            Ok(watcher::Event::Init | watcher::Event::InitDone) => None,
            Err(e) => Some(Err(e)),
        })
    })
}

/// A desired object as the operator creates it (POST): stamped with [`CREATED_HASH`], the
/// [`DESIRED_HASH`] it is created from.
pub fn as_created<K: Resource + Clone>(desired: &K) -> K {
    let mut obj = desired.clone();
    if let Some(hash) = desired_hash(desired) {
        obj.meta_mut()
            .annotations
            .get_or_insert_default()
            .insert(CREATED_HASH.into(), hash.into());
    }
    obj
}

/// What an apply's answer asks of `manager` before its apply is complete: the managed fields
/// that hand the create's `Update` entry over to the `Apply` entry, when the child was created
/// by the operator from a desired object other than the one just applied (the create's entry
/// would keep what the new one dropped). `None` for any other child, and for a created child
/// applied from the object it was created from: the create's entry always holds fields the
/// apply's does not (what the API server defaulted), so the hashes, not the field sets, tell
/// whether anything was dropped.
pub fn handover<K: Resource>(applied: &K, manager: &str) -> Option<Vec<ManagedFieldsEntry>> {
    let created_from = annotation(applied, CREATED_HASH)?;
    if Some(created_from) == desired_hash(applied) {
        return None;
    }
    handed_over(applied.meta(), manager)
}

/// The managed fields of an object with `manager`'s `Update` entry (a create's) handed over
/// to its `Apply` entry, when that entry owns a field the `Apply` entry does not (the apply
/// left it behind): its fields joined to those of the `Apply` entry (made one if there is
/// none), the rest as they are. `None` when there is nothing to hand over.
fn handed_over(meta: &ObjectMeta, manager: &str) -> Option<Vec<ManagedFieldsEntry>> {
    let entries = meta.managed_fields.as_ref()?;
    let ours = |e: &ManagedFieldsEntry, op: &str| {
        e.manager.as_deref() == Some(manager)
            && e.operation.as_deref() == Some(op)
            && e.subresource.as_deref().unwrap_or_default().is_empty()
    };
    let update = entries.iter().find(|e| ours(e, "Update"))?.clone();
    let applied = entries
        .iter()
        .find(|e| ours(e, "Apply"))
        .and_then(|e| e.fields_v1.as_ref());
    let created = update.fields_v1.as_ref().map(|f| &f.0);
    if !created.is_some_and(|c| beyond(c, applied.map(|a| &a.0))) {
        return None;
    }
    let mut out: Vec<ManagedFieldsEntry> = entries
        .iter()
        .filter(|e| !ours(e, "Update"))
        .cloned()
        .collect();
    match out.iter_mut().find(|e| ours(e, "Apply")) {
        Some(apply) => {
            let mut fields = apply.fields_v1.take().map(|f| f.0).unwrap_or_default();
            if let Some(theirs) = update.fields_v1 {
                union(&mut fields, theirs.0);
            }
            apply.fields_v1 = Some(FieldsV1(fields));
        }
        None => out.push(ManagedFieldsEntry {
            operation: Some("Apply".into()),
            ..update
        }),
    }
    Some(out)
}

/// Whether field set `a` holds a field that `b` does not (FieldsV1: a tree of JSON objects
/// whose leaves are empty objects).
fn beyond(a: &serde_json::Value, b: Option<&serde_json::Value>) -> bool {
    match a.as_object() {
        Some(fields) if !fields.is_empty() => fields
            .iter()
            .any(|(k, v)| beyond(v, b.and_then(|b| b.get(k)))),
        // A leaf: `b` has it or not.
        _ => b.is_none(),
    }
}

/// Joins two field sets (FieldsV1: a tree of JSON objects).
fn union(into: &mut serde_json::Value, from: serde_json::Value) {
    match (into, from) {
        (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
            for (k, v) in b {
                match a.get_mut(&k) {
                    Some(existing) => union(existing, v),
                    None => {
                        a.insert(k, v);
                    }
                }
            }
        }
        (into @ serde_json::Value::Null, from) => *into = from,
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use serde_json::json;

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
        other.metadata.name = Some("claw-b".into());
        let mut other_again = other.clone();
        other_again.metadata.resource_version = Some("9".into());
        let events = futures::stream::iter(vec![
            Ok(Init),
            Ok(InitApply(cm("1", "{}", 1))),
            Ok(InitApply(other)),
            Ok(InitDone),
            // The watch restarts and claw-b is not listed: it went away meanwhile and is
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

    fn stamped(rv: &str, data: &str, desired: &str) -> ConfigMap {
        let mut c = cm(rv, data, 1);
        c.metadata.annotations = Some([(DESIRED_HASH.to_string(), desired.to_string())].into());
        c
    }

    #[tokio::test]
    async fn an_unchanged_child_is_not_applied_again_until_it_drifts() {
        use watcher::Event::*;
        let applied = Arc::new(Applied::default());
        let desired = stamped("", "{}", "h1");
        assert_eq!(applied.unchanged(&desired), None, "never applied");
        applied.record(&stamped("5", "{}", "h1"));
        assert_eq!(applied.unchanged(&desired), Some(None));
        assert_eq!(
            applied.unchanged(&stamped("", "{\"new\":1}", "h2")),
            None,
            "a new desired object is applied"
        );
        // The echo of the write and a no-op rewrite change nothing.
        let passed = changed_objects(
            futures::stream::iter(vec![
                Ok(Apply(stamped("5", "{}", "h1"))),
                Ok(Apply(stamped("6", "{}", "h1"))),
            ]),
            applied.clone(),
        )
        .count()
        .await;
        assert_eq!(passed, 0);
        assert_eq!(applied.unchanged(&desired), Some(None));
        // Someone edits it: applied again.
        let passed = changed_objects(
            futures::stream::iter(vec![Ok(Apply(stamped("7", "{\"x\":1}", "h1")))]),
            applied.clone(),
        )
        .count()
        .await;
        assert_eq!(passed, 1);
        assert_eq!(
            applied.unchanged(&desired),
            None,
            "an edited child is applied again"
        );
        // Someone deletes it: applied again.
        applied.record(&stamped("8", "{}", "h1"));
        let passed = changed_objects(
            futures::stream::iter(vec![Ok(Delete(stamped("8", "{}", "h1")))]),
            applied.clone(),
        )
        .count()
        .await;
        assert_eq!(passed, 1);
        assert_eq!(
            applied.unchanged(&desired),
            None,
            "a deleted child is applied again"
        );
    }

    #[tokio::test]
    async fn readiness_passes_without_a_new_apply() {
        use k8s_openapi::api::apps::v1::{Deployment, DeploymentStatus};
        use watcher::Event::*;
        let dep = |ready: Option<i32>| Deployment {
            metadata: ObjectMeta {
                name: Some("claw-a".into()),
                namespace: Some("t".into()),
                annotations: Some([(DESIRED_HASH.to_string(), "h".to_string())].into()),
                ..Default::default()
            },
            status: Some(DeploymentStatus {
                ready_replicas: ready,
                ..Default::default()
            }),
            ..Default::default()
        };
        let applied = Arc::new(Applied::default());
        applied.record(&dep(None));
        let passed = changed_objects(
            futures::stream::iter(vec![Ok(Apply(dep(Some(1))))]),
            applied.clone(),
        )
        .count()
        .await;
        assert_eq!(passed, 1, "the status may change");
        assert_eq!(applied.unchanged(&dep(None)), Some(Some(1)));
    }

    #[tokio::test]
    async fn the_echoes_of_announced_workspace_writes_are_quiet() {
        use watcher::Event::*;
        // The trigger of a test object: its data.
        fn trigger(c: &ConfigMap) -> u64 {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            c.data.hash(&mut h);
            h.finish()
        }
        let triggers = Arc::new(Triggers::default());
        let created = cm("1", "{}", 1);
        let after_finalizer = cm("2", "{\"f\":1}", 2);
        let after_status = cm("3", "{\"s\":1}", 3);
        let first = changed_workspaces(
            futures::stream::iter(vec![Ok(Apply(created.clone()))]),
            triggers.clone(),
            trigger,
        )
        .count()
        .await;
        assert_eq!(first, 1);
        triggers.expect(&after_finalizer, trigger);
        triggers.expect(&after_status, trigger);
        let passed: Vec<String> = changed_workspaces(
            futures::stream::iter(vec![
                Ok(Apply(after_finalizer)),
                Ok(Apply(after_status)),
                // Back to an older state: someone else's write.
                Ok(Apply(cm("4", "{\"f\":1}", 4))),
                Ok(Apply(cm("5", "{\"other\":1}", 5))),
            ]),
            triggers,
            trigger,
        )
        .map(|r| r.unwrap().metadata.resource_version.unwrap())
        .collect()
        .await;
        assert_eq!(passed, ["4", "5"]);
    }

    fn entry(manager: &str, op: &str, fields: serde_json::Value) -> ManagedFieldsEntry {
        ManagedFieldsEntry {
            manager: Some(manager.into()),
            operation: Some(op.into()),
            api_version: Some("v1".into()),
            fields_type: Some("FieldsV1".into()),
            fields_v1: Some(FieldsV1(fields)),
            ..Default::default()
        }
    }

    fn with_entries(entries: Vec<ManagedFieldsEntry>) -> ObjectMeta {
        ObjectMeta {
            managed_fields: Some(entries),
            ..Default::default()
        }
    }

    #[test]
    fn a_created_childs_entry_is_handed_over_only_when_the_apply_left_a_field_behind() {
        let created = json!({"f:data": {".": {}, "f:x": {}, "f:y": {}}, "f:metadata": {"f:labels": {".": {}, "f:a": {}}}});
        let controller = entry(
            "kube-controller-manager",
            "Update",
            json!({"f:status": {"f:replicas": {}}}),
        );

        // No Apply entry at all (an apply always leaves one, but the case is well defined):
        // the create's entry becomes it.
        let out = handed_over(
            &with_entries(vec![entry("op", "Update", created.clone())]),
            "op",
        )
        .unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].operation.as_deref(), Some("Apply"));
        assert_eq!(out[0].fields_v1.as_ref().unwrap().0, created);

        // Applied since with every field it had: nothing to hand over.
        let same = with_entries(vec![
            entry("op", "Update", created.clone()),
            entry("op", "Apply", created.clone()),
            controller.clone(),
        ]);
        assert!(handed_over(&same, "op").is_none());

        // Applied without data.y: the create's entry still holds it, so it is handed over:
        // one Apply entry with both field sets, the other manager's entry untouched.
        let fewer = json!({"f:data": {".": {}, "f:x": {}}, "f:metadata": {"f:labels": {".": {}, "f:a": {}}}, "f:spec": {"f:z": {}}});
        let out = handed_over(
            &with_entries(vec![
                entry("op", "Update", created.clone()),
                controller.clone(),
                entry("op", "Apply", fewer),
            ]),
            "op",
        )
        .unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(out[0], controller);
        assert_eq!(out[1].operation.as_deref(), Some("Apply"));
        assert_eq!(
            out[1].fields_v1.as_ref().unwrap().0,
            json!({"f:data": {".": {}, "f:x": {}, "f:y": {}}, "f:metadata": {"f:labels": {".": {}, "f:a": {}}}, "f:spec": {"f:z": {}}})
        );

        // Someone else's Update entry, or an entry of a subresource, is not the create's.
        let others = with_entries(vec![
            entry("someone", "Update", created.clone()),
            ManagedFieldsEntry {
                subresource: Some("status".into()),
                ..entry("op", "Update", created.clone())
            },
            entry("op", "Apply", json!({})),
        ]);
        assert!(handed_over(&others, "op").is_none());
        assert!(handed_over(&ObjectMeta::default(), "op").is_none());
    }

    /// Only a child created from another desired object than the one applied is handed over.
    #[test]
    fn a_created_child_is_handed_over_only_once_its_desired_object_changed() {
        let created = json!({"f:data": {".": {}, "f:x": {}}});
        let mut child = ConfigMap {
            metadata: with_entries(vec![
                entry("op", "Update", created),
                entry("op", "Apply", json!({"f:data": {"f:x": {}}})),
            ]),
            ..ConfigMap::default()
        };
        let stamp = |c: &mut ConfigMap, key: &str, v: &str| {
            c.metadata
                .annotations
                .get_or_insert_default()
                .insert(key.into(), v.into());
        };
        stamp(&mut child, DESIRED_HASH, "h1");
        // Applied, never created: nothing to hand over.
        assert!(handover(&child, "op").is_none());
        // Created from h1 and applied from h1 (a restart's apply): defaults only, kept.
        let created_from_h1 = as_created(&child);
        assert_eq!(annotation(&created_from_h1, CREATED_HASH), Some("h1"));
        assert!(handover(&created_from_h1, "op").is_none());
        // Applied from h2: handed over.
        let mut changed = created_from_h1.clone();
        stamp(&mut changed, DESIRED_HASH, "h2");
        let fields = handover(&changed, "op").unwrap();
        assert_eq!(fields.len(), 1);
        assert_eq!(fields[0].operation.as_deref(), Some("Apply"));
    }
}
