//! UserWorkspace reconcile: validate -> resolve references -> build (pure) -> apply -> status.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use clawdbot_api::annotations;
use clawdbot_api::conditions::*;
use clawdbot_api::model_endpoint::ModelEndpoint;
use clawdbot_api::names;
use clawdbot_api::workspace::{
    ModelProvider, Phase, RetentionPolicy, UserWorkspace, UserWorkspaceStatus,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Secret};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::{Resource, ResourceExt};
use tracing::{info, instrument, warn};

use super::{Context, apply, key};
use crate::build::agent::{self, AgentInputs};
use crate::build::model::endpoint_url;
use crate::build::service_url;
use crate::build::storage::{self, ExistingVolume};
use crate::config::ServiceAddresses;
use crate::error::{Error, Result, backoff};
use crate::status::{
    Facts, ModelState, Sleep, StorageState, Wakefulness, from_time, hibernation, pod_failure,
    pods_still_deciding, to_time, wakefulness, workspace_status,
};

pub const CONTROLLER: &str = "userworkspace";

/// Entry point for the controller runtime.
#[instrument(skip_all, fields(tenant = %key(ws.as_ref())))]
pub async fn reconcile(ws: Arc<UserWorkspace>, ctx: Arc<Context>) -> Result<Action> {
    let started = Instant::now();
    let ns = ws
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let api: Api<UserWorkspace> = Api::namespaced(ctx.client.clone(), &ns);
    let k = key(ws.as_ref());
    let result = finalizer(&api, names::WORKSPACE_FINALIZER, ws, |event| async {
        match event {
            Finalizer::Apply(ws) => apply_workspace(&ws, &ctx).await,
            Finalizer::Cleanup(ws) => cleanup(&ws, &ctx).await,
        }
    })
    .await
    .map_err(|e| match e {
        kube::runtime::finalizer::Error::ApplyFailed(e)
        | kube::runtime::finalizer::Error::CleanupFailed(e) => e,
        kube::runtime::finalizer::Error::AddFinalizer(e)
        | kube::runtime::finalizer::Error::RemoveFinalizer(e) => Error::Kube(e),
        other => Error::Finalizer(other.to_string()),
    });
    ctx.metrics.reconciled(
        CONTROLLER,
        started.elapsed(),
        result.as_ref().map(|_| ()).map_err(Error::category),
    );
    if result.is_ok() {
        ctx.succeeded(&k);
    }
    result
}

