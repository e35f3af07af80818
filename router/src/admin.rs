//! What the admin CLI does, as functions (the CLI and the tests call the same code).

use clawdbot_api::{Plan, UserWorkspace};
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

/// Field manager of the CLI's server-side applies.
pub const FIELD_MANAGER: &str = "clawdbot-admin";

/// Creates a user; returns their id.
pub async fn create_user(db: &PgPool, email: Option<&str>, plan: Plan) -> anyhow::Result<Uuid> {
    Ok(crate::store::create_user(db, email, plan).await?)
}

/// What a new workspace runs.
#[derive(Clone, Debug)]
pub struct WorkspaceRequest {
    pub namespace: String,
    pub name: String,
    pub owner: Uuid,
    pub plan: Plan,
    /// Model name, for example `qwen2.5-7b-instruct`.
    pub model: String,
    /// Shared ModelEndpoint in the namespace.
    pub endpoint: String,
    pub idle_timeout: Option<String>,
}

/// Applies a UserWorkspace for a user (server-side apply: running it again is harmless).
pub async fn apply_workspace(
    client: kube::Client,
    req: &WorkspaceRequest,
) -> anyhow::Result<UserWorkspace> {
    let mut spec = json!({
        "ownerId": req.owner.to_string(),
        "plan": req.plan.as_str(),
        "model": {"provider": "platform", "name": req.model, "endpointRef": {"name": req.endpoint}},
    });
    if let Some(t) = &req.idle_timeout {
        spec["idleTimeout"] = json!(t);
    }
    let ws: UserWorkspace = serde_json::from_value(json!({
        "apiVersion": format!("{}/{}", clawdbot_api::GROUP, clawdbot_api::VERSION),
        "kind": "UserWorkspace",
        "metadata": {"name": req.name, "namespace": req.namespace},
        "spec": spec,
    }))?;
    let api: Api<UserWorkspace> = Api::namespaced(client, &req.namespace);
    Ok(api
        .patch(
            &req.name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&ws),
        )
        .await?)
}

/// Creates a one-time connection code for a user.
pub async fn generate_code(
    db: &PgPool,
    user: Uuid,
) -> anyhow::Result<(String, chrono::DateTime<chrono::Utc>)> {
    anyhow::ensure!(crate::store::user_exists(db, user).await?, "no user {user}");
    Ok(crate::store::create_code(db, user).await?)
}
