//! Types shared by the operator, the router and the agent runtimes.
//!
//! Keeping the CRDs, the naming rules for a tenant's objects and the router<->agent wire types
//! in one crate means the three binaries cannot drift apart: a renamed field breaks the build,
//! not production.

pub mod conversations;
pub mod gateway;
pub mod lite;
pub mod model_endpoint;
pub mod names;
pub mod plan;
pub mod workspace;

pub use model_endpoint::{ModelEndpoint, ModelEndpointSpec, ModelEndpointStatus};
pub use plan::{Plan, PlanPolicy, Plans};
pub use workspace::{UserWorkspace, UserWorkspaceSpec, UserWorkspaceStatus};

/// API group of every clawdbot CRD.
pub const GROUP: &str = "clawdbot.io";
/// The one served and stored version.
pub const VERSION: &str = "v1alpha1";

/// Condition types and reasons, as constants so that writers and readers agree.
pub mod conditions {
    pub const READY: &str = "Ready";
    pub const PROVISIONED: &str = "Provisioned";
    pub const MODEL_READY: &str = "ModelReady";
    pub const HIBERNATED: &str = "Hibernated";
    /// Whether the tenant volume has the size the spec (the plan) asks for.
    pub const STORAGE_SIZED: &str = "StorageSized";

    pub const REASON_RECONCILED: &str = "Reconciled";
    pub const REASON_INVALID_SPEC: &str = "InvalidSpec";
    pub const REASON_MODEL_ENDPOINT_MISSING: &str = "ModelEndpointMissing";
    pub const REASON_MODEL_ENDPOINT_NOT_READY: &str = "ModelEndpointNotReady";
    pub const REASON_SECRET_MISSING: &str = "SecretMissing";
    pub const REASON_AGENT_STARTING: &str = "AgentStarting";
    pub const REASON_AGENT_READY: &str = "AgentReady";
    /// The agent's pod cannot run (image missing, crash loop, volume not bound): the message
    /// carries the kubelet's or the scheduler's reason.
    pub const REASON_AGENT_NOT_RUNNING: &str = "AgentNotRunning";
    pub const REASON_IDLE: &str = "Idle";
    pub const REASON_AWAKE: &str = "Awake";
    pub const REASON_SUSPENDED: &str = "Suspended";
    pub const REASON_EXTERNAL_PROVIDER: &str = "ExternalProvider";
    pub const REASON_APPLY_FAILED: &str = "ApplyFailed";
    pub const REASON_REPLICAS_READY: &str = "ReplicasReady";
    pub const REASON_REPLICAS_NOT_READY: &str = "ReplicasNotReady";
    /// The volume has the requested size (or is growing to it).
    pub const REASON_SIZED: &str = "Sized";
    /// The volume is larger than requested: claims never shrink.
    pub const REASON_LARGER_THAN_REQUESTED: &str = "LargerThanRequested";
    /// The volume can grow only once bound.
    pub const REASON_VOLUME_NOT_BOUND: &str = "VolumeNotBound";
    /// The API server refused to grow the claim (its StorageClass lacks
    /// `allowVolumeExpansion`).
    pub const REASON_EXPANSION_NOT_ALLOWED: &str = "ExpansionNotAllowed";
}

/// Annotations that other components write on a UserWorkspace. The router never writes the
/// status (the operator owns it); it leaves these small, rare signals instead.
pub mod annotations {
    /// RFC 3339 time of the tenant's last message, written by the router at most once per
    /// activity window (not per message). A value newer than the hibernation time wakes a
    /// hibernated workspace.
    pub const LAST_ACTIVITY: &str = "clawdbot.io/last-activity";
}
