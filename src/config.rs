//! Configuration: embedded `config/default.toml` < optional file < environment < CLI flags.
//!
//! Only non-secret values live here. A secret that a deployment must hand to fountain (the
//! PostgreSQL password, the master key) is named by a `*_file` key pointing at a credential file,
//! never written inline; a database URL carrying a password is refused.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

/// The defaults compiled into the binary, so `fountain serve` works from any directory.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

/// Environment variables `FOUNTAIN_<SECTION>__<KEY>` override config keys.
pub const ENV_PREFIX: &str = "FOUNTAIN_";

/// `FOUNTAIN_*` variables that are not configuration keys: other parts of fountain read them
/// (the command line, the master key loader). Names after the prefix.
const NON_KEY_VARIABLES: [&str; 3] = ["CONFIG", "ROLE", "MASTER_KEY_FILE"];

/// `FOUNTAIN_TEST_*` variables belong to the test suite (its PostgreSQL URL, for instance).
const TEST_VARIABLE_PREFIX: &str = "TEST_";

/// Largest body limit accepted in configuration (1 GiB): beyond that a typo is likelier than intent.
const MAX_BODY_LIMIT: u64 = 1 << 30;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub log: LogConfig,
    pub data: DataConfig,
    pub database: DatabaseConfig,
    pub security: SecurityConfig,
    /// Where each role is reachable: `role name -> base URL`. Roles served by this process are
    /// filled in with their bound address at start; others default to `127.0.0.1` at their
    /// port (see `app::with_role_defaults`).
    #[serde(default)]
    pub peers: BTreeMap<String, String>,
    #[serde(default)]
    pub roles: BTreeMap<String, RoleConfig>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityConfig {
    /// File holding the base64 master key; empty: `<data.dir>/master.key`, generated once.
    pub master_key_file: String,
    /// Where each role's service credential (`<role>.key`) is; empty: `<data.dir>/credentials`.
    pub credentials_dir: String,
    /// Start-up attempts to load a role's secrets before giving up (backoff 250 ms … 5 s).
    pub secret_fetch_attempts: u32,
    /// JWT `iss` that kms signs and every role requires.
    pub token_issuer: String,
    /// JWT `aud` that kms signs and every role requires.
    pub token_audience: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    pub host: IpAddr,
    pub workers: usize,
    pub body_limit_bytes: u64,
    /// How long reading one request body may take in all; slower gets 408.
    pub body_read_timeout_seconds: u64,
    pub shutdown_timeout_seconds: u64,
    /// Peers whose `X-Forwarded-For` is believed (the gateway, Caddy).
    pub trusted_proxies: Vec<IpAddr>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    pub level: String,
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Text when stdout is a terminal (a person is reading), JSON otherwise (a collector is).
    Auto,
    Json,
    Text,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    pub dir: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    pub url: String,
    pub password_file: String,
    pub pool_size: u32,
    pub connect_attempts: u32,
    pub connect_timeout_seconds: u64,
    pub sqlite_busy_timeout_ms: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RoleConfig {
    /// The role's port; absent: the role's built-in default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// The address the role listens on; absent: `server.host`. A role given its own address
    /// (a container's or a VM interface's) is reached there by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<IpAddr>,
    /// The role's own settings (every other key of `[roles.<name>]`): the role reads them into
    /// its own typed section (`Config::role_settings`), which refuses unknown keys.
    #[serde(flatten)]
    pub settings: serde_json::Map<String, serde_json::Value>,
}

/// Where the configuration comes from besides the embedded defaults and the environment.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// `--config FILE`: layered over the defaults, under the environment.
    pub file: Option<PathBuf>,
    /// `--data-dir DIR`: wins over every other source.
    pub data_dir: Option<PathBuf>,
}

