//! Plans and what each one allows: the one definition that the operator, the router (quotas,
//! the API's checks) and billing (prices, Stripe price ids) all read. The defaults here are what
//! they use when an admin sets nothing else; a plans file (`--plans-file`, `PLANS_FILE`, which
//! the Helm chart renders) overrides any figure of any plan.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The commercial plan of a tenant.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Plan {
    #[default]
    Free,
    Pro,
    Team,
}

impl Plan {
    pub const ALL: [Plan; 3] = [Plan::Free, Plan::Pro, Plan::Team];

    pub fn as_str(self) -> &'static str {
        match self {
            Plan::Free => "free",
            Plan::Pro => "pro",
            Plan::Team => "team",
        }
    }
}

impl std::fmt::Display for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Plan {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "free" => Ok(Plan::Free),
            "pro" => Ok(Plan::Pro),
            "team" => Ok(Plan::Team),
            other => Err(format!(
                "unknown plan {other:?} (expected free, pro or team)"
            )),
        }
    }
}

/// The agent runtime of a tenant pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    /// The real Clawdbot: the OpenClaw gateway (about 1 GB per tenant).
    Openclaw,
    /// The lean Rust agent (a few tens of MB), for dense tenants.
    Lite,
}

impl Runtime {
    pub fn as_str(self) -> &'static str {
        match self {
            Runtime::Openclaw => "openclaw",
            Runtime::Lite => "lite",
        }
    }
}

/// What a plan allows and costs. Enforced by the operator (config it renders, specs it
/// refuses), by the router (quotas) and by the API (channels, keys, models); sold by billing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PlanPolicy {
    /// Runtime used when a UserWorkspace does not name one.
    pub default_runtime: Runtime,
    /// Whether the user may bring their own OpenAI or Anthropic key.
    pub allows_own_key: bool,
    /// Whether the web search tool may be enabled.
    pub allows_web_search: bool,
    /// Web searches per day (0: none).
    pub web_searches_per_day: u32,
    /// Messages per day through the router.
    pub messages_per_day: u32,
    /// Largest tenant volume in bytes.
    pub max_storage_bytes: u64,
    /// Whether OpenClaw's own background jobs (heartbeat, memory "dreaming") may run. They call
    /// the model on their own, so a free tenant that sleeps must cost no model time.
    pub background_jobs: bool,
    /// Price per month in the currency's smallest unit (cents); 0 for a free plan.
    pub monthly_price_cents: u32,
    /// ISO 4217 currency of the price, lower case as Stripe writes it.
    pub currency: String,
    /// The Stripe Price (`price_...`) a subscription to this plan is made of; a plan without
    /// one cannot be bought (free, or not sold yet).
    pub stripe_price_id: Option<String>,
    /// Chat accounts (Telegram, WhatsApp, Discord, web) that may be connected at once.
    pub max_channels: u32,
    /// Platform models the plan may use, by name; `*` allows every platform model.
    pub platform_models: Vec<String>,
    /// What tokens cost on this plan, by model name; `*` prices every model not named. Usage
    /// (`GET /billing/usage`) shows each model's cost from these; a model with no price and no
    /// `*` shows no cost.
    #[serde(default)]
    pub model_prices: BTreeMap<String, TokenPrice>,
}

/// The price of a model's tokens, in the plan's currency's smallest unit (cents) per million
/// tokens: providers quote per million, and whole cents per million keep it an integer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TokenPrice {
    pub prompt_cents_per_million: u32,
    pub completion_cents_per_million: u32,
}

impl TokenPrice {
    /// The cost of `prompt` and `completion` tokens, in cents (fractions kept: a month of a
    /// small model is often under a cent).
    pub fn cost_cents(&self, prompt: u64, completion: u64) -> f64 {
        (prompt as f64 * f64::from(self.prompt_cents_per_million)
            + completion as f64 * f64::from(self.completion_cents_per_million))
            / 1_000_000.0
    }
}

/// The built-in price of platform models' tokens (every plan, every model): what serving a
/// small open model on our own nodes costs, rounded up.
fn default_model_prices() -> BTreeMap<String, TokenPrice> {
    BTreeMap::from([(
        "*".to_string(),
        TokenPrice {
            prompt_cents_per_million: 10,
            completion_cents_per_million: 40,
        },
    )])
}

