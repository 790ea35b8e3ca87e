//! The command line: `serve`, `migrate`, `openapi`, `admin`, `audit verify`, `healthcheck`,
//! `config check`.
//!
//! Every failure ends with one line on stderr and a non-zero exit: 2 for a usage error, 1 for
//! anything else. No panic message or backtrace reaches the terminal.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

#[cfg(feature = "kms")]
use crate::admin;
use crate::app::{self, Application};
use crate::audit;
use crate::config::{Config, Overrides};
use crate::healthcheck;
use crate::platform::db;
use crate::platform::logging;
use crate::platform::role::Role;
use crate::platform::server::ShutdownSignal;
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
    /// Check the audit trail (tamper evidence) of the installation the configuration points at.
    Audit {
        #[command(subcommand)]
        action: AuditAction,
    },
    /// GET the selected roles' /health on their configured ports: exit 0 when every one
    /// answers 200, else 1 (a container HEALTHCHECK; needs no curl).
    Healthcheck {
        /// `all`, or a comma-separated list of roles, as for `serve`.
        #[arg(long, env = "FOUNTAIN_ROLE", default_value = "all", value_name = "ROLES")]
        role: String,
        /// How long each probe may take, in milliseconds.
        #[arg(long, default_value_t = 3000, value_name = "MS")]
        timeout_ms: u64,
    },
    /// Inspect the configuration.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
}

/// Account administration on the installation the configuration points at (it must exist:
/// run `fountain serve` once first). Passwords come from a file, a no-echo prompt on a terminal
/// or one line of stdin, never from the command line (it would show in `ps` and shell history).
#[cfg(feature = "kms")]
#[derive(Debug, Subcommand)]
enum AdminAction {
    /// Create a user with the given roles (default: user).
    CreateUser {
        #[arg(long)]
        username: String,
        /// A role to grant; repeat for several (e.g. --role admin).
        #[arg(long = "role", value_name = "ROLE")]
        roles: Vec<String>,
        /// File holding the password; `-` or absent: prompted twice on a terminal, else one
        /// line of stdin.
        #[arg(long, value_name = "FILE")]
        password_file: Option<PathBuf>,
        /// Create the data directory, database and master key if they do not exist yet.
        #[arg(long)]
        init: bool,
    },
    /// List every user: username, roles, enabled, created.
    ListUsers,
    /// Replace a user's roles (their current tokens stop working; they log in again).
    SetRoles {
        #[arg(long)]
        username: String,
        /// A role to grant; repeat for several.
        #[arg(long = "role", value_name = "ROLE", required = true)]
        roles: Vec<String>,
    },
    /// Disable a user: login refused, sessions and tokens ended.
    DisableUser {
        #[arg(long)]
        username: String,
    },
    /// Enable a disabled user again.
    EnableUser {
        #[arg(long)]
        username: String,
    },
    /// Set a new password (the user's sessions and tokens end).
    ResetPassword {
        #[arg(long)]
        username: String,
        /// File holding the password; `-` or absent: prompted twice on a terminal, else one
        /// line of stdin.
        #[arg(long, value_name = "FILE")]
        password_file: Option<PathBuf>,
    },
    /// Give a role started on its own its service credential: creates the role's API key and
    /// secret set if missing and writes the key to `<role>.key` (mode 0600). Running it again
    /// writes the same key; after a key rotation it writes the new one.
    #[command(group(clap::ArgGroup::new("which").required(true).args(["service", "all"])))]
    IssueCredential {
        /// The role whose credential to issue (gateway, kms, secrets, notify, search, sequence, twofa).
        #[arg(long, value_name = "ROLE")]
        service: Option<String>,
        /// Issue every role's credential.
        #[arg(long)]
        all: bool,
        /// The file to write (one role only); default `<security.credentials_dir>/<role>.key`.
        #[arg(long, value_name = "FILE", conflicts_with_all = ["all", "out_dir"])]
        out: Option<PathBuf>,
        /// The directory to write `<role>.key` files to; default `security.credentials_dir`.
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
        /// Create the data directory, database tables and master key if they do not exist yet.
        #[arg(long)]
        init: bool,
    },
    /// Remove a user's second factor (e.g. a locked-out last admin); they enrol again.
    #[cfg(feature = "twofa")]
    #[command(name = "reset-2fa")]
    Reset2fa {
        #[arg(long)]
        username: String,
    },
}

#[derive(Debug, Subcommand)]
enum AuditAction {
    /// Walk every role's audit hash chain (or one role's): recompute each record's MAC, check
    /// that seqs are contiguous, links match and the head is the last record. Prints one line
    /// per role (`ok: kms 12 records, head seq 12 <hash prefix>`: record the heads elsewhere,
    /// a later run must not show a lower seq) or `FAILED:` naming the first edited, inserted
    /// or deleted record. Exit 0 when every chain verifies, 1 otherwise.
    Verify {
        /// Only this role's chain (gateway, kms, secrets, notify, search, sequence, twofa).
        #[arg(long, value_name = "ROLE")]
        role: Option<String>,
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
        Command::Admin { action } => run_admin(action, &overrides),
        Command::Audit { action: AuditAction::Verify { role } } => verify_audit(role.as_deref(), &overrides),
        Command::Healthcheck { role, timeout_ms } => {
            let selected = roles::select(&role).map_err(Failure::usage)?;
            let config = app::with_role_defaults(Config::load(&overrides).map_err(Failure::runtime)?);
            let probes =
                healthcheck::probe_all(&config, &selected, std::time::Duration::from_millis(timeout_ms));
            let failed: Vec<String> = probes
                .iter()
                .filter_map(|p| p.failure.as_ref().map(|f| format!("{} ({}): {f}", p.role, p.url)))
                .collect();
            if !failed.is_empty() {
                return Err(Failure::runtime(format!("unhealthy: {}", failed.join("; "))));
            }
            println!("healthy: {}", probes.iter().map(|p| p.role).collect::<Vec<_>>().join(", "));
            Ok(())
        }
        Command::Serve { role } => {
            let selected = roles::select(&role).map_err(Failure::usage)?;
            let config = load_and_init_logging(&overrides)?;
            serve(config, selected)
        }
    }
}

