//! The objects of one tenant: ServiceAccount, ConfigMap, gateway-token Secret, PVC, agent
//! Deployment, Service, NetworkPolicy, and the dedicated ModelEndpoint when it asks for one.

use std::collections::BTreeMap;

use clawdbot_api::PlanPolicy;
use clawdbot_api::lite::{LiteAgentConfig, LiteModelConfig, SessionScope, WebSearchConfig};
use clawdbot_api::model_endpoint::ModelEndpoint;
use clawdbot_api::names;
use clawdbot_api::plan::Runtime;
use clawdbot_api::workspace::{ComputeResources, ModelProvider, UserWorkspace, quantity_bytes};
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, EnvVar,
    HTTPGetAction, KeyToPath, PersistentVolumeClaim, PersistentVolumeClaimSpec,
    PersistentVolumeClaimVolumeSource, PodSpec, PodTemplateSpec, Probe, ResourceRequirements,
    Secret, SecretVolumeSource, Service, ServiceAccount, ServicePort, ServiceSpec, Volume,
    VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use sha2::{Digest, Sha256};

use super::{child_meta, restricted_container, restricted_pod};
use crate::config::OperatorConfig;
use crate::error::{Error, Result};
use crate::openclaw::{self, ModelTarget, RenderInput};

/// Everything the tenant builders need, resolved by the reconciler beforehand.
#[derive(Clone, Debug)]
pub struct AgentInputs<'a> {
    pub workspace: &'a UserWorkspace,
    pub config: &'a OperatorConfig,
    pub policy: PlanPolicy,
    pub runtime: Runtime,
    /// Where the model is.
    pub model: ModelTarget,
    /// The platform ModelEndpoint serving it (name, engine port), for the egress rule.
    pub model_endpoint: Option<(String, u16)>,
    /// Whether the agent should run (false: suspended or hibernated).
    pub awake: bool,
}

/// Container path of a key in the user's keys Secret.
fn key_file(key: &str) -> String {
    format!("{}/{key}", names::KEYS_MOUNT)
}

/// Where the model of a workspace is, given the platform endpoint it references (if any).
pub fn model_target(
    ws: &UserWorkspace,
    cfg: &OperatorConfig,
    endpoint_url: Option<String>,
) -> ModelTarget {
    let m = &ws.spec.model;
    let (base_url, api_key_file) = match m.provider {
        ModelProvider::Platform => (endpoint_url.unwrap_or_default(), None),
        ModelProvider::Openai => (
            cfg.openai_base_url.clone(),
            Some(key_file(names::OPENAI_API_KEY)),
        ),
        ModelProvider::Anthropic => (
            cfg.anthropic_base_url.clone(),
            Some(key_file(names::ANTHROPIC_API_KEY)),
        ),
    };
    ModelTarget {
        provider: m.provider,
        base_url,
        model: m.name.clone(),
        api_key_file,
        temperature: m.temperature,
        max_tokens: m.max_tokens,
        context_window: m.context_window.unwrap_or(8192),
    }
}

fn render_input<'a>(inputs: &'a AgentInputs<'a>) -> RenderInput<'a> {
    RenderInput {
        workspace: inputs.workspace,
        policy: &inputs.policy,
        model: inputs.model.clone(),
        web_search_url: web_search_url(inputs),
    }
}

fn web_search_url(inputs: &AgentInputs<'_>) -> Option<String> {
    (inputs.workspace.spec.features.web_search && inputs.policy.allows_web_search)
        .then(|| inputs.config.web_search_url.clone())
        .flatten()
}

/// What the resolved inputs make of the spec that the spec alone cannot show (OpenClaw's
/// limits on the model, for one). Checked before the build, so that building cannot fail on
/// a spec; every message names the field.
pub fn check(inputs: &AgentInputs<'_>) -> std::result::Result<(), Vec<String>> {
    match inputs.runtime {
        Runtime::Lite => Ok(()),
        Runtime::Openclaw => openclaw::check(&render_input(inputs)).map_err(|e| vec![e]),
    }
}