/// Retry policy: per-object exponential backoff, never a hot loop.
pub fn error_policy(ws: Arc<UserWorkspace>, err: &Error, ctx: Arc<Context>) -> Action {
    let n = ctx.failed(&key(ws.as_ref()));
    let delay = backoff(n);
    warn!(tenant = %key(ws.as_ref()), error = %err, category = err.category(), retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// Newest activity: the router's signal, else the creation time.
fn last_activity(ws: &UserWorkspace) -> (DateTime<Utc>, Option<DateTime<Utc>>) {
    let signal = ws
        .annotations()
        .get(annotations::LAST_ACTIVITY)
        .and_then(|v| DateTime::parse_from_rfc3339(v).ok())
        .map(|t| t.with_timezone(&Utc));
    let created = ws
        .meta()
        .creation_timestamp
        .as_ref()
        .map(from_time)
        .unwrap_or_else(Utc::now);
    (signal.map_or(created, |s| s.max(created)), signal)
}

/// The workspace's model: its URL, readiness and the endpoint for the egress rule.
enum ModelResolution {
    Resolved {
        url: Option<String>,
        endpoint: Option<(String, u16)>,
        state: ModelState,
    },
    Missing {
        reason: &'static str,
        message: String,
    },
}

async fn resolve_model(ws: &UserWorkspace, ns: &str, ctx: &Context) -> Result<ModelResolution> {
    let spec = &ws.spec.model;
    match spec.provider {
        ModelProvider::Platform => {
            let endpoint = if spec.dedicated.is_some() {
                let desired = agent::build_dedicated_endpoint(ws)?
                    .ok_or(Error::MissingField("spec.model.dedicated"))?;
                Some(apply(ctx, &desired).await?)
            } else if let Some(r) = &spec.endpoint_ref {
                let api: Api<ModelEndpoint> = Api::namespaced(ctx.client.clone(), ns);
                match api.get_opt(&r.name).await? {
                    Some(ep) => Some(ep),
                    None => {
                        return Ok(ModelResolution::Missing {
                            reason: REASON_MODEL_ENDPOINT_MISSING,
                            message: format!(
                                "ModelEndpoint {:?} does not exist in namespace {ns}; waiting for it to be created",
                                r.name
                            ),
                        });
                    }
                }
            } else {
                None
            };
            let Some(ep) = endpoint else {
                return Err(Error::InvalidSpec(vec!["spec.model: no endpoint".into()]));
            };
            let served = ep.spec.models.iter().any(|m| m.name == spec.name);
            let state = if !served {
                ModelState {
                    ready: false,
                    reason: REASON_MODEL_ENDPOINT_NOT_READY,
                    message: format!(
                        "ModelEndpoint {:?} does not serve model {:?}",
                        ep.name_any(),
                        spec.name
                    ),
                }
            } else if ep.is_ready() {
                ModelState {
                    ready: true,
                    reason: REASON_REPLICAS_READY,
                    message: format!("ModelEndpoint {:?} serves {:?}", ep.name_any(), spec.name),
                }
            } else {
                ModelState {
                    ready: false,
                    reason: REASON_MODEL_ENDPOINT_NOT_READY,
                    message: format!("ModelEndpoint {:?} has no ready replica yet", ep.name_any()),
                }
            };
            Ok(ModelResolution::Resolved {
                // Without cluster DNS the endpoint's own status has the address (its
                // Service's ClusterIP), written by the endpoint controller.
                url: Some(match ctx.config.service_addresses {
                    ServiceAddresses::Dns => endpoint_url(&ep)?,
                    ServiceAddresses::ClusterIp => {
                        match ep.status.as_ref().and_then(|s| s.url.clone()) {
                            Some(url) => url,
                            None => endpoint_url(&ep)?,
                        }
                    }
                }),
                endpoint: Some((ep.name_any(), ep.spec.engine.port())),
                state,
            })
        }
        provider @ (ModelProvider::Openai | ModelProvider::Anthropic) => {
            // Validation guarantees the reference and the key name.
            let secret_name = ws
                .spec
                .keys_secret_ref
                .as_ref()
                .map(|r| r.name.clone())
                .unwrap_or_default();
            let key_name = provider.key_name().unwrap_or_default();
            let api: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
            let has_key = api
                .get_opt(&secret_name)
                .await?
                .and_then(|s| s.data)
                .is_some_and(|d| d.get(key_name).is_some_and(|v| !v.0.is_empty()));
            if !has_key {
                return Ok(ModelResolution::Missing {
                    reason: REASON_SECRET_MISSING,
                    message: format!(
                        "Secret {secret_name:?} with key {key_name} does not exist in namespace {ns}; waiting for it"
                    ),
                });
            }
            Ok(ModelResolution::Resolved {
                url: None,
                endpoint: None,
                state: ModelState {
                    ready: true,
                    reason: REASON_EXTERNAL_PROVIDER,
                    message: format!("{} with the user's own key", provider.as_str()),
                },
            })
        }
    }
}

async fn apply_workspace(ws: &UserWorkspace, ctx: &Context) -> Result<Action> {
    let ns = ws
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let name = ws.name_any();
    let now = Utc::now();
    let policy = ctx.config.policy(ws.spec.plan);
    let (activity, signal) = last_activity(ws);
    let signal_time = signal.map(to_time);

    // 1. Validate (pure). A bad spec waits for the next edit: no retry loop at all.
    if let Err(errors) = ws.validate(&policy) {
        return report_invalid(ws, &errors, "Validate", signal_time, now, ctx).await;
    }

    // 2. Resolve references.
    let (model_url, model_endpoint, model_state) = match resolve_model(ws, &ns, ctx).await? {
        ModelResolution::Resolved {
            url,
            endpoint,
            state,
        } => (url, endpoint, state),
        ModelResolution::Missing { reason, message } => {
            let model = ModelState {
                ready: false,
                reason,
                message: message.clone(),
            };
            let facts = Facts::Missing {
                reason,
                message: message.clone(),
                model,
            };
            if write_status(ws, &facts, signal_time, now, ctx).await? {
                ctx.event(ws, EventType::Warning, reason, "Resolve", message)
                    .await;
            }
            // A ModelEndpoint that appears triggers a reconcile through its watch; a Secret is
            // looked at again with a growing delay.
            return Ok(Action::requeue(backoff(
                ctx.failed(&format!("{}/missing", key(ws))),
            )));
        }
    };

    // 3. Build (pure).
    let runtime = ws.effective_runtime(&policy);
    let state = wakefulness(ws.status.as_ref());
    let (sleep, mut wake_check) =
        hibernation(ws.spec.suspend, ws.idle_timeout(), activity, state, now);
    let inputs = AgentInputs {
        workspace: ws,
        config: &ctx.config,
        policy,
        runtime,
        model: agent::model_target(ws, &ctx.config, model_url),
        model_endpoint,
        awake: sleep == Sleep::Awake,
    };
    let config_map = match agent::build_config_map(&inputs) {
        Ok(cm) => cm,
        Err(Error::InvalidSpec(errors)) => {
            return report_invalid(ws, &errors, "RenderConfig", signal_time, now, ctx).await;
        }
        Err(e) => return Err(e),
    };
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let token = secrets
        .get_opt(&names::gateway_token_secret(&name))
        .await?
        .and_then(|s| s.data?.get(names::GATEWAY_TOKEN_KEY).map(|v| v.0.clone()))
        .and_then(|v| String::from_utf8(v).ok())
        .filter(|t| !t.is_empty())
        .unwrap_or_else(agent::generate_token);
    let deployment = agent::build_deployment(&inputs, &agent::config_hash(&config_map))?;
    let service_account = agent::build_service_account(ws)?;
    let secret = agent::build_gateway_secret(ws, &token)?;
    let existing_volume = volume_as_it_is(ctx, &ns, &name).await?;
    let mut volume = storage::plan(&ws.spec.storage.size, existing_volume.as_ref());
    let mut pvc = agent::build_pvc_sized(ws, true, &volume.request)?;
    let service = agent::build_service(ws)?;
    let network_policy = agent::build_network_policy(&inputs)?;

    // 4. Apply. A volume that grows goes first: the API server alone knows whether its
    // StorageClass lets it (allowVolumeExpansion); refused, it stays at its size and the
    // StorageSized condition says why, and the rest goes on.
    if volume.grows
        && let Some(existing) = &existing_volume
        && let Err(e) = apply(ctx, &pvc).await
    {
        match e {
            Error::Kube(kube::Error::Api(refusal)) if [403, 422].contains(&refusal.code) => {
                warn!(message = %refusal.message, "volume expansion refused");
                volume = storage::refused(existing, &ws.spec.storage.size, &refusal.message);
                pvc = agent::build_pvc_sized(ws, true, &volume.request)?;
            }
            e => return Err(e),
        }
    }
    // The children are independent; the workload goes last so that its volumes and config
    // exist when its pod starts.
    let (_, _, _, _, applied_service, _) = futures::try_join!(
        apply(ctx, &service_account),
        apply(ctx, &config_map),
        apply(ctx, &secret),
        apply(ctx, &pvc),
        apply(ctx, &service),
        apply(ctx, &network_policy),
    )?;
    let applied: Deployment = apply(ctx, &deployment).await?;

    // 5. Status.
    let agent_ready = sleep == Sleep::Awake
        && applied
            .status
            .as_ref()
            .and_then(|s| s.ready_replicas)
            .unwrap_or(0)
            >= 1;
    // A pod that is not ready may never be (no image, a crash loop, no volume): the Deployment
    // does not say so, its pods do. Looked at only while the agent is awake and not ready.
    let (agent_failure, deciding) = if sleep == Sleep::Awake && !agent_ready {
        let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
        let selector = names::agent_selector(&name)
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        let list = pods.list(&ListParams::default().labels(&selector)).await?;
        (
            pod_failure(&list.items, now),
            pods_still_deciding(&list.items),
        )
    } else {
        (None, false)
    };
    let failure_event = agent_failure.clone();
    let facts = Facts::Provisioned {
        model: model_state,
        sleep,
        agent_ready,
        agent_failure,
        url: service_url(
            ctx.config.service_addresses,
            names::agent_url(&name, &ns),
            &applied_service,
            names::AGENT_PORT,
            "",
        )
        .unwrap_or_else(|| names::agent_url(&name, &ns)),
        runtime,
        storage: StorageState {
            sized: volume.sized,
            reason: volume.reason,
            message: volume.message,
        },
    };
    let old_phase = ws.status.as_ref().map(|s| s.phase);
    let changed = write_status(ws, &facts, signal_time, now, ctx).await?;
    if agent_ready && !matches!(state, Wakefulness::Ready(_)) {
        // Ready as of now: the idle clock starts here (status changes bring no reconcile).
        wake_check = ws.idle_timeout().map(|t| t + Duration::from_secs(1));
    }
    ctx.succeeded(&format!("{}/missing", key(ws)));
    if let Some(failure) = failure_event
        && changed
    {
        warn!(%failure, "agent pod cannot run");
        ctx.event(
            ws,
            EventType::Warning,
            REASON_AGENT_NOT_RUNNING,
            "Start",
            failure,
        )
        .await;
    }
    // Failing pods, and pods still being placed or started, are looked at again with a growing
    // delay (2 s to 5 min): the Deployment's status says nothing until a pod becomes ready (a
    // pod scheduled after the last Deployment event, then stuck pulling its image, was never
    // reported). A pod kept off every node on purpose costs no reconciles.
    let agent_key = format!("{}/agent", key(ws));
    let starting = facts_failing(&facts) || deciding;
    let agent_check = if starting {
        Some(backoff(ctx.failed(&agent_key)))
    } else {
        ctx.succeeded(&agent_key);
        None
    };
    match (old_phase, sleep) {
        (Some(p), Sleep::Idle | Sleep::Suspended) if p != Phase::Hibernated => {
            info!("hibernated");
            ctx.event(
                ws,
                EventType::Normal,
                "Hibernated",
                "Scale",
                "scaled the agent to zero".into(),
            )
            .await;
        }
        (Some(Phase::Hibernated), Sleep::Awake) => {
            info!("woken");
            ctx.event(
                ws,
                EventType::Normal,
                "Woken",
                "Scale",
                "scaled the agent back up".into(),
            )
            .await;
        }
        _ => {}
    }
    // Look again at the idle deadline; otherwise changes arrive through the watches, and an
    // hourly pass catches anything missed.
    Ok(Action::requeue(
        wake_check
            .unwrap_or(Duration::from_secs(3600))
            .min(agent_check.unwrap_or(Duration::from_secs(3600)))
            .min(Duration::from_secs(3600)),
    ))
}

/// The tenant volume's claim as the API server has it, if it exists.
async fn volume_as_it_is(ctx: &Context, ns: &str, name: &str) -> Result<Option<ExistingVolume>> {
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), ns);
    Ok(pvcs
        .get_opt(&names::agent(name))
        .await?
        .as_ref()
        .and_then(ExistingVolume::of))
}

