//! Configuration: one clap struct, every field also settable from the environment.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clawdbot_api::Plans;

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
    #[command(flatten)]
    pub accounts: AccountsConfig,
    #[command(flatten)]
    pub billing: BillingConfig,
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
    /// Threads of the router's runtime; 1 (the default) is tokio's single-threaded runtime.
    /// On the benchmark's machine one thread routes more messages per second than two, at less
    /// CPU per message (README, Figures: a second worker is woken for work the first would
    /// have done next); scale out with replicas.
    #[arg(long, env = "ROUTER_WORKER_THREADS", default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(1..))]
    pub worker_threads: u16,
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
    /// The bot's username (without `@`), for the `t.me/<bot>?start=CODE` link shown with a
    /// connection code.
    #[arg(
        id = "telegram_bot_username",
        long = "telegram-bot-username",
        env = "TELEGRAM_BOT_USERNAME"
    )]
    pub bot_username: Option<String>,
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
    /// The business number users write to (digits, with country code), for the `wa.me`
    /// link shown with a connection code.
    #[arg(
        id = "whatsapp_phone_number",
        long = "whatsapp-phone-number",
        env = "WHATSAPP_PHONE_NUMBER"
    )]
    pub phone_number: Option<String>,
    /// The Graph API id of that number (`phone_number_id`), for messages the bot sends first
    /// (a failed payment). Unset: such notices go to the user's other chats only; replies
    /// use the id each message arrives with.
    #[arg(
        id = "whatsapp_phone_number_id",
        long = "whatsapp-phone-number-id",
        env = "WHATSAPP_PHONE_NUMBER_ID"
    )]
    pub phone_number_id: Option<String>,
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
    /// The application id, for the install link shown with a connection code.
    #[arg(
        id = "discord_application_id",
        long = "discord-application-id",
        env = "DISCORD_APPLICATION_ID"
    )]
    pub application_id: Option<String>,
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

/// Accounts and the `/api/v1` API. The API is served when the token signing key and the
/// master keys are both set.
#[derive(Clone, Debug, clap::Args)]
#[command(next_help_heading = "Accounts and API")]
pub struct AccountsConfig {
    /// Key signing access tokens (HS256), at least 32 bytes; enables the accounts API.
    #[arg(id = "jwt_secret", long = "jwt-secret", env = "ROUTER_JWT_SECRET")]
    pub jwt_secret: Option<Secret>,
    /// Lifetime of an access token.
    #[arg(id = "access_token_ttl", long = "access-token-ttl", env = "ROUTER_ACCESS_TOKEN_TTL", default_value = "15m", value_parser = humantime_duration)]
    pub access_token_ttl: Duration,
    /// Lifetime of a refresh token (each refresh issues a new one).
    #[arg(id = "refresh_token_ttl", long = "refresh-token-ttl", env = "ROUTER_REFRESH_TOKEN_TTL", default_value = "720h", value_parser = humantime_duration)]
    pub refresh_token_ttl: Duration,
    /// Master keys of the provider-key vault, `id:base64key[,id:base64key]`, each 32 bytes
    /// (`openssl rand -base64 32`). Keep the old key listed until `clawdbot-admin
    /// rotate-master-key` has re-sealed every key under the new one.
    #[arg(id = "master_keys", long = "master-keys", env = "ROUTER_MASTER_KEYS")]
    pub master_keys: Option<Secret>,
    /// Id of the master key that seals new keys (the first listed when unset).
    #[arg(
        id = "master_key_id",
        long = "master-key-id",
        env = "ROUTER_MASTER_KEY_ID"
    )]
    pub master_key_id: Option<String>,
    /// Namespace of users' UserWorkspaces.
    #[arg(
        id = "workspace_namespace",
        long = "workspace-namespace",
        env = "ROUTER_WORKSPACE_NAMESPACE",
        default_value = "default"
    )]
    pub workspace_namespace: String,
    /// The platform's default model for new workspaces.
    #[arg(
        id = "workspace_model",
        long = "workspace-model",
        env = "ROUTER_WORKSPACE_MODEL",
        default_value = "qwen2.5-7b-instruct"
    )]
    pub workspace_model: String,
    /// The shared ModelEndpoint serving the default model.
    #[arg(
        id = "workspace_model_endpoint",
        long = "workspace-model-endpoint",
        env = "ROUTER_WORKSPACE_MODEL_ENDPOINT",
        default_value = "shared"
    )]
    pub workspace_model_endpoint: String,
    /// `spec.idleTimeout` of new workspaces, such as `30m` (never hibernate when unset).
    #[arg(
        id = "workspace_idle_timeout",
        long = "workspace-idle-timeout",
        env = "ROUTER_WORKSPACE_IDLE_TIMEOUT"
    )]
    pub workspace_idle_timeout: Option<String>,
    /// The dashboard's origin (`https://app.clawdbot.cloud`): the only origin browsers may
    /// call the API from. No cross-origin access when unset.
    #[arg(
        id = "dashboard_origin",
        long = "dashboard-origin",
        env = "ROUTER_DASHBOARD_ORIGIN"
    )]
    pub dashboard_origin: Option<String>,
    /// Failed logins per account per 15 minutes.
    #[arg(
        id = "login_attempts_per_account",
        long = "login-attempts-per-account",
        env = "ROUTER_LOGIN_ATTEMPTS_PER_ACCOUNT",
        default_value_t = 10
    )]
    pub login_attempts_per_account: u32,
    /// Failed logins per client address per 15 minutes.
    #[arg(
        id = "login_attempts_per_address",
        long = "login-attempts-per-address",
        env = "ROUTER_LOGIN_ATTEMPTS_PER_ADDRESS",
        default_value_t = 50
    )]
    pub login_attempts_per_address: u32,
    /// Take the client address from the last `X-Forwarded-For` entry (only behind an ingress
    /// that sets it).
    #[arg(
        id = "trust_forwarded_for",
        long = "trust-forwarded-for",
        env = "ROUTER_TRUST_FORWARDED_FOR",
        default_value_t = false
    )]
    pub trust_forwarded_for: bool,
    /// The plans file (the operator's `--plans-file`; the chart mounts the same one): limits,
    /// prices and Stripe price ids per plan. The built-in plans when unset.
    #[arg(
        id = "plans_file",
        long = "plans-file",
        env = "PLANS_FILE",
        default_value = "",
        hide_default_value = true,
        value_parser = load_plans
    )]
    pub plans: Arc<Plans>,
    /// Registration attempts per client address per hour.
    #[arg(
        id = "registrations_per_address",
        long = "registrations-per-address",
        env = "ROUTER_REGISTRATIONS_PER_ADDRESS",
        default_value_t = 20
    )]
    pub registrations_per_address: u32,
    /// Registration attempts per e-mail address per hour.
    #[arg(
        id = "registrations_per_email",
        long = "registrations-per-email",
        env = "ROUTER_REGISTRATIONS_PER_EMAIL",
        default_value_t = 5
    )]
    pub registrations_per_email: u32,
    #[command(flatten)]
    pub google: GoogleConfig,
}