/// The lite agent's configuration for this tenant.
pub fn lite_config(inputs: &AgentInputs<'_>) -> LiteAgentConfig {
    let storage = quantity_bytes(&inputs.workspace.spec.storage.size).unwrap_or(0);
    LiteAgentConfig {
        listen: format!("0.0.0.0:{}", names::AGENT_PORT),
        data_dir: names::DATA_MOUNT.into(),
        token_file: format!("{}/{}", names::TOKEN_MOUNT, names::GATEWAY_TOKEN_KEY),
        model: LiteModelConfig {
            provider: inputs.model.provider,
            base_url: inputs.model.base_url.clone(),
            model: inputs.model.model.clone(),
            api_key_file: inputs.model.api_key_file.clone(),
            temperature: inputs.model.temperature,
            max_tokens: inputs.model.max_tokens,
            context_window: inputs.model.context_window,
            timeout_seconds: 120,
        },
        session_scope: SessionScope::PerPeer,
        web_search: web_search_url(inputs).map(|base_url| WebSearchConfig {
            base_url,
            max_per_day: inputs.policy.web_searches_per_day,
        }),
        // The volume is the hard limit; the agent stops writing a little earlier with a clear
        // message instead of failing on a full disk.
        storage_limit_bytes: storage.min(inputs.policy.max_storage_bytes),
        max_tool_rounds: 4,
    }
}

pub fn build_service_account(ws: &UserWorkspace) -> Result<ServiceAccount> {
    Ok(ServiceAccount {
        metadata: child_meta(
            ws,
            names::agent(&ws.name_any()),
            names::workspace_labels(&ws.name_any(), "agent"),
        )?,
        // The agent never talks to the API server.
        automount_service_account_token: Some(false),
        ..ServiceAccount::default()
    })
}

/// The agent config. Holds no secret: tokens and keys are mounted from Secrets.
pub fn build_config_map(inputs: &AgentInputs<'_>) -> Result<ConfigMap> {
    let ws = inputs.workspace;
    let (file, body) = match inputs.runtime {
        Runtime::Lite => (
            names::LITE_CONFIG_FILE,
            serde_json::to_string_pretty(&lite_config(inputs)).map_err(|source| {
                Error::Serialize {
                    what: "lite agent config",
                    source,
                }
            })?,
        ),
        Runtime::Openclaw => {
            let value = openclaw::render_config(&render_input(inputs))
                .map_err(|e| Error::InvalidSpec(vec![e]))?;
            (
                names::OPENCLAW_CONFIG_FILE,
                serde_json::to_string_pretty(&value).map_err(|source| Error::Serialize {
                    what: "openclaw config",
                    source,
                })?,
            )
        }
    };
    Ok(ConfigMap {
        metadata: child_meta(
            ws,
            names::agent(&ws.name_any()),
            names::workspace_labels(&ws.name_any(), "agent"),
        )?,
        data: Some(BTreeMap::from([(file.to_string(), body)])),
        ..ConfigMap::default()
    })
}

/// A hash of the config, put on the pod template so that a config change rolls the agent.
pub fn config_hash(cm: &ConfigMap) -> String {
    let mut h = Sha256::new();
    for (k, v) in cm.data.iter().flatten() {
        h.update(k.as_bytes());
        h.update([0]);
        h.update(v.as_bytes());
        h.update([0]);
    }
    hex::encode(&h.finalize()[..8])
}

/// The Secret with the bearer token the router presents to this tenant's agent.
pub fn build_gateway_secret(ws: &UserWorkspace, token: &str) -> Result<Secret> {
    let mut labels = names::workspace_labels(&ws.name_any(), "gateway-token");
    labels.insert(
        names::LABEL_SECRET_KIND.into(),
        names::SECRET_KIND_GATEWAY_TOKEN.into(),
    );
    Ok(Secret {
        metadata: child_meta(ws, names::gateway_token_secret(&ws.name_any()), labels)?,
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([(
            names::GATEWAY_TOKEN_KEY.to_string(),
            ByteString(token.as_bytes().to_vec()),
        )])),
        ..Secret::default()
    })
}

/// A fresh gateway token: 32 random bytes, hex.
pub fn generate_token() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

/// The tenant volume at the spec's size. `owned: false` drops the owner reference (retention
/// on delete).
pub fn build_pvc(ws: &UserWorkspace, owned: bool) -> Result<PersistentVolumeClaim> {
    build_pvc_sized(ws, owned, &ws.spec.storage.size)
}

