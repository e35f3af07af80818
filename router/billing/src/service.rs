//! The billing operations the API's handlers call, and the webhook.
//!
//! Nothing is written before Stripe has answered: a checkout, plan change or cancellation
//! that Stripe refuses or cannot take leaves every row as it was. A webhook event is recorded
//! in the same transaction as its effect, and the plan is applied to the account (and through
//! the accounts crate to the UserWorkspace) before that transaction commits, so a failure
//! anywhere rolls the event back and Stripe's retry does the whole work again.

use std::sync::Arc;

use chrono::{DateTime, Datelike, TimeZone, Utc};
use clawdbot_accounts::{Accounts, User};
use clawdbot_api::{Plan, Plans};
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::signature;
use crate::state::{self, Action, Event, Subscription, effective_plan, next_grace};
use crate::store::{self, ModelTokens, SubscriptionRow, Tokens, UsageTotals};
use crate::stripe::{CheckoutRequest, CheckoutSession, StripeApi};

/// Settings of billing.
#[derive(Clone)]
pub struct Settings {
    pub secret_key: String,
    pub webhook_secret: String,
    /// Stripe's API base URL.
    pub api_base: String,
    /// How long a subscription in arrears keeps its plan.
    pub grace: std::time::Duration,
    /// The dashboard's billing page (Checkout and the Billing Portal return there).
    pub return_url: String,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("api_base", &self.api_base)
            .field("grace", &self.grace)
            .field("return_url", &self.return_url)
            .finish_non_exhaustive()
    }
}

/// Real Stripe serves its API and its pages from different hosts; a local Stripe (tests,
/// `stripe-mock`-like servers) serves its pages beside its API.
fn page_origins(api_base: &str) -> Vec<String> {
    match url::Url::parse(api_base) {
        Ok(u) if u.host_str() == Some("api.stripe.com") => vec![
            "https://checkout.stripe.com".into(),
            "https://billing.stripe.com".into(),
        ],
        Ok(u) => vec![u.origin().ascii_serialization()],
        Err(_) => Vec::new(),
    }
}

/// What a webhook delivery did.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// The subscription's latest state was applied; the user's plan is now `plan`.
    /// `payment_failed`: this event reported a failed payment that is still unpaid; the plan
    /// is kept until then (the user is to be told).
    Applied {
        user: Uuid,
        plan: Plan,
        payment_failed: Option<DateTime<Utc>>,
    },
    /// The event was processed before (Stripe retried it).
    Duplicate,
    /// Not an event billing acts on (or not about one of our users).
    Ignored,
}

/// The usage of the current month.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Usage {
    pub plan: Plan,
    pub period_start: DateTime<Utc>,
    pub monthly_price_cents: u32,
    pub currency: String,
    pub totals: UsageTotals,
    /// Tokens per model, with their cost at the plan's prices.
    pub models: Vec<ModelUsage>,
}

/// One model's tokens this month and what they cost at the plan's prices (`None`: the plan
/// prices neither this model nor `*`).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ModelUsage {
    pub model: Option<String>,
    pub reported: Tokens,
    pub estimated: Tokens,
    pub reported_cost_cents: Option<f64>,
    pub estimated_cost_cents: Option<f64>,
}

impl ModelUsage {
    /// Prices `t` at `policy`'s price of its model (records with no model at the `*` price).
    pub fn priced(t: ModelTokens, policy: &clawdbot_api::PlanPolicy) -> Self {
        let price = policy.price_of(t.model.as_deref().unwrap_or("*"));
        let cost = |x: &Tokens| {
            price.map(|p| {
                p.cost_cents(
                    u64::try_from(x.prompt_tokens).unwrap_or(0),
                    u64::try_from(x.completion_tokens).unwrap_or(0),
                )
            })
        };
        ModelUsage {
            reported_cost_cents: cost(&t.reported),
            estimated_cost_cents: cost(&t.estimated),
            model: t.model,
            reported: t.reported,
            estimated: t.estimated,
        }
    }
}

#[derive(Clone)]
pub struct Billing {
    db: PgPool,
    stripe: StripeApi,
    accounts: Accounts,
    plans: Arc<Plans>,
    webhook_secret: Arc<str>,
    grace: chrono::Duration,
    return_url: String,
    /// Where Stripe's pages (Checkout, the Billing Portal) are, for the dashboard's
    /// Content-Security-Policy.
    page_origins: Vec<String>,
}

impl Billing {
    pub fn new(
        settings: Settings,
        db: PgPool,
        accounts: Accounts,
        plans: Arc<Plans>,
    ) -> Result<Self> {
        Ok(Billing {
            stripe: StripeApi::new(&settings.secret_key, &settings.api_base)?,
            db,
            accounts,
            plans,
            webhook_secret: settings.webhook_secret.into(),
            grace: chrono::Duration::from_std(settings.grace)
                .map_err(|_| Error::invalid("grace", "is too long"))?,
            return_url: settings.return_url,
            page_origins: page_origins(&settings.api_base),
        })
    }

