//! Where each tenant's agent is: UserWorkspaces and gateway-token Secrets held in memory by
//! two watches, so routing a message costs no API server call (10,000 tenants, 5,000 msg/s).
//! The router writes back only the last-activity annotation, at most once per tenant per
//! activity window across all replicas, and at once when a hibernated tenant must wake.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use clawdbot_api::workspace::Phase;
use clawdbot_api::{Plan, UserWorkspace, annotations, conditions, names};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret as KubeSecret;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use tokio::sync::watch;

use crate::config::Secret;

/// What the router needs to know of a tenant. Built when its workspace or gateway token
/// changes, not per message: a message's lookup is a hash probe and a reference count (it was
/// about ten copies and a date parse, twice per message).
pub type Tenant = Arc<TenantInfo>;

#[derive(Clone, Debug)]
pub struct TenantInfo {
    pub namespace: String,
    pub name: String,
    pub plan: Plan,
    /// `spec.model.name`: the model usage is recorded under when the agent's answer names none
    /// of its own.
    pub model: String,
    /// `spec.suspend`: an admin suspended the account; messages get a notice, not the agent.
    pub suspended: bool,
    pub ready: bool,
    pub hibernated: bool,
    /// The operator reports that the agent's pod cannot run (`AgentNotRunning`): a message
    /// waits for it without holding the sender's request open.
    pub unavailable: bool,
    pub url: Option<String>,
    /// The agent's chat completions endpoint under `url`, parsed once.
    pub chat_url: Option<reqwest::Url>,
    pub token: Option<Secret>,
    pub last_activity: Option<DateTime<Utc>>,
    pub hibernated_since: Option<DateTime<Utc>>,
    /// `spec.idleTimeout`: how fresh the activity signal must be for hibernation to work.
    pub idle_timeout: Option<Duration>,
}

impl TenantInfo {
    /// What `ws` says of its tenant, with the bearer token from its gateway Secret.
    fn of(ws: &UserWorkspace, token: Option<Secret>) -> Self {
        let status = ws.status.as_ref();
        let url = status.and_then(|s| s.url.clone());
        TenantInfo {
            namespace: ws.namespace().unwrap_or_default(),
            name: ws.name_any(),
            plan: ws.spec.plan,
            model: ws.spec.model.name.clone(),
            suspended: ws.spec.suspend,
            ready: ws.is_ready(),
            hibernated: status.is_some_and(|s| s.phase == Phase::Hibernated),
            unavailable: status.is_some_and(|s| {
                s.conditions.iter().any(|c| {
                    c.type_ == conditions::READY && c.reason == conditions::REASON_AGENT_NOT_RUNNING
                })
            }),
            chat_url: url.as_deref().and_then(crate::agent::chat_url),
            url,
            token,
            last_activity: ws
                .annotations()
                .get(annotations::LAST_ACTIVITY)
                .and_then(|v| DateTime::parse_from_rfc3339(v).ok())
                .map(|t| t.with_timezone(&Utc)),
            hibernated_since: status
                .and_then(|s| s.hibernated_since.as_ref())
                .and_then(|t| DateTime::<Utc>::from_timestamp(t.0.as_second(), 0)),
            idle_timeout: ws.idle_timeout(),
        }
    }

    /// (namespace, name) of the Secret holding this tenant's gateway token.
    fn token_key(&self) -> (String, String) {
        (
            self.namespace.clone(),
            names::gateway_token_secret(&self.name),
        )
    }

    /// `<namespace>/<name>`, for logs and usage records.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Ready, with the URL and token a message needs.
    pub fn usable(&self) -> bool {
        self.ready && self.url.is_some() && self.token.is_some()
    }

    /// Hibernated, and no wake asked for since it fell asleep.
    fn needs_wake(&self) -> bool {
        self.hibernated
            && match (self.last_activity, self.hibernated_since) {
                (Some(a), Some(h)) => a <= h,
                (None, _) | (Some(_), None) => true,
            }
    }

