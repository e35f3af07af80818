//! Billing: the plans side by side, an upgrade through Stripe Checkout (the browser is sent to
//! the Checkout Session's page), a plan change, the Billing Portal, a cancellation at the
//! period's end, this month's usage and cost, and the notice of a failed payment with the
//! date the plan is kept until (also on Home).
//!
//! The plans, the subscription and the usage are what `GET /api/v1/billing/plans`,
//! `/subscription` and `/usage` answer (the same functions); the forms call the same
//! `clawdbot-billing` operations as the API's `POST /billing/checkout`, `POST|DELETE
//! /billing/subscription` and `POST /billing/portal`.

use std::sync::Arc;

use askama::Template;
use axum::Form;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{DateTime, Utc};
use clawdbot_accounts::User;
use clawdbot_billing::{Billing, SubscriptionRow};
use serde::Deserialize;

use super::guard::{Viewer, csp_with_form_targets};
use super::i18n::Lang;
use super::{Ctx, DashState, done, render_with};
use crate::api::billing::{BillingUsageView, PlanView, plan_views, usage_view};
use crate::error::ApiError;

pub const BILLING: &str = "/dashboard/billing";

/// A plan's card.
pub struct PlanCard {
    pub name: String,
    pub title: &'static str,
    pub price: String,
    pub current: bool,
    pub purchasable: bool,
    pub messages_per_day: u32,
    pub max_channels: u32,
    pub web_searches_per_day: u32,
    pub storage: String,
    pub own_key: bool,
    pub web_search: bool,
    pub background_jobs: bool,
    pub models: String,
}

/// The subscription as the page says it.
pub struct SubLine {
    pub status: &'static str,
    pub plan: &'static str,
    pub live: bool,
    pub cancel_at_period_end: bool,
    pub period_end: Option<String>,
    /// What the last plan change switched off.
    pub notice: Option<String>,
}

/// A payment failed: the plan is kept until `grace_until`.
pub struct PaymentFailed {
    pub grace_until: String,
}

pub struct UsageLine {
    pub price: String,
    pub messages: i64,
    pub reported_tokens: i64,
    pub estimated_tokens: i64,
    pub estimated_messages: i64,
    pub messages_today: u32,
    pub messages_per_day: u32,
    pub since: String,
    pub models: Vec<ModelLine>,
}

/// One model's tokens this month and their cost (reported and estimated apart).
pub struct ModelLine {
    /// `None`: records from before models were recorded.
    pub model: Option<String>,
    pub reported_tokens: i64,
    pub estimated_tokens: i64,
    pub reported_cost: String,
    pub estimated_cost: String,
}

#[derive(Template)]
#[template(path = "dashboard/billing.html")]
pub struct BillingPage {
    pub c: Ctx,
    /// Stripe is configured on this server.
    pub enabled: bool,
    pub plans: Vec<PlanCard>,
    pub sub: Option<SubLine>,
    /// A subscription that can be changed (the plans offer a switch, not a checkout).
    pub subscribed: bool,
    pub failed: Option<PaymentFailed>,
    pub usage: Option<UsageLine>,
}

/// An amount in the currency's smallest unit, as people write it.
pub fn money(cents: u32, currency: &str) -> String {
    let amount = format!("{}.{:02}", cents / 100, cents % 100);
    match currency.to_ascii_lowercase().as_str() {
        "usd" => format!("${amount}"),
        "eur" => format!("€{amount}"),
        other => format!("{amount} {}", other.to_ascii_uppercase()),
    }
}

fn storage(bytes: u64) -> String {
    const GIB: u64 = 1 << 30;
    const MIB: u64 = 1 << 20;
    if bytes >= GIB {
        format!("{} GiB", bytes / GIB)
    } else {
        format!("{} MiB", bytes / MIB)
    }
}

/// A moment as the page shows it (UTC: the server does not know the reader's zone).
pub fn when(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

fn plan_title(name: &str) -> &'static str {
    match name {
        "free" => "plan.free",
        "pro" => "plan.pro",
        _ => "plan.team",
    }
}

fn status_words(status: &str) -> &'static str {
    match status {
        "active" | "trialing" => "billing.status.active",
        "past_due" | "unpaid" => "billing.status.past_due",
        "canceled" | "incomplete_expired" => "billing.status.canceled",
        _ => "billing.status.pending",
    }
}