    pub fn plans(&self) -> &Plans {
        &self.plans
    }

    /// The dashboard's billing page: the upgrade link of limit messages.
    pub fn return_url(&self) -> &str {
        &self.return_url
    }

    /// The origins of the pages Stripe sends a browser to (Checkout, the Billing Portal): a
    /// form whose answer redirects there must be allowed to (CSP `form-action`).
    pub fn page_origins(&self) -> &[String] {
        &self.page_origins
    }

    /// The plan named `name`, and the Stripe price it is sold at.
    fn sold_plan(&self, name: &str) -> Result<(Plan, String)> {
        let plan: Plan = name
            .parse()
            .map_err(|e: String| Error::invalid("plan", e))?;
        let price = self
            .plans
            .policy(plan)
            .stripe_price_id
            .clone()
            .ok_or_else(|| Error::invalid("plan", format!("the {plan} plan is not sold")))?;
        Ok((plan, price))
    }

    /// A Checkout Session for `plan`; the plan changes when Stripe reports the payment.
    #[tracing::instrument(skip(self, user), fields(user = %user.id))]
    pub async fn checkout(&self, user: &User, plan: &str) -> Result<CheckoutSession> {
        let (plan, price) = self.sold_plan(plan)?;
        if user.plan == plan {
            return Err(Error::invalid(
                "plan",
                format!("you are on the {plan} plan already"),
            ));
        }
        if store::subscription(&self.db, user.id)
            .await?
            .is_some_and(|s| s.status.live())
        {
            return Err(Error::invalid(
                "plan",
                "you have a subscription: change its plan with POST /api/v1/billing/subscription",
            ));
        }
        let customer = store::customer_of(&self.db, user.id).await?;
        let sep = if self.return_url.contains('?') {
            '&'
        } else {
            '?'
        };
        let success = format!(
            "{}{sep}checkout=success&session_id={{CHECKOUT_SESSION_ID}}",
            self.return_url
        );
        let cancel = format!("{}{sep}checkout=canceled", self.return_url);
        self.stripe
            .create_checkout(&CheckoutRequest {
                user: user.id,
                email: user.email.as_deref(),
                customer: customer.as_deref(),
                price: &price,
                success_url: &success,
                cancel_url: &cancel,
            })
            .await
    }

    pub async fn subscription(&self, user: Uuid) -> Result<Option<SubscriptionRow>> {
        store::subscription(&self.db, user).await
    }

    /// The user's subscription that can still be changed.
    async fn live_subscription(&self, user: Uuid) -> Result<SubscriptionRow> {
        store::subscription(&self.db, user)
            .await?
            .filter(|s| s.status.live())
            .ok_or_else(|| {
                Error::NotFound(
                    "no subscription; start one with POST /api/v1/billing/checkout".into(),
                )
            })
    }

    /// Moves the subscription to another plan, prorated; applied at once from Stripe's answer
    /// (the webhook that follows finds it done).
    #[tracing::instrument(skip(self, user), fields(user = %user.id))]
    pub async fn change_plan(&self, user: &User, plan: &str) -> Result<SubscriptionRow> {
        if plan == Plan::Free.as_str() {
            return Err(Error::invalid(
                "plan",
                "to go back to free, cancel the subscription (DELETE /api/v1/billing/subscription)",
            ));
        }
        let (plan, price) = self.sold_plan(plan)?;
        let current = self.live_subscription(user.id).await?;
        if current.price_plan == plan && !current.cancel_at_period_end {
            return Err(Error::invalid(
                "plan",
                format!("your subscription is for the {plan} plan already"),
            ));
        }
        let item = current
            .stripe_item_id
            .as_deref()
            .ok_or_else(|| Error::NotFound("the subscription has no item to change".into()))?;
        let sub = self
            .stripe
            .change_price(&current.stripe_subscription_id, item, &price)
            .await?;
        self.apply_now(user.id, &sub).await
    }

    /// Cancels at the end of the paid period.
    #[tracing::instrument(skip(self, user), fields(user = %user.id))]
    pub async fn cancel(&self, user: &User) -> Result<SubscriptionRow> {
        let current = self.live_subscription(user.id).await?;
        let sub = self
            .stripe
            .cancel_at_period_end(&current.stripe_subscription_id)
            .await?;
        self.apply_now(user.id, &sub).await
    }