    /// What noting this tenant's activity now would be: None when the note the reflector
    /// shows is fresh enough; else whether it is a wake, and how long the note stands. A wake
    /// is repeated at most every few seconds until the reflector shows it; otherwise the note
    /// need only be a tenth of the idle timeout fresh (never fresher than `window`), and for a
    /// tenant that never hibernates it only feeds its status.
    fn activity_due(&self, window: Duration) -> Option<(bool, Duration)> {
        let wake = self.needs_wake();
        let stands = activity_window(wake, self.idle_timeout, window);
        let fresh = self
            .last_activity
            .and_then(|t| (Utc::now() - t).to_std().ok())
            .is_some_and(|age| !wake && age < stands);
        (!fresh).then_some((wake, stands))
    }

    /// Whether the reflector already shows a note fresh enough that
    /// [`Directory::note_activity`] does nothing. Cheap: callers check it before spawning one.
    pub fn activity_is_fresh(&self, window: Duration) -> bool {
        self.activity_due(window).is_none()
    }
}

#[derive(Default)]
struct Index {
    /// Owner (user) id -> tenant.
    by_owner: HashMap<String, Tenant>,
    /// (namespace, secret name) -> bearer token.
    tokens: HashMap<(String, String), Secret>,
    /// (namespace, gateway-token Secret name) -> owner: the tenant a token change rebuilds.
    token_owners: HashMap<(String, String), String>,
}

impl Index {
    /// Adds or replaces the tenant of `ws`'s owner.
    #[cfg(test)]
    fn put(&mut self, ws: &UserWorkspace) {
        self.insert(ws.spec.owner_id.clone(), TenantInfo::of(ws, None));
    }

    /// Adds or replaces `owner`'s tenant (built outside the lock), with its token joined.
    fn insert(&mut self, owner: String, mut tenant: TenantInfo) {
        let key = tenant.token_key();
        tenant.token = self.tokens.get(&key).cloned();
        if let Some(old) = self.by_owner.insert(owner.clone(), Arc::new(tenant)) {
            self.forget_token_owner(&old, &owner);
        }
        self.token_owners.insert(key, owner);
    }

    /// Removes `ws`'s tenant, unless its owner's entry is another workspace by now.
    fn remove(&mut self, ws: &UserWorkspace) {
        let owner = &ws.spec.owner_id;
        let same = self.by_owner.get(owner).is_some_and(|t| {
            t.name == ws.name_any() && Some(&t.namespace) == ws.namespace().as_ref()
        });
        if same && let Some(old) = self.by_owner.remove(owner) {
            self.forget_token_owner(&old, owner);
        }
    }

    fn forget_token_owner(&mut self, old: &TenantInfo, owner: &str) {
        let key = old.token_key();
        if self.token_owners.get(&key).is_some_and(|o| o == owner) {
            self.token_owners.remove(&key);
        }
    }

    /// Replaces every tenant with those of a fresh list (owner, tenant without its token).
    fn relist_workspaces(&mut self, tenants: impl IntoIterator<Item = (String, TenantInfo)>) {
        self.by_owner.clear();
        self.token_owners.clear();
        for (owner, tenant) in tenants {
            self.insert(owner, tenant);
        }
    }

    /// Sets (or, with None, removes) one token and rebuilds the tenant it belongs to.
    fn set_token(&mut self, key: (String, String), token: Option<Secret>) {
        match &token {
            Some(t) => self.tokens.insert(key.clone(), t.clone()),
            None => self.tokens.remove(&key),
        };
        if let Some(owner) = self.token_owners.get(&key)
            && let Some(tenant) = self.by_owner.get_mut(owner)
        {
            // Messages holding the old view keep it; the index gets a new one.
            Arc::make_mut(tenant).token = token;
        }
    }

    /// Replaces every token with those of a fresh list, and rejoins every tenant's.
    fn relist_tokens(&mut self, tokens: HashMap<(String, String), Secret>) {
        self.tokens = tokens;
        for tenant in self.by_owner.values_mut() {
            let token = self.tokens.get(&tenant.token_key()).cloned();
            Arc::make_mut(tenant).token = token;
        }
    }
}

