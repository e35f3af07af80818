//! What a Stripe event and a subscription's state mean for a user's plan (pure, tested
//! without Stripe or Postgres).
//!
//! Stripe delivers events at least once and in no particular order, so an event is only a
//! hint that a subscription changed: its state is read from Stripe's latest version of the
//! subscription, never from the (possibly older) copy inside the event.

use chrono::{DateTime, Duration, Utc};
use clawdbot_api::{Plan, Plans};
use serde::Deserialize;
use uuid::Uuid;

use crate::error::{Error, Result};

/// A subscription's status, as Stripe names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Active,
    Trialing,
    PastDue,
    Unpaid,
    Canceled,
    Incomplete,
    IncompleteExpired,
    Paused,
}

impl Status {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "active" => Status::Active,
            "trialing" => Status::Trialing,
            "past_due" => Status::PastDue,
            "unpaid" => Status::Unpaid,
            "canceled" => Status::Canceled,
            "incomplete" => Status::Incomplete,
            "incomplete_expired" => Status::IncompleteExpired,
            "paused" => Status::Paused,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Active => "active",
            Status::Trialing => "trialing",
            Status::PastDue => "past_due",
            Status::Unpaid => "unpaid",
            Status::Canceled => "canceled",
            Status::Incomplete => "incomplete",
            Status::IncompleteExpired => "incomplete_expired",
            Status::Paused => "paused",
        }
    }

    /// Paid up.
    pub fn paying(self) -> bool {
        matches!(self, Status::Active | Status::Trialing)
    }

    /// A payment failed and Stripe is still retrying it.
    pub fn in_arrears(self) -> bool {
        matches!(self, Status::PastDue | Status::Unpaid)
    }

    /// Still a subscription (a new checkout would make a second one).
    pub fn live(self) -> bool {
        self.paying() || self.in_arrears()
    }
}

/// A subscription as billing needs it, from its latest version at Stripe.
#[derive(Clone, Debug, PartialEq)]
pub struct Subscription {
    pub id: String,
    pub customer: String,
    pub status: Status,
    /// The price of its (one) item.
    pub price: Option<String>,
    /// Its item, which a plan change re-prices.
    pub item: Option<String>,
    pub cancel_at_period_end: bool,
    pub current_period_end: Option<DateTime<Utc>>,
    /// `metadata.user_id`, set at checkout, so that events arriving before the checkout's
    /// own still find their user.
    pub user: Option<Uuid>,
}

/// The plan a subscription gives: its price's plan while paid, or in arrears within the grace
/// period; free otherwise (canceled, expired, unknown price).
pub fn effective_plan(
    plans: &Plans,
    sub: &Subscription,
    grace_until: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Plan {
    let Some(plan) = sub.price.as_deref().and_then(|p| plans.by_stripe_price(p)) else {
        return Plan::Free;
    };
    if sub.status.paying() || (sub.status.in_arrears() && grace_until.is_some_and(|g| now < g)) {
        plan
    } else {
        Plan::Free
    }
}

/// The grace deadline after a state is seen: it starts when the subscription falls into
/// arrears, stays put while it remains there (a retried event does not extend it), and ends
/// once it is paid.
pub fn next_grace(
    status: Status,
    previous: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    grace: Duration,
) -> Option<DateTime<Utc>> {
    if status.in_arrears() {
        Some(previous.unwrap_or(now + grace))
    } else {
        None
    }
}

/// A webhook event: what billing reads of it.
#[derive(Clone, Debug, Deserialize)]
pub struct Event {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub created: i64,
    pub data: EventData,
}

#[derive(Clone, Debug, Deserialize)]
pub struct EventData {
    pub object: serde_json::Value,
}

impl Event {
    pub fn parse(payload: &[u8]) -> Result<Self> {
        serde_json::from_slice(payload).map_err(|e| Error::Malformed(e.to_string()))
    }
}

/// What an event asks billing to do.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Read the subscription's latest state and apply it. `user` and `customer` come from a
    /// completed checkout (its `client_reference_id`), when the event is one.
    Sync {
        subscription: String,
        user: Option<Uuid>,
        customer: Option<String>,
        /// An invoice of it could not be paid.
        payment_failed: bool,
    },
    /// Not an event billing handles (or one without a subscription): acknowledged, ignored.
    Ignore,
}

/// An id field that Stripe sends either as the id or as the expanded object.
fn id_of(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Object(o) => o.get("id")?.as_str().map(str::to_string),
        _ => None,
    }
}

