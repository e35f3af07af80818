//! Pure status computation: conditions, phase and the hibernation decision. The reconciler
//! gathers facts; these functions turn them into the status to write.

use std::time::Duration;

use chrono::{DateTime, Utc};
use clawdbot_api::conditions::*;
use clawdbot_api::plan::Runtime;
use clawdbot_api::workspace::{Phase, UserWorkspaceStatus};
use k8s_openapi::api::core::v1::{Pod, PodCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

/// Converts a chrono time into the API's `Time`.
pub fn to_time(t: DateTime<Utc>) -> Time {
    let ts = Timestamp::from_second(t.timestamp()).unwrap_or(Timestamp::UNIX_EPOCH);
    Time(ts)
}

/// Converts the API's `Time` into chrono.
pub fn from_time(t: &Time) -> DateTime<Utc> {
    DateTime::from_timestamp(t.0.as_second(), 0).unwrap_or_default()
}

/// Sets a condition, keeping `lastTransitionTime` unless the status itself changed.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
    now: DateTime<Utc>,
) {
    let status = if status { "True" } else { "False" }.to_string();
    let message = message.into();
    if let Some(c) = conditions.iter_mut().find(|c| c.type_ == type_) {
        if c.status != status {
            c.last_transition_time = to_time(now);
        }
        c.status = status;
        c.reason = reason.to_string();
        c.message = message;
        c.observed_generation = generation;
    } else {
        conditions.push(Condition {
            type_: type_.to_string(),
            status,
            reason: reason.to_string(),
            message,
            observed_generation: generation,
            last_transition_time: to_time(now),
        });
    }
}

/// Whether an agent should sleep: it is suspended, or idle past its timeout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sleep {
    Awake,
    Suspended,
    Idle,
}

/// Where the agent stands, as the last status written says: what the idle clock starts from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wakefulness {
    /// Scaled up, its pod not ready yet and not failing (or no status yet).
    Starting,
    /// Ready since this time.
    Ready(DateTime<Utc>),
    /// Hibernated since this time.
    Asleep(DateTime<Utc>),
    /// Hibernated, suspended, failing, or waiting for a reference.
    Other,
}

/// Reads [`Wakefulness`] from a workspace's status.
pub fn wakefulness(status: Option<&UserWorkspaceStatus>) -> Wakefulness {
    let Some(status) = status else {
        return Wakefulness::Starting;
    };
    if status.phase == Phase::Hibernated
        && let Some(since) = &status.hibernated_since
    {
        return Wakefulness::Asleep(from_time(since));
    }
    let ready = status.conditions.iter().find(|c| c.type_ == READY);
    match ready {
        Some(c) if c.status == "True" => Wakefulness::Ready(from_time(&c.last_transition_time)),
        Some(c) if status.phase != Phase::Hibernated && c.reason == REASON_AGENT_STARTING => {
            Wakefulness::Starting
        }
        _ => Wakefulness::Other,
    }
}

/// Decides whether a workspace sleeps, and when to look again if it is awake.
/// `last_activity` is the newest of the router's activity signal and the creation time.
///
/// Idle means no activity for the timeout while the agent could answer: an agent still
/// starting is never put to sleep, and a ready one counts from the later of its last activity
/// and the moment it became ready. Counting from the wake signal alone, a pod that took longer
/// than the timeout to start was scaled down just before it could answer the message that woke
/// it, and the router's held message went round wake after wake (seen in the wake benchmark
/// with an 8 s timeout on a busy machine: waits of the router's whole 60 s hold).
///
/// An agent asleep wakes on any activity newer than its falling asleep (the router's wake
/// signal), however late the reconcile that sees it: judged by the idle clock alone, a wake
/// signal the operator got to after more than the timeout (a busy API server) was itself idle
/// and the tenant stayed asleep with a message waiting.
pub fn hibernation(
    suspend: bool,
    idle_timeout: Option<Duration>,
    last_activity: DateTime<Utc>,
    state: Wakefulness,
    now: DateTime<Utc>,
) -> (Sleep, Option<Duration>) {
    if suspend {
        return (Sleep::Suspended, None);
    }
    let Some(timeout) = idle_timeout else {
        return (Sleep::Awake, None);
    };
    let clock = match state {
        // The agent's readiness (a pod watch) brings the next reconcile.
        Wakefulness::Starting => return (Sleep::Awake, None),
        Wakefulness::Ready(since) => last_activity.max(since),
        Wakefulness::Asleep(since) if last_activity > since => return (Sleep::Awake, None),
        Wakefulness::Asleep(_) | Wakefulness::Other => last_activity,
    };
    let idle = (now - clock).to_std().unwrap_or_default();
    if idle >= timeout {
        (Sleep::Idle, None)
    } else {
        // Look again right after the deadline.
        (Sleep::Awake, Some(timeout - idle + Duration::from_secs(1)))
    }
}

