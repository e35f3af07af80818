//! Plans and what each one allows. The defaults here are what the operator and router use
//! when an admin sets nothing else; the Helm chart can override every figure.

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

/// What a plan allows. Enforced by the operator (config it renders, specs it refuses) and by
/// the router (quotas).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
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
            },
            Plan::Pro => PlanPolicy {
                default_runtime: Runtime::Openclaw,
                allows_own_key: true,
                allows_web_search: true,
                web_searches_per_day: 200,
                messages_per_day: 2_000,
                max_storage_bytes: 10 * GIB,
                background_jobs: true,
            },
            Plan::Team => PlanPolicy {
                default_runtime: Runtime::Openclaw,
                allows_own_key: true,
                allows_web_search: true,
                web_searches_per_day: 1_000,
                messages_per_day: 10_000,
                max_storage_bytes: 50 * GIB,
                background_jobs: true,
            },
        }
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
    fn free_plan_is_the_most_restricted() {
        let free = PlanPolicy::default_for(Plan::Free);
        let pro = PlanPolicy::default_for(Plan::Pro);
        assert!(!free.allows_own_key && pro.allows_own_key);
        assert!(free.messages_per_day < pro.messages_per_day);
        assert!(free.max_storage_bytes < pro.max_storage_bytes);
    }
}
