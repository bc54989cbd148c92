//! `convo-server`: run the companion server, or administer it.

use std::io::BufRead;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use convo_server::{Config, Server, ServerArgs};
use convo_shared::auth::RegisterRequest;
use convo_shared::users::Role;
use tracing_subscriber::EnvFilter;

/// ConvoConnect companion server: accounts, rooms and meetings over an HTTP API.
///
/// Every option can also be set by the environment variable shown with it. With no command,
/// the server runs.
#[derive(Debug, Parser)]
#[command(name = "convo-server", version, about, long_about)]
struct Cli {
    #[command(flatten)]
    server: ServerArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server (the default).
    Serve,
    /// Administer accounts.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Create an administrator account. The password is read from standard input.
    Create {
        #[arg(long)]
        username: String,
        #[arg(long)]
        email: String,
        #[arg(long)]
        display_name: Option<String>,
    },
    /// Give an existing account the `admin` or `user` role.
    SetRole {
        #[arg(long)]
        username: String,
        #[arg(long, value_parser = ["admin", "user"])]
        role: String,
    },
}

/// mimalloc returns freed memory to the system; glibc's malloc kept the 19 MiB of every
/// Argon2 hash in the arena of the thread that computed it (the server idled at ~170 MiB after
/// a few dozen sign-ins).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("CONVO_LOG")
                .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,tower_http=info")),
        )
        .init();
    let cli = Cli::parse();
    let config = Config::from_args(&cli.server).context("configuration")?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(config).await,
        Command::Admin { command } => admin(config, command).await,
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    tracing::info!(?config, "starting");
    let mut server = Server::start(config).await?;
    let stop = server.shutdown_handle();
    println!("ConvoConnect server listening on http://{}", server.addr);
    let wait = tokio::spawn(async move { server.wait().await });
    shutdown_signal().await;
    tracing::info!("shutting down");
    if let Some(stop) = stop {
        let _ = stop.send(());
    }
    wait.await??;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

async fn admin(config: Config, command: AdminCommand) -> anyhow::Result<()> {
    let db = convo_server::db::connect(&config.database_url).await?;
    match command {
        AdminCommand::Create {
            username,
            email,
            display_name,
        } => {
            let mut password = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut password)
                .context("reading the password from standard input")?;
            let password = password.trim_end_matches(['\r', '\n']).to_string();
            let req = RegisterRequest {
                username,
                email,
                password,
                display_name,
            };
            match convo_server::auth::create_user(&db, req, Role::Admin, || Ok(())).await {
                Ok(user) => println!("created admin {} ({})", user.username, user.id),
                Err(e) => bail!("{}", e.message),
            }
        }
        AdminCommand::SetRole { username, role } => {
            let changed = sqlx::query("UPDATE users SET role = $1 WHERE username_norm = $2")
                .bind(&role)
                .bind(username.to_lowercase())
                .execute(&db)
                .await?
                .rows_affected();
            if changed == 0 {
                bail!("no user named {username}");
            }
            println!("{username} is now {role}");
        }
    }
    db.close().await;
    Ok(())
}
