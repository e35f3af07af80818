//! The calls billing makes to Stripe, through async-stripe's typed requests (form-encoded, as
//! Stripe's API takes them). The base URL is a setting so that tests point the same code at
//! the local Stripe of `hack/testkit`.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use stripe::{Client, ClientBuilder, StripeError};
use stripe_billing::billing_portal_session::CreateBillingPortalSession;
use stripe_billing::subscription::{
    CancelSubscription, RetrieveSubscription, UpdateSubscription, UpdateSubscriptionItems,
    UpdateSubscriptionProrationBehavior,
};
use stripe_checkout::CheckoutSessionMode;
use stripe_checkout::checkout_session::{
    CreateCheckoutSession, CreateCheckoutSessionLineItems, CreateCheckoutSessionSubscriptionData,
};
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::state::{Status, Subscription};

/// Longest wait for one Stripe call: a user waits on it, and a hung call must not hold a
/// request (or a webhook delivery, which Stripe retries) for minutes.
const TIMEOUT: Duration = Duration::from_secs(10);

/// A Checkout Session to send the user to.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckoutSession {
    pub id: String,
    pub url: String,
}

/// What a checkout is for.
pub struct CheckoutRequest<'a> {
    pub user: Uuid,
    pub email: Option<&'a str>,
    /// The user's Stripe customer, when they had a subscription before.
    pub customer: Option<&'a str>,
    pub price: &'a str,
    pub success_url: &'a str,
    pub cancel_url: &'a str,
}

#[derive(Clone)]
pub struct StripeApi {
    client: Client,
}

impl StripeApi {
    /// A client of the Stripe API at `base` (`https://api.stripe.com` in production).
    pub fn new(secret_key: &str, base: &str) -> Result<Self> {
        let base = if base.ends_with('/') {
            base.to_string()
        } else {
            format!("{base}/")
        };
        let client = ClientBuilder::new(secret_key)
            .url(base)
            .timeout(TIMEOUT)
            .app_info(
                "clawdbot-cloud",
                Some(env!("CARGO_PKG_VERSION").into()),
                None,
            )
            .build()
            .map_err(|e| Error::Unavailable(format!("stripe client: {e}")))?;
        Ok(StripeApi { client })
    }

    /// A Checkout Session for a subscription to `price`. The user's id travels as the
    /// session's `client_reference_id` and as the subscription's `metadata.user_id`, so every
    /// later event finds its user whatever order they come in.
    #[tracing::instrument(skip_all, fields(user = %req.user))]
    pub async fn create_checkout(&self, req: &CheckoutRequest<'_>) -> Result<CheckoutSession> {
        let metadata = HashMap::from([("user_id".to_string(), req.user.to_string())]);
        let mut item = CreateCheckoutSessionLineItems::new();
        item.price = Some(req.price.to_string());
        item.quantity = Some(1);
        let mut subscription_data = CreateCheckoutSessionSubscriptionData::new();
        subscription_data.metadata = Some(metadata.clone());
        let mut create = CreateCheckoutSession::new()
            .mode(CheckoutSessionMode::Subscription)
            .line_items(vec![item])
            .client_reference_id(req.user.to_string())
            .metadata(metadata)
            .subscription_data(subscription_data)
            .success_url(req.success_url)
            .cancel_url(req.cancel_url);
        create = match (req.customer, req.email) {
            (Some(c), _) => create.customer(c),
            (None, Some(e)) => create.customer_email(e),
            (None, None) => create,
        };
        let session = create.send(&self.client).await.map_err(from_stripe)?;
        let url = session.url.ok_or_else(|| {
            Error::Unavailable("stripe returned a checkout session without a url".into())
        })?;
        Ok(CheckoutSession {
            id: session.id.as_str().to_string(),
            url,
        })
    }

