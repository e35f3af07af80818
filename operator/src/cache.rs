//! What the workspace reconciles read of objects the controller watches anyway: a tenant
//! volume's size and binding (for `build::storage::plan`), and its agent pods' scheduling and
//! container states (for `status::pod_failure`). Read here instead of from the API server, a
//! tenant that did not change costs no request at all (issue 15: a GET of the claim and a LIST
//! of the pods were two of the ten requests of every reconcile).
//!
//! Only the few fields that are read are kept: at 5,000 tenants full claims and pods would
//! cost tens of MiB of the operator's 100 MiB budget, these cost a few. A group holds one
//! object or two (a claim; a pod, two during a restart), so it is a small vector: a B-tree
//! allocates room for eleven entries at its first insert, and with a pod's inline size that
//! was 24 KiB per tenant, two thirds of the operator's heap (heaptrack, 2,000 tenants).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use kube::runtime::watcher;
use tokio::sync::watch;

use crate::error::{Error, Result};

/// Values kept per group (a tenant) and name (one object of it), filled from a watch.
pub struct Index<V> {
    what: &'static str,
    inner: Mutex<Inner<V>>,
    /// True once the first full list arrived: before that, "not here" means "not seen yet".
    ready: watch::Sender<bool>,
}

struct Inner<V> {
    groups: HashMap<String, Group<V>>,
    /// The list under way after a watch (re)start; it replaces `groups` when complete.
    relisting: Option<HashMap<String, Group<V>>>,
}

/// One group's objects by name, in name order.
type Group<V> = Vec<(String, V)>;

fn insert<V>(groups: &mut HashMap<String, Group<V>>, group: String, name: String, value: V) {
    let g = groups.entry(group).or_insert_with(|| Vec::with_capacity(1));
    match g.binary_search_by(|(n, _)| n.as_str().cmp(&name)) {
        Ok(i) => g[i].1 = value,
        Err(i) => g.insert(i, (name, value)),
    }
}

/// How long a reconcile waits for an index's first list before it fails (and backs off).
const SYNC_TIMEOUT: Duration = Duration::from_secs(30);

impl<V: Clone> Index<V> {
    pub fn new(what: &'static str) -> Self {
        Index {
            what,
            inner: Mutex::new(Inner {
                groups: HashMap::new(),
                relisting: None,
            }),
            ready: watch::Sender::new(false),
        }
    }

    /// Takes in one watch event. `key` names an object's group and name; `value` is what is
    /// kept of it (None: nothing worth keeping, as if it did not exist).
    pub fn observe<K>(
        &self,
        event: &watcher::Event<K>,
        key: impl Fn(&K) -> Option<(String, String)>,
        value: impl Fn(&K) -> Option<V>,
    ) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let inner = &mut *inner;
        match event {
            watcher::Event::Init => inner.relisting = Some(HashMap::new()),
            watcher::Event::InitApply(obj) => {
                if let (Some((group, name)), Some(v)) = (key(obj), value(obj)) {
                    let target = inner.relisting.as_mut().unwrap_or(&mut inner.groups);
                    insert(target, group, name, v);
                }
            }
            watcher::Event::InitDone => {
                if let Some(listed) = inner.relisting.take() {
                    inner.groups = listed;
                }
                self.ready.send_replace(true);
            }
            watcher::Event::Apply(obj) => {
                if let Some((group, name)) = key(obj) {
                    match value(obj) {
                        Some(v) => insert(&mut inner.groups, group, name, v),
                        None => remove(&mut inner.groups, &group, &name),
                    }
                }
            }
            watcher::Event::Delete(obj) => {
                if let Some((group, name)) = key(obj) {
                    remove(&mut inner.groups, &group, &name);
                }
            }
        }
    }

    /// Everything kept of a group, once the first full list has arrived.
    pub async fn get(&self, group: &str) -> Result<Vec<V>> {
        let mut ready = self.ready.subscribe();
        tokio::time::timeout(SYNC_TIMEOUT, ready.wait_for(|r| *r))
            .await
            .map_err(|_| Error::CacheStopped(self.what))?
            .map_err(|_| Error::CacheStopped(self.what))?;
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        Ok(inner
            .groups
            .get(group)
            .map(|g| g.iter().map(|(_, v)| v.clone()).collect())
            .unwrap_or_default())
    }

    /// Records what the operator itself just wrote, so that a reconcile that runs before the
    /// watch delivers it does not act on the older value.
    pub fn put(&self, group: String, name: String, value: V) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        insert(&mut inner.groups, group, name, value);
    }
}

