//! Configuration of the lite agent, as the operator renders it into the tenant's ConfigMap
//! (`agent.json`) and the agent reads it. One type for both sides.

use serde::{Deserialize, Serialize};

use crate::workspace::ModelProvider;

/// The lite agent's whole configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LiteAgentConfig {
    /// Address to listen on.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// The tenant volume: sessions database, MEMORY.md, daily notes, skills/.
    #[serde(default = "default_data_dir")]
    pub data_dir: String,
    /// File holding the bearer token the router presents.
    #[serde(default = "default_token_file")]
    pub token_file: String,
    /// The model.
    pub model: LiteModelConfig,
    /// `per-peer` (a session per session key, the default) or `main` (one session for all DMs).
    #[serde(default)]
    pub session_scope: SessionScope,
    /// Web search through SearXNG; absent when the feature is off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub web_search: Option<WebSearchConfig>,
    /// Most bytes the tenant may keep on its volume (the plan's storage limit).
    pub storage_limit_bytes: u64,
    /// Most model round trips for tool calls in one reply.
    #[serde(default = "default_tool_loop_limit")]
    pub max_tool_rounds: u32,
}

/// The lite agent's model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LiteModelConfig {
    /// `platform` (OpenAI-compatible ModelEndpoint), `openai` or `anthropic`.
    pub provider: ModelProvider,
    /// Base URL of the API, ending before `/chat/completions` (OpenAI) or `/messages`
    /// (Anthropic), for example `http://mep-shared.ns.svc:8000/v1`.
    pub base_url: String,
    /// Model name.
    pub model: String,
    /// File with the API key (the user's own key, mounted from their Secret); none for the
    /// platform endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Context window in tokens; history is trimmed to fit.
    #[serde(default = "default_context_window")]
    pub context_window: u32,
    /// Timeout of one model call, in seconds.
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u64,
}

/// How incoming conversations map to sessions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SessionScope {
    #[default]
    PerPeer,
    Main,
}

/// SearXNG web search.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WebSearchConfig {
    /// Base URL of the SearXNG instance (its JSON API is `<base>/search?format=json`).
    pub base_url: String,
    /// Searches allowed per day by the plan.
    pub max_per_day: u32,
}

fn default_listen() -> String {
    format!("0.0.0.0:{}", crate::names::AGENT_PORT)
}
fn default_data_dir() -> String {
    crate::names::DATA_MOUNT.to_string()
}
fn default_token_file() -> String {
    format!(
        "{}/{}",
        crate::names::TOKEN_MOUNT,
        crate::names::GATEWAY_TOKEN_KEY
    )
}
fn default_tool_loop_limit() -> u32 {
    4
}
fn default_context_window() -> u32 {
    8192
}
fn default_timeout() -> u64 {
    120
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_config_gets_defaults_and_unknown_fields_are_refused() {
        let c: LiteAgentConfig = serde_json::from_str(
            r#"{"model":{"provider":"platform","baseUrl":"http://m/v1","model":"smollm2"},"storageLimitBytes":1024}"#,
        )
        .unwrap();
        assert_eq!(c.listen, "0.0.0.0:18789");
        assert_eq!(c.data_dir, "/data");
        assert_eq!(c.token_file, "/var/run/clawdbot/token/token");
        assert_eq!(c.session_scope, SessionScope::PerPeer);
        assert_eq!(c.model.context_window, 8192);
        let bad = serde_json::from_str::<LiteAgentConfig>(
            r#"{"model":{"provider":"platform","baseUrl":"u","model":"m"},"storageLimitBytes":1,"typo":1}"#,
        );
        assert!(bad.unwrap_err().to_string().contains("unknown field"));
    }
}
