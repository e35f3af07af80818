//! Discord: one application, two ways in.
//!
//! - [`interactions`]: Ed25519-signed HTTP requests, PING and the `/ask question:<text>` slash
//!   command, answered with a deferred response and then through the interaction webhook
//!   (valid 15 minutes). Needs `DISCORD_PUBLIC_KEY`.
//! - [`gateway`]: plain direct messages, which Discord delivers to a bot only over the Gateway
//!   websocket. One replica holds that connection under a Lease; replies go through the REST
//!   API with the bot token. Needs `DISCORD_BOT_TOKEN`.
//!
//! Both use the author's user id as the sender, so one connection code links both, and a DM
//! shares its session (`discord:dm:<user>`) with an `/ask` in the same DM. `reply_to` tells the
//! paths apart: `{"application_id", "token"}` for an interaction, `{"channel_id"}` for a DM.

pub mod gateway;
pub mod interactions;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::HeaderValue;
use chrono::Utc;
use ed25519_dalek::VerifyingKey;
use serde_json::{Value, json};

use super::Routes;
use super::retry::{Pauses, Platform, Policy};
use crate::config::{Config, Secret};
use crate::inbound::Inbound;
use crate::outbound::{BoxFuture, Channel, ReplyKind, SendError};
use crate::pipeline::Core;

pub const NAME: &str = "discord";
pub const SIGNATURE_HEADER: &str = "x-signature-ed25519";
pub const TIMESTAMP_HEADER: &str = "x-signature-timestamp";
pub const MAX_CHARS: usize = 2000;
/// Interaction tokens are valid this long.
const TOKEN_LIFETIME: Duration = Duration::from_secs(15 * 60);

pub struct Discord {
    http: reqwest::Client,
    api_base: String,
    /// Verifies interactions; without it the interactions endpoint is off.
    public_key: Option<VerifyingKey>,
    /// Sends DM replies; without it DMs are off.
    bot_token: Option<Secret>,
    /// Interactions whose original (deferred) response was already edited: later messages
    /// are follow-ups.
    answered: Mutex<HashMap<String, Instant>>,
    pauses: Pauses,
}

