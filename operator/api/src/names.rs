//! Names, labels and well-known keys of the objects the operator creates for a tenant.
//! The router and the agents find those objects through these functions alone.

use std::collections::BTreeMap;

/// Field manager for every server-side apply of the operator.
pub const FIELD_MANAGER: &str = "clawdbot-operator";
/// `app.kubernetes.io/managed-by` value on every object the operator owns.
pub const MANAGED_BY: &str = "clawdbot-operator";
/// Finalizer that keeps a UserWorkspace until its retention policy has been honoured.
pub const WORKSPACE_FINALIZER: &str = "clawdbot.io/workspace-cleanup";

/// Label carrying the workspace name on every child object (selectors and reflectors use it).
pub const LABEL_WORKSPACE: &str = "clawdbot.io/workspace";
/// Label carrying the ModelEndpoint name on its children.
pub const LABEL_MODEL_ENDPOINT: &str = "clawdbot.io/model-endpoint";
/// Label on pods that may call agent pods (the router). The tenant NetworkPolicy admits only it.
pub const LABEL_ROUTER: &str = "clawdbot.io/router";
/// Label selecting the tenant gateway-token Secrets, so the router can watch only those.
pub const LABEL_SECRET_KIND: &str = "clawdbot.io/secret-kind";
pub const SECRET_KIND_GATEWAY_TOKEN: &str = "gateway-token";

/// Key of the bearer token in the tenant's gateway Secret.
pub const GATEWAY_TOKEN_KEY: &str = "token";
/// Keys of the user's own provider keys in the Secret referenced by `spec.keysSecretRef`.
pub const OPENAI_API_KEY: &str = "OPENAI_API_KEY";
pub const ANTHROPIC_API_KEY: &str = "ANTHROPIC_API_KEY";

/// Port the agent container listens on and its Service exposes (OpenClaw's gateway default).
pub const AGENT_PORT: u16 = 18789;
/// Where the tenant volume is mounted in the agent container.
pub const DATA_MOUNT: &str = "/data";
/// Where the agent config is mounted.
pub const CONFIG_MOUNT: &str = "/etc/clawdbot";
/// Where the gateway token Secret is mounted.
pub const TOKEN_MOUNT: &str = "/var/run/clawdbot/token";
/// Where the user's provider keys are mounted.
pub const KEYS_MOUNT: &str = "/var/run/clawdbot/keys";
/// File name of the lite agent's config inside the ConfigMap.
pub const LITE_CONFIG_FILE: &str = "agent.json";
/// File name of OpenClaw's config inside the ConfigMap.
pub const OPENCLAW_CONFIG_FILE: &str = "openclaw.json";

/// Name shared by the tenant's ServiceAccount, ConfigMap, PVC, workload, Service and
/// NetworkPolicy. A prefix keeps them apart from anything else in the namespace.
pub fn agent(workspace: &str) -> String {
    format!("claw-{workspace}")
}

/// Name of the Secret holding the per-tenant gateway token.
pub fn gateway_token_secret(workspace: &str) -> String {
    format!("claw-{workspace}-gateway")
}

/// Name of the ModelEndpoint a workspace with a dedicated model owns.
pub fn dedicated_model_endpoint(workspace: &str) -> String {
    format!("{workspace}-model")
}

/// Name of a ModelEndpoint's Deployment and Service.
pub fn model_server(endpoint: &str) -> String {
    format!("mep-{endpoint}")
}

/// In-cluster base URL of a tenant's agent, as the router calls it.
pub fn agent_url(workspace: &str, namespace: &str) -> String {
    format!("http://{}.{namespace}.svc:{AGENT_PORT}", agent(workspace))
}

/// The recommended `app.kubernetes.io/*` labels for a tenant's objects, plus the workspace label.
pub fn workspace_labels(workspace: &str, component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".into(), "clawdbot-agent".into()),
        ("app.kubernetes.io/instance".into(), workspace.to_string()),
        ("app.kubernetes.io/component".into(), component.to_string()),
        ("app.kubernetes.io/part-of".into(), "clawdbot-cloud".into()),
        ("app.kubernetes.io/managed-by".into(), MANAGED_BY.into()),
        (LABEL_WORKSPACE.into(), workspace.to_string()),
    ])
}

/// Labels selecting a tenant's agent pods (stable: a selector cannot change after creation).
pub fn agent_selector(workspace: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".into(), "clawdbot-agent".into()),
        (LABEL_WORKSPACE.into(), workspace.to_string()),
    ])
}

/// The field manager one replica writes a leader-election Lease with: `prefix` and the
/// replica's identity, cut to the API server's 128 bytes. It must differ between replicas:
/// kube-lease-manager relies on the API server's conflict between two managers to stop two
/// replicas taking a free Lease at the same moment (one shared manager would let both win).
pub fn lease_field_manager(prefix: &str, identity: &str) -> String {
    let mut name = format!("{prefix}-{identity}");
    let mut end = name.len().min(128);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    name.truncate(end);
    name
}

/// `app.kubernetes.io/name` of a ModelEndpoint's children.
pub const MODEL_SERVER_APP: &str = "clawdbot-model-server";

/// The recommended labels for a ModelEndpoint's objects.
pub fn model_endpoint_labels(endpoint: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".into(), MODEL_SERVER_APP.into()),
        ("app.kubernetes.io/instance".into(), endpoint.to_string()),
        ("app.kubernetes.io/component".into(), "model-server".into()),
        ("app.kubernetes.io/part-of".into(), "clawdbot-cloud".into()),
        ("app.kubernetes.io/managed-by".into(), MANAGED_BY.into()),
        (LABEL_MODEL_ENDPOINT.into(), endpoint.to_string()),
    ])
}

/// Labels selecting a ModelEndpoint's server pods.
pub fn model_endpoint_selector(endpoint: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".into(), MODEL_SERVER_APP.into()),
        (LABEL_MODEL_ENDPOINT.into(), endpoint.to_string()),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_replica_writes_a_lease_as_its_own_field_manager() {
        assert_eq!(
            lease_field_manager("clawdbot-router", "router-7d9f"),
            "clawdbot-router-router-7d9f"
        );
        assert_ne!(
            lease_field_manager(FIELD_MANAGER, "operator-a"),
            lease_field_manager(FIELD_MANAGER, "operator-b")
        );
        let long = lease_field_manager("x", &"é".repeat(100));
        assert!(
            long.len() <= 128 && long.starts_with("x-é"),
            "{}",
            long.len()
        );
    }
}
