//! The user's tenant in Kubernetes: the UserWorkspace built from the account and its agent
//! settings (pure, tested without a cluster), and the provider-key Secret it references.
//!
//! Both are written by server-side apply under one field manager, so applying again is
//! harmless and a settings change is one request. The Secret is owned by the workspace (the
//! garbage collector removes it with the workspace) but not as controller and without the
//! operator's `managed-by` label: the operator reads it by `keysSecretRef` and never caches
//! users' keys.

use std::collections::BTreeMap;

use clawdbot_api::workspace::ModelProvider;
use clawdbot_api::{ModelEndpoint, PlanPolicy, UserWorkspace, names};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::types::{AgentSettings, KeyProvider, User};

/// Field manager of every apply made by the accounts side (the API and `clawdbot-admin`).
pub const FIELD_MANAGER: &str = "clawdbot-accounts";

/// Where new workspaces go and what they run until the user chooses.
#[derive(Clone, Debug)]
pub struct WorkspaceDefaults {
    pub namespace: String,
    /// The shared ModelEndpoint of the platform's default model.
    pub endpoint: String,
    /// The platform's default model (served by `endpoint`).
    pub model: String,
    /// `spec.idleTimeout` of new workspaces (`None`: never hibernate).
    pub idle_timeout: Option<String>,
}

/// The name of a user's workspace: stable, DNS-safe, and short enough that the operator's
/// longest child name (`claw-<name>-gateway`) stays within 63 characters.
pub fn workspace_name(user: Uuid) -> String {
    format!("u-{}", user.simple())
}

/// The name of a workspace's provider-key Secret.
pub fn keys_secret_name(workspace: &str) -> String {
    format!("{}-keys", names::agent(workspace))
}

/// The UserWorkspace of a user with these settings, on the plan whose policy is `policy`: its
/// volume is the plan's storage (the operator grows the volume on an upgrade where it can).
pub fn build_workspace(
    user: &User,
    settings: &AgentSettings,
    defaults: &WorkspaceDefaults,
    policy: &PlanPolicy,
) -> Result<UserWorkspace> {
    let name = workspace_name(user.id);
    let mut model = json!({"provider": settings.provider.as_str()});
    match settings.provider {
        ModelProvider::Platform => {
            model["name"] = json!(
                settings
                    .model
                    .clone()
                    .unwrap_or_else(|| defaults.model.clone())
            );
            let endpoint = match (&settings.model, &settings.endpoint) {
                (Some(_), Some(e)) => e.clone(),
                _ => defaults.endpoint.clone(),
            };
            model["endpointRef"] = json!({"name": endpoint});
        }
        ModelProvider::Openai | ModelProvider::Anthropic => {
            let Some(m) = &settings.model else {
                return Err(Error::invalid(
                    "model",
                    "a model is required for this provider",
                ));
            };
            model["name"] = json!(m);
        }
    }
    if let Some(t) = settings.temperature {
        model["temperature"] = json!(t);
    }
    if let Some(t) = settings.max_tokens {
        model["maxTokens"] = json!(t);
    }
    let mut spec = json!({
        "ownerId": user.id.to_string(),
        "plan": user.plan.as_str(),
        "model": model,
        "keysSecretRef": {"name": keys_secret_name(&name)},
        "features": {"webSearch": settings.web_search},
        "storage": {"size": storage_quantity(policy.max_storage_bytes)},
        "suspend": user.suspended(),
    });
    if let Some(t) = &defaults.idle_timeout {
        spec["idleTimeout"] = json!(t);
    }
    serde_json::from_value(json!({
        "apiVersion": format!("{}/{}", clawdbot_api::GROUP, clawdbot_api::VERSION),
        "kind": "UserWorkspace",
        "metadata": {
            "name": name,
            "namespace": defaults.namespace,
            "labels": {"app.kubernetes.io/part-of": "clawdbot-cloud"},
        },
        "spec": spec,
    }))
    .map_err(|e| Error::Internal(format!("building a UserWorkspace: {e}")))
}

/// A byte count as Kubernetes writes sizes: `10Gi`, `512Mi`, else plain bytes.
pub fn storage_quantity(bytes: u64) -> String {
    const MIB: u64 = 1024 * 1024;
    const GIB: u64 = 1024 * MIB;
    match bytes {
        b if b > 0 && b % GIB == 0 => format!("{}Gi", b / GIB),
        b if b > 0 && b % MIB == 0 => format!("{}Mi", b / MIB),
        b => b.to_string(),
    }
}

