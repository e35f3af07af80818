//! `UserWorkspace`: one tenant, reconciled into one dedicated agent pod and its objects.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::model_endpoint::ModelEndpointSpec;
use crate::plan::{Plan, PlanPolicy, Runtime};

/// A tenant of Clawdbot Cloud. The operator turns it into a ServiceAccount, ConfigMap,
/// gateway-token Secret, PVC, agent Deployment, Service and NetworkPolicy, all owned by it.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "clawdbot.io",
    version = "v1alpha1",
    kind = "UserWorkspace",
    plural = "userworkspaces",
    shortname = "uws",
    namespaced,
    status = "UserWorkspaceStatus",
    derive = "PartialEq",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Plan","type":"string","jsonPath":".spec.plan"}"#,
    printcolumn = r#"{"name":"Model","type":"string","jsonPath":".spec.model.name"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct UserWorkspaceSpec {
    /// Id of the owning user in the accounts database. Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("ownerId is immutable"))]
    #[schemars(length(min = 1, max = 128))]
    pub owner_id: String,
    /// Commercial plan: `free`, `pro` or `team`. Decides the default runtime, quotas, whether
    /// the user may bring their own provider key and use web search.
    #[serde(default)]
    pub plan: Plan,
    /// Agent runtime: `openclaw` (the full Clawdbot) or `lite` (the lean Rust agent). Defaults
    /// to the plan's runtime in operator config.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<Runtime>,
    /// Agent image and version. Defaults to the operator's pinned image for the runtime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<AgentImage>,
    /// CPU and memory of the agent container. Defaults follow the runtime's measured footprint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<TenantResources>,
    /// The tenant's persistent volume (sessions, memory, skills).
    #[serde(default)]
    pub storage: StorageSpec,
    /// Which model the agent talks to.
    pub model: WorkspaceModel,
    /// Secret in the same namespace holding the user's own provider keys (`OPENAI_API_KEY`,
    /// `ANTHROPIC_API_KEY`). Required when `model.provider` is `openai` or `anthropic`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys_secret_ref: Option<LocalObjectRef>,
    /// Optional features.
    #[serde(default)]
    pub features: Features,
    /// Scales the agent to zero and keeps it there, whatever the activity.
    #[serde(default)]
    pub suspend: bool,
    /// Idle time after which the agent is hibernated (scaled to zero until the next message),
    /// as a duration such as `30m` or `2h`. `0` or unset: never hibernate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^[0-9]+(s|m|h|d)?$')").message("idleTimeout must be a duration such as 30m, 2h or 1d"))]
    pub idle_timeout: Option<String>,
}

/// Container image of the agent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentImage {
    /// Image repository, for example `ghcr.io/clawdbot/agent-lite`.
    pub repository: String,
    /// Image tag (the agent version).
    pub tag: String,
}

impl AgentImage {
    pub fn reference(&self) -> String {
        format!("{}:{}", self.repository, self.tag)
    }
}

/// CPU and memory amounts.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComputeResources {
    /// CPU, for example `250m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Quantity>,
    /// Memory, for example `256Mi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Quantity>,
}

/// Requests and limits of the agent container.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantResources {
    /// Guaranteed CPU and memory (what the scheduler reserves).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<ComputeResources>,
    /// Upper bounds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<ComputeResources>,
}

/// The tenant's persistent volume.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// Volume size, for example `1Gi`. May grow, never shrink, and never past the plan's limit.
    #[serde(default = "default_storage_size")]
    pub size: Quantity,
    /// Storage class; the cluster default when unset. Immutable once the volume exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    /// What happens to the volume when the workspace is deleted: `Retain` keeps it (detached
    /// from the workspace, for a later export or restore), `Delete` removes it.
    #[serde(default)]
    pub retention: RetentionPolicy,
}

impl Default for StorageSpec {
    fn default() -> Self {
        StorageSpec {
            size: default_storage_size(),
            storage_class_name: None,
            retention: RetentionPolicy::default(),
        }
    }
}

fn default_storage_size() -> Quantity {
    Quantity("1Gi".to_string())
}

/// Fate of the tenant volume on deletion.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum RetentionPolicy {
    #[default]
    Retain,
    Delete,
}

/// Where the agent's model comes from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ModelProvider {
    /// A platform ModelEndpoint (shared by reference, or dedicated).
    #[default]
    Platform,
    /// OpenAI with the user's own key.
    Openai,
    /// Anthropic with the user's own key.
    Anthropic,
}

