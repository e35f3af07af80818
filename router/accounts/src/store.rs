//! Postgres queries of the accounts domain. Every statement is parameterised; every query
//! about a user's things names the user, so one user's id never reaches another's rows.

use chrono::{DateTime, Utc};
use clawdbot_api::Plan;
use clawdbot_api::workspace::ModelProvider;
use sqlx::{PgExecutor, PgPool, Row};
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::types::{
    AgentSettings, KeyProvider, Role, User, parse_session_scope, session_scope_str,
};
use crate::vault::Sealed;

const USER_COLUMNS: &str = "id, email, display_name, plan, role, suspended_at, created_at";

fn user_from_row(row: &sqlx::postgres::PgRow) -> Result<User> {
    let plan: String = row.try_get("plan")?;
    let role: String = row.try_get("role")?;
    Ok(User {
        id: row.try_get("id")?,
        email: row.try_get("email")?,
        display_name: row.try_get("display_name")?,
        plan: plan.parse().map_err(Error::Internal)?,
        role: Role::parse(&role)
            .ok_or_else(|| Error::Internal(format!("unknown role {role:?}")))?,
        suspended_at: row.try_get("suspended_at")?,
        created_at: row.try_get("created_at")?,
    })
}

fn unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

/// Inserts an account; `Conflict` when the e-mail is taken.
pub async fn insert_user<'e>(
    db: impl PgExecutor<'e>,
    email: &str,
    password_hash: Option<&str>,
    plan: Plan,
    role: Role,
) -> Result<User> {
    let row = sqlx::query(&format!(
        "INSERT INTO users (id, email, password_hash, plan, role) VALUES ($1, $2, $3, $4, $5)
         RETURNING {USER_COLUMNS}"
    ))
    .bind(Uuid::new_v4())
    .bind(email)
    .bind(password_hash)
    .bind(plan.as_str())
    .bind(role.as_str())
    .fetch_one(db)
    .await
    .map_err(|e| {
        if unique_violation(&e) {
            Error::Conflict("an account with this e-mail already exists".into())
        } else {
            e.into()
        }
    })?;
    user_from_row(&row)
}

pub async fn get_user<'e>(db: impl PgExecutor<'e>, id: Uuid) -> Result<Option<User>> {
    let row = sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"))
        .bind(id)
        .fetch_optional(db)
        .await?;
    row.as_ref().map(user_from_row).transpose()
}

/// An account and its password hash, by e-mail (already normalised).
pub async fn find_login(db: &PgPool, email: &str) -> Result<Option<(User, Option<String>)>> {
    let row = sqlx::query(&format!(
        "SELECT {USER_COLUMNS}, password_hash FROM users WHERE lower(email) = $1"
    ))
    .bind(email)
    .fetch_optional(db)
    .await?;
    match row {
        Some(r) => Ok(Some((user_from_row(&r)?, r.try_get("password_hash")?))),
        None => Ok(None),
    }
}

pub async fn password_hash(db: &PgPool, id: Uuid) -> Result<Option<String>> {
    Ok(
        sqlx::query_scalar("SELECT password_hash FROM users WHERE id = $1")
            .bind(id)
            .fetch_optional(db)
            .await?
            .flatten(),
    )
}

/// Changes what is given; returns the account as it now is.
pub async fn update_user(
    db: &PgPool,
    id: Uuid,
    email: Option<&str>,
    display_name: Option<Option<&str>>,
    password_hash: Option<&str>,
) -> Result<User> {
    let row = sqlx::query(&format!(
        "UPDATE users SET
            email = COALESCE($2, email),
            display_name = CASE WHEN $3 THEN $4 ELSE display_name END,
            password_hash = COALESCE($5, password_hash),
            updated_at = now()
         WHERE id = $1 RETURNING {USER_COLUMNS}"
    ))
    .bind(id)
    .bind(email)
    .bind(display_name.is_some())
    .bind(display_name.flatten())
    .bind(password_hash)
    .fetch_optional(db)
    .await
    .map_err(|e| {
        if unique_violation(&e) {
            Error::Conflict("an account with this e-mail already exists".into())
        } else {
            e.into()
        }
    })?;
    row.as_ref()
        .map(user_from_row)
        .transpose()?
        .ok_or(Error::NotFound)
}

