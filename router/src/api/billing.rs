//! `/billing`: the plans for sale, Stripe Checkout, the subscription (change, cancel), the
//! Billing Portal and this month's usage; and `POST /webhooks/stripe`, where Stripe reports
//! what happened. The work is `clawdbot-billing`'s; this is its HTTP edge.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use chrono::{DateTime, Utc};
use clawdbot_accounts::User;
use clawdbot_api::Plan;
use clawdbot_billing::{Billing, SubscriptionRow};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::ApiState;
use super::extract::{ApiJson, AuthUser};
use super::views::ErrorBody;
use crate::error::ApiError;

pub fn routes() -> OpenApiRouter<Arc<ApiState>> {
    OpenApiRouter::new()
        .routes(routes!(list_plans))
        .routes(routes!(checkout))
        .routes(routes!(
            get_subscription,
            change_subscription,
            cancel_subscription
        ))
        .routes(routes!(portal))
        .routes(routes!(usage))
        .routes(routes!(stripe_webhook))
}

pub fn billing(s: &ApiState) -> Result<&Billing, ApiError> {
    s.billing
        .as_ref()
        .ok_or_else(|| ApiError::NotFound("billing is not enabled on this server".into()))
}

/// A plan and what it allows.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct PlanView {
    /// `free`, `pro` or `team`.
    pub name: String,
    /// Price per month in the currency's smallest unit (cents).
    pub monthly_price_cents: u32,
    pub currency: String,
    /// Whether it can be bought (`POST /billing/checkout`).
    pub purchasable: bool,
    /// Whether it is the signed-in user's plan.
    pub current: bool,
    pub messages_per_day: u32,
    pub max_channels: u32,
    pub web_searches_per_day: u32,
    pub max_storage_bytes: u64,
    pub allows_own_key: bool,
    pub allows_web_search: bool,
    pub background_jobs: bool,
    /// Platform models it may use; `*` is every one.
    pub platform_models: Vec<String>,
    /// `lite` or `openclaw`.
    pub default_runtime: String,
}

/// Every plan, cheapest first.
#[utoipa::path(get, path = "/api/v1/billing/plans", tag = "billing", security(("bearer" = [])),
    responses((status = 200, body = [PlanView]), (status = 401, body = ErrorBody)))]
#[tracing::instrument(skip_all, fields(user))]
async fn list_plans(
    State(s): State<Arc<ApiState>>,
    AuthUser(user): AuthUser,
) -> Result<axum::Json<Vec<PlanView>>, ApiError> {
    Ok(axum::Json(plan_views(&s, &user)))
}

/// Every plan as `GET /billing/plans` shows it to `user` (the dashboard's billing page too).
pub fn plan_views(s: &ApiState, user: &User) -> Vec<PlanView> {
    let sold = s.billing.is_some();
    s.accounts
        .plans()
        .iter()
        .map(|(plan, p)| PlanView {
            name: plan.as_str().into(),
            monthly_price_cents: p.monthly_price_cents,
            currency: p.currency.clone(),
            purchasable: sold && p.stripe_price_id.is_some(),
            current: plan == user.plan,
            messages_per_day: p.messages_per_day,
            max_channels: p.max_channels,
            web_searches_per_day: p.web_searches_per_day,
            max_storage_bytes: p.max_storage_bytes,
            allows_own_key: p.allows_own_key,
            allows_web_search: p.allows_web_search,
            background_jobs: p.background_jobs,
            platform_models: p.platform_models.clone(),
            default_runtime: p.default_runtime.as_str().into(),
        })
        .collect()
}

/// The plan asked for.
#[derive(Deserialize, ToSchema)]
pub struct PlanRequest {
    /// `pro` or `team`.
    pub plan: String,
}

/// Where to send the user to pay.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct CheckoutView {
    /// The Checkout Session's id (`cs_...`).
    pub id: String,
    /// Stripe's payment page; the user comes back to the dashboard's billing page.
    pub url: String,
}