impl ModelProvider {
    pub fn as_str(self) -> &'static str {
        match self {
            ModelProvider::Platform => "platform",
            ModelProvider::Openai => "openai",
            ModelProvider::Anthropic => "anthropic",
        }
    }
    /// The key in the user's keys Secret this provider needs, if any.
    pub fn key_name(self) -> Option<&'static str> {
        match self {
            ModelProvider::Platform => None,
            ModelProvider::Openai => Some(crate::names::OPENAI_API_KEY),
            ModelProvider::Anthropic => Some(crate::names::ANTHROPIC_API_KEY),
        }
    }
}

/// The model of a workspace.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkspaceModel {
    /// `platform` (a ModelEndpoint), `openai` or `anthropic` (the user's own key).
    #[serde(default)]
    pub provider: ModelProvider,
    /// Model name as the provider knows it, for example `qwen2.5-7b-instruct` or `gpt-4o-mini`.
    #[schemars(length(min = 1, max = 200))]
    pub name: String,
    /// A shared ModelEndpoint in the same namespace. With `provider: platform`, exactly one of
    /// `endpointRef` and `dedicated` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_ref: Option<LocalObjectRef>,
    /// A model server for this workspace alone; the operator creates a ModelEndpoint owned by
    /// the workspace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedicated: Option<ModelEndpointSpec>,
    /// Sampling temperature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 2.0))]
    pub temperature: Option<f64>,
    /// Most tokens in one reply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 131072))]
    pub max_tokens: Option<u32>,
    /// Context window of the model in tokens; history is trimmed to fit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 512, max = 2097152))]
    pub context_window: Option<u32>,
}

/// A reference to an object in the same namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LocalObjectRef {
    /// Name of the object.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// Optional features of the agent.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Features {
    /// Web search tool (through the platform's SearXNG), counted against the plan's limit.
    #[serde(default)]
    pub web_search: bool,
}

/// Lifecycle phase of a workspace.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Phase {
    #[default]
    Pending,
    Provisioning,
    Running,
    Hibernated,
    Failed,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Provisioning => "Provisioning",
            Phase::Running => "Running",
            Phase::Hibernated => "Hibernated",
            Phase::Failed => "Failed",
        }
    }
    pub const ALL: [Phase; 5] = [
        Phase::Pending,
        Phase::Provisioning,
        Phase::Running,
        Phase::Hibernated,
        Phase::Failed,
    ];
}

/// Observed state of a workspace. Written by the operator alone.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserWorkspaceStatus {
    /// Generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Pending, Provisioning, Running, Hibernated or Failed.
    #[serde(default)]
    pub phase: Phase,
    /// Ready, Provisioned, ModelReady and Hibernated.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
    /// In-cluster base URL of the agent's gateway, which the router calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Runtime in effect (after the plan default was applied).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<Runtime>,
    /// Time of the last message the router reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_activity_time: Option<Time>,
    /// When the workspace was last hibernated; cleared when it wakes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hibernated_since: Option<Time>,
}

/// Schema of a `conditions` list: a list-map keyed on `type`, as the API conventions ask, so
/// server-side apply merges conditions by type.
pub fn conditions_schema(generator: &mut schemars::generate::SchemaGenerator) -> schemars::Schema {
    let mut schema = generator.subschema_for::<Vec<Condition>>();
    schema.insert("x-kubernetes-list-type".into(), "map".into());
    schema.insert(
        "x-kubernetes-list-map-keys".into(),
        serde_json::json!(["type"]),
    );
    schema
}

/// Parses an idle timeout such as `30m`; `0` or an empty string means never.
pub fn parse_idle_timeout(value: &str) -> Result<Option<Duration>, String> {
    let value = value.trim();
    if value.is_empty() || value == "0" {
        return Ok(None);
    }
    let (digits, unit) = match value.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => value.split_at(i),
        None => (value, "s"),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("idleTimeout {value:?} must be a duration such as 30m, 2h or 1d"))?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => {
            return Err(format!(
                "idleTimeout {value:?} must be a duration such as 30m, 2h or 1d"
            ));
        }
    };
    Ok(if secs == 0 {
        None
    } else {
        Some(Duration::from_secs(secs))
    })
}

