//! Postgres: users, channel connections, connection codes, the inbound message record and
//! usage. Every query is here, so the schema has one reader.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgConnection, PgPool, Postgres, Row};
use uuid::Uuid;

use crate::inbound::Inbound;

/// How long a connection code is valid.
pub const CODE_TTL: Duration = Duration::from_secs(10 * 60);
/// Characters of a code: no 0/O, 1/I/L, so a code read aloud or typed on a phone survives.
const CODE_ALPHABET: &[u8] = b"ABCDEFGHJKMNPQRSTUVWXYZ23456789";
/// Length of a code: 31^8 ~ 8.5e11 values; with attempts limited per sender, guessing is hopeless.
pub const CODE_LEN: usize = 8;

/// Opens a pool and brings the schema up to date.
pub async fn connect(url: &str, max_connections: u32) -> Result<PgPool, sqlx::Error> {
    let options: PgConnectOptions = url.parse()?;
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10))
        // A ping before every acquire was a round trip per statement (5% of the router's CPU
        // under load). A connection that died is found by the statement instead: that batch
        // fails, its webhooks are answered 500 and retried by the platform.
        .test_before_acquire(false)
        .connect_with(options)
        .await?;
    migrate(&pool).await?;
    Ok(pool)
}

/// Connections a group-commit writer keeps between its statements instead of handing them
/// back to the pool: sqlx tests every connection that comes back to the pool with a round
/// trip of its own (a `Sync`), which doubled the round trips, and the wake-ups, of each group
/// commit. A connection is handed back (and so tested) only after an error, or when it sat
/// unused for longer than [`KEPT_IDLE`], so that the pool's own lifetime rules still apply.
#[derive(Clone)]
pub struct KeptConnections {
    pool: PgPool,
    idle: Arc<Mutex<Vec<Kept>>>,
    keep: usize,
}

/// A kept connection and when it was last handed back.
type Kept = (PoolConnection<Postgres>, Instant);

/// A kept connection unused for this long goes back to the pool when it is next looked at.
pub const KEPT_IDLE: Duration = Duration::from_secs(30);

impl KeptConnections {
    /// Keeps at most `keep` connections of `pool`.
    pub fn new(pool: PgPool, keep: usize) -> Self {
        KeptConnections {
            pool,
            idle: Arc::default(),
            keep,
        }
    }

    /// Runs `statement` on a kept connection, or on one from the pool when none is kept, and
    /// keeps the connection if the statement succeeded. After an error it goes back to the
    /// pool, which tests it and closes it if it is broken.
    pub async fn run<T>(
        &self,
        statement: impl AsyncFnOnce(&mut PgConnection) -> Result<T, sqlx::Error>,
    ) -> Result<T, sqlx::Error> {
        let kept = {
            let mut idle = self.idle.lock().expect("kept connections lock");
            idle.retain(|(_, since)| since.elapsed() < KEPT_IDLE);
            idle.pop()
        };
        let mut conn = match kept {
            Some((conn, _)) => conn,
            None => self.pool.acquire().await?,
        };
        let result = statement(&mut conn).await;
        if result.is_ok() {
            let mut idle = self.idle.lock().expect("kept connections lock");
            if idle.len() < self.keep {
                idle.push((conn, Instant::now()));
            }
        }
        result
    }

    /// How many connections are kept now.
    pub fn kept(&self) -> usize {
        self.idle.lock().expect("kept connections lock").len()
    }
}

/// Applies `migrations/` (idempotent; concurrent replicas serialise on sqlx's advisory lock).
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::Error> {
    sqlx::migrate!("../migrations")
        .run(pool)
        .await
        .map_err(|e| sqlx::Error::Migrate(Box::new(e)))
}

pub async fn create_user(
    pool: &PgPool,
    email: Option<&str>,
    plan: clawdbot_api::Plan,
) -> Result<Uuid, sqlx::Error> {
    let id = Uuid::new_v4();
    sqlx::query("INSERT INTO users (id, email, plan) VALUES ($1, $2, $3)")
        .bind(id)
        .bind(email)
        .bind(plan.as_str())
        .execute(pool)
        .await?;
    Ok(id)
}

