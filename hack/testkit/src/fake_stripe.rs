//! A local Stripe speaking its wire format for the calls billing makes, and sending webhooks
//! the way Stripe does:
//!
//! - requests are form-encoded (`line_items[0][price]=...`), authenticated with
//!   `Authorization: Bearer <secret key>`, under `/v1`;
//! - `POST /v1/checkout/sessions`, `GET|POST|DELETE /v1/subscriptions/{id}`,
//!   `POST /v1/billing_portal/sessions` answer with objects shaped as Stripe's published
//!   fixtures (`stripe/openapi` `fixtures3.json`: every field async-stripe requires, Stripe's
//!   id prefixes, unix timestamps), and errors in Stripe's shape
//!   (`{"error": {"type", "code", "message", "param"}}`, 400/401/404, 500 `api_error`);
//! - what a customer does in Stripe's pages (paying a checkout, a renewal failing, paying
//!   later, the subscription ending) is driven by the test ([`FakeStripe::complete_checkout`],
//!   [`FakeStripe::fail_payment`], ...), which makes the events Stripe would; each event is
//!   delivered when the test says ([`FakeStripe::deliver`]), in any order and as often as it
//!   likes, to the webhook URL with a `Stripe-Signature: t=...,v1=...` header (HMAC-SHA256 of
//!   `"<t>.<body>"` under the endpoint secret).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

/// The API version the fake's objects follow (the one async-stripe 1.0.0-rc.10 pins).
pub const API_VERSION: &str = "2026-09-30.endive";

/// A request the fake received (for asserting what the client sent).
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: &'static str,
    pub path: String,
    pub form: Vec<(String, String)>,
}

impl Recorded {
    /// The value of a form field.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.form
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct Objects {
    next: u64,
    sessions: HashMap<String, Value>,
    subscriptions: HashMap<String, Value>,
    customers: HashMap<String, Value>,
    events: HashMap<String, Value>,
    requests: Vec<Recorded>,
}

struct Shared {
    base: String,
    secret_key: String,
    webhook_secret: String,
    /// Known prices: id -> (unit amount, currency).
    prices: HashMap<String, (i64, String)>,
    webhook_url: Mutex<Option<String>>,
    /// Answer every API call with a 500 `api_error` (an outage).
    outage: Mutex<bool>,
    objects: Mutex<Objects>,
    http: reqwest::Client,
}

pub struct FakeStripe {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeStripe {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Stripe's error body.
fn error(
    status: StatusCode,
    kind: &str,
    code: Option<&str>,
    message: &str,
    param: Option<&str>,
) -> Response {
    let mut e = json!({"type": kind, "message": message});
    if let Some(c) = code {
        e["code"] = json!(c);
        e["doc_url"] = json!(format!(
            "https://stripe.com/docs/error-codes/{}",
            c.replace('_', "-")
        ));
    }
    if let Some(p) = param {
        e["param"] = json!(p);
    }
    (status, Json(json!({"error": e}))).into_response()
}

fn missing(param: &str) -> Response {
    error(
        StatusCode::BAD_REQUEST,
        "invalid_request_error",
        Some("parameter_missing"),
        &format!("Missing required param: {param}."),
        Some(param),
    )
}

fn no_such(kind: &str, id: &str, param: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        Some("resource_missing"),
        &format!("No such {kind}: '{id}'"),
        Some(param),
    )
}

impl FakeStripe {
    /// A Stripe account with `secret_key`, a webhook endpoint signed with `webhook_secret`,
    /// and monthly prices (id, amount in cents).
    pub async fn start(secret_key: &str, webhook_secret: &str, prices: &[(&str, i64)]) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake Stripe");
        let addr = listener.local_addr().expect("local addr");
        let shared = Arc::new(Shared {
            base: format!("http://{addr}"),
            secret_key: secret_key.into(),
            webhook_secret: webhook_secret.into(),
            prices: prices
                .iter()
                .map(|(id, amount)| (id.to_string(), (*amount, "usd".to_string())))
                .collect(),
            webhook_url: Mutex::new(None),
            outage: Mutex::new(false),
            objects: Mutex::new(Objects::default()),
            http: reqwest::Client::new(),
        });
        let app = Router::new()
            .route("/v1/checkout/sessions", post(create_session))
            .route(
                "/v1/subscriptions/{id}",
                get(get_subscription)
                    .post(update_subscription)
                    .delete(cancel_subscription),
            )
            .route("/v1/billing_portal/sessions", post(create_portal))
            .route("/pay/{id}", get(checkout_page).post(pay))
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeStripe { addr, shared, task }
    }

