//! The shipped systemd unit (`deploy/systemd/fountain@.service`) and its example configuration
//! (`deploy/fountain.toml`): systemd's own checker accepts the unit for every role with no
//! warning, systemd's offline security review rates it well, the hardening and credential lines
//! are there, and fountain accepts the configuration with the unit's environment applied.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::support::fountain_bin;

const UNIT: &str = include_str!("../../deploy/systemd/fountain@.service");
const EXAMPLE_CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/fountain.toml");
const INSTALLED_BINARY: &str = "/usr/local/bin/fountain";
const INSTALLED_CONFIG: &str = "/etc/fountain/fountain.toml";

/// systemd's analyzer (Debian: the `systemd` package); the test never skips without it.
fn systemd_analyze() -> &'static str {
    let found = Command::new("systemd-analyze").arg("--version").output().is_ok_and(|o| o.status.success());
    assert!(found, "systemd-analyze is required: apt-get install systemd (.ci/run installs it)");
    "systemd-analyze"
}

/// The `[Service]` settings of the unit in order, `(key, value)`; a key may repeat.
fn service_settings() -> Vec<(&'static str, &'static str)> {
    let section = UNIT.split("[Service]").nth(1).expect("a [Service] section");
    let section = section.split("\n[").next().expect("section body");
    section
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.split_once('=').unwrap_or_else(|| panic!("not a setting: {l}")))
        .collect()
}

