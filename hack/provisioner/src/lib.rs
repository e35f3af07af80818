//! The development node's volume provisioner: for every pending claim of a StorageClass whose
//! provisioner is [`PROVISIONER`], once the scheduler has picked the node
//! (`WaitForFirstConsumer`), a directory under the root and a `local` PersistentVolume bound to
//! that claim; a released volume is deleted (directory included) when its reclaim policy says
//! `Delete`, and kept otherwise.
//!
//! Why `local` and not `hostPath`: the kubelet applies a pod's `fsGroup` to `local` volumes, so
//! a non-root pod under the restricted Pod Security settings can write its volume; the
//! controller-manager's hostPath provisioner makes root-owned 0750 directories it cannot.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{
    LocalVolumeSource, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, ObjectReference,
    PersistentVolume, PersistentVolumeClaim, PersistentVolumeSpec, VolumeNodeAffinity,
};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::ResourceExt;
use kube::api::ObjectMeta;

/// The `provisioner` a StorageClass names to be served by this program.
pub const PROVISIONER: &str = "clawdbot.io/local";
/// Set by the PV controller on a claim it leaves to an external provisioner.
pub const ANN_STORAGE_PROVISIONER: &str = "volume.beta.kubernetes.io/storage-provisioner";
/// Set by the scheduler on a `WaitForFirstConsumer` claim once its pod has a node.
pub const ANN_SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
/// Marks the volumes this program made (and may delete).
pub const ANN_PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";
const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("kubeconfig: {0}")]
    Kubeconfig(#[from] kube::config::KubeconfigError),
    #[error("volume directory {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Name of the volume made for a claim (the convention of Kubernetes' own provisioners).
pub fn volume_name(claim_uid: &str) -> String {
    format!("pvc-{claim_uid}")
}

/// The directory of a claim's volume: readable by a person (`<namespace>_<claim>`), unique
/// by the claim's uid.
pub fn volume_dir(root: &Path, pvc: &PersistentVolumeClaim) -> PathBuf {
    root.join(format!(
        "{}_{}_{}",
        pvc.namespace().unwrap_or_default(),
        pvc.name_any(),
        pvc.uid().unwrap_or_default()
    ))
}

/// Whether this program should make a volume for `pvc` on `node` now: it is pending, left to
/// this provisioner, and its pod was scheduled here.
pub fn wants_volume(pvc: &PersistentVolumeClaim, node: &str) -> bool {
    let ann = pvc.annotations();
    let pending = pvc
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .is_none_or(|p| p == "Pending");
    pending
        && pvc
            .spec
            .as_ref()
            .and_then(|s| s.volume_name.as_ref())
            .is_none()
        && ann.get(ANN_STORAGE_PROVISIONER).map(String::as_str) == Some(PROVISIONER)
        && ann.get(ANN_SELECTED_NODE).map(String::as_str) == Some(node)
        && pvc.metadata.deletion_timestamp.is_none()
}

/// The `local` PersistentVolume for `pvc`, pinned to `node`, pre-bound to the claim.
pub fn build_volume(
    pvc: &PersistentVolumeClaim,
    class: &StorageClass,
    node: &str,
    dir: &Path,
) -> PersistentVolume {
    let spec = pvc.spec.clone().unwrap_or_default();
    let size = spec
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage").cloned())
        .unwrap_or_else(|| Quantity("1Gi".into()));
    PersistentVolume {
        metadata: ObjectMeta {
            name: Some(volume_name(&pvc.uid().unwrap_or_default())),
            annotations: Some(BTreeMap::from([(
                ANN_PROVISIONED_BY.to_string(),
                PROVISIONER.to_string(),
            )])),
            ..Default::default()
        },
        spec: Some(PersistentVolumeSpec {
            capacity: Some(BTreeMap::from([("storage".to_string(), size)])),
            access_modes: spec.access_modes.clone(),
            volume_mode: spec.volume_mode.clone(),
            storage_class_name: class.metadata.name.clone(),
            persistent_volume_reclaim_policy: Some(
                class
                    .reclaim_policy
                    .clone()
                    .unwrap_or_else(|| "Delete".into()),
            ),
            local: Some(LocalVolumeSource {
                path: dir.display().to_string(),
                fs_type: None,
            }),
            node_affinity: Some(VolumeNodeAffinity {
                required: Some(NodeSelector {
                    node_selector_terms: vec![NodeSelectorTerm {
                        match_expressions: Some(vec![NodeSelectorRequirement {
                            key: HOSTNAME_LABEL.into(),
                            operator: "In".into(),
                            values: Some(vec![node.to_string()]),
                        }]),
                        ..Default::default()
                    }],
                }),
            }),
            claim_ref: Some(ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("PersistentVolumeClaim".into()),
                namespace: pvc.namespace(),
                name: Some(pvc.name_any()),
                uid: pvc.uid(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        status: None,
    }
}

/// Whether `pv` is one of ours, released by its claim, and to be deleted.
pub fn should_delete(pv: &PersistentVolume) -> bool {
    let ours = pv.annotations().get(ANN_PROVISIONED_BY).map(String::as_str) == Some(PROVISIONER);
    let released = pv
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .is_some_and(|p| p == "Released" || p == "Failed");
    let delete = pv
        .spec
        .as_ref()
        .and_then(|s| s.persistent_volume_reclaim_policy.as_deref())
        == Some("Delete");
    ours && released && delete && pv.metadata.deletion_timestamp.is_none()
}

/// The directory of one of our volumes, if it lies under `root` (never delete anything else).
pub fn owned_dir(pv: &PersistentVolume, root: &Path) -> Option<PathBuf> {
    let path = PathBuf::from(&pv.spec.as_ref()?.local.as_ref()?.path);
    (path.parent() == Some(root)).then_some(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(annotations: serde_json::Value) -> PersistentVolumeClaim {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "data", "namespace": "t1", "uid": "u-1", "annotations": annotations},
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "local",
                     "resources": {"requests": {"storage": "2Gi"}}},
            "status": {"phase": "Pending"}
        }))
        .unwrap_or_else(|e| panic!("claim: {e}"))
    }

    fn class() -> StorageClass {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "local"}, "provisioner": PROVISIONER, "reclaimPolicy": "Delete"
        }))
        .unwrap_or_else(|e| panic!("class: {e}"))
    }

    #[test]
    fn a_claim_gets_a_volume_only_once_its_pod_has_our_node() {
        let ours = serde_json::json!({ANN_STORAGE_PROVISIONER: PROVISIONER});
        assert!(!wants_volume(&claim(ours), "node1"));
        let scheduled =
            serde_json::json!({ANN_STORAGE_PROVISIONER: PROVISIONER, ANN_SELECTED_NODE: "node1"});
        assert!(wants_volume(&claim(scheduled.clone()), "node1"));
        assert!(!wants_volume(&claim(scheduled), "node2"));
        let other =
            serde_json::json!({ANN_STORAGE_PROVISIONER: "x.io/y", ANN_SELECTED_NODE: "node1"});
        assert!(!wants_volume(&claim(other), "node1"));
    }

    #[test]
    fn the_volume_is_local_pinned_to_the_node_and_bound_to_the_claim() {
        let root = Path::new("/v");
        let pvc = claim(serde_json::json!({}));
        let dir = volume_dir(root, &pvc);
        assert_eq!(dir, Path::new("/v/t1_data_u-1"));
        let pv = build_volume(&pvc, &class(), "node1", &dir);
        assert_eq!(pv.metadata.name.as_deref(), Some("pvc-u-1"));
        let spec = pv.spec.as_ref().unwrap_or_else(|| panic!("spec"));
        assert_eq!(
            spec.capacity.as_ref().and_then(|c| c.get("storage")),
            Some(&Quantity("2Gi".into()))
        );
        assert_eq!(
            spec.local.as_ref().map(|l| l.path.as_str()),
            Some("/v/t1_data_u-1")
        );
        assert_eq!(
            spec.claim_ref.as_ref().and_then(|c| c.uid.as_deref()),
            Some("u-1")
        );
        assert_eq!(
            spec.persistent_volume_reclaim_policy.as_deref(),
            Some("Delete")
        );
        assert_eq!(owned_dir(&pv, root), Some(dir));
        assert_eq!(owned_dir(&pv, Path::new("/elsewhere")), None);
    }

    #[test]
    fn only_our_released_volumes_with_delete_are_deleted() {
        let pvc = claim(serde_json::json!({}));
        let mut pv = build_volume(&pvc, &class(), "node1", Path::new("/v/x"));
        assert!(!should_delete(&pv));
        pv.status = Some(k8s_openapi::api::core::v1::PersistentVolumeStatus {
            phase: Some("Released".into()),
            ..Default::default()
        });
        assert!(should_delete(&pv));
        if let Some(s) = pv.spec.as_mut() {
            s.persistent_volume_reclaim_policy = Some("Retain".into());
        }
        assert!(!should_delete(&pv));
    }
}