/// The in-memory view of tenants, kept current by watches.
pub struct Directory {
    client: Client,
    index: RwLock<Index>,
    /// Bumped on every change, so waiters (held messages) wake without polling.
    version: watch::Sender<u64>,
    workspaces_synced: AtomicBool,
    secrets_synced: AtomicBool,
    /// Local half of the activity gate: tenant -> last time this replica tried to annotate.
    recent: std::sync::Mutex<HashMap<String, Instant>>,
    /// Activity patches under way. A wake always goes out; a mere activity note is skipped
    /// (and tried again on the tenant's next message) when this many are already in flight,
    /// so a burst of newly active tenants cannot flood the API server.
    patching: tokio::sync::Semaphore,
    /// Annotations written (`router_activity_notes_total`): the router's one API server write
    /// per tenant per activity window, to be seen apart from the messages.
    notes: prometheus_client::metrics::counter::Counter,
    /// Users a [`Directory::wait_known`] found no workspace for, and when it gave up: the
    /// same request's next look (a web chat message is looked up at the edge for its quota,
    /// then in the pipeline) is answered at once instead of waiting as long again.
    unseen: std::sync::Mutex<HashMap<uuid::Uuid, tokio::time::Instant>>,
}

/// How long one activity note (or wake) of a tenant stands before the next is sent.
fn activity_window(wake: bool, idle_timeout: Option<Duration>, window: Duration) -> Duration {
    match (wake, idle_timeout) {
        (true, _) => Duration::from_secs(5).min(window),
        (false, Some(idle)) => window.max(idle / 10),
        (false, None) => window.max(ACTIVITY_WITHOUT_IDLE_TIMEOUT),
    }
}

/// Activity notes in flight per replica (see [`Directory::note_activity`]).
const ACTIVITY_PATCHES: usize = 4;
/// How often the activity of a tenant that never hibernates is noted: only for its status.
pub const ACTIVITY_WITHOUT_IDLE_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// How long a request of a known user (a message, an API read) waits for a workspace this
/// replica has not seen (see [`Directory::wait_known`]) before it is told there is none.
pub const UNSEEN_WORKSPACE_WAIT: Duration = Duration::from_secs(5);

impl Directory {
    pub fn new(client: Client, notes: prometheus_client::metrics::counter::Counter) -> Arc<Self> {
        Arc::new(Directory {
            client,
            index: RwLock::new(Index::default()),
            version: watch::channel(0).0,
            workspaces_synced: AtomicBool::new(false),
            secrets_synced: AtomicBool::new(false),
            recent: std::sync::Mutex::new(HashMap::new()),
            patching: tokio::sync::Semaphore::new(ACTIVITY_PATCHES),
            notes,
            unseen: std::sync::Mutex::new(HashMap::new()),
        })
    }

    /// Whether both watches have listed everything once (readiness).
    pub fn synced(&self) -> bool {
        self.workspaces_synced.load(Ordering::Relaxed)
            && self.secrets_synced.load(Ordering::Relaxed)
    }

    /// Runs both watches until the process stops.
    pub async fn run(self: Arc<Self>, namespace: Option<String>) {
        let (ws_api, secret_api): (Api<UserWorkspace>, Api<KubeSecret>) = match &namespace {
            Some(ns) => (
                Api::namespaced(self.client.clone(), ns),
                Api::namespaced(self.client.clone(), ns),
            ),
            None => (Api::all(self.client.clone()), Api::all(self.client.clone())),
        };
        let secrets_cfg = watcher::Config::default().labels(&format!(
            "{}={}",
            names::LABEL_SECRET_KIND,
            names::SECRET_KIND_GATEWAY_TOKEN
        ));
        let workspaces = {
            let this = self.clone();
            async move {
                let mut stream = watcher(ws_api, watcher::Config::default())
                    .default_backoff()
                    .boxed();
                let mut relist: Option<Vec<(String, TenantInfo)>> = None;
                while let Some(event) = stream.next().await {
                    match event {
                        Ok(event) => this.on_workspace(event, &mut relist),
                        Err(e) => {
                            tracing::warn!(error = %e, "UserWorkspace watch error (retrying)")
                        }
                    }
                }
            }
        };
        let secrets = {
            let this = self.clone();
            async move {
                let mut stream = watcher(secret_api, secrets_cfg).default_backoff().boxed();
                let mut relist: Option<HashMap<(String, String), Secret>> = None;
                while let Some(event) = stream.next().await {
                    match event {
                        Ok(event) => this.on_secret(event, &mut relist),
                        // The error text names objects, never Secret data.
                        Err(e) => {
                            tracing::warn!(error = %e, "gateway Secret watch error (retrying)")
                        }
                    }
                }
            }
        };
        tokio::join!(workspaces, secrets);
    }

