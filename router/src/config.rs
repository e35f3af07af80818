//! Configuration: one clap struct, every field also settable from the environment.

use std::net::SocketAddr;
use std::time::Duration;

/// A secret value (token, key, URL with a password). Its `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The value itself: only where it is handed to a client, never to a log line.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret(s.to_string()))
    }
}

/// The router's configuration. A channel is enabled when its secrets are set.
#[derive(Clone, Debug, clap::Parser)]
#[command(
    name = "clawdbot-router",
    about = "Routes chat platform webhooks to tenant agents"
)]
pub struct Config {
    /// Address of the webhooks and API.
    #[arg(long, env = "ROUTER_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// Address of `/metrics` (kept off the public port).
    #[arg(long, env = "ROUTER_METRICS_LISTEN", default_value = "0.0.0.0:9090")]
    pub metrics_listen: SocketAddr,
    /// Postgres URL (users, channel connections, codes, inbound messages, usage).
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Secret,
    /// Most Postgres connections of this replica.
    #[arg(long, env = "ROUTER_DATABASE_MAX_CONNECTIONS", default_value_t = 32)]
    pub database_max_connections: u32,
    /// Most messages this replica processes at once; beyond that webhooks get 503 with
    /// `Retry-After` and the platform retries (Telegram and Meta do; nothing is lost).
    #[arg(long, env = "ROUTER_MAX_IN_FLIGHT", default_value_t = 2048)]
    pub max_in_flight: usize,
    /// Redis URL (dedupe, rate limits, quotas, attempt counters).
    #[arg(long, env = "REDIS_URL")]
    pub redis_url: Secret,
    /// Prefix of every Redis key (lets several deployments or tests share one Redis).
    #[arg(long, env = "ROUTER_REDIS_PREFIX", default_value = "clawdbot:")]
    pub redis_prefix: String,
    /// Watch UserWorkspaces and gateway Secrets in this namespace only (all namespaces if unset).
    #[arg(long, env = "ROUTER_WATCH_NAMESPACE")]
    pub watch_namespace: Option<String>,
    /// Bearer token of the admin endpoints (`/api/v1/channels/generate-code`).
    #[arg(long, env = "ROUTER_ADMIN_TOKEN")]
    pub admin_token: Secret,
    /// Link sent to unknown senders.
    #[arg(
        long,
        env = "ROUTER_REGISTRATION_URL",
        default_value = "https://clawdbot.cloud/signup"
    )]
    pub registration_url: String,

    /// Telegram bot token; enables the Telegram channel.
    #[arg(long, env = "TELEGRAM_BOT_TOKEN")]
    pub telegram_bot_token: Option<Secret>,
    /// Secret the Bot API sends in `X-Telegram-Bot-Api-Secret-Token` (set with setWebhook).
    #[arg(long, env = "TELEGRAM_WEBHOOK_SECRET")]
    pub telegram_webhook_secret: Option<Secret>,
    /// Bot API base URL.
    #[arg(
        long,
        env = "TELEGRAM_API_BASE",
        default_value = "https://api.telegram.org"
    )]
    pub telegram_api_base: String,
    /// Messages per second the bot sends in all (Telegram allows about 30; divide by replicas).
    #[arg(long, env = "TELEGRAM_GLOBAL_RATE", default_value_t = 30.0)]
    pub telegram_global_rate: f64,
    /// Messages per second to one chat (Telegram allows about 1).
    #[arg(long, env = "TELEGRAM_CHAT_RATE", default_value_t = 1.0)]
    pub telegram_chat_rate: f64,

    /// WhatsApp app secret (verifies `X-Hub-Signature-256`); enables the WhatsApp channel.
    #[arg(long, env = "WHATSAPP_APP_SECRET")]
    pub whatsapp_app_secret: Option<Secret>,
    /// Token of the GET verification handshake.
    #[arg(long, env = "WHATSAPP_VERIFY_TOKEN")]
    pub whatsapp_verify_token: Option<Secret>,
    /// Graph API access token for sending.
    #[arg(long, env = "WHATSAPP_ACCESS_TOKEN")]
    pub whatsapp_access_token: Option<Secret>,
    /// Graph API base URL.
    #[arg(
        long,
        env = "WHATSAPP_API_BASE",
        default_value = "https://graph.facebook.com"
    )]
    pub whatsapp_api_base: String,
    /// Graph API version.
    #[arg(long, env = "WHATSAPP_API_VERSION", default_value = "v21.0")]
    pub whatsapp_api_version: String,
    /// Approved template used when a reply is ready after the 24-hour customer service window
    /// closed (free-form messages are refused then). Its one body parameter is the reply's start.
    #[arg(
        long,
        env = "WHATSAPP_REPLY_TEMPLATE",
        default_value = "clawdbot_reply_ready"
    )]
    pub whatsapp_reply_template: String,
    /// Language code of that template.
    #[arg(long, env = "WHATSAPP_TEMPLATE_LANGUAGE", default_value = "en")]
    pub whatsapp_template_language: String,

    /// Discord application public key (hex); enables the Discord interactions endpoint.
    #[arg(long, env = "DISCORD_PUBLIC_KEY")]
    pub discord_public_key: Option<String>,
    /// Discord API base URL.
    #[arg(
        long,
        env = "DISCORD_API_BASE",
        default_value = "https://discord.com/api/v10"
    )]
    pub discord_api_base: String,
    /// Discord bot token; enables direct messages, which Discord delivers only over the
    /// Gateway websocket (held by one replica, see `--discord-gateway-lease-name`), answered
    /// through the REST API.
    #[arg(long, env = "DISCORD_BOT_TOKEN")]
    pub discord_bot_token: Option<Secret>,
    /// Discord Gateway URL (`/?v=10&encoding=json` is appended).
    #[arg(
        long,
        env = "DISCORD_GATEWAY_URL",
        default_value = "wss://gateway.discord.gg"
    )]
    pub discord_gateway_url: String,
    /// Name of the Lease deciding which replica holds the Discord Gateway connection.
    #[arg(
        long,
        env = "DISCORD_GATEWAY_LEASE_NAME",
        default_value = "clawdbot-router-discord-gateway"
    )]
    pub discord_gateway_lease_name: String,
    /// Seconds the Gateway lease is valid without renewal: after a holder dies, another
    /// replica connects within this (at once after a clean stop, which releases it).
    #[arg(long, env = "DISCORD_GATEWAY_LEASE_SECONDS", default_value_t = 15)]
    pub discord_gateway_lease_seconds: u64,
    /// Namespace of the router's Leases (the router's own namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub lease_namespace: String,
    /// Identity in the router's Leases (the pod name; the host name and a random suffix when
    /// unset).
    #[arg(long, env = "POD_NAME")]
    pub lease_identity: Option<String>,

    /// Key signing web chat tokens; enables the web chat channel.
    #[arg(long, env = "ROUTER_WEB_TOKEN_SECRET")]
    pub web_token_secret: Option<Secret>,

    /// Longest wait for an agent's reply.
    #[arg(long, env = "ROUTER_AGENT_TIMEOUT", default_value = "120s", value_parser = humantime_duration)]
    pub agent_timeout: Duration,
    /// How long a message to a hibernated tenant is held in memory while it wakes; after that
    /// it stays in Postgres and is delivered by the sweeper once the agent is ready.
    #[arg(long, env = "ROUTER_WAKE_HOLD", default_value = "25s", value_parser = humantime_duration)]
    pub wake_hold: Duration,
    /// At most one last-activity annotation per tenant per this window (all replicas together).
    #[arg(long, env = "ROUTER_ACTIVITY_WINDOW", default_value = "60s", value_parser = humantime_duration)]
    pub activity_window: Duration,
    /// Messages per user per minute.
    #[arg(long, env = "ROUTER_RATE_LIMIT_PER_MINUTE", default_value_t = 20)]
    pub rate_limit_per_minute: u32,
    /// How often held and orphaned messages are looked for.
    #[arg(long, env = "ROUTER_SWEEP_INTERVAL", default_value = "2s", value_parser = humantime_duration)]
    pub sweep_interval: Duration,
    /// Largest webhook body.
    #[arg(long, env = "ROUTER_MAX_BODY_BYTES", default_value_t = 256 * 1024)]
    pub max_body_bytes: usize,
    /// Wrong connection codes a sender may try per 10 minutes.
    #[arg(long, env = "ROUTER_CODE_ATTEMPTS", default_value_t = 5)]
    pub code_attempts: u32,
}