/// The action of an event.
pub fn action(event: &Event) -> Action {
    let o = &event.data.object;
    let subscription = match event.kind.as_str() {
        "checkout.session.completed" => {
            if o["mode"].as_str() != Some("subscription") {
                return Action::Ignore;
            }
            id_of(&o["subscription"])
        }
        "customer.subscription.created"
        | "customer.subscription.updated"
        | "customer.subscription.deleted" => id_of(&o["id"]),
        // Invoices name their subscription at `subscription` in older API versions and under
        // `parent.subscription_details` since 2025-03-31.
        "invoice.paid" | "invoice.payment_failed" => id_of(&o["subscription"])
            .or_else(|| id_of(&o["parent"]["subscription_details"]["subscription"])),
        _ => None,
    };
    let Some(subscription) = subscription else {
        return Action::Ignore;
    };
    let checkout = event.kind == "checkout.session.completed";
    Action::Sync {
        subscription,
        user: checkout
            .then(|| o["client_reference_id"].as_str()?.parse().ok())
            .flatten(),
        customer: checkout.then(|| id_of(&o["customer"])).flatten(),
        payment_failed: event.kind == "invoice.payment_failed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn plans() -> Plans {
        Plans::parse("pro: {stripePriceId: price_pro}\nteam: {stripePriceId: price_team}\n")
            .unwrap()
    }

    fn sub(status: Status, price: &str) -> Subscription {
        Subscription {
            id: "sub_1".into(),
            customer: "cus_1".into(),
            status,
            price: Some(price.into()),
            item: Some("si_1".into()),
            cancel_at_period_end: false,
            current_period_end: None,
            user: None,
        }
    }

    #[test]
    fn the_plan_follows_the_price_while_paid_and_through_the_grace_period() {
        let p = plans();
        let now: DateTime<Utc> = "2026-12-01T12:00:00Z".parse().unwrap();
        let later = now + Duration::hours(1);
        assert_eq!(
            effective_plan(&p, &sub(Status::Active, "price_pro"), None, now),
            Plan::Pro
        );
        assert_eq!(
            effective_plan(&p, &sub(Status::Trialing, "price_team"), None, now),
            Plan::Team
        );
        let arrears = sub(Status::PastDue, "price_pro");
        assert_eq!(effective_plan(&p, &arrears, Some(later), now), Plan::Pro);
        assert_eq!(
            effective_plan(&p, &arrears, Some(now), now),
            Plan::Free,
            "grace over"
        );
        assert_eq!(effective_plan(&p, &arrears, None, now), Plan::Free);
        assert_eq!(
            effective_plan(&p, &sub(Status::Canceled, "price_pro"), None, now),
            Plan::Free
        );
        assert_eq!(
            effective_plan(&p, &sub(Status::Active, "price_unknown"), None, now),
            Plan::Free
        );
    }

    #[test]
    fn grace_starts_once_and_ends_when_paid() {
        let now: DateTime<Utc> = "2026-12-01T12:00:00Z".parse().unwrap();
        let grace = Duration::hours(72);
        let started = next_grace(Status::PastDue, None, now, grace);
        assert_eq!(started, Some(now + grace));
        // A later event in arrears keeps the deadline it had.
        assert_eq!(
            next_grace(Status::Unpaid, started, now + Duration::hours(5), grace),
            started
        );
        assert_eq!(next_grace(Status::Active, started, now, grace), None);
        assert_eq!(next_grace(Status::Canceled, started, now, grace), None);
    }

    fn event(kind: &str, object: serde_json::Value) -> Event {
        Event::parse(
            json!({"id": "evt_1", "object": "event", "type": kind, "created": 1, "data": {"object": object}})
                .to_string()
                .as_bytes(),
        )
        .unwrap()
    }

    #[test]
    fn events_name_their_subscription_in_every_shape() {
        let user = Uuid::new_v4();
        let checkout = event(
            "checkout.session.completed",
            json!({"object": "checkout.session", "mode": "subscription", "subscription": "sub_9",
                   "customer": {"id": "cus_9", "object": "customer"}, "client_reference_id": user.to_string()}),
        );
        assert_eq!(
            action(&checkout),
            Action::Sync {
                subscription: "sub_9".into(),
                user: Some(user),
                customer: Some("cus_9".into()),
                payment_failed: false
            }
        );
        let updated = event(
            "customer.subscription.updated",
            json!({"id": "sub_9", "object": "subscription"}),
        );
        assert!(
            matches!(action(&updated), Action::Sync { subscription, user: None, .. } if subscription == "sub_9")
        );
        let new_invoice = event(
            "invoice.payment_failed",
            json!({"object": "invoice", "parent": {"subscription_details": {"subscription": "sub_9"}}}),
        );
        assert!(matches!(
            action(&new_invoice),
            Action::Sync {
                payment_failed: true,
                ..
            }
        ));
        let old_invoice = event(
            "invoice.paid",
            json!({"object": "invoice", "subscription": "sub_9"}),
        );
        assert!(matches!(
            action(&old_invoice),
            Action::Sync {
                payment_failed: false,
                ..
            }
        ));
    }

    #[test]
    fn other_events_are_ignored() {
        assert_eq!(
            action(&event("plan.created", json!({"id": "price_1"}))),
            Action::Ignore
        );
        assert_eq!(
            action(&event(
                "checkout.session.completed",
                json!({"mode": "payment", "subscription": null})
            )),
            Action::Ignore
        );
        assert_eq!(
            action(&event("invoice.paid", json!({"object": "invoice"}))),
            Action::Ignore
        );
        assert!(matches!(
            Event::parse(b"not json"),
            Err(Error::Malformed(_))
        ));
    }
}