    fn on_workspace(
        &self,
        event: watcher::Event<UserWorkspace>,
        relist: &mut Option<Vec<(String, TenantInfo)>>,
    ) {
        // Tenants are built before the index is locked: messages read it meanwhile.
        match event {
            watcher::Event::Init => *relist = Some(Vec::new()),
            watcher::Event::InitApply(ws) => {
                if let Some(list) = relist.as_mut() {
                    list.push((ws.spec.owner_id.clone(), TenantInfo::of(&ws, None)));
                }
            }
            watcher::Event::InitDone => {
                if let Some(list) = relist.take() {
                    self.index
                        .write()
                        .expect("index lock")
                        .relist_workspaces(list);
                }
                self.workspaces_synced.store(true, Ordering::Relaxed);
            }
            watcher::Event::Apply(ws) => {
                let tenant = TenantInfo::of(&ws, None);
                let owner = ws.spec.owner_id;
                self.index
                    .write()
                    .expect("index lock")
                    .insert(owner, tenant);
            }
            watcher::Event::Delete(ws) => self.index.write().expect("index lock").remove(&ws),
        }
        self.version.send_modify(|v| *v += 1);
    }

    fn on_secret(
        &self,
        event: watcher::Event<KubeSecret>,
        relist: &mut Option<HashMap<(String, String), Secret>>,
    ) {
        fn token_of(s: &KubeSecret) -> Option<((String, String), Secret)> {
            let bytes = s.data.as_ref()?.get(names::GATEWAY_TOKEN_KEY)?;
            let token = String::from_utf8(bytes.0.clone()).ok()?;
            Some(((s.namespace()?, s.name_any()), Secret::new(token.trim())))
        }
        match event {
            watcher::Event::Init => *relist = Some(HashMap::new()),
            watcher::Event::InitApply(s) => {
                if let (Some(map), Some((k, v))) = (relist.as_mut(), token_of(&s)) {
                    map.insert(k, v);
                }
            }
            watcher::Event::InitDone => {
                if let Some(map) = relist.take() {
                    self.index.write().expect("index lock").relist_tokens(map);
                }
                self.secrets_synced.store(true, Ordering::Relaxed);
            }
            watcher::Event::Apply(s) => {
                let (key, token) = match token_of(&s) {
                    Some((k, v)) => (k, Some(v)),
                    None => ((s.namespace().unwrap_or_default(), s.name_any()), None),
                };
                self.index
                    .write()
                    .expect("index lock")
                    .set_token(key, token);
            }
            watcher::Event::Delete(s) => {
                let key = (s.namespace().unwrap_or_default(), s.name_any());
                self.index.write().expect("index lock").set_token(key, None);
            }
        }
        self.version.send_modify(|v| *v += 1);
    }

    /// The tenant of a user, if they have a workspace.
    pub fn tenant_of(&self, user: &str) -> Option<Tenant> {
        self.index
            .read()
            .expect("index lock")
            .by_owner
            .get(user)
            .cloned()
    }

    /// [`Directory::tenant_of`] by the user's id, without allocating its text.
    pub fn tenant_of_user(&self, user: uuid::Uuid) -> Option<Tenant> {
        let mut buf = uuid::Uuid::encode_buffer();
        self.tenant_of(user.hyphenated().encode_lower(&mut buf))
    }