/// The model's state as the reconciler found it.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelState {
    pub ready: bool,
    pub reason: &'static str,
    pub message: String,
}

/// The tenant volume's size against the spec (see `build::storage`).
#[derive(Clone, Debug, PartialEq)]
pub struct StorageState {
    pub sized: bool,
    pub reason: &'static str,
    pub message: String,
}

/// What the reconciler found, in one place.
#[derive(Clone, Debug, PartialEq)]
pub enum Facts {
    /// The spec cannot be reconciled as written.
    Invalid { message: String },
    /// A referenced object does not exist (yet).
    Missing {
        reason: &'static str,
        message: String,
        model: ModelState,
    },
    /// Every child was applied.
    Provisioned {
        model: ModelState,
        sleep: Sleep,
        agent_ready: bool,
        /// Why the agent's pod cannot run, when it cannot (see [`pod_failure`]).
        agent_failure: Option<String>,
        url: String,
        runtime: Runtime,
        storage: StorageState,
    },
}

/// Container states in which a pod will not become ready without a change (or a long wait):
/// what the kubelet reports for a missing image, a crash loop, a bad config reference.
const STUCK_CONTAINER_REASONS: &[&str] = &[
    "ErrImagePull",
    "ImagePullBackOff",
    "ErrImageNeverPull",
    "InvalidImageName",
    "CrashLoopBackOff",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
];

/// How long a pod may stay unscheduled before that counts as a failure (a volume being
/// provisioned takes a moment).
const UNSCHEDULABLE_GRACE: Duration = Duration::from_secs(20);

/// Whether a scheduler message names something the tenant's pod lacks (a volume, memory,
/// CPU), rather than a node it was kept off on purpose (a node selector, a taint).
fn unschedulable_for_good(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("volume") || m.contains("insufficient")
}

/// Why the agent's pods cannot run, in the kubelet's (or scheduler's) words, or None while
/// they are merely starting.
pub fn pod_failure(pods: &[Pod], now: DateTime<Utc>) -> Option<String> {
    pods.iter().find_map(|pod| {
        let name = pod.metadata.name.as_deref().unwrap_or("pod");
        let status = pod.status.as_ref()?;
        let stuck = status
            .container_statuses
            .iter()
            .chain(status.init_container_statuses.iter())
            .flatten()
            .find_map(|c| {
                let waiting = c.state.as_ref()?.waiting.as_ref()?;
                let reason = waiting.reason.as_deref()?;
                STUCK_CONTAINER_REASONS.contains(&reason).then(|| {
                    format!(
                        "pod {name}: {reason}: {}",
                        waiting.message.as_deref().unwrap_or("")
                    )
                })
            });
        stuck.or_else(|| {
            let (c, waited) = kept_off_nodes(pod, now)?;
            (waited >= UNSCHEDULABLE_GRACE).then(|| {
                format!(
                    "pod {name}: {}: {}",
                    c.reason.as_deref().unwrap_or("Unschedulable"),
                    c.message.as_deref().unwrap_or("")
                )
            })
        })
    })
}

/// How long until a pod that the scheduler keeps off every node for want of something (a
/// volume, memory) has waited [`UNSCHEDULABLE_GRACE`] and counts as failing: the one change of
/// [`pod_failure`] that no watch event brings, so the reconcile looks again then.
pub fn unschedulable_wait(pods: &[Pod], now: DateTime<Utc>) -> Option<Duration> {
    pods.iter()
        .filter_map(|pod| {
            let (_, waited) = kept_off_nodes(pod, now)?;
            UNSCHEDULABLE_GRACE
                .checked_sub(waited)
                .filter(|d| !d.is_zero())
        })
        .min()
}