pub async fn user_exists(pool: &PgPool, user: Uuid) -> Result<bool, sqlx::Error> {
    Ok(sqlx::query("SELECT 1 FROM users WHERE id = $1")
        .bind(user)
        .fetch_optional(pool)
        .await?
        .is_some())
}

/// A connected chat account: its user, and how many of the user's connections are older
/// (a plan with fewer channels keeps the oldest ones in use).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Connection {
    pub user: Uuid,
    pub older: i64,
}

impl Connection {
    /// Whether this account is beyond a channel limit of `max_channels` (after a downgrade):
    /// it stays connected, but the assistant does not answer it.
    pub fn paused(&self, max_channels: u32) -> bool {
        self.older >= i64::from(max_channels)
    }
}

/// Whether a platform message id is recorded (a retry of it, or a delivery that raced it).
pub async fn is_recorded(
    pool: &PgPool,
    channel: &str,
    external_id: &str,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM inbound_messages WHERE channel = $1 AND external_id = $2)",
    )
    .bind(channel)
    .bind(external_id)
    .fetch_one(pool)
    .await
}

/// The user behind a chat account, if connected.
pub async fn lookup_connection(
    pool: &PgPool,
    channel: &str,
    sender: &str,
) -> Result<Option<Connection>, sqlx::Error> {
    let row: Option<(Uuid, i64)> = sqlx::query_as(
        "SELECT c.user_id,
                (SELECT count(*) FROM user_channel_connections o
                  WHERE o.user_id = c.user_id AND (o.created_at, o.id) < (c.created_at, c.id))
           FROM user_channel_connections c WHERE c.channel = $1 AND c.sender_id = $2",
    )
    .bind(channel)
    .bind(sender)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|(user, older)| Connection { user, older }))
}

/// Connects a chat account to a user (directly for the web channel, where the user is
/// already known; inside the code redemption's transaction otherwise).
pub async fn connect_channel<'e>(
    db: impl sqlx::PgExecutor<'e>,
    channel: &str,
    sender: &str,
    user: Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO user_channel_connections (channel, sender_id, user_id) VALUES ($1, $2, $3)
         ON CONFLICT (channel, sender_id) DO UPDATE SET user_id = EXCLUDED.user_id",
    )
    .bind(channel)
    .bind(sender)
    .bind(user)
    .execute(db)
    .await?;
    Ok(())
}

pub fn hash_code(code: &str) -> Vec<u8> {
    Sha256::digest(normalize_code(code).as_bytes()).to_vec()
}

/// Upper-cases and drops spaces and dashes, so `abcd-1234` and `ABCD1234` are one code.
pub fn normalize_code(code: &str) -> String {
    code.chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

/// Whether `text` has the shape of a code (so a stray word is not counted as a failed attempt).
pub fn looks_like_code(text: &str) -> bool {
    let n = normalize_code(text);
    n.len() == CODE_LEN && n.bytes().all(|b| CODE_ALPHABET.contains(&b))
}

/// Creates a one-time code for `user`; only its hash is stored.
pub async fn create_code(
    pool: &PgPool,
    user: Uuid,
) -> Result<(String, DateTime<Utc>), sqlx::Error> {
    let code: String = (0..CODE_LEN)
        .map(|_| CODE_ALPHABET[rand::random_range(0..CODE_ALPHABET.len())] as char)
        .collect();
    let expires_at = Utc::now() + chrono::Duration::from_std(CODE_TTL).unwrap_or_default();
    sqlx::query(
        "INSERT INTO connection_codes (code_hash, user_id, expires_at) VALUES ($1, $2, $3)",
    )
    .bind(hash_code(&code))
    .bind(user)
    .bind(expires_at)
    .execute(pool)
    .await?;
    Ok((code, expires_at))
}

/// Redeems a code: marks it used and connects the chat account, in one transaction. `None`
/// when the code is unknown, used or expired.
pub async fn redeem_code(
    pool: &PgPool,
    code: &str,
    channel: &str,
    sender: &str,
) -> Result<Option<Uuid>, sqlx::Error> {
    Ok(
        match redeem_code_within(pool, code, channel, sender, |_| u32::MAX).await? {
            Redeemed::Connected(user) => Some(user),
            Redeemed::Invalid | Redeemed::OverLimit { .. } => None,
        },
    )
}

/// What a code redemption did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Redeemed {
    Connected(Uuid),
    /// Unknown, used or expired.
    Invalid,
    /// The user's plan connects no more chat accounts; the code stays unused.
    OverLimit {
        plan: clawdbot_api::Plan,
        limit: u32,
    },
}

