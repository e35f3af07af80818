//! The pipeline every channel feeds: record -> resolve sender -> onboarding or tenant ->
//! rate and quota -> wake if needed -> agent -> reply -> usage. A message is written to
//! Postgres before its webhook is acknowledged, so any replica can finish it (the sweeper).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use sqlx::PgPool;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;
use uuid::Uuid;

use crate::agent::{AgentClient, AgentError};
use crate::batch::Batcher;
use crate::config::Config;
use crate::directory::{Directory, Tenant, UNSEEN_WORKSPACE_WAIT};
use crate::error::ApiError;
use crate::inbound::{Inbound, estimate_tokens, split_message};
use crate::limits::{Admission, Admit, Begun, Delivery, Limits};
use crate::metrics::Metrics;
use crate::outbound::{self, Channel, ReplyKind};
use crate::store::{self, Finish, NewInbound, UsageEntry, UsageRow};

/// Code attempts are counted per sender over this window.
const CODE_ATTEMPT_WINDOW: Duration = Duration::from_secs(10 * 60);
/// A fast agent answer needs no typing indicator; a slower one gets it after this.
const TYPING_AFTER: Duration = Duration::from_millis(800);
/// Cached sender lookups are dropped after this even without a change notification.
const SENDER_CACHE_TTL: Duration = Duration::from_secs(300);

/// What became of an accepted webhook message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accepted {
    /// Recorded; processing has started.
    New(i64),
    /// Seen before (a platform retry): nothing more happens.
    Duplicate,
}

/// (channel, sender) -> (connection, when looked up).
type SenderMap = HashMap<(String, String), (store::Connection, Instant)>;

/// (channel, sender) -> connection of connected senders, invalidated by Postgres notifications
/// from any replica.
#[derive(Default)]
struct SenderCache {
    map: RwLock<SenderMap>,
}

impl SenderCache {
    fn get(&self, channel: &str, sender: &str) -> Option<store::Connection> {
        let map = self.map.read().expect("sender cache lock");
        map.get(&(channel.to_string(), sender.to_string()))
            .filter(|(_, at)| at.elapsed() < SENDER_CACHE_TTL)
            .map(|(c, _)| *c)
    }
    fn put(&self, channel: &str, sender: &str, connection: store::Connection) {
        let mut map = self.map.write().expect("sender cache lock");
        if map.len() > 200_000 {
            map.retain(|_, (_, at)| at.elapsed() < SENDER_CACHE_TTL);
        }
        map.insert(
            (channel.to_string(), sender.to_string()),
            (connection, Instant::now()),
        );
    }
    /// Drops every sender of `user`: a change of one of their connections moves the others'
    /// places in the channel limit.
    fn evict_user(&self, user: Uuid) {
        self.map
            .write()
            .expect("sender cache lock")
            .retain(|_, (c, _)| c.user != user);
    }
    fn evict(&self, channel: &str, sender: &str) {
        self.map
            .write()
            .expect("sender cache lock")
            .remove(&(channel.to_string(), sender.to_string()));
    }
    fn clear(&self) {
        self.map.write().expect("sender cache lock").clear();
    }
}

/// Everything the pipeline needs; shared by the handlers of every channel.
pub struct Core {
    pub config: Config,
    pub db: PgPool,
    pub limits: Limits,
    pub directory: Arc<Directory>,
    pub agent: AgentClient,
    pub metrics: Arc<Metrics>,
    senders: SenderCache,
    channels: HashMap<&'static str, Arc<dyn Channel>>,
    tasks: TaskTracker,
    /// Messages being processed by this replica; when all are taken a webhook gets 503 and
    /// the platform retries later, instead of every message slowing down together.
    in_flight: Arc<Semaphore>,
    /// Group commit of inbound records and of finished messages (see [`crate::batch`]).
    recorder: Batcher<NewInbound, Option<i64>>,
    finisher: Batcher<Finish, ()>,
}

/// How long a replica owns a message it took: the longest it can spend on it (hold for a
/// wake, then the agent call) and a margin. After that the sweeper of any replica takes over.
fn claim_time(config: &Config) -> Duration {
    config.limits.agent_timeout + config.limits.wake_hold + Duration::from_secs(30)
}

/// Outcome of a message whose record did not happen (a duplicate, or a failure the webhook
/// was answered with): processing stops without a word to the user and is not counted again.
const NOT_RECORDED: &str = "not_recorded";