impl UserWorkspace {
    /// The runtime in effect: the spec's, else the plan's default.
    pub fn effective_runtime(&self, policy: &PlanPolicy) -> Runtime {
        self.spec.runtime.unwrap_or(policy.default_runtime)
    }

    /// The idle timeout, already validated (an invalid value counts as never).
    pub fn idle_timeout(&self) -> Option<Duration> {
        self.spec
            .idle_timeout
            .as_deref()
            .and_then(|v| parse_idle_timeout(v).ok().flatten())
    }

    /// The condition of the given type, if present.
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.status
            .as_ref()?
            .conditions
            .iter()
            .find(|c| c.type_ == type_)
    }

    /// Whether the agent answers: what the router waits for after a wake.
    pub fn is_ready(&self) -> bool {
        self.condition(crate::conditions::READY)
            .is_some_and(|c| c.status == "True")
    }

    /// Checks that the API server cannot do (1.20 drops CEL) or that depend on the plan.
    /// Returns every problem, each phrased for the person who wrote the spec.
    pub fn validate(&self, policy: &PlanPolicy) -> Result<(), Vec<String>> {
        self.spec.validate(policy)
    }
}

impl UserWorkspaceSpec {
    /// See [`UserWorkspace::validate`].
    pub fn validate(&self, policy: &PlanPolicy) -> Result<(), Vec<String>> {
        let mut errors = Vec::new();
        if self.owner_id.trim().is_empty() {
            errors.push("spec.ownerId: must not be empty".to_string());
        }
        if self.model.name.trim().is_empty() {
            errors.push("spec.model.name: must not be empty".to_string());
        }
        if let Some(t) = &self.idle_timeout
            && let Err(e) = parse_idle_timeout(t)
        {
            errors.push(format!("spec.idleTimeout: {e}"));
        }
        if let Some(temp) = self.model.temperature
            && !(0.0..=2.0).contains(&temp)
        {
            errors.push(format!("spec.model.temperature: {temp} is outside 0..2"));
        }
        match self.model.provider {
            ModelProvider::Platform => match (&self.model.endpoint_ref, &self.model.dedicated) {
                (None, None) => errors.push(
                    "spec.model: set endpointRef (a shared ModelEndpoint) or dedicated (a model server of its own)"
                        .to_string(),
                ),
                (Some(_), Some(_)) => errors.push(
                    "spec.model: endpointRef and dedicated are exclusive; set one of them".to_string(),
                ),
                (None, Some(dedicated)) => {
                    if let Err(es) = dedicated.validate() {
                        errors.extend(es.into_iter().map(|e| e.replacen("spec.", "spec.model.dedicated.", 1)));
                    }
                }
                (Some(_), None) => {}
            },
            provider @ (ModelProvider::Openai | ModelProvider::Anthropic) => {
                if !policy.allows_own_key {
                    errors.push(format!(
                        "spec.model.provider: {} with the user's own key is not available on the {} plan; use the platform model or upgrade",
                        provider.as_str(),
                        self.plan
                    ));
                }
                if self.keys_secret_ref.is_none() {
                    errors.push(format!(
                        "spec.keysSecretRef: provider {} needs a Secret with {}",
                        provider.as_str(),
                        provider.key_name().unwrap_or_default()
                    ));
                }
                if self.model.endpoint_ref.is_some() || self.model.dedicated.is_some() {
                    errors.push(format!(
                        "spec.model: endpointRef and dedicated apply only to provider platform, not {}",
                        provider.as_str()
                    ));
                }
            }
        }
        if self.features.web_search && !policy.allows_web_search {
            errors.push(format!(
                "spec.features.webSearch: not available on the {} plan",
                self.plan
            ));
        }
        match quantity_bytes(&self.storage.size) {
            Some(bytes) if bytes > policy.max_storage_bytes => errors.push(format!(
                "spec.storage.size: {} is over the {} plan's limit of {} bytes",
                self.storage.size.0, self.plan, policy.max_storage_bytes
            )),
            Some(_) => {}
            None => errors.push(format!(
                "spec.storage.size: {:?} is not a size such as 1Gi",
                self.storage.size.0
            )),
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

/// Bytes of a storage quantity such as `1Gi`, `500M` or `1073741824`; `None` when malformed.
pub fn quantity_bytes(q: &Quantity) -> Option<u64> {
    let s = q.0.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(split);
    let number: f64 = number.parse().ok()?;
    let factor: f64 = match suffix {
        "" => 1.0,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        _ => return None,
    };
    let bytes = number * factor;
    (bytes.is_finite() && bytes >= 0.0).then_some(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn spec() -> UserWorkspaceSpec {
        serde_yaml::from_str(
            r#"
ownerId: user-1
plan: free
model:
  name: smollm2
  endpointRef: {name: shared}
"#,
        )
        .unwrap()
    }

    #[test]
    fn defaults_apply_when_fields_are_missing() {
        let s = spec();
        assert_eq!(s.storage.size.0, "1Gi");
        assert_eq!(s.storage.retention, RetentionPolicy::Retain);
        assert_eq!(s.model.provider, ModelProvider::Platform);
        assert!(!s.suspend);
        assert!(s.validate(&PlanPolicy::default_for(Plan::Free)).is_ok());
    }

    #[test]
    fn own_key_on_free_plan_is_refused_with_a_reason() {
        let mut s = spec();
        s.model.provider = ModelProvider::Openai;
        s.model.endpoint_ref = None;
        let errs = s
            .validate(&PlanPolicy::default_for(Plan::Free))
            .unwrap_err();
        assert!(
            errs.iter()
                .any(|e| e.contains("not available on the free plan")),
            "{errs:?}"
        );
        assert!(
            errs.iter().any(|e| e.contains("OPENAI_API_KEY")),
            "{errs:?}"
        );
    }

    #[test]
    fn own_key_on_pro_plan_with_secret_is_accepted() {
        let mut s = spec();
        s.plan = Plan::Pro;
        s.model.provider = ModelProvider::Anthropic;
        s.model.endpoint_ref = None;
        s.keys_secret_ref = Some(LocalObjectRef {
            name: "keys".into(),
        });
        assert_eq!(s.validate(&PlanPolicy::default_for(Plan::Pro)), Ok(()));
    }

    #[test]
    fn platform_model_needs_exactly_one_source() {
        let mut s = spec();
        s.model.endpoint_ref = None;
        let errs = s
            .validate(&PlanPolicy::default_for(Plan::Free))
            .unwrap_err();
        assert!(errs[0].contains("set endpointRef"));
        let mut s = spec();
        s.model.dedicated =
            Some(serde_yaml::from_str("engine: vllm\nmodels: [{name: a}, {name: b}]").unwrap());
        let errs = s
            .validate(&PlanPolicy::default_for(Plan::Free))
            .unwrap_err();
        assert!(errs.iter().any(|e| e.contains("exclusive")), "{errs:?}");
        s.model.endpoint_ref = None;
        let errs = s
            .validate(&PlanPolicy::default_for(Plan::Free))
            .unwrap_err();
        assert_eq!(
            errs,
            vec!["spec.model.dedicated.models: a vLLM server serves exactly one model"]
        );
    }

    #[test]
    fn storage_over_plan_limit_and_bad_sizes_are_refused() {
        let mut s = spec();
        s.storage.size = Quantity("5Gi".into());
        let errs = s
            .validate(&PlanPolicy::default_for(Plan::Free))
            .unwrap_err();
        assert!(errs[0].contains("over the free plan's limit"));
        s.storage.size = Quantity("lots".into());
        let errs = s
            .validate(&PlanPolicy::default_for(Plan::Free))
            .unwrap_err();
        assert!(errs[0].contains("not a size"));
    }

    #[test]
    fn idle_timeouts_parse() {
        assert_eq!(
            parse_idle_timeout("30m"),
            Ok(Some(Duration::from_secs(1800)))
        );
        assert_eq!(
            parse_idle_timeout("2h"),
            Ok(Some(Duration::from_secs(7200)))
        );
        assert_eq!(parse_idle_timeout("45"), Ok(Some(Duration::from_secs(45))));
        assert_eq!(parse_idle_timeout("0"), Ok(None));
        assert!(parse_idle_timeout("soon").is_err());
        assert!(parse_idle_timeout("5w").is_err());
    }

    #[test]
    fn quantities_convert_to_bytes() {
        assert_eq!(quantity_bytes(&Quantity("1Gi".into())), Some(1 << 30));
        assert_eq!(quantity_bytes(&Quantity("500M".into())), Some(500_000_000));
        assert_eq!(quantity_bytes(&Quantity("1.5Ki".into())), Some(1536));
        assert_eq!(quantity_bytes(&Quantity("12".into())), Some(12));
        assert_eq!(quantity_bytes(&Quantity("1Xi".into())), None);
    }
}
