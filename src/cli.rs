//! The command line: `serve`, `migrate`, `openapi`, `config check`.
//!
//! Every failure ends with one line on stderr and a non-zero exit: 2 for a usage error, 1 for
//! anything else. No panic message or backtrace reaches the terminal.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};

use crate::app::{self, Application};
use crate::config::{Config, Overrides};
use crate::platform::db;
use crate::platform::logging;
use crate::platform::role::Role;
use crate::platform::server::{Platform, ShutdownSignal};
use crate::platform::standard;
use crate::roles;

#[derive(Debug, Parser)]
#[command(name = "fountain", version, about = "The FountainAI ecosystem in one binary: a role per service.")]
pub struct Cli {
    #[command(flatten)]
    sources: SourceArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Args)]
struct SourceArgs {
    /// Config file layered over the embedded defaults (environment variables still win).
    #[arg(long, global = true, env = "FOUNTAIN_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Data directory for the SQLite database and generated key files (wins over every source).
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve one, several or all roles, each on its own port.
    Serve {
        /// `all`, or a comma-separated list: gateway,kms,secrets,notify,search,sequence,twofa.
        #[arg(long, env = "FOUNTAIN_ROLE", default_value = "all", value_name = "ROLES")]
        role: String,
    },
    /// Apply pending database migrations and exit.
    Migrate,
    /// Print a role's OpenAPI 3.0.3 document (`all`: every role's, as one JSON object by role).
    Openapi {
        #[arg(long, value_name = "ROLE")]
        role: String,
    },
    /// Administer users directly in the database (e.g. the first admin).
    #[cfg(feature = "kms")]
    Admin {
        #[command(subcommand)]
        action: AdminAction,
    },
    /// Inspect the configuration.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
}

#[cfg(feature = "kms")]
#[derive(Debug, Subcommand)]
enum AdminAction {
    /// Create a user with the given roles. The password is read from a file or from stdin,
    /// never from the command line (it would show in `ps` and shell history).
    CreateUser {
        #[arg(long)]
        username: String,
        /// A role to grant; repeat for several (e.g. --role admin).
        #[arg(long = "role", value_name = "ROLE")]
        roles: Vec<String>,
        /// File holding the password; `-` or absent reads one line from stdin.
        #[arg(long, value_name = "FILE")]
        password_file: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigAction {
    /// Validate the layered configuration and print it (secrets redacted).
    Check,
}

/// A failure that ends the process, printed as one line.
struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    fn usage(message: impl Into<String>) -> Self {
        Self { code: 2, message: message.into() }
    }
    fn runtime(message: impl ToString) -> Self {
        Self { code: 1, message: message.to_string() }
    }
}

pub fn main() -> ExitCode {
    std::panic::set_hook(Box::new(|info| {
        let location = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
        eprintln!("error: internal failure{location}");
        log::error!(target: "fountain::panic", "internal failure{location}: {info}");
    }));
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => return clap_exit(err),
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("error: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}

/// Help and version go to stdout with exit 0; usage errors become one line with exit 2.
fn clap_exit(err: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match err.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = err.print();
            if err.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                return ExitCode::from(2);
            }
            ExitCode::SUCCESS
        }
        _ => {
            let rendered = err.render().to_string();
            let first = rendered.lines().next().unwrap_or("error: invalid arguments");
            eprintln!("{first} (see fountain --help)");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<(), Failure> {
    let overrides = Overrides { file: cli.sources.config, data_dir: cli.sources.data_dir };
    match cli.command {
        Command::Openapi { role } => print_openapi(&role),
        Command::Config { action: ConfigAction::Check } => {
            let config = app::with_role_defaults(Config::load(&overrides).map_err(Failure::runtime)?);
            app::check_config(&config)
                .map_err(|e| Failure::runtime(format!("invalid configuration: {e}")))?;
            let text = serde_json::to_string_pretty(&config.redacted_json()).map_err(Failure::runtime)?;
            println!("{text}");
            Ok(())
        }
        Command::Migrate => {
            let config = load_and_init_logging(&overrides)?;
            let applied = db::migrate_only(&config).map_err(Failure::runtime)?;
            if applied.is_empty() {
                println!("database is up to date");
            } else {
                println!("applied {} migration(s): {}", applied.len(), applied.join(", "));
            }
            Ok(())
        }
        #[cfg(feature = "kms")]
        Command::Admin { action: AdminAction::CreateUser { username, roles, password_file } } => {
            let password = read_password(password_file.as_deref())?;
            let config = load_and_init_logging(&overrides)?;
            let platform = Platform::open(Arc::new(config)).map_err(Failure::runtime)?;
            let roles = if roles.is_empty() { vec!["user".to_string()] } else { roles };
            let created = roles::kms::create_user_offline(&platform, &username, &password, &roles)
                .map_err(Failure::runtime)?;
            println!("created user {created} with roles {}", roles.join(","));
            Ok(())
        }
        Command::Serve { role } => {
            let selected = roles::select(&role).map_err(Failure::usage)?;
            let config = load_and_init_logging(&overrides)?;
            serve(config, selected)
        }
    }
}

#[cfg(feature = "kms")]
fn read_password(file: Option<&std::path::Path>) -> Result<String, Failure> {
    let raw = match file {
        Some(path) if path != std::path::Path::new("-") => std::fs::read_to_string(path).map_err(|e| {
            Failure::runtime(format!("cannot read password file {}: {}", path.display(), e.kind()))
        })?,
        _ => {
            let mut line = String::new();
            std::io::stdin().read_line(&mut line).map_err(Failure::runtime)?;
            line
        }
    };
    Ok(raw.trim_end_matches(['\r', '\n']).to_string())
}

fn load_and_init_logging(overrides: &Overrides) -> Result<Config, Failure> {
    let config = Config::load(overrides).map_err(Failure::runtime)?;
    logging::init(&config.log.level, config.log.format);
    Ok(config)
}

/// One role's document, or with `all` every role's as one object keyed by role name.
fn print_openapi(role: &str) -> Result<(), Failure> {
    let selected = roles::select(role).map_err(Failure::usage)?;
    let document = |role: &dyn Role| -> Result<serde_json::Value, Failure> {
        serde_json::to_value(standard::role_openapi(role)).map_err(Failure::runtime)
    };
    let value = match selected.as_slice() {
        [one] => document(*one)?,
        many => {
            let mut all = serde_json::Map::new();
            for role in many {
                all.insert(role.name().to_string(), document(*role)?);
            }
            serde_json::Value::Object(all)
        }
    };
    println!("{}", serde_json::to_string_pretty(&value).map_err(Failure::runtime)?);
    Ok(())
}

fn serve(config: Config, selected: Vec<&'static dyn Role>) -> Result<(), Failure> {
    actix_web::rt::System::new().block_on(async move {
        let mut signal = ShutdownSignal::install();
        let application = Application::build(config, &selected, None).await.map_err(Failure::runtime)?;
        let injected = tokio::select! {
            result = application.inject_secrets() => Some(result),
            _ = signal.received() => None,
        };
        match injected {
            None => {
                log::info!(target: "fountain::server", "shutdown signal received during start-up");
                application.stop(true).await;
                return Ok(());
            }
            Some(Err(err)) => {
                application.stop(false).await;
                return Err(Failure::runtime(err));
            }
            Some(Ok(())) => {}
        }
        application.run_until_stopped(signal).await;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn serve_defaults_to_every_role() {
        let cli = Cli::try_parse_from(["fountain", "serve"]).unwrap();
        match cli.command {
            Command::Serve { role } => assert_eq!(role, "all"),
            other => panic!("unexpected {other:?}"),
        }
    }
}