fn card(lang: Lang, p: PlanView) -> PlanCard {
    PlanCard {
        title: lang.t(plan_title(&p.name)),
        price: if p.monthly_price_cents == 0 {
            lang.t("billing.price.free").into()
        } else {
            format!(
                "{} {}",
                money(p.monthly_price_cents, &p.currency),
                lang.t("billing.per_month")
            )
        },
        current: p.current,
        purchasable: p.purchasable,
        messages_per_day: p.messages_per_day,
        max_channels: p.max_channels,
        web_searches_per_day: p.web_searches_per_day,
        storage: storage(p.max_storage_bytes),
        own_key: p.allows_own_key,
        web_search: p.allows_web_search,
        background_jobs: p.background_jobs,
        models: if p.platform_models.iter().any(|m| m == "*") {
            lang.t("billing.all_models").into()
        } else {
            p.platform_models.join(", ")
        },
        name: p.name,
    }
}

/// The failed payment of `row`, if one is unresolved (Home shows it too).
pub fn payment_failed(row: Option<&SubscriptionRow>) -> Option<PaymentFailed> {
    let row = row?;
    match (row.payment_failed_at, row.grace_until) {
        (Some(_), Some(until)) => Some(PaymentFailed {
            grace_until: when(until),
        }),
        _ => None,
    }
}

/// The failed payment of `user`, when billing is on (for Home).
pub async fn payment_failed_of(
    s: &DashState,
    user: &User,
) -> Result<Option<PaymentFailed>, ApiError> {
    let Some(b) = &s.api.billing else {
        return Ok(None);
    };
    Ok(payment_failed(b.subscription(user.id).await?.as_ref()))
}

async fn show(s: &DashState, user: &User, c: Ctx) -> Response {
    let status = c.status;
    let lang = c.lang;
    let plans = plan_views(&s.api, user)
        .into_iter()
        .map(|p| card(lang, p))
        .collect();
    let Some(b) = &s.api.billing else {
        let page = BillingPage {
            c,
            enabled: false,
            plans,
            sub: None,
            subscribed: false,
            failed: None,
            usage: None,
        };
        return render_with(status, &page);
    };
    let loaded = async {
        let row = b.subscription(user.id).await?;
        let usage = usage_view(&s.api, user).await?;
        Ok::<_, ApiError>((row, usage))
    }
    .await;
    let (row, usage) = match loaded {
        Ok(v) => v,
        Err(e) => return super::error_page(c, &e),
    };
    let page = BillingPage {
        enabled: true,
        plans,
        failed: payment_failed(row.as_ref()),
        subscribed: row.as_ref().is_some_and(|r| r.status.live()),
        sub: row.map(|r| SubLine {
            status: lang.t(status_words(r.status.as_str())),
            plan: lang.t(plan_title(r.price_plan.as_str())),
            live: r.status.live(),
            cancel_at_period_end: r.cancel_at_period_end,
            period_end: r.current_period_end.map(when),
            notice: r.notice,
        }),
        usage: Some(usage_line(&usage)),
        c,
    };
    with_stripe_forms(b, render_with(status, &page))
}

fn usage_line(u: &BillingUsageView) -> UsageLine {
    UsageLine {
        price: money(u.monthly_price_cents, &u.currency),
        messages: u.messages,
        reported_tokens: u.reported_tokens,
        estimated_tokens: u.estimated_tokens,
        estimated_messages: u.estimated_messages,
        messages_today: u.messages_today,
        messages_per_day: u.messages_per_day,
        since: u.period_start.format("%Y-%m-%d").to_string(),
        models: u
            .models
            .iter()
            .map(|m| ModelLine {
                model: m.model.clone(),
                reported_tokens: m.reported.total_tokens,
                estimated_tokens: m.estimated.total_tokens,
                reported_cost: token_cost(m.reported.cost_cents, &u.currency),
                estimated_cost: token_cost(m.estimated.cost_cents, &u.currency),
            })
            .collect(),
    }
}

/// A token cost in cents (fractions kept) as people write it, to a hundredth of a cent: a
/// month of a small model is often less than one. `-` when the plan prices no such model.
fn token_cost(cents: Option<f64>, currency: &str) -> String {
    let Some(cents) = cents else {
        return "-".into();
    };
    let amount = format!("{:.4}", cents / 100.0);
    match currency.to_ascii_lowercase().as_str() {
        "usd" => format!("${amount}"),
        "eur" => format!("€{amount}"),
        other => format!("{amount} {}", other.to_ascii_uppercase()),
    }
}

