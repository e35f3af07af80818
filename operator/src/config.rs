//! Operator configuration: command-line flags with environment fallbacks, plus plan policies
//! from an optional YAML file (the Helm chart renders it from its values).

use std::collections::BTreeMap;
use std::path::PathBuf;

use clawdbot_api::plan::Runtime;
use clawdbot_api::{Plan, PlanPolicy, Plans};

use crate::error::{Error, Result};

#[derive(Clone, Debug, clap::Parser)]
#[command(
    name = "operator",
    about = "Clawdbot Cloud operator: UserWorkspace and ModelEndpoint controller"
)]
pub struct Cli {
    /// Watch only this namespace (all namespaces when unset).
    #[arg(long, env = "WATCH_NAMESPACE")]
    pub watch_namespace: Option<String>,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: String,
    /// Namespace of the leader-election Lease (the operator's own namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub lease_namespace: String,
    /// Name of the leader-election Lease.
    #[arg(long, env = "LEASE_NAME", default_value = "clawdbot-operator")]
    pub lease_name: String,
    /// Identity in the Lease (the pod name).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Seconds a leader's lease is valid without renewal.
    #[arg(long, env = "LEASE_DURATION_SECONDS", default_value_t = 15)]
    pub lease_duration_seconds: u64,
    /// Reconciles running at once per controller.
    #[arg(long, env = "CONCURRENCY", default_value_t = 32)]
    pub concurrency: u16,
    /// Image of the lite agent.
    #[arg(
        long,
        env = "LITE_IMAGE",
        default_value = "ghcr.io/clawdbot/agent-lite:0.1.0"
    )]
    pub lite_image: String,
    /// Image of the OpenClaw runtime.
    #[arg(
        long,
        env = "OPENCLAW_IMAGE",
        default_value = "ghcr.io/clawdbot/agent-openclaw:2026.9.6"
    )]
    pub openclaw_image: String,
    /// Image of vLLM model servers.
    #[arg(long, env = "VLLM_IMAGE", default_value = "vllm/vllm-openai:v0.11.0")]
    pub vllm_image: String,
    /// Image of Ollama model servers.
    #[arg(long, env = "OLLAMA_IMAGE", default_value = "ollama/ollama:0.12.6")]
    pub ollama_image: String,
    /// Namespace of the router; tenant NetworkPolicies admit router pods from it only.
    #[arg(long, env = "ROUTER_NAMESPACE", default_value = "clawdbot-system")]
    pub router_namespace: String,
    /// SearXNG base URL for the web search tool (feature off when unset).
    #[arg(long, env = "WEB_SEARCH_URL")]
    pub web_search_url: Option<String>,
    /// OpenAI API base URL for tenants with their own key.
    #[arg(
        long,
        env = "OPENAI_BASE_URL",
        default_value = "https://api.openai.com/v1"
    )]
    pub openai_base_url: String,
    /// Anthropic API base URL for tenants with their own key.
    #[arg(
        long,
        env = "ANTHROPIC_BASE_URL",
        default_value = "https://api.anthropic.com"
    )]
    pub anthropic_base_url: String,
    /// How the URLs the operator writes (a workspace's `status.url`, the model endpoint an
    /// agent calls) name a Service: `dns` (`<service>.<namespace>.svc`, the default, for a
    /// cluster with DNS) or `cluster-ip` (the Service's ClusterIP, for a cluster without DNS
    /// such as the development node, and a router running outside the cluster).
    #[arg(long, env = "SERVICE_ADDRESSES", value_enum, default_value_t = ServiceAddresses::Dns)]
    pub service_addresses: ServiceAddresses,
    /// YAML file mapping plan names to policy overrides (see `PlanPolicy`).
    #[arg(long, env = "PLANS_FILE")]
    pub plans_file: Option<PathBuf>,
}

