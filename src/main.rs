//! The `nimbus` command: `serve`, `migrate`, `schema print`, `errors print`, `key create`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use nimbus::auth::scopes::Scope;
use nimbus::config::Config;
use nimbus::error::AppError;
use nimbus::services::keys::service::{NewApiKey, create_key_as_operator};
use nimbus::{AppState, Server};

// A request allocates and frees many small values (rows, GraphQL values, JSON):
// mimalloc serves those from per-thread pages, where glibc's malloc spent about a
// fifth of a list request's CPU. Built without transparent huge pages (`no_thp`):
// with them an idle server held 31 MiB instead of 18.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

// Memory freed after a burst (the image a preview decoded, a flood of requests)
// goes back to the system at once, not after mimalloc's default delay of a
// second, in which the next burst allocates anew: with benches/abuse.sh, 16
// previews of a 15 MiB PNG took the server to 297 MiB with the delay and to
// 97 MiB without it, the legitimate reader's p99 unchanged. The `mimalloc`
// crate exposes no option setter for it, so mimalloc's own is declared here.
unsafe extern "C" {
    /// mimalloc's `mi_option_set`, linked in with the allocator.
    fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
}

/// `mi_option_purge_delay` in mimalloc's `mi_option_t` (the same in its v2 and v3).
const MI_OPTION_PURGE_DELAY: std::ffi::c_int = 15;

#[derive(Parser)]
#[command(
    name = "nimbus",
    version,
    about = "A GraphQL-first backend for app developers, in one binary."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve {
        #[command(flatten)]
        config: Config,
    },
    /// Apply pending database migrations and exit.
    Migrate {
        #[command(flatten)]
        config: Config,
    },
    /// Print GraphQL schemas.
    Schema {
        #[command(subcommand)]
        command: SchemaCommand,
    },
    /// Print the error codes.
    Errors {
        #[command(subcommand)]
        command: ErrorsCommand,
    },
    /// Manage API keys.
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
}

#[derive(Subcommand)]
enum ErrorsCommand {
    /// Print every `extensions.code` with its HTTP status and meaning, as the
    /// README's "Error codes" table.
    Print,
}

#[derive(Subcommand)]
enum SchemaCommand {
    /// Print a project's SDL; without --project, the SDL of an empty project
    /// (what schema/core.graphql holds).
    Print {
        /// The project whose live schema to print (reads the database).
        #[arg(long)]
        project: Option<String>,
        #[command(flatten)]
        config: Config,
    },
}

#[derive(Subcommand)]
enum KeyCommand {
    /// Create an API key and print its secret (shown only once) on standard output.
    Create {
        /// The project the key belongs to.
        #[arg(long, default_value = "default")]
        project: String,
        /// Comma-separated scopes, e.g. `admin` or `users.read,documents.write`.
        #[arg(long, value_delimiter = ',', required = true, help = scopes_help())]
        scopes: Vec<String>,
        /// What the key is for.
        #[arg(long, default_value = "command line")]
        name: String,
        #[command(flatten)]
        config: Config,
    },
}

fn scopes_help() -> String {
    let names: Vec<&str> = Scope::ALL.iter().map(|scope| scope.name()).collect();
    format!("Comma-separated scopes. Known scopes: {}", names.join(", "))
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only for a person at a terminal, not in files or log collectors.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if config.log_format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    // SAFETY: mi_option_set only stores the value; mimalloc reads it on each purge.
    unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
    let cli = Cli::parse();
    match run(cli.command).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve { config } => {
            init_logging(&config);
            serve(config).await
        }
        Command::Migrate { config } => {
            init_logging(&config);
            let state = AppState::open(config).await?;
            state.close().await;
            eprintln!("migrations applied");
            Ok(())
        }
        Command::Schema {
            command: SchemaCommand::Print { project, config },
        } => {
            let sdl = match project {
                None => nimbus::services::core_sdl(&config).map_err(AppError::into_anyhow)?,
                Some(id) => {
                    let state = AppState::open(config).await?;
                    let loaded = state.schemas.get(&state, &id).await;
                    state.close().await;
                    loaded.map_err(AppError::into_anyhow)?.schema.sdl()
                }
            };
            print!("{sdl}");
            Ok(())
        }
        Command::Errors {
            command: ErrorsCommand::Print,
        } => {
            print!("{}", nimbus::error::codes::markdown_table());
            Ok(())
        }
        Command::Key {
            command:
                KeyCommand::Create {
                    project,
                    scopes,
                    name,
                    config,
                },
        } => {
            let state = AppState::open(config).await?;
            let created = create_key_as_operator(
                &state,
                &project,
                NewApiKey {
                    name,
                    scopes,
                    expires_at: None,
                },
            )
            .await;
            state.close().await;
            let (key, secret) = created.map_err(AppError::into_anyhow)?;
            eprintln!(
                "created API key {} in project {} with scopes {}",
                key.id,
                key.project_id,
                key.scopes
                    .iter()
                    .map(|s| s.name())
                    .collect::<Vec<_>>()
                    .join(",")
            );
            println!("{secret}");
            Ok(())
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let server = Server::start(config).await?;
    let address = server.local_addr();
    let shown = if address.ip().is_unspecified() {
        format!("http://localhost:{}", address.port())
    } else {
        format!("http://{address}")
    };
    println!("Nimbus is running.");
    println!(
        "  GraphQL:    {shown}/v1/graphql  (WebSocket: {}/v1/graphql/ws)",
        shown.replacen("http", "ws", 1)
    );
    println!("  Playground: {shown}/playground");
    println!("  Console:    {shown}/console");
    println!("  Health:     {shown}/health   Metrics: {shown}/metrics");
    if let Some(secret) = server.first_admin_key() {
        println!();
        println!(
            "First start: an admin API key was created. It is shown only now; store it safely:"
        );
        println!("  X-Nimbus-Key: {secret}");
        println!("More keys: nimbus key create --project default --scopes admin");
    }
    shutdown_signal().await;
    tracing::info!("shutting down");
    server.shutdown().await
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