    /// The API base URL (`STRIPE_API_BASE`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Where events are delivered (the router's `/webhooks/stripe`).
    pub fn set_webhook_url(&self, url: &str) {
        *self.shared.webhook_url.lock().expect("lock") = Some(url.to_string());
    }

    /// While on, every API call answers 500 with an `api_error`.
    pub fn set_outage(&self, on: bool) {
        *self.shared.outage.lock().expect("lock") = on;
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.objects.lock().expect("lock").requests.clone()
    }

    pub fn session(&self, id: &str) -> Option<Value> {
        self.shared
            .objects
            .lock()
            .expect("lock")
            .sessions
            .get(id)
            .cloned()
    }

    pub fn subscription(&self, id: &str) -> Option<Value> {
        self.shared
            .objects
            .lock()
            .expect("lock")
            .subscriptions
            .get(id)
            .cloned()
    }

    /// The raw body of an event, as it is delivered.
    pub fn event_body(&self, id: &str) -> String {
        self.shared.event_body(id)
    }

    /// `Stripe-Signature` of `body` at `timestamp` under the endpoint secret.
    pub fn sign(&self, body: &str, timestamp: i64) -> String {
        self.shared.sign(body, timestamp)
    }

    /// Delivers an event as Stripe does (signed now); returns the endpoint's status.
    pub async fn deliver(&self, event: &str) -> StatusCode {
        self.shared.deliver(event).await.expect("deliver webhook")
    }

    /// Posts any body with any signature header to the webhook URL.
    pub async fn deliver_raw(&self, body: &str, signature: Option<&str>) -> StatusCode {
        self.shared
            .deliver_raw(body, signature)
            .await
            .expect("deliver webhook")
    }

    /// The customer pays the checkout: a customer and an active subscription are made, and
    /// the events Stripe sends for it, in Stripe's usual order: `customer.subscription.created`,
    /// `checkout.session.completed`, `invoice.paid`. Returns (subscription id, event ids).
    pub fn complete_checkout(&self, session: &str) -> (String, Vec<String>) {
        self.shared
            .complete_checkout(session)
            .expect("no such checkout session")
    }

    /// A renewal payment fails: the subscription goes `past_due`. Returns the events
    /// (`invoice.payment_failed`, `customer.subscription.updated`).
    pub fn fail_payment(&self, sub: &str) -> Vec<String> {
        self.invoice_outcome(sub, "past_due", "open", "invoice.payment_failed")
    }

    /// A payment goes through: the subscription is `active` again. Returns the events
    /// (`invoice.paid`, `customer.subscription.updated`).
    pub fn pay(&self, sub: &str) -> Vec<String> {
        self.invoice_outcome(sub, "active", "paid", "invoice.paid")
    }

    fn invoice_outcome(
        &self,
        sub: &str,
        status: &str,
        invoice_status: &str,
        kind: &str,
    ) -> Vec<String> {
        let mut o = self.shared.objects.lock().expect("lock");
        let mut s = o
            .subscriptions
            .get(sub)
            .cloned()
            .expect("no such subscription");
        let previous = s["status"].clone();
        s["status"] = json!(status);
        o.subscriptions.insert(sub.to_string(), s.clone());
        let invoice = invoice_object(&mut o, &s, invoice_status);
        let first = make_event(&mut o, kind, invoice);
        let updated = make_event(&mut o, "customer.subscription.updated", s);
        if let Some(e) = o.events.get_mut(&updated) {
            e["data"]["previous_attributes"] = json!({"status": previous});
        }
        vec![first, updated]
    }

    /// The subscription ends now (canceled, or its period ended after a cancellation).
    /// Returns the `customer.subscription.deleted` event.
    pub fn end_subscription(&self, sub: &str) -> String {
        let mut o = self.shared.objects.lock().expect("lock");
        let mut s = o
            .subscriptions
            .get(sub)
            .cloned()
            .expect("no such subscription");
        s["status"] = json!("canceled");
        s["canceled_at"] = json!(now());
        s["ended_at"] = json!(now());
        o.subscriptions.insert(sub.to_string(), s.clone());
        make_event(&mut o, "customer.subscription.deleted", s)
    }