/// A Stripe Checkout Session for a plan. The plan changes when Stripe reports the payment
/// (webhook), not when the session is made.
#[utoipa::path(post, path = "/api/v1/billing/checkout", tag = "billing", security(("bearer" = [])),
    request_body = PlanRequest,
    responses(
        (status = 201, body = CheckoutView),
        (status = 401, body = ErrorBody),
        (status = 404, description = "Billing is not enabled", body = ErrorBody),
        (status = 422, description = "Unknown or unsold plan, the plan the user has, or a subscription exists", body = ErrorBody),
        (status = 502, description = "Stripe refused the request; nothing changed", body = ErrorBody),
        (status = 503, description = "Stripe is unreachable; nothing changed", body = ErrorBody),
    ))]
#[tracing::instrument(skip_all, fields(user))]
async fn checkout(
    State(s): State<Arc<ApiState>>,
    AuthUser(user): AuthUser,
    ApiJson(body): ApiJson<PlanRequest>,
) -> Result<(StatusCode, axum::Json<CheckoutView>), ApiError> {
    let session = billing(&s)?.checkout(&user, &body.plan).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(CheckoutView {
            id: session.id,
            url: session.url,
        }),
    ))
}

/// The user's plan and subscription.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct SubscriptionView {
    /// The plan the account is on now.
    pub plan: String,
    /// The subscription, if the user ever had one.
    pub subscription: Option<SubscriptionDetails>,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct SubscriptionDetails {
    /// Stripe's status: `active`, `trialing`, `past_due`, `unpaid`, `canceled`, ...
    pub status: String,
    /// The plan it pays for.
    pub plan: String,
    /// It ends at `current_period_end` (cancelled, still paid until then).
    pub cancel_at_period_end: bool,
    pub current_period_end: Option<DateTime<Utc>>,
    /// A payment failed: the plan stays until then, and drops to free after it unless a
    /// payment succeeds.
    pub grace_until: Option<DateTime<Utc>>,
    pub payment_failed_at: Option<DateTime<Utc>>,
    /// What the last plan change switched off (own key, web search, a model).
    pub notice: Option<String>,
}

pub fn view(plan: Plan, row: Option<SubscriptionRow>) -> SubscriptionView {
    SubscriptionView {
        plan: plan.as_str().into(),
        subscription: row.map(|r| SubscriptionDetails {
            status: r.status.as_str().into(),
            plan: r.price_plan.as_str().into(),
            cancel_at_period_end: r.cancel_at_period_end,
            current_period_end: r.current_period_end,
            grace_until: r.grace_until,
            payment_failed_at: r.payment_failed_at,
            notice: r.notice,
        }),
    }
}

/// The user's plan and subscription.
#[utoipa::path(get, path = "/api/v1/billing/subscription", tag = "billing", security(("bearer" = [])),
    responses((status = 200, body = SubscriptionView), (status = 401, body = ErrorBody),
        (status = 404, description = "Billing is not enabled", body = ErrorBody)))]
#[tracing::instrument(skip_all, fields(user))]
async fn get_subscription(
    State(s): State<Arc<ApiState>>,
    AuthUser(user): AuthUser,
) -> Result<axum::Json<SubscriptionView>, ApiError> {
    let row = billing(&s)?.subscription(user.id).await?;
    Ok(axum::Json(view(user.plan, row)))
}

/// Moves the subscription to another plan at once, prorated (and undoes a pending
/// cancellation).
#[utoipa::path(post, path = "/api/v1/billing/subscription", tag = "billing", security(("bearer" = [])),
    request_body = PlanRequest,
    responses(
        (status = 200, body = SubscriptionView),
        (status = 401, body = ErrorBody),
        (status = 404, description = "No subscription (or billing is not enabled)", body = ErrorBody),
        (status = 422, description = "Unknown or unsold plan, or the subscription's plan", body = ErrorBody),
        (status = 502, description = "Stripe refused the request; nothing changed", body = ErrorBody),
        (status = 503, description = "Stripe is unreachable; nothing changed", body = ErrorBody),
    ))]
#[tracing::instrument(skip_all, fields(user))]
async fn change_subscription(
    State(s): State<Arc<ApiState>>,
    AuthUser(user): AuthUser,
    ApiJson(body): ApiJson<PlanRequest>,
) -> Result<axum::Json<SubscriptionView>, ApiError> {
    let row = billing(&s)?.change_plan(&user, &body.plan).await?;
    let plan = s.accounts.user(user.id).await?.plan;
    Ok(axum::Json(view(plan, Some(row))))
}

