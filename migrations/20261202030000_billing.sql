-- Billing (issue 12): Stripe customers and subscriptions of users, and the webhook events
-- already processed. The users.plan column stays the account's plan; these rows say why.

-- A user's Stripe customer, kept across subscriptions (a re-subscription reuses it).
CREATE TABLE billing_customers (
    user_id            uuid PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    stripe_customer_id text NOT NULL UNIQUE,
    created_at         timestamptz NOT NULL DEFAULT now()
);

-- The user's current subscription, as Stripe's latest version of it said.
CREATE TABLE billing_subscriptions (
    user_id                uuid PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    stripe_subscription_id text NOT NULL UNIQUE,
    stripe_customer_id     text NOT NULL,
    status                 text NOT NULL,
    -- The price of its item and the plan sold at that price (free for an unknown price).
    stripe_price_id        text,
    price_plan             text NOT NULL CHECK (price_plan IN ('free', 'pro', 'team')),
    stripe_item_id         text,
    cancel_at_period_end   boolean NOT NULL DEFAULT false,
    current_period_end     timestamptz,
    -- Set while in arrears: until then the plan stays; after it the plan drops to free.
    grace_until            timestamptz,
    -- When an invoice last failed (cleared when one is paid): shown on the dashboard.
    payment_failed_at      timestamptz,
    -- What the last plan change switched off, for the user.
    notice                 text,
    updated_at             timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX billing_subscriptions_grace ON billing_subscriptions (grace_until)
    WHERE grace_until IS NOT NULL;

-- Webhook events processed, by Stripe's event id: a retried delivery is acknowledged and
-- does nothing. Kept for 30 days by the router's sweep (Stripe retries for three days).
CREATE TABLE stripe_events (
    id           text PRIMARY KEY,
    type         text NOT NULL,
    created      timestamptz NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX stripe_events_processed ON stripe_events (processed_at);