fn facts_failing(facts: &Facts) -> bool {
    matches!(
        facts,
        Facts::Provisioned {
            agent_failure: Some(_),
            ..
        }
    )
}

/// A spec that cannot be reconciled as written: a Failed status naming every problem and one
/// Warning event per change of it. It waits for the next edit: no retry loop at all.
async fn report_invalid(
    ws: &UserWorkspace,
    errors: &[String],
    action: &str,
    last_activity: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    now: DateTime<Utc>,
    ctx: &Context,
) -> Result<Action> {
    let message = format!("invalid spec: {}", errors.join("; "));
    let facts = Facts::Invalid {
        message: message.clone(),
    };
    if write_status(ws, &facts, last_activity, now, ctx).await? {
        ctx.event(ws, EventType::Warning, REASON_INVALID_SPEC, action, message)
            .await;
    }
    Ok(Action::await_change())
}

/// Writes the status when it differs from the current one. Returns whether it changed, so that
/// events are published once per change rather than once per reconcile.
async fn write_status(
    ws: &UserWorkspace,
    facts: &Facts,
    last_activity: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    now: DateTime<Utc>,
    ctx: &Context,
) -> Result<bool> {
    let old = ws.status.as_ref();
    let new = workspace_status(old, facts, ws.meta().generation, last_activity, now);
    ctx.metrics.set_phase(&key(ws), Some(new.phase));
    if old == Some(&new) {
        return Ok(false);
    }
    let changed_meaning = old.is_none_or(|o| !same_meaning(o, &new));
    let api: Api<UserWorkspace> = Api::namespaced(
        ctx.client.clone(),
        &ws.namespace()
            .ok_or(Error::MissingField("metadata.namespace"))?,
    );
    let patch = serde_json::json!({
        "apiVersion": "clawdbot.io/v1alpha1",
        "kind": "UserWorkspace",
        "status": new,
    });
    api.patch_status(
        &ws.name_any(),
        &PatchParams::apply(names::FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(changed_meaning)
}

/// Whether two statuses say the same thing (ignoring times), so that events fire only when
/// something a person would care about changed.
fn same_meaning(a: &UserWorkspaceStatus, b: &UserWorkspaceStatus) -> bool {
    a.phase == b.phase
        && a.conditions.len() == b.conditions.len()
        && a.conditions.iter().zip(&b.conditions).all(|(x, y)| {
            x.type_ == y.type_
                && x.status == y.status
                && x.reason == y.reason
                && x.message == y.message
        })
}

/// Deletion: honour the volume's retention policy, then let garbage collection remove the
/// owned children. Idempotent: a second run finds nothing left to do.
async fn cleanup(ws: &UserWorkspace, ctx: &Context) -> Result<Action> {
    let ns = ws
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ns);
    let pvc_name = names::agent(&ws.name_any());
    ctx.metrics.set_phase(&key(ws), None);
    let Some(pvc) = pvcs.get_opt(&pvc_name).await? else {
        return Ok(Action::await_change());
    };
    match ws.spec.storage.retention {
        RetentionPolicy::Retain => {
            let owned = pvc
                .owner_references()
                .iter()
                .any(|o| Some(&o.uid) == ws.meta().uid.as_ref());
            if owned {
                // Re-applying without the owner reference releases the volume from garbage
                // collection; it keeps its labels so it can be found and restored.
                // At its own size: the spec's may differ (never shrink, maybe not grown).
                let size = ExistingVolume::of(&pvc)
                    .map_or_else(|| ws.spec.storage.size.clone(), |v| v.request);
                apply(ctx, &agent::build_pvc_sized(ws, false, &size)?).await?;
                ctx.event(
                    ws,
                    EventType::Normal,
                    "VolumeRetained",
                    "Delete",
                    format!("kept PersistentVolumeClaim {pvc_name} (retention: Retain)"),
                )
                .await;
            }
        }
        RetentionPolicy::Delete => {
            if pvc.metadata.deletion_timestamp.is_none() {
                pvcs.delete(&pvc_name, &DeleteParams::background()).await?;
                ctx.event(
                    ws,
                    EventType::Normal,
                    "VolumeDeleted",
                    "Delete",
                    format!("deleted PersistentVolumeClaim {pvc_name} (retention: Delete)"),
                )
                .await;
            }
        }
    }
    Ok(Action::await_change())
}