/// Cancels the subscription at the end of the paid period; the plan stays until then.
#[utoipa::path(delete, path = "/api/v1/billing/subscription", tag = "billing", security(("bearer" = [])),
    responses(
        (status = 200, body = SubscriptionView),
        (status = 401, body = ErrorBody),
        (status = 404, description = "No subscription (or billing is not enabled)", body = ErrorBody),
        (status = 502, description = "Stripe refused the request; nothing changed", body = ErrorBody),
        (status = 503, description = "Stripe is unreachable; nothing changed", body = ErrorBody),
    ))]
#[tracing::instrument(skip_all, fields(user))]
async fn cancel_subscription(
    State(s): State<Arc<ApiState>>,
    AuthUser(user): AuthUser,
) -> Result<axum::Json<SubscriptionView>, ApiError> {
    let row = billing(&s)?.cancel(&user).await?;
    Ok(axum::Json(view(user.plan, Some(row))))
}

/// Stripe's Billing Portal.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct PortalView {
    /// The portal session's page (payment methods, invoices); it returns to the dashboard.
    pub url: String,
}

/// A Billing Portal session for the user's Stripe customer.
#[utoipa::path(post, path = "/api/v1/billing/portal", tag = "billing", security(("bearer" = [])),
    responses(
        (status = 201, body = PortalView),
        (status = 401, body = ErrorBody),
        (status = 404, description = "No billing account yet (or billing is not enabled)", body = ErrorBody),
        (status = 502, description = "Stripe refused the request", body = ErrorBody),
        (status = 503, description = "Stripe is unreachable", body = ErrorBody),
    ))]
#[tracing::instrument(skip_all, fields(user))]
async fn portal(
    State(s): State<Arc<ApiState>>,
    AuthUser(user): AuthUser,
) -> Result<(StatusCode, axum::Json<PortalView>), ApiError> {
    let url = billing(&s)?.portal(&user).await?;
    Ok((StatusCode::CREATED, axum::Json(PortalView { url })))
}

/// This month's use against the plan.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct BillingUsageView {
    pub plan: String,
    /// Start of the month (UTC) the totals count from.
    pub period_start: DateTime<Utc>,
    /// What the plan costs per month, in cents.
    pub monthly_price_cents: u32,
    pub currency: String,
    pub messages: i64,
    /// Tokens as the agents reported them.
    pub reported_tokens: i64,
    /// Tokens estimated for messages whose agent reported none (kept apart).
    pub estimated_tokens: i64,
    pub estimated_messages: i64,
    /// Today's messages against the plan's daily limit (UTC day).
    pub messages_today: u32,
    pub messages_per_day: u32,
    /// Tokens per model with their cost at the plan's prices (`modelPrices` of the plans
    /// file), reported and estimated kept apart.
    pub models: Vec<ModelUsageView>,
}

/// One model's use this month.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct ModelUsageView {
    /// The model's name; null for records from before models were recorded.
    pub model: Option<String>,
    /// Tokens as the agent reported them.
    pub reported: TokensView,
    /// Tokens estimated from the text for replies whose agent reported none.
    pub estimated: TokensView,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct TokensView {
    pub messages: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub total_tokens: i64,
    /// At the plan's price of the model, in cents (fractions kept); null when the plan
    /// prices neither the model nor `*`.
    pub cost_cents: Option<f64>,
}

impl TokensView {
    fn new(t: &clawdbot_billing::Tokens, cost_cents: Option<f64>) -> Self {
        TokensView {
            messages: t.messages,
            prompt_tokens: t.prompt_tokens,
            completion_tokens: t.completion_tokens,
            total_tokens: t.prompt_tokens + t.completion_tokens,
            cost_cents,
        }
    }
}

/// This month's usage and the plan's price and daily limit.
#[utoipa::path(get, path = "/api/v1/billing/usage", tag = "billing", security(("bearer" = [])),
    responses((status = 200, body = BillingUsageView), (status = 401, body = ErrorBody),
        (status = 404, description = "Billing is not enabled", body = ErrorBody)))]
#[tracing::instrument(skip_all, fields(user))]
async fn usage(
    State(s): State<Arc<ApiState>>,
    AuthUser(user): AuthUser,
) -> Result<axum::Json<BillingUsageView>, ApiError> {
    Ok(axum::Json(usage_view(&s, &user).await?))
}