fn remove<V>(groups: &mut HashMap<String, Group<V>>, group: &str, name: &str) {
    if let Some(g) = groups.get_mut(group) {
        g.retain(|(n, _)| n != name);
        if g.is_empty() {
            groups.remove(group);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn cm(name: &str, group: &str, v: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some([("g".to_string(), group.to_string())].into()),
                ..Default::default()
            },
            data: Some([("v".to_string(), v.to_string())].into()),
            ..Default::default()
        }
    }

    fn key(c: &ConfigMap) -> Option<(String, String)> {
        Some((
            c.metadata.labels.as_ref()?.get("g")?.clone(),
            c.metadata.name.clone()?,
        ))
    }

    fn value(c: &ConfigMap) -> Option<String> {
        c.data.as_ref()?.get("v").filter(|v| !v.is_empty()).cloned()
    }

    #[tokio::test]
    async fn follows_the_watch_and_a_relist_drops_what_went_away() {
        use watcher::Event::*;
        let index = Index::new("test");
        for ev in [
            Init,
            InitApply(cm("a", "t1", "1")),
            InitApply(cm("b", "t1", "2")),
            InitApply(cm("c", "t2", "3")),
            InitDone,
            Apply(cm("a", "t1", "4")),
            Delete(cm("b", "t1", "2")),
            // Nothing worth keeping: as if gone.
            Apply(cm("c", "t2", "")),
        ] {
            index.observe(&ev, key, value);
        }
        assert_eq!(index.get("t1").await.unwrap(), ["4"]);
        assert!(index.get("t2").await.unwrap().is_empty());
        // A restarted watch lists again; what it does not list went away meanwhile.
        for ev in [Init, InitApply(cm("d", "t3", "5")), InitDone] {
            index.observe(&ev, key, value);
        }
        assert!(index.get("t1").await.unwrap().is_empty());
        assert_eq!(index.get("t3").await.unwrap(), ["5"]);
    }

    #[tokio::test]
    async fn a_group_keeps_one_value_per_name_in_name_order() {
        use watcher::Event::*;
        let index = Index::new("test");
        for ev in [
            Init,
            InitApply(cm("b", "t1", "1")),
            InitDone,
            Apply(cm("a", "t1", "2")),
            Apply(cm("c", "t1", "3")),
            Apply(cm("b", "t1", "4")),
        ] {
            index.observe(&ev, key, value);
        }
        assert_eq!(index.get("t1").await.unwrap(), ["2", "4", "3"]);
        index.put("t1".into(), "a".into(), "5".into());
        assert_eq!(index.get("t1").await.unwrap(), ["5", "4", "3"]);
    }

    #[tokio::test]
    async fn a_read_before_the_first_list_waits_for_it() {
        let index = std::sync::Arc::new(Index::<String>::new("test"));
        let reader = tokio::spawn({
            let index = index.clone();
            async move { index.get("t1").await }
        });
        tokio::task::yield_now().await;
        assert!(!reader.is_finished());
        for ev in [
            watcher::Event::Init,
            watcher::Event::InitApply(cm("a", "t1", "1")),
            watcher::Event::InitDone,
        ] {
            index.observe(&ev, key, value);
        }
        assert_eq!(reader.await.unwrap().unwrap(), ["1"]);
    }
}
