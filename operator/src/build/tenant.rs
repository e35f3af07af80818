//! All of a tenant's desired objects in one pure step, each stamped with the hash of what it
//! says, so that the apply step can leave alone a child whose desired object did not change
//! (see [`changes`](crate::changes)).

use clawdbot_api::model_endpoint::ModelEndpoint;
use clawdbot_api::workspace::{RetentionPolicy, UserWorkspace};
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolumeClaim, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::Resource;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::agent::{self, AgentInputs};
use crate::changes::DESIRED_HASH;
use crate::error::{Error, Result};

/// Every object a tenant should have.
#[derive(Clone, Debug)]
pub struct TenantObjects {
    pub service_account: ServiceAccount,
    pub config_map: ConfigMap,
    /// The gateway-token Secret without its token: the token is the one thing here that is
    /// not derived from the workspace (it is generated once and kept), so the apply step adds
    /// it ([`with_token`]) and only when it applies the Secret at all.
    pub gateway_secret: Secret,
    pub pvc: PersistentVolumeClaim,
    pub deployment: Deployment,
    pub service: Service,
    pub network_policy: NetworkPolicy,
    /// The ModelEndpoint of a workspace with `model.dedicated`.
    pub dedicated_endpoint: Option<ModelEndpoint>,
}

/// Builds every desired object of a tenant from the resolved inputs (checked with
/// [`agent::check`] first, so that no spec makes it fail) and the volume size that
/// `storage::plan` decided.
pub fn build_tenant(inputs: &AgentInputs<'_>, volume: &Quantity) -> Result<TenantObjects> {
    let ws = inputs.workspace;
    let config_map = agent::build_config_map(inputs)?;
    let deployment = agent::build_deployment(inputs, &agent::config_hash(&config_map))?;
    let mut gateway_secret = agent::build_gateway_secret(ws, "")?;
    gateway_secret.data = None;
    Ok(TenantObjects {
        service_account: stamp(agent::build_service_account(ws)?)?,
        config_map: stamp(config_map)?,
        gateway_secret: stamp(gateway_secret)?,
        pvc: volume_claim(ws, volume)?,
        deployment: stamp(deployment)?,
        service: stamp(agent::build_service(ws)?)?,
        network_policy: stamp(agent::build_network_policy(inputs)?)?,
        dedicated_endpoint: agent::build_dedicated_endpoint(ws)?
            .map(stamp)
            .transpose()?,
    })
}

/// The tenant's volume claim at `size`: part of [`build_tenant`], and built again at the size
/// the claim keeps when the API server refuses to grow it.
///
/// The retention policy is carried by the owner reference, as a StatefulSet's
/// `persistentVolumeClaimRetentionPolicy` is: `Delete` makes the workspace the claim's owner,
/// so garbage collection removes it with the workspace; `Retain` leaves it unowned, so it
/// outlives the workspace and a workspace of the same name takes it up again. No finalizer
/// is needed, and a new tenant is spared its write (issue 15).
pub fn volume_claim(ws: &UserWorkspace, size: &Quantity) -> Result<PersistentVolumeClaim> {
    let owned = ws.spec.storage.retention == RetentionPolicy::Delete;
    stamp(agent::build_pvc_sized(ws, owned, size)?)
}

/// The gateway-token Secret with its token.
pub fn with_token(mut secret: Secret, token: &str) -> Secret {
    secret.data = Some(
        [(
            clawdbot_api::names::GATEWAY_TOKEN_KEY.to_string(),
            ByteString(token.as_bytes().to_vec()),
        )]
        .into(),
    );
    secret
}

/// Puts the hash of what an object says into its [`DESIRED_HASH`] annotation.
pub fn stamp<K: Resource + Serialize>(mut obj: K) -> Result<K> {
    let text = serde_json::to_vec(&obj).map_err(|source| Error::Serialize {
        what: "desired object",
        source,
    })?;
    let hash = hex::encode(&Sha256::digest(&text)[..8]);
    obj.meta_mut()
        .annotations
        .get_or_insert_default()
        .insert(DESIRED_HASH.to_string(), hash);
    Ok(obj)
}