/// The tenant volume requesting `size` (what `build::storage::plan` decided).
pub fn build_pvc_sized(
    ws: &UserWorkspace,
    owned: bool,
    size: &Quantity,
) -> Result<PersistentVolumeClaim> {
    let mut metadata = child_meta(
        ws,
        names::agent(&ws.name_any()),
        names::workspace_labels(&ws.name_any(), "data"),
    )?;
    if !owned {
        metadata.owner_references = None;
    }
    Ok(PersistentVolumeClaim {
        metadata,
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: ws.spec.storage.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([("storage".to_string(), size.clone())])),
                limits: None,
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    })
}

/// Requests and limits: the spec's, else the runtime's measured footprint.
fn agent_resources(ws: &UserWorkspace, runtime: Runtime) -> ResourceRequirements {
    // Lite: ~20-40 MB RSS measured; OpenClaw: 0.7 GB idle, 0.9-1.1 GB with its workers.
    let (cpu_req, mem_req, mem_lim) = match runtime {
        Runtime::Lite => ("25m", "48Mi", "128Mi"),
        Runtime::Openclaw => ("100m", "1Gi", "1536Mi"),
    };
    let spec = ws.spec.resources.clone().unwrap_or_default();
    let to_map = |r: ComputeResources, cpu: Option<&str>, mem: &str| {
        let mut m = BTreeMap::new();
        if let Some(c) = r.cpu.or(cpu.map(|c| Quantity(c.into()))) {
            m.insert("cpu".to_string(), c);
        }
        m.insert(
            "memory".to_string(),
            r.memory.unwrap_or(Quantity(mem.into())),
        );
        m
    };
    ResourceRequirements {
        requests: Some(to_map(
            spec.requests.unwrap_or_default(),
            Some(cpu_req),
            mem_req,
        )),
        // No CPU limit by default: throttling a bursty chat agent hurts latency and buys nothing.
        limits: Some(to_map(spec.limits.unwrap_or_default(), None, mem_lim)),
        claims: None,
    }
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: Some(read_only),
        ..VolumeMount::default()
    }
}

