//! The `nimbus` command: `serve`, `migrate`, `schema print`, `errors print`, `key create`,
//! `admin create|password|list|delete`.

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
// goes back to the system within a millisecond (ten for whole segments, through
// mimalloc's arena multiplier of 10), not after mimalloc's default of 10 (100), in
// which the next burst allocates anew: with benches/abuse.sh, 16 previews of a
// 15 MiB PNG took the server to 297 MiB with the default and to 97 MiB with no
// delay at all, the legitimate reader's p99 unchanged. Not no delay at all: a
// transfer frees buffers and allocates them again within a millisecond or so (an
// encrypted download's segments, a download's pieces, the batches of an upload),
// and with no delay their pages went back to the system and faulted in again,
// zeroed, on their next use: an encrypted download took 260 page faults per MiB
// sent, 7 with this delay (benches/RESULTS.md, "Storage"). The `mimalloc` crate
// exposes no option setter, so mimalloc's own is declared here; its
// `MIMALLOC_PURGE_DELAY` environment variable, when set, is left to rule.
unsafe extern "C" {
    /// mimalloc's `mi_option_set`, linked in with the allocator.
    fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
}

/// `mi_option_purge_delay` in mimalloc's `mi_option_t` (the same in its v2 and v3).
const MI_OPTION_PURGE_DELAY: std::ffi::c_int = 15;

/// Milliseconds before freed memory is given back (see above).
const PURGE_DELAY_MS: std::ffi::c_long = 1;

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
    /// Manage console administrators (server-wide, for every project).
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Create a console administrator. The password is asked for (not echoed), or
    /// read from standard input with --password-stdin.
    Create {
        /// The administrator's email, which they sign in with.
        #[arg(long)]
        email: String,
        /// Read the password from standard input (its first line) instead of asking.
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        config: Config,
    },
    /// Set a console administrator's password (same policy as `create`); all their
    /// console sessions end at once. The password is asked for (not echoed), or
    /// read from standard input with --password-stdin.
    Password {
        /// The administrator's email.
        #[arg(long)]
        email: String,
        /// Read the password from standard input (its first line) instead of asking.
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        config: Config,
    },
    /// List the console administrators.
    List {
        #[command(flatten)]
        config: Config,
    },
    /// Delete a console administrator; their console sessions end at once.
    Delete {
        /// The administrator's email.
        #[arg(long)]
        email: String,
        #[command(flatten)]
        config: Config,
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
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: mi_option_set only stores the value; mimalloc reads it on each purge.
        unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) };
    }
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
        Command::Admin { command } => admin(command).await,
    }
}

/// An administrator's new password, from standard input or typed twice.
fn new_password(from_stdin: bool) -> anyhow::Result<String> {
    if from_stdin {
        password_from_stdin()
    } else {
        password_from_prompt()
    }
}

async fn admin(command: AdminCommand) -> anyhow::Result<()> {
    use nimbus::services::admins::service;
    match command {
        AdminCommand::Create {
            email,
            password_stdin,
            config,
        } => {
            let password = new_password(password_stdin)?;
            let state = AppState::open(config).await?;
            let created = service::create_admin(&state, &email, password).await;
            state.close().await;
            let admin = created.map_err(AppError::into_anyhow)?;
            eprintln!(
                "created console administrator {}; sign in at /console",
                admin.email
            );
            Ok(())
        }
        AdminCommand::Password {
            email,
            password_stdin,
            config,
        } => {
            let password = new_password(password_stdin)?;
            let state = AppState::open(config).await?;
            let changed = service::set_password(&state, &email, password).await;
            state.close().await;
            changed.map_err(AppError::into_anyhow)?;
            eprintln!(
                "changed the password of console administrator {}; their sessions ended",
                email.trim().to_lowercase()
            );
            Ok(())
        }
        AdminCommand::List { config } => {
            let state = AppState::open(config).await?;
            let listed = service::list_admins(&state).await;
            state.close().await;
            for admin in listed.map_err(AppError::into_anyhow)? {
                let created = chrono::DateTime::from_timestamp_millis(admin.created_at)
                    .map(|at| at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                    .unwrap_or_default();
                let totp = if admin.totp { "totp" } else { "password" };
                println!("{}\t{totp}\t{created}", admin.email);
            }
            Ok(())
        }
        AdminCommand::Delete { email, config } => {
            let state = AppState::open(config).await?;
            let deleted = service::delete_admin(&state, &email).await;
            state.close().await;
            deleted.map_err(AppError::into_anyhow)?;
            eprintln!(
                "deleted console administrator {}",
                email.trim().to_lowercase()
            );
            Ok(())
        }
    }
}

/// The first line of standard input, without its line end.
fn password_from_stdin() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

/// Asks twice at the terminal, without echo.
fn password_from_prompt() -> anyhow::Result<String> {
    if !std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        anyhow::bail!("standard input is not a terminal: pass the password with --password-stdin");
    }
    let first = read_hidden("Password: ")?;
    let again = read_hidden("Again: ")?;
    if first != again {
        anyhow::bail!("the passwords differ");
    }
    Ok(first)
}

/// Reads a line from the terminal with echo off, restoring the terminal after.
fn read_hidden(prompt: &str) -> anyhow::Result<String> {
    use std::io::Write as _;
    eprint!("{prompt}");
    std::io::stderr().flush()?;
    let fd = libc::STDIN_FILENO;
    // SAFETY: termios is plain data, filled by tcgetattr before it is read.
    let mut saved: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: fd is stdin, a terminal (checked by the caller); the pointer is valid.
    if unsafe { libc::tcgetattr(fd, &mut saved) } != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    let mut hidden = saved;
    hidden.c_lflag &= !libc::ECHO;
    hidden.c_lflag |= libc::ECHONL;
    // SAFETY: as above.
    if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &hidden) } != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    let read = password_from_stdin();
    // SAFETY: restores the settings read above.
    unsafe { libc::tcsetattr(fd, libc::TCSANOW, &saved) };
    read
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
    match nimbus::services::admins::service::any_admin(server.state()).await {
        Ok(true) => {}
        Ok(false) => {
            println!();
            println!("No console administrator yet. Create one, then sign in at {shown}/console:");
            println!("  nimbus admin create --email you@example.com");
        }
        Err(err) => {
            tracing::warn!(error = %err.into_anyhow(), "cannot tell whether a console administrator exists")
        }
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
