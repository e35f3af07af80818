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

/// The router's configuration, grouped by concern. A channel is enabled when its secrets are
/// set. Every flag and environment variable keeps the name it had before the grouping
/// (`flag_and_env_names_are_stable` holds them), so deployments need no change.
#[derive(Clone, Debug, clap::Parser)]
#[command(
    name = "clawdbot-router",
    about = "Routes chat platform webhooks to tenant agents"
)]
pub struct Config {
    #[command(flatten)]
    pub server: ServerConfig,
    #[command(flatten)]
    pub database: DatabaseConfig,
    #[command(flatten)]
    pub redis: RedisConfig,
    #[command(flatten)]
    pub kube: KubeConfig,
    #[command(flatten)]
    pub onboarding: OnboardingConfig,
    #[command(flatten)]
    pub telegram: TelegramConfig,
    #[command(flatten)]
    pub whatsapp: WhatsAppConfig,
    #[command(flatten)]
    pub discord: DiscordConfig,
    #[command(flatten)]
    pub web: WebConfig,
    #[command(flatten)]
    pub limits: LimitsConfig,
}

/// Addresses and the admin token.
#[derive(Clone, Debug, clap::Args)]
#[command(next_help_heading = "Server")]
pub struct ServerConfig {
    /// Address of the webhooks and API.
    #[arg(long, env = "ROUTER_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// Address of `/metrics` (kept off the public port).
    #[arg(long, env = "ROUTER_METRICS_LISTEN", default_value = "0.0.0.0:9090")]
    pub metrics_listen: SocketAddr,
    /// Bearer token of the admin endpoints (`/api/v1/channels/generate-code`).
    #[arg(long, env = "ROUTER_ADMIN_TOKEN")]
    pub admin_token: Secret,
    /// The router's public HTTPS base URL, as the platforms reach it (for example
    /// `https://bot.example.com`). With it the router registers its own Telegram webhook at
    /// `<url>/webhooks/telegram`; without it Telegram updates are fetched by long polling.
    #[arg(long, env = "ROUTER_PUBLIC_URL")]
    pub public_url: Option<String>,
}

/// Postgres.
#[derive(Clone, Debug, clap::Args)]
#[command(next_help_heading = "Postgres")]
pub struct DatabaseConfig {
    /// Postgres URL (users, channel connections, codes, inbound messages, usage).
    #[arg(long = "database-url", id = "database_url", env = "DATABASE_URL")]
    pub url: Secret,
    /// Most Postgres connections of this replica.
    #[arg(
        long = "database-max-connections",
        id = "database_max_connections",
        env = "ROUTER_DATABASE_MAX_CONNECTIONS",
        default_value_t = 32
    )]
    pub max_connections: u32,
}

/// Redis.
#[derive(Clone, Debug, clap::Args)]
#[command(next_help_heading = "Redis")]
pub struct RedisConfig {
    /// Redis URL (dedupe, rate limits, quotas, attempt counters).
    #[arg(long = "redis-url", id = "redis_url", env = "REDIS_URL")]
    pub url: Secret,
    /// Prefix of every Redis key (lets several deployments or tests share one Redis).
    #[arg(
        long = "redis-prefix",
        id = "redis_prefix",
        env = "ROUTER_REDIS_PREFIX",
        default_value = "clawdbot:"
    )]
    pub prefix: String,
}

/// What the router watches in Kubernetes and the identity in its Leases.
#[derive(Clone, Debug, clap::Args)]
#[command(next_help_heading = "Kubernetes")]
pub struct KubeConfig {
    /// Watch UserWorkspaces and gateway Secrets in this namespace only (all namespaces if unset).
    #[arg(long, env = "ROUTER_WATCH_NAMESPACE")]
    pub watch_namespace: Option<String>,
    /// Namespace of the router's Leases (the router's own namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub lease_namespace: String,
    /// Identity in the router's Leases (the pod name; the host name and a random suffix when
    /// unset).
    #[arg(long, env = "POD_NAME")]
    pub lease_identity: Option<String>,
}

