//! The built binary as operators run it: CLI errors, config layering, JSON logs, SIGTERM.

use std::process::Output;
use std::time::Duration;

use serde_json::Value;

use crate::support::{blocking_get, fountain_command, ServeProcess};

fn run(args: &[&str], env: &[(&str, &str)]) -> (Output, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut command = fountain_command(&dir.path().join("data"));
    command.args(args);
    for (key, value) in env {
        command.env(key, value);
    }
    (command.output().expect("fountain runs"), dir)
}

/// Asserts a failure: the exit code, and exactly one line on stderr that contains `expected`.
fn assert_one_line_failure(output: &Output, code: i32, expected: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(code), "stderr: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "exactly one line expected: {stderr:?}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(
        stderr.to_lowercase().contains(&expected.to_lowercase()),
        "{stderr:?} should contain {expected:?}"
    );
    assert!(!stderr.contains("panicked") && !stderr.contains("backtrace"), "{stderr}");
}

#[test]
fn help_and_version_succeed() {
    let (output, _dir) = run(&["--help"], &[]);
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for command in ["serve", "migrate", "openapi", "config"] {
        assert!(help.contains(command), "{help}");
    }
    let (output, _dir) = run(&["--version"], &[]);
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        format!("fountain {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn usage_errors_are_one_line_with_exit_2() {
    let (output, _dir) = run(&["serve", "--bogus"], &[]);
    assert_one_line_failure(&output, 2, "--bogus");
    let (output, _dir) = run(&["serve", "--role", "kms,teapot"], &[]);
    assert_one_line_failure(&output, 2, "unknown role \"teapot\"");
    let (output, _dir) = run(&["openapi", "--role", "nope"], &[]);
    assert_one_line_failure(&output, 2, "unknown role \"nope\"");
    let (output, _dir) = run(&["frobnicate"], &[]);
    assert_one_line_failure(&output, 2, "frobnicate");
}

#[test]
fn configuration_problems_are_one_line_with_exit_1() {
    let (output, _dir) = run(&["serve", "--config", "/nonexistent/fountain.toml"], &[]);
    assert_one_line_failure(&output, 1, "cannot read config file /nonexistent/fountain.toml");

    let (output, _dir) = run(&["config", "check"], &[("FOUNTAIN_ROLES__KMS__PORT", "99999")]);
    assert_one_line_failure(&output, 1, "roles.kms.port");

    // A role's own table is checked by the role: a misspelt key is named, not ignored.
    let (output, _dir) = run(&["config", "check"], &[("FOUNTAIN_ROLES__KMS__BCRYPT_COSTT", "4")]);
    assert_one_line_failure(
        &output,
        1,
        "invalid configuration: roles.kms: bcrypt_costt: unknown field `bcrypt_costt`",
    );
    let (output, _dir) = run(&["serve", "--role", "kms"], &[("FOUNTAIN_ROLES__KMS__BCRYPT_COST", "99")]);
    assert_one_line_failure(&output, 1, "roles.kms: bcrypt_cost must be between 4 and 31");
    let (output, _dir) = run(&["config", "check"], &[("FOUNTAIN_ROLES__KMZ__PORT", "9000")]);
    assert_one_line_failure(&output, 1, "invalid configuration: roles.kmz: no such role");

    let (output, _dir) =
        run(&["config", "check"], &[("FOUNTAIN_DATABASE__URL", "postgres://u:hunter2@127.0.0.1/db")]);
    assert_one_line_failure(&output, 1, "must not contain a password");
    assert!(!String::from_utf8_lossy(&output.stderr).contains("hunter2"));

    let (output, _dir) = run(
        &["serve", "--role", "kms"],
        &[
            ("FOUNTAIN_DATABASE__URL", "postgres://postgres@127.0.0.1:1/none"),
            ("FOUNTAIN_DATABASE__CONNECT_ATTEMPTS", "2"),
        ],
    );
    assert_one_line_failure(
        &output,
        1,
        "cannot connect to database postgres://postgres@127.0.0.1:1/none after 2 attempt(s)",
    );
}

#[test]
fn a_port_in_use_is_one_line_naming_the_role_and_address_and_creates_nothing() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let (output, dir) = run(&["serve", "--role", "kms"], &[("FOUNTAIN_ROLES__KMS__PORT", port.as_str())]);
    assert_one_line_failure(
        &output,
        1,
        &format!("role kms cannot listen on 127.0.0.1:{port}: address already in use"),
    );
    assert!(!dir.path().join("data").exists(), "no data dir for a start that failed on its port");
}

#[test]
fn config_check_shows_file_then_environment_then_flag_precedence() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("custom.toml");
    std::fs::write(&file, "[server]\nworkers = 3\nbody_limit_bytes = 2048\n[roles.kms]\nport = 9103\n")
        .unwrap();
    let mut command = fountain_command(&dir.path().join("flag-data"));
    let output = command
        .args(["config", "check", "--config"])
        .arg(&file)
        .env("FOUNTAIN_SERVER__BODY_LIMIT_BYTES", "4096")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let effective: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(effective["server"]["workers"], 3, "file over defaults");
    assert_eq!(effective["roles"]["kms"]["port"], 9103, "file over defaults");
    assert_eq!(effective["server"]["body_limit_bytes"], 4096, "environment over file");
    assert_eq!(effective["data"]["dir"], dir.path().join("flag-data").display().to_string(), "flag over all");
    assert_eq!(effective["peers"]["kms"], "http://127.0.0.1:9103", "peers follow the role's port");
    assert_eq!(effective["peers"]["gateway"], "http://127.0.0.1:8000", "defaults come from the role list");
}