fn load_plans(path: &str) -> Result<Arc<Plans>, String> {
    let path = (!path.is_empty()).then(|| std::path::Path::new(path));
    Plans::load(path).map(Arc::new)
}

/// Subscriptions through Stripe. Billing is on when the secret key and the webhook secret are
/// both set.
#[derive(Clone, Debug, clap::Args)]
#[command(next_help_heading = "Billing")]
pub struct BillingConfig {
    /// Stripe secret API key (`sk_live_...`, `sk_test_...`, or a restricted `rk_...` key).
    #[arg(long, env = "STRIPE_SECRET_KEY")]
    pub stripe_secret_key: Option<Secret>,
    /// Signing secret of the webhook endpoint (`whsec_...`) that Stripe calls at
    /// `<public URL>/webhooks/stripe`.
    #[arg(long, env = "STRIPE_WEBHOOK_SECRET")]
    pub stripe_webhook_secret: Option<Secret>,
    /// Stripe's API base URL (a local server in tests).
    #[arg(
        long,
        env = "STRIPE_API_BASE",
        default_value = "https://api.stripe.com"
    )]
    pub stripe_api_base: String,
    /// How long a subscription whose payment failed keeps its plan before it drops to free.
    #[arg(long, env = "BILLING_GRACE_PERIOD", default_value = "72h", value_parser = humantime_duration)]
    pub billing_grace_period: Duration,
    /// The dashboard's billing page: where Checkout and the Billing Portal send the user back,
    /// and the upgrade link of limit messages (`<ROUTER_DASHBOARD_ORIGIN>/dashboard/billing` when unset).
    #[arg(long, env = "BILLING_RETURN_URL")]
    pub billing_return_url: Option<String>,
}

