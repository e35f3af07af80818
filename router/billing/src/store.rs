//! Postgres queries of billing. Every statement is parameterised and names its user.

use chrono::{DateTime, Utc};
use clawdbot_api::Plan;
use sqlx::{PgExecutor, PgPool, Row};
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::state::Status;

/// A user's subscription as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct SubscriptionRow {
    pub user_id: Uuid,
    pub stripe_subscription_id: String,
    pub stripe_customer_id: String,
    pub status: Status,
    pub stripe_price_id: Option<String>,
    pub price_plan: Plan,
    pub stripe_item_id: Option<String>,
    pub cancel_at_period_end: bool,
    pub current_period_end: Option<DateTime<Utc>>,
    pub grace_until: Option<DateTime<Utc>>,
    pub payment_failed_at: Option<DateTime<Utc>>,
    pub notice: Option<String>,
}

const COLUMNS: &str = "user_id, stripe_subscription_id, stripe_customer_id, status, stripe_price_id, \
    price_plan, stripe_item_id, cancel_at_period_end, current_period_end, grace_until, \
    payment_failed_at, notice";

fn from_row(r: &sqlx::postgres::PgRow) -> Result<SubscriptionRow> {
    let status: String = r.try_get("status")?;
    let plan: String = r.try_get("price_plan")?;
    Ok(SubscriptionRow {
        user_id: r.try_get("user_id")?,
        stripe_subscription_id: r.try_get("stripe_subscription_id")?,
        stripe_customer_id: r.try_get("stripe_customer_id")?,
        status: Status::parse(&status)
            .ok_or_else(|| Error::Malformed(format!("stored status {status:?}")))?,
        stripe_price_id: r.try_get("stripe_price_id")?,
        price_plan: plan.parse().map_err(Error::Malformed)?,
        stripe_item_id: r.try_get("stripe_item_id")?,
        cancel_at_period_end: r.try_get("cancel_at_period_end")?,
        current_period_end: r.try_get("current_period_end")?,
        grace_until: r.try_get("grace_until")?,
        payment_failed_at: r.try_get("payment_failed_at")?,
        notice: r.try_get("notice")?,
    })
}

/// Records an event as processed; false when it was already (a retried delivery). A second
/// delivery racing the first waits on the primary key until the first commits or rolls back.
pub async fn record_event<'e>(
    db: impl PgExecutor<'e>,
    id: &str,
    kind: &str,
    created: DateTime<Utc>,
) -> Result<bool> {
    let done = sqlx::query(
        "INSERT INTO stripe_events (id, type, created) VALUES ($1, $2, $3) ON CONFLICT (id) DO NOTHING",
    )
    .bind(id)
    .bind(kind)
    .bind(created)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn customer_of<'e>(db: impl PgExecutor<'e>, user: Uuid) -> Result<Option<String>> {
    Ok(
        sqlx::query_scalar("SELECT stripe_customer_id FROM billing_customers WHERE user_id = $1")
            .bind(user)
            .fetch_optional(db)
            .await?,
    )
}

pub async fn user_of_customer<'e>(db: impl PgExecutor<'e>, customer: &str) -> Result<Option<Uuid>> {
    Ok(
        sqlx::query_scalar("SELECT user_id FROM billing_customers WHERE stripe_customer_id = $1")
            .bind(customer)
            .fetch_optional(db)
            .await?,
    )
}

/// Links a user to their Stripe customer (the first link stays).
pub async fn put_customer<'e>(db: impl PgExecutor<'e>, user: Uuid, customer: &str) -> Result<()> {
    sqlx::query(
        "INSERT INTO billing_customers (user_id, stripe_customer_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
    )
    .bind(user)
    .bind(customer)
    .execute(db)
    .await?;
    Ok(())
}

pub async fn subscription<'e>(
    db: impl PgExecutor<'e>,
    user: Uuid,
) -> Result<Option<SubscriptionRow>> {
    sqlx::query(&format!(
        "SELECT {COLUMNS} FROM billing_subscriptions WHERE user_id = $1"
    ))
    .bind(user)
    .fetch_optional(db)
    .await?
    .as_ref()
    .map(from_row)
    .transpose()
}

/// The user's subscription row, locked until the transaction ends, so that two events of one
/// user are applied one after the other.
pub async fn subscription_for_update<'e>(
    db: impl PgExecutor<'e>,
    user: Uuid,
) -> Result<Option<SubscriptionRow>> {
    sqlx::query(&format!(
        "SELECT {COLUMNS} FROM billing_subscriptions WHERE user_id = $1 FOR UPDATE"
    ))
    .bind(user)
    .fetch_optional(db)
    .await?
    .as_ref()
    .map(from_row)
    .transpose()
}