/// Where a reply goes, read from [`Inbound::reply_to`].
#[derive(Debug, PartialEq, Eq)]
pub enum ReplyTo<'a> {
    /// An interaction: edit the deferred response, then follow-ups.
    Interaction {
        application_id: &'a str,
        token: &'a str,
    },
    /// A DM channel, through the REST API.
    Channel(&'a str),
    /// A user the bot writes to first: their DM channel is opened (`POST /users/@me/channels`)
    /// and the message posted there.
    Recipient(&'a str),
}

impl<'a> ReplyTo<'a> {
    pub fn of(reply_to: &'a Value) -> Option<Self> {
        if let (Some(application_id), Some(token)) = (
            reply_to["application_id"].as_str(),
            reply_to["token"].as_str(),
        ) {
            return Some(ReplyTo::Interaction {
                application_id,
                token,
            });
        }
        if let Some(id) = reply_to["channel_id"].as_str() {
            return is_snowflake(id).then_some(ReplyTo::Channel(id));
        }
        reply_to["recipient_id"]
            .as_str()
            .filter(|id| is_snowflake(id))
            .map(ReplyTo::Recipient)
    }
}

/// Discord ids are decimal snowflakes; anything else never reaches a URL path.
pub fn is_snowflake(id: &str) -> bool {
    !id.is_empty() && id.len() <= 20 && id.bytes().all(|b| b.is_ascii_digit())
}

impl Discord {
    /// Enabled when the public key (interactions) or the bot token (DMs) is set.
    pub fn from_config(config: &Config, http: &reqwest::Client) -> Option<Self> {
        let public_key = config.discord.public_key.as_deref().and_then(|hex_key| {
            let key = hex::decode(hex_key.trim())
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .and_then(|b| VerifyingKey::from_bytes(&b).ok());
            if key.is_none() {
                tracing::error!(
                    "DISCORD_PUBLIC_KEY is not a hex Ed25519 public key: Discord interactions stay off"
                );
            }
            key
        });
        if public_key.is_none() && config.discord.bot_token.is_none() {
            return None;
        }
        Some(Discord {
            http: http.clone(),
            api_base: config.discord.api_base.trim_end_matches('/').to_string(),
            public_key,
            bot_token: config.discord.bot_token.clone(),
            answered: Mutex::new(HashMap::new()),
            pauses: Pauses::default(),
        })
    }

    /// `Authorization: Bot <token>`, marked sensitive so that no debug output shows it.
    fn bot_authorization(&self) -> Result<HeaderValue, SendError> {
        let token = self.bot_token.as_ref().ok_or(SendError::Gone)?;
        let mut value = HeaderValue::from_str(&format!("Bot {}", token.expose()))
            .map_err(|_| SendError::Unreachable("the bot token is not a valid header".into()))?;
        value.set_sensitive(true);
        Ok(value)
    }

    async fn send_interaction(
        &self,
        to: &Inbound,
        application_id: &str,
        token: &str,
        text: &str,
    ) -> Result<(), SendError> {
        if (Utc::now() - to.sent_at)
            .to_std()
            .is_ok_and(|age| age > TOKEN_LIFETIME)
        {
            return Err(SendError::Gone);
        }
        let first = {
            let mut answered = self.answered.lock().expect("answered lock");
            answered.retain(|_, at| at.elapsed() < TOKEN_LIFETIME);
            answered
                .insert(to.external_id.clone(), Instant::now())
                .is_none()
        };
        let followup = format!("{}/webhooks/{application_id}/{token}", self.api_base);
        let original = format!("{followup}/messages/@original");
        let body = json!({"content": text, "allowed_mentions": {"parse": []}});
        // One interaction's messages share a webhook route (and its rate limit bucket).
        let route = format!("interaction:{}", to.external_id);
        Platform::Discord
            .send(&Policy::REPLY, &self.pauses, route.as_str(), || {
                let request = if first {
                    self.http.patch(&original)
                } else {
                    self.http.post(&followup)
                };
                request.json(&body).timeout(Duration::from_secs(30))
            })
            .await
            .map(drop)
    }

    /// The DM channel with `user` (`POST /users/@me/channels`; Discord answers the same
    /// channel every time).
    async fn dm_channel(&self, user: &str) -> Result<String, SendError> {
        let authorization = self.bot_authorization()?;
        let url = format!("{}/users/@me/channels", self.api_base);
        let body = json!({"recipient_id": user});
        let response = Platform::Discord
            .send(&Policy::REPLY, &self.pauses, "users/@me/channels", || {
                self.http
                    .post(&url)
                    .header(reqwest::header::AUTHORIZATION, authorization.clone())
                    .json(&body)
                    .timeout(Duration::from_secs(30))
            })
            .await?;
        let channel: Value = response
            .json()
            .await
            .map_err(|e| SendError::Unreachable(e.without_url().to_string()))?;
        channel["id"]
            .as_str()
            .filter(|id| is_snowflake(id))
            .map(str::to_string)
            .ok_or_else(|| SendError::Unreachable("a DM channel without an id".into()))
    }

    /// `POST /channels/{id}/messages` with the bot token, the channel being the route a
    /// throttling answer pauses.
    async fn send_to_channel(&self, channel_id: &str, text: &str) -> Result<(), SendError> {
        let authorization = self.bot_authorization()?;
        let url = format!("{}/channels/{channel_id}/messages", self.api_base);
        let body = json!({"content": text, "allowed_mentions": {"parse": []}});
        Platform::Discord
            .send(&Policy::REPLY, &self.pauses, channel_id, || {
                self.http
                    .post(&url)
                    .header(reqwest::header::AUTHORIZATION, authorization.clone())
                    .json(&body)
                    .timeout(Duration::from_secs(30))
            })
            .await
            .map(drop)
    }
}

impl Routes for Discord {
    fn routes(self: Arc<Self>, core: Arc<Core>) -> axum::Router {
        if self.public_key.is_none() {
            return axum::Router::new();
        }
        interactions::routes(self, core)
    }
}

impl Channel for Discord {
    fn name(&self) -> &'static str {
        NAME
    }

    fn max_message_chars(&self) -> usize {
        MAX_CHARS
    }

    fn send<'a>(
        &'a self,
        to: &'a Inbound,
        text: &'a str,
        _kind: ReplyKind,
    ) -> BoxFuture<'a, Result<(), SendError>> {
        Box::pin(async move {
            match ReplyTo::of(&to.reply_to) {
                Some(ReplyTo::Interaction {
                    application_id,
                    token,
                }) => self.send_interaction(to, application_id, token, text).await,
                Some(ReplyTo::Channel(channel_id)) => self.send_to_channel(channel_id, text).await,
                Some(ReplyTo::Recipient(user)) => {
                    let channel_id = self.dm_channel(user).await?;
                    self.send_to_channel(&channel_id, text).await
                }
                None => Err(SendError::Gone),
            }
        })
    }

    /// A connected Discord user (their user id) gets a DM, when the bot token is set.
    fn address(&self, sender: &str) -> Option<Value> {
        (self.bot_token.is_some() && is_snowflake(sender)).then(|| json!({"recipient_id": sender}))
    }

    fn typing<'a>(&'a self, to: &'a Inbound) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            // An interaction's deferred response already shows "<app> is thinking...".
            let Some(ReplyTo::Channel(channel_id)) = ReplyTo::of(&to.reply_to) else {
                return;
            };
            let Ok(authorization) = self.bot_authorization() else {
                return;
            };
            let r = self
                .http
                .post(format!("{}/channels/{channel_id}/typing", self.api_base))
                .header(reqwest::header::AUTHORIZATION, authorization)
                .timeout(Duration::from_secs(10))
                .send()
                .await;
            if let Err(e) = r {
                tracing::debug!(error = %e.without_url(), "discord typing indicator failed");
            }
        })
    }

    fn typing_refresh(&self) -> Option<Duration> {
        // A DM's typing indicator shows for 10 seconds (interactions ignore the repeats).
        Some(Duration::from_secs(9))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_targets_keep_interactions_and_add_dm_channels() {
        // The shape interaction messages were always stored with.
        let interaction = json!({"application_id": "app1", "token": "tok"});
        assert_eq!(
            ReplyTo::of(&interaction),
            Some(ReplyTo::Interaction {
                application_id: "app1",
                token: "tok"
            })
        );
        let dm = json!({"channel_id": "1180000000000000001"});
        assert_eq!(
            ReplyTo::of(&dm),
            Some(ReplyTo::Channel("1180000000000000001"))
        );
        assert_eq!(ReplyTo::of(&json!({"channel_id": "../../users/@me"})), None);
        assert_eq!(ReplyTo::of(&json!({"application_id": "app1"})), None);
        assert_eq!(ReplyTo::of(&json!(null)), None);
    }

    #[test]
    fn snowflakes_are_decimal() {
        assert!(is_snowflake("80351110224678912"));
        assert!(!is_snowflake(""));
        assert!(!is_snowflake("12a"));
        assert!(!is_snowflake("123456789012345678901"));
    }
}