/// What the pure builders need to know beyond the object itself.
#[derive(Clone, Debug, PartialEq)]
pub struct OperatorConfig {
    pub lite_image: String,
    pub openclaw_image: String,
    pub vllm_image: String,
    pub ollama_image: String,
    pub router_namespace: String,
    pub web_search_url: Option<String>,
    pub openai_base_url: String,
    pub anthropic_base_url: String,
    pub plans: BTreeMap<Plan, PlanPolicy>,
    pub service_addresses: ServiceAddresses,
}

/// How a Service is named in the URLs the operator writes (`--service-addresses`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ServiceAddresses {
    /// `http://<service>.<namespace>.svc:<port>`: needs cluster DNS (CoreDNS).
    #[default]
    Dns,
    /// `http://<clusterIP>:<port>`: reachable through kube-proxy from every pod and from the
    /// node itself, with no DNS. Stable for the Service's life; a recreated Service gets a
    /// new address, which the next reconcile writes.
    ClusterIp,
}

impl Default for OperatorConfig {
    fn default() -> Self {
        OperatorConfig {
            lite_image: "ghcr.io/clawdbot/agent-lite:0.1.0".into(),
            openclaw_image: "ghcr.io/clawdbot/agent-openclaw:2026.9.6".into(),
            vllm_image: "vllm/vllm-openai:v0.11.0".into(),
            ollama_image: "ollama/ollama:0.12.6".into(),
            router_namespace: "clawdbot-system".into(),
            web_search_url: None,
            openai_base_url: "https://api.openai.com/v1".into(),
            anthropic_base_url: "https://api.anthropic.com".into(),
            plans: Plans::default().into_map(),
            service_addresses: ServiceAddresses::Dns,
        }
    }
}

impl OperatorConfig {
    pub fn from_cli(cli: &Cli) -> Result<Self> {
        let plans = Plans::load(cli.plans_file.as_deref())
            .map_err(|e| Error::Config(format!("plans file {e}")))?
            .into_map();
        Ok(OperatorConfig {
            lite_image: cli.lite_image.clone(),
            openclaw_image: cli.openclaw_image.clone(),
            vllm_image: cli.vllm_image.clone(),
            ollama_image: cli.ollama_image.clone(),
            router_namespace: cli.router_namespace.clone(),
            web_search_url: cli.web_search_url.clone(),
            openai_base_url: cli.openai_base_url.clone(),
            anthropic_base_url: cli.anthropic_base_url.clone(),
            plans,
            service_addresses: cli.service_addresses,
        })
    }

    /// The policy of a plan (every plan has one).
    pub fn policy(&self, plan: Plan) -> PlanPolicy {
        self.plans
            .get(&plan)
            .cloned()
            .unwrap_or_else(|| PlanPolicy::default_for(plan))
    }

    /// The image of a runtime.
    pub fn runtime_image(&self, runtime: Runtime) -> &str {
        match runtime {
            Runtime::Lite => &self.lite_image,
            Runtime::Openclaw => &self.openclaw_image,
        }
    }
}

/// Parses a plans file: `{free: {...}, pro: {...}}`, each entry overriding the built-in
/// policy's fields it names (`clawdbot_api::Plans`, which the router reads too).
pub fn parse_plans(text: &str) -> Result<BTreeMap<Plan, PlanPolicy>> {
    Plans::parse(text)
        .map(Plans::into_map)
        .map_err(|e| Error::Config(format!("plans file: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_file_overrides_one_plan() {
        let plans = parse_plans(
            "free:\n  defaultRuntime: openclaw\n  allowsOwnKey: true\n  allowsWebSearch: false\n  webSearchesPerDay: 0\n  messagesPerDay: 5\n  maxStorageBytes: 1000\n  backgroundJobs: false\n",
        )
        .unwrap();
        assert_eq!(plans[&Plan::Free].messages_per_day, 5);
        assert_eq!(plans[&Plan::Free].default_runtime, Runtime::Openclaw);
        assert!(
            parse_plans("gold: {}")
                .unwrap_err()
                .to_string()
                .contains("plans file")
        );
    }
}