impl PlanPolicy {
    /// The built-in policy of a plan.
    pub fn default_for(plan: Plan) -> Self {
        const GIB: u64 = 1024 * 1024 * 1024;
        match plan {
            Plan::Free => PlanPolicy {
                default_runtime: Runtime::Lite,
                allows_own_key: false,
                allows_web_search: false,
                web_searches_per_day: 0,
                messages_per_day: 100,
                max_storage_bytes: GIB,
                background_jobs: false,
                monthly_price_cents: 0,
                currency: "usd".into(),
                stripe_price_id: None,
                max_channels: 2,
                platform_models: vec!["*".into()],
                model_prices: default_model_prices(),
            },
            Plan::Pro => PlanPolicy {
                default_runtime: Runtime::Openclaw,
                allows_own_key: true,
                allows_web_search: true,
                web_searches_per_day: 200,
                messages_per_day: 2_000,
                max_storage_bytes: 10 * GIB,
                background_jobs: true,
                monthly_price_cents: 1_200,
                currency: "usd".into(),
                stripe_price_id: None,
                max_channels: 5,
                platform_models: vec!["*".into()],
                model_prices: default_model_prices(),
            },
            Plan::Team => PlanPolicy {
                default_runtime: Runtime::Openclaw,
                allows_own_key: true,
                allows_web_search: true,
                web_searches_per_day: 1_000,
                messages_per_day: 10_000,
                max_storage_bytes: 50 * GIB,
                background_jobs: true,
                monthly_price_cents: 4_900,
                currency: "usd".into(),
                stripe_price_id: None,
                max_channels: 20,
                platform_models: vec!["*".into()],
                model_prices: default_model_prices(),
            },
        }
    }

    /// The price of `model`'s tokens: its own, else the `*` price, else none.
    pub fn price_of(&self, model: &str) -> Option<&TokenPrice> {
        self.model_prices
            .get(model)
            .or_else(|| self.model_prices.get("*"))
    }

    /// Whether the plan may use the platform model `name`.
    pub fn allows_platform_model(&self, name: &str) -> bool {
        self.platform_models.iter().any(|m| m == "*" || m == name)
    }
}

/// Every plan's policy: the built-in defaults with the plans file's overrides. Cheap to clone
/// behind an `Arc`; read-only once loaded.
#[derive(Clone, Debug, PartialEq)]
pub struct Plans(BTreeMap<Plan, PlanPolicy>);

impl Default for Plans {
    fn default() -> Self {
        Plans(
            Plan::ALL
                .iter()
                .map(|p| (*p, PlanPolicy::default_for(*p)))
                .collect(),
        )
    }
}

impl Plans {
    /// Parses a plans file (YAML or JSON): `{free: {...}, pro: {...}}`. Each plan's entry
    /// overrides only the fields it names, so a file written before a field existed still
    /// means what it meant; an unknown plan or field is an error naming it.
    pub fn parse(text: &str) -> Result<Self, String> {
        let overrides: BTreeMap<Plan, serde_json::Map<String, serde_json::Value>> =
            serde_yaml::from_str(text).map_err(|e| e.to_string())?;
        let mut plans = Plans::default();
        for (plan, fields) in overrides {
            let mut merged = match serde_json::to_value(plans.policy(plan)) {
                Ok(serde_json::Value::Object(m)) => m,
                _ => return Err(format!("{plan}: the built-in policy is not an object")),
            };
            merged.extend(fields);
            let policy = serde_json::from_value(serde_json::Value::Object(merged))
                .map_err(|e| format!("{plan}: {e}"))?;
            plans.0.insert(plan, policy);
        }
        Ok(plans)
    }