/// What unknown senders are told and how often they may guess a code.
#[derive(Clone, Debug, clap::Args)]
#[command(next_help_heading = "Onboarding")]
pub struct OnboardingConfig {
    /// Link sent to unknown senders.
    #[arg(
        long,
        env = "ROUTER_REGISTRATION_URL",
        default_value = "https://clawdbot.cloud/signup"
    )]
    pub registration_url: String,
    /// Wrong connection codes a sender may try per 10 minutes.
    #[arg(long, env = "ROUTER_CODE_ATTEMPTS", default_value_t = 5)]
    pub code_attempts: u32,
}

/// The Telegram channel.
#[derive(Clone, Debug, clap::Args)]
#[command(next_help_heading = "Telegram")]
pub struct TelegramConfig {
    /// Telegram bot token; enables the Telegram channel.
    #[arg(
        long = "telegram-bot-token",
        id = "telegram_bot_token",
        env = "TELEGRAM_BOT_TOKEN"
    )]
    pub bot_token: Option<Secret>,
    /// Secret the Bot API sends in `X-Telegram-Bot-Api-Secret-Token` (set with setWebhook).
    #[arg(
        long = "telegram-webhook-secret",
        id = "telegram_webhook_secret",
        env = "TELEGRAM_WEBHOOK_SECRET"
    )]
    pub webhook_secret: Option<Secret>,
    /// Bot API base URL.
    #[arg(
        long = "telegram-api-base",
        id = "telegram_api_base",
        env = "TELEGRAM_API_BASE",
        default_value = "https://api.telegram.org"
    )]
    pub api_base: String,
    /// Messages per second the bot sends in all (Telegram allows about 30; divide by replicas).
    #[arg(
        long = "telegram-global-rate",
        id = "telegram_global_rate",
        env = "TELEGRAM_GLOBAL_RATE",
        default_value_t = 30.0
    )]
    pub global_rate: f64,
    /// Messages per second to one chat (Telegram allows about 1).
    #[arg(
        long = "telegram-chat-rate",
        id = "telegram_chat_rate",
        env = "TELEGRAM_CHAT_RATE",
        default_value_t = 1.0
    )]
    pub chat_rate: f64,
    /// How updates arrive: `auto` (a webhook registered with setWebhook when ROUTER_PUBLIC_URL
    /// is set, long polling otherwise), `webhook` (served; registered only when
    /// ROUTER_PUBLIC_URL is set, else by hand) or `polling` (getUpdates, one replica at a time).
    #[arg(
        long = "telegram-updates",
        id = "telegram_updates",
        env = "TELEGRAM_UPDATES",
        value_enum,
        default_value_t = TelegramUpdatesMode::Auto
    )]
    pub updates: TelegramUpdatesMode,
    /// Name of the Lease deciding which replica long-polls Telegram (the Bot API refuses a
    /// second concurrent getUpdates).
    #[arg(
        long = "telegram-polling-lease-name",
        id = "telegram_polling_lease_name",
        env = "TELEGRAM_POLLING_LEASE_NAME",
        default_value = "clawdbot-router-telegram-polling"
    )]
    pub polling_lease_name: String,
    /// Seconds the polling Lease is valid without renewal: after a poller dies, another
    /// replica polls within this (at once after a clean stop, which releases it).
    #[arg(
        long = "telegram-polling-lease-seconds",
        id = "telegram_polling_lease_seconds",
        env = "TELEGRAM_POLLING_LEASE_SECONDS",
        default_value_t = 15
    )]
    pub polling_lease_seconds: u64,
}

/// How Telegram's updates reach the router.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum TelegramUpdatesMode {
    Auto,
    Webhook,
    Polling,
}

