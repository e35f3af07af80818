//! The OpenClaw runtime: the `openclaw.json` the operator renders for a tenant, and the
//! environment of the OpenClaw container.
//!
//! Everything here is pure (no API calls) and checked against the real `openclaw@2026.9.6`:
//! `operator/tests/openclaw_e2e.rs` validates every plan x provider rendering with
//! `openclaw config validate` and runs a gateway on a rendered config against a real model.
//!
//! What the rendered config does, and why:
//! - Gateway: local mode, port 18789, `bind: "lan"` (0.0.0.0: the router reaches the pod
//!   through its Service; `loopback`, OpenClaw's default, is unreachable from outside the pod),
//!   token auth with the token taken from the env var `OPENCLAW_GATEWAY_TOKEN` through an env
//!   SecretRef (the token never enters the ConfigMap; an explicit SecretRef fails closed when the
//!   variable is missing instead of falling back to no token), the OpenAI-compatible chat
//!   completions endpoint on, Control UI and operator terminal off (the router is the only client).
//! - The image's `clawdbot-conversations` plugin (loaded from the image, allowed, enabled):
//!   read-only `GET /clawdbot/v1/{sessions, sessions/messages, export}` behind gateway auth,
//!   the conversations API the lite agent serves too.
//! - Channels: none configured, and the channel plugins that ship inside the package (Telegram,
//!   A2A, Reef) disabled: the router owns every channel. Only the plugins a tenant needs load
//!   (`plugins.allow`), which also halves start-up (5.8 s instead of 13.5 s of plugin loading
//!   here) and saves about 150 MB of RSS.
//! - Model: one provider, `models.mode: "replace"` (no discovery of other providers, no remote
//!   catalog refresh): the platform ModelEndpoint as an OpenAI-compatible provider, or the
//!   user's own OpenAI / Anthropic key read from env vars filled from the user's Secret.
//!   Temperature and max tokens are per-model `params`, which OpenClaw sends on every request.
//! - Tools per plan: `minimal` where the plan has no background jobs (free), else `coding`
//!   (files, shell and memory in the tenant's own volume). Web search and fetch only where the
//!   plan allows it and the workspace asks for it, through the platform's SearXNG.
//! - Background jobs: heartbeats are off on every plan (their output would need a channel, and
//!   the router owns the channels); cron, memory "dreaming" (daily) and the weekly skill review
//!   only on plans with `backgroundJobs`. A hibernated tenant runs nothing at all.
//! - No network calls of its own: update checks, telemetry, remote model catalog and mDNS off.
//! - Logs: JSON on stdout (what `kubectl logs` shows) plus a rolling file capped at 6 x 10 MB
//!   under `/tmp` (an emptyDir), not on the tenant volume.

use clawdbot_api::PlanPolicy;
use clawdbot_api::names;
use clawdbot_api::workspace::{ModelProvider, UserWorkspace};
use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, SecretKeySelector};
use kube::ResourceExt;
use serde_json::{Value, json};

/// Where the model is, already resolved by the operator.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelTarget {
    pub provider: ModelProvider,
    /// OpenAI-compatible base ending in `/v1` for the platform; `https://api.openai.com/v1` or
    /// `https://api.anthropic.com` for the user's own keys (operator config may override).
    pub base_url: String,
    pub model: String,
    /// Path of the provider key inside the container. OpenClaw reads keys from env vars (its
    /// file SecretRefs refuse symlinks, which is what a mounted Secret is made of), so the
    /// OpenClaw runtime takes the key from the same Secret through [`container_env`] instead.
    pub api_key_file: Option<String>,
    pub temperature: Option<f64>,
    pub max_tokens: Option<u32>,
    pub context_window: u32,
}

/// Everything [`render_config`] and [`container_env`] need.
#[derive(Clone, Debug)]
pub struct RenderInput<'a> {
    pub workspace: &'a UserWorkspace,
    pub policy: &'a PlanPolicy,
    pub model: ModelTarget,
    /// Base URL of the platform's SearXNG, when the plan allows web search and the workspace
    /// asks for it.
    pub web_search_url: Option<String>,
}