pub async fn set_role(db: &PgPool, id: Uuid, role: Role) -> Result<()> {
    let done = sqlx::query("UPDATE users SET role = $2, updated_at = now() WHERE id = $1")
        .bind(id)
        .bind(role.as_str())
        .execute(db)
        .await?;
    if done.rows_affected() == 0 {
        return Err(Error::NotFound);
    }
    Ok(())
}

/// Changes an account's plan; returns the account as it now is.
pub async fn set_plan<'e>(db: impl PgExecutor<'e>, id: Uuid, plan: Plan) -> Result<User> {
    let row = sqlx::query(&format!(
        "UPDATE users SET plan = $2, updated_at = now() WHERE id = $1 RETURNING {USER_COLUMNS}"
    ))
    .bind(id)
    .bind(plan.as_str())
    .fetch_optional(db)
    .await?;
    row.as_ref()
        .map(user_from_row)
        .transpose()?
        .ok_or(Error::NotFound)
}

pub async fn set_suspended(db: &PgPool, id: Uuid, suspended: bool) -> Result<User> {
    let row = sqlx::query(&format!(
        "UPDATE users SET suspended_at = CASE WHEN $2 THEN COALESCE(suspended_at, now()) END,
            updated_at = now()
         WHERE id = $1 RETURNING {USER_COLUMNS}"
    ))
    .bind(id)
    .bind(suspended)
    .fetch_optional(db)
    .await?;
    row.as_ref()
        .map(user_from_row)
        .transpose()?
        .ok_or(Error::NotFound)
}

/// Accounts, oldest first, a page at a time.
pub async fn list_users(db: &PgPool, limit: i64, offset: i64) -> Result<Vec<User>> {
    let rows = sqlx::query(&format!(
        "SELECT {USER_COLUMNS} FROM users ORDER BY created_at, id LIMIT $1 OFFSET $2"
    ))
    .bind(limit)
    .bind(offset)
    .fetch_all(db)
    .await?;
    rows.iter().map(user_from_row).collect()
}

/// What deleting an account removed that lives outside Postgres too: the chat accounts
/// (their Redis counters) and the ids of their messages (dedupe keys).
#[derive(Clone, Debug, Default)]
pub struct DeletedTraces {
    pub senders: Vec<(String, String)>,
    pub messages: Vec<(String, String)>,
}

/// Deletes an account and every row about it, in one transaction: messages from its chat
/// accounts (also those sent before the account was connected), then the account, whose
/// connections, codes, usage, tokens, keys and settings go with it (ON DELETE CASCADE).
pub async fn delete_user(db: &PgPool, id: Uuid) -> Result<DeletedTraces> {
    let mut tx = db.begin().await?;
    let exists: Option<Uuid> = sqlx::query_scalar("SELECT id FROM users WHERE id = $1 FOR UPDATE")
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
    if exists.is_none() {
        return Err(Error::NotFound);
    }
    let senders: Vec<(String, String)> = sqlx::query_as(
        "SELECT channel, sender_id FROM user_channel_connections WHERE user_id = $1
         UNION SELECT split_part(used_by, ':', 1), substr(used_by, strpos(used_by, ':') + 1)
               FROM connection_codes WHERE user_id = $1 AND used_by LIKE '%:%'",
    )
    .bind(id)
    .fetch_all(&mut *tx)
    .await?;
    let messages: Vec<(String, String)> = sqlx::query_as(
        "DELETE FROM inbound_messages m
         WHERE m.user_id = $1
            OR (m.channel, m.sender_id) IN (SELECT channel, sender_id FROM user_channel_connections WHERE user_id = $1)
            OR m.channel || ':' || m.sender_id IN (SELECT used_by FROM connection_codes WHERE user_id = $1 AND used_by IS NOT NULL)
         RETURNING m.channel, m.external_id",
    )
    .bind(id)
    .fetch_all(&mut *tx)
    .await?;
    sqlx::query("DELETE FROM users WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(DeletedTraces { senders, messages })
}

// --- refresh tokens ---

pub async fn insert_refresh<'e>(
    db: impl PgExecutor<'e>,
    hash: &[u8],
    family: Uuid,
    user: Uuid,
    expires_at: DateTime<Utc>,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO refresh_tokens (token_hash, family_id, user_id, expires_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(hash)
    .bind(family)
    .bind(user)
    .bind(expires_at)
    .execute(db)
    .await?;
    Ok(())
}

/// What presenting a refresh token found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Presented {
    /// Valid: it is now used up; issue the next of `family`.
    Fresh { user: Uuid, family: Uuid },
    /// Already used or revoked: the family is now revoked.
    Reused,
    /// Unknown or expired.
    Invalid,
}