/// The page's forms are answered with a redirect to Stripe's Checkout or Billing Portal,
/// which the browser follows only if the policy's `form-action` names Stripe's page origin.
fn with_stripe_forms(b: &Billing, mut resp: Response) -> Response {
    if let Ok(v) = HeaderValue::from_str(&csp_with_form_targets(b.page_origins())) {
        resp.headers_mut()
            .insert(header::CONTENT_SECURITY_POLICY, v);
    }
    resp
}

#[derive(Deserialize)]
pub struct Back {
    /// `success` or `canceled`: how Stripe Checkout sent the user back.
    checkout: Option<String>,
}

#[tracing::instrument(skip_all, fields(user))]
pub async fn page(
    State(s): State<Arc<DashState>>,
    Viewer(user): Viewer,
    mut c: Ctx,
    Query(q): Query<Back>,
) -> Response {
    match q.checkout.as_deref() {
        // Stripe usually reports the payment before the browser is back; if not yet, say so.
        Some("success") if user.plan != clawdbot_api::Plan::Free => {
            c.notice = Some(c.t("billing.paid_active"))
        }
        Some("success") => c.notice = Some(c.t("billing.paid")),
        Some("canceled") => c.notice = Some(c.t("billing.checkout_canceled")),
        _ => {}
    }
    let c = c.signed_in(&user);
    show(&s, &user, c).await
}

#[derive(Deserialize)]
pub struct PlanForm {
    #[serde(default)]
    plan: String,
}

/// Billing's service, or the page's "not enabled" error.
fn service(s: &DashState) -> Result<&Billing, ApiError> {
    s.api.billing.as_ref().ok_or(ApiError::ChannelDisabled)
}

/// Upgrade: a Checkout Session, and the browser goes to its page; the plan changes when
/// Stripe reports the payment.
#[tracing::instrument(skip_all, fields(user))]
pub async fn checkout(
    State(s): State<Arc<DashState>>,
    Viewer(user): Viewer,
    c: Ctx,
    Form(f): Form<PlanForm>,
) -> Response {
    let c = c.signed_in(&user);
    let result = async { Ok::<_, ApiError>(service(&s)?.checkout(&user, &f.plan).await?) }.await;
    match result {
        Ok(session) => Redirect::to(&session.url).into_response(),
        Err(e) => show(&s, &user, c.failed(&e)).await,
    }
}

/// A subscriber moves to another plan at once (prorated).
#[tracing::instrument(skip_all, fields(user))]
pub async fn change(
    State(s): State<Arc<DashState>>,
    Viewer(user): Viewer,
    c: Ctx,
    Form(f): Form<PlanForm>,
) -> Response {
    let c = c.signed_in(&user);
    let result = async { Ok::<_, ApiError>(service(&s)?.change_plan(&user, &f.plan).await?) }.await;
    match result {
        Ok(_) => done(BILLING, "plan_changed"),
        Err(e) => show(&s, &user, c.failed(&e)).await,
    }
}

/// Cancels at the end of the paid period.
#[tracing::instrument(skip_all, fields(user))]
pub async fn cancel(State(s): State<Arc<DashState>>, Viewer(user): Viewer, c: Ctx) -> Response {
    let c = c.signed_in(&user);
    let result = async { Ok::<_, ApiError>(service(&s)?.cancel(&user).await?) }.await;
    match result {
        Ok(_) => done(BILLING, "sub_canceled"),
        Err(e) => show(&s, &user, c.failed(&e)).await,
    }
}

/// Stripe's Billing Portal (payment method, invoices).
#[tracing::instrument(skip_all, fields(user))]
pub async fn portal(State(s): State<Arc<DashState>>, Viewer(user): Viewer, c: Ctx) -> Response {
    let c = c.signed_in(&user);
    let result = async { Ok::<_, ApiError>(service(&s)?.portal(&user).await?) }.await;
    match result {
        Ok(url) => Redirect::to(&url).into_response(),
        Err(e) => show(&s, &user, c.failed(&e)).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_as_people_write_them() {
        assert_eq!(money(2000, "usd"), "$20.00");
        assert_eq!(money(1999, "EUR"), "€19.99");
        assert_eq!(money(5, "rub"), "0.05 RUB");
        assert_eq!(storage(10 << 30), "10 GiB");
        assert_eq!(storage(512 << 20), "512 MiB");
    }
}