    /// An event of a type billing does not handle.
    pub fn other_event(&self) -> String {
        let mut o = self.shared.objects.lock().expect("lock");
        make_event(
            &mut o,
            "customer.created",
            customer_object("cus_unrelated", Some("someone@example.com")),
        )
    }
}

impl Shared {
    fn event_body(&self, id: &str) -> String {
        self.objects.lock().expect("lock").events[id].to_string()
    }

    fn sign(&self, body: &str, timestamp: i64) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(self.webhook_secret.as_bytes())
            .expect("hmac takes any key length");
        mac.update(format!("{timestamp}.{body}").as_bytes());
        format!(
            "t={timestamp},v1={}",
            hex::encode(mac.finalize().into_bytes())
        )
    }

    async fn deliver(&self, event: &str) -> reqwest::Result<StatusCode> {
        let body = self.event_body(event);
        let header = self.sign(&body, now());
        self.deliver_raw(&body, Some(&header)).await
    }

    async fn deliver_raw(
        &self,
        body: &str,
        signature: Option<&str>,
    ) -> reqwest::Result<StatusCode> {
        let url = self
            .webhook_url
            .lock()
            .expect("lock")
            .clone()
            .expect("set_webhook_url first");
        let mut req = self
            .http
            .post(url)
            .header("content-type", "application/json; charset=utf-8")
            .header(
                "user-agent",
                "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
            )
            .body(body.to_string());
        if let Some(s) = signature {
            req = req.header("stripe-signature", s);
        }
        let status = req.send().await?.status();
        Ok(StatusCode::from_u16(status.as_u16()).expect("status"))
    }

    /// The customer pays the checkout: a customer and an active subscription are made, and
    /// the events Stripe sends for it, in Stripe's usual order: `customer.subscription.created`,
    /// `checkout.session.completed`, `invoice.paid`. Returns (subscription id, event ids);
    /// `None` for an unknown session.
    fn complete_checkout(&self, session: &str) -> Option<(String, Vec<String>)> {
        let mut o = self.objects.lock().expect("lock");
        let mut s = o.sessions.get(session).cloned()?;
        let customer = match s["customer"].as_str() {
            Some(c) => c.to_string(),
            None => {
                let id = next_id(&mut o, "cus");
                let c = customer_object(&id, s["customer_email"].as_str());
                o.customers.insert(id.clone(), c);
                id
            }
        };
        let price = s["__price"].as_str().expect("session price").to_string();
        let metadata = s["__subscription_metadata"].clone();
        let sub_id = next_id(&mut o, "sub");
        let item_id = next_id(&mut o, "si");
        let (amount, currency) = self.prices[&price].clone();
        let sub = subscription_object(
            &sub_id, &item_id, &customer, &price, amount, &currency, metadata,
        );
        o.subscriptions.insert(sub_id.clone(), sub.clone());
        s["status"] = json!("complete");
        s["payment_status"] = json!("paid");
        s["customer"] = json!(customer);
        s["subscription"] = json!(sub_id);
        o.sessions.insert(session.to_string(), s.clone());
        let invoice = invoice_object(&mut o, &sub, "paid");
        let events = vec![
            make_event(&mut o, "customer.subscription.created", public(&sub)),
            make_event(&mut o, "checkout.session.completed", public(&s)),
            make_event(&mut o, "invoice.paid", invoice),
        ];
        Some((sub_id, events))
    }
}

fn next_id(o: &mut Objects, prefix: &str) -> String {
    o.next += 1;
    // Stripe ids: a prefix and 24 base62-ish characters.
    format!(
        "{prefix}_{:0>24}",
        format!("Fk{}{}", o.next, now() % 100_000)
    )
}

/// The object without the fake's private fields (`__...`).
fn public(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(m) = v.as_object_mut() {
        m.retain(|k, _| !k.starts_with("__"));
    }
    v
}

fn make_event(o: &mut Objects, kind: &str, object: Value) -> String {
    let id = next_id(o, "evt");
    let event = json!({
        "id": id,
        "object": "event",
        "api_version": API_VERSION,
        "created": now(),
        "data": {"object": object},
        "livemode": false,
        "pending_webhooks": 1,
        "request": {"id": null, "idempotency_key": null},
        "type": kind,
    });
    o.events.insert(id.clone(), event);
    id
}