/// The provider-key Secret of `workspace` holding `keys` (Secret key name -> provider key).
pub fn build_keys_secret(
    workspace: &UserWorkspace,
    keys: &BTreeMap<KeyProvider, String>,
) -> Secret {
    let name = workspace.name_any();
    let owner = workspace.meta().uid.clone().map(|uid| OwnerReference {
        api_version: format!("{}/{}", clawdbot_api::GROUP, clawdbot_api::VERSION),
        kind: "UserWorkspace".into(),
        name: name.clone(),
        uid,
        controller: Some(false),
        block_owner_deletion: Some(false),
    });
    let mut labels = names::workspace_labels(&name, "provider-keys");
    labels.insert("app.kubernetes.io/managed-by".into(), FIELD_MANAGER.into());
    Secret {
        metadata: ObjectMeta {
            name: Some(keys_secret_name(&name)),
            namespace: workspace.namespace(),
            labels: Some(labels),
            owner_references: owner.map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".into()),
        data: Some(
            keys.iter()
                .map(|(p, k)| {
                    (
                        p.secret_key().to_string(),
                        ByteString(k.as_bytes().to_vec()),
                    )
                })
                .collect(),
        ),
        ..Secret::default()
    }
}

fn apply_params() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER).force()
}

/// Applies a workspace; returns it as stored (with its uid).
pub async fn apply_workspace(client: &Client, ws: &UserWorkspace) -> Result<UserWorkspace> {
    let ns = ws.namespace().unwrap_or_default();
    let api: Api<UserWorkspace> = Api::namespaced(client.clone(), &ns);
    Ok(api
        .patch(&ws.name_any(), &apply_params(), &Patch::Apply(ws))
        .await?)
}

/// Applies the provider-key Secret (a provider missing from `keys` is removed from it).
pub async fn apply_keys_secret(
    client: &Client,
    workspace: &UserWorkspace,
    keys: &BTreeMap<KeyProvider, String>,
) -> Result<()> {
    let secret = build_keys_secret(workspace, keys);
    let ns = workspace.namespace().unwrap_or_default();
    let api: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let name = secret.metadata.name.clone().unwrap_or_default();
    api.patch(&name, &apply_params(), &Patch::Apply(&secret))
        .await?;
    Ok(())
}

pub async fn get_workspace(
    client: &Client,
    namespace: &str,
    user: Uuid,
) -> Result<Option<UserWorkspace>> {
    let api: Api<UserWorkspace> = Api::namespaced(client.clone(), namespace);
    Ok(api.get_opt(&workspace_name(user)).await?)
}

/// Deletes a user's workspace and key Secret (gone already is fine). The volume follows the
/// workspace's retention policy (the claim's owner reference, set by the operator).
pub async fn delete_workspace(client: &Client, namespace: &str, user: Uuid) -> Result<()> {
    let name = workspace_name(user);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    ignore_not_found(
        secrets
            .delete(&keys_secret_name(&name), &DeleteParams::default())
            .await,
    )?;
    let api: Api<UserWorkspace> = Api::namespaced(client.clone(), namespace);
    ignore_not_found(api.delete(&name, &DeleteParams::background()).await)?;
    Ok(())
}

