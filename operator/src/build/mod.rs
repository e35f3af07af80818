//! Pure functions that build the desired Kubernetes objects. No I/O: everything they need is
//! in their arguments, so each is unit-tested and snapshot-tested without a cluster.

pub mod agent;
pub mod model;
pub mod storage;
pub mod tenant;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, PodSecurityContext, SeccompProfile, SecurityContext, Service,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;

use crate::config::ServiceAddresses;
use crate::error::{Error, Result};

/// The base URL the operator writes for a Service: `dns_url` (its DNS name) or, without
/// cluster DNS, `http://<clusterIP>:<port><path>` from the applied Service (None until the API
/// server has allocated the address).
pub fn service_url(
    mode: ServiceAddresses,
    dns_url: String,
    applied: &Service,
    port: u16,
    path: &str,
) -> Option<String> {
    match mode {
        ServiceAddresses::Dns => Some(dns_url),
        ServiceAddresses::ClusterIp => applied
            .spec
            .as_ref()
            .and_then(|s| s.cluster_ip.as_deref())
            .filter(|ip| !ip.is_empty() && *ip != "None")
            .map(|ip| format!("http://{ip}:{port}{path}")),
    }
}

/// The URL to write for a Service the operator may not have applied this time: from the
/// server's answer when it did, else the URL written before (an unchanged Service keeps its
/// ClusterIP; a recreated one is applied again), else the DNS name.
pub fn applied_service_url(
    mode: ServiceAddresses,
    dns_url: String,
    applied: Option<&Service>,
    written: Option<String>,
    port: u16,
    path: &str,
) -> String {
    match (mode, applied) {
        (ServiceAddresses::Dns, _) => dns_url,
        (ServiceAddresses::ClusterIp, Some(svc)) => {
            service_url(mode, dns_url.clone(), svc, port, path).unwrap_or(dns_url)
        }
        (ServiceAddresses::ClusterIp, None) => written.unwrap_or(dns_url),
    }
}

/// Metadata of a child object: name, namespace, labels and the controller owner reference.
pub(crate) fn child_meta<K: Resource<DynamicType = ()>>(
    owner: &K,
    name: String,
    labels: BTreeMap<String, String>,
) -> Result<ObjectMeta> {
    Ok(ObjectMeta {
        name: Some(name),
        namespace: Some(
            owner
                .meta()
                .namespace
                .clone()
                .ok_or(Error::MissingField("metadata.namespace"))?,
        ),
        labels: Some(labels),
        owner_references: Some(vec![owner_ref(owner)?]),
        ..ObjectMeta::default()
    })
}

pub(crate) fn owner_ref<K: Resource<DynamicType = ()>>(owner: &K) -> Result<OwnerReference> {
    owner
        .controller_owner_ref(&())
        .ok_or(Error::MissingField("metadata.uid"))
}

/// Container security context of the `restricted` Pod Security Standard.
pub(crate) fn restricted_container() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            add: None,
        }),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            localhost_profile: None,
        }),
        ..SecurityContext::default()
    }
}

/// Pod security context of the `restricted` Pod Security Standard; uid/gid 10001 own the volume.
pub(crate) fn restricted_pod() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(10001),
        run_as_group: Some(10001),
        fs_group: Some(10001),
        fs_group_change_policy: Some("OnRootMismatch".into()),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            localhost_profile: None,
        }),
        ..PodSecurityContext::default()
    }
}