#[test]
fn migrate_applies_once_then_reports_up_to_date() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let first = fountain_command(&data).arg("migrate").output().unwrap();
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    let migrations =
        std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/sqlite")).unwrap().count();
    assert!(
        String::from_utf8_lossy(&first.stdout).contains(&format!("applied {migrations} migration(s)")),
        "{}",
        String::from_utf8_lossy(&first.stdout)
    );
    let second = fountain_command(&data).arg("migrate").output().unwrap();
    assert!(String::from_utf8_lossy(&second.stdout).contains("database is up to date"));
    assert!(data.join("fountain.db").exists());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&data).unwrap().permissions().mode() & 0o777, 0o700);
    }
}

#[test]
fn serve_logs_json_with_request_ids_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let process = ServeProcess::start(&dir.path().join("data"), &["kms", "gateway"], &[]);
    let (status, head, body) =
        blocking_get(process.addr("kms"), "/", &[("X-Request-ID", "trace-from-test-1")]);
    assert_eq!(status, 200);
    assert!(head.to_ascii_lowercase().contains("x-request-id: trace-from-test-1"), "{head}");
    assert!(body.contains("Key Management Service"));
    let (status, _, body) = blocking_get(process.addr("gateway"), "/health", &[]);
    let health: Value = serde_json::from_str(&body).unwrap();
    assert_eq!((status, &health["status"]), (200, &Value::from("healthy")));
    assert!(health["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')), "{health}");

    process.signal("TERM");
    let (code, lines) = process.wait(Duration::from_secs(30));
    assert_eq!(code, Some(0), "SIGTERM is a clean exit: {lines:?}");
    let records: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("non-JSON log line {l:?}")))
        .collect();
    for record in &records {
        for key in ["time", "level", "target", "message"] {
            assert!(record.get(key).is_some(), "{key} missing in {record}");
        }
    }
    let access = records
        .iter()
        .find(|r| r["request_id"] == "trace-from-test-1")
        .unwrap_or_else(|| panic!("no access log line for the request: {lines:?}"));
    assert_eq!(access["role"], "kms");
    assert_eq!(access["status"], 200);
    assert_eq!(access["route"], "/");
    assert!(records.iter().any(|r| r["message"] == "all roles stopped"), "{lines:?}");
}

#[test]
fn sigint_also_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let process = ServeProcess::start(&dir.path().join("data"), &["notify"], &[]);
    let (status, _, _) = blocking_get(process.addr("notify"), "/ready", &[]);
    assert_eq!(status, 200);
    process.signal("INT");
    let (code, _) = process.wait(Duration::from_secs(30));
    assert_eq!(code, Some(0));
}

#[test]
fn sigterm_stops_the_background_tasks_of_every_role() {
    let dir = tempfile::tempdir().unwrap();
    let debug = [("FOUNTAIN_LOG__LEVEL", "debug,actix_server=warn,actix_http=warn,awc=warn")];
    let process = ServeProcess::start(&dir.path().join("data"), &["notify", "gateway"], &debug);
    process.signal("TERM");
    let (code, lines) = process.wait(Duration::from_secs(30));
    assert_eq!(code, Some(0), "{lines:?}");
    let stopped: Vec<String> = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|r| r["message"] == "background task stopped")
        .filter_map(|r| r["task"].as_str().map(str::to_string))
        .collect();
    for task in ["notify.delivery", "gateway.health", "gateway.limits", "trust.revocations"] {
        assert!(stopped.iter().any(|t| t == task), "{task} did not report stopping: {stopped:?}");
    }
    let last = lines.iter().rev().find_map(|l| serde_json::from_str::<Value>(l).ok()).unwrap();
    assert_eq!(last["message"], "all roles stopped", "tasks stop before the process reports it stopped");
}

#[test]
fn a_master_key_that_does_not_match_the_database_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let first = ServeProcess::start(&data, &["kms"], &[]);
    first.signal("TERM");
    assert_eq!(first.wait(Duration::from_secs(30)).0, Some(0));
    let generated = std::fs::read_to_string(data.join("master.key")).unwrap();
    assert_eq!(generated.trim().len(), 44, "32 bytes, base64");

    let other = dir.path().join("other.key");
    std::fs::write(&other, "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUE=\n").unwrap();
    let output = fountain_command(&data)
        .args(["serve", "--role", "kms"])
        .env("FOUNTAIN_MASTER_KEY_FILE", &other)
        .env("FOUNTAIN_ROLES__KMS__PORT", "0")
        .output()
        .unwrap();
    assert_one_line_failure(&output, 1, "the master key does not match");

    std::fs::write(&other, "too short").unwrap();
    let output = fountain_command(&data)
        .args(["serve", "--role", "kms"])
        .env("FOUNTAIN_MASTER_KEY_FILE", &other)
        .output()
        .unwrap();
    assert_one_line_failure(&output, 1, "must hold 32 bytes");
}