    /// The tenant of a user, waiting up to `timeout` for one this replica has not seen yet:
    /// a workspace created moments ago (sign-up, or the admin CLI on another machine) reaches
    /// this replica through its watch, which lags the API server by milliseconds, or by
    /// seconds when the API server is busy. Without the wait, the first message of a new user
    /// could be told that their assistant is not set up while it is.
    ///
    /// A user waited for in vain within the last `timeout` is not waited for again: a workspace
    /// still unseen after one full wait is missing (its provisioning failed), not lagging.
    pub async fn wait_known(&self, user: uuid::Uuid, timeout: Duration) -> Option<Tenant> {
        if let Some(tenant) = self.tenant_of_user(user) {
            return Some(tenant);
        }
        let now = tokio::time::Instant::now();
        let recently_missed = (self.unseen.lock().expect("unseen lock"))
            .get(&user)
            .is_some_and(|&at| now.duration_since(at) < timeout);
        if recently_missed {
            return None;
        }
        let found = self
            .watch_for(timeout, move || {
                std::future::ready(self.tenant_of_user(user))
            })
            .await;
        if found.is_none() {
            let now = tokio::time::Instant::now();
            let mut unseen = self.unseen.lock().expect("unseen lock");
            // Bounded by the users without a workspace who wrote within one wait.
            unseen.retain(|_, at| now.duration_since(*at) < timeout);
            unseen.insert(user, now);
        }
        found
    }