/// [`redeem_code`] within the plan's number of chat accounts (`limit_of`), counted under a
/// lock on the user's row so that codes made earlier cannot go past it together. Connecting
/// an account that is already this user's does not count.
pub async fn redeem_code_within(
    pool: &PgPool,
    code: &str,
    channel: &str,
    sender: &str,
    limit_of: impl Fn(clawdbot_api::Plan) -> u32,
) -> Result<Redeemed, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let user: Option<Uuid> = sqlx::query_scalar(
        "UPDATE connection_codes SET used_at = now(), used_by = $2
         WHERE code_hash = $1 AND used_at IS NULL AND expires_at > now()
         RETURNING user_id",
    )
    .bind(hash_code(code))
    .bind(format!("{channel}:{sender}"))
    .fetch_optional(&mut *tx)
    .await?;
    let Some(user) = user else {
        return Ok(Redeemed::Invalid);
    };
    let plan: String = sqlx::query_scalar("SELECT plan FROM users WHERE id = $1 FOR UPDATE")
        .bind(user)
        .fetch_one(&mut *tx)
        .await?;
    let plan: clawdbot_api::Plan = plan.parse().unwrap_or_default();
    let others: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM user_channel_connections
         WHERE user_id = $1 AND NOT (channel = $2 AND sender_id = $3)",
    )
    .bind(user)
    .bind(channel)
    .bind(sender)
    .fetch_one(&mut *tx)
    .await?;
    let limit = limit_of(plan);
    if others >= i64::from(limit) {
        // Rolled back: the code stays usable once an account is removed.
        return Ok(Redeemed::OverLimit { plan, limit });
    }
    connect_channel(&mut *tx, channel, sender, user).await?;
    tx.commit().await?;
    Ok(Redeemed::Connected(user))
}

/// A message to record, owned so that it can wait in the group-commit queue.
#[derive(Clone, Debug)]
pub struct NewInbound {
    pub channel: String,
    pub external_id: String,
    pub sender_id: String,
    pub payload: Value,
}

impl NewInbound {
    pub fn of(msg: &Inbound) -> Result<Self, serde_json::Error> {
        Ok(NewInbound {
            channel: msg.channel.clone(),
            external_id: msg.external_id.clone(),
            sender_id: msg.sender_id.clone(),
            payload: serde_json::to_value(msg)?,
        })
    }
}