/// Uses a refresh token up, in `tx` (the caller inserts the next one in the same transaction).
pub async fn use_refresh(tx: &mut sqlx::PgConnection, hash: &[u8]) -> Result<Presented> {
    let row = sqlx::query(
        "SELECT family_id, user_id, expires_at, used_at, revoked_at FROM refresh_tokens
         WHERE token_hash = $1 FOR UPDATE",
    )
    .bind(hash)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = row else {
        return Ok(Presented::Invalid);
    };
    let family: Uuid = row.try_get("family_id")?;
    let used: Option<DateTime<Utc>> = row.try_get("used_at")?;
    let revoked: Option<DateTime<Utc>> = row.try_get("revoked_at")?;
    if used.is_some() || revoked.is_some() {
        revoke_family(&mut *tx, family).await?;
        return Ok(Presented::Reused);
    }
    let expires: DateTime<Utc> = row.try_get("expires_at")?;
    if expires <= Utc::now() {
        return Ok(Presented::Invalid);
    }
    sqlx::query("UPDATE refresh_tokens SET used_at = now() WHERE token_hash = $1")
        .bind(hash)
        .execute(&mut *tx)
        .await?;
    Ok(Presented::Fresh {
        user: row.try_get("user_id")?,
        family,
    })
}

pub async fn revoke_family<'e>(db: impl PgExecutor<'e>, family: Uuid) -> Result<()> {
    sqlx::query(
        "UPDATE refresh_tokens SET revoked_at = COALESCE(revoked_at, now()) WHERE family_id = $1",
    )
    .bind(family)
    .execute(db)
    .await?;
    Ok(())
}

/// The family of a token, if the token is known (logout).
pub async fn family_of(db: &PgPool, hash: &[u8]) -> Result<Option<(Uuid, Uuid)>> {
    Ok(
        sqlx::query_as("SELECT family_id, user_id FROM refresh_tokens WHERE token_hash = $1")
            .bind(hash)
            .fetch_optional(db)
            .await?,
    )
}

pub async fn revoke_all_refresh(db: &PgPool, user: Uuid) -> Result<()> {
    sqlx::query(
        "UPDATE refresh_tokens SET revoked_at = COALESCE(revoked_at, now()) WHERE user_id = $1",
    )
    .bind(user)
    .execute(db)
    .await?;
    Ok(())
}

// --- provider keys ---