pub async fn put_subscription<'e>(db: impl PgExecutor<'e>, row: &SubscriptionRow) -> Result<()> {
    sqlx::query(
        "INSERT INTO billing_subscriptions (user_id, stripe_subscription_id, stripe_customer_id, status,
            stripe_price_id, price_plan, stripe_item_id, cancel_at_period_end, current_period_end,
            grace_until, payment_failed_at, notice, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, now())
         ON CONFLICT (user_id) DO UPDATE SET
            stripe_subscription_id = EXCLUDED.stripe_subscription_id,
            stripe_customer_id = EXCLUDED.stripe_customer_id,
            status = EXCLUDED.status,
            stripe_price_id = EXCLUDED.stripe_price_id,
            price_plan = EXCLUDED.price_plan,
            stripe_item_id = EXCLUDED.stripe_item_id,
            cancel_at_period_end = EXCLUDED.cancel_at_period_end,
            current_period_end = EXCLUDED.current_period_end,
            grace_until = EXCLUDED.grace_until,
            payment_failed_at = EXCLUDED.payment_failed_at,
            notice = EXCLUDED.notice,
            updated_at = now()",
    )
    .bind(row.user_id)
    .bind(&row.stripe_subscription_id)
    .bind(&row.stripe_customer_id)
    .bind(row.status.as_str())
    .bind(&row.stripe_price_id)
    .bind(row.price_plan.as_str())
    .bind(&row.stripe_item_id)
    .bind(row.cancel_at_period_end)
    .bind(row.current_period_end)
    .bind(row.grace_until)
    .bind(row.payment_failed_at)
    .bind(&row.notice)
    .execute(db)
    .await
    .map_err(|e| match &e {
        // Another user already holds this subscription id: an event that is not this user's.
        sqlx::Error::Database(d) if d.is_unique_violation() => {
            Error::Malformed("the subscription belongs to another user".into())
        }
        _ => e.into(),
    })?;
    Ok(())
}

/// Users whose grace period is over and whose account is still on a paid plan.
pub async fn grace_expired(db: &PgPool, now: DateTime<Utc>) -> Result<Vec<Uuid>> {
    Ok(sqlx::query_scalar(
        "SELECT s.user_id FROM billing_subscriptions s JOIN users u ON u.id = s.user_id
         WHERE s.grace_until IS NOT NULL AND s.grace_until <= $1 AND u.plan <> 'free'
         ORDER BY s.grace_until LIMIT 500",
    )
    .bind(now)
    .fetch_all(db)
    .await?)
}

pub async fn set_notice<'e>(
    db: impl PgExecutor<'e>,
    user: Uuid,
    notice: Option<&str>,
) -> Result<()> {
    sqlx::query(
        "UPDATE billing_subscriptions SET notice = $2, updated_at = now() WHERE user_id = $1",
    )
    .bind(user)
    .bind(notice)
    .execute(db)
    .await?;
    Ok(())
}

/// Forgets processed events older than Stripe's retry horizon (three days) with a margin.
pub async fn prune_events(db: &PgPool, before: DateTime<Utc>) -> Result<u64> {
    Ok(
        sqlx::query("DELETE FROM stripe_events WHERE processed_at < $1")
            .bind(before)
            .execute(db)
            .await?
            .rows_affected(),
    )
}

/// A user's usage since a time, reported and estimated tokens kept apart.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct UsageTotals {
    pub messages: i64,
    /// Tokens as the agent reported them.
    pub reported_tokens: i64,
    /// Tokens estimated for messages whose agent reported none.
    pub estimated_tokens: i64,
    pub estimated_messages: i64,
}

pub async fn usage_since(db: &PgPool, user: Uuid, since: DateTime<Utc>) -> Result<UsageTotals> {
    let r = sqlx::query(
        "SELECT coalesce(sum(messages), 0)::bigint AS messages,
                coalesce(sum(total_tokens) FILTER (WHERE NOT estimated), 0)::bigint AS reported,
                coalesce(sum(total_tokens) FILTER (WHERE estimated), 0)::bigint AS estimated,
                coalesce(sum(messages) FILTER (WHERE estimated), 0)::bigint AS estimated_messages
         FROM usage_records WHERE user_id = $1 AND recorded_at >= $2",
    )
    .bind(user)
    .bind(since)
    .fetch_one(db)
    .await?;
    Ok(UsageTotals {
        messages: r.try_get("messages")?,
        reported_tokens: r.try_get("reported")?,
        estimated_tokens: r.try_get("estimated")?,
        estimated_messages: r.try_get("estimated_messages")?,
    })
}

/// Messages and their tokens.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Tokens {
    pub messages: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
}

/// One model's usage, reported and estimated tokens kept apart.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct ModelTokens {
    /// `None` for records from before the model was recorded.
    pub model: Option<String>,
    pub reported: Tokens,
    pub estimated: Tokens,
}

/// A user's usage since a time, per model (by name; unnamed records last).
pub async fn usage_by_model(
    db: &PgPool,
    user: Uuid,
    since: DateTime<Utc>,
) -> Result<Vec<ModelTokens>> {
    let rows = sqlx::query(
        "SELECT model, estimated,
                sum(messages)::bigint AS messages,
                sum(prompt_tokens)::bigint AS prompt,
                sum(completion_tokens)::bigint AS completion
         FROM usage_records WHERE user_id = $1 AND recorded_at >= $2
         GROUP BY model, estimated ORDER BY model NULLS LAST, estimated",
    )
    .bind(user)
    .bind(since)
    .fetch_all(db)
    .await?;
    let mut models: Vec<ModelTokens> = Vec::new();
    for r in rows {
        let model: Option<String> = r.try_get("model")?;
        let tokens = Tokens {
            messages: r.try_get("messages")?,
            prompt_tokens: r.try_get("prompt")?,
            completion_tokens: r.try_get("completion")?,
        };
        // Rows come sorted by model: a model's second row (estimated) follows its first.
        if models.last().is_none_or(|m| m.model != model) {
            models.push(ModelTokens {
                model,
                ..Default::default()
            });
        }
        if let Some(m) = models.last_mut() {
            if r.try_get("estimated")? {
                m.estimated = tokens;
            } else {
                m.reported = tokens;
            }
        }
    }
    Ok(models)
}
