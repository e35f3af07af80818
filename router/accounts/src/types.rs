//! The accounts domain's plain types: roles, users, providers of own keys, agent settings.

use chrono::{DateTime, Utc};
use clawdbot_api::Plan;
use clawdbot_api::lite::SessionScope;
use clawdbot_api::workspace::ModelProvider;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{Error, Result};

/// What a user may do: `user` their own things, `admin` also other accounts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    #[default]
    User,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Admin => "admin",
        }
    }
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "user" => Some(Role::User),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// An account as stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct User {
    pub id: Uuid,
    pub email: Option<String>,
    pub display_name: Option<String>,
    pub plan: Plan,
    pub role: Role,
    /// Set while suspended: no message reaches the agent, and the workspace sleeps.
    pub suspended_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

impl User {
    pub fn suspended(&self) -> bool {
        self.suspended_at.is_some()
    }
}

/// A provider the user may bring their own key for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyProvider {
    Openai,
    Anthropic,
}

impl KeyProvider {
    pub const ALL: [KeyProvider; 2] = [KeyProvider::Openai, KeyProvider::Anthropic];

    pub fn as_str(self) -> &'static str {
        match self {
            KeyProvider::Openai => "openai",
            KeyProvider::Anthropic => "anthropic",
        }
    }
    pub fn parse(s: &str) -> Option<KeyProvider> {
        match s {
            "openai" => Some(KeyProvider::Openai),
            "anthropic" => Some(KeyProvider::Anthropic),
            _ => None,
        }
    }
    pub fn model_provider(self) -> ModelProvider {
        match self {
            KeyProvider::Openai => ModelProvider::Openai,
            KeyProvider::Anthropic => ModelProvider::Anthropic,
        }
    }
    pub fn of(provider: ModelProvider) -> Option<KeyProvider> {
        match provider {
            ModelProvider::Platform => None,
            ModelProvider::Openai => Some(KeyProvider::Openai),
            ModelProvider::Anthropic => Some(KeyProvider::Anthropic),
        }
    }
    /// The key's name in the tenant's provider-key Secret (what the operator mounts).
    pub fn secret_key(self) -> &'static str {
        match self {
            KeyProvider::Openai => clawdbot_api::names::OPENAI_API_KEY,
            KeyProvider::Anthropic => clawdbot_api::names::ANTHROPIC_API_KEY,
        }
    }
    /// Models offered for this provider (the provider's own list is not fetched: no call
    /// with the user's key leaves the platform except the agent's).
    pub fn models(self) -> &'static [&'static str] {
        match self {
            KeyProvider::Openai => &[
                "gpt-4o-mini",
                "gpt-4o",
                "gpt-4.1-mini",
                "gpt-4.1",
                "o4-mini",
            ],
            KeyProvider::Anthropic => &[
                "claude-3-5-haiku-latest",
                "claude-sonnet-4-0",
                "claude-opus-4-0",
            ],
        }
    }

    /// Checks the shape of a key: the provider's prefix, printable ASCII, a sane length.
    pub fn check_key(self, key: &str) -> Result<()> {
        let prefix = match self {
            KeyProvider::Openai => "sk-",
            KeyProvider::Anthropic => "sk-ant-",
        };
        let shaped = key.starts_with(prefix)
            && (20..=512).contains(&key.len())
            && key.bytes().all(|b| b.is_ascii_graphic());
        if !shaped {
            return Err(Error::invalid(
                "key",
                format!(
                    "an {} key starts with {prefix:?} and is 20 to 512 printable characters without spaces",
                    self.as_str()
                ),
            ));
        }
        Ok(())
    }
}

/// How a key is shown once stored: its first three and last four characters (`sk-...abcd`).
pub fn mask_key(key: &str) -> String {
    let n = key.len();
    match (key.get(..3), key.get(n.saturating_sub(4)..)) {
        (Some(head), Some(tail)) if n >= 12 => format!("{head}...{tail}"),
        _ => "...".to_string(),
    }
}

/// What the user chose for their agent (within the plan).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AgentSettings {
    pub provider: ModelProvider,
    /// The model; `None`: the platform's default model.
    pub model: Option<String>,
    /// The platform ModelEndpoint serving `model` (platform provider only).
    pub endpoint: Option<String>,
    pub temperature: Option<f64>,
    pub max_tokens: Option<u32>,
    pub session_scope: SessionScope,
    pub web_search: bool,
}

impl Default for AgentSettings {
    fn default() -> Self {
        AgentSettings {
            provider: ModelProvider::Platform,
            model: None,
            endpoint: None,
            temperature: None,
            max_tokens: None,
            session_scope: SessionScope::PerPeer,
            web_search: false,
        }
    }
}

pub fn session_scope_str(s: SessionScope) -> &'static str {
    match s {
        SessionScope::PerPeer => "per-peer",
        SessionScope::Main => "main",
    }
}

pub fn parse_session_scope(s: &str) -> Option<SessionScope> {
    match s {
        "per-peer" => Some(SessionScope::PerPeer),
        "main" => Some(SessionScope::Main),
        _ => None,
    }
}

/// Normalises an e-mail (trimmed, lower case) and checks its shape.
pub fn normalize_email(email: &str) -> Result<String> {
    let e = email.trim().to_lowercase();
    let ok = e.len() <= 254
        && e.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
        })
        && !e.chars().any(|c| c.is_whitespace() || c.is_control())
        && e.matches('@').count() == 1;
    if !ok {
        return Err(Error::invalid(
            "email",
            "must be an e-mail address such as ada@example.com",
        ));
    }
    Ok(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_masked_to_prefix_and_last_four() {
        assert_eq!(mask_key("sk-proj-abcdefghijklmnop1234"), "sk-...1234");
        assert_eq!(mask_key("sk-ant-api03-xyzxyzxyzxyz9876"), "sk-...9876");
        assert_eq!(mask_key("short"), "...");
    }

    #[test]
    fn key_shapes_are_checked_per_provider() {
        assert!(
            KeyProvider::Openai
                .check_key("sk-proj-abcdefghijklmnop1234")
                .is_ok()
        );
        assert!(
            KeyProvider::Anthropic
                .check_key("sk-proj-abcdefghijklmnop1234")
                .is_err()
        );
        assert!(
            KeyProvider::Anthropic
                .check_key("sk-ant-api03-abcdefghijklmnop")
                .is_ok()
        );
        let e = KeyProvider::Openai
            .check_key("sk-has a space in it 12345")
            .unwrap_err();
        assert!(matches!(e, Error::Invalid { field: "key", .. }));
        assert!(
            !e.to_string().contains("space in it"),
            "the key is not echoed"
        );
    }

    #[test]
    fn emails_are_normalised_and_checked() {
        assert_eq!(
            normalize_email(" Ada@Example.COM ").unwrap(),
            "ada@example.com"
        );
        for bad in [
            "", "ada", "ada@", "@x.io", "a@b", "a b@c.io", "a@@c.io", "a@.io",
        ] {
            assert!(
                matches!(
                    normalize_email(bad),
                    Err(Error::Invalid { field: "email", .. })
                ),
                "{bad}"
            );
        }
    }
}
