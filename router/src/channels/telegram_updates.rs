//! How Telegram's updates reach the router: a webhook when the router has a public HTTPS URL,
//! long polling otherwise (a laptop, a cluster without ingress, the one-machine main job).
//!
//! - Webhook: at start every replica calls `setWebhook` with `<public url>/webhooks/telegram`,
//!   the secret token Telegram then sends in `X-Telegram-Bot-Api-Secret-Token`, and
//!   `allowed_updates: ["message"]`. Idempotent, so all replicas may do it; retried with
//!   backoff until Telegram accepts it (a bad URL is logged as Telegram's own words).
//! - Long polling: the Bot API refuses a second concurrent `getUpdates` (409), so one replica
//!   polls: the holder of the Lease `--telegram-polling-lease-name`. It first deletes any
//!   webhook (without dropping pending updates), then asks for updates with a 25 s long poll.
//!   The offset, which confirms updates to Telegram, moves past an update only once
//!   [`Core::accept`] has it (recorded, or a known duplicate); an update the router cannot
//!   take now (503: in-flight limit) is asked for again, so nothing is lost. A replica that
//!   dies before confirming makes the next holder receive the same updates again; the dedupe
//!   on `update_id` answers each once.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::telegram::parse_update;
use crate::config::{Config, Secret, TelegramUpdatesMode};
use crate::lease::{Leader, lost};
use crate::pipeline::Core;

/// Seconds one `getUpdates` call waits for an update (Telegram allows up to 50).
const POLL_SECONDS: u64 = 25;

/// Where the bot's updates come from.
pub enum Updates {
    /// Telegram posts them to this URL (set with `setWebhook` at start).
    Webhook {
        bot: BotApi,
        url: String,
        secret: Secret,
    },
    /// This router asks for them, under a Lease.
    Polling { bot: BotApi, leader: Leader },
}

/// The few Bot API methods this needs, by their documented JSON shapes.
#[derive(Clone)]
pub struct BotApi {
    http: reqwest::Client,
    api_base: String,
    token: Secret,
}

/// A Bot API answer: `{"ok": true, "result": ...}` or `{"ok": false, "description": ...}`.
#[derive(Deserialize)]
struct Answer {
    ok: bool,
    #[serde(default)]
    result: Value,
    #[serde(default)]
    description: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum BotApiError {
    /// Without the URL: it contains the bot token.
    #[error("Telegram unreachable: {0}")]
    Unreachable(String),
    #[error("Telegram refused {method} ({status}): {description}")]
    Refused {
        method: &'static str,
        status: u16,
        description: String,
    },
}

impl BotApi {
    pub fn new(http: &reqwest::Client, api_base: &str, token: Secret) -> Self {
        BotApi {
            http: http.clone(),
            api_base: api_base.trim_end_matches('/').to_string(),
            token,
        }
    }

    async fn call(
        &self,
        method: &'static str,
        body: Value,
        timeout: Duration,
    ) -> Result<Value, BotApiError> {
        let url = format!("{}/bot{}/{method}", self.api_base, self.token.expose());
        let response = self
            .http
            .post(url)
            .json(&body)
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| BotApiError::Unreachable(e.without_url().to_string()))?;
        let status = response.status().as_u16();
        let answer: Answer = response
            .json()
            .await
            .map_err(|e| BotApiError::Unreachable(e.without_url().to_string()))?;
        if answer.ok {
            Ok(answer.result)
        } else {
            Err(BotApiError::Refused {
                method,
                status,
                description: answer.description.unwrap_or_default(),
            })
        }
    }
}

impl Updates {
    /// How this router gets Telegram's updates, if the Telegram channel is on and they are
    /// its job (`webhook` without a public URL: the webhook is registered elsewhere). A public
    /// URL without a webhook secret is a configuration error: Telegram's posts could not be
    /// told from anyone else's.
    pub fn from_config(
        config: &Config,
        http: &reqwest::Client,
        kube: kube::Client,
    ) -> anyhow::Result<Option<Self>> {
        let tg = &config.telegram;
        let Some(token) = tg.bot_token.clone() else {
            return Ok(None);
        };
        let bot = BotApi::new(http, &tg.api_base, token);
        let public = config.server.public_url.as_deref();
        let webhook = match tg.updates {
            TelegramUpdatesMode::Polling => false,
            TelegramUpdatesMode::Webhook => true,
            TelegramUpdatesMode::Auto => public.is_some(),
        };
        if !webhook {
            return Ok(Some(Updates::Polling {
                bot,
                leader: Leader::new(
                    kube,
                    &tg.polling_lease_name,
                    &config.kube.lease_namespace,
                    crate::lease::identity(config),
                    tg.polling_lease_seconds,
                ),
            }));
        }
        let Some(secret) = tg.webhook_secret.clone() else {
            anyhow::bail!(
                "Telegram updates come by webhook here (ROUTER_PUBLIC_URL or TELEGRAM_UPDATES=webhook), \
                 so TELEGRAM_WEBHOOK_SECRET must be set: any random string of 1-256 characters \
                 A-Z, a-z, 0-9, _ and -, which Telegram sends back with every update"
            );
        };
        Ok(public.map(|public| Updates::Webhook {
            bot,
            url: format!("{}/webhooks/telegram", public.trim_end_matches('/')),
            secret,
        }))
    }