/// A stored provider key, without its plaintext.
#[derive(Clone, Debug, PartialEq)]
pub struct KeyRow {
    pub id: Uuid,
    pub user_id: Uuid,
    pub provider: KeyProvider,
    pub sealed: Sealed,
    pub hint: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const KEY_COLUMNS: &str =
    "id, user_id, provider, master_key_id, nonce, ciphertext, hint, created_at, updated_at";

fn key_from_row(row: &sqlx::postgres::PgRow) -> Result<KeyRow> {
    let provider: String = row.try_get("provider")?;
    Ok(KeyRow {
        id: row.try_get("id")?,
        user_id: row.try_get("user_id")?,
        provider: KeyProvider::parse(&provider)
            .ok_or_else(|| Error::Internal(format!("unknown provider {provider:?}")))?,
        sealed: Sealed {
            key_id: row.try_get("master_key_id")?,
            nonce: row.try_get("nonce")?,
            ciphertext: row.try_get("ciphertext")?,
        },
        hint: row.try_get("hint")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

pub async fn insert_key<'e>(
    db: impl PgExecutor<'e>,
    user: Uuid,
    provider: KeyProvider,
    sealed: &Sealed,
    hint: &str,
) -> Result<KeyRow> {
    let row = sqlx::query(&format!(
        "INSERT INTO provider_keys (id, user_id, provider, master_key_id, nonce, ciphertext, hint)
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {KEY_COLUMNS}"
    ))
    .bind(Uuid::new_v4())
    .bind(user)
    .bind(provider.as_str())
    .bind(&sealed.key_id)
    .bind(&sealed.nonce)
    .bind(&sealed.ciphertext)
    .bind(hint)
    .fetch_one(db)
    .await
    .map_err(|e| {
        if unique_violation(&e) {
            Error::Conflict(format!(
                "a {} key is stored already; change it with PATCH /api/v1/api-keys/{{id}}",
                provider.as_str()
            ))
        } else {
            e.into()
        }
    })?;
    key_from_row(&row)
}

pub async fn list_keys<'e>(db: impl PgExecutor<'e>, user: Uuid) -> Result<Vec<KeyRow>> {
    let rows = sqlx::query(&format!(
        "SELECT {KEY_COLUMNS} FROM provider_keys WHERE user_id = $1 ORDER BY provider"
    ))
    .bind(user)
    .fetch_all(db)
    .await?;
    rows.iter().map(key_from_row).collect()
}

pub async fn get_key(db: &PgPool, user: Uuid, id: Uuid) -> Result<KeyRow> {
    let row = sqlx::query(&format!(
        "SELECT {KEY_COLUMNS} FROM provider_keys WHERE id = $1 AND user_id = $2"
    ))
    .bind(id)
    .bind(user)
    .fetch_optional(db)
    .await?;
    row.as_ref()
        .map(key_from_row)
        .transpose()?
        .ok_or(Error::NotFound)
}

pub async fn replace_key<'e>(
    db: impl PgExecutor<'e>,
    user: Uuid,
    id: Uuid,
    sealed: &Sealed,
    hint: &str,
) -> Result<KeyRow> {
    let row = sqlx::query(&format!(
        "UPDATE provider_keys SET master_key_id = $3, nonce = $4, ciphertext = $5, hint = $6,
            updated_at = now()
         WHERE id = $1 AND user_id = $2 RETURNING {KEY_COLUMNS}"
    ))
    .bind(id)
    .bind(user)
    .bind(&sealed.key_id)
    .bind(&sealed.nonce)
    .bind(&sealed.ciphertext)
    .bind(hint)
    .fetch_optional(db)
    .await?;
    row.as_ref()
        .map(key_from_row)
        .transpose()?
        .ok_or(Error::NotFound)
}

pub async fn delete_key<'e>(db: impl PgExecutor<'e>, user: Uuid, id: Uuid) -> Result<KeyProvider> {
    let provider: Option<String> = sqlx::query_scalar(
        "DELETE FROM provider_keys WHERE id = $1 AND user_id = $2 RETURNING provider",
    )
    .bind(id)
    .bind(user)
    .fetch_optional(db)
    .await?;
    provider
        .as_deref()
        .and_then(KeyProvider::parse)
        .ok_or(Error::NotFound)
}

/// Up to `limit` keys sealed under a master key other than `current` (rotation).
pub async fn keys_not_under(db: &PgPool, current: &str, limit: i64) -> Result<Vec<KeyRow>> {
    let rows = sqlx::query(&format!(
        "SELECT {KEY_COLUMNS} FROM provider_keys WHERE master_key_id <> $1 ORDER BY id LIMIT $2"
    ))
    .bind(current)
    .bind(limit)
    .fetch_all(db)
    .await?;
    rows.iter().map(key_from_row).collect()
}

/// Replaces one row's ciphertext if it is still the one that was read (a concurrent change
/// by the user wins; rotation picks the row up again on its next pass).
pub async fn reseal_key(db: &PgPool, row: &KeyRow, sealed: &Sealed) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE provider_keys SET master_key_id = $2, nonce = $3, ciphertext = $4
         WHERE id = $1 AND master_key_id = $5 AND nonce = $6",
    )
    .bind(row.id)
    .bind(&sealed.key_id)
    .bind(&sealed.nonce)
    .bind(&sealed.ciphertext)
    .bind(&row.sealed.key_id)
    .bind(&row.sealed.nonce)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Users with at least one key (rotation rewrites their Secrets).
pub async fn users_with_keys(db: &PgPool) -> Result<Vec<Uuid>> {
    Ok(
        sqlx::query_scalar("SELECT DISTINCT user_id FROM provider_keys ORDER BY user_id")
            .fetch_all(db)
            .await?,
    )
}