/// `fountain admin …`: role names are checked before anything is opened (a usage error), then
/// the existing installation is opened and the change made as `cli:<login name>`.
#[cfg(feature = "kms")]
fn run_admin(action: AdminAction, overrides: &Overrides) -> Result<(), Failure> {
    let roles_to_grant = match &action {
        AdminAction::CreateUser { roles, .. } if roles.is_empty() => Some(vec!["user".to_string()]),
        AdminAction::CreateUser { roles, .. } | AdminAction::SetRoles { roles, .. } => Some(roles.clone()),
        _ => None,
    };
    let roles = roles_to_grant.map(|r| admin::check_roles(&r)).transpose().map_err(Failure::usage)?;
    let services = match &action {
        AdminAction::IssueCredential { service: Some(name), .. } => {
            admin::check_services(std::slice::from_ref(name)).map_err(Failure::usage)?
        }
        _ => roles::names(),
    };
    let init = matches!(
        action,
        AdminAction::CreateUser { init: true, .. } | AdminAction::IssueCredential { init: true, .. }
    );
    let config = load_and_init_logging(overrides)?;
    let credentials_dir = crate::platform::injection::credentials_dir(&config);
    let platform = admin::open(config, init).map_err(Failure::runtime)?;
    let accounts = admin::OfflineAdmin::new(&platform, admin::local_actor());
    let roles = roles.unwrap_or_default();
    let done = match action {
        AdminAction::CreateUser { username, password_file, .. } => {
            let password =
                admin::read_new_password(password_file.as_deref(), &username).map_err(Failure::runtime)?;
            let created = accounts.create_user(&username, &password, &roles).map_err(Failure::runtime)?;
            format!("created user {created} with roles {}", roles.join(","))
        }
        AdminAction::ListUsers => admin::user_table(&accounts.list_users().map_err(Failure::runtime)?),
        AdminAction::SetRoles { username, .. } => {
            let user = accounts.set_roles(&username, &roles).map_err(Failure::runtime)?;
            format!(
                "user {} now has roles {}; their earlier tokens are refused",
                user.username,
                user.roles.join(",")
            )
        }
        AdminAction::DisableUser { username } => {
            let user = accounts.set_disabled(&username, true).map_err(Failure::runtime)?;
            format!("disabled user {}; their sessions and tokens are ended", user.username)
        }
        AdminAction::EnableUser { username } => {
            let user = accounts.set_disabled(&username, false).map_err(Failure::runtime)?;
            format!("enabled user {}", user.username)
        }
        AdminAction::ResetPassword { username, password_file } => {
            let password =
                admin::read_new_password(password_file.as_deref(), &username).map_err(Failure::runtime)?;
            let user = accounts.reset_password(&username, &password).map_err(Failure::runtime)?;
            format!("set a new password for {}; their sessions and tokens are ended", user.username)
        }
        AdminAction::IssueCredential { out, out_dir, .. } => {
            let target = match (out, out_dir) {
                (Some(file), _) => admin::CredentialTarget::File(file),
                (None, dir) => admin::CredentialTarget::Dir(dir.unwrap_or(credentials_dir)),
            };
            let issued = admin::issue_credentials(&platform, &services, &target, &admin::local_actor())
                .map_err(Failure::runtime)?;
            admin::issued_lines(&issued)
        }
        #[cfg(feature = "twofa")]
        AdminAction::Reset2fa { username } => {
            let username = username.to_ascii_lowercase();
            let removed = crate::roles::twofa::reset_offline(&platform, &admin::local_actor(), &username)
                .map_err(Failure::runtime)?;
            if !removed {
                return Err(Failure::runtime(format!("user {username} has no second factor")));
            }
            format!("removed the second factor of {username}; they enrol again (POST /twofa/2fa/enroll)")
        }
    };
    println!("{done}");
    Ok(())
}

/// `fountain audit verify`: an unknown role is a usage error; a chain that does not verify
/// ends with exit 1 after every role's line is printed.
fn verify_audit(role: Option<&str>, overrides: &Overrides) -> Result<(), Failure> {
    if let Some(role) = role {
        if roles::find(role).is_none() {
            return Err(Failure::usage(format!(
                "--role: not a role name (known: {})",
                roles::names().join(", ")
            )));
        }
    }
    let config = load_and_init_logging(overrides)?;
    let report = audit::verify(&config, role).map_err(Failure::runtime)?;
    for line in &report.lines {
        println!("{line}");
    }
    if !report.all_verified {
        return Err(Failure::runtime("the audit trail does not verify (see FAILED above)"));
    }
    Ok(())
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
    #[cfg(feature = "kms")]
    fn issue_credential_takes_one_role_or_all_and_a_file_only_for_one() {
        let parse = |args: &[&str]| {
            Cli::try_parse_from(["fountain", "admin", "issue-credential"].iter().chain(args)).map(|_| ())
        };
        parse(&["--service", "notify", "--out", "notify.key"]).expect("one role to a file");
        parse(&["--all", "--out-dir", "/run/credentials", "--init"]).expect("every role to a directory");
        for refused in [&[][..], &["--all", "--service", "kms"], &["--all", "--out", "x.key"]] {
            assert!(parse(refused).is_err(), "{refused:?}");
        }
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