/// The database a configuration points at, decided from the URL scheme.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseTarget {
    Sqlite(PathBuf),
    /// A libpq connection URL (password, if any, added from `password_file` at connect time).
    Postgres(String),
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {reason}")]
    Unreadable { path: String, reason: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Loads the layered configuration from the process environment.
    pub fn load(overrides: &Overrides) -> Result<Config, ConfigError> {
        Self::load_from(overrides, Env::prefixed(ENV_PREFIX))
    }

    /// Loads with an explicit environment provider (tests pass a controlled one).
    pub fn load_from(overrides: &Overrides, env: Env) -> Result<Config, ConfigError> {
        refuse_stray_variables(&env)?;
        let mut figment = Figment::from(Toml::string(DEFAULT_TOML));
        if let Some(path) = &overrides.file {
            ensure_valid_toml(path)?;
            figment = figment.merge(Toml::file_exact(path));
        }
        // `DATABASE_URL` is the convention most tooling sets; the FOUNTAIN_ variable still wins.
        if let Ok(url) = std::env::var("DATABASE_URL") {
            figment = figment.merge(Serialized::default("database.url", url));
        }
        if let Ok(path) = std::env::var("FOUNTAIN_MASTER_KEY_FILE") {
            figment = figment.merge(Serialized::default("security.master_key_file", path));
        }
        // Only sectioned keys (`FOUNTAIN_SECTION__KEY`) are configuration; the others were
        // checked above (each is one of fountain's own variables, or the load failed).
        figment = figment.merge(env.filter(|key| key.as_str().contains("__")).split("__"));
        if let Some(dir) = &overrides.data_dir {
            figment = figment.merge(Serialized::default("data.dir", dir));
        }
        let config: Config = figment.extract().map_err(|e| ConfigError::Invalid(describe(&e)))?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        if self.server.body_limit_bytes == 0 || self.server.body_limit_bytes > MAX_BODY_LIMIT {
            return invalid(format!("server.body_limit_bytes must be between 1 and {MAX_BODY_LIMIT}"));
        }
        if self.server.workers > 256 {
            return invalid("server.workers must be at most 256".into());
        }
        if self.database.pool_size == 0 || self.database.pool_size > 256 {
            return invalid("database.pool_size must be between 1 and 256".into());
        }
        if self.database.connect_attempts == 0 {
            return invalid("database.connect_attempts must be at least 1".into());
        }
        if self.data.dir.as_os_str().is_empty() {
            return invalid("data.dir must not be empty".into());
        }
        for (name, url) in &self.peers {
            if !crate::platform::net::is_plain_http_url(url) {
                return invalid(format!("peers.{name} must be an http:// URL without credentials"));
            }
        }
        env_filter::Builder::new().try_parse(&self.log.level).map_err(|_| {
            ConfigError::Invalid(format!("log.level {:?} is not a valid filter", self.log.level))
        })?;
        self.database_target()?;
        Ok(())
    }

    /// The base URL of a role (`peers.<role>`), without a trailing slash.
    pub fn peer_url(&self, role: &str) -> Option<String> {
        self.peers.get(role).map(|u| u.trim_end_matches('/').to_string())
    }

    /// A role's own settings (`[roles.<name>]` without `port`) as the role's typed section.
    /// Unknown keys and wrong types are refused with the key named (relative to the table).
    pub fn role_settings<T: serde::de::DeserializeOwned>(&self, role: &str) -> Result<T, String> {
        let settings = self.roles.get(role).map(|r| r.settings.clone()).unwrap_or_default();
        serde_path_to_error::deserialize(serde_json::Value::Object(settings)).map_err(|e| {
            let path = e.path().to_string();
            if path == "." {
                e.inner().to_string()
            } else {
                format!("{path}: {}", e.inner())
            }
        })
    }

    /// Sets one of a role's settings; `key` may be dotted (`routes.echo`). For code that builds
    /// a configuration (tests, embedding); files and environment variables are the usual way.
    pub fn set_role_setting(&mut self, role: &str, key: &str, value: impl Serialize) {
        let value = serde_json::to_value(value).unwrap_or(serde_json::Value::Null);
        let mut table = &mut self.roles.entry(role.to_string()).or_default().settings;
        let mut parts = key.split('.').peekable();
        while let Some(part) = parts.next() {
            if parts.peek().is_none() {
                table.insert(part.to_string(), value);
                return;
            }
            let next = table
                .entry(part.to_string())
                .or_insert_with(|| serde_json::Value::Object(Default::default()));
            if !next.is_object() {
                *next = serde_json::Value::Object(Default::default());
            }
            table = next.as_object_mut().expect("made an object above");
        }
    }

    /// The port a role listens on: from `[roles.<name>]`, else the role's built-in default.
    pub fn role_port(&self, role: &str, default_port: u16) -> u16 {
        self.roles.get(role).and_then(|r| r.port).unwrap_or(default_port)
    }

    /// The address a role listens on: `[roles.<name>] host`, else `server.host`.
    pub fn role_host(&self, role: &str) -> IpAddr {
        self.roles.get(role).and_then(|r| r.host).unwrap_or(self.server.host)
    }

    /// Decides the database backend from `database.url`.
    pub fn database_target(&self) -> Result<DatabaseTarget, ConfigError> {
        let url = self.database.url.trim();
        if url.is_empty() {
            return Ok(DatabaseTarget::Sqlite(self.data.dir.join("fountain.db")));
        }
        if let Some(path) = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")) {
            if path.is_empty() {
                return Err(ConfigError::Invalid("database.url sqlite:// needs a file path".into()));
            }
            return Ok(DatabaseTarget::Sqlite(PathBuf::from(path)));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let parsed = url::Url::parse(url)
                .map_err(|e| ConfigError::Invalid(format!("database.url is not a valid URL: {e}")))?;
            if parsed.password().is_some() {
                return Err(ConfigError::Invalid(
                    "database.url must not contain a password: name a file in database.password_file \
                     (or use PGPASSWORD / ~/.pgpass)"
                        .into(),
                ));
            }
            return Ok(DatabaseTarget::Postgres(url.to_string()));
        }
        let scheme = url.split(':').next().unwrap_or_default();
        Err(ConfigError::Invalid(format!(
            "database.url scheme {scheme:?} is not supported (use sqlite:// or postgres://)"
        )))
    }

    /// The effective configuration as JSON, safe to print: nothing in it is secret, and the
    /// database URL shows no user-info beyond the user name.
    pub fn redacted_json(&self) -> serde_json::Value {
        let mut value = serde_json::to_value(self).unwrap_or(serde_json::Value::Null);
        if let Some(url) = value.pointer_mut("/database/url") {
            *url = serde_json::Value::String(redact_url(&self.database.url));
        }
        value
    }
}