// --- agent settings ---

pub async fn get_settings<'e>(db: impl PgExecutor<'e>, user: Uuid) -> Result<AgentSettings> {
    let row = sqlx::query(
        "SELECT provider, model, endpoint, temperature, max_tokens, session_scope, web_search
         FROM user_settings WHERE user_id = $1",
    )
    .bind(user)
    .fetch_optional(db)
    .await?;
    let Some(row) = row else {
        return Ok(AgentSettings::default());
    };
    let provider: String = row.try_get("provider")?;
    let scope: String = row.try_get("session_scope")?;
    let max_tokens: Option<i32> = row.try_get("max_tokens")?;
    Ok(AgentSettings {
        provider: match provider.as_str() {
            "openai" => ModelProvider::Openai,
            "anthropic" => ModelProvider::Anthropic,
            _ => ModelProvider::Platform,
        },
        model: row.try_get("model")?,
        endpoint: row.try_get("endpoint")?,
        temperature: row.try_get("temperature")?,
        max_tokens: max_tokens.map(|t| t.max(1) as u32),
        session_scope: parse_session_scope(&scope).unwrap_or_default(),
        web_search: row.try_get("web_search")?,
    })
}

pub async fn put_settings<'e>(
    db: impl PgExecutor<'e>,
    user: Uuid,
    s: &AgentSettings,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO user_settings (user_id, provider, model, endpoint, temperature, max_tokens, session_scope, web_search)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (user_id) DO UPDATE SET provider = $2, model = $3, endpoint = $4,
            temperature = $5, max_tokens = $6, session_scope = $7, web_search = $8, updated_at = now()",
    )
    .bind(user)
    .bind(s.provider.as_str())
    .bind(&s.model)
    .bind(&s.endpoint)
    .bind(s.temperature)
    .bind(s.max_tokens.map(|t| t.min(i32::MAX as u32) as i32))
    .bind(session_scope_str(s.session_scope))
    .bind(s.web_search)
    .execute(db)
    .await?;
    Ok(())
}

// --- usage ---

/// One day of a user's usage.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct UsageDay {
    pub day: chrono::NaiveDate,
    pub messages: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub total_tokens: i64,
    /// Messages whose tokens were estimated (the agent reported none).
    pub estimated_messages: i64,
    /// Web searches the replies made (reported by the lite agent; OpenClaw reports none).
    pub web_searches: i64,
}

pub async fn usage_by_day(db: &PgPool, user: Uuid, days: u32) -> Result<Vec<UsageDay>> {
    let rows = sqlx::query(
        "SELECT (recorded_at AT TIME ZONE 'UTC')::date AS day,
                sum(messages)::bigint AS messages,
                sum(prompt_tokens)::bigint AS prompt_tokens,
                sum(completion_tokens)::bigint AS completion_tokens,
                sum(total_tokens)::bigint AS total_tokens,
                sum(CASE WHEN estimated THEN messages ELSE 0 END)::bigint AS estimated_messages,
                sum(web_searches)::bigint AS web_searches
         FROM usage_records
         WHERE user_id = $1 AND recorded_at >= date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' - make_interval(days => $2 - 1)
         GROUP BY 1 ORDER BY 1",
    )
    .bind(user)
    .bind(days as i32)
    .fetch_all(db)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(UsageDay {
                day: r.try_get("day")?,
                messages: r.try_get("messages")?,
                prompt_tokens: r.try_get("prompt_tokens")?,
                completion_tokens: r.try_get("completion_tokens")?,
                total_tokens: r.try_get("total_tokens")?,
                estimated_messages: r.try_get("estimated_messages")?,
                web_searches: r.try_get("web_searches")?,
            })
        })
        .collect()
}

// --- chat connections (the router's table; the accounts side lists and removes them) ---

/// A chat account connected to a user.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Connection {
    pub id: Uuid,
    pub channel: String,
    pub sender_id: String,
    pub created_at: DateTime<Utc>,
}

pub async fn list_connections<'e>(db: impl PgExecutor<'e>, user: Uuid) -> Result<Vec<Connection>> {
    let rows = sqlx::query(
        "SELECT id, channel, sender_id, created_at FROM user_channel_connections
         WHERE user_id = $1 ORDER BY created_at, id",
    )
    .bind(user)
    .fetch_all(db)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Connection {
                id: r.try_get("id")?,
                channel: r.try_get("channel")?,
                sender_id: r.try_get("sender_id")?,
                created_at: r.try_get("created_at")?,
            })
        })
        .collect()
}