/// The scheduler's condition on a pod it keeps off every node for want of something that
/// will not come by itself, and how long the pod has waited so far.
fn kept_off_nodes(pod: &Pod, now: DateTime<Utc>) -> Option<(&PodCondition, Duration)> {
    let c = pod.status.as_ref()?.conditions.iter().flatten().find(|c| {
        c.type_ == "PodScheduled"
            && c.status == "False"
            && c.message.as_deref().is_some_and(unschedulable_for_good)
    })?;
    let since = c.last_transition_time.as_ref().map(from_time)?;
    Some((c, (now - since).to_std().unwrap_or_default()))
}

/// What of one pod may make [`pod_failure`] say something: its failure as if the grace for
/// an unschedulable pod had passed. A pod whose trouble changes is worth a reconcile; one that
/// is merely created, scheduled or started is not (its readiness comes through the
/// Deployment's ready replicas).
pub fn pod_trouble(pod: &Pod) -> Option<String> {
    pod_failure(std::slice::from_ref(pod), DateTime::<Utc>::MAX_UTC)
}

/// The little of a pod that [`pod_failure`] and [`unschedulable_wait`] read, for the
/// operator's cache of agent pods (a full pod is about ten times larger).
pub fn pod_facts(pod: &Pod) -> Pod {
    use k8s_openapi::api::core::v1::{ContainerStatus, PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    let containers = |statuses: &Option<Vec<ContainerStatus>>| {
        statuses.as_ref().map(|cs| {
            cs.iter()
                .map(|c| ContainerStatus {
                    name: c.name.clone(),
                    state: c.state.clone(),
                    ..ContainerStatus::default()
                })
                .collect()
        })
    };
    Pod {
        metadata: ObjectMeta {
            name: pod.metadata.name.clone(),
            ..ObjectMeta::default()
        },
        spec: pod.spec.as_ref().map(|s| PodSpec {
            node_name: s.node_name.clone(),
            ..PodSpec::default()
        }),
        status: pod.status.as_ref().map(|s| PodStatus {
            conditions: s.conditions.clone(),
            container_statuses: containers(&s.container_statuses),
            init_container_statuses: containers(&s.init_container_statuses),
            ..PodStatus::default()
        }),
    }
}

/// Whether the agent's pods may still turn out ready or failed without the Deployment saying
/// so: none made yet, one the scheduler has not looked at, one on a node (starting, pulling,
/// crash-looping) or one unschedulable for want of something it may still get. The operator
/// looks again at these with a growing delay. A pod kept off every node on purpose (a node
/// selector no node matches) is not: nothing changes for it until something else does.
pub fn pods_still_deciding(pods: &[Pod]) -> bool {
    pods.is_empty()
        || pods.iter().any(|pod| {
            let on_a_node = pod.spec.as_ref().is_some_and(|s| s.node_name.is_some());
            let scheduled = pod
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .and_then(|c| c.iter().find(|c| c.type_ == "PodScheduled"));
            on_a_node
                || match scheduled {
                    None => true,
                    Some(c) => {
                        c.status == "False"
                            && c.message.as_deref().is_some_and(unschedulable_for_good)
                    }
                }
        })
}

/// The status to write, from the old status, the facts and the time.
pub fn workspace_status(
    old: Option<&UserWorkspaceStatus>,
    facts: &Facts,
    generation: Option<i64>,
    last_activity: Option<Time>,
    now: DateTime<Utc>,
) -> UserWorkspaceStatus {
    let mut status = old.cloned().unwrap_or_default();
    status.observed_generation = generation;
    status.last_activity_time = last_activity.or(status.last_activity_time);
    let c = &mut status.conditions;
    match facts {
        Facts::Invalid { message } => {
            status.phase = Phase::Failed;
            set_condition(
                c,
                READY,
                false,
                REASON_INVALID_SPEC,
                message.clone(),
                generation,
                now,
            );
            set_condition(
                c,
                PROVISIONED,
                false,
                REASON_INVALID_SPEC,
                message.clone(),
                generation,
                now,
            );
        }
        Facts::Missing {
            reason,
            message,
            model,
        } => {
            status.phase = Phase::Pending;
            set_condition(c, READY, false, reason, message.clone(), generation, now);
            set_condition(
                c,
                PROVISIONED,
                false,
                reason,
                message.clone(),
                generation,
                now,
            );
            set_condition(
                c,
                MODEL_READY,
                model.ready,
                model.reason,
                model.message.clone(),
                generation,
                now,
            );
        }
        Facts::Provisioned {
            model,
            sleep,
            agent_ready,
            agent_failure,
            url,
            runtime,
            storage,
        } => {
            status.url = Some(url.clone());
            status.runtime = Some(*runtime);
            set_condition(
                c,
                STORAGE_SIZED,
                storage.sized,
                storage.reason,
                storage.message.clone(),
                generation,
                now,
            );
            set_condition(
                c,
                PROVISIONED,
                true,
                REASON_RECONCILED,
                "all tenant objects are applied",
                generation,
                now,
            );
            set_condition(
                c,
                MODEL_READY,
                model.ready,
                model.reason,
                model.message.clone(),
                generation,
                now,
            );
            match sleep {
                Sleep::Awake => {
                    status.hibernated_since = None;
                    set_condition(
                        c,
                        HIBERNATED,
                        false,
                        REASON_AWAKE,
                        "the agent is scaled up",
                        generation,
                        now,
                    );
                    if *agent_ready {
                        status.phase = Phase::Running;
                        set_condition(
                            c,
                            READY,
                            true,
                            REASON_AGENT_READY,
                            "the agent answers",
                            generation,
                            now,
                        );
                    } else if let Some(failure) = agent_failure {
                        status.phase = Phase::Failed;
                        set_condition(
                            c,
                            READY,
                            false,
                            REASON_AGENT_NOT_RUNNING,
                            failure.clone(),
                            generation,
                            now,
                        );
                    } else {
                        status.phase = Phase::Provisioning;
                        set_condition(
                            c,
                            READY,
                            false,
                            REASON_AGENT_STARTING,
                            "waiting for the agent pod to become ready",
                            generation,
                            now,
                        );
                    }
                }
                Sleep::Suspended | Sleep::Idle => {
                    let (reason, message) = if *sleep == Sleep::Suspended {
                        (
                            REASON_SUSPENDED,
                            "spec.suspend is true; the agent is scaled to zero",
                        )
                    } else {
                        (
                            REASON_IDLE,
                            "idle past spec.idleTimeout; the next message wakes it",
                        )
                    };
                    status.phase = Phase::Hibernated;
                    if status.hibernated_since.is_none() {
                        status.hibernated_since = Some(to_time(now));
                    }
                    set_condition(c, HIBERNATED, true, reason, message, generation, now);
                    set_condition(c, READY, false, reason, message, generation, now);
                }
            }
        }
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + secs, 0).single().unwrap()
    }

    fn model_ok() -> ModelState {
        ModelState {
            ready: true,
            reason: REASON_REPLICAS_READY,
            message: "ok".into(),
        }
    }

    fn provisioned(sleep: Sleep, agent_ready: bool) -> Facts {
        Facts::Provisioned {
            model: model_ok(),
            sleep,
            agent_ready,
            agent_failure: None,
            url: "http://x".into(),
            runtime: Runtime::Lite,
            storage: storage_ok(),
        }
    }

    fn storage_ok() -> StorageState {
        StorageState {
            sized: true,
            reason: REASON_SIZED,
            message: "ok".into(),
        }
    }

    #[test]
    fn transition_time_changes_only_with_status() {
        let mut c = vec![];
        set_condition(&mut c, READY, false, "A", "m1", Some(1), t(0));
        set_condition(&mut c, READY, false, "B", "m2", Some(2), t(10));
        assert_eq!(c.len(), 1);
        assert_eq!(from_time(&c[0].last_transition_time), t(0));
        assert_eq!(
            (c[0].reason.as_str(), c[0].observed_generation),
            ("B", Some(2))
        );
        set_condition(&mut c, READY, true, "C", "m3", Some(2), t(20));
        assert_eq!(from_time(&c[0].last_transition_time), t(20));
    }

    #[test]
    fn hibernation_decisions() {
        let timeout = Some(Duration::from_secs(60));
        let other = Wakefulness::Other;
        assert_eq!(
            hibernation(true, timeout, t(0), other, t(1)),
            (Sleep::Suspended, None)
        );
        assert_eq!(
            hibernation(false, None, t(0), other, t(1_000_000)),
            (Sleep::Awake, None)
        );
        assert_eq!(
            hibernation(false, timeout, t(0), other, t(59)),
            (Sleep::Awake, Some(Duration::from_secs(2)))
        );
        assert_eq!(
            hibernation(false, timeout, t(0), other, t(60)),
            (Sleep::Idle, None)
        );
        // Activity in the future (clock skew) counts as now.
        assert_eq!(
            hibernation(false, timeout, t(100), other, t(50)).0,
            Sleep::Awake
        );
    }

    #[test]
    fn an_agent_is_idle_only_after_the_timeout_while_it_could_answer() {
        let timeout = Some(Duration::from_secs(8));
        // Woken at 0, still starting at 30: not put back to sleep before it answers.
        assert_eq!(
            hibernation(false, timeout, t(0), Wakefulness::Starting, t(30)),
            (Sleep::Awake, None)
        );
        // Ready since 12: the clock starts there, not at the wake signal.
        assert_eq!(
            hibernation(false, timeout, t(0), Wakefulness::Ready(t(12)), t(15)),
            (Sleep::Awake, Some(Duration::from_secs(6)))
        );
        assert_eq!(
            hibernation(false, timeout, t(0), Wakefulness::Ready(t(12)), t(20)),
            (Sleep::Idle, None)
        );
        // Asleep since 20: a wake signal at 21 wakes it even when looked at long after.
        assert_eq!(
            hibernation(false, timeout, t(21), Wakefulness::Asleep(t(20)), t(300)),
            (Sleep::Awake, None)
        );
        assert_eq!(
            hibernation(false, timeout, t(19), Wakefulness::Asleep(t(20)), t(300)),
            (Sleep::Idle, None)
        );
        // Suspended stays asleep whatever the activity.
        assert_eq!(
            hibernation(true, timeout, t(21), Wakefulness::Asleep(t(20)), t(22)),
            (Sleep::Suspended, None)
        );
        // Activity after it became ready counts from the activity.
        assert_eq!(
            hibernation(false, timeout, t(25), Wakefulness::Ready(t(12)), t(30)).0,
            Sleep::Awake
        );
    }

    #[test]
    fn wakefulness_comes_from_the_status() {
        assert_eq!(wakefulness(None), Wakefulness::Starting);
        let status = |phase, ready: bool, reason: &str| {
            let mut s = UserWorkspaceStatus {
                phase,
                ..UserWorkspaceStatus::default()
            };
            set_condition(&mut s.conditions, READY, ready, reason, "m", None, t(7));
            s
        };
        let running = status(Phase::Running, true, REASON_AGENT_READY);
        assert_eq!(wakefulness(Some(&running)), Wakefulness::Ready(t(7)));
        let starting = status(Phase::Provisioning, false, REASON_AGENT_STARTING);
        assert_eq!(wakefulness(Some(&starting)), Wakefulness::Starting);
        let failing = status(Phase::Failed, false, REASON_AGENT_NOT_RUNNING);
        assert_eq!(wakefulness(Some(&failing)), Wakefulness::Other);
        let mut asleep = status(Phase::Hibernated, false, REASON_IDLE);
        asleep.hibernated_since = Some(to_time(t(9)));
        assert_eq!(wakefulness(Some(&asleep)), Wakefulness::Asleep(t(9)));
    }

    #[test]
    fn phases_follow_facts() {
        let s = workspace_status(
            None,
            &Facts::Invalid {
                message: "bad".into(),
            },
            Some(1),
            None,
            t(0),
        );
        assert_eq!(s.phase, Phase::Failed);
        assert_eq!(s.observed_generation, Some(1));
        let missing = Facts::Missing {
            reason: REASON_MODEL_ENDPOINT_MISSING,
            message: "no endpoint".into(),
            model: ModelState {
                ready: false,
                reason: REASON_MODEL_ENDPOINT_MISSING,
                message: "no endpoint".into(),
            },
        };
        let s = workspace_status(Some(&s), &missing, Some(2), None, t(1));
        assert_eq!(s.phase, Phase::Pending);
        let ready = s.conditions.iter().find(|c| c.type_ == READY).unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", REASON_MODEL_ENDPOINT_MISSING)
        );
        let s = workspace_status(
            Some(&s),
            &provisioned(Sleep::Awake, false),
            Some(2),
            None,
            t(2),
        );
        assert_eq!(s.phase, Phase::Provisioning);
        let s = workspace_status(
            Some(&s),
            &provisioned(Sleep::Awake, true),
            Some(2),
            None,
            t(3),
        );
        assert_eq!(s.phase, Phase::Running);
        assert_eq!(s.url.as_deref(), Some("http://x"));
    }

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({"metadata": {"name": "p"}, "status": status}))
            .unwrap()
    }

    #[test]
    fn a_pod_that_cannot_run_is_reported_with_the_kubelets_reason() {
        let pulling = pod(
            serde_json::json!({"containerStatuses": [{"name": "agent", "image": "x",
            "imageID": "", "ready": false, "restartCount": 0,
            "state": {"waiting": {"reason": "ContainerCreating"}}}]}),
        );
        assert_eq!(pod_failure(&[pulling], t(0)), None);
        let missing = pod(
            serde_json::json!({"containerStatuses": [{"name": "agent", "image": "x",
            "imageID": "", "ready": false, "restartCount": 0,
            "state": {"waiting": {"reason": "ErrImageNeverPull", "message": "image x not present"}}}]}),
        );
        assert_eq!(
            pod_failure(&[missing], t(0)).as_deref(),
            Some("pod p: ErrImageNeverPull: image x not present")
        );
        let unscheduled = |since: i64| {
            pod(
                serde_json::json!({"conditions": [{"type": "PodScheduled", "status": "False",
                "reason": "Unschedulable", "message": "pod has unbound immediate PersistentVolumeClaims",
                "lastTransitionTime": t(since).to_rfc3339()}]}),
            )
        };
        assert_eq!(pod_failure(&[unscheduled(0)], t(5)), None);
        // Looked at again until it is placed or reported.
        assert!(pods_still_deciding(&[unscheduled(0)]));
        assert!(pods_still_deciding(&[]));
        assert!(pods_still_deciding(&[pod(serde_json::json!({}))]));
        let kept_off = pod(serde_json::json!({"conditions": [{"type": "PodScheduled",
            "status": "False", "reason": "Unschedulable",
            "message": "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity."}]}));
        assert!(!pods_still_deciding(&[kept_off]));
        assert!(
            pod_failure(&[unscheduled(0)], t(30))
                .is_some_and(|m| m.contains("Unschedulable: pod has unbound"))
        );
        let s = workspace_status(
            None,
            &Facts::Provisioned {
                model: model_ok(),
                sleep: Sleep::Awake,
                agent_ready: false,
                agent_failure: Some("pod p: CrashLoopBackOff: back-off".into()),
                url: "http://x".into(),
                runtime: Runtime::Lite,
                storage: storage_ok(),
            },
            Some(1),
            None,
            t(0),
        );
        assert_eq!(s.phase, Phase::Failed);
        let ready = s.conditions.iter().find(|c| c.type_ == READY).unwrap();
        assert_eq!(ready.reason, REASON_AGENT_NOT_RUNNING);
        assert!(ready.message.contains("CrashLoopBackOff"));
    }

    #[test]
    fn hibernation_sets_and_clears_since() {
        let s = workspace_status(None, &provisioned(Sleep::Idle, false), Some(1), None, t(5));
        assert_eq!(s.phase, Phase::Hibernated);
        assert_eq!(s.hibernated_since.as_ref().map(from_time), Some(t(5)));
        // A later reconcile while still asleep keeps the original time.
        let s = workspace_status(
            Some(&s),
            &provisioned(Sleep::Idle, false),
            Some(1),
            None,
            t(9),
        );
        assert_eq!(s.hibernated_since.as_ref().map(from_time), Some(t(5)));
        let hib = s.conditions.iter().find(|c| c.type_ == HIBERNATED).unwrap();
        assert_eq!(
            (hib.status.as_str(), hib.reason.as_str()),
            ("True", REASON_IDLE)
        );
        let s = workspace_status(
            Some(&s),
            &provisioned(Sleep::Awake, false),
            Some(1),
            None,
            t(10),
        );
        assert_eq!(s.hibernated_since, None);
        assert_eq!(s.phase, Phase::Provisioning);
    }
}