/// The agent Deployment: one replica when awake, zero when suspended or hibernated.
pub fn build_deployment(inputs: &AgentInputs<'_>, config_hash: &str) -> Result<Deployment> {
    let ws = inputs.workspace;
    let name = ws.name_any();
    let labels = names::workspace_labels(&name, "agent");
    let image = match &ws.spec.image {
        Some(img) => img.reference(),
        None => inputs.config.runtime_image(inputs.runtime).to_string(),
    };
    let keys_secret = ws.spec.keys_secret_ref.as_ref().map(|r| r.name.clone());

    let mut volumes = vec![
        Volume {
            name: "data".into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: names::agent(&name),
                read_only: Some(false),
            }),
            ..Volume::default()
        },
        Volume {
            name: "config".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: names::agent(&name),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        },
        Volume {
            name: "gateway-token".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(names::gateway_token_secret(&name)),
                default_mode: Some(0o440),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        },
        Volume {
            // The root filesystem is read-only; runtimes still want a scratch /tmp.
            name: "tmp".into(),
            empty_dir: Some(EmptyDirVolumeSource {
                medium: None,
                size_limit: Some(Quantity("256Mi".into())),
            }),
            ..Volume::default()
        },
    ];
    let mut mounts = vec![
        mount("data", names::DATA_MOUNT, false),
        mount("config", names::CONFIG_MOUNT, true),
        mount("gateway-token", names::TOKEN_MOUNT, true),
        mount("tmp", "/tmp", false),
    ];
    if let (Some(secret), Some(key)) = (&keys_secret, inputs.model.provider.key_name()) {
        volumes.push(Volume {
            name: "provider-keys".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret.clone()),
                items: Some(vec![KeyToPath {
                    key: key.into(),
                    path: key.into(),
                    mode: None,
                }]),
                default_mode: Some(0o440),
                optional: Some(false),
            }),
            ..Volume::default()
        });
        mounts.push(mount("provider-keys", names::KEYS_MOUNT, true));
    }

    let (args, env, probe_action, live_action, startup_failures) = match inputs.runtime {
        Runtime::Lite => (
            Some(vec![
                "--config".to_string(),
                format!("{}/{}", names::CONFIG_MOUNT, names::LITE_CONFIG_FILE),
            ]),
            vec![EnvVar {
                name: "RUST_LOG".into(),
                value: Some("info".into()),
                value_from: None,
            }],
            Probe {
                http_get: Some(http_get("/readyz")),
                ..Probe::default()
            },
            Probe {
                http_get: Some(http_get("/healthz")),
                ..Probe::default()
            },
            // The lite agent serves within milliseconds: no start-up probe, and readiness looked
            // at every second, because the readiness probe's period is what a woken tenant's
            // first message waits for (the kubelet probes on its ticks; with 5 s a wake took
            // 1.4-6.5 s from pod creation to ready in the wake benchmark).
            None,
        ),
        Runtime::Openclaw => (
            None,
            openclaw::container_env(&render_input(inputs)),
            // The port opens seconds before the gateway is ready: probe HTTP, not TCP.
            Probe {
                http_get: Some(http_get("/readyz")),
                ..Probe::default()
            },
            Probe {
                http_get: Some(http_get("/healthz")),
                ..Probe::default()
            },
            // OpenClaw measured 8-50 s to serve here depending on load: allow 180 s.
            Some(90),
        ),
    };

    let container = Container {
        name: "agent".into(),
        image: Some(image),
        image_pull_policy: Some("IfNotPresent".into()),
        args,
        env: Some(env),
        ports: Some(vec![ContainerPort {
            name: Some("http".into()),
            container_port: i32::from(names::AGENT_PORT),
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        }]),
        resources: Some(agent_resources(ws, inputs.runtime)),
        security_context: Some(restricted_container()),
        volume_mounts: Some(mounts),
        startup_probe: startup_failures.map(|failures| Probe {
            period_seconds: Some(2),
            failure_threshold: Some(failures),
            ..probe_action.clone()
        }),
        readiness_probe: Some(Probe {
            period_seconds: Some(if startup_failures.is_some() { 5 } else { 1 }),
            ..probe_action.clone()
        }),
        liveness_probe: Some(Probe {
            period_seconds: Some(20),
            failure_threshold: Some(3),
            ..live_action
        }),
        ..Container::default()
    };

    let mut pod_labels = labels.clone();
    pod_labels.insert("clawdbot.io/runtime".into(), inputs.runtime.as_str().into());
    Ok(Deployment {
        metadata: child_meta(ws, names::agent(&name), labels)?,
        spec: Some(DeploymentSpec {
            replicas: Some(i32::from(inputs.awake)),
            selector: LabelSelector {
                match_labels: Some(names::agent_selector(&name)),
                match_expressions: None,
            },
            // A ReadWriteOnce volume cannot be mounted by two pods: stop the old one first.
            strategy: Some(DeploymentStrategy {
                type_: Some("Recreate".into()),
                rolling_update: None,
            }),
            revision_history_limit: Some(2),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    // The lite agent reads its config once: a change rolls the pod. OpenClaw
                    // reloads its mounted config in about a second (a restart costs 30-50 s),
                    // so its pods are not rolled for a config change.
                    annotations: (inputs.runtime == Runtime::Lite).then(|| {
                        BTreeMap::from([(
                            "clawdbot.io/config-hash".to_string(),
                            config_hash.to_string(),
                        )])
                    }),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(names::agent(&name)),
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    security_context: Some(restricted_pod()),
                    containers: vec![container],
                    volumes: Some(volumes),
                    // OpenClaw drains in-flight turns on SIGTERM; the lite agent finishes its
                    // replies within its model timeout.
                    termination_grace_period_seconds: Some(match inputs.runtime {
                        Runtime::Lite => 30,
                        Runtime::Openclaw => 60,
                    }),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    })
}

fn http_get(path: &str) -> HTTPGetAction {
    HTTPGetAction {
        path: Some(path.into()),
        port: IntOrString::String("http".into()),
        ..HTTPGetAction::default()
    }
}

/// The Service the router calls.
pub fn build_service(ws: &UserWorkspace) -> Result<Service> {
    let name = ws.name_any();
    Ok(Service {
        metadata: child_meta(
            ws,
            names::agent(&name),
            names::workspace_labels(&name, "agent"),
        )?,
        spec: Some(ServiceSpec {
            selector: Some(names::agent_selector(&name)),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: i32::from(names::AGENT_PORT),
                target_port: Some(IntOrString::String("http".into())),
                protocol: Some("TCP".into()),
                ..ServicePort::default()
            }]),
            type_: Some("ClusterIP".into()),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    })
}

