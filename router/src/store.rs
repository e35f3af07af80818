//! Postgres: users, channel connections, connection codes, the inbound message record and
//! usage. Every query is here, so the schema has one reader.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Row};
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
        .connect_with(options)
        .await?;
    migrate(&pool).await?;
    Ok(pool)
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

/// The user behind a chat account, if connected.
pub async fn lookup_connection(
    pool: &PgPool,
    channel: &str,
    sender: &str,
) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT user_id FROM user_channel_connections WHERE channel = $1 AND sender_id = $2",
    )
    .bind(channel)
    .bind(sender)
    .fetch_optional(pool)
    .await
}

/// Connects a chat account directly (the web channel, where the user is already known).
pub async fn connect_channel(
    pool: &PgPool,
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
    .execute(pool)
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
        return Ok(None);
    };
    sqlx::query(
        "INSERT INTO user_channel_connections (channel, sender_id, user_id) VALUES ($1, $2, $3)
         ON CONFLICT (channel, sender_id) DO UPDATE SET user_id = EXCLUDED.user_id",
    )
    .bind(channel)
    .bind(sender)
    .bind(user)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Some(user))
}

/// Records an accepted message before the webhook is acknowledged. `None`: already recorded
/// (a platform retry that got past the Redis dedupe).
pub async fn record_inbound(
    pool: &PgPool,
    msg: &Inbound,
    claim: Duration,
) -> Result<Option<i64>, sqlx::Error> {
    let payload = serde_json::to_value(msg).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    sqlx::query_scalar(
        "INSERT INTO inbound_messages (channel, external_id, sender_id, payload, claimed_until)
         VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5))
         ON CONFLICT (channel, external_id) DO NOTHING
         RETURNING id",
    )
    .bind(&msg.channel)
    .bind(&msg.external_id)
    .bind(&msg.sender_id)
    .bind(payload)
    .bind(claim.as_secs_f64())
    .fetch_optional(pool)
    .await
}

/// Usage of one routed message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UsageRow {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub estimated: bool,
}

/// Who a usage record is for.
#[derive(Clone, Copy, Debug)]
pub struct UsageEntry<'a> {
    pub user: Uuid,
    /// `<namespace>/<name>` of the workspace.
    pub workspace: &'a str,
    pub channel: &'a str,
    pub usage: UsageRow,
}

/// Marks a message done (its content is dropped) and records its usage, in one round trip.
pub async fn finish(
    pool: &PgPool,
    id: i64,
    state: &str,
    outcome: &str,
    usage: Option<UsageEntry<'_>>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "WITH done AS (
             UPDATE inbound_messages SET state = $2, outcome = $3, payload = NULL, done_at = now()
             WHERE id = $1
         )
         INSERT INTO usage_records (user_id, workspace, channel, prompt_tokens, completion_tokens, total_tokens, estimated)
         SELECT $4, $5, $6, $7, $8, $7 + $8, $9 WHERE $4::uuid IS NOT NULL",
    )
    .bind(id)
    .bind(state)
    .bind(outcome)
    .bind(usage.map(|u| u.user))
    .bind(usage.map(|u| u.workspace))
    .bind(usage.map(|u| u.channel))
    .bind(usage.map(|u| u.usage.prompt_tokens as i64).unwrap_or(0))
    .bind(usage.map(|u| u.usage.completion_tokens as i64).unwrap_or(0))
    .bind(usage.is_some_and(|u| u.usage.estimated))
    .execute(pool)
    .await?;
    Ok(())
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
