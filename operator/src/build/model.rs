//! The objects of a ModelEndpoint: the model server Deployment, its Service and, when asked
//! for, a cache volume for the weights.

use std::collections::BTreeMap;

use clawdbot_api::model_endpoint::{Engine, ModelEndpoint};
use clawdbot_api::names;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, HTTPGetAction,
    PersistentVolumeClaim, PersistentVolumeClaimSpec, PersistentVolumeClaimVolumeSource, PodSpec,
    PodTemplateSpec, Probe, ResourceRequirements, SecurityContext, Service, ServicePort,
    ServiceSpec, Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use super::child_meta;
use crate::config::OperatorConfig;
use crate::error::{Error, Result};

/// Extended resource name of NVIDIA GPUs (the device plugin's).
pub const GPU_RESOURCE: &str = "nvidia.com/gpu";

/// In-cluster OpenAI-compatible base URL of an endpoint.
pub fn endpoint_url(ep: &ModelEndpoint) -> Result<String> {
    let ns = ep
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    Ok(format!(
        "http://{}.{ns}.svc:{}/v1",
        names::model_server(&ep.name_any()),
        ep.spec.engine.port()
    ))
}

fn cache_path(engine: Engine) -> &'static str {
    match engine {
        Engine::Vllm => "/root/.cache/huggingface",
        Engine::Ollama => "/root/.ollama",
    }
}

/// Command and arguments of the server.
fn server_command(ep: &ModelEndpoint) -> (Option<Vec<String>>, Vec<String>, Vec<EnvVar>) {
    let spec = &ep.spec;
    match spec.engine {
        Engine::Vllm => {
            let model = spec.models.first();
            let mut args = vec![
                "--model".to_string(),
                model
                    .map(|m| m.source.clone().unwrap_or_else(|| m.name.clone()))
                    .unwrap_or_default(),
                "--served-model-name".to_string(),
                model.map(|m| m.name.clone()).unwrap_or_default(),
                "--host".to_string(),
                "0.0.0.0".to_string(),
                "--port".to_string(),
                Engine::Vllm.port().to_string(),
            ];
            args.extend(spec.extra_args.iter().cloned());
            (None, args, vec![])
        }
        Engine::Ollama => {
            // Ollama serves whatever is pulled: start it, pull each model, then keep serving.
            let pulls: Vec<String> = spec
                .models
                .iter()
                .map(|m| {
                    format!(
                        "ollama pull '{}'",
                        m.source.as_deref().unwrap_or(&m.name).replace('\'', "")
                    )
                })
                .collect();
            let script = format!(
                "ollama serve & pid=$!; until ollama list >/dev/null 2>&1; do sleep 1; done; {}; wait $pid",
                pulls.join(" && ")
            );
            (
                Some(vec!["/bin/sh".into(), "-c".into()]),
                vec![script],
                vec![EnvVar {
                    name: "OLLAMA_HOST".into(),
                    value: Some(format!("0.0.0.0:{}", Engine::Ollama.port())),
                    value_from: None,
                }],
            )
        }
    }
}