/// Env var carrying the gateway token (from the tenant's gateway Secret).
pub const GATEWAY_TOKEN_ENV: &str = "OPENCLAW_GATEWAY_TOKEN";
/// Env var OpenClaw's SearXNG provider reads.
pub const SEARXNG_URL_ENV: &str = "SEARXNG_BASE_URL";
/// OpenClaw's state (sessions, memory, agent SQLite, workspace) on the tenant volume.
pub const STATE_DIR: &str = "/data/openclaw";
/// `HOME` of the gateway process, on the tenant volume (OpenClaw reads `~/.openclaw/.env` and
/// keeps small caches there).
pub const HOME_DIR: &str = "/data/home";
/// Scratch space: an emptyDir in the pod (rolling logs, Node's compile cache, temp files).
pub const TMP_DIR: &str = "/tmp";
/// The rolling log file (under [`TMP_DIR`]).
pub const LOG_FILE: &str = "/tmp/openclaw/openclaw.log";
/// Size at which the log file rotates; OpenClaw keeps five archives beside it.
pub const LOG_FILE_MAX_BYTES: u64 = 10 * 1024 * 1024;
/// OpenClaw refuses models with a smaller context window (`CONTEXT_WINDOW_HARD_MIN_TOKENS`);
/// its system prompt alone is about 2,500 tokens.
pub const MIN_CONTEXT_WINDOW: u32 = 4000;
/// Reply cap when the workspace sets none: long enough for a chat answer, short enough that
/// one runaway generation cannot hold a shared model server for minutes.
pub const DEFAULT_MAX_TOKENS: u32 = 1024;
/// Provider id of a platform ModelEndpoint in the rendered config.
pub const PLATFORM_PROVIDER_ID: &str = "platform";
/// The OpenClaw agent every router request lands on.
pub const AGENT_ID: &str = "main";
/// Cron schedule of memory dreaming on plans with background jobs (daily, off-peak).
pub const DREAMING_SCHEDULE: &str = "0 3 * * *";

/// Where the image installs its runtime (`agent-image/openclaw/install-runtime.sh /opt/openclaw`).
pub const RUNTIME_DIR: &str = "/opt/openclaw";
/// The image's own plugin serving the conversations API (`clawdbot_api::conversations`) on the
/// gateway port, so the router reads sessions and exports the same way from both runtimes.
pub const CONVERSATIONS_PLUGIN: &str = "clawdbot-conversations";
/// Its directory in the image (`agent-image/openclaw/plugins/clawdbot-conversations`).
pub const CONVERSATIONS_PLUGIN_DIR: &str = "/opt/openclaw/plugins/clawdbot-conversations";

/// Channel plugins shipped inside the `openclaw` package; all disabled (the router owns channels).
const BUNDLED_CHANNEL_PLUGINS: [&str; 3] = ["telegram", "a2a", "reef"];

/// The provider id OpenClaw knows the model by, and the `provider/model` reference.
fn provider_id(provider: ModelProvider) -> &'static str {
    match provider {
        ModelProvider::Platform => PLATFORM_PROVIDER_ID,
        ModelProvider::Openai => "openai",
        ModelProvider::Anthropic => "anthropic",
    }
}

/// The model reference the agent's default model points at, e.g. `platform/qwen2.5-7b`.
pub fn model_ref(model: &ModelTarget) -> String {
    format!("{}/{}", provider_id(model.provider), model.model)
}

/// The effective reply cap.
fn max_tokens(model: &ModelTarget) -> u32 {
    model
        .max_tokens
        .unwrap_or(DEFAULT_MAX_TOKENS.min(model.context_window / 4))
}

/// An env SecretRef in OpenClaw's SecretRef grammar.
fn env_ref(var: &str) -> Value {
    json!({"source": "env", "provider": "default", "id": var})
}