/// Records many messages in one statement. Per row: its id, or `None` when the message was
/// recorded before (a platform retry), also when the same message is twice in the batch.
pub async fn record_inbound_batch(
    conn: &mut PgConnection,
    rows: &[NewInbound],
    claim: Duration,
) -> Result<Vec<Option<i64>>, sqlx::Error> {
    let inserted: Vec<(i64, String, String)> = sqlx::query_as(
        "INSERT INTO inbound_messages (channel, external_id, sender_id, payload, claimed_until)
         SELECT c, e, s, p, now() + make_interval(secs => $5)
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::jsonb[]) AS t(c, e, s, p)
         ON CONFLICT (channel, external_id) DO NOTHING
         RETURNING id, channel, external_id",
    )
    .bind(rows.iter().map(|r| r.channel.as_str()).collect::<Vec<_>>())
    .bind(
        rows.iter()
            .map(|r| r.external_id.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        rows.iter()
            .map(|r| r.sender_id.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(rows.iter().map(|r| r.payload.clone()).collect::<Vec<_>>())
    .bind(claim.as_secs_f64())
    .fetch_all(conn)
    .await?;
    let mut ids: std::collections::HashMap<(String, String), i64> = inserted
        .into_iter()
        .map(|(id, c, e)| ((c, e), id))
        .collect();
    // The first of a pair takes the id; `remove` leaves the second with None.
    Ok(rows
        .iter()
        .map(|r| ids.remove(&(r.channel.clone(), r.external_id.clone())))
        .collect())
}

/// Who a usage record is for, and what it was.
#[derive(Clone, Debug)]
pub struct UsageEntry {
    pub user: Uuid,
    /// `<namespace>/<name>` of the workspace.
    pub workspace: String,
    pub channel: String,
    /// The model that served it (the agent's answer, else the workspace's model).
    pub model: String,
    pub usage: UsageRow,
}

/// The end of one message, owned so that it can wait in the group-commit queue.
#[derive(Clone, Debug)]
pub struct Finish {
    pub id: i64,
    pub state: &'static str,
    pub outcome: &'static str,
    /// Set when the message was routed to an agent.
    pub usage: Option<UsageEntry>,
}

/// Marks many messages done (their content is dropped) and records their usage, in one
/// statement.
pub async fn finish_batch(conn: &mut PgConnection, rows: &[Finish]) -> Result<(), sqlx::Error> {
    fn column<'a, T>(rows: &'a [Finish], f: impl Fn(&'a UsageEntry) -> T) -> Vec<Option<T>> {
        rows.iter().map(|r| r.usage.as_ref().map(&f)).collect()
    }
    sqlx::query(
        "WITH f AS (
             SELECT * FROM UNNEST($1::int8[], $2::text[], $3::text[], $4::uuid[], $5::text[],
                                  $6::text[], $7::int8[], $8::int8[], $9::bool[], $10::int4[],
                                  $11::text[])
                 AS t(id, state, outcome, user_id, workspace, channel, pt, ct, est, ws, model)
         ), done AS (
             UPDATE inbound_messages m
             SET state = f.state, outcome = f.outcome, payload = NULL, done_at = now()
             FROM f WHERE m.id = f.id
         )
         INSERT INTO usage_records (user_id, workspace, channel, prompt_tokens, completion_tokens, total_tokens, estimated, web_searches, model)
         SELECT user_id, workspace, channel, pt, ct, pt + ct, est, ws, model FROM f WHERE user_id IS NOT NULL",
    )
    .bind(rows.iter().map(|r| r.id).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.state).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.outcome).collect::<Vec<_>>())
    .bind(column(rows, |u| u.user))
    .bind(column(rows, |u| u.workspace.as_str()))
    .bind(column(rows, |u| u.channel.as_str()))
    .bind(column(rows, |u| u.usage.prompt_tokens as i64))
    .bind(column(rows, |u| u.usage.completion_tokens as i64))
    .bind(column(rows, |u| u.usage.estimated))
    .bind(column(rows, |u| {
        i32::try_from(u.usage.web_searches).unwrap_or(i32::MAX)
    }))
    .bind(column(rows, |u| u.model.as_str()))
    .execute(conn)
    .await?;
    Ok(())
}

/// Usage of one routed message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UsageRow {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub estimated: bool,
    /// Web searches the reply made, as the agent reported them (0 when it reports none).
    pub web_searches: u64,
}

/// Keeps a message for later delivery (the tenant did not wake in time).
pub async fn hold(
    pool: &PgPool,
    id: i64,
    user: Uuid,
    retry_in: Duration,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE inbound_messages SET state = 'held', user_id = $2,
             claimed_until = now() + make_interval(secs => $3)
         WHERE id = $1",
    )
    .bind(id)
    .bind(user)
    .bind(retry_in.as_secs_f64())
    .execute(pool)
    .await?;
    Ok(())
}