/// Removes any password from a URL for display.
pub fn redact_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => raw.to_string(),
    }
}

/// Reads the config file and checks its TOML syntax, so that a mistake is reported with the
/// file, line and reason (figment would report the line without the file or the reason).
fn ensure_valid_toml(path: &Path) -> Result<(), ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::Unreadable { path: path.display().to_string(), reason: io_reason(&e) })?;
    Toml::from_str::<figment::value::Dict>(&text).map(|_| ()).map_err(|e| {
        let at = e.span().map(|span| line_and_column(&text, span.start)).unwrap_or_default();
        let reason = e.message().lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>();
        ConfigError::Invalid(format!("{}{at}: {}", path.display(), reason.join("; ")))
    })
}

/// ` line L, column C` (both from 1) of a byte offset in `text`.
fn line_and_column(text: &str, offset: usize) -> String {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    format!(" line {line}, column {column}")
}

fn io_reason(err: &std::io::Error) -> String {
    match err.kind() {
        std::io::ErrorKind::NotFound => "no such file".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        std::io::ErrorKind::IsADirectory => "it is a directory".into(),
        std::io::ErrorKind::InvalidData => "it is not UTF-8 text".into(),
        kind => kind.to_string(),
    }
}

/// Refuses a `FOUNTAIN_*` variable that is neither a sectioned key (`FOUNTAIN_SECTION__KEY`,
/// checked by the typed extraction) nor one of fountain's own variables: a misspelt name such
/// as `FOUNTAIN_SERVER_HOST` would otherwise be ignored without a word.
fn refuse_stray_variables(env: &Env) -> Result<(), ConfigError> {
    for (key, _) in env.iter() {
        let name = key.as_str().to_ascii_uppercase();
        let own = NON_KEY_VARIABLES.contains(&name.as_str()) || name.starts_with(TEST_VARIABLE_PREFIX);
        if own || name.contains("__") {
            continue;
        }
        let hint =
            sectioned_guess(&name).map(|g| format!("; did you mean {ENV_PREFIX}{g}?")).unwrap_or_default();
        return Err(ConfigError::Invalid(format!(
            "environment variable {ENV_PREFIX}{name} names no configuration key (keys are \
             {ENV_PREFIX}<SECTION>__<KEY>, with two underscores){hint}"
        )));
    }
    Ok(())
}

/// `SERVER_HOST` -> `SERVER__HOST` when that is a key of the embedded defaults.
fn sectioned_guess(name: &str) -> Option<String> {
    let (section, key) = name.split_once('_')?;
    let dotted = format!("{section}.{key}").to_ascii_lowercase();
    Figment::from(Toml::string(DEFAULT_TOML)).contains(&dotted).then(|| format!("{section}__{key}"))
}

/// One line for a figment error: the key as written in the configuration (no profile
/// prefix), where it came from (the file, or the variable named exactly), and the reason.
fn describe(error: &figment::Error) -> String {
    let key = error.path.join(".").to_ascii_lowercase();
    let origin = error.metadata.as_ref().map(|metadata| match &metadata.source {
        Some(figment::Source::File(path)) => format!("in {}", path.display()),
        _ if metadata.name.contains("environment") => {
            format!("from {ENV_PREFIX}{}", error.path.join("__").to_ascii_uppercase())
        }
        _ => format!("from the {}", metadata.name),
    });
    let reason = match &error.kind {
        figment::error::Kind::UnknownField(field, expected) => {
            format!("unknown key `{field}` (known: {})", expected.join(", "))
        }
        figment::error::Kind::UnknownVariant(value, expected) => {
            format!("unknown value `{value}` (expected one of: {})", expected.join(", "))
        }
        other => other.to_string(),
    };
    match (key.is_empty(), origin) {
        (false, Some(origin)) => format!("{key} ({origin}): {reason}"),
        (false, None) => format!("{key}: {reason}"),
        (true, Some(origin)) => format!("{origin}: {reason}"),
        (true, None) => first_line(&reason),
    }
}

