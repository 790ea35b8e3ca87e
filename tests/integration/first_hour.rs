//! The first hour with the real binary: what `fountain serve` prints when it starts, what the
//! operator is told to do next, what the logs show while nothing happens, how it stops, and the
//! landing pages a person opens first.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;

use crate::support::{blocking_get, fountain_command, ServeProcess};

const EVERY_ROLE: [&str; 7] = ["gateway", "kms", "secrets", "notify", "search", "sequence", "twofa"];

/// The next step the summary shows while no admin exists (kms's), with the command exactly as
/// README's "Run it" gives it.
const CREATE_ADMIN: &str = "create the first admin: fountain admin create-user --username ops --role admin \
                            (in this folder; the password is prompted, or read from stdin)";

/// Keeps the tests fast: bcrypt at its lowest cost (tests only, never a default).
const FAST_BCRYPT: (&str, &str) = ("FOUNTAIN_ROLES__KMS__BCRYPT_COST", "4");

const SUMMARY: &str = "fountain is up: ";
const START_BOUND: Duration = Duration::from_secs(60);

fn start_every_role(data: &std::path::Path) -> ServeProcess {
    ServeProcess::start(data, &EVERY_ROLE, &[FAST_BCRYPT])
}

fn records(lines: &[String]) -> Vec<Value> {
    lines.iter().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

/// `fountain is up: kms http://…, secrets http://…` in start order.
fn roles_up(process: &ServeProcess, lines: &[String]) -> String {
    let started: Vec<String> = records(lines)
        .iter()
        .filter(|r| r["message"].as_str().is_some_and(|m| m.contains(" listening on ")))
        .map(|r| {
            let role = r["role"].as_str().unwrap().to_string();
            format!("{role} http://{}", process.addr(&role))
        })
        .collect();
    format!("{SUMMARY}{}", started.join(", "))
}

#[test]
fn a_fresh_start_prints_one_line_per_role_and_a_summary_with_the_create_admin_step() {
    let dir = tempfile::tempdir().unwrap();
    let mut process = start_every_role(&dir.path().join("data"));
    let summary = process.wait_for_message(SUMMARY, START_BOUND);

    let starts: Vec<Value> = records(&process.log_lines)
        .into_iter()
        .filter(|r| r["message"].as_str().is_some_and(|m| m.contains(" listening on ")))
        .collect();
    assert_eq!(starts.len(), EVERY_ROLE.len(), "one start line per role: {starts:?}");
    for role in EVERY_ROLE {
        let line = starts.iter().find(|r| r["role"] == role).unwrap_or_else(|| panic!("{role}: {starts:?}"));
        let url = format!("http://{}", process.addr(role));
        assert_eq!(line["message"], format!("role {role} listening on {url}"));
        assert_eq!(line["url"], url);
        assert_eq!(line["level"], "INFO");
    }
    let expected = format!("{} — next: {CREATE_ADMIN}", roles_up(&process, &process.log_lines));
    assert_eq!(summary["message"], expected);
    assert_eq!(summary["next_step"], CREATE_ADMIN);
    assert_eq!(summary["level"], "INFO");
}

/// kms answers the hook: the step is shown until an enabled admin exists.
#[test]
fn once_an_admin_exists_the_summary_has_no_next_step() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let first = start_every_role(&data);
    first.signal("TERM");
    assert_eq!(first.wait(Duration::from_secs(30)).0, Some(0));

    let password = dir.path().join("ops-password");
    std::fs::write(&password, "a long enough password\n").unwrap();
    let created = fountain_command(&data)
        .args(["admin", "create-user", "--username", "ops", "--role", "admin", "--password-file"])
        .arg(&password)
        .env(FAST_BCRYPT.0, FAST_BCRYPT.1)
        .output()
        .unwrap();
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));

    let mut process = start_every_role(&data);
    let summary = process.wait_for_message(SUMMARY, START_BOUND);
    assert_eq!(summary["message"], roles_up(&process, &process.log_lines));
    assert_eq!(summary["next_step"], "");
}

/// An idle all-in-one: the roles' routine calls to each other (token refresh, registry
/// heartbeat, rotation stream) are not traffic, and a SIGTERM is a stop, not a failure.
#[test]
fn an_idle_all_in_one_logs_no_housekeeping_at_info_and_stops_without_warnings() {
    let dir = tempfile::tempdir().unwrap();
    let mut process = start_every_role(&dir.path().join("data"));
    process.wait_for_message(SUMMARY, START_BOUND);
    let started = process.log_lines.len();
    process.signal("TERM");
    let (code, lines) = process.wait(Duration::from_secs(30));
    assert_eq!(code, Some(0), "{lines:?}");
    let records = records(&lines);
    assert_eq!(records.len(), lines.len(), "stdout is a pipe: every line is JSON ({lines:?})");
    let stop = &records[started..];
    let loud: Vec<&Value> = stop.iter().filter(|r| r["level"] == "WARN" || r["level"] == "ERROR").collect();
    assert!(loud.is_empty(), "a clean stop warns about nothing: {loud:?}");
    assert_eq!(stop.last().map(|r| &r["message"]), Some(&Value::from("all roles stopped")), "{stop:?}");
    let errors: Vec<&Value> = records.iter().filter(|r| r["level"] == "ERROR").collect();
    assert!(errors.is_empty(), "a fresh start has no errors: {errors:?}");
    let housekeeping: Vec<&Value> = records
        .iter()
        .filter(|r| r["target"] == "fountain::access" && r["level"] == "INFO")
        .filter(|r| {
            ["/token", "/registry", "/events/stream", "/lookup/{service}", "/secrets/{serviceName}"]
                .contains(&r["route"].as_str().unwrap_or_default())
        })
        .collect();
    assert!(housekeeping.is_empty(), "routine calls between roles log at debug: {housekeeping:?}");
}

#[test]
fn text_logs_are_one_readable_line_each_when_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = fountain_command(&dir.path().join("data"))
        .args(["serve", "--role", "kms"])
        .env("FOUNTAIN_ROLES__KMS__PORT", "0")
        .env("FOUNTAIN_LOG__FORMAT", "text")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let start = loop {
        let mut line = String::new();
        assert!(stdout.read_line(&mut line).unwrap() > 0, "fountain ended before it listened");
        if line.contains("listening on") {
            break line;
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(serde_json::from_str::<Value>(&start).is_err(), "text, not JSON: {start}");
    assert!(start.contains(" INFO  fountain::server role kms listening on http://127.0.0.1:"), "{start}");
}

#[test]
fn every_landing_page_links_the_standard_endpoints_and_shows_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut process = start_every_role(&data);
    process.wait_for_message(SUMMARY, START_BOUND);
    let mut secrets = vec![std::fs::read_to_string(data.join("master.key")).unwrap().trim().to_string()];
    for role in EVERY_ROLE {
        let credential = data.join("credentials").join(format!("{role}.key"));
        secrets.push(std::fs::read_to_string(credential).unwrap().trim().to_string());
    }
    for role in EVERY_ROLE {
        let (status, _, page) = blocking_get(process.addr(role), "/", &[]);
        assert_eq!(status, 200, "{role}");
        for link in ["./docs/", "./health", "./ready", "./metrics", "./openapi.json"] {
            assert!(page.contains(&format!("href=\"{link}\"")), "{role} landing page lacks {link}: {page}");
            let (status, _, _) = blocking_get(process.addr(role), &link[1..], &[]);
            assert_eq!(status, 200, "{role} {link} answers");
        }
        for secret in &secrets {
            assert!(!page.contains(secret.as_str()), "{role} landing page shows a secret");
        }
    }
}