fn ignore_not_found<T>(r: std::result::Result<T, kube::Error>) -> Result<()> {
    match r {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// A platform model the user can pick: its name and the ModelEndpoint serving it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlatformModel {
    pub name: String,
    pub endpoint: String,
    pub ready: bool,
}

/// The models served by the ModelEndpoints of the namespace.
pub async fn platform_models(client: &Client, namespace: &str) -> Result<Vec<PlatformModel>> {
    let api: Api<ModelEndpoint> = Api::namespaced(client.clone(), namespace);
    let mut out = Vec::new();
    for ep in api.list(&ListParams::default()).await?.items {
        let ready = ep.is_ready();
        for m in &ep.spec.models {
            out.push(PlatformModel {
                name: m.name.clone(),
                endpoint: ep.name_any(),
                ready,
            });
        }
    }
    out.sort_by(|a, b| (&a.name, &a.endpoint).cmp(&(&b.name, &b.endpoint)));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clawdbot_api::Plan;
    use clawdbot_api::lite::SessionScope;

    fn user(plan: Plan) -> User {
        User {
            id: Uuid::parse_str("6f1c2f9e-8a4e-4b7a-9d55-0123456789ab").unwrap(),
            email: Some("ada@example.com".into()),
            display_name: None,
            plan,
            role: crate::types::Role::User,
            suspended_at: None,
            created_at: chrono::Utc::now(),
        }
    }

    fn defaults() -> WorkspaceDefaults {
        WorkspaceDefaults {
            namespace: "tenants".into(),
            endpoint: "shared".into(),
            model: "smollm2".into(),
            idle_timeout: Some("30m".into()),
        }
    }

    #[test]
    fn a_new_user_gets_the_platform_default_and_a_valid_spec() {
        let u = user(Plan::Free);
        let ws = build_workspace(
            &u,
            &AgentSettings::default(),
            &defaults(),
            &PlanPolicy::default_for(u.plan),
        )
        .unwrap();
        assert_eq!(ws.name_any(), "u-6f1c2f9e8a4e4b7a9d550123456789ab");
        assert!(names::gateway_token_secret(&ws.name_any()).len() <= 63);
        assert_eq!(ws.namespace().as_deref(), Some("tenants"));
        assert_eq!(ws.spec.owner_id, u.id.to_string());
        assert_eq!(ws.spec.model.name, "smollm2");
        assert_eq!(ws.spec.model.endpoint_ref.as_ref().unwrap().name, "shared");
        assert_eq!(
            ws.spec.keys_secret_ref.as_ref().unwrap().name,
            "claw-u-6f1c2f9e8a4e4b7a9d550123456789ab-keys"
        );
        assert_eq!(ws.spec.idle_timeout.as_deref(), Some("30m"));
        assert!(!ws.spec.suspend);
        assert_eq!(ws.spec.storage.size.0, "1Gi", "the free plan's storage");
        assert_eq!(storage_quantity(10 * 1024 * 1024 * 1024), "10Gi");
        assert_eq!(storage_quantity(3 * 1024 * 1024), "3Mi");
        assert_eq!(storage_quantity(1000), "1000");
        ws.validate(&PlanPolicy::default_for(Plan::Free)).unwrap();
    }

    #[test]
    fn settings_reach_the_spec() {
        let mut u = user(Plan::Pro);
        u.suspended_at = Some(chrono::Utc::now());
        let s = AgentSettings {
            provider: ModelProvider::Openai,
            model: Some("gpt-4o-mini".into()),
            endpoint: None,
            temperature: Some(0.3),
            max_tokens: Some(800),
            session_scope: SessionScope::Main,
            web_search: true,
        };
        let ws = build_workspace(&u, &s, &defaults(), &PlanPolicy::default_for(u.plan)).unwrap();
        assert_eq!(ws.spec.model.provider, ModelProvider::Openai);
        assert_eq!(ws.spec.model.name, "gpt-4o-mini");
        assert_eq!(ws.spec.model.endpoint_ref, None);
        assert_eq!(ws.spec.model.temperature, Some(0.3));
        assert_eq!(ws.spec.model.max_tokens, Some(800));
        assert!(ws.spec.features.web_search && ws.spec.suspend);
        ws.validate(&PlanPolicy::default_for(Plan::Pro)).unwrap();
        // A platform model picked with its endpoint.
        let s = AgentSettings {
            model: Some("qwen".into()),
            endpoint: Some("big".into()),
            ..AgentSettings::default()
        };
        let ws = build_workspace(&u, &s, &defaults(), &PlanPolicy::default_for(u.plan)).unwrap();
        assert_eq!(ws.spec.model.endpoint_ref.unwrap().name, "big");
    }

    #[test]
    fn the_key_secret_is_owned_by_the_workspace_and_kept_from_the_operator() {
        let mut ws = build_workspace(
            &user(Plan::Pro),
            &AgentSettings::default(),
            &defaults(),
            &PlanPolicy::default_for(Plan::Pro),
        )
        .unwrap();
        ws.metadata.uid = Some("uid-1".into());
        let keys = BTreeMap::from([(
            KeyProvider::Openai,
            "sk-aaaaaaaaaaaaaaaaaaaaaaaa".to_string(),
        )]);
        let s = build_keys_secret(&ws, &keys);
        assert_eq!(
            s.metadata.name,
            ws.spec.keys_secret_ref.as_ref().map(|r| r.name.clone())
        );
        let owner = &s.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.uid.as_str(), owner.controller),
            ("uid-1", Some(false))
        );
        assert_eq!(
            s.metadata.labels.as_ref().unwrap()["app.kubernetes.io/managed-by"],
            FIELD_MANAGER
        );
        let data = s.data.unwrap();
        assert_eq!(data["OPENAI_API_KEY"].0, b"sk-aaaaaaaaaaaaaaaaaaaaaaaa");
        assert!(!data.contains_key("ANTHROPIC_API_KEY"));
    }
}