/// Checks the combination before rendering; every message names the field and what to do.
pub fn check(input: &RenderInput) -> Result<(), String> {
    let ws = &input.workspace.spec;
    let model = &input.model;
    let plan = ws.plan;
    if let Some(key) = model.provider.key_name() {
        if !input.policy.allows_own_key {
            return Err(format!(
                "spec.model.provider: {} with the user's own key is not available on the {plan} plan; use the platform model or upgrade",
                model.provider.as_str()
            ));
        }
        if ws.keys_secret_ref.is_none() {
            return Err(format!(
                "spec.keysSecretRef: provider {} needs a Secret with {key}",
                model.provider.as_str()
            ));
        }
    }
    if model.base_url.trim().is_empty() {
        return Err(match model.provider {
            ModelProvider::Platform => {
                "spec.model: the platform ModelEndpoint has no URL yet; the agent starts once it is ready".to_string()
            }
            p => format!("operator config: no base URL configured for provider {}", p.as_str()),
        });
    }
    if !(model.base_url.starts_with("http://") || model.base_url.starts_with("https://")) {
        return Err(format!(
            "model base URL {:?} must start with http:// or https://",
            model.base_url
        ));
    }
    if model.model.trim().is_empty() {
        return Err("spec.model.name: must not be empty".to_string());
    }
    if model.context_window < MIN_CONTEXT_WINDOW {
        return Err(format!(
            "spec.model.contextWindow: {} tokens is below OpenClaw's minimum of {MIN_CONTEXT_WINDOW} (its system prompt alone is about 2,500 tokens); use a larger window or the lite runtime",
            model.context_window
        ));
    }
    let cap = max_tokens(model);
    if cap == 0 || cap >= model.context_window {
        return Err(format!(
            "spec.model.maxTokens: {cap} must be above 0 and below the context window of {} tokens",
            model.context_window
        ));
    }
    if let Some(t) = model.temperature
        && !(0.0..=2.0).contains(&t)
    {
        return Err(format!("spec.model.temperature: {t} is outside 0..2"));
    }
    if ws.features.web_search && !input.policy.allows_web_search {
        return Err(format!(
            "spec.features.webSearch: not available on the {plan} plan"
        ));
    }
    Ok(())
}

/// Whether the rendered config turns web search (and fetch) on.
fn web_search_on(input: &RenderInput) -> bool {
    input.workspace.spec.features.web_search
        && input.policy.allows_web_search
        && input.web_search_url.is_some()
}

/// The `models.providers` entry of the tenant's one provider.
fn provider_block(model: &ModelTarget) -> Value {
    let mut entry = json!({
        "id": model.model,
        "name": model.model,
        "input": ["text"],
        "reasoning": false,
        "contextWindow": model.context_window,
        "maxTokens": max_tokens(model),
    });
    if model.provider == ModelProvider::Platform {
        // OpenClaw sends the reply cap as `max_completion_tokens` by default; llama.cpp and
        // Ollama ignore that field and generate until the context is full (measured: minutes
        // per turn with SmolLM2). `max_tokens` is the field every OpenAI-compatible server reads.
        entry["compat"] = json!({"maxTokensField": "max_tokens"});
    }
    match model.provider {
        // An OpenAI-compatible server (vLLM, Ollama, llama.cpp) inside the cluster; no key.
        ModelProvider::Platform => json!({
            "baseUrl": model.base_url,
            "api": "openai-completions",
            "models": [entry],
        }),
        // Chat Completions rather than Responses: the same wire format as the platform models,
        // and no provider-hosted web search that would bypass the plan's search quota.
        ModelProvider::Openai => json!({
            "baseUrl": model.base_url,
            "api": "openai-completions",
            "apiKey": env_ref(names::OPENAI_API_KEY),
            "models": [entry],
        }),
        ModelProvider::Anthropic => json!({
            "baseUrl": model.base_url,
            "api": "anthropic-messages",
            "apiKey": env_ref(names::ANTHROPIC_API_KEY),
            "models": [entry],
        }),
    }
}