fn port(p: u16, protocol: &str) -> NetworkPolicyPort {
    NetworkPolicyPort {
        port: Some(IntOrString::Int(i32::from(p))),
        protocol: Some(protocol.into()),
        end_port: None,
    }
}

fn namespace_selector(ns: &str) -> LabelSelector {
    LabelSelector {
        match_labels: Some(BTreeMap::from([(
            "kubernetes.io/metadata.name".to_string(),
            ns.to_string(),
        )])),
        match_expressions: None,
    }
}

/// Ingress from the router alone; egress to DNS, the tenant's model endpoint and the public
/// internet, but not to other pods (other tenants live on private addresses).
pub fn build_network_policy(inputs: &AgentInputs<'_>) -> Result<NetworkPolicy> {
    let ws = inputs.workspace;
    let name = ws.name_any();
    let router = NetworkPolicyPeer {
        namespace_selector: Some(namespace_selector(&inputs.config.router_namespace)),
        pod_selector: Some(LabelSelector {
            match_labels: Some(BTreeMap::from([(
                names::LABEL_ROUTER.to_string(),
                "true".to_string(),
            )])),
            match_expressions: None,
        }),
        ip_block: None,
    };
    let mut egress = vec![NetworkPolicyEgressRule {
        to: Some(vec![NetworkPolicyPeer {
            namespace_selector: Some(LabelSelector::default()),
            pod_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([(
                    "k8s-app".to_string(),
                    "kube-dns".to_string(),
                )])),
                match_expressions: None,
            }),
            ip_block: None,
        }]),
        ports: Some(vec![port(53, "UDP"), port(53, "TCP")]),
    }];
    if let Some((endpoint, engine_port)) = &inputs.model_endpoint {
        egress.push(NetworkPolicyEgressRule {
            to: Some(vec![NetworkPolicyPeer {
                namespace_selector: None,
                pod_selector: Some(LabelSelector {
                    match_labels: Some(names::model_endpoint_selector(endpoint)),
                    match_expressions: None,
                }),
                ip_block: None,
            }]),
            ports: Some(vec![port(*engine_port, "TCP")]),
        });
    }
    egress.push(NetworkPolicyEgressRule {
        to: Some(vec![NetworkPolicyPeer {
            ip_block: Some(IPBlock {
                cidr: "0.0.0.0/0".into(),
                except: Some(vec![
                    "10.0.0.0/8".into(),
                    "172.16.0.0/12".into(),
                    "192.168.0.0/16".into(),
                    "100.64.0.0/10".into(),
                    "169.254.0.0/16".into(),
                ]),
            }),
            namespace_selector: None,
            pod_selector: None,
        }]),
        ports: None,
    });
    Ok(NetworkPolicy {
        metadata: child_meta(
            ws,
            names::agent(&name),
            names::workspace_labels(&name, "agent"),
        )?,
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(names::agent_selector(&name)),
                match_expressions: None,
            }),
            policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
            ingress: Some(vec![NetworkPolicyIngressRule {
                from: Some(vec![router]),
                ports: Some(vec![port(names::AGENT_PORT, "TCP")]),
            }]),
            egress: Some(egress),
        }),
    })
}

/// The ModelEndpoint a workspace with `model.dedicated` owns.
pub fn build_dedicated_endpoint(ws: &UserWorkspace) -> Result<Option<ModelEndpoint>> {
    let Some(spec) = ws.spec.model.dedicated.clone() else {
        return Ok(None);
    };
    let name = ws.name_any();
    let mut endpoint = ModelEndpoint::new(&names::dedicated_model_endpoint(&name), spec);
    endpoint.metadata = child_meta(
        ws,
        names::dedicated_model_endpoint(&name),
        names::workspace_labels(&name, "model"),
    )?;
    Ok(Some(endpoint))
}
