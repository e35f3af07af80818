//! What a user may set for their agent, within their plan: a change is checked here (pure)
//! before it is stored and applied to the UserWorkspace.

use clawdbot_api::lite::SessionScope;
use clawdbot_api::workspace::ModelProvider;
use clawdbot_api::{Plan, PlanPolicy};

use crate::error::{Error, Result};
use crate::provision::PlatformModel;
use crate::types::{AgentSettings, KeyProvider};

/// A change of settings: what is `None` stays as it is.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SettingsPatch {
    pub provider: Option<ModelProvider>,
    pub model: Option<String>,
    pub temperature: Option<f64>,
    pub max_tokens: Option<u32>,
    pub session_scope: Option<SessionScope>,
    pub web_search: Option<bool>,
}

pub const MAX_TOKENS_LIMIT: u32 = 131_072;

/// What the plan and the stored keys allow, as the settings check needs it.
pub struct Allowed<'a> {
    pub plan: Plan,
    pub policy: &'a PlanPolicy,
    pub own_keys: &'a [KeyProvider],
    pub platform_models: &'a [PlatformModel],
}

/// The settings after `patch`, or the first rule it breaks (naming the field).
pub fn apply_patch(
    current: &AgentSettings,
    patch: &SettingsPatch,
    allowed: &Allowed<'_>,
) -> Result<AgentSettings> {
    let mut next = current.clone();
    if let Some(provider) = patch.provider
        && provider != current.provider
    {
        next.provider = provider;
        // A model of one provider means nothing to another.
        next.model = None;
        next.endpoint = None;
    }
    if let Some(own) = KeyProvider::of(next.provider) {
        if !allowed.policy.allows_own_key {
            return Err(Error::Forbidden(format!(
                "provider: your own {} key is not available on the {} plan; use the platform model or upgrade",
                own.as_str(),
                allowed.plan
            )));
        }
        if !allowed.own_keys.contains(&own) {
            return Err(Error::invalid(
                "provider",
                format!(
                    "store your {} key first (POST /api/v1/api-keys)",
                    own.as_str()
                ),
            ));
        }
    }
    if let Some(model) = &patch.model {
        let model = model.trim();
        if model.is_empty()
            || model.len() > 200
            || !model
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._:/-@".contains(&b))
        {
            return Err(Error::invalid(
                "model",
                "must be 1 to 200 letters, digits or . _ : / - @ (GET /api/v1/models lists them)",
            ));
        }
        match next.provider {
            ModelProvider::Platform => {
                if !allowed.policy.allows_platform_model(model) {
                    return Err(Error::Forbidden(format!(
                        "model: {model} is not available on the {} plan; upgrade to use it",
                        allowed.plan
                    )));
                }
                let served = allowed
                    .platform_models
                    .iter()
                    .find(|m| m.name == model)
                    .ok_or_else(|| {
                        Error::invalid(
                            "model",
                            "is not a platform model (GET /api/v1/models lists them)",
                        )
                    })?;
                next.endpoint = Some(served.endpoint.clone());
            }
            ModelProvider::Openai | ModelProvider::Anthropic => next.endpoint = None,
        }
        next.model = Some(model.to_string());
    }
    if next.provider != ModelProvider::Platform && next.model.is_none() {
        return Err(Error::invalid(
            "model",
            format!("is required with provider {}", next.provider.as_str()),
        ));
    }
    if let Some(t) = patch.temperature {
        if !(t.is_finite() && (0.0..=2.0).contains(&t)) {
            return Err(Error::invalid("temperature", "must be between 0 and 2"));
        }
        next.temperature = Some(t);
    }
    if let Some(m) = patch.max_tokens {
        if !(1..=MAX_TOKENS_LIMIT).contains(&m) {
            return Err(Error::invalid(
                "max_tokens",
                format!("must be between 1 and {MAX_TOKENS_LIMIT}"),
            ));
        }
        next.max_tokens = Some(m);
    }
    if let Some(s) = patch.session_scope {
        next.session_scope = s;
    }
    if let Some(w) = patch.web_search {
        if w && !allowed.policy.allows_web_search {
            return Err(Error::Forbidden(format!(
                "web_search: not available on the {} plan",
                allowed.plan
            )));
        }
        next.web_search = w;
    }
    Ok(next)
}