fn customer_object(id: &str, email: Option<&str>) -> Value {
    json!({
        "id": id, "object": "customer",
        "address": null, "balance": 0, "created": now(), "currency": null, "default_source": null,
        "delinquent": false, "description": null, "discount": null, "email": email,
        "invoice_prefix": "FAKE0001",
        "invoice_settings": {"custom_fields": null, "default_payment_method": null, "footer": null,
                             "rendering_options": null},
        "livemode": false, "metadata": {}, "name": null, "next_invoice_sequence": 1, "phone": null,
        "preferred_locales": [], "shipping": null, "tax_exempt": "none", "test_clock": null,
    })
}

fn price_object(price: &str, amount: i64, currency: &str) -> Value {
    json!({
        "id": price, "object": "price", "active": true, "billing_scheme": "per_unit",
        "created": 1_764_547_200, "currency": currency, "custom_unit_amount": null,
        "livemode": false, "lookup_key": null, "metadata": {}, "nickname": null,
        "product": "prod_Clawdbot000000000000000",
        "recurring": {"interval": "month", "interval_count": 1, "meter": null,
                      "usage_type": "licensed", "trial_period_days": null},
        "tax_behavior": "unspecified", "tiers_mode": null, "transform_quantity": null,
        "type": "recurring", "unit_amount": amount, "unit_amount_decimal": amount.to_string(),
    })
}

/// The legacy Plan view of a recurring price, which subscription items still carry.
fn plan_object(price: &str, amount: i64, currency: &str) -> Value {
    json!({
        "id": price, "object": "plan", "active": true, "amount": amount,
        "amount_decimal": amount.to_string(), "billing_scheme": "per_unit",
        "created": 1_764_547_200, "currency": currency, "interval": "month", "interval_count": 1,
        "livemode": false, "metadata": {}, "meter": null, "nickname": null,
        "product": "prod_Clawdbot000000000000000", "tiers_mode": null, "transform_usage": null,
        "trial_period_days": null, "usage_type": "licensed",
    })
}

fn subscription_object(
    id: &str,
    item: &str,
    customer: &str,
    price: &str,
    amount: i64,
    currency: &str,
    metadata: Value,
) -> Value {
    let start = now();
    let end = start + 30 * 86_400;
    let items = json!({
        "object": "list", "has_more": false,
        "url": format!("/v1/subscription_items?subscription={id}"),
        "data": [{
            "id": item, "object": "subscription_item", "billing_thresholds": null,
            "created": start, "current_period_end": end, "current_period_start": start,
            "discounts": [], "metadata": {}, "price": price_object(price, amount, currency),
            "plan": plan_object(price, amount, currency),
            "quantity": 1, "subscription": id, "tax_rates": [],
        }],
    });
    let head = json!({
        "id": id, "object": "subscription",
        "application": null, "application_fee_percent": null,
        "automatic_tax": {"enabled": false, "liability": null, "disabled_reason": null},
        "billing_cycle_anchor": start, "billing_cycle_anchor_config": null,
        "billing_mode": {"type": "classic"}, "billing_schedules": [], "billing_thresholds": null,
        "cancel_at": null, "cancel_at_period_end": false, "canceled_at": null,
        "cancellation_details": {"comment": null, "feedback": null, "reason": null},
        "collection_method": "charge_automatically", "created": start, "currency": currency,
        "customer": customer, "customer_account": null, "days_until_due": null,
        "default_payment_method": null, "default_source": null, "default_tax_rates": [],
        "description": null, "discounts": [], "ended_at": null,
    });
    let tail = json!({
        "invoice_settings": {"account_tax_ids": null, "issuer": {"type": "self"}},
        "items": items,
        "latest_invoice": null, "livemode": false, "metadata": metadata,
        "next_pending_invoice_item_invoice": null, "on_behalf_of": null, "pause_collection": null,
        "payment_settings": {"payment_method_options": null, "payment_method_types": null,
                             "save_default_payment_method": "off"},
        "pending_invoice_item_interval": null, "pending_setup_intent": null, "pending_update": null,
        "schedule": null, "start_date": start, "status": "active", "test_clock": null,
        "transfer_data": null, "trial_end": null, "trial_settings": null, "trial_start": null,
    });
    merge(head, tail)
}

/// The fields of `b` added to the object `a` (`json!` has a recursion limit, Stripe's objects
/// have many fields).
fn merge(mut a: Value, b: Value) -> Value {
    if let (Some(a), Value::Object(b)) = (a.as_object_mut(), b) {
        a.extend(b);
    }
    a
}

