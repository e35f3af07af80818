//! The size of the tenant volume. The spec's `storage.size` is what the plan gives (the
//! accounts service writes it from the plan); a volume grows to it only where it can:
//! Kubernetes never shrinks a claim, grows one only once it is bound, and only where its
//! StorageClass sets `allowVolumeExpansion` (the API server's PersistentVolumeClaimResize
//! admission refuses the rest). What cannot be done is reported as the `StorageSized`
//! condition instead of failing the whole reconcile.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use clawdbot_api::conditions::{
    REASON_EXPANSION_NOT_ALLOWED, REASON_LARGER_THAN_REQUESTED, REASON_SIZED,
    REASON_VOLUME_NOT_BOUND,
};
use clawdbot_api::workspace::quantity_bytes;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// The claim as it is on the cluster.
#[derive(Clone, Debug, PartialEq)]
pub struct ExistingVolume {
    pub request: Quantity,
    pub bound: bool,
    pub storage_class: Option<String>,
}

impl ExistingVolume {
    pub fn of(pvc: &PersistentVolumeClaim) -> Option<Self> {
        let spec = pvc.spec.as_ref()?;
        let request = spec.resources.as_ref()?.requests.as_ref()?.get("storage")?;
        Some(ExistingVolume {
            request: request.clone(),
            bound: pvc.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound"),
            storage_class: spec.storage_class_name.clone(),
        })
    }
}

/// What to apply, and what to say about it.
#[derive(Clone, Debug, PartialEq)]
pub struct VolumePlan {
    /// The storage request to apply.
    pub request: Quantity,
    /// Whether `request` grows the claim (the API server may still refuse it: see
    /// [`refused`]).
    pub grows: bool,
    pub sized: bool,
    pub reason: &'static str,
    pub message: String,
}

/// The request for a volume the spec wants at `wanted`, given the claim as it is (if any).
pub fn plan(wanted: &Quantity, existing: Option<&ExistingVolume>) -> VolumePlan {
    let sized = |request: &Quantity, grows| VolumePlan {
        request: request.clone(),
        grows,
        sized: true,
        reason: REASON_SIZED,
        message: format!("the volume requests {}", request.0),
    };
    let Some(v) = existing else {
        return sized(wanted, false);
    };
    let (Some(want), Some(have)) = (quantity_bytes(wanted), quantity_bytes(&v.request)) else {
        return sized(&v.request, false);
    };
    if want == have {
        return sized(&v.request, false);
    }
    if want < have {
        return VolumePlan {
            request: v.request.clone(),
            grows: false,
            sized: true,
            reason: REASON_LARGER_THAN_REQUESTED,
            message: format!(
                "the volume stays at {} (volumes do not shrink); the agent keeps to {}",
                v.request.0, wanted.0
            ),
        };
    }
    if !v.bound {
        return VolumePlan {
            request: v.request.clone(),
            grows: false,
            sized: false,
            reason: REASON_VOLUME_NOT_BOUND,
            message: format!(
                "the volume grows from {} to {} once it is bound",
                v.request.0, wanted.0
            ),
        };
    }
    sized(wanted, true)
}

/// The plan after the API server refused to grow the claim (`why`, its message): the claim
/// stays at its size, and the condition says why.
pub fn refused(existing: &ExistingVolume, wanted: &Quantity, why: &str) -> VolumePlan {
    let class = existing.storage_class.as_deref().unwrap_or("(default)");
    VolumePlan {
        request: existing.request.clone(),
        grows: false,
        sized: false,
        reason: REASON_EXPANSION_NOT_ALLOWED,
        message: format!(
            "the volume stays at {}: growing it to {} was refused (storage class {class} must set allowVolumeExpansion): {why}",
            existing.request.0, wanted.0
        ),
    }
}

/// How long a refused growth stands as the answer before the API server is asked again: the
/// class may have been changed to allow expansion since, and the next reconcile after this
/// grows the volume.
pub const ASK_AGAIN_AFTER: Duration = Duration::from_secs(10 * 60);

/// The growths the API server refused, by claim (`namespace/name`), so that a tenant whose
/// volume cannot grow is not asked about on every reconcile (a refused request each time,
/// for an answer that has not changed). The same question is asked again once the claim or the
/// wanted size changes, or [`ASK_AGAIN_AFTER`] has passed. Kept in memory: a restarted
/// operator asks once more.
#[derive(Debug, Default)]
pub struct Refusals(Mutex<HashMap<String, Refusal>>);