    /// Looks with `look` now and again after every change the watches bring, until it finds
    /// something or `timeout` passes.
    async fn watch_for<T, F>(&self, timeout: Duration, mut look: impl FnMut() -> F) -> Option<T>
    where
        F: std::future::Future<Output = Option<T>>,
    {
        // Subscribed before the first look: a change between the two is not missed.
        let mut changes = self.version.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(found) = look().await {
                return Some(found);
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => continue,
                _ => return None,
            }
        }
    }

    /// Waits until the user's tenant is ready (with a URL and token), or `timeout` passes.
    ///
    /// While it waits, every change the reflector brings is looked at for a wake still due: the
    /// view the caller's first [`Directory::note_activity`] went by may have lagged the
    /// workspace's hibernation (the tenant still looked awake with a fresh note, so no wake was
    /// asked), and without a second look the message waited out the whole hold (seen in the
    /// wake benchmark: 2 of 20 wakes took the 60 s hold). A wake already asked for is repeated
    /// at most every few seconds (see `activity_window`).
    pub async fn wait_ready(
        &self,
        user: &str,
        timeout: Duration,
        window: Duration,
        limits: &crate::limits::Limits,
    ) -> Option<Tenant> {
        self.watch_for(timeout, move || async move {
            match self.tenant_of(user) {
                Some(t) if t.usable() => Some(t),
                Some(t) => {
                    self.note_activity(&t, window, limits).await;
                    None
                }
                None => None,
            }
        })
        .await
    }

    /// A receiver that changes whenever any tenant changes (for the sweeper).
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// Records activity of a tenant: annotates the workspace at most once per `window` per
    /// tenant (this replica's memory first, then a Redis gate shared by all replicas), and at
    /// once when it is hibernated and no wake was asked for since it fell asleep.
    pub async fn note_activity(
        &self,
        tenant: &Tenant,
        window: Duration,
        limits: &crate::limits::Limits,
    ) -> bool {
        let Some((wake, local_window)) = tenant.activity_due(window) else {
            // Another replica (or this one) noted it recently: the reflector shows it.
            tracing::trace!(tenant = %tenant.key(), last = ?tenant.last_activity, hibernated_since = ?tenant.hibernated_since, "activity note fresh");
            return false;
        };
        let key = tenant.key();
        let _permit = if wake {
            None
        } else {
            match self.patching.try_acquire() {
                Ok(p) => Some(p),
                Err(_) => return false,
            }
        };
        {
            let mut recent = self.recent.lock().expect("recent lock");
            if recent.get(&key).is_some_and(|t| t.elapsed() < local_window) {
                tracing::trace!(tenant = %key, wake, "activity noted by this replica a moment ago");
                return false;
            }
            recent.insert(key.clone(), Instant::now());
            if recent.len() > 100_000 {
                recent.retain(|_, t| t.elapsed() < window);
            }
        }
        let gate_name = if wake {
            format!("wake:{key}")
        } else {
            format!("activity:{key}")
        };
        match limits.gate(&gate_name, local_window).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::trace!(tenant = %key, wake, "activity noted by a replica a moment ago");
                return false;
            }
            Err(e) => tracing::warn!(error = %e, "activity gate unavailable; annotating anyway"),
        }
        let api: Api<UserWorkspace> = Api::namespaced(self.client.clone(), &tenant.namespace);
        // Milliseconds: a note truncated to its second looked up to a second older to the
        // operator's idle clock and, in the second the tenant fell asleep, no newer than its
        // `hibernatedSince` (so the router asked again five seconds later).
        let patch = serde_json::json!({"metadata": {"annotations": {
            annotations::LAST_ACTIVITY: Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        }}});
        match api
            .patch(&tenant.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                tracing::debug!(tenant = %key, wake, "annotated last activity");
                self.notes.inc();
                true
            }
            Err(e) => {
                tracing::warn!(tenant = %key, error = %e, "could not annotate last activity");
                self.recent.lock().expect("recent lock").remove(&key);
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workspace(ns: &str, name: &str, owner: &str, url: Option<&str>) -> UserWorkspace {
        let mut ws: UserWorkspace = serde_json::from_value(serde_json::json!({
            "apiVersion": "clawdbot.io/v1alpha1",
            "kind": "UserWorkspace",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"ownerId": owner, "plan": "free", "runtime": "lite",
                     "model": {"name": "smollm2", "endpointRef": {"name": "shared"}}},
        }))
        .expect("workspace");
        if let Some(url) = url {
            ws.status =
                Some(serde_json::from_value(serde_json::json!({"url": url})).expect("status"));
        }
        ws
    }

    fn token_key(ns: &str, name: &str) -> (String, String) {
        (ns.to_string(), names::gateway_token_secret(name))
    }

    fn token(index: &Index, owner: &str) -> Option<String> {
        let tenant = index.by_owner.get(owner)?;
        tenant.token.as_ref().map(|t| t.expose().to_string())
    }

    /// A directory whose watches never run: its index is what the test puts in it.
    fn offline_directory() -> Arc<Directory> {
        let config = kube::Config::new("http://127.0.0.1:9".parse().expect("url"));
        let client = Client::try_from(config).expect("client");
        Directory::new(client, Default::default())
    }

    #[tokio::test(start_paused = true)]
    async fn a_user_waited_for_in_vain_is_answered_at_once_until_the_wait_would_be_over() {
        let dir = offline_directory();
        let wait = UNSEEN_WORKSPACE_WAIT;
        let (user, other) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
        let waited = async |user| {
            let start = tokio::time::Instant::now();
            let found = dir.wait_known(user, wait).await;
            (found.is_some(), start.elapsed())
        };
        // The first look waits the whole time for a workspace the watch may still bring.
        assert_eq!(waited(user).await, (false, wait));
        // The same request's second look (the pipeline after the web edge) does not.
        assert_eq!(waited(user).await, (false, Duration::ZERO));
        // Another user is not affected by it.
        assert_eq!(waited(other).await, (false, wait));
        // Once a wait's length has passed, a new request waits again.
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(waited(user).await, (false, wait));
        // A workspace that arrives is found whatever was missed before.
        let owner = user.to_string();
        (dir.index.write().expect("index")).put(&workspace("t-u", "ws", &owner, None));
        let (found, took) = waited(user).await;
        assert!(found && took == Duration::ZERO, "{found} after {took:?}");
    }

    #[test]
    fn a_tenant_gets_its_token_whichever_of_the_two_watches_brings_its_part_first() {
        let mut index = Index::default();
        // Workspace first, then its token.
        index.put(&workspace(
            "t-a",
            "ws",
            "alice",
            Some("http://10.0.0.1:18789/"),
        ));
        assert_eq!(token(&index, "alice"), None);
        index.set_token(token_key("t-a", "ws"), Some(Secret::new("tok-a")));
        assert_eq!(token(&index, "alice").as_deref(), Some("tok-a"));
        // Token first, then the workspace.
        index.set_token(token_key("t-b", "ws"), Some(Secret::new("tok-b")));
        index.put(&workspace("t-b", "ws", "bob", None));
        assert_eq!(token(&index, "bob").as_deref(), Some("tok-b"));
        // A rotated token reaches the tenant; another tenant's token does not.
        index.set_token(token_key("t-a", "ws"), Some(Secret::new("tok-a2")));
        assert_eq!(token(&index, "alice").as_deref(), Some("tok-a2"));
        assert_eq!(token(&index, "bob").as_deref(), Some("tok-b"));
        // A deleted token leaves the tenant without one (not usable), the tenant stays known.
        index.set_token(token_key("t-a", "ws"), None);
        assert_eq!(token(&index, "alice"), None);
        assert!(index.by_owner.contains_key("alice"));
    }

    #[test]
    fn what_a_message_needs_is_built_once_from_the_workspace() {
        let mut index = Index::default();
        index.set_token(token_key("t-a", "ws"), Some(Secret::new("tok-a")));
        index.put(&workspace(
            "t-a",
            "ws",
            "alice",
            Some("http://10.0.0.1:18789/"),
        ));
        let tenant = index.by_owner.get("alice").expect("alice");
        assert_eq!(
            (tenant.namespace.as_str(), tenant.name.as_str()),
            ("t-a", "ws")
        );
        assert_eq!(
            tenant.chat_url.as_ref().map(|u| u.as_str()),
            Some("http://10.0.0.1:18789/v1/chat/completions")
        );
        // Not ready (no Ready condition): a message waits for it.
        assert!(!tenant.usable());
        // A status URL that is no URL leaves no endpoint to call.
        index.put(&workspace("t-a", "ws", "alice", Some("not a url")));
        assert_eq!(index.by_owner["alice"].chat_url, None);
    }

    #[test]
    fn a_deleted_workspace_takes_its_tenant_but_not_a_newer_one_of_the_same_owner() {
        let mut index = Index::default();
        let old = workspace("t-a", "old", "alice", None);
        index.put(&old);
        index.put(&workspace("t-a", "new", "alice", None));
        // The old workspace's deletion arrives after the new one: the new one stays.
        index.remove(&old);
        assert_eq!(index.by_owner["alice"].name, "new");
        // The old workspace's token no longer touches alice.
        index.set_token(token_key("t-a", "old"), Some(Secret::new("stale")));
        assert_eq!(token(&index, "alice"), None);
        index.set_token(token_key("t-a", "new"), Some(Secret::new("fresh")));
        assert_eq!(token(&index, "alice").as_deref(), Some("fresh"));
        index.remove(&workspace("t-a", "new", "alice", None));
        assert!(index.by_owner.is_empty() && index.token_owners.is_empty());
    }

    #[test]
    fn a_relist_replaces_every_tenant_and_rejoins_every_token() {
        let mut index = Index::default();
        index.put(&workspace("t-a", "ws", "alice", None));
        index.put(&workspace("t-b", "ws", "bob", None));
        let bob = workspace("t-b", "ws", "bob", None);
        index.relist_workspaces([("bob".to_string(), TenantInfo::of(&bob, None))]);
        assert!(!index.by_owner.contains_key("alice"));
        let tokens = HashMap::from([(token_key("t-b", "ws"), Secret::new("tok-b"))]);
        index.relist_tokens(tokens);
        assert_eq!(token(&index, "bob").as_deref(), Some("tok-b"));
        index.relist_tokens(HashMap::new());
        assert_eq!(token(&index, "bob"), None);
    }

    #[test]
    fn activity_is_noted_as_often_as_hibernation_needs_and_wakes_at_once() {
        let minute = Duration::from_secs(60);
        assert_eq!(
            activity_window(true, Some(minute * 30), minute),
            Duration::from_secs(5)
        );
        assert_eq!(
            activity_window(false, Some(minute * 30), minute),
            minute * 3
        );
        assert_eq!(activity_window(false, Some(minute * 5), minute), minute);
        assert_eq!(activity_window(false, None, minute), minute * 15);
    }
}
