//! `fountain admin …`: account administration from the host. This module finds the existing
//! installation (it never creates one by accident), reads passwords, and prints results; the
//! changes themselves are kms's (`roles::kms::admin`), made in the same unit of work as the
//! HTTP API's.
#![cfg(feature = "kms")]

use std::io::{BufRead, IsTerminal};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use diesel::r2d2::ManageConnection;

use crate::config::{redact_url, Config, DatabaseTarget};
use crate::platform::crypto;
use crate::platform::db::ConnectionFactory;
use crate::platform::server::Platform;
use crate::roles::kms::admin::{has_account_tables, UserSummary};

pub use crate::roles::kms::admin::{check_roles, OfflineAdmin};

/// Opens the installation `config` points at. Unless `init` is set, it must exist already: a
/// database with kms's tables and its master key. Otherwise an admin command run from another
/// folder would quietly create a new data directory and master key, and the user it created
/// would not exist for the running server.
pub fn open(config: Config, init: bool) -> Result<Platform, String> {
    if !init {
        ensure_installed(&config)?;
    }
    Platform::open(Arc::new(config))
}

/// What to do when no installation was found (one sentence, for the end of an error line).
const NOT_INSTALLED_HINT: &str = "start `fountain serve` there first, or pass --data-dir or --config to \
                                  point at an existing installation (--init creates a new one)";

/// Refuses, with one line naming where it looked, when there is no installation to administer.
fn ensure_installed(config: &Config) -> Result<(), String> {
    let data_dir = shown(&config.data.dir);
    let target = config.database_target().map_err(|e| e.to_string())?;
    if let DatabaseTarget::Sqlite(file) = &target {
        if !file.is_file() {
            return Err(format!(
                "no fountain installation in data directory {data_dir} (no database {}): {NOT_INSTALLED_HINT}",
                shown(file)
            ));
        }
    }
    if crypto::configured_key_file(&config.security.master_key_file).is_none() {
        let key = config.data.dir.join("master.key");
        if !key.is_file() {
            return Err(format!(
                "no master key in data directory {data_dir} (no {}): {NOT_INSTALLED_HINT}",
                shown(&key)
            ));
        }
    }
    let database = match &target {
        DatabaseTarget::Sqlite(file) => shown(file),
        DatabaseTarget::Postgres(url) => redact_url(url),
    };
    // A plain connection: `Db::connect` would run the migrations and so create the tables.
    let factory = ConnectionFactory::from_config(config).map_err(|e| e.to_string())?;
    let mut conn = factory.connect().map_err(|e| {
        let reason = e.to_string();
        format!("cannot connect to database {database}: {}", reason.lines().next().unwrap_or_default())
    })?;
    if !has_account_tables(&mut conn) {
        return Err(format!("the database {database} has no kms tables yet: {NOT_INSTALLED_HINT}"));
    }
    Ok(())
}

/// A path as an operator can find it: absolute when the working directory is known.
fn shown(path: &Path) -> String {
    let absolute: PathBuf = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().map(|cwd| cwd.join(path)).unwrap_or_else(|_| path.to_path_buf())
    };
    let tidy: PathBuf = absolute.components().filter(|c| *c != std::path::Component::CurDir).collect();
    tidy.display().to_string()
}

/// Who the audit trail names for a command run on this host: `cli:<login name>`.
pub fn local_actor() -> String {
    let name = ["USER", "LOGNAME"]
        .iter()
        .find_map(|var| std::env::var(var).ok())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "unknown".to_string());
    let name: String =
        name.chars().filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')).take(64).collect();
    format!("cli:{name}")
}

/// A new password for `username`: from `file` (`-` is stdin), else prompted twice without echo
/// on a terminal, else one line of stdin. Never from the command line, where `ps` and shell
/// history would show it.
pub fn read_new_password(file: Option<&Path>, username: &str) -> Result<String, String> {
    match file {
        Some(path) if path != Path::new("-") => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read password file {}: {}", path.display(), e.kind()))?;
            Ok(first_line(&text))
        }
        _ if std::io::stdin().is_terminal() => prompt_twice(username),
        _ => {
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .map_err(|e| format!("cannot read stdin: {}", e.kind()))?;
            Ok(first_line(&line))
        }
    }
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or_default().to_string()
}

/// Asks on the terminal, without echo, twice.
fn prompt_twice(username: &str) -> Result<String, String> {
    let ask = |prompt: String| {
        rpassword::prompt_password(prompt).map_err(|e| format!("cannot read the password: {}", e.kind()))
    };
    let first = ask(format!("New password for {username}: "))?;
    let second = ask("Repeat the password: ".to_string())?;
    confirmed(first, second)
}

/// The password when both entries agree.
fn confirmed(first: String, second: String) -> Result<String, String> {
    if crypto::constant_time_eq(first.as_bytes(), second.as_bytes()) {
        Ok(first)
    } else {
        Err("the two passwords do not match; nothing was changed".to_string())
    }
}

/// Users as an aligned table: username, roles, enabled, created.
pub fn user_table(users: &[UserSummary]) -> String {
    let header = ["USERNAME", "ROLES", "ENABLED", "CREATED"].map(String::from);
    let rows: Vec<[String; 4]> = users
        .iter()
        .map(|u| {
            let enabled = if u.enabled { "yes" } else { "no" };
            [u.username.clone(), u.roles.join(","), enabled.to_string(), u.created.clone()]
        })
        .collect();
    let mut widths = header.clone().map(|h| h.len());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    std::iter::once(&header)
        .chain(&rows)
        .map(|row| {
            let cells: Vec<String> =
                row.iter().zip(widths).map(|(cell, width)| format!("{cell:<width$}")).collect();
            cells.join("  ").trim_end().to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_different_entries_change_nothing() {
        assert_eq!(confirmed("same password!".into(), "same password!".into()).unwrap(), "same password!");
        let refused = confirmed("first password".into(), "other password".into()).unwrap_err();
        assert!(refused.contains("do not match"), "{refused}");
        assert!(!refused.contains("password!"), "never echoed");
    }

    #[test]
    fn the_user_table_is_aligned_with_one_row_per_user() {
        let users = [
            UserSummary {
                username: "ops".into(),
                roles: vec!["admin".into(), "user".into()],
                enabled: true,
                created: "2026-12-01T10:00:00.000Z".into(),
            },
            UserSummary {
                username: "alice-long".into(),
                roles: vec!["user".into()],
                enabled: false,
                created: "2026-12-01T10:00:01.000Z".into(),
            },
        ];
        let table = user_table(&users);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines[0], "USERNAME    ROLES       ENABLED  CREATED");
        assert_eq!(lines[1], "ops         admin,user  yes      2026-12-01T10:00:00.000Z");
        assert_eq!(lines[2], "alice-long  user        no       2026-12-01T10:00:01.000Z");
    }

    #[test]
    fn the_local_actor_is_named_after_the_login() {
        assert!(local_actor().starts_with("cli:"));
    }
}
