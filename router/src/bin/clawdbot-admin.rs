//! `clawdbot-admin`: the first admin, master-key rotation, and users, workspaces and codes
//! for operators' automation. Uses `DATABASE_URL`, the router's accounts settings
//! (`ROUTER_JWT_SECRET`, `ROUTER_MASTER_KEYS`, ...) and the current kubeconfig; calls the same
//! functions as the API.

use clap::{Parser, Subcommand};
use clawdbot_api::Plan;
use clawdbot_router::{AccountsConfig, Secret, admin};
use uuid::Uuid;

#[derive(Parser)]
#[command(name = "clawdbot-admin", about = "Admin tasks for Clawdbot Cloud")]
struct Cli {
    /// Postgres URL.
    #[arg(long, env = "DATABASE_URL", global = true)]
    database_url: Option<Secret>,
    /// Redis URL (the accounts' login counters).
    #[arg(long, env = "REDIS_URL", global = true)]
    redis_url: Option<Secret>,
    /// Prefix of Redis keys, as the router's.
    #[arg(
        long,
        env = "ROUTER_REDIS_PREFIX",
        default_value = "clawdbot:",
        global = true
    )]
    redis_prefix: String,
    #[command(flatten)]
    accounts: AccountsConfig,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Creates a user and prints their id.
    CreateUser {
        #[arg(long)]
        email: Option<String>,
        #[arg(long, default_value = "free")]
        plan: Plan,
    },
    /// Applies a UserWorkspace for a user.
    CreateWorkspace {
        #[arg(long)]
        user: Uuid,
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "default")]
        namespace: String,
        #[arg(long, default_value = "free")]
        plan: Plan,
        #[arg(long)]
        model: String,
        /// Shared ModelEndpoint in the namespace.
        #[arg(long)]
        endpoint: String,
        #[arg(long)]
        idle_timeout: Option<String>,
    },
    /// Makes an account an admin, creating it (and its workspace) if the e-mail is new. The
    /// password is read from `CLAWDBOT_ADMIN_PASSWORD` or, when unset, from standard input.
    CreateAdmin {
        #[arg(long)]
        email: String,
    },
    /// Prints a new random master key (base64) to add to `ROUTER_MASTER_KEYS`.
    GenerateMasterKey,
    /// Re-seals every stored provider key under the current master key
    /// (`ROUTER_MASTER_KEY_ID`). Run it with the old and the new key both in
    /// `ROUTER_MASTER_KEYS`, after every router has both; retire the old key afterwards.
    /// Agents keep answering throughout: their Secrets hold the keys and do not change.
    RotateMasterKey,
    /// Prints a one-time connection code (valid 10 minutes) for a user.
    GenerateCode {
        #[arg(long)]
        user: Uuid,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let db = || async {
        let url = cli
            .database_url
            .clone()
            .ok_or_else(|| anyhow::anyhow!("DATABASE_URL is not set"))?;
        anyhow::Ok(clawdbot_router::store::connect(url.expose(), 2).await?)
    };
    match &cli.command {
        Command::CreateUser { email, plan } => {
            let id = admin::create_user(&db().await?, email.as_deref(), *plan).await?;
            println!("{id}");
        }
        Command::CreateWorkspace {
            user,
            name,
            namespace,
            plan,
            model,
            endpoint,
            idle_timeout,
        } => {
            let client = kube::Client::try_default().await?;
            let req = admin::WorkspaceRequest {
                namespace: namespace.clone(),
                name: name.clone(),
                owner: *user,
                plan: *plan,
                model: model.clone(),
                endpoint: endpoint.clone(),
                idle_timeout: idle_timeout.clone(),
            };
            admin::apply_workspace(client, &req).await?;
            println!("userworkspace {namespace}/{name} applied");
        }
        Command::CreateAdmin { email } => {
            let password = match std::env::var("CLAWDBOT_ADMIN_PASSWORD") {
                Ok(p) => p,
                Err(_) => {
                    eprintln!("password (10 to 128 characters), then Enter:");
                    let mut line = String::new();
                    std::io::stdin().read_line(&mut line)?;
                    line.trim_end_matches(['\r', '\n']).to_string()
                }
            };
            let accounts = accounts(&cli, db().await?).await?;
            let user = accounts.create_admin(email, &password).await?;
            println!("{email} is an admin ({})", user.id);
        }
        Command::GenerateMasterKey => {
            println!("{}", clawdbot_accounts::Keyring::generate_key());
        }
        Command::RotateMasterKey => {
            let accounts = accounts(&cli, db().await?).await?;
            let report = accounts.rotate_master_key().await?;
            println!(
                "re-sealed {} provider keys under the current master key ({} changed meanwhile and were left to the next run)",
                report.resealed, report.raced
            );
        }
        Command::GenerateCode { user } => {
            let (code, expires) = admin::generate_code(&db().await?, *user).await?;
            println!("{code} (expires {})", expires.to_rfc3339());
        }
    }
    Ok(())
}

/// The accounts domain as the router builds it.
async fn accounts(cli: &Cli, db: sqlx::PgPool) -> anyhow::Result<clawdbot_accounts::Accounts> {
    let redis = cli
        .redis_url
        .clone()
        .ok_or_else(|| anyhow::anyhow!("REDIS_URL is not set"))?;
    let kube = kube::Client::try_default().await?;
    clawdbot_router::connect_accounts(&cli.accounts, redis.expose(), &cli.redis_prefix, db, kube)
        .await?
        .ok_or_else(|| anyhow::anyhow!("ROUTER_JWT_SECRET and ROUTER_MASTER_KEYS are not set"))
}