fn invoice_object(o: &mut Objects, sub: &Value, status: &str) -> Value {
    let id = next_id(o, "in");
    let item = &sub["items"]["data"][0];
    let amount = item["price"]["unit_amount"].as_i64().unwrap_or(0);
    let paid = status == "paid";
    json!({
        "id": id, "object": "invoice", "account_country": "US", "account_name": "Clawdbot Cloud",
        "amount_due": amount, "amount_paid": if paid { amount } else { 0 },
        "amount_remaining": if paid { 0 } else { amount },
        "attempt_count": 1, "attempted": true, "billing_reason": "subscription_cycle",
        "collection_method": "charge_automatically", "created": now(),
        "currency": sub["currency"], "customer": sub["customer"], "livemode": false,
        "metadata": {}, "status": status,
        "parent": {"type": "subscription_details", "quote_details": null,
                   "subscription_details": {"metadata": sub["metadata"], "subscription": sub["id"]}},
        "period_end": item["current_period_end"], "period_start": item["current_period_start"],
    })
}

/// The API key check, the outage switch and the request log, shared by every endpoint: the
/// answer to give instead, if any.
fn refusal(
    s: &Shared,
    headers: &HeaderMap,
    method: &'static str,
    path: String,
    form: &[(String, String)],
) -> Option<Response> {
    let key = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if key != Some(s.secret_key.as_str()) {
        let shown = key.map(|k| {
            format!(
                "{}****{}",
                &k[..k.len().min(8)],
                &k[k.len().saturating_sub(4)..]
            )
        });
        return Some(error(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            None,
            &format!("Invalid API Key provided: {}", shown.unwrap_or_default()),
            None,
        ));
    }
    s.objects.lock().expect("lock").requests.push(Recorded {
        method,
        path,
        form: form.to_vec(),
    });
    if *s.outage.lock().expect("lock") {
        return Some(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "api_error",
            None,
            "An unknown error occurred",
            None,
        ));
    }
    None
}

fn field<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// `metadata[key]=value` pairs under `prefix` (`metadata`, `subscription_data[metadata]`).
fn metadata(form: &[(String, String)], prefix: &str) -> Value {
    let start = format!("{prefix}[");
    let map: serde_json::Map<String, Value> = form
        .iter()
        .filter_map(|(k, v)| {
            let key = k.strip_prefix(&start)?.strip_suffix(']')?;
            Some((key.to_string(), json!(v)))
        })
        .collect();
    Value::Object(map)
}