    /// Reads and parses a plans file; `None` means the built-in defaults.
    pub fn load(path: Option<&std::path::Path>) -> Result<Self, String> {
        let Some(path) = path else {
            return Ok(Plans::default());
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("reading {}: {e}", path.display()))?;
        Plans::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The policy of a plan (every plan has one).
    pub fn policy(&self, plan: Plan) -> &PlanPolicy {
        self.0
            .get(&plan)
            .expect("Plans holds every plan: built from Plan::ALL")
    }

    /// The plan sold at a Stripe price, if any.
    pub fn by_stripe_price(&self, price: &str) -> Option<Plan> {
        self.0
            .iter()
            .find(|(_, p)| p.stripe_price_id.as_deref() == Some(price))
            .map(|(plan, _)| *plan)
    }

    pub fn iter(&self) -> impl Iterator<Item = (Plan, &PlanPolicy)> {
        self.0.iter().map(|(plan, p)| (*plan, p))
    }

    pub fn into_map(self) -> BTreeMap<Plan, PlanPolicy> {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_round_trips_through_its_name() {
        for plan in Plan::ALL {
            assert_eq!(plan.as_str().parse::<Plan>(), Ok(plan));
        }
        assert!(
            "gold"
                .parse::<Plan>()
                .unwrap_err()
                .contains("free, pro or team")
        );
    }

    #[test]
    fn a_plans_file_overrides_only_what_it_names() {
        let plans = Plans::parse(
            "pro:\n  stripePriceId: price_pro\n  maxChannels: 7\nfree:\n  platformModels: [small]\n",
        )
        .unwrap();
        let pro = plans.policy(Plan::Pro);
        assert_eq!(pro.max_channels, 7);
        assert_eq!(pro.stripe_price_id.as_deref(), Some("price_pro"));
        assert_eq!(
            pro.messages_per_day,
            PlanPolicy::default_for(Plan::Pro).messages_per_day
        );
        assert_eq!(plans.by_stripe_price("price_pro"), Some(Plan::Pro));
        assert_eq!(plans.by_stripe_price("price_other"), None);
        let free = plans.policy(Plan::Free);
        assert!(free.allows_platform_model("small") && !free.allows_platform_model("big"));
        assert!(plans.policy(Plan::Team).allows_platform_model("big"));
    }

    #[test]
    fn a_plans_file_with_an_unknown_plan_or_field_is_refused_by_name() {
        assert!(Plans::parse("gold: {}").unwrap_err().contains("gold"));
        assert!(
            Plans::parse("pro: {maxChanels: 3}")
                .unwrap_err()
                .contains("maxChanels")
        );
        assert!(
            Plans::parse("pro: {maxChannels: -1}")
                .unwrap_err()
                .starts_with("pro:")
        );
    }

    #[test]
    fn a_model_is_priced_by_its_own_price_else_the_star_price() {
        let plans = Plans::parse(
            "pro:\n  modelPrices:\n    big: {promptCentsPerMillion: 300, completionCentsPerMillion: 1200}\n    \"*\": {promptCentsPerMillion: 10, completionCentsPerMillion: 20}\nfree:\n  modelPrices: {}\n",
        )
        .unwrap();
        let pro = plans.policy(Plan::Pro);
        let big = pro.price_of("big").unwrap();
        assert_eq!(big.cost_cents(1_000_000, 500_000), 300.0 + 600.0);
        assert_eq!(
            pro.price_of("small").unwrap().cost_cents(2_000_000, 0),
            20.0
        );
        assert_eq!(plans.policy(Plan::Free).price_of("big"), None);
        assert!(
            plans
                .policy(Plan::Team)
                .price_of("any")
                .is_some_and(|p| p.completion_cents_per_million > 0),
            "the built-in prices every model"
        );
        assert!(Plans::parse("pro: {modelPrices: {m: {promptCents: 1}}}").is_err());
    }

    #[test]
    fn free_plan_is_the_most_restricted() {
        let free = PlanPolicy::default_for(Plan::Free);
        let pro = PlanPolicy::default_for(Plan::Pro);
        assert!(!free.allows_own_key && pro.allows_own_key);
        assert!(free.messages_per_day < pro.messages_per_day);
        assert!(free.max_storage_bytes < pro.max_storage_bytes);
        assert!(free.max_channels < pro.max_channels);
        assert!(free.monthly_price_cents == 0 && pro.monthly_price_cents > 0);
    }
}