/// This month's usage as `GET /billing/usage` shows it (the dashboard's billing page too).
pub async fn usage_view(s: &ApiState, user: &User) -> Result<BillingUsageView, ApiError> {
    let u = billing(s)?.usage(user, Utc::now()).await?;
    let messages_today = s.core.limits.quota_used(user.id).await?;
    Ok(BillingUsageView {
        plan: u.plan.as_str().into(),
        period_start: u.period_start,
        monthly_price_cents: u.monthly_price_cents,
        currency: u.currency,
        messages: u.totals.messages,
        reported_tokens: u.totals.reported_tokens,
        estimated_tokens: u.totals.estimated_tokens,
        estimated_messages: u.totals.estimated_messages,
        messages_today,
        messages_per_day: s.accounts.plans().policy(user.plan).messages_per_day,
        models: u
            .models
            .iter()
            .map(|m| ModelUsageView {
                model: m.model.clone(),
                reported: TokensView::new(&m.reported, m.reported_cost_cents),
                estimated: TokensView::new(&m.estimated, m.estimated_cost_cents),
            })
            .collect(),
    })
}

/// What the user reads in chat when a payment fails, in their language (`ru`; anything else
/// is English, as the dashboard).
pub fn payment_failed_notice(
    lang: Option<&str>,
    plan: Plan,
    until: DateTime<Utc>,
    billing_page: &str,
) -> String {
    let until = until.format("%Y-%m-%d %H:%M UTC");
    match lang {
        Some("ru") => format!(
            "Платёж за тариф {plan} не прошёл. Тариф сохранится до {until}; обновите способ \
             оплаты до этого срока на {billing_page}, иначе тариф станет бесплатным."
        ),
        _ => format!(
            "Your payment for the {plan} plan did not go through. Your plan stays until {until}; \
             update your payment method before then at {billing_page}, or the plan drops to free."
        ),
    }
}

/// The webhook's answer.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct WebhookView {
    /// `applied`, `duplicate` or `ignored`.
    pub outcome: String,
}

/// Stripe's webhook: `Stripe-Signature` checked (HMAC-SHA256, 5-minute tolerance), each event
/// processed once, the subscription's state read from Stripe's latest version of it.
#[utoipa::path(post, path = "/webhooks/stripe", tag = "billing",
    request_body(content = String, content_type = "application/json", description = "A Stripe event, as Stripe sends it"),
    params(("Stripe-Signature" = Option<String>, Header, description = "t=<unix seconds>,v1=<hex HMAC-SHA256>")),
    responses(
        (status = 200, body = WebhookView),
        (status = 400, description = "Bad signature, timestamp outside the tolerance, or not an event; nothing changed", body = ErrorBody),
        (status = 404, description = "Billing is not enabled", body = ErrorBody),
        (status = 503, description = "Stripe or a store is unavailable; Stripe retries later", body = ErrorBody),
    ))]
#[tracing::instrument(skip_all)]
async fn stripe_webhook(
    State(s): State<Arc<ApiState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<axum::Json<WebhookView>, ApiError> {
    let signature = headers
        .get("stripe-signature")
        .and_then(|v| v.to_str().ok());
    let b = billing(&s)?;
    let outcome = b.webhook(&body, signature, Utc::now()).await?;
    if let clawdbot_billing::Outcome::Applied {
        user,
        plan,
        payment_failed: Some(until),
    } = &outcome
    {
        // Told once: a retried event is a duplicate and gets here no more.
        let lang = crate::store::user_lang(&s.core.db, *user)
            .await
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "the user's language could not be read; English");
                None
            });
        let text = payment_failed_notice(lang.as_deref(), *plan, *until, b.return_url());
        match s.core.notify(*user, &text).await {
            Ok(n) => tracing::info!(channels = n, "payment failure told in chat"),
            Err(e) => tracing::warn!(error = %e, "could not tell the payment failure in chat"),
        }
    }
    Ok(axum::Json(WebhookView {
        outcome: match outcome {
            clawdbot_billing::Outcome::Applied { .. } => "applied",
            clawdbot_billing::Outcome::Duplicate => "duplicate",
            clawdbot_billing::Outcome::Ignored => "ignored",
        }
        .into(),
    }))
}
