//! ModelEndpoint reconcile: validate -> build (pure) -> apply -> status.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use clawdbot_api::conditions::*;
use clawdbot_api::model_endpoint::{ModelEndpoint, ModelEndpointStatus};
use clawdbot_api::names;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use tracing::{instrument, warn};

use super::{Context, Unknown, apply_changed, apply_if_changed, key};
use crate::build::applied_service_url;
use crate::build::model::{
    build_cache_pvc, build_server_deployment, build_server_service, endpoint_url,
};
use crate::build::tenant::stamp;
use crate::error::{Error, Result, backoff};
use crate::status::set_condition;

pub const CONTROLLER: &str = "modelendpoint";

#[instrument(skip_all, fields(endpoint = %key(ep.as_ref())))]
pub async fn reconcile(ep: Arc<ModelEndpoint>, ctx: Arc<Context>) -> Result<Action> {
    let started = Instant::now();
    let result = apply_endpoint(&ep, &ctx).await;
    ctx.metrics.reconciled(
        CONTROLLER,
        started.elapsed(),
        result.as_ref().map(|_| ()).map_err(Error::category),
    );
    if result.is_ok() {
        ctx.succeeded(&key(ep.as_ref()));
    }
    result
}

pub fn error_policy(ep: Arc<ModelEndpoint>, err: &Error, ctx: Arc<Context>) -> Action {
    let delay = backoff(ctx.failed(&key(ep.as_ref())));
    warn!(endpoint = %key(ep.as_ref()), error = %err, category = err.category(), retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

async fn apply_endpoint(ep: &ModelEndpoint, ctx: &Context) -> Result<Action> {
    let now = Utc::now();
    let generation = ep.meta().generation;
    let mut status = ep.status.clone().unwrap_or_default();
    status.observed_generation = generation;

    if let Err(errors) = ep.validate() {
        let message = format!("invalid spec: {}", errors.join("; "));
        set_condition(
            &mut status.conditions,
            READY,
            false,
            REASON_INVALID_SPEC,
            message.clone(),
            generation,
            now,
        );
        if write_status(ep, status, ctx).await? {
            ctx.event(
                ep,
                EventType::Warning,
                REASON_INVALID_SPEC,
                "Validate",
                message,
            )
            .await;
        }
        return Ok(Action::await_change());
    }

    // A reconcile that only sees its own status echo, or a Deployment's status that moved,
    // writes nothing: children are applied only when their desired object changed or drifted.
    if let Some(pvc) = build_cache_pvc(ep)? {
        apply_changed(ctx, &stamp(pvc)?, Unknown::Apply).await?;
    }
    let (service, deployment) = (
        stamp(build_server_service(ep)?)?,
        stamp(build_server_deployment(ep, &ctx.config)?)?,
    );
    let (applied_service, ready) = futures::try_join!(
        apply_if_changed(ctx, &service, Unknown::Apply),
        apply_changed::<Deployment>(ctx, &deployment, Unknown::Apply)
    )?;
    let ready = ready.unwrap_or(0).clamp(0, i64::from(i32::MAX)) as i32;
    status.ready_replicas = ready;
    status.url = Some(applied_service_url(
        ctx.config.service_addresses,
        endpoint_url(ep)?,
        applied_service.as_ref(),
        status.url.take(),
        ep.spec.engine.port(),
        "/v1",
    ));
    status.served_models = ep.spec.models.iter().map(|m| m.name.clone()).collect();
    if ready > 0 {
        set_condition(
            &mut status.conditions,
            READY,
            true,
            REASON_REPLICAS_READY,
            format!("{ready} of {} replicas ready", ep.spec.replicas),
            generation,
            now,
        );
    } else {
        set_condition(
            &mut status.conditions,
            READY,
            false,
            REASON_REPLICAS_NOT_READY,
            format!(
                "0 of {} replicas ready (loading weights or waiting for a GPU node)",
                ep.spec.replicas
            ),
            generation,
            now,
        );
    }
    write_status(ep, status, ctx).await?;
    Ok(Action::requeue(Duration::from_secs(3600)))
}

/// Writes the status when it changed; returns whether it did.
async fn write_status(
    ep: &ModelEndpoint,
    status: ModelEndpointStatus,
    ctx: &Context,
) -> Result<bool> {
    if ep.status.as_ref() == Some(&status) {
        return Ok(false);
    }
    let ns = ep
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let api: Api<ModelEndpoint> = Api::namespaced(ctx.client.clone(), &ns);
    let patch = serde_json::json!({"apiVersion": "clawdbot.io/v1alpha1", "kind": "ModelEndpoint", "status": status});
    api.patch_status(
        &ep.name_any(),
        &PatchParams::apply(names::FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(true)
}
