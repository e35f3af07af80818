//! UserWorkspace reconcile: validate -> resolve references -> check -> build
//! every desired object (pure) -> apply what changed -> status (when it changed).
//!
//! A new tenant converges in one reconcile, and the echoes of the operator's own writes
//! (children, status) do not trigger another (see [`changes`](crate::changes)). What the
//! reconcile reads comes from the controller's watches (ModelEndpoints, the tenant volume, the
//! agent pods: [`cache`](crate::cache)), so a new tenant costs seven creates (its children do
//! not exist yet) and one status patch, and a tenant that did not change costs no request
//! (issue 15: about thirty requests in three reconciles per new tenant before). Deletion needs
//! no finalizer: the owner references carry it, the volume's following `storage.retention`.

use std::hash::{Hash, Hasher};
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
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Secret, Service};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use tracing::{info, instrument, warn};

use super::{Context, Unknown, apply, apply_changed, apply_if_changed, create, key};
use crate::build::agent::{self, AgentInputs};
use crate::build::applied_service_url;
use crate::build::model::endpoint_url;
use crate::build::storage::{self, ExistingVolume, VolumePlan};
use crate::build::tenant::{TenantObjects, build_tenant, volume_claim, with_token};
use crate::config::ServiceAddresses;
use crate::error::{Error, Result, backoff};
use crate::status::{
    Facts, ModelState, Sleep, StorageState, Wakefulness, from_time, hibernation, pod_failure,
    to_time, unschedulable_wait, wakefulness, workspace_status,
};

pub const CONTROLLER: &str = "userworkspace";

/// Entry point for the controller runtime.
#[instrument(skip_all, fields(tenant = %key(ws.as_ref())))]
pub async fn reconcile(ws: Arc<UserWorkspace>, ctx: Arc<Context>) -> Result<Action> {
    let started = Instant::now();
    let k = key(ws.as_ref());
    let result = reconcile_workspace(&ws, &ctx).await;
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

/// What in a UserWorkspace asks for a reconcile: everything but the status (the operator's
/// own status writes would otherwise reconcile every tenant again).
pub fn trigger(ws: &UserWorkspace) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    ws.metadata.generation.hash(&mut h);
    ws.annotations()
        .get(annotations::LAST_ACTIVITY)
        .hash(&mut h);
    ws.metadata
        .deletion_timestamp
        .as_ref()
        .map(|t| t.0.as_second())
        .hash(&mut h);
    ws.finalizers().hash(&mut h);
    // A status someone else removed or replaced is rewritten.
    ws.status.is_none().hash(&mut h);
    h.finish()
}

fn has_finalizer(ws: &UserWorkspace) -> bool {
    ws.finalizers()
        .iter()
        .any(|f| f == names::WORKSPACE_FINALIZER)
}

/// A tenant is applied until it is deleted; deletion is garbage collection's (every child is
/// owned by the workspace, the volume only under `retention: Delete`, see
/// [`volume_claim`]), so a new tenant carries no finalizer and is spared its write (issue 15).
/// A workspace that still carries the finalizer of an earlier operator is cleaned up by it
/// and let go.
async fn reconcile_workspace(ws: &UserWorkspace, ctx: &Context) -> Result<Action> {
    if ws.meta().deletion_timestamp.is_some() {
        if has_finalizer(ws) {
            cleanup(ws, ctx).await?;
            let rest: Vec<String> = ws
                .finalizers()
                .iter()
                .filter(|f| *f != names::WORKSPACE_FINALIZER)
                .cloned()
                .collect();
            set_finalizers(ws, rest, ctx).await?;
        }
        return Ok(Action::await_change());
    }
    apply_workspace(ws, ctx).await
}