    /// Ends the user's subscription at once, for the deletion of their account: a deleted
    /// account must not be charged again. Called before anything is deleted, so that a Stripe
    /// that refuses or cannot be reached stops the deletion with nothing changed (the user
    /// retries) rather than leaving a subscription nobody can cancel from here. A subscription
    /// Stripe no longer knows (404) is already over. Returns whether one was cancelled.
    #[tracing::instrument(skip(self))]
    pub async fn cancel_for_deletion(&self, user: Uuid) -> Result<bool> {
        let Some(current) = store::subscription(&self.db, user)
            .await?
            .filter(|s| s.status.live())
        else {
            return Ok(false);
        };
        let id = &current.stripe_subscription_id;
        match self.stripe.cancel_now(id).await {
            // The rows go with the account; should the deletion fail after this, Stripe's
            // `customer.subscription.deleted` event puts the account on free.
            Ok(_) => {
                tracing::info!("subscription cancelled for the account's deletion");
                Ok(true)
            }
            Err(Error::Stripe { status: 404, .. }) => {
                tracing::warn!("the subscription is unknown to Stripe; nothing to cancel");
                Ok(false)
            }
            // Refused: already over (a deletion retried after a cancellation)? Ask Stripe.
            Err(e @ Error::Stripe { .. }) => match self.stripe.subscription(id).await {
                Ok(sub) if !sub.status.live() => Ok(false),
                _ => Err(e),
            },
            Err(e) => Err(e),
        }
    }

    /// A Billing Portal session (payment methods, invoices).
    pub async fn portal(&self, user: &User) -> Result<String> {
        let customer = store::customer_of(&self.db, user.id)
            .await?
            .ok_or_else(|| {
                Error::NotFound(
                    "no billing account yet; subscribe first (POST /api/v1/billing/checkout)"
                        .into(),
                )
            })?;
        self.stripe.portal(&customer, &self.return_url).await
    }

    /// This month's usage and what the plan costs.
    pub async fn usage(&self, user: &User, now: DateTime<Utc>) -> Result<Usage> {
        let period_start = Utc
            .with_ymd_and_hms(now.year(), now.month(), 1, 0, 0, 0)
            .single()
            .unwrap_or(now);
        let policy = self.plans.policy(user.plan);
        Ok(Usage {
            plan: user.plan,
            period_start,
            monthly_price_cents: policy.monthly_price_cents,
            currency: policy.currency.clone(),
            totals: store::usage_since(&self.db, user.id, period_start).await?,
            models: store::usage_by_model(&self.db, user.id, period_start)
                .await?
                .into_iter()
                .map(|m| ModelUsage::priced(m, policy))
                .collect(),
        })
    }

    async fn apply_now(&self, user: Uuid, sub: &Subscription) -> Result<SubscriptionRow> {
        let mut tx = self.db.begin().await?;
        let row = self.apply(&mut tx, user, sub, false, Utc::now()).await?;
        tx.commit().await?;
        row.ok_or_else(|| Error::NotFound("the subscription is no longer the current one".into()))
    }