pub fn build_server_deployment(ep: &ModelEndpoint, cfg: &OperatorConfig) -> Result<Deployment> {
    let name = ep.name_any();
    let spec = &ep.spec;
    let image = spec.image.clone().unwrap_or_else(|| match spec.engine {
        Engine::Vllm => cfg.vllm_image.clone(),
        Engine::Ollama => cfg.ollama_image.clone(),
    });
    let mut requests = BTreeMap::new();
    let mut limits = BTreeMap::new();
    if let Some(r) = spec.resources.as_ref() {
        for (src, dst) in [(&r.requests, &mut requests), (&r.limits, &mut limits)] {
            if let Some(c) = src {
                if let Some(cpu) = &c.cpu {
                    dst.insert("cpu".to_string(), cpu.clone());
                }
                if let Some(mem) = &c.memory {
                    dst.insert("memory".to_string(), mem.clone());
                }
            }
        }
    }
    if spec.gpus_per_replica > 0 {
        // Extended resources must have requests equal to limits.
        let gpus = Quantity(spec.gpus_per_replica.to_string());
        requests.insert(GPU_RESOURCE.to_string(), gpus.clone());
        limits.insert(GPU_RESOURCE.to_string(), gpus);
    }
    let (command, args, env) = server_command(ep);
    let cache_volume = match &spec.model_cache {
        Some(_) => Volume {
            name: "model-cache".into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: cache_pvc_name(&name),
                read_only: Some(false),
            }),
            ..Volume::default()
        },
        None => Volume {
            name: "model-cache".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        },
    };
    let probe = |period: i32, failures: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(match spec.engine {
                Engine::Vllm => "/health".into(),
                Engine::Ollama => "/api/version".into(),
            }),
            port: IntOrString::String("http".into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        ..Probe::default()
    };
    let labels = names::model_endpoint_labels(&name);
    Ok(Deployment {
        metadata: child_meta(ep, names::model_server(&name), labels.clone())?,
        spec: Some(DeploymentSpec {
            replicas: Some(spec.replicas),
            selector: LabelSelector {
                match_labels: Some(names::model_endpoint_selector(&name)),
                match_expressions: None,
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    node_selector: (!spec.node_selector.is_empty())
                        .then(|| spec.node_selector.clone()),
                    tolerations: (!spec.tolerations.is_empty()).then(|| spec.tolerations.clone()),
                    containers: vec![Container {
                        name: "server".into(),
                        image: Some(image),
                        command,
                        args: Some(args),
                        env: Some(env),
                        ports: Some(vec![ContainerPort {
                            name: Some("http".into()),
                            container_port: i32::from(spec.engine.port()),
                            protocol: Some("TCP".into()),
                            ..ContainerPort::default()
                        }]),
                        resources: Some(ResourceRequirements {
                            requests: (!requests.is_empty()).then_some(requests),
                            limits: (!limits.is_empty()).then_some(limits),
                            claims: None,
                        }),
                        // The engines' images run as root and write their caches; they get no
                        // extra privilege beyond that.
                        security_context: Some(SecurityContext {
                            allow_privilege_escalation: Some(false),
                            capabilities: Some(Capabilities {
                                drop: Some(vec!["ALL".into()]),
                                add: None,
                            }),
                            ..SecurityContext::default()
                        }),
                        volume_mounts: Some(vec![VolumeMount {
                            name: "model-cache".into(),
                            mount_path: cache_path(spec.engine).into(),
                            ..VolumeMount::default()
                        }]),
                        // Loading weights can take many minutes.
                        startup_probe: Some(probe(10, 180)),
                        readiness_probe: Some(probe(10, 3)),
                        ..Container::default()
                    }],
                    volumes: Some(vec![cache_volume]),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    })
}

pub fn build_server_service(ep: &ModelEndpoint) -> Result<Service> {
    let name = ep.name_any();
    Ok(Service {
        metadata: child_meta(
            ep,
            names::model_server(&name),
            names::model_endpoint_labels(&name),
        )?,
        spec: Some(ServiceSpec {
            selector: Some(names::model_endpoint_selector(&name)),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: i32::from(ep.spec.engine.port()),
                target_port: Some(IntOrString::String("http".into())),
                protocol: Some("TCP".into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    })
}

fn cache_pvc_name(endpoint: &str) -> String {
    format!("{}-cache", names::model_server(endpoint))
}

/// The weights cache, when the spec asks for a persistent one.
pub fn build_cache_pvc(ep: &ModelEndpoint) -> Result<Option<PersistentVolumeClaim>> {
    let Some(cache) = &ep.spec.model_cache else {
        return Ok(None);
    };
    let name = ep.name_any();
    Ok(Some(PersistentVolumeClaim {
        metadata: child_meta(
            ep,
            cache_pvc_name(&name),
            names::model_endpoint_labels(&name),
        )?,
        spec: Some(PersistentVolumeClaimSpec {
            // Replicas share the weights read-mostly; one replica needs only RWO.
            access_modes: Some(vec![
                if ep.spec.replicas > 1 {
                    "ReadWriteMany"
                } else {
                    "ReadWriteOnce"
                }
                .into(),
            ]),
            storage_class_name: cache.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_string(),
                    cache.size.clone(),
                )])),
                limits: None,
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    }))
}