#[derive(Debug)]
struct Refusal {
    existing: ExistingVolume,
    wanted: Quantity,
    why: String,
    at: Instant,
}

impl Refusals {
    /// The refusal's message, when this same growth was refused less than
    /// [`ASK_AGAIN_AFTER`] before `now`.
    pub fn recall(
        &self,
        claim: &str,
        existing: &ExistingVolume,
        wanted: &Quantity,
        now: Instant,
    ) -> Option<String> {
        let refusals = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let r = refusals.get(claim)?;
        (r.existing == *existing
            && r.wanted == *wanted
            && now.saturating_duration_since(r.at) < ASK_AGAIN_AFTER)
            .then(|| r.why.clone())
    }

    pub fn remember(
        &self,
        claim: &str,
        existing: &ExistingVolume,
        wanted: &Quantity,
        why: &str,
        now: Instant,
    ) {
        let refusal = Refusal {
            existing: existing.clone(),
            wanted: wanted.clone(),
            why: why.to_string(),
            at: now,
        };
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(claim.to_string(), refusal);
    }

    /// Drops what is known of `claim` (it grew, or its workspace is gone).
    pub fn forget(&self, claim: &str) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(claim);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Quantity {
        Quantity(s.into())
    }

    fn volume(request: &str, bound: bool) -> ExistingVolume {
        ExistingVolume {
            request: q(request),
            bound,
            storage_class: Some("standard".into()),
        }
    }

    #[test]
    fn a_new_volume_is_made_at_the_wanted_size() {
        let p = plan(&q("10Gi"), None);
        assert_eq!((p.request, p.grows, p.sized), (q("10Gi"), false, true));
    }

    #[test]
    fn a_bound_volume_grows_and_an_unbound_one_waits() {
        let p = plan(&q("10Gi"), Some(&volume("1Gi", true)));
        assert_eq!((p.request, p.grows, p.sized), (q("10Gi"), true, true));
        let p = plan(&q("10Gi"), Some(&volume("1Gi", false)));
        assert_eq!((&p.request, p.grows, p.sized), (&q("1Gi"), false, false));
        assert_eq!(p.reason, REASON_VOLUME_NOT_BOUND);
    }

    #[test]
    fn a_volume_never_shrinks_and_equal_sizes_in_other_units_are_equal() {
        let p = plan(&q("1Gi"), Some(&volume("10Gi", true)));
        assert_eq!((&p.request, p.grows, p.sized), (&q("10Gi"), false, true));
        assert_eq!(p.reason, REASON_LARGER_THAN_REQUESTED);
        let p = plan(&q("1073741824"), Some(&volume("1Gi", true)));
        assert_eq!(
            (p.request, p.grows, p.reason),
            (q("1Gi"), false, REASON_SIZED)
        );
    }

    #[test]
    fn a_refused_growth_stands_until_the_question_or_enough_time_changes() {
        let refusals = Refusals::default();
        let (then, have) = (Instant::now(), volume("1Gi", true));
        refusals.remember("ns/agent-a", &have, &q("10Gi"), "forbidden", then);
        let recall = |claim, have: &ExistingVolume, wanted: &str, after| {
            refusals.recall(claim, have, &q(wanted), then + after)
        };
        let soon = Duration::from_secs(60);
        assert_eq!(
            recall("ns/agent-a", &have, "10Gi", soon).as_deref(),
            Some("forbidden")
        );
        // Another claim, another wanted size, a claim that changed: a new question.
        assert_eq!(recall("ns/agent-b", &have, "10Gi", soon), None);
        assert_eq!(recall("ns/agent-a", &have, "20Gi", soon), None);
        assert_eq!(
            recall("ns/agent-a", &volume("2Gi", true), "10Gi", soon),
            None
        );
        // The class may allow it by now.
        assert_eq!(recall("ns/agent-a", &have, "10Gi", ASK_AGAIN_AFTER), None);
        refusals.forget("ns/agent-a");
        assert_eq!(recall("ns/agent-a", &have, "10Gi", soon), None);
    }

    #[test]
    fn a_refused_growth_keeps_the_size_and_names_the_class() {
        let p = refused(&volume("1Gi", true), &q("10Gi"), "forbidden");
        assert_eq!((&p.request, p.sized), (&q("1Gi"), false));
        assert!(p.message.contains("standard") && p.message.contains("allowVolumeExpansion"));
    }
}