/// Sign-in with Google (or any OpenID Connect provider named by its issuer), served at
/// `/api/v1/auth/oauth/google/{start,callback}` when the client id, secret and redirect URL
/// are all set.
#[derive(Clone, Debug, clap::Args)]
pub struct GoogleConfig {
    /// The provider's issuer; its discovery document is read from
    /// `<issuer>/.well-known/openid-configuration`.
    #[arg(
        id = "google_issuer",
        long = "google-issuer",
        env = "ROUTER_GOOGLE_ISSUER",
        default_value = "https://accounts.google.com"
    )]
    pub issuer: String,
    /// OAuth client id registered with the provider.
    #[arg(
        id = "google_client_id",
        long = "google-client-id",
        env = "ROUTER_GOOGLE_CLIENT_ID"
    )]
    pub client_id: Option<String>,
    /// OAuth client secret.
    #[arg(
        id = "google_client_secret",
        long = "google-client-secret",
        env = "ROUTER_GOOGLE_CLIENT_SECRET"
    )]
    pub client_secret: Option<Secret>,
    /// Where the provider sends the browser back, registered with it exactly so: the router's
    /// `/api/v1/auth/oauth/google/callback`, or a dashboard page that passes `code` and
    /// `state` on to it.
    #[arg(
        id = "google_redirect_url",
        long = "google-redirect-url",
        env = "ROUTER_GOOGLE_REDIRECT_URL"
    )]
    pub redirect_url: Option<String>,
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
        c.accounts.jwt_secret = Some(Secret::new("jwt-signing-key-0123456789abcdef0123"));
        c.accounts.master_keys = Some(Secret::new("k1:MASTERKEYBASE64"));
        c.billing.stripe_secret_key = Some(Secret::new("sk_test_STRIPEKEY"));
        c.billing.stripe_webhook_secret = Some(Secret::new("whsec_WEBHOOKSECRET"));
        c.accounts.google.client_secret = Some(Secret::new("GOCSPX-google-client-secret"));
        let shown = format!("{c:?}");
        for secret in [
            "hunter2",
            "admintoken123",
            "ABCsecret",
            "discord-bot-secret",
            "jwt-signing-key",
            "MASTERKEYBASE64",
            "STRIPEKEY",
            "WEBHOOKSECRET",
            "google-client-secret",
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

    #[test]
    fn one_worker_thread_unless_told_and_never_none() {
        use clap::Parser;
        let base = ["clawdbot-router", "--database-url", "postgres://db/x"];
        let with = |extra: &[&str]| {
            Config::try_parse_from(
                base.iter()
                    .chain(["--redis-url", "redis://r", "--admin-token", "t"].iter())
                    .chain(extra),
            )
        };
        assert_eq!(with(&[]).unwrap().server.worker_threads, 1);
        assert_eq!(
            with(&["--worker-threads", "4"])
                .unwrap()
                .server
                .worker_threads,
            4
        );
        let err = with(&["--worker-threads", "0"]).unwrap_err().to_string();
        assert!(err.contains("worker-threads"), "{err}");
    }

    /// The names deployments use: the grouping into structs must not change any of them.
    #[test]
    fn flag_and_env_names_are_stable() {
        use clap::CommandFactory;
        // Unique argument ids (grouped fields share names such as `url`): clap checks them here.
        Config::command().debug_assert();
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
            ("worker-threads", "ROUTER_WORKER_THREADS"),
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
            ("telegram-bot-username", "TELEGRAM_BOT_USERNAME"),
            ("whatsapp-phone-number", "WHATSAPP_PHONE_NUMBER"),
            ("whatsapp-phone-number-id", "WHATSAPP_PHONE_NUMBER_ID"),
            ("discord-application-id", "DISCORD_APPLICATION_ID"),
            ("jwt-secret", "ROUTER_JWT_SECRET"),
            ("access-token-ttl", "ROUTER_ACCESS_TOKEN_TTL"),
            ("refresh-token-ttl", "ROUTER_REFRESH_TOKEN_TTL"),
            ("master-keys", "ROUTER_MASTER_KEYS"),
            ("master-key-id", "ROUTER_MASTER_KEY_ID"),
            ("workspace-namespace", "ROUTER_WORKSPACE_NAMESPACE"),
            ("workspace-model", "ROUTER_WORKSPACE_MODEL"),
            (
                "workspace-model-endpoint",
                "ROUTER_WORKSPACE_MODEL_ENDPOINT",
            ),
            ("workspace-idle-timeout", "ROUTER_WORKSPACE_IDLE_TIMEOUT"),
            ("dashboard-origin", "ROUTER_DASHBOARD_ORIGIN"),
            (
                "login-attempts-per-account",
                "ROUTER_LOGIN_ATTEMPTS_PER_ACCOUNT",
            ),
            (
                "login-attempts-per-address",
                "ROUTER_LOGIN_ATTEMPTS_PER_ADDRESS",
            ),
            ("trust-forwarded-for", "ROUTER_TRUST_FORWARDED_FOR"),
            ("plans-file", "PLANS_FILE"),
            ("stripe-secret-key", "STRIPE_SECRET_KEY"),
            ("stripe-webhook-secret", "STRIPE_WEBHOOK_SECRET"),
            ("stripe-api-base", "STRIPE_API_BASE"),
            ("billing-grace-period", "BILLING_GRACE_PERIOD"),
            ("billing-return-url", "BILLING_RETURN_URL"),
            (
                "registrations-per-address",
                "ROUTER_REGISTRATIONS_PER_ADDRESS",
            ),
            ("registrations-per-email", "ROUTER_REGISTRATIONS_PER_EMAIL"),
            ("google-issuer", "ROUTER_GOOGLE_ISSUER"),
            ("google-client-id", "ROUTER_GOOGLE_CLIENT_ID"),
            ("google-client-secret", "ROUTER_GOOGLE_CLIENT_SECRET"),
            ("google-redirect-url", "ROUTER_GOOGLE_REDIRECT_URL"),
        ]
        .iter()
        .map(|(l, e)| (l.to_string(), e.to_string()))
        .collect();
        expected.sort();
        assert_eq!(seen, expected);
    }
}