fn values<'a>(settings: &'a [(&str, &'a str)], key: &str) -> Vec<&'a str> {
    settings.iter().filter(|(k, _)| *k == key).map(|(_, v)| *v).collect()
}

/// The unit as it would be installed, with the binary under test where `/usr/local/bin/fountain`
/// is (systemd-analyze checks that ExecStart's program exists), in a directory of its own.
fn rendered_unit(dir: &Path) -> PathBuf {
    assert_eq!(UNIT.matches(INSTALLED_BINARY).count(), 1, "ExecStart names {INSTALLED_BINARY} once");
    let path = dir.join("fountain@.service");
    std::fs::write(&path, UNIT.replace(INSTALLED_BINARY, fountain_bin())).expect("write the unit");
    path
}

fn role_names() -> Vec<&'static str> {
    fountain::roles::ALL.iter().map(|role| role.name()).collect()
}

#[test]
fn systemd_analyze_verify_accepts_the_unit_for_every_role_without_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    rendered_unit(dir.path());
    for role in role_names() {
        let instance = dir.path().join(format!("fountain@{role}.service"));
        let output =
            Command::new(systemd_analyze()).arg("verify").arg(&instance).output().expect("verify runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "fountain@{role}: {stderr}");
        // verify reports unknown keys and unparsable values on stderr and still exits 0.
        assert_eq!(stderr.trim(), "", "fountain@{role}: systemd warns");
    }
}

#[test]
fn systemd_rates_the_units_exposure_as_ok() {
    let dir = tempfile::tempdir().unwrap();
    rendered_unit(dir.path());
    let instance = dir.path().join("fountain@kms.service");
    // Exposure is systemd's 0–10 scale in tenths: at most 2.0 ("OK"; 10 is "UNSAFE").
    let output = Command::new(systemd_analyze())
        .args(["security", "--offline=yes", "--threshold=20"])
        .arg(&instance)
        .output()
        .expect("security runs");
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{report}{}", String::from_utf8_lossy(&output.stderr));
    assert!(report.contains("Overall exposure level for fountain@kms.service"), "{report}");
}

#[test]
fn the_unit_runs_one_role_as_a_dynamic_user_with_its_secrets_as_credentials() {
    let settings = service_settings();
    let one = |key: &str| -> &str {
        let found = values(&settings, key);
        assert_eq!(found.len(), 1, "{key}: {found:?}");
        found[0]
    };
    assert_eq!(one("ExecStart"), format!("{INSTALLED_BINARY} serve --role %i --config {INSTALLED_CONFIG}"));
    for (key, value) in [
        ("DynamicUser", "yes"),
        ("StateDirectory", "fountain"),
        ("StateDirectoryMode", "0700"),
        ("UMask", "0077"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("NoNewPrivileges", "yes"),
        ("CapabilityBoundingSet", ""),
        ("AmbientCapabilities", ""),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectControlGroups", "yes"),
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
        ("RestrictNamespaces", "yes"),
        ("RestrictSUIDSGID", "yes"),
        ("LockPersonality", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
        ("SystemCallArchitectures", "native"),
        ("KillSignal", "SIGTERM"),
    ] {
        assert_eq!(one(key), value, "{key}");
    }
    assert_eq!(values(&settings, "SystemCallFilter"), ["@system-service", "~@privileged"]);
    // Nothing widens what ProtectSystem=strict leaves writable, and nothing runs as root.
    for key in ["ReadWritePaths", "ExecStartPre", "PermissionsStartOnly"] {
        assert!(values(&settings, key).is_empty(), "{key} is not set");
    }
    assert_ne!(one("User"), "root");

    assert_eq!(
        values(&settings, "LoadCredential"),
        ["master.key:/etc/fountain/credentials/master.key", "%i.key:/etc/fountain/credentials/%i.key"],
    );
    let environment = values(&settings, "Environment");
    for expected in ["FOUNTAIN_MASTER_KEY_FILE=%d/master.key", "FOUNTAIN_SECURITY__CREDENTIALS_DIR=%d"] {
        assert!(environment.contains(&expected), "{expected}: {environment:?}");
    }
    // The role's shutdown grace fits in systemd's stop timeout.
    let stop: u64 = one("TimeoutStopSec").parse().expect("seconds");
    assert!(stop > 30, "server.shutdown_timeout_seconds (30) must fit in TimeoutStopSec ({stop})");
}

/// `fountain config check` on the example configuration with exactly `environment` added.
fn config_check(environment: &[(String, String)]) -> Value {
    let mut command = Command::new(fountain_bin());
    for (key, _) in std::env::vars() {
        if key.starts_with("FOUNTAIN_") || key == "DATABASE_URL" {
            command.env_remove(key);
        }
    }
    let output = command
        .envs(environment.iter().map(|(k, v)| (k, v)))
        .args(["config", "check", "--config", EXAMPLE_CONFIG])
        .output()
        .expect("fountain config check runs");
    assert!(output.status.success(), "{environment:?}: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("the effective configuration as JSON")
}

/// The unit's `Environment=` lines with `%d` (the credentials directory) and `%i` (the role)
/// filled in, as fountain sees them under the unit.
fn unit_environment(role: &str, credentials: &Path) -> Vec<(String, String)> {
    let credentials = credentials.display().to_string();
    values(&service_settings(), "Environment")
        .into_iter()
        .map(|assignment| assignment.split_once('=').expect("KEY=value"))
        .map(|(key, value)| (key.to_string(), value.replace("%d", &credentials).replace("%i", role)))
        .collect()
}

#[test]
fn the_example_configuration_passes_config_check_with_the_units_environment() {
    let credentials = tempfile::tempdir().unwrap();
    for role in role_names() {
        let effective = config_check(&unit_environment(role, credentials.path()));
        // The data directory is the unit's StateDirectory, and every role shares it.
        assert_eq!(effective["data"]["dir"], "/var/lib/fountain", "{role}");
        assert_eq!(effective["security"]["credentials_dir"], credentials.path().display().to_string());
        assert_eq!(effective["server"]["host"], "127.0.0.1", "only Caddy, on this host, is in front");
        assert_eq!(effective["log"]["format"], "json");
    }
    // Without the unit's environment (the admin commands, as root) the host paths apply.
    let effective = config_check(&[]);
    assert_eq!(effective["security"]["credentials_dir"], "/etc/fountain/credentials");
    // The example states no secret: secrets are only ever named by path.
    let example = std::fs::read_to_string(EXAMPLE_CONFIG).unwrap();
    for line in example.lines().filter(|l| !l.trim_start().starts_with('#')) {
        let lower = line.to_ascii_lowercase();
        if lower.contains("password") || lower.contains("secret") || lower.contains("key") {
            assert!(lower.contains("_file") || lower.contains("_dir"), "a secret in the example? {line}");
        }
    }
}
