//! `clawdbot-admin`: create users and workspaces and connection codes until the accounts API
//! exists. Uses `DATABASE_URL` and the current kubeconfig.

use clap::{Parser, Subcommand};
use clawdbot_api::Plan;
use clawdbot_router::{Secret, admin};
use uuid::Uuid;

#[derive(Parser)]
#[command(name = "clawdbot-admin", about = "Admin tasks for Clawdbot Cloud")]
struct Cli {
    /// Postgres URL.
    #[arg(long, env = "DATABASE_URL", global = true)]
    database_url: Option<Secret>,
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
        Command::GenerateCode { user } => {
            let (code, expires) = admin::generate_code(&db().await?, *user).await?;
            println!("{code} (expires {})", expires.to_rfc3339());
        }
    }
    Ok(())
}