/// The WhatsApp channel.
#[derive(Clone, Debug, clap::Args)]
#[command(next_help_heading = "WhatsApp")]
pub struct WhatsAppConfig {
    /// WhatsApp app secret (verifies `X-Hub-Signature-256`); enables the WhatsApp channel.
    #[arg(
        long = "whatsapp-app-secret",
        id = "whatsapp_app_secret",
        env = "WHATSAPP_APP_SECRET"
    )]
    pub app_secret: Option<Secret>,
    /// Token of the GET verification handshake.
    #[arg(
        long = "whatsapp-verify-token",
        id = "whatsapp_verify_token",
        env = "WHATSAPP_VERIFY_TOKEN"
    )]
    pub verify_token: Option<Secret>,
    /// Graph API access token for sending.
    #[arg(
        long = "whatsapp-access-token",
        id = "whatsapp_access_token",
        env = "WHATSAPP_ACCESS_TOKEN"
    )]
    pub access_token: Option<Secret>,
    /// Graph API base URL.
    #[arg(
        long = "whatsapp-api-base",
        id = "whatsapp_api_base",
        env = "WHATSAPP_API_BASE",
        default_value = "https://graph.facebook.com"
    )]
    pub api_base: String,
    /// Graph API version.
    #[arg(
        long = "whatsapp-api-version",
        id = "whatsapp_api_version",
        env = "WHATSAPP_API_VERSION",
        default_value = "v21.0"
    )]
    pub api_version: String,
    /// Approved template used when a reply is ready after the 24-hour customer service window
    /// closed (free-form messages are refused then). Its one body parameter is the reply's start.
    #[arg(
        long = "whatsapp-reply-template",
        id = "whatsapp_reply_template",
        env = "WHATSAPP_REPLY_TEMPLATE",
        default_value = "clawdbot_reply_ready"
    )]
    pub reply_template: String,
    /// Language code of that template.
    #[arg(
        long = "whatsapp-template-language",
        id = "whatsapp_template_language",
        env = "WHATSAPP_TEMPLATE_LANGUAGE",
        default_value = "en"
    )]
    pub template_language: String,
}

/// The Discord channel (interactions and DMs over the Gateway).
#[derive(Clone, Debug, clap::Args)]
#[command(next_help_heading = "Discord")]
pub struct DiscordConfig {
    /// Discord application public key (hex); enables the Discord interactions endpoint.
    #[arg(
        long = "discord-public-key",
        id = "discord_public_key",
        env = "DISCORD_PUBLIC_KEY"
    )]
    pub public_key: Option<String>,
    /// Discord API base URL.
    #[arg(
        long = "discord-api-base",
        id = "discord_api_base",
        env = "DISCORD_API_BASE",
        default_value = "https://discord.com/api/v10"
    )]
    pub api_base: String,
    /// Discord bot token; enables direct messages, which Discord delivers only over the
    /// Gateway websocket (held by one replica, see `--discord-gateway-lease-name`), answered
    /// through the REST API.
    #[arg(
        long = "discord-bot-token",
        id = "discord_bot_token",
        env = "DISCORD_BOT_TOKEN"
    )]
    pub bot_token: Option<Secret>,
    /// Discord Gateway URL (`/?v=10&encoding=json` is appended).
    #[arg(
        long = "discord-gateway-url",
        id = "discord_gateway_url",
        env = "DISCORD_GATEWAY_URL",
        default_value = "wss://gateway.discord.gg"
    )]
    pub gateway_url: String,
    /// Name of the Lease deciding which replica holds the Discord Gateway connection.
    #[arg(
        long = "discord-gateway-lease-name",
        id = "discord_gateway_lease_name",
        env = "DISCORD_GATEWAY_LEASE_NAME",
        default_value = "clawdbot-router-discord-gateway"
    )]
    pub gateway_lease_name: String,
    /// Seconds the Gateway lease is valid without renewal: after a holder dies, another
    /// replica connects within this (at once after a clean stop, which releases it).
    #[arg(
        long = "discord-gateway-lease-seconds",
        id = "discord_gateway_lease_seconds",
        env = "DISCORD_GATEWAY_LEASE_SECONDS",
        default_value_t = 15
    )]
    pub gateway_lease_seconds: u64,
}

/// The web chat channel.
#[derive(Clone, Debug, clap::Args)]
#[command(next_help_heading = "Web chat")]
pub struct WebConfig {
    /// Key signing web chat tokens; enables the web chat channel.
    #[arg(
        long = "web-token-secret",
        id = "web_token_secret",
        env = "ROUTER_WEB_TOKEN_SECRET"
    )]
    pub token_secret: Option<Secret>,
}

/// How much the router takes on and how long it waits.
#[derive(Clone, Debug, clap::Args)]
#[command(next_help_heading = "Limits and timing")]
pub struct LimitsConfig {
    /// Most messages this replica processes at once; beyond that webhooks get 503 with
    /// `Retry-After` and the platform retries (Telegram and Meta do; nothing is lost).
    #[arg(long, env = "ROUTER_MAX_IN_FLIGHT", default_value_t = 2048)]
    pub max_in_flight: usize,
    /// Largest webhook body.
    #[arg(long, env = "ROUTER_MAX_BODY_BYTES", default_value_t = 256 * 1024)]
    pub max_body_bytes: usize,

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
        c.telegram.bot_token = Some(Secret::new("123:ABCsecret"));
        c.discord.bot_token = Some(Secret::new("MTA5.discord-bot-secret"));
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