    /// A webhook delivery: checked, then processed once per event id.
    #[tracing::instrument(skip_all, fields(event))]
    pub async fn webhook(
        &self,
        payload: &[u8],
        signature_header: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Outcome> {
        let header = signature_header.ok_or(Error::Signature("no Stripe-Signature header"))?;
        signature::verify(
            payload,
            header,
            &self.webhook_secret,
            now.timestamp(),
            signature::DEFAULT_TOLERANCE_SECS,
        )?;
        let event = Event::parse(payload)?;
        tracing::Span::current().record("event", event.id.as_str());
        let Action::Sync {
            subscription,
            user,
            customer,
            payment_failed,
        } = state::action(&event)
        else {
            tracing::debug!(kind = %event.kind, "event ignored");
            return Ok(Outcome::Ignored);
        };
        // Cheap early answer to a retry; the insert below is what guarantees once.
        if sqlx::query_scalar::<_, i32>("SELECT 1 FROM stripe_events WHERE id = $1")
            .bind(&event.id)
            .fetch_optional(&self.db)
            .await?
            .is_some()
        {
            return Ok(Outcome::Duplicate);
        }
        // The latest version, never the event's copy: events arrive in any order.
        let sub = self.stripe.subscription(&subscription).await?;
        let created = DateTime::from_timestamp(event.created, 0).unwrap_or(now);
        let mut tx = self.db.begin().await?;
        if !store::record_event(&mut *tx, &event.id, &event.kind, created).await? {
            return Ok(Outcome::Duplicate);
        }
        let owner = match sub.user.or(user) {
            Some(u) => Some(u),
            None => match &customer {
                Some(c) => store::user_of_customer(&mut *tx, c).await?,
                None => store::user_of_customer(&mut *tx, &sub.customer).await?,
            },
        };
        let Some(owner) = owner else {
            tracing::warn!(kind = %event.kind, "a subscription event of no known user; ignored");
            tx.commit().await?;
            return Ok(Outcome::Ignored);
        };
        if self.accounts.user(owner).await.is_err() {
            tracing::warn!(kind = %event.kind, "a subscription event of a deleted user; ignored");
            tx.commit().await?;
            return Ok(Outcome::Ignored);
        }
        let applied = self
            .apply(&mut tx, owner, &sub, payment_failed, now)
            .await?;
        tx.commit().await?;
        let Some(row) = applied else {
            return Ok(Outcome::Ignored);
        };
        let plan = self.accounts.user(owner).await?.plan;
        tracing::info!(kind = %event.kind, user = %owner, plan = %plan, "subscription applied");
        Ok(Outcome::Applied {
            user: owner,
            plan,
            payment_failed: if payment_failed && row.payment_failed_at.is_some() {
                row.grace_until
            } else {
                None
            },
        })
    }

    /// Applies a subscription's latest state to the user: the stored row, and the account's
    /// plan with its workspace. `None` when the subscription is an old one the user has
    /// replaced.
    async fn apply(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        user: Uuid,
        sub: &Subscription,
        payment_failed: bool,
        now: DateTime<Utc>,
    ) -> Result<Option<SubscriptionRow>> {
        let existing = store::subscription_for_update(&mut **tx, user).await?;
        let same = existing
            .as_ref()
            .filter(|e| e.stripe_subscription_id == sub.id);
        if let Some(e) = &existing
            && e.stripe_subscription_id != sub.id
            && e.status.live()
            && !sub.status.live()
        {
            return Ok(None);
        }
        let grace_until = next_grace(
            sub.status,
            same.and_then(|e| e.grace_until),
            now,
            self.grace,
        );
        let payment_failed_at = if sub.status.paying() {
            None
        } else if payment_failed {
            Some(now)
        } else {
            same.and_then(|e| e.payment_failed_at)
        };
        let price_plan = match sub.price.as_deref() {
            Some(p) => self.plans.by_stripe_price(p).unwrap_or_else(|| {
                tracing::warn!(
                    price = p,
                    "a subscription at a price no plan names; treated as free"
                );
                Plan::Free
            }),
            None => Plan::Free,
        };
        let plan = effective_plan(&self.plans, sub, grace_until, now);
        store::put_customer(&mut **tx, user, &sub.customer).await?;
        let mut row = SubscriptionRow {
            user_id: user,
            stripe_subscription_id: sub.id.clone(),
            stripe_customer_id: sub.customer.clone(),
            status: sub.status,
            stripe_price_id: sub.price.clone(),
            price_plan,
            stripe_item_id: sub.item.clone(),
            cancel_at_period_end: sub.cancel_at_period_end,
            current_period_end: sub.current_period_end,
            grace_until,
            payment_failed_at,
            notice: existing.as_ref().and_then(|e| e.notice.clone()),
        };
        if self.accounts.user(user).await?.plan != plan {
            let (_, notes) = self.accounts.set_plan(user, plan).await?;
            row.notice = (!notes.is_empty()).then(|| notes.join("; "));
        }
        store::put_subscription(&mut **tx, &row).await?;
        Ok(Some(row))
    }

    /// Drops to free every user whose grace period has ended; returns how many.
    pub async fn expire_grace(&self, now: DateTime<Utc>) -> Result<usize> {
        let users = store::grace_expired(&self.db, now).await?;
        for user in &users {
            let (_, notes) = self.accounts.set_plan(*user, Plan::Free).await?;
            let mut notice = "your payment did not go through and the grace period has ended: \
                              you are on the free plan until a payment succeeds"
                .to_string();
            for n in notes {
                notice.push_str("; ");
                notice.push_str(&n);
            }
            store::set_notice(&self.db, *user, Some(&notice)).await?;
            tracing::info!(user = %user, "grace period over; plan dropped to free");
        }
        Ok(users.len())
    }

    /// Housekeeping: grace expiry and old event ids.
    pub async fn sweep(&self, now: DateTime<Utc>) -> Result<usize> {
        let n = self.expire_grace(now).await?;
        store::prune_events(&self.db, now - chrono::Duration::days(30)).await?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::page_origins;

    #[test]
    fn stripe_pages_are_on_its_page_hosts_or_beside_a_local_api() {
        assert_eq!(
            page_origins("https://api.stripe.com"),
            ["https://checkout.stripe.com", "https://billing.stripe.com"]
        );
        assert_eq!(
            page_origins("http://127.0.0.1:4242/"),
            ["http://127.0.0.1:4242"]
        );
        assert!(page_origins("not a url").is_empty());
    }
}