async fn create_session(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    if let Some(r) = refusal(&s, &headers, "POST", "/v1/checkout/sessions".into(), &form) {
        return r;
    }
    let Some(mode) = field(&form, "mode") else {
        return missing("mode");
    };
    let Some(success_url) = field(&form, "success_url") else {
        return missing("success_url");
    };
    let Some(price) = field(&form, "line_items[0][price]") else {
        return missing("line_items");
    };
    if !s.prices.contains_key(price) {
        return no_such("price", price, "line_items[0][price]");
    }
    let mut o = s.objects.lock().expect("lock");
    let customer = field(&form, "customer").map(str::to_string);
    if let Some(c) = &customer
        && !o.customers.contains_key(c)
    {
        return no_such("customer", c, "customer");
    }
    let id = format!("cs_test_{}", next_id(&mut o, "a").trim_start_matches("a_"));
    let (amount, currency) = s.prices[price].clone();
    let session = json!({
        "id": id, "object": "checkout.session",
        "adaptive_pricing": null, "after_expiration": null, "allow_promotion_codes": null,
        "amount_subtotal": amount, "amount_total": amount,
        "automatic_tax": {"enabled": false, "liability": null, "status": null, "provider": null},
        "billing_address_collection": null, "cancel_url": field(&form, "cancel_url"),
        "client_reference_id": field(&form, "client_reference_id"), "client_secret": null,
        "consent": null, "consent_collection": null, "created": now(), "currency": currency,
        "custom_fields": [],
        "custom_text": {"after_submit": null, "shipping_address": null, "submit": null,
                        "terms_of_service_acceptance": null},
        "customer": customer, "customer_creation": if customer.is_some() { Value::Null } else { json!("always") },
        "customer_details": null, "customer_email": field(&form, "customer_email"),
    });
    let rest = json!({
        "expires_at": now() + 86_400, "invoice": null, "invoice_creation": null, "livemode": false,
        "locale": null, "metadata": metadata(&form, "metadata"), "mode": mode,
        "payment_intent": null, "payment_link": null, "payment_method_collection": "always",
        "payment_method_configuration_details": null, "payment_method_options": {},
        "payment_method_types": ["card"], "payment_status": "unpaid",
    });
    let last = json!({
        "phone_number_collection": {"enabled": false}, "recovered_from": null,
        "saved_payment_method_options": null, "setup_intent": null,
        "shipping_address_collection": null, "shipping_cost": null, "shipping_options": [],
        "status": "open", "submit_type": null, "subscription": null, "success_url": success_url,
        "total_details": {"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0},
        "ui_mode": "hosted", "url": format!("{}/pay/{id}", s.base), "wallet_options": null,
    });
    let session = merge(merge(session, rest), last);
    let mut stored = session.clone();
    stored["__price"] = json!(price);
    stored["__subscription_metadata"] = metadata(&form, "subscription_data[metadata]");
    o.sessions.insert(id, stored);
    Json(session).into_response()
}

async fn get_subscription(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Some(r) = refusal(&s, &headers, "GET", format!("/v1/subscriptions/{id}"), &[]) {
        return r;
    }
    match s.objects.lock().expect("lock").subscriptions.get(&id) {
        Some(sub) => Json(sub.clone()).into_response(),
        None => no_such("subscription", &id, "id"),
    }
}

async fn update_subscription(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    if let Some(r) = refusal(
        &s,
        &headers,
        "POST",
        format!("/v1/subscriptions/{id}"),
        &form,
    ) {
        return r;
    }
    let mut o = s.objects.lock().expect("lock");
    let Some(mut sub) = o.subscriptions.get(&id).cloned() else {
        return no_such("subscription", &id, "id");
    };
    if sub["status"] == "canceled" {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            None,
            "A canceled subscription can only update its cancellation_details and metadata.",
            None,
        );
    }
    if let Some(price) = field(&form, "items[0][price]") {
        let Some((amount, currency)) = s.prices.get(price).cloned() else {
            return no_such("price", price, "items[0][price]");
        };
        let item = &mut sub["items"]["data"][0];
        if field(&form, "items[0][id]") != item["id"].as_str() {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                Some("resource_missing"),
                "No such subscription item",
                Some("items[0][id]"),
            );
        }
        item["price"] = price_object(price, amount, &currency);
    }
    if let Some(c) = field(&form, "cancel_at_period_end") {
        let cancel = c == "true";
        sub["cancel_at_period_end"] = json!(cancel);
        sub["cancel_at"] = if cancel {
            sub["items"]["data"][0]["current_period_end"].clone()
        } else {
            Value::Null
        };
    }
    o.subscriptions.insert(id, sub.clone());
    make_event(&mut o, "customer.subscription.updated", sub.clone());
    Json(sub).into_response()
}

/// `DELETE /v1/subscriptions/{id}`: cancels at once (optional form body: `invoice_now`,
/// `prorate`), and makes the `customer.subscription.deleted` event.
async fn cancel_subscription(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let form: Vec<(String, String)> = url::form_urlencoded::parse(&body).into_owned().collect();
    if let Some(r) = refusal(
        &s,
        &headers,
        "DELETE",
        format!("/v1/subscriptions/{id}"),
        &form,
    ) {
        return r;
    }
    let mut o = s.objects.lock().expect("lock");
    let Some(mut sub) = o.subscriptions.get(&id).cloned() else {
        return no_such("subscription", &id, "id");
    };
    if sub["status"] == "canceled" {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            None,
            "A canceled subscription can only update its cancellation_details and metadata.",
            None,
        );
    }
    sub["status"] = json!("canceled");
    sub["canceled_at"] = json!(now());
    sub["ended_at"] = json!(now());
    sub["cancel_at_period_end"] = json!(false);
    sub["cancel_at"] = Value::Null;
    o.subscriptions.insert(id, sub.clone());
    make_event(&mut o, "customer.subscription.deleted", sub.clone());
    Json(sub).into_response()
}