    /// The latest version of a subscription.
    #[tracing::instrument(skip(self))]
    pub async fn subscription(&self, id: &str) -> Result<Subscription> {
        let sub = RetrieveSubscription::new(id)
            .send(&self.client)
            .await
            .map_err(from_stripe)?;
        convert(sub)
    }

    /// Moves the subscription's item to `price`, prorated.
    #[tracing::instrument(skip(self))]
    pub async fn change_price(&self, id: &str, item: &str, price: &str) -> Result<Subscription> {
        let mut change = UpdateSubscriptionItems::new();
        change.id = Some(item.to_string());
        change.price = Some(price.to_string());
        let sub = UpdateSubscription::new(id)
            .items(vec![change])
            .proration_behavior(UpdateSubscriptionProrationBehavior::CreateProrations)
            .cancel_at_period_end(false)
            .send(&self.client)
            .await
            .map_err(from_stripe)?;
        convert(sub)
    }

    /// Cancels at the end of the paid period (the plan stays until then).
    #[tracing::instrument(skip(self))]
    pub async fn cancel_at_period_end(&self, id: &str) -> Result<Subscription> {
        let sub = UpdateSubscription::new(id)
            .cancel_at_period_end(true)
            .send(&self.client)
            .await
            .map_err(from_stripe)?;
        convert(sub)
    }

    /// Cancels now (`DELETE /v1/subscriptions/{id}`): no further invoice, the subscription
    /// ends at once. For an account being deleted.
    #[tracing::instrument(skip(self))]
    pub async fn cancel_now(&self, id: &str) -> Result<Subscription> {
        let sub = CancelSubscription::new(id)
            .send(&self.client)
            .await
            .map_err(from_stripe)?;
        convert(sub)
    }

    /// A Billing Portal session of `customer` (payment methods, invoices).
    #[tracing::instrument(skip(self, return_url))]
    pub async fn portal(&self, customer: &str, return_url: &str) -> Result<String> {
        let session = CreateBillingPortalSession::new()
            .customer(customer)
            .return_url(return_url)
            .send(&self.client)
            .await
            .map_err(from_stripe)?;
        Ok(session.url)
    }
}

fn from_stripe(e: StripeError) -> Error {
    match e {
        StripeError::Stripe(api, status) => Error::Stripe {
            status,
            message: api.message.unwrap_or_else(|| "no message".into()),
        },
        StripeError::JSONDeserialize(m) => Error::Unavailable(format!("unreadable answer: {m}")),
        StripeError::ClientError(m) => Error::Unavailable(m),
        StripeError::ConfigError(m) => Error::Unavailable(format!("configuration: {m}")),
        StripeError::Timeout => Error::Unavailable("timed out".into()),
    }
}

fn timestamp(t: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(t, 0)
}

fn convert(sub: stripe_billing::Subscription) -> Result<Subscription> {
    let status = Status::parse(sub.status.as_str()).ok_or_else(|| {
        Error::Unavailable(format!(
            "unknown subscription status {:?}",
            sub.status.as_str()
        ))
    })?;
    let item = sub.items.data.first();
    Ok(Subscription {
        id: sub.id.as_str().to_string(),
        customer: sub.customer.id().as_str().to_string(),
        status,
        price: item.map(|i| i.price.id.as_str().to_string()),
        item: item.map(|i| i.id.as_str().to_string()),
        cancel_at_period_end: sub.cancel_at_period_end,
        current_period_end: item.and_then(|i| timestamp(i.current_period_end)),
        user: sub.metadata.get("user_id").and_then(|u| u.parse().ok()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_unreachable_stripe_is_unavailable_and_the_key_is_never_shown() {
        // A port nothing listens on any more.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let api = StripeApi::new("sk_test_SECRETKEY", &format!("http://{addr}")).unwrap();
        let e = api.subscription("sub_1").await.unwrap_err();
        assert!(matches!(e, Error::Unavailable(_)), "{e:?}");
        assert!(!format!("{e} {e:?}").contains("SECRETKEY"));
    }
}