/// A message taken over by the sweeper.
#[derive(Debug)]
pub struct Claimed {
    pub id: i64,
    pub state: String,
    pub user_id: Option<Uuid>,
    pub payload: Value,
}

/// Claims due messages (held, or orphaned by a replica that stopped) for `claim`.
/// `SKIP LOCKED` lets several replicas sweep at once without taking the same row.
pub async fn claim_due(
    pool: &PgPool,
    limit: i64,
    claim: Duration,
) -> Result<Vec<Claimed>, sqlx::Error> {
    let rows = sqlx::query(
        "UPDATE inbound_messages m SET claimed_until = now() + make_interval(secs => $2), attempts = m.attempts + 1
         WHERE m.id IN (
             SELECT id FROM inbound_messages
             WHERE state IN ('received', 'held') AND claimed_until < now()
             ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED)
         RETURNING m.id, m.state, m.user_id, m.payload",
    )
    .bind(limit)
    .bind(claim.as_secs_f64())
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|r| {
            Ok(Claimed {
                id: r.try_get("id")?,
                state: r.try_get("state")?,
                user_id: r.try_get("user_id")?,
                payload: r
                    .try_get::<Option<Value>, _>("payload")?
                    .unwrap_or(Value::Null),
            })
        })
        .collect()
}

/// Gives a claimed held message back, to be looked at again after `retry_in`.
pub async fn release(pool: &PgPool, id: i64, retry_in: Duration) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE inbound_messages SET claimed_until = now() + make_interval(secs => $2) WHERE id = $1")
        .bind(id)
        .bind(retry_in.as_secs_f64())
        .execute(pool)
        .await?;
    Ok(())
}

/// Drops finished message records older than the platforms' retry horizon (Telegram and Meta
/// retry for about a day); the unique key only needs to outlive retries.
pub async fn prune(pool: &PgPool, older_than: Duration) -> Result<u64, sqlx::Error> {
    let r = sqlx::query(
        "DELETE FROM inbound_messages WHERE state IN ('done', 'failed') AND done_at < now() - make_interval(secs => $1)",
    )
    .bind(older_than.as_secs_f64())
    .execute(pool)
    .await?;
    Ok(r.rows_affected())
}

/// The user's connected (channel, sender) pairs, oldest first.
pub async fn connections_of(
    pool: &PgPool,
    user: Uuid,
) -> Result<Vec<(String, String)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT channel, sender_id FROM user_channel_connections WHERE user_id = $1 ORDER BY id",
    )
    .bind(user)
    .fetch_all(pool)
    .await
}

/// Remembers the language `user` reads (`en` or `ru`), for what the router tells them unasked.
pub async fn set_user_lang(pool: &PgPool, user: Uuid, lang: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE users SET lang = $2 WHERE id = $1 AND lang IS DISTINCT FROM $2")
        .bind(user)
        .bind(lang)
        .execute(pool)
        .await?;
    Ok(())
}

/// Remembers the language a chat platform reports for `user`, unless one is known already
/// (the user's own choice on the dashboard wins).
pub async fn set_user_lang_if_unknown(
    pool: &PgPool,
    user: Uuid,
    lang: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE users SET lang = $2 WHERE id = $1 AND lang IS NULL")
        .bind(user)
        .bind(lang)
        .execute(pool)
        .await?;
    Ok(())
}

/// The language `user` reads, if known.
pub async fn user_lang(pool: &PgPool, user: Uuid) -> Result<Option<String>, sqlx::Error> {
    Ok(
        sqlx::query_scalar::<_, Option<String>>("SELECT lang FROM users WHERE id = $1")
            .bind(user)
            .fetch_optional(pool)
            .await?
            .flatten(),
    )
}
