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

/// Where `fountain admin issue-credential` writes: one file, or `<dir>/<role>.key` per role.
#[derive(Debug, Clone)]
pub enum CredentialTarget {
    File(PathBuf),
    Dir(PathBuf),
}

impl CredentialTarget {
    fn path(&self, role: &str) -> PathBuf {
        match self {
            CredentialTarget::File(file) => file.clone(),
            CredentialTarget::Dir(dir) => dir.join(format!("{role}.key")),
        }
    }
}

/// What issuing one role's credential did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedCredential {
    pub role: String,
    pub path: PathBuf,
    /// A new API key was created (otherwise the role's active key was written).
    pub key_created: bool,
    /// The file was written (otherwise it already held this key).
    pub file_written: bool,
}

/// Checks `--service` names: each must be a role of this binary (a per-role process reads
/// `<role>.key`), naming the known ones otherwise.
pub fn check_services(services: &[String]) -> Result<Vec<&'static str>, String> {
    services
        .iter()
        .map(|name| {
            crate::roles::find(name)
                .map(|r| r.name())
                .ok_or_else(|| format!("no such role {name:?} (known: {})", crate::roles::names().join(", ")))
        })
        .collect()
}

/// Gives each of `roles` what a per-role process needs to start on its own: its API key at
/// kms and its secret set (created if missing, as `actor`), and the credential file holding
/// the key (mode 0600). Running it again writes the same key, so it is safe to repeat (a
/// provisioning container runs it on every start); a rotated key is written in place.
pub fn issue_credentials(
    platform: &Platform,
    roles: &[&str],
    target: &CredentialTarget,
    actor: &str,
) -> Result<Vec<IssuedCredential>, String> {
    roles
        .iter()
        .map(|role| {
            let (key, key_created) = crate::roles::kms::keys::issue_service_key(platform, role, actor)
                .map_err(|e| format!("cannot issue the API key of {role}: {e}"))?;
            #[cfg(feature = "secrets")]
            crate::roles::secrets::ensure_secret_set_as(platform, role, actor)
                .map_err(|e| format!("cannot create the secret set of {role}: {e}"))?;
            let path = target.path(role);
            let file_written = write_credential(&path, &key)
                .map_err(|e| format!("cannot write {}: {}", shown(&path), e.kind()))?;
            Ok(IssuedCredential { role: role.to_string(), path, key_created, file_written })
        })
        .collect()
}

/// Writes `key` to `path` (mode 0600) unless the file already holds it; a different content
/// (a rotated key) is replaced by a rename, so a reader never sees half a file. Returns
/// whether the file was written.
fn write_credential(path: &Path, key: &str) -> std::io::Result<bool> {
    if let Ok(existing) = std::fs::read_to_string(path) {
        if crypto::constant_time_eq(existing.trim().as_bytes(), key.as_bytes()) {
            restrict_to_owner(path)?;
            return Ok(false);
        }
    }
    let mut fresh = path.as_os_str().to_owned();
    fresh.push(format!(".new-{}", std::process::id()));
    let fresh = PathBuf::from(fresh);
    let _ = std::fs::remove_file(&fresh);
    crate::platform::fs::write_private_file(&fresh, key)?;
    std::fs::rename(&fresh, path)?;
    Ok(true)
}

fn restrict_to_owner(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

/// `issued gateway credential (new API key) -> /path/gateway.key`, one line per role.
pub fn issued_lines(issued: &[IssuedCredential]) -> String {
    issued
        .iter()
        .map(|i| {
            let what = match (i.key_created, i.file_written) {
                (true, _) => "new API key",
                (false, true) => "existing API key",
                (false, false) => "unchanged",
            };
            format!("issued {} credential ({what}) -> {}", i.role, shown(&i.path))
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
    fn a_credential_file_is_rewritten_only_when_its_key_changed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("creds").join("notify.key");
        assert!(write_credential(&path, "fk_first").unwrap());
        assert!(!write_credential(&path, "fk_first").unwrap(), "same key: left alone");
        assert!(write_credential(&path, "fk_rotated").unwrap());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "fk_rotated\n");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        assert_eq!(std::fs::read_dir(path.parent().unwrap()).unwrap().count(), 1, "no temporary file left");
    }

    #[test]
    fn only_role_names_get_a_credential() {
        assert_eq!(check_services(&["kms".into(), "notify".into()]).unwrap(), vec!["kms", "notify"]);
        let refused = check_services(&["service_a".into()]).unwrap_err();
        assert!(refused.contains("\"service_a\"") && refused.contains("gateway"), "{refused}");
    }

    #[test]
    fn the_local_actor_is_named_after_the_login() {
        assert!(local_actor().starts_with("cli:"));
    }
}