/// `openclaw.json` contents for the tenant ConfigMap. Err when the combination is not allowed
/// (e.g. own key on a plan without it), with a message a person understands.
pub fn render_config(input: &RenderInput) -> Result<Value, String> {
    check(input)?;
    let model = &input.model;
    let background = input.policy.background_jobs;
    let web = web_search_on(input);
    let reference = model_ref(model);
    let pid = provider_id(model.provider);

    let mut params = serde_json::Map::new();
    params.insert("maxTokens".into(), json!(max_tokens(model)));
    if let Some(t) = model.temperature {
        params.insert("temperature".into(), json!(t));
    }

    // The plugins a tenant needs: its model provider's adapter, memory, and (when on) search.
    // `openai` also owns the OpenAI-compatible adapter the platform provider uses.
    let mut allow = vec!["memory-core", "openai", CONVERSATIONS_PLUGIN];
    if model.provider == ModelProvider::Anthropic {
        allow.push("anthropic");
    }
    let mut plugin_entries = serde_json::Map::new();
    plugin_entries.insert(CONVERSATIONS_PLUGIN.into(), json!({"enabled": true}));
    for channel in BUNDLED_CHANNEL_PLUGINS {
        plugin_entries.insert(channel.into(), json!({"enabled": false}));
    }
    plugin_entries.insert(
        "memory-core".into(),
        json!({"config": {"dreaming": if background {
            json!({"enabled": true, "frequency": DREAMING_SCHEDULE})
        } else {
            json!({"enabled": false})
        }}}),
    );
    if web {
        allow.push("searxng");
        plugin_entries.insert(
            "searxng".into(),
            json!({"config": {"webSearch": {"baseUrl": env_ref(SEARXNG_URL_ENV)}}}),
        );
    }

    let mut web_search = json!({"enabled": web});
    if web {
        web_search["provider"] = json!("searxng");
    }

    Ok(json!({
        "gateway": {
            "mode": "local",
            "port": names::AGENT_PORT,
            "bind": "lan",
            "auth": {"mode": "token", "token": env_ref(GATEWAY_TOKEN_ENV)},
            "http": {"endpoints": {"chatCompletions": {"enabled": true}}},
            "controlUi": {"enabled": false},
            "terminal": {"enabled": false},
            "reload": {"mode": "hybrid"},
        },
        "discovery": {"mdns": {"mode": "off"}},
        "update": {"checkOnStart": false},
        "telemetry": {"enabled": false},
        "logging": {
            "level": "info",
            "consoleStyle": "json",
            "file": LOG_FILE,
            "maxFileBytes": LOG_FILE_MAX_BYTES,
        },
        "models": {
            "mode": "replace",
            "catalogRefresh": {"enabled": false},
            "providers": {pid: provider_block(model)},
        },
        "agents": {"defaults": {
            "model": {"primary": reference},
            "models": {reference.clone(): {"params": Value::Object(params)}},
            // Identity and persona come from the platform; no first-run bootstrap ritual.
            "skipBootstrap": true,
            "heartbeat": {"every": "0m"},
        }},
        // Embeddings: only with the user's own OpenAI key (their cost); otherwise full-text
        // memory search, no surprise embedding calls to a model server that may not serve them.
        "memory": {"search": {"provider": if model.provider == ModelProvider::Openai { "openai" } else { "none" }}},
        "tools": {
            "profile": if background { "coding" } else { "minimal" },
            "web": {"search": web_search, "fetch": {"enabled": web}},
        },
        "cron": {"enabled": background},
        "skills": {"workshop": {"autonomous": {"mode": if background { "auto" } else { "off" }}}},
        "plugins": {
            "allow": allow,
            "load": {"paths": [CONVERSATIONS_PLUGIN_DIR]},
            "entries": Value::Object(plugin_entries),
        },
    }))
}

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        value_from: None,
    }
}

fn env_from_secret(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.into(),
                key: key.into(),
                optional: Some(false),
            }),
            ..EnvVarSource::default()
        }),
    }
}