pub async fn count_connections(db: &PgPool, user: Uuid) -> Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT count(*) FROM user_channel_connections WHERE user_id = $1")
            .bind(user)
            .fetch_one(db)
            .await?,
    )
}

/// Removes one of the user's connections (the replicas hear of it through the table's
/// notification trigger); returns its channel and sender.
pub async fn delete_connection(db: &PgPool, user: Uuid, id: Uuid) -> Result<(String, String)> {
    sqlx::query_as(
        "DELETE FROM user_channel_connections WHERE id = $1 AND user_id = $2 RETURNING channel, sender_id",
    )
    .bind(id)
    .bind(user)
    .fetch_optional(db)
    .await?
    .ok_or(Error::NotFound)
}

/// The sessions (refresh-token families) of a user, for the export: when, never the token.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct SessionRecord {
    pub started_at: DateTime<Utc>,
    pub last_used_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub revoked: bool,
}

pub async fn sessions_of(db: &PgPool, user: Uuid) -> Result<Vec<SessionRecord>> {
    let rows = sqlx::query(
        "SELECT min(created_at) AS started_at, max(created_at) AS last_used_at,
                max(expires_at) AS expires_at, bool_or(revoked_at IS NOT NULL) AS revoked
         FROM refresh_tokens WHERE user_id = $1 GROUP BY family_id ORDER BY 1",
    )
    .bind(user)
    .fetch_all(db)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(SessionRecord {
                started_at: r.try_get("started_at")?,
                last_used_at: r.try_get("last_used_at")?,
                expires_at: r.try_get("expires_at")?,
                revoked: r.try_get("revoked")?,
            })
        })
        .collect()
}

// --- identities at providers ---

/// An account's sign-in at an identity provider, for the export.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct IdentityRecord {
    pub issuer: String,
    pub email: String,
    pub created_at: DateTime<Utc>,
    pub last_sign_in_at: DateTime<Utc>,
}

/// The account linked to `(issuer, subject)`.
pub async fn identity_user(db: &PgPool, issuer: &str, subject: &str) -> Result<Option<Uuid>> {
    Ok(
        sqlx::query_scalar(
            "SELECT user_id FROM user_identities WHERE issuer = $1 AND subject = $2",
        )
        .bind(issuer)
        .bind(subject)
        .fetch_optional(db)
        .await?,
    )
}

pub async fn insert_identity<'e>(
    db: impl PgExecutor<'e>,
    issuer: &str,
    subject: &str,
    user: Uuid,
    email: &str,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO user_identities (issuer, subject, user_id, email) VALUES ($1, $2, $3, $4)",
    )
    .bind(issuer)
    .bind(subject)
    .bind(user)
    .bind(email)
    .execute(db)
    .await
    .map_err(|e| {
        if unique_violation(&e) {
            Error::Conflict("this sign-in is already linked to an account".into())
        } else {
            e.into()
        }
    })?;
    Ok(())
}

/// Records a sign-in (and the address the provider vouches for now).
pub async fn touch_identity(db: &PgPool, issuer: &str, subject: &str, email: &str) -> Result<()> {
    sqlx::query(
        "UPDATE user_identities SET last_sign_in_at = now(), email = $3
         WHERE issuer = $1 AND subject = $2",
    )
    .bind(issuer)
    .bind(subject)
    .bind(email)
    .execute(db)
    .await?;
    Ok(())
}

pub async fn identities_of(db: &PgPool, user: Uuid) -> Result<Vec<IdentityRecord>> {
    let rows = sqlx::query(
        "SELECT issuer, email, created_at, last_sign_in_at FROM user_identities
         WHERE user_id = $1 ORDER BY created_at",
    )
    .bind(user)
    .fetch_all(db)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(IdentityRecord {
                issuer: r.try_get("issuer")?,
                email: r.try_get("email")?,
                created_at: r.try_get("created_at")?,
                last_sign_in_at: r.try_get("last_sign_in_at")?,
            })
        })
        .collect()
}