fn humantime_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration such as 500ms, 20s or 2m"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "" | "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        _ => Err(format!("{s:?} is not a duration such as 500ms, 20s or 2m")),
    }
}

impl Config {
    /// A configuration with every channel off and the given stores, for tests and tools.
    pub fn minimal(database_url: &str, redis_url: &str, admin_token: &str) -> Self {
        use clap::Parser;
        Config::parse_from([
            "clawdbot-router",
            "--database-url",
            database_url,
            "--redis-url",
            redis_url,
            "--admin-token",
            admin_token,
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_show_in_debug() {
        let mut c = Config::minimal("postgres://u:hunter2@db/x", "redis://r", "admintoken123");
        c.telegram_bot_token = Some(Secret::new("123:ABCsecret"));
        c.discord_bot_token = Some(Secret::new("MTA5.discord-bot-secret"));
        let shown = format!("{c:?}");
        for secret in [
            "hunter2",
            "admintoken123",
            "ABCsecret",
            "discord-bot-secret",
        ] {
            assert!(!shown.contains(secret), "{secret} leaked: {shown}");
        }
        assert!(shown.contains("[redacted]"));
    }

    #[test]
    fn durations_parse() {
        assert_eq!(humantime_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(humantime_duration("20s"), Ok(Duration::from_secs(20)));
        assert_eq!(humantime_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(humantime_duration("soon").is_err());
    }
}