/// The `inbound_messages` id of the message being processed: known (the sweeper took over a
/// stored row), or still being committed by `accept`.
enum RowId {
    Known(i64),
    Recording(oneshot::Receiver<Option<i64>>),
    NotRecorded,
}

impl RowId {
    /// Waits for the record to be durable; None if it was not recorded.
    async fn get(&mut self) -> Option<i64> {
        if let RowId::Recording(rx) = self {
            *self = match rx.await {
                Ok(Some(id)) => RowId::Known(id),
                _ => RowId::NotRecorded,
            };
        }
        match self {
            RowId::Known(id) => Some(*id),
            _ => None,
        }
    }
}

/// Most rows in one group-commit statement, and statements of one kind running at once.
const BATCH_ROWS: usize = 256;
const BATCHES_IN_FLIGHT: usize = 4;

impl Core {
    pub fn new(
        config: Config,
        db: PgPool,
        limits: Limits,
        directory: Arc<Directory>,
        metrics: Arc<Metrics>,
        channels: &[Arc<dyn Channel>],
    ) -> Arc<Self> {
        let claim = claim_time(&config);
        let tasks = TaskTracker::new();
        // Each statement in flight keeps its connection (see `KeptConnections`).
        let kept = store::KeptConnections::new(db.clone(), BATCHES_IN_FLIGHT);
        let recorder = Batcher::spawn(
            BATCH_ROWS,
            BATCHES_IN_FLIGHT,
            move |rows: Vec<NewInbound>| {
                let kept = kept.clone();
                async move {
                    kept.run(async |conn| store::record_inbound_batch(conn, &rows, claim).await)
                        .await
                        .map_err(|e| e.to_string())
                }
            },
        );
        let kept = store::KeptConnections::new(db.clone(), BATCHES_IN_FLIGHT);
        let finisher = Batcher::spawn(BATCH_ROWS, BATCHES_IN_FLIGHT, move |rows: Vec<Finish>| {
            let kept = kept.clone();
            async move {
                kept.run(async |conn| store::finish_batch(conn, &rows).await)
                    .await
                    .map(|()| vec![(); rows.len()])
                    .map_err(|e| e.to_string())
            }
        });
        Arc::new(Core {
            in_flight: Arc::new(Semaphore::new(config.limits.max_in_flight.max(1))),
            recorder,
            finisher,
            config,
            db,
            limits,
            directory,
            agent: AgentClient::new(),
            metrics,
            senders: SenderCache::default(),
            channels: channels.iter().map(|c| (c.name(), c.clone())).collect(),
            tasks,
        })
    }