fn first_line(message: &str) -> String {
    message.lines().next().unwrap_or_default().to_string()
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment's Jail closures return its own (large) error type
mod tests {
    use super::*;
    use figment::Jail;

    fn load_in_jail(overrides: &Overrides) -> Result<Config, ConfigError> {
        Config::load_from(overrides, Env::prefixed(ENV_PREFIX))
    }

    #[test]
    fn embedded_defaults_run_everything_on_loopback_with_sqlite() {
        Jail::expect_with(|_| {
            let config = load_in_jail(&Overrides::default()).expect("defaults load");
            assert_eq!(config.server.host.to_string(), "127.0.0.1");
            assert_eq!(config.role_port("gateway", 8000), 8000, "ports come from the role list");
            assert_eq!(config.roles["kms"].port, None);
            assert_eq!(config.roles["kms"].settings["bcrypt_cost"], 12, "a role's table holds its settings");
            assert_eq!(
                config.database_target().unwrap(),
                DatabaseTarget::Sqlite(PathBuf::from("./data/fountain.db"))
            );
            Ok(())
        });
    }

    #[test]
    fn a_role_may_listen_on_its_own_address() {
        Jail::expect_with(|jail| {
            jail.set_env("FOUNTAIN_ROLES__NOTIFY__HOST", "10.20.0.4");
            let config = load_in_jail(&Overrides::default()).expect("loads");
            assert_eq!(config.role_host("notify").to_string(), "10.20.0.4");
            assert_eq!(config.role_host("kms").to_string(), "127.0.0.1", "others keep server.host");
            assert_eq!(config.roles["notify"].settings.get("host"), None, "not one of the role's settings");
            jail.set_env("FOUNTAIN_ROLES__NOTIFY__HOST", "notify.internal");
            let err = load_in_jail(&Overrides::default()).unwrap_err().to_string();
            assert!(err.contains("roles.notify.host"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn file_overrides_defaults_and_environment_overrides_file_and_flags_override_all() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "custom.toml",
                "[server]\nworkers = 3\n[roles.kms]\nport = 9103\n[data]\ndir = \"/from/file\"\n",
            )?;
            jail.set_env("FOUNTAIN_ROLES__KMS__PORT", "9203");
            jail.set_env("FOUNTAIN_CONFIG", "ignored-by-config");
            let overrides =
                Overrides { file: Some("custom.toml".into()), data_dir: Some("/from/flag".into()) };
            let config = load_in_jail(&overrides).expect("layers load");
            assert_eq!(config.server.workers, 3, "file beats defaults");
            assert_eq!(config.role_port("kms", 1), 9203, "environment beats file");
            assert_eq!(config.data.dir, PathBuf::from("/from/flag"), "flag beats everything");
            assert_eq!(config.role_port("gateway", 8000), 8000, "untouched keys keep defaults");
            assert_eq!(
                config.roles["kms"].settings["bcrypt_cost"], 12,
                "a port beside the settings keeps them"
            );
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused_with_the_key_named() {
        Jail::expect_with(|jail| {
            jail.create_file("typo.toml", "[server]\nhots = \"0.0.0.0\"\n")?;
            let err = load_in_jail(&Overrides { file: Some("typo.toml".into()), ..Default::default() })
                .unwrap_err()
                .to_string();
            assert!(err.contains("hots"), "{err}");

            jail.set_env("FOUNTAIN_SERVER__HOST", "not-an-ip");
            let err = load_in_jail(&Overrides::default()).unwrap_err().to_string().to_lowercase();
            assert!(err.contains("server.host"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn peers_must_be_plain_http_urls_without_credentials() {
        Jail::expect_with(|jail| {
            for bad in ["https://kms.internal:8003", "kms:8003", "http://user:pw@kms:8003"] {
                jail.set_env("FOUNTAIN_PEERS__KMS", bad);
                let err = load_in_jail(&Overrides::default()).unwrap_err().to_string();
                assert!(err.contains("peers.kms must be an http:// URL"), "{bad}: {err}");
                assert!(!err.contains("pw@"), "credentials must not be echoed: {err}");
            }
            jail.set_env("FOUNTAIN_PEERS__KMS", "http://kms:8003");
            assert!(load_in_jail(&Overrides::default()).is_ok());
            Ok(())
        });
    }

    #[test]
    fn missing_config_file_is_a_clear_error() {
        Jail::expect_with(|_| {
            let err = load_in_jail(&Overrides { file: Some("nope.toml".into()), ..Default::default() })
                .unwrap_err()
                .to_string();
            assert_eq!(err, "cannot read config file nope.toml: no such file");
            Ok(())
        });
    }

    #[test]
    fn database_urls_pick_the_backend_and_refuse_inline_passwords() {
        Jail::expect_with(|jail| {
            jail.set_env("FOUNTAIN_DATABASE__URL", "postgres://fountain@db:5432/fountain");
            let config = load_in_jail(&Overrides::default()).unwrap();
            assert!(matches!(config.database_target().unwrap(), DatabaseTarget::Postgres(_)));

            jail.set_env("FOUNTAIN_DATABASE__URL", "postgres://fountain:hunter2@db/fountain");
            let err = load_in_jail(&Overrides::default()).unwrap_err().to_string();
            assert!(err.contains("must not contain a password"), "{err}");
            assert!(!err.contains("hunter2"), "the password must not be echoed: {err}");

            jail.set_env("FOUNTAIN_DATABASE__URL", "mysql://x@db/f");
            let err = load_in_jail(&Overrides::default()).unwrap_err().to_string();
            assert!(err.contains("\"mysql\" is not supported"), "{err}");

            jail.set_env("FOUNTAIN_DATABASE__URL", "sqlite:///var/lib/fountain/f.db");
            let config = load_in_jail(&Overrides::default()).unwrap();
            assert_eq!(
                config.database_target().unwrap(),
                DatabaseTarget::Sqlite(PathBuf::from("/var/lib/fountain/f.db"))
            );
            Ok(())
        });
    }

    #[test]
    fn a_variable_that_maps_to_no_key_is_named_with_a_guess() {
        Jail::expect_with(|jail| {
            jail.set_env("FOUNTAIN_CONFIG", "x.toml");
            jail.set_env("FOUNTAIN_ROLE", "kms");
            jail.set_env("FOUNTAIN_TEST_PG_URL", "postgres://x@y/z");
            assert!(load_in_jail(&Overrides::default()).is_ok(), "fountain's own variables are not keys");
            jail.set_env("FOUNTAIN_SERVER_HOST", "0.0.0.0");
            let err = load_in_jail(&Overrides::default()).unwrap_err().to_string();
            assert_eq!(
                err,
                "invalid configuration: environment variable FOUNTAIN_SERVER_HOST names no configuration \
                 key (keys are FOUNTAIN_<SECTION>__<KEY>, with two underscores); did you mean \
                 FOUNTAIN_SERVER__HOST?"
            );
            Ok(())
        });
    }

    #[test]
    fn errors_name_the_key_without_a_profile_and_the_file_or_variable() {
        Jail::expect_with(|jail| {
            jail.create_file("bad.toml", "[server]\nworkers = \"x\"\n")?;
            let err = load_in_jail(&Overrides { file: Some("bad.toml".into()), ..Default::default() })
                .unwrap_err()
                .to_string();
            assert!(err.starts_with("invalid configuration: server.workers (in "), "{err}");
            assert!(err.ends_with("bad.toml): invalid type: found string \"x\", expected usize"), "{err}");
            assert!(!err.contains("default."), "{err}");

            jail.create_file("broken.toml", "[server]\nworkers = 3\nhost = \n")?;
            let err = load_in_jail(&Overrides { file: Some("broken.toml".into()), ..Default::default() })
                .unwrap_err()
                .to_string();
            assert!(err.starts_with("invalid configuration: broken.toml line 3, column 8: "), "{err}");

            jail.set_env("FOUNTAIN_SERVER__WORKERS", "many");
            let err = load_in_jail(&Overrides::default()).unwrap_err().to_string();
            assert_eq!(
                err,
                "invalid configuration: server.workers (from FOUNTAIN_SERVER__WORKERS): invalid type: \
                 found string \"many\", expected usize"
            );
            Ok(())
        });
    }

    #[test]
    fn line_and_column_count_from_one() {
        assert_eq!(line_and_column("ab\ncd", 4), " line 2, column 2");
        assert_eq!(line_and_column("ab", 0), " line 1, column 1");
    }

    #[test]
    fn redaction_hides_url_passwords() {
        assert_eq!(redact_url("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
    }
}
