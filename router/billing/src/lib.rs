//! Billing: plans sold through Stripe subscriptions, and what they mean for a user's plan.
//!
//! - [`stripe`]: the calls made to Stripe (async-stripe, typed, form-encoded), at a base URL
//!   that tests point at the local Stripe of `hack/testkit`.
//! - [`signature`]: Stripe's webhook signature scheme.
//! - [`state`]: events and subscription states -> plans (pure).
//! - [`store`]: customers, subscriptions and processed event ids in Postgres.
//! - [`service`]: the operations the API calls and the webhook; a plan change goes through
//!   `clawdbot-accounts`, which re-plans the user's UserWorkspace.
//!
//! The plans themselves (prices, Stripe price ids, limits) are `clawdbot_api::Plans`: the one
//! definition the operator and the router's quotas read too.

pub mod error;
pub mod service;
pub mod signature;
pub mod state;
pub mod store;
pub mod stripe;

pub use error::{Error, Result};
pub use service::{Billing, ModelUsage, Outcome, Settings, Usage};
pub use store::{ModelTokens, SubscriptionRow, Tokens, UsageTotals};