/// A workspace is gone (its watch saw the deletion): its phase leaves the metrics and an event
/// says what became of its volume, which garbage collection removes under `retention: Delete`
/// and leaves alone under `Retain` (also for a workspace the legacy finalizer let go).
pub async fn deleted(ws: &UserWorkspace, ctx: &Context) {
    ctx.metrics.set_phase(&key(ws), None);
    let claim = names::agent(&ws.name_any());
    ctx.refused_growths.forget(&volume_key(ws));
    let (reason, note) = match ws.spec.storage.retention {
        RetentionPolicy::Retain => (
            "VolumeRetained",
            format!("kept PersistentVolumeClaim {claim} (retention: Retain)"),
        ),
        RetentionPolicy::Delete => (
            "VolumeDeleted",
            format!(
                "PersistentVolumeClaim {claim} is deleted with the workspace (retention: Delete)"
            ),
        ),
    };
    ctx.event(ws, EventType::Normal, reason, "Delete", note)
        .await;
}

/// Replaces the finalizers (only to remove the legacy one), on the version of the object that
/// was read (a conflict is retried through the error policy rather than overwriting someone
/// else's change).
async fn set_finalizers(
    ws: &UserWorkspace,
    finalizers: Vec<String>,
    ctx: &Context,
) -> Result<UserWorkspace> {
    let ns = ws
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let mut after = ws.clone();
    after.metadata.finalizers = Some(finalizers.clone());
    ctx.triggers.expect(&after, trigger);
    let api: Api<UserWorkspace> = Api::namespaced(ctx.client.clone(), &ns);
    let patch = serde_json::json!({
        "metadata": {
            "finalizers": finalizers,
            "resourceVersion": ws.resource_version(),
        }
    });
    Ok(api
        .patch(
            &ws.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?)
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

/// Reads what the workspace refers to: its ModelEndpoint (from the controller's cache) or the
/// user's key Secret (from the API: a user's Secrets are not watched).
async fn resolve_model(ws: &UserWorkspace, ns: &str, ctx: &Context) -> Result<ModelResolution> {
    let spec = &ws.spec.model;
    match spec.provider {
        ModelProvider::Platform => {
            let ep: Arc<ModelEndpoint> = if let Some(desired) = agent::build_dedicated_endpoint(ws)?
            {
                // Until it exists (the apply step makes it), the desired object describes it.
                ctx.endpoint(ns, &desired.name_any())
                    .await?
                    .unwrap_or_else(|| Arc::new(desired))
            } else if let Some(r) = &spec.endpoint_ref {
                match ctx.endpoint(ns, &r.name).await? {
                    Some(ep) => ep,
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
                return Err(Error::InvalidSpec(vec!["spec.model: no endpoint".into()]));
            };
            let state = endpoint_state(&ep, &spec.name);
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

/// Whether a platform ModelEndpoint serves the model and is ready.
fn endpoint_state(ep: &ModelEndpoint, model: &str) -> ModelState {
    if !ep.spec.models.iter().any(|m| m.name == model) {
        ModelState {
            ready: false,
            reason: REASON_MODEL_ENDPOINT_NOT_READY,
            message: format!(
                "ModelEndpoint {:?} does not serve model {model:?}",
                ep.name_any()
            ),
        }
    } else if ep.is_ready() {
        ModelState {
            ready: true,
            reason: REASON_REPLICAS_READY,
            message: format!("ModelEndpoint {:?} serves {model:?}", ep.name_any()),
        }
    } else {
        ModelState {
            ready: false,
            reason: REASON_MODEL_ENDPOINT_NOT_READY,
            message: format!("ModelEndpoint {:?} has no ready replica yet", ep.name_any()),
        }
    }
}

/// The tenant volume of `ws` as the volume index and the refused growths know it:
/// `namespace/claim`.
fn volume_key(ws: &UserWorkspace) -> String {
    format!(
        "{}/{}",
        ws.namespace().unwrap_or_default(),
        names::agent(&ws.name_any())
    )
}

/// What the apply step learned.
struct Applied {
    /// The workload's ready replicas.
    ready_replicas: i64,
    /// The Service as the server returned it when it was applied (its ClusterIP), `None` when
    /// it was unchanged.
    service: Option<Service>,
    /// The volume's size and what to say about it, after the API server's answer.
    volume: VolumePlan,
}

/// Applies every desired object of a tenant that changed since its last accepted apply.
///
/// A volume that grows goes first: the API server alone knows whether its StorageClass lets
/// it (allowVolumeExpansion); refused, it stays at its size, the StorageSized condition says
/// why, and the rest goes on. The other children are independent; the workload goes last so
/// that its volume and config exist when its pod starts.
async fn apply_tenant(
    ctx: &Context,
    ws: &UserWorkspace,
    desired: TenantObjects,
    mut volume: VolumePlan,
    existing_volume: Option<&ExistingVolume>,
) -> Result<Applied> {
    let TenantObjects {
        service_account,
        config_map,
        gateway_secret,
        mut pvc,
        deployment,
        service,
        network_policy,
        dedicated_endpoint,
    } = desired;
    if volume.grows
        && let Some(existing) = existing_volume
    {
        let wanted = &ws.spec.storage.size;
        let claim = volume_key(ws);
        let refusals = &ctx.refused_growths;
        let refused = match refusals.recall(&claim, existing, wanted, Instant::now()) {
            Some(why) => Some(why),
            None => match apply_changed(ctx, &pvc, Unknown::Apply).await {
                Ok(_) => {
                    refusals.forget(&claim);
                    None
                }
                Err(Error::Kube(kube::Error::Api(refusal)))
                    if [403, 422].contains(&refusal.code) =>
                {
                    warn!(message = %refusal.message, "volume expansion refused");
                    refusals.remember(&claim, existing, wanted, &refusal.message, Instant::now());
                    Some(refusal.message)
                }
                Err(e) => return Err(e),
            },
        };
        if let Some(why) = refused {
            volume = storage::refused(existing, wanted, &why);
            pvc = volume_claim(ws, &volume.request)?;
        }
    }
    // A workspace that never had a status has never been applied: its children do not exist
    // (one that does, say a retained volume, answers the create with a conflict and is
    // applied).
    let unknown = if ws.status.is_none() {
        Unknown::Create
    } else {
        Unknown::Apply
    };
    let (_, _, _, _, service, _, _) = futures::try_join!(
        apply_changed(ctx, &service_account, unknown),
        apply_changed(ctx, &config_map, unknown),
        apply_gateway_secret(ctx, gateway_secret),
        apply_changed(ctx, &pvc, unknown),
        apply_if_changed(ctx, &service, unknown),
        apply_changed(ctx, &network_policy, unknown),
        async {
            match &dedicated_endpoint {
                Some(ep) => apply_changed(ctx, ep, unknown).await,
                None => Ok(None),
            }
        },
    )?;
    let ready_replicas = apply_changed(ctx, &deployment, unknown).await?.unwrap_or(0);
    Ok(Applied {
        ready_replicas,
        service,
        volume,
    })
}

/// The gateway-token Secret keeps the token it has. A Secret the operator has no record of is
/// created with a new token (a new tenant: one request); only when it exists already (an
/// operator restart, or someone edited it) is its token read and the Secret applied again.
async fn apply_gateway_secret(ctx: &Context, secret: Secret) -> Result<Option<i64>> {
    if ctx.applied.unchanged(&secret).is_some() {
        return Ok(None);
    }
    let ns = secret.namespace().unwrap_or_default();
    let api = Api::<Secret>::namespaced(ctx.client.clone(), &ns);
    if !ctx.applied.known(&secret)
        && create(ctx, &with_token(secret.clone(), &agent::generate_token()))
            .await?
            .is_some()
    {
        return Ok(None);
    }
    let token = api
        .get_opt(&secret.name_any())
        .await?
        .and_then(|s| s.data?.remove(names::GATEWAY_TOKEN_KEY))
        .and_then(|v| String::from_utf8(v.0).ok())
        .filter(|t| !t.is_empty())
        .unwrap_or_else(agent::generate_token);
    apply(ctx, &with_token(secret, &token)).await?;
    Ok(None)
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

    // 3. Check what the resolved references make of the spec (pure): e.g. OpenClaw's limits
    // on the model's context window. Building cannot fail on a spec after this.
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
    if let Err(errors) = agent::check(&inputs) {
        return report_invalid(ws, &errors, "RenderConfig", signal_time, now, ctx).await;
    }
    let existing_volume = ctx.volumes.get(&volume_key(ws)).await?.pop();
    let volume = storage::plan(&ws.spec.storage.size, existing_volume.as_ref());

    // 4. Build (pure) and 5. apply.
    let desired = build_tenant(&inputs, &volume.request)?;
    let applied = apply_tenant(ctx, ws, desired, volume, existing_volume.as_ref()).await?;

    // 6. Status.
    let agent_ready = sleep == Sleep::Awake && applied.ready_replicas >= 1;
    // A pod that is not ready may never be (no image, a crash loop, no volume): the Deployment
    // does not say so, its pods do (from the controller's pod watch, which also brings the
    // reconcile when their trouble changes). Looked at only while the agent is awake and not
    // ready.
    let (agent_failure, unschedulable) = if sleep == Sleep::Awake && !agent_ready {
        let pods = ctx.agent_pods.get(&format!("{ns}/{name}")).await?;
        (pod_failure(&pods, now), unschedulable_wait(&pods, now))
    } else {
        (None, None)
    };
    let failure_event = agent_failure.clone();
    let facts = Facts::Provisioned {
        model: model_state,
        sleep,
        agent_ready,
        agent_failure,
        url: applied_service_url(
            ctx.config.service_addresses,
            names::agent_url(&ws.name_any(), &ws.namespace().unwrap_or_default()),
            applied.service.as_ref(),
            ws.status.as_ref().and_then(|s| s.url.clone()),
            names::AGENT_PORT,
            "",
        ),
        runtime,
        storage: StorageState {
            sized: applied.volume.sized,
            reason: applied.volume.reason,
            message: applied.volume.message,
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
    // Look again at the idle deadline, and when a pod kept off every node for want of a
    // volume or memory has waited long enough to count as failing; otherwise changes arrive
    // through the watches (the Deployment's ready replicas, the pods' trouble), and an hourly
    // pass catches anything missed.
    Ok(Action::requeue(
        [
            wake_check,
            unschedulable.map(|d| d + Duration::from_secs(1)),
        ]
        .into_iter()
        .flatten()
        .fold(Duration::from_secs(3600), Duration::min),
    ))
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
    if old.is_none() {
        let mut after = ws.clone();
        after.status = Some(new.clone());
        ctx.triggers.expect(&after, trigger);
    }
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

/// Deletion of a workspace that carries the legacy finalizer: the volume is made to follow
/// the retention policy now, in case no apply of this operator moved its owner reference yet
/// (the workspace was deleted before it ran); garbage collection does the rest, and
/// [`deleted`] reports it. Idempotent: a second run finds nothing left to do.
async fn cleanup(ws: &UserWorkspace, ctx: &Context) -> Result<()> {
    let ns = ws
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ns);
    let Some(pvc) = pvcs.get_opt(&names::agent(&ws.name_any())).await? else {
        return Ok(());
    };
    let owned = pvc
        .owner_references()
        .iter()
        .any(|o| Some(&o.uid) == ws.meta().uid.as_ref());
    match ws.spec.storage.retention {
        RetentionPolicy::Retain if owned => {
            // Re-applying without the owner reference releases the volume from garbage
            // collection; it keeps its labels so it can be found and restored.
            // At its own size: the spec's may differ (never shrink, maybe not grown).
            let size = ExistingVolume::of(&pvc)
                .map_or_else(|| ws.spec.storage.size.clone(), |v| v.request);
            apply(ctx, &agent::build_pvc_sized(ws, false, &size)?).await?;
        }
        RetentionPolicy::Delete if pvc.metadata.deletion_timestamp.is_none() => {
            pvcs.delete(&pvc.name_any(), &DeleteParams::background())
                .await?;
        }
        _ => {}
    }
    Ok(())
}