    /// The names deployments use: the grouping into structs must not change any of them.
    #[test]
    fn flag_and_env_names_are_stable() {
        use clap::CommandFactory;
        let mut seen: Vec<(String, String)> = Config::command()
            .get_arguments()
            .filter_map(|a| {
                let long = a.get_long()?.to_string();
                let env = a.get_env()?.to_string_lossy().into_owned();
                Some((long, env))
            })
            .collect();
        seen.sort();
        let mut expected: Vec<(String, String)> = [
            ("listen", "ROUTER_LISTEN"),
            ("metrics-listen", "ROUTER_METRICS_LISTEN"),
            ("database-url", "DATABASE_URL"),
            (
                "database-max-connections",
                "ROUTER_DATABASE_MAX_CONNECTIONS",
            ),
            ("max-in-flight", "ROUTER_MAX_IN_FLIGHT"),
            ("redis-url", "REDIS_URL"),
            ("redis-prefix", "ROUTER_REDIS_PREFIX"),
            ("watch-namespace", "ROUTER_WATCH_NAMESPACE"),
            ("admin-token", "ROUTER_ADMIN_TOKEN"),
            ("registration-url", "ROUTER_REGISTRATION_URL"),
            ("telegram-bot-token", "TELEGRAM_BOT_TOKEN"),
            ("telegram-webhook-secret", "TELEGRAM_WEBHOOK_SECRET"),
            ("telegram-api-base", "TELEGRAM_API_BASE"),
            ("telegram-global-rate", "TELEGRAM_GLOBAL_RATE"),
            ("telegram-chat-rate", "TELEGRAM_CHAT_RATE"),
            ("telegram-updates", "TELEGRAM_UPDATES"),
            ("telegram-polling-lease-name", "TELEGRAM_POLLING_LEASE_NAME"),
            (
                "telegram-polling-lease-seconds",
                "TELEGRAM_POLLING_LEASE_SECONDS",
            ),
            ("public-url", "ROUTER_PUBLIC_URL"),
            ("whatsapp-app-secret", "WHATSAPP_APP_SECRET"),
            ("whatsapp-verify-token", "WHATSAPP_VERIFY_TOKEN"),
            ("whatsapp-access-token", "WHATSAPP_ACCESS_TOKEN"),
            ("whatsapp-api-base", "WHATSAPP_API_BASE"),
            ("whatsapp-api-version", "WHATSAPP_API_VERSION"),
            ("whatsapp-reply-template", "WHATSAPP_REPLY_TEMPLATE"),
            ("whatsapp-template-language", "WHATSAPP_TEMPLATE_LANGUAGE"),
            ("discord-public-key", "DISCORD_PUBLIC_KEY"),
            ("discord-api-base", "DISCORD_API_BASE"),
            ("discord-bot-token", "DISCORD_BOT_TOKEN"),
            ("discord-gateway-url", "DISCORD_GATEWAY_URL"),
            ("discord-gateway-lease-name", "DISCORD_GATEWAY_LEASE_NAME"),
            (
                "discord-gateway-lease-seconds",
                "DISCORD_GATEWAY_LEASE_SECONDS",
            ),
            ("lease-namespace", "POD_NAMESPACE"),
            ("lease-identity", "POD_NAME"),
            ("web-token-secret", "ROUTER_WEB_TOKEN_SECRET"),
            ("agent-timeout", "ROUTER_AGENT_TIMEOUT"),
            ("wake-hold", "ROUTER_WAKE_HOLD"),
            ("activity-window", "ROUTER_ACTIVITY_WINDOW"),
            ("rate-limit-per-minute", "ROUTER_RATE_LIMIT_PER_MINUTE"),
            ("sweep-interval", "ROUTER_SWEEP_INTERVAL"),
            ("max-body-bytes", "ROUTER_MAX_BODY_BYTES"),
            ("code-attempts", "ROUTER_CODE_ATTEMPTS"),
        ]
        .iter()
        .map(|(l, e)| (l.to_string(), e.to_string()))
        .collect();
        expected.sort();
        assert_eq!(seen, expected);
    }
}