    /// Records a message and starts processing it. Returns once the message is durable, so
    /// the webhook may be acknowledged; errors mean the platform should retry.
    pub async fn accept(self: &Arc<Self>, msg: Inbound) -> Result<Accepted, ApiError> {
        let Ok(permit) = self.in_flight.clone().try_acquire_owned() else {
            self.metrics.message(&msg.channel, "shed");
            return Err(ApiError::Overloaded);
        };
        let started = Instant::now();
        let admit = self.admit_ahead(&msg);
        let begun = self
            .limits
            .dedupe_begin(&msg.channel, &msg.external_id, admit)
            .await
            .unwrap_or_else(|e| {
                // Postgres's unique key still catches duplicates; `handle` counts the message.
                tracing::warn!(error = %e, "redis dedupe unavailable");
                Begun {
                    delivery: Delivery::New,
                    admission: None,
                }
            });
        self.metrics.stage("dedupe", started);
        let Begun {
            delivery,
            admission,
        } = begun;
        let admitted = admit
            .zip(admission)
            .map(|(a, admission)| (a.user, admission));
        match delivery {
            Delivery::New => {}
            Delivery::Recorded => {
                self.metrics.message(&msg.channel, "duplicate");
                return Ok(Accepted::Duplicate);
            }
            Delivery::BeingRecorded | Delivery::Lapsed => {
                // The claim is not rewritten once its message is recorded (a Redis round trip
                // per message less): Postgres says whether it was. Only platform retries and
                // deliveries racing each other get here.
                let lapsed = delivery == Delivery::Lapsed;
                match store::is_recorded(&self.db, &msg.channel, &msg.external_id).await {
                    Ok(true) => {
                        if lapsed {
                            // Later retries need not ask again.
                            let confirmed =
                                self.limits.dedupe_confirm(&msg.channel, &msg.external_id);
                            if let Err(e) = confirmed.await {
                                tracing::warn!(error = %e, "could not mark a dedupe key recorded");
                            }
                        }
                        self.metrics.message(&msg.channel, "duplicate");
                        return Ok(Accepted::Duplicate);
                    }
                    // The claim lapsed unrecorded (its replica died): this delivery has taken it
                    // over and records the message; `handle` counts it.
                    Ok(false) if lapsed => {}
                    // Not "duplicate": if that delivery's replica dies before recording it, an
                    // acknowledged retry would be the message lost.
                    Ok(false) => {
                        self.metrics.message(&msg.channel, "in_progress");
                        return Err(ApiError::InProgress);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "could not look up a claimed message");
                        self.metrics.message(&msg.channel, "in_progress");
                        return Err(ApiError::InProgress);
                    }
                }
            }
        }
        let row = NewInbound::of(&msg).map_err(|e| ApiError::Internal(e.to_string()))?;
        // Processing starts while the record is being committed, so the agent call does not
        // wait for it; nothing reaches the user (reply, hold, finish) before it is durable.
        let (recorded_tx, recorded_rx) = oneshot::channel();
        let (channel, external_id) = (msg.channel.clone(), msg.external_id.clone());
        let span = tracing::info_span!("message", channel = %channel, external_id = %external_id);
        self.tasks.spawn(
            self.clone()
                .process(RowId::Recording(recorded_rx), msg, admitted, permit)
                .instrument(span),
        );
        let started = Instant::now();
        let recorded = self.recorder.submit(row).await;
        self.metrics.stage("record", started);
        match recorded {
            Ok(Some(id)) => {
                let _ = recorded_tx.send(Some(id));
                Ok(Accepted::New(id))
            }
            Ok(None) => {
                let _ = recorded_tx.send(None);
                self.metrics.message(&channel, "duplicate");
                Ok(Accepted::Duplicate)
            }
            Err(e) => {
                // Processing stops before answering; the platform's retry starts it again.
                let _ = recorded_tx.send(None);
                if let Err(e) = self.limits.dedupe_abort(&channel, &external_id).await {
                    tracing::warn!(error = %e, "could not release dedupe key");
                }
                Err(ApiError::Internal(format!("recording the message: {e}")))
            }
        }
    }

    /// Marks a message done or failed, with its usage, through the group commit.
    async fn finish(
        &self,
        id: i64,
        state: &'static str,
        outcome: &'static str,
        usage: Option<UsageEntry>,
    ) -> Result<(), ApiError> {
        self.finisher
            .submit(Finish {
                id,
                state,
                outcome,
                usage,
            })
            .await
            .map_err(|e| ApiError::Internal(format!("finishing the message: {e}")))
    }

    async fn process(
        self: Arc<Self>,
        mut row: RowId,
        msg: Inbound,
        admitted: Option<(Uuid, Admission)>,
        _permit: OwnedSemaphorePermit,
    ) {
        let outcome = match self.handle(&mut row, &msg, admitted).await {
            // `accept` counted it (duplicate) or answered the webhook with an error.
            Ok(NOT_RECORDED) => return,
            Ok(outcome) => outcome,
            Err(e) => {
                // Left in `received`: the sweeper retries it after its claim runs out.
                tracing::error!(error = %e, category = e.category(), "processing a message failed");
                "error"
            }
        };
        self.metrics.message(&msg.channel, outcome);
    }

    async fn resolve_sender(
        &self,
        channel: &str,
        sender: &str,
    ) -> Result<Option<store::Connection>, sqlx::Error> {
        if let Some(connection) = self.senders.get(channel, sender) {
            return Ok(Some(connection));
        }
        let connection = store::lookup_connection(&self.db, channel, sender).await?;
        // Only connected senders are cached: one who has just connected through another
        // replica must not get the onboarding text again while that replica's notification
        // is on its way. Unknown senders send a message or two; each costs one lookup.
        if let Some(c) = connection {
            self.senders.put(channel, sender, c);
        }
        Ok(connection)
    }

    /// The limits to count `msg` against with its dedupe claim, in one Redis call instead of
    /// two: only when what this replica has cached already says that `handle` will count it
    /// (a connected sender, not a command, a tenant neither suspended nor past the plan's
    /// channels, not web chat, which is counted at its edge). Otherwise `handle` counts it on
    /// its own, as for a sender seen for the first time. Should the cache or the tenant change
    /// in the microseconds between the two, the message may be counted without being forwarded:
    /// one message of a quota, never an uncounted one.
    fn admit_ahead(&self, msg: &Inbound) -> Option<Admit> {
        if msg.channel == outbound::WEB || msg.text.trim().starts_with("/start") {
            return None;
        }
        let connection = self.senders.get(&msg.channel, &msg.sender_id)?;
        let tenant = self.directory.tenant_of_user(connection.user)?;
        let policy = self.config.accounts.plans.policy(tenant.plan);
        if tenant.suspended || connection.paused(policy.max_channels) {
            return None;
        }
        Some(Admit {
            user: connection.user,
            per_minute: self.config.limits.rate_limit_per_minute,
            per_day: policy.messages_per_day,
        })
    }

    /// Counts a message of `user` against the per-minute limit and the daily quota.
    async fn admit(&self, msg: &Inbound, user: Uuid, per_day: u32) -> Admission {
        if msg.channel == outbound::WEB {
            // Counted at the web edge, which answers over the limit with 429 and quota headers.
            return Admission::Allowed;
        }
        let started = Instant::now();
        let admission = self
            .limits
            .admit(user, self.config.limits.rate_limit_per_minute, per_day)
            .await
            .unwrap_or_else(|e| {
                // Availability over exact counting: a Redis outage does not stop conversations.
                tracing::warn!(error = %e, "rate limit check unavailable; admitting");
                Admission::Allowed
            });
        self.metrics.stage("admit", started);
        admission
    }

    async fn handle(
        self: &Arc<Self>,
        row: &mut RowId,
        msg: &Inbound,
        admitted: Option<(Uuid, Admission)>,
    ) -> Result<&'static str, ApiError> {
        let connection = self.resolve_sender(&msg.channel, &msg.sender_id).await?;
        let user = connection.map(|c| c.user);
        let text = msg.text.trim();
        let start_arg = text
            .strip_prefix("/start")
            .filter(|r| r.is_empty() || r.starts_with(' '))
            .map(str::trim);
        let code = match start_arg {
            Some(arg) if !arg.is_empty() => Some(arg),
            Some(_) => None,
            None if user.is_none() && store::looks_like_code(text) => Some(text),
            None => None,
        };
        if let Some(code) = code {
            // Redeeming changes state (the code is used up): only for a recorded message.
            if row.get().await.is_none() {
                return Ok(NOT_RECORDED);
            }
            return self.redeem(row, msg, code).await;
        }
        let Some(user) = user else {
            let note = format!(
                "Hi! I'm Clawdbot, your personal AI assistant. To talk to me here, create your account at {} \
                 and send me the connection code shown there.",
                self.config.onboarding.registration_url
            );
            return self.answer(row, msg, &note, "onboarding").await;
        };
        if start_arg.is_some() {
            return self
                .answer(row, msg, "You're connected. Just write to me.", "start")
                .await;
        }
        let known = match self.directory.tenant_of_user(user) {
            Some(t) => Some(t),
            None => {
                let started = Instant::now();
                let t = (self.directory)
                    .wait_known(user, UNSEEN_WORKSPACE_WAIT)
                    .await;
                self.metrics.stage("unseen_workspace", started);
                t
            }
        };
        let Some(tenant) = known else {
            return self
                .answer(
                    row,
                    msg,
                    "Your assistant is not set up yet. Please try again in a few minutes.",
                    "no_workspace",
                )
                .await;
        };
        if tenant.suspended {
            let note = "Your account is suspended, so your assistant cannot answer. \
                        Please contact support.";
            return self.answer(row, msg, note, "suspended").await;
        }
        let policy = self.config.accounts.plans.policy(tenant.plan);
        // After a downgrade, the chat accounts past the plan's channel limit stay connected
        // (nothing is deleted) but are not answered; the oldest ones are.
        if let Some(c) = connection
            && c.paused(policy.max_channels)
        {
            let note = format!(
                "Your {} plan connects {} chat accounts and this one is past them, so your assistant \
                 does not answer here for now. Disconnect another in your dashboard or upgrade to \
                 use it again; nothing was deleted.",
                tenant.plan, policy.max_channels
            );
            return self.answer(row, msg, &note, "channel_paused").await;
        }
        let per_day = policy.messages_per_day;
        let admission = match admitted {
            // Counted with the dedupe claim.
            Some((counted, admission)) if counted == user => admission,
            _ => self.admit(msg, user, per_day).await,
        };
        match admission {
            Admission::Allowed => {}
            Admission::RateLimited { retry_after_secs } => {
                let note = format!(
                    "You're sending messages faster than I can keep up with. Please wait {retry_after_secs} seconds and try again."
                );
                return self.answer(row, msg, &note, "rate_limited").await;
            }
            Admission::QuotaExceeded { resets_at } => {
                let note = format!(
                    "You've used all {per_day} messages of your {} plan for today. Your quota resets at {} UTC \
                     (in about {} hours).",
                    tenant.plan,
                    resets_at.format("%H:%M"),
                    ((resets_at - chrono::Utc::now()).num_minutes() + 59) / 60
                );
                return self.answer(row, msg, &note, "quota_exceeded").await;
            }
        }
        self.forward(row, msg, user, tenant, true).await
    }

    /// Answers `msg` with `note` once its record is durable and marks it done with
    /// `outcome`: every outcome decided without the agent (onboarding, limits, codes).
    async fn answer(
        &self,
        row: &mut RowId,
        msg: &Inbound,
        note: &str,
        outcome: &'static str,
    ) -> Result<&'static str, ApiError> {
        let Some(id) = row.get().await else {
            return Ok(NOT_RECORDED);
        };
        self.reply(msg, note, ReplyKind::Final).await;
        self.finish(id, "done", outcome, None).await?;
        Ok(outcome)
    }

    async fn redeem(
        &self,
        row: &mut RowId,
        msg: &Inbound,
        code: &str,
    ) -> Result<&'static str, ApiError> {
        let attempts = self
            .limits
            .code_attempt(&msg.channel, &msg.sender_id, CODE_ATTEMPT_WINDOW)
            .await?;
        if attempts > u64::from(self.config.onboarding.code_attempts) {
            return self
                .answer(
                    row,
                    msg,
                    "Too many connection attempts. Please wait 10 minutes and try again.",
                    "code_attempts_exceeded",
                )
                .await;
        }
        let plans = self.config.accounts.plans.clone();
        let redeemed =
            store::redeem_code_within(&self.db, code, &msg.channel, &msg.sender_id, |p| {
                plans.policy(p).max_channels
            })
            .await?;
        match redeemed {
            store::Redeemed::OverLimit { plan, limit } => {
                let note = format!(
                    "Your {plan} plan connects at most {limit} chat accounts. Remove one in your dashboard \
                     (or upgrade), then send the code again."
                );
                self.answer(row, msg, &note, "channel_limit").await
            }
            store::Redeemed::Connected(user) => {
                // This replica at once; the others through the notification.
                self.senders.evict(&msg.channel, &msg.sender_id);
                tracing::info!(%user, channel = %msg.channel, "chat account connected");
                if let Some(lang) = msg.lang.as_deref().and_then(crate::inbound::spoken_lang)
                    && let Err(e) = store::set_user_lang_if_unknown(&self.db, user, lang).await
                {
                    tracing::warn!(error = %e, "could not remember the chat's language");
                }
                self.answer(
                    row,
                    msg,
                    "Connected! Your assistant will answer your messages here from now on.",
                    "connected",
                )
                .await
            }
            store::Redeemed::Invalid => {
                let note = format!(
                    "That code is not valid or has expired. Get a new one at {}.",
                    self.config.onboarding.registration_url
                );
                self.answer(row, msg, &note, "code_invalid").await
            }
        }
    }

    fn spawn_activity(self: &Arc<Self>, tenant: &Tenant) {
        // Nearly always the case: no task per message for nothing.
        if tenant.activity_is_fresh(self.config.limits.activity_window) {
            return;
        }
        let core = self.clone();
        let tenant = tenant.clone();
        self.tasks.spawn(async move {
            core.directory
                .note_activity(&tenant, core.config.limits.activity_window, &core.limits)
                .await;
        });
    }

    /// Waits for the tenant's agent if needed, calls it, relays the answer, records usage.
    async fn forward(
        self: &Arc<Self>,
        row: &mut RowId,
        msg: &Inbound,
        user: Uuid,
        tenant: Tenant,
        first_attempt: bool,
    ) -> Result<&'static str, ApiError> {
        let channel = self.channel(&msg.channel)?;
        let tenant = if tenant.usable() {
            self.spawn_activity(&tenant);
            tenant
        } else {
            let Some(id) = row.get().await else {
                return Ok(NOT_RECORDED);
            };
            let started = Instant::now();
            if first_attempt {
                channel.typing(msg).await;
            }
            // The annotation is the wake signal; the operator scales the agent back up.
            self.directory
                .note_activity(&tenant, self.config.limits.activity_window, &self.limits)
                .await;
            // An agent whose pod cannot run will not be ready within the hold: say so now.
            let hold = if tenant.unavailable {
                Duration::ZERO
            } else {
                self.config.limits.wake_hold
            };
            match self
                .directory
                .wait_ready(
                    &user.to_string(),
                    hold,
                    self.config.limits.activity_window,
                    &self.limits,
                )
                .await
            {
                Some(t) => {
                    self.metrics
                        .wake_seconds
                        .observe(started.elapsed().as_secs_f64());
                    t
                }
                None => {
                    store::hold(&self.db, id, user, self.config.limits.sweep_interval).await?;
                    if first_attempt {
                        let note = if tenant.unavailable {
                            "Your assistant is unavailable right now. Your message is kept and will be answered as soon as it is back."
                        } else {
                            "Your assistant is waking up. I'll send the answer as soon as it is ready."
                        };
                        self.reply(msg, note, ReplyKind::Note).await;
                    }
                    tracing::info!(tenant = %tenant.key(), "tenant not ready; message held");
                    return Ok("held");
                }
            }
        };
        if !first_attempt {
            let waited = (chrono::Utc::now() - msg.sent_at)
                .to_std()
                .unwrap_or_default();
            self.metrics.wake_seconds.observe(waited.as_secs_f64());
        }
        let (Some(url), Some(token)) = (tenant.url.as_deref(), tenant.token.as_ref()) else {
            return Err(ApiError::Internal("tenant became unusable".into()));
        };
        let started = Instant::now();
        let session = msg.session_key();
        // A status URL that is no URL is the agent unreachable, answered and finished as such
        // (not an error that leaves the message to be taken over again and again).
        let call = async {
            match tenant.chat_url.as_ref() {
                Some(chat_url) => {
                    let timeout = self.config.limits.agent_timeout;
                    (self.agent)
                        .chat(chat_url, token.expose(), &session, &msg.text, timeout)
                        .await
                }
                None => Err(AgentError::Unreachable(format!(
                    "the agent's URL is not a URL: {url}"
                ))),
            }
        };
        let typing = async {
            tokio::time::sleep(TYPING_AFTER).await;
            loop {
                channel.typing(msg).await;
                match channel.typing_refresh() {
                    Some(every) => tokio::time::sleep(every).await,
                    None => std::future::pending::<()>().await,
                }
            }
        };
        let result = tokio::select! {
            r = call => r,
            _ = typing => unreachable_typing(),
        };
        self.metrics
            .agent_seconds
            .observe(started.elapsed().as_secs_f64());
        let Some(id) = row.get().await else {
            return Ok(NOT_RECORDED);
        };
        match result {
            Ok(reply) => {
                for part in split_message(&reply.text, channel.max_message_chars()) {
                    self.reply_part(&*channel, msg, &part, ReplyKind::Final)
                        .await;
                }
                // Searches count even when the tokens must be estimated.
                let web_searches = reply.usage.map_or(0, |u| u.web_searches);
                let usage = match reply.usage.filter(|u| u.is_reported()) {
                    Some(u) => UsageRow {
                        prompt_tokens: u.prompt_tokens,
                        completion_tokens: u.completion_tokens,
                        estimated: false,
                        web_searches,
                    },
                    None => UsageRow {
                        prompt_tokens: estimate_tokens(&msg.text),
                        completion_tokens: estimate_tokens(&reply.text),
                        estimated: true,
                        web_searches,
                    },
                };
                let entry = UsageEntry {
                    user,
                    workspace: tenant.key(),
                    channel: msg.channel.clone(),
                    model: reply.served_by(&tenant.model).to_string(),
                    usage,
                };
                self.finish(id, "done", "replied", Some(entry)).await?;
                Ok("replied")
            }
            Err(AgentError::NotConnected(e)) => {
                // The view showed the agent ready, but its pod is going (hibernation, a
                // restart) or not there yet: nothing reached it. The sweeper delivers the
                // message once the tenant is ready again, waking it if it fell asleep.
                tracing::warn!(tenant = %tenant.key(), error = %e, "no connection to a ready agent; message held");
                store::hold(&self.db, id, user, self.config.limits.sweep_interval).await?;
                Ok("held")
            }
            Err(e) => {
                tracing::error!(tenant = %tenant.key(), error = %e, category = e.category(), "agent call failed");
                self.reply(
                    msg,
                    "Sorry, your assistant could not answer just now. Please try again in a moment.",
                    ReplyKind::Final,
                )
                .await;
                self.finish(id, "failed", e.category(), None).await?;
                Ok(e.category())
            }
        }
    }

    fn channel(&self, name: &str) -> Result<Arc<dyn Channel>, ApiError> {
        self.channels
            .get(name)
            .cloned()
            .ok_or(ApiError::ChannelDisabled)
    }

    /// Sends a (possibly long) message; delivery problems are logged, not raised: the user's
    /// message has been handled either way.
    async fn reply(&self, msg: &Inbound, text: &str, kind: ReplyKind) {
        let Ok(channel) = self.channel(&msg.channel) else {
            tracing::error!(channel = %msg.channel, "reply for a channel that is not enabled");
            return;
        };
        for part in split_message(text, channel.max_message_chars()) {
            self.reply_part(&*channel, msg, &part, kind).await;
        }
    }

    async fn reply_part(&self, channel: &dyn Channel, msg: &Inbound, text: &str, kind: ReplyKind) {
        if let Err(e) = channel.send(msg, text, kind).await {
            tracing::warn!(channel = %msg.channel, error = %e, "could not deliver a reply");
        }
    }

    /// Tells `user` something they did not ask about (a failed payment) on every connected
    /// channel that lets the bot write first, through the same sending path as replies.
    /// Returns how many channels took it; delivery problems are logged.
    #[tracing::instrument(skip(self, text))]
    pub async fn notify(&self, user: Uuid, text: &str) -> Result<usize, ApiError> {
        let mut sent = 0;
        for (name, sender) in store::connections_of(&self.db, user).await? {
            let Ok(channel) = self.channel(&name) else {
                continue;
            };
            let Some(reply_to) = channel.address(&sender) else {
                tracing::debug!(channel = %name, "channel cannot start a conversation");
                continue;
            };
            let to = Inbound {
                channel: name.clone(),
                external_id: format!("notice:{}", Uuid::new_v4()),
                sender_id: sender.clone(),
                conversation: "dm".into(),
                peer: sender,
                text: String::new(),
                reply_to,
                sent_at: chrono::Utc::now(),
                lang: None,
            };
            let mut delivered = true;
            for part in split_message(text, channel.max_message_chars()) {
                if let Err(e) = channel.send(&to, &part, ReplyKind::Note).await {
                    tracing::warn!(channel = %name, error = %e, "could not deliver a notice");
                    delivered = false;
                    break;
                }
            }
            sent += usize::from(delivered);
        }
        Ok(sent)
    }

    /// Finishes held messages once their tenant is ready, and messages a stopped replica left.
    pub async fn sweep_once(self: &Arc<Self>) -> Result<usize, ApiError> {
        let claim = claim_time(&self.config);
        let rows = store::claim_due(&self.db, 200, claim).await?;
        let n = rows.len();
        for row in rows {
            let msg: Inbound = match serde_json::from_value(row.payload) {
                Ok(m) => m,
                Err(e) => {
                    tracing::error!(id = row.id, error = %e, "unreadable inbound record; marking failed");
                    self.finish(row.id, "failed", "unreadable", None).await?;
                    continue;
                }
            };
            let core = self.clone();
            match (row.state.as_str(), row.user_id) {
                ("held", Some(user)) => match self.directory.tenant_of(&user.to_string()) {
                    Some(t) if t.usable() => {
                        let mut id = RowId::Known(row.id);
                        self.tasks.spawn(async move {
                            let delivered = core.forward(&mut id, &msg, user, t, false).await;
                            let outcome = delivered.unwrap_or_else(|e| {
                                tracing::error!(error = %e, "delivering a held message failed");
                                "error"
                            });
                            core.metrics.message(&msg.channel, outcome);
                        });
                    }
                    Some(t) => {
                        // Still asleep: ask again (gated) and look again later.
                        self.directory
                            .note_activity(&t, self.config.limits.activity_window, &self.limits)
                            .await;
                        store::release(&self.db, row.id, self.config.limits.sweep_interval).await?;
                    }
                    None => {
                        let note = "Your assistant no longer exists, so this message could not be answered.";
                        self.reply(&msg, note, ReplyKind::Final).await;
                        self.finish(row.id, "failed", "no_workspace", None).await?;
                    }
                },
                _ => {
                    tracing::info!(id = row.id, "taking over an unfinished message");
                    let permit = self
                        .in_flight
                        .clone()
                        .acquire_owned()
                        .await
                        .map_err(|e| ApiError::Internal(e.to_string()))?;
                    self.tasks
                        .spawn(core.process(RowId::Known(row.id), msg, None, permit));
                }
            }
        }
        Ok(n)
    }

    /// Runs the sweeper until `shutdown`: every `sweep_interval`, and soon after any tenant
    /// changes (a woken tenant's held messages go out without waiting for the tick).
    pub async fn sweep_loop(self: Arc<Self>, shutdown: CancellationToken) {
        let mut changes = self.directory.changes();
        let mut last_prune = Instant::now();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(self.config.limits.sweep_interval) => {}
                r = changes.changed() => {
                    if r.is_err() { return; }
                    // Debounce bursts of watch events.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    changes.borrow_and_update();
                }
            }
            if let Err(e) = self.sweep_once().await {
                tracing::warn!(error = %e, "sweep failed");
            }
            if last_prune.elapsed() > Duration::from_secs(600) {
                last_prune = Instant::now();
                if let Err(e) = store::prune(&self.db, Duration::from_secs(48 * 3600)).await {
                    tracing::warn!(error = %e, "pruning old message records failed");
                }
            }
        }
    }

    /// Listens for connection changes from every replica and drops stale cache entries.
    pub async fn listen_connection_changes(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            let mut listener = match sqlx::postgres::PgListener::connect_with(&self.db).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for connection changes; retrying");
                    tokio::select! { _ = shutdown.cancelled() => return, _ = tokio::time::sleep(Duration::from_secs(2)) => continue }
                }
            };
            if let Err(e) = listener.listen("clawdbot_connections").await {
                tracing::warn!(error = %e, "LISTEN failed; retrying");
                continue;
            }
            // Anything cached before listening may have missed a change.
            self.senders.clear();
            loop {
                let next =
                    tokio::select! { _ = shutdown.cancelled() => return, n = listener.recv() => n };
                match next {
                    Ok(n) => {
                        // `channel:sender:user` (`channel:sender` before the user was added).
                        let payload = n.payload();
                        let (rest, user) = match payload.rsplit_once(':') {
                            Some((rest, u)) => match u.parse::<Uuid>() {
                                Ok(user) => (rest, Some(user)),
                                Err(_) => (payload, None),
                            },
                            None => (payload, None),
                        };
                        if let Some((channel, sender)) = rest.split_once(':') {
                            self.senders.evict(channel, sender);
                        }
                        if let Some(user) = user {
                            self.senders.evict_user(user);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "connection change listener lost; cache cleared");
                        self.senders.clear();
                        break;
                    }
                }
            }
        }
    }

    /// Waits for in-flight messages (bounded); whatever is unfinished stays in Postgres and
    /// another replica's sweeper finishes it.
    /// Drops a chat account from this replica's cache (it was disconnected or its user
    /// deleted here; other replicas hear of it through the table's notification).
    pub fn forget_sender(&self, channel: &str, sender: &str) {
        self.senders.evict(channel, sender);
    }

    pub async fn drain(&self, timeout: Duration) {
        self.tasks.close();
        if tokio::time::timeout(timeout, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("shutdown: messages still in flight are left to other replicas");
        }
    }
}

fn unreachable_typing() -> Result<crate::agent::AgentReply, crate::agent::AgentError> {
    // The typing loop never ends on its own.
    Err(crate::agent::AgentError::Empty)
}