async fn create_portal(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    if let Some(r) = refusal(
        &s,
        &headers,
        "POST",
        "/v1/billing_portal/sessions".into(),
        &form,
    ) {
        return r;
    }
    let Some(customer) = field(&form, "customer") else {
        return missing("customer");
    };
    let mut o = s.objects.lock().expect("lock");
    if !o.customers.contains_key(customer) {
        return no_such("customer", customer, "customer");
    }
    let id = next_id(&mut o, "bps");
    Json(json!({
        "id": id, "object": "billing_portal.session",
        "configuration": "bpc_Clawdbot0000000000000000", "created": now(), "customer": customer,
        "customer_account": null, "flow": null, "livemode": false, "locale": null,
        "on_behalf_of": null, "return_url": field(&form, "return_url"),
        "url": format!("{}/p/session/{id}", s.base),
    }))
    .into_response()
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn html(status: StatusCode, title: &str, body: &str) -> Response {
    (
        status,
        [(axum::http::header::CONTENT_TYPE, "text/html; charset=utf-8")],
        format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
             <title>{title}</title></head><body><main>{body}</main></body></html>"
        ),
    )
        .into_response()
}

/// Stripe Checkout's hosted page (the Checkout Session's `url`), as a plain form: no script.
async fn checkout_page(State(s): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    let Some(session) = s.objects.lock().expect("lock").sessions.get(&id).cloned() else {
        return html(
            StatusCode::NOT_FOUND,
            "Not found",
            "<h1>No such checkout session</h1>",
        );
    };
    if session["status"] != "open" {
        return html(
            StatusCode::OK,
            "Paid",
            "<h1 id=\"paid\">This checkout session is already complete.</h1>",
        );
    }
    let amount = session["amount_total"].as_i64().unwrap_or(0);
    let currency = session["currency"].as_str().unwrap_or("usd").to_uppercase();
    let email = session["customer_email"].as_str().unwrap_or("");
    let cancel = session["cancel_url"].as_str().unwrap_or("");
    html(
        StatusCode::OK,
        "Checkout (local Stripe)",
        &format!(
            "<h1>Pay {}.{:02} {currency} per month</h1>\
             <p id=\"email\">{}</p>\
             <form method=\"post\" action=\"/pay/{id}\">\
             <label for=\"card\">Card number</label> \
             <input id=\"card\" name=\"card\" value=\"4242 4242 4242 4242\" autocomplete=\"off\">\
             <button type=\"submit\" id=\"pay\">Pay</button></form>\
             <p><a id=\"back\" href=\"{}\">Cancel and go back</a></p>",
            amount / 100,
            amount % 100,
            escape(email),
            escape(cancel),
        ),
    )
}

/// The customer presses Pay: the session completes, its events are delivered to the webhook
/// signed as Stripe signs them (in Stripe's order), and the browser goes to the success URL
/// with the session's id in place of `{CHECKOUT_SESSION_ID}`. Real Stripe delivers events
/// independently of the redirect; delivering first makes the page after it deterministic.
async fn pay(State(s): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    let open = s
        .objects
        .lock()
        .expect("lock")
        .sessions
        .get(&id)
        .map(|v| v["status"] == "open");
    match open {
        None => {
            return html(
                StatusCode::NOT_FOUND,
                "Not found",
                "<h1>No such checkout session</h1>",
            );
        }
        Some(false) => return checkout_page(State(s), Path(id)).await,
        Some(true) => {}
    }
    if s.webhook_url.lock().expect("lock").is_none() {
        return html(
            StatusCode::INTERNAL_SERVER_ERROR,
            "No webhook",
            "<h1>No webhook endpoint is set (set_webhook_url)</h1>",
        );
    }
    let Some((_, events)) = s.complete_checkout(&id) else {
        return html(
            StatusCode::NOT_FOUND,
            "Not found",
            "<h1>No such checkout session</h1>",
        );
    };
    for event in &events {
        match s.deliver(event).await {
            Ok(status) if status.is_success() => {}
            outcome => {
                return html(
                    StatusCode::BAD_GATEWAY,
                    "Webhook failed",
                    &format!(
                        "<h1 id=\"webhook-failed\">The webhook endpoint refused {}: {}</h1>",
                        escape(event),
                        escape(&format!("{outcome:?}")),
                    ),
                );
            }
        }
    }
    let success = s.objects.lock().expect("lock").sessions[&id]["success_url"]
        .as_str()
        .unwrap_or("/")
        .replace("{CHECKOUT_SESSION_ID}", &id);
    axum::response::Redirect::to(&success).into_response()
}
