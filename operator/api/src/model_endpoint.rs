//! `ModelEndpoint`: a shared, GPU-backed, OpenAI-compatible model server (vLLM or Ollama).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Toleration;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::workspace::{ComputeResources, conditions_schema};

/// An OpenAI-compatible model server that tenants share. The operator runs it as a Deployment
/// (each replica requesting `nvidia.com/gpu`) behind a Service; UserWorkspaces reference it by
/// name in `spec.model.endpointRef`.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "clawdbot.io",
    version = "v1alpha1",
    kind = "ModelEndpoint",
    plural = "modelendpoints",
    shortname = "mep",
    namespaced,
    status = "ModelEndpointStatus",
    derive = "PartialEq",
    printcolumn = r#"{"name":"Engine","type":"string","jsonPath":".spec.engine"}"#,
    printcolumn = r#"{"name":"Models","type":"string","jsonPath":".status.servedModels"}"#,
    printcolumn = r#"{"name":"Ready","type":"integer","jsonPath":".status.readyReplicas"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ModelEndpointSpec {
    /// Model server engine: `vllm` (OpenAI-compatible, one model per server) or `ollama`.
    pub engine: Engine,
    /// Container image of the server. Defaults to the engine's pinned image in operator config.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Models this endpoint serves. For vLLM exactly one; `source` is the weights to load
    /// (for example a Hugging Face id), `name` the model name clients ask for.
    #[x_kube(validation = Rule::new("size(self) >= 1").message("at least one model must be served"))]
    pub models: Vec<ServedModel>,
    /// Number of server replicas.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0, max = 64))]
    pub replicas: i32,
    /// `nvidia.com/gpu` requested (and limited) per replica. 0 runs on CPU.
    #[serde(default = "default_gpus")]
    #[schemars(range(min = 0, max = 16))]
    pub gpus_per_replica: u32,
    /// CPU and memory of each replica.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ServerResources>,
    /// Node labels a replica must match (for example a GPU node pool).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Tolerations, typically for `nvidia.com/gpu` taints on GPU nodes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// A persistent volume for downloaded weights, so a restart does not download them again.
    /// Without it the cache is an emptyDir.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_cache: Option<ModelCache>,
    /// Extra command-line arguments for the server.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_args: Vec<String>,
}

fn default_replicas() -> i32 {
    1
}
fn default_gpus() -> u32 {
    1
}

/// Model server engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    Vllm,
    Ollama,
}

impl Engine {
    /// Port the engine's OpenAI-compatible API listens on.
    pub fn port(self) -> u16 {
        match self {
            Engine::Vllm => 8000,
            Engine::Ollama => 11434,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Vllm => "vllm",
            Engine::Ollama => "ollama",
        }
    }
}

/// A model a server serves.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServedModel {
    /// Name clients use in `model` (vLLM `--served-model-name`, Ollama tag).
    #[schemars(length(min = 1, max = 200))]
    pub name: String,
    /// Weights to load, when they differ from `name` (vLLM: a Hugging Face id or a path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// CPU and memory of a model server replica.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServerResources {
    /// Guaranteed CPU and memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<ComputeResources>,
    /// Upper bounds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<ComputeResources>,
}

/// Persistent cache for model weights.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelCache {
    /// Size of the cache volume, for example `50Gi`.
    pub size: Quantity,
    /// Storage class of the cache volume; the cluster default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
}

/// Observed state of a ModelEndpoint.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelEndpointStatus {
    /// Generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Replicas that pass their readiness probe.
    #[serde(default)]
    pub ready_replicas: i32,
    /// In-cluster base URL of the OpenAI-compatible API (ends in `/v1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Model names served.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub served_models: Vec<String>,
    /// `Ready` once at least one replica serves.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
}

impl ModelEndpoint {
    /// Whether the endpoint has a ready replica.
    pub fn is_ready(&self) -> bool {
        self.status.as_ref().is_some_and(|s| s.ready_replicas > 0)
    }

    /// Checks that kube-apiserver 1.20 cannot (it drops CEL rules). Returns every problem.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        self.spec.validate()
    }
}

impl ModelEndpointSpec {
    /// Pure checks of a spec, for a clear condition message.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut errors = Vec::new();
        if self.models.is_empty() {
            errors.push("spec.models: at least one model must be served".to_string());
        }
        if self.engine == Engine::Vllm && self.models.len() > 1 {
            errors.push("spec.models: a vLLM server serves exactly one model".to_string());
        }
        for (i, m) in self.models.iter().enumerate() {
            if m.name.trim().is_empty() {
                errors.push(format!("spec.models[{i}].name: must not be empty"));
            }
        }
        if !(0..=64).contains(&self.replicas) {
            errors.push(format!(
                "spec.replicas: {} is outside 0..=64",
                self.replicas
            ));
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}