    /// Sets the webhook, or polls while holding the Lease, until `stop`.
    pub async fn run(self, core: Arc<Core>, stop: CancellationToken) {
        match self {
            Updates::Webhook { bot, url, secret } => {
                register_webhook(&bot, &url, &secret, &stop).await
            }
            Updates::Polling { bot, leader } => {
                leader
                    .run(&stop, |mut leading| {
                        let (bot, core, stop) = (&bot, &core, &stop);
                        async move {
                            tokio::select! {
                                _ = poll(bot, core, stop) => {}
                                _ = lost(&mut leading) => {
                                    tracing::info!("telegram polling lease lost; another replica polls now");
                                }
                            }
                        }
                    })
                    .await
            }
        }
    }
}

/// Tells Telegram where to post updates, retrying until it accepts or `stop`.
async fn register_webhook(bot: &BotApi, url: &str, secret: &Secret, stop: &CancellationToken) {
    let body = json!({
        "url": url,
        "secret_token": secret.expose(),
        "allowed_updates": ["message"],
    });
    let mut backoff = Duration::from_secs(1);
    loop {
        match bot
            .call("setWebhook", body.clone(), Duration::from_secs(30))
            .await
        {
            Ok(_) => {
                tracing::info!(%url, "telegram webhook set");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, %url, retry_in = ?backoff, "telegram setWebhook failed")
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(300));
    }
}

/// Long polling while this replica holds the Lease (the caller ends it when the Lease is
/// lost). Returns on `stop`.
async fn poll(bot: &BotApi, core: &Arc<Core>, stop: &CancellationToken) {
    let mut webhook_deleted = false;
    let mut offset: Option<i64> = None;
    let mut backoff = Duration::from_secs(1);
    while !stop.is_cancelled() {
        if !webhook_deleted {
            // getUpdates is refused while a webhook is set; pending updates are kept.
            match bot
                .call(
                    "deleteWebhook",
                    json!({"drop_pending_updates": false}),
                    Duration::from_secs(30),
                )
                .await
            {
                Ok(_) => {
                    tracing::info!("telegram: no webhook; polling for updates");
                    webhook_deleted = true;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "telegram deleteWebhook failed");
                    if pause(stop, &mut backoff).await {
                        return;
                    }
                    continue;
                }
            }
        }
        let mut request = json!({"timeout": POLL_SECONDS, "allowed_updates": ["message"]});
        if let Some(o) = offset {
            request["offset"] = json!(o);
        }
        let batch = tokio::select! {
            _ = stop.cancelled() => return,
            r = bot.call("getUpdates", request, Duration::from_secs(POLL_SECONDS + 10)) => r,
        };
        let updates = match batch {
            Ok(Value::Array(updates)) => updates,
            Ok(other) => {
                tracing::warn!(kind = %json_kind(&other), "telegram getUpdates answered something other than a list");
                Vec::new()
            }
            Err(e) => {
                if let BotApiError::Refused { status: 409, .. } = e {
                    // A webhook was set meanwhile (by another deployment or by hand).
                    webhook_deleted = false;
                }
                tracing::warn!(error = %e, "telegram getUpdates failed");
                if pause(stop, &mut backoff).await {
                    return;
                }
                continue;
            }
        };
        backoff = Duration::from_secs(1);
        for update in updates {
            let Some(id) = update["update_id"].as_i64() else {
                tracing::warn!("telegram update without update_id; skipped");
                continue;
            };
            if !take(core, &update, id).await {
                // Not taken now: ask for it again (the offset stays before it).
                if pause(stop, &mut backoff).await {
                    return;
                }
                break;
            }
            offset = Some(id + 1);
        }
    }
}

/// Hands one polled update to the pipeline, as the webhook does. False when the router
/// cannot take it now and it must be asked for again.
async fn take(core: &Arc<Core>, update: &Value, id: i64) -> bool {
    let body = update.to_string();
    let inbound = match parse_update(body.as_bytes()) {
        Ok(Some(inbound)) => inbound,
        Ok(None) => return true,
        Err(e) => {
            // The webhook answers 400 to the same; Telegram would not resend it either.
            tracing::info!(error = %e, update_id = id, "malformed telegram update skipped");
            return true;
        }
    };
    // Every error means "not recorded": overloaded, another delivery still recording it,
    // a store down. The webhook answers those with a status that makes Telegram resend.
    match core.accept(inbound).await {
        Ok(_) => true,
        Err(e) => {
            tracing::info!(error = %e, update_id = id, "telegram update not taken yet");
            false
        }
    }
}

/// Sleeps `backoff` (doubling it, up to a minute) unless stopped; true when stopped.
async fn pause(stop: &CancellationToken, backoff: &mut Duration) -> bool {
    let wait = *backoff;
    *backoff = (*backoff * 2).min(Duration::from_secs(60));
    tokio::select! {
        _ = stop.cancelled() => true,
        _ = tokio::time::sleep(wait) => false,
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}