/// Env vars for the OpenClaw container: where state, config, home and scratch live, the
/// gateway token from the tenant's gateway Secret, the provider key from the user's Secret,
/// the SearXNG URL when web search is on, and OpenClaw's outbound calls off.
pub fn container_env(input: &RenderInput) -> Vec<EnvVar> {
    let ws = input.workspace;
    let mut out = vec![
        env("OPENCLAW_STATE_DIR", STATE_DIR),
        env(
            "OPENCLAW_CONFIG_PATH",
            format!("{}/{}", names::CONFIG_MOUNT, names::OPENCLAW_CONFIG_FILE),
        ),
        env("HOME", HOME_DIR),
        // Also where OpenClaw's launcher keeps Node's compile cache. NODE_COMPILE_CACHE must stay
        // unset: with it, the launcher re-executes itself into a second process.
        env("TMPDIR", TMP_DIR),
        env("OPENCLAW_DISABLE_BONJOUR", "1"),
        env("OPENCLAW_NO_AUTO_UPDATE", "1"),
        env("DO_NOT_TRACK", "1"),
        env("TZ", "UTC"),
        env_from_secret(
            GATEWAY_TOKEN_ENV,
            &names::gateway_token_secret(&ws.name_any()),
            names::GATEWAY_TOKEN_KEY,
        ),
    ];
    if let (Some(key), Some(secret)) = (input.model.provider.key_name(), &ws.spec.keys_secret_ref) {
        out.push(env_from_secret(key, &secret.name, key));
    }
    if web_search_on(input)
        && let Some(url) = &input.web_search_url
    {
        out.push(env(SEARXNG_URL_ENV, url.clone()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clawdbot_api::Plan;
    use clawdbot_api::workspace::LocalObjectRef;

    fn workspace(plan: Plan, provider: ModelProvider, web_search: bool) -> UserWorkspace {
        let mut ws: UserWorkspace = serde_yaml::from_str(&format!(
            r#"
apiVersion: clawdbot.io/v1alpha1
kind: UserWorkspace
metadata: {{name: alice, namespace: tenants}}
spec:
  ownerId: user-1
  plan: {plan}
  runtime: openclaw
  model:
    provider: {provider}
    name: m1
    temperature: 0.2
    maxTokens: 256
    contextWindow: 8192
  features: {{webSearch: {web_search}}}
"#,
            provider = provider.as_str()
        ))
        .expect("workspace YAML");
        match provider {
            ModelProvider::Platform => {
                ws.spec.model.endpoint_ref = Some(LocalObjectRef {
                    name: "shared".into(),
                })
            }
            _ => {
                ws.spec.keys_secret_ref = Some(LocalObjectRef {
                    name: "alice-keys".into(),
                })
            }
        }
        ws
    }

    fn target(ws: &UserWorkspace) -> ModelTarget {
        let m = &ws.spec.model;
        let (base_url, api_key_file) = match m.provider {
            ModelProvider::Platform => ("http://mep-shared.tenants.svc:8000/v1".to_string(), None),
            ModelProvider::Openai => (
                "https://api.openai.com/v1".to_string(),
                Some("/var/run/clawdbot/keys/OPENAI_API_KEY".to_string()),
            ),
            ModelProvider::Anthropic => (
                "https://api.anthropic.com".to_string(),
                Some("/var/run/clawdbot/keys/ANTHROPIC_API_KEY".to_string()),
            ),
        };
        ModelTarget {
            provider: m.provider,
            base_url,
            model: m.name.clone(),
            api_key_file,
            temperature: m.temperature,
            max_tokens: m.max_tokens,
            context_window: m.context_window.unwrap_or(8192),
        }
    }

    fn render(ws: &UserWorkspace, web_url: Option<&str>) -> (Result<Value, String>, Vec<EnvVar>) {
        let policy = PlanPolicy::default_for(ws.spec.plan);
        let input = RenderInput {
            workspace: ws,
            policy: &policy,
            model: target(ws),
            web_search_url: web_url.map(String::from),
        };
        (render_config(&input), container_env(&input))
    }

    fn env_value<'a>(env: &'a [EnvVar], name: &str) -> Option<&'a EnvVar> {
        env.iter().find(|e| e.name == name)
    }

    const PROVIDERS: [ModelProvider; 3] = [
        ModelProvider::Platform,
        ModelProvider::Openai,
        ModelProvider::Anthropic,
    ];

    #[test]
    fn every_plan_and_provider_renders_or_is_refused_by_policy() {
        for plan in Plan::ALL {
            let policy = PlanPolicy::default_for(plan);
            for provider in PROVIDERS {
                let ws = workspace(plan, provider, false);
                let (config, env) = render(&ws, None);
                if provider != ModelProvider::Platform && !policy.allows_own_key {
                    let err = config.expect_err("own key on a plan without it");
                    assert!(
                        err.contains(&format!("not available on the {plan} plan")),
                        "{err}"
                    );
                    continue;
                }
                let c = config.unwrap_or_else(|e| panic!("{plan} x {}: {e}", provider.as_str()));
                // The gateway the router talks to.
                assert_eq!(c["gateway"]["mode"], "local");
                assert_eq!(c["gateway"]["port"], 18789);
                assert_eq!(c["gateway"]["bind"], "lan");
                assert_eq!(c["gateway"]["auth"]["mode"], "token");
                assert_eq!(
                    c["gateway"]["auth"]["token"],
                    json!({"source": "env", "provider": "default", "id": "OPENCLAW_GATEWAY_TOKEN"})
                );
                assert_eq!(
                    c["gateway"]["http"]["endpoints"]["chatCompletions"]["enabled"],
                    true
                );
                assert_eq!(c["gateway"]["controlUi"]["enabled"], false);
                // No channels: none configured, bundled channel plugins disabled and not allowed.
                assert!(c.get("channels").is_none());
                for channel in BUNDLED_CHANNEL_PLUGINS {
                    assert_eq!(
                        c["plugins"]["entries"][channel]["enabled"], false,
                        "{channel}"
                    );
                    assert!(
                        !c["plugins"]["allow"]
                            .as_array()
                            .unwrap()
                            .contains(&json!(channel))
                    );
                }
                // The conversations plugin: loaded from the image, allowed and on.
                assert_eq!(
                    c["plugins"]["load"]["paths"],
                    json!([CONVERSATIONS_PLUGIN_DIR])
                );
                assert_eq!(
                    c["plugins"]["entries"][CONVERSATIONS_PLUGIN]["enabled"],
                    true
                );
                assert!(
                    c["plugins"]["allow"]
                        .as_array()
                        .unwrap()
                        .contains(&json!(CONVERSATIONS_PLUGIN))
                );
                // The model, its sampling and its cap.
                let pid = provider_id(provider);
                let reference = format!("{pid}/m1");
                assert_eq!(
                    c["agents"]["defaults"]["model"]["primary"],
                    reference.as_str()
                );
                assert_eq!(
                    c["agents"]["defaults"]["models"][&reference]["params"],
                    json!({"temperature": 0.2, "maxTokens": 256})
                );
                let p = &c["models"]["providers"][pid];
                assert_eq!(c["models"]["providers"].as_object().unwrap().len(), 1);
                assert_eq!(p["models"][0]["contextWindow"], 8192);
                assert_eq!(p["models"][0]["maxTokens"], 256);
                assert_eq!(c["models"]["mode"], "replace");
                // Background jobs follow the plan; heartbeats never run.
                assert_eq!(c["agents"]["defaults"]["heartbeat"]["every"], "0m");
                assert_eq!(c["cron"]["enabled"], policy.background_jobs);
                assert_eq!(
                    c["plugins"]["entries"]["memory-core"]["config"]["dreaming"]["enabled"],
                    policy.background_jobs
                );
                assert_eq!(
                    c["skills"]["workshop"]["autonomous"]["mode"],
                    if policy.background_jobs {
                        "auto"
                    } else {
                        "off"
                    }
                );
                assert_eq!(
                    c["tools"]["profile"],
                    if policy.background_jobs {
                        "coding"
                    } else {
                        "minimal"
                    }
                );
                assert_eq!(c["tools"]["web"]["search"]["enabled"], false);
                // Secrets only by reference, never in the config.
                let text = c.to_string();
                assert!(!text.contains("sk-"), "{text}");
                // Env: paths, token and key by secretKeyRef.
                let token = env_value(&env, "OPENCLAW_GATEWAY_TOKEN").expect("token env");
                let sel = token
                    .value_from
                    .as_ref()
                    .unwrap()
                    .secret_key_ref
                    .as_ref()
                    .unwrap();
                assert_eq!(
                    (sel.name.as_str(), sel.key.as_str()),
                    ("claw-alice-gateway", "token")
                );
                assert!(token.value.is_none());
                assert_eq!(
                    env_value(&env, "OPENCLAW_CONFIG_PATH")
                        .unwrap()
                        .value
                        .as_deref(),
                    Some("/etc/clawdbot/openclaw.json")
                );
                assert!(
                    env_value(&env, "OPENCLAW_STATE_DIR")
                        .unwrap()
                        .value
                        .as_deref()
                        .unwrap()
                        .starts_with("/data/")
                );
                assert_eq!(
                    env_value(&env, "OPENCLAW_DISABLE_BONJOUR")
                        .unwrap()
                        .value
                        .as_deref(),
                    Some("1")
                );
                match provider.key_name() {
                    None => {
                        assert!(p.get("apiKey").is_none());
                        assert_eq!(p["models"][0]["compat"]["maxTokensField"], "max_tokens");
                        assert!(
                            env_value(&env, "OPENAI_API_KEY").is_none()
                                && env_value(&env, "ANTHROPIC_API_KEY").is_none()
                        );
                        assert_eq!(p["api"], "openai-completions");
                    }
                    Some(key) => {
                        assert_eq!(
                            p["apiKey"],
                            json!({"source": "env", "provider": "default", "id": key})
                        );
                        let e = env_value(&env, key).expect("key env");
                        let sel = e
                            .value_from
                            .as_ref()
                            .unwrap()
                            .secret_key_ref
                            .as_ref()
                            .unwrap();
                        assert_eq!((sel.name.as_str(), sel.key.as_str()), ("alice-keys", key));
                    }
                }
            }
        }
    }

    #[test]
    fn providers_use_their_own_wire_format() {
        let ws = workspace(Plan::Pro, ModelProvider::Anthropic, false);
        let c = render(&ws, None).0.unwrap();
        assert_eq!(
            c["models"]["providers"]["anthropic"]["api"],
            "anthropic-messages"
        );
        assert_eq!(
            c["models"]["providers"]["anthropic"]["baseUrl"],
            "https://api.anthropic.com"
        );
        assert!(
            c["plugins"]["allow"]
                .as_array()
                .unwrap()
                .contains(&json!("anthropic"))
        );
        assert_eq!(c["memory"]["search"]["provider"], "none");
        let ws = workspace(Plan::Team, ModelProvider::Openai, false);
        let c = render(&ws, None).0.unwrap();
        assert_eq!(
            c["models"]["providers"]["openai"]["api"],
            "openai-completions"
        );
        assert_eq!(c["memory"]["search"]["provider"], "openai");
        let ws = workspace(Plan::Free, ModelProvider::Platform, false);
        let c = render(&ws, None).0.unwrap();
        assert_eq!(
            c["models"]["providers"]["platform"]["baseUrl"],
            "http://mep-shared.tenants.svc:8000/v1"
        );
    }

    #[test]
    fn web_search_follows_plan_workspace_and_platform() {
        let url = "http://searxng.clawdbot-system.svc:8080";
        // Allowed, asked for, and the platform has a search endpoint: on.
        let ws = workspace(Plan::Pro, ModelProvider::Platform, true);
        let (c, env) = render(&ws, Some(url));
        let c = c.unwrap();
        assert_eq!(
            c["tools"]["web"]["search"],
            json!({"enabled": true, "provider": "searxng"})
        );
        assert_eq!(c["tools"]["web"]["fetch"]["enabled"], true);
        assert_eq!(
            c["plugins"]["entries"]["searxng"]["config"]["webSearch"]["baseUrl"]["id"],
            "SEARXNG_BASE_URL"
        );
        assert_eq!(
            env_value(&env, "SEARXNG_BASE_URL")
                .unwrap()
                .value
                .as_deref(),
            Some(url)
        );
        // Not asked for: off, no URL in the env.
        let ws = workspace(Plan::Pro, ModelProvider::Platform, false);
        let (c, env) = render(&ws, Some(url));
        assert_eq!(c.unwrap()["tools"]["web"]["search"]["enabled"], false);
        assert!(env_value(&env, "SEARXNG_BASE_URL").is_none());
        // No search endpoint in the platform: off rather than a broken tool.
        let ws = workspace(Plan::Team, ModelProvider::Platform, true);
        assert_eq!(
            render(&ws, None).0.unwrap()["tools"]["web"]["search"]["enabled"],
            false
        );
        // Asked for on a plan without it: refused.
        let ws = workspace(Plan::Free, ModelProvider::Platform, true);
        let err = render(&ws, Some(url)).0.unwrap_err();
        assert_eq!(
            err,
            "spec.features.webSearch: not available on the free plan"
        );
    }

    #[test]
    fn bad_combinations_are_refused_with_clear_messages() {
        // Own key without the Secret that holds it.
        let mut ws = workspace(Plan::Pro, ModelProvider::Openai, false);
        ws.spec.keys_secret_ref = None;
        assert_eq!(
            render(&ws, None).0.unwrap_err(),
            "spec.keysSecretRef: provider openai needs a Secret with OPENAI_API_KEY"
        );
        // Own key on the free plan.
        let ws = workspace(Plan::Free, ModelProvider::Anthropic, false);
        assert_eq!(
            render(&ws, None).0.unwrap_err(),
            "spec.model.provider: anthropic with the user's own key is not available on the free plan; use the platform model or upgrade"
        );
        // A context window OpenClaw cannot work with.
        let mut ws = workspace(Plan::Pro, ModelProvider::Platform, false);
        ws.spec.model.context_window = Some(2048);
        let err = render(&ws, None).0.unwrap_err();
        assert!(
            err.starts_with(
                "spec.model.contextWindow: 2048 tokens is below OpenClaw's minimum of 4000"
            ),
            "{err}"
        );
        // A reply cap that leaves no room for the prompt.
        let mut ws = workspace(Plan::Pro, ModelProvider::Platform, false);
        ws.spec.model.max_tokens = Some(8192);
        let err = render(&ws, None).0.unwrap_err();
        assert_eq!(
            err,
            "spec.model.maxTokens: 8192 must be above 0 and below the context window of 8192 tokens"
        );
        // A platform endpoint that has no URL yet.
        let ws = workspace(Plan::Pro, ModelProvider::Platform, false);
        let policy = PlanPolicy::default_for(Plan::Pro);
        let mut model = target(&ws);
        model.base_url = String::new();
        let input = RenderInput {
            workspace: &ws,
            policy: &policy,
            model,
            web_search_url: None,
        };
        assert!(
            render_config(&input)
                .unwrap_err()
                .contains("ModelEndpoint has no URL yet")
        );
        // Temperature out of range (the CRD schema bounds it too, but 1.20 drops nothing here).
        let mut ws = workspace(Plan::Pro, ModelProvider::Platform, false);
        ws.spec.model.temperature = Some(3.5);
        assert_eq!(
            render(&ws, None).0.unwrap_err(),
            "spec.model.temperature: 3.5 is outside 0..2"
        );
    }

    #[test]
    fn defaults_fill_unset_sampling_fields() {
        let mut ws = workspace(Plan::Pro, ModelProvider::Platform, false);
        ws.spec.model.temperature = None;
        ws.spec.model.max_tokens = None;
        let c = render(&ws, None).0.unwrap();
        // No temperature: the model server's default. The reply cap is always bounded.
        assert_eq!(
            c["agents"]["defaults"]["models"]["platform/m1"]["params"],
            json!({"maxTokens": DEFAULT_MAX_TOKENS})
        );
        let mut ws = workspace(Plan::Pro, ModelProvider::Platform, false);
        ws.spec.model.max_tokens = None;
        ws.spec.model.context_window = Some(4096);
        let c = render(&ws, None).0.unwrap();
        assert_eq!(
            c["models"]["providers"]["platform"]["models"][0]["maxTokens"],
            1024
        );
    }

    #[test]
    fn rendering_is_deterministic() {
        // The operator hashes the ConfigMap: the same workspace must give the same bytes.
        let ws = workspace(Plan::Team, ModelProvider::Openai, true);
        let a = serde_json::to_string(&render(&ws, Some("http://s")).0.unwrap()).unwrap();
        let b = serde_json::to_string(&render(&ws, Some("http://s")).0.unwrap()).unwrap();
        assert_eq!(a, b);
    }
}