/// The settings as a plan allows them, after a plan change: what the new plan does not allow
/// is switched off (never deleted: stored keys stay, and come back with an upgrade), and each
/// change is described for the user.
pub fn fit_to_plan(
    current: &AgentSettings,
    plan: Plan,
    policy: &PlanPolicy,
) -> (AgentSettings, Vec<String>) {
    let mut next = current.clone();
    let mut notes = Vec::new();
    if let Some(own) = KeyProvider::of(next.provider)
        && !policy.allows_own_key
    {
        next.provider = ModelProvider::Platform;
        next.model = None;
        next.endpoint = None;
        notes.push(format!(
            "your own {} key is not used on the {plan} plan (it stays stored); the platform model answers instead",
            own.as_str()
        ));
    }
    if next.provider == ModelProvider::Platform
        && let Some(model) = &next.model
        && !policy.allows_platform_model(model)
    {
        notes.push(format!(
            "the model {model} is not available on the {plan} plan; the platform's default model answers instead"
        ));
        next.model = None;
        next.endpoint = None;
    }
    if next.web_search && !policy.allows_web_search {
        next.web_search = false;
        notes.push(format!("web search is off on the {plan} plan"));
    }
    (next, notes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn models() -> Vec<PlatformModel> {
        vec![PlatformModel {
            name: "qwen2.5-7b".into(),
            endpoint: "big".into(),
            ready: true,
        }]
    }

    fn check(plan: Plan, keys: &[KeyProvider], patch: SettingsPatch) -> Result<AgentSettings> {
        let policy = PlanPolicy::default_for(plan);
        let m = models();
        let allowed = Allowed {
            plan,
            policy: &policy,
            own_keys: keys,
            platform_models: &m,
        };
        apply_patch(&AgentSettings::default(), &patch, &allowed)
    }

    #[test]
    fn a_downgrade_switches_off_what_the_plan_lacks_and_says_so() {
        let pro = AgentSettings {
            provider: ModelProvider::Openai,
            model: Some("gpt-4o-mini".into()),
            web_search: true,
            ..Default::default()
        };
        let (free, notes) = fit_to_plan(&pro, Plan::Free, &PlanPolicy::default_for(Plan::Free));
        assert_eq!(free.provider, ModelProvider::Platform);
        assert_eq!(free.model, None);
        assert!(!free.web_search);
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(notes[0].contains("stays stored"));
        let (same, none) = fit_to_plan(&pro, Plan::Pro, &PlanPolicy::default_for(Plan::Pro));
        assert_eq!(same, pro);
        assert!(none.is_empty());
    }

    #[test]
    fn a_platform_model_outside_the_plan_is_refused() {
        let mut policy = PlanPolicy::default_for(Plan::Free);
        policy.platform_models = vec!["small".into()];
        let m = models();
        let allowed = Allowed {
            plan: Plan::Free,
            policy: &policy,
            own_keys: &[],
            platform_models: &m,
        };
        let r = apply_patch(
            &AgentSettings::default(),
            &SettingsPatch {
                model: Some("qwen2.5-7b".into()),
                ..Default::default()
            },
            &allowed,
        );
        assert!(
            matches!(&r, Err(Error::Forbidden(m)) if m.starts_with("model:")),
            "{r:?}"
        );
    }

    #[test]
    fn free_plans_keep_to_the_platform_without_search() {
        let own = check(
            Plan::Free,
            &[KeyProvider::Openai],
            SettingsPatch {
                provider: Some(ModelProvider::Openai),
                model: Some("gpt-4o-mini".into()),
                ..Default::default()
            },
        );
        assert!(matches!(own, Err(Error::Forbidden(m)) if m.starts_with("provider:")));
        let search = check(
            Plan::Free,
            &[],
            SettingsPatch {
                web_search: Some(true),
                ..Default::default()
            },
        );
        assert!(matches!(search, Err(Error::Forbidden(m)) if m.starts_with("web_search:")));
        let s = check(
            Plan::Free,
            &[],
            SettingsPatch {
                model: Some("qwen2.5-7b".into()),
                temperature: Some(0.2),
                max_tokens: Some(256),
                session_scope: Some(SessionScope::Main),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(
            (s.model.as_deref(), s.endpoint.as_deref()),
            (Some("qwen2.5-7b"), Some("big"))
        );
        assert_eq!(
            (s.temperature, s.max_tokens, s.session_scope),
            (Some(0.2), Some(256), SessionScope::Main)
        );
    }

    #[test]
    fn own_providers_need_a_stored_key_and_a_model() {
        let no_key = check(
            Plan::Pro,
            &[],
            SettingsPatch {
                provider: Some(ModelProvider::Anthropic),
                model: Some("claude-sonnet-4-0".into()),
                ..Default::default()
            },
        );
        assert!(matches!(
            no_key,
            Err(Error::Invalid {
                field: "provider",
                ..
            })
        ));
        let no_model = check(
            Plan::Pro,
            &[KeyProvider::Anthropic],
            SettingsPatch {
                provider: Some(ModelProvider::Anthropic),
                ..Default::default()
            },
        );
        assert!(matches!(
            no_model,
            Err(Error::Invalid { field: "model", .. })
        ));
        let ok = check(
            Plan::Pro,
            &[KeyProvider::Anthropic],
            SettingsPatch {
                provider: Some(ModelProvider::Anthropic),
                model: Some("claude-sonnet-4-0".into()),
                web_search: Some(true),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(ok.provider, ModelProvider::Anthropic);
        assert!(ok.web_search && ok.endpoint.is_none());
    }

    #[test]
    fn out_of_range_values_name_their_field() {
        for (patch, field) in [
            (
                SettingsPatch {
                    temperature: Some(2.5),
                    ..Default::default()
                },
                "temperature",
            ),
            (
                SettingsPatch {
                    temperature: Some(f64::NAN),
                    ..Default::default()
                },
                "temperature",
            ),
            (
                SettingsPatch {
                    max_tokens: Some(0),
                    ..Default::default()
                },
                "max_tokens",
            ),
            (
                SettingsPatch {
                    model: Some("no such model".into()),
                    ..Default::default()
                },
                "model",
            ),
            (
                SettingsPatch {
                    model: Some("unknown-platform-model".into()),
                    ..Default::default()
                },
                "model",
            ),
        ] {
            let e = check(Plan::Team, &[], patch).unwrap_err();
            assert!(
                matches!(e, Error::Invalid { field: f, .. } if f == field),
                "{e}"
            );
        }
    }
}
