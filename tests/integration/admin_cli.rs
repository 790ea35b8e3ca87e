//! `fountain admin …` as operators run it: the real binary against a real data directory, its
//! effects checked over HTTP on a running `fountain serve`.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::{
    blocking_call, eventually_blocking, fountain_bin, fountain_command, Backend, ServeProcess, TestDatabase,
    PASSWORD,
};

const CHEAP_BCRYPT: (&str, &str) = ("FOUNTAIN_ROLES__KMS__BCRYPT_COST", "4");
/// Long enough for a revocation event to reach a running role; only turns a hang into a failure.
const BOUND: Duration = Duration::from_secs(20);

/// `fountain` with no inherited configuration, run from `folder` (so `./data` is its data dir).
fn fountain_in(folder: &Path) -> Command {
    let mut command = Command::new(fountain_bin());
    for (key, _) in std::env::vars() {
        if key.starts_with("FOUNTAIN_") || key == "DATABASE_URL" {
            command.env_remove(key);
        }
    }
    command.current_dir(folder).env(CHEAP_BCRYPT.0, CHEAP_BCRYPT.1);
    command
}

/// Runs `command` with `stdin` piped in (a password line, as from a pipe or a file).
fn run_with_stdin(mut command: Command, stdin: &str) -> Output {
    let mut child =
        command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn");
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

/// `fountain --data-dir DATA admin ARGS…` with `stdin`.
fn admin(data: &Path, args: &[&str], stdin: &str) -> Output {
    let mut command = fountain_command(data);
    command.arg("admin").args(args).env(CHEAP_BCRYPT.0, CHEAP_BCRYPT.1);
    run_with_stdin(command, stdin)
}

#[track_caller]
fn succeeded(output: &Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// One `error:` line on stderr with exit `code`; returns it.
#[track_caller]
fn refused(output: &Output, code: i32) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(code), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr:?}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    stderr
}

fn login(kms: std::net::SocketAddr, username: &str, password: &str) -> (u16, Value) {
    blocking_call(kms, "POST", "/login", None, Some(json!({"username": username, "password": password})))
}

fn token(kms: std::net::SocketAddr, username: &str, password: &str) -> String {
    let (status, session) = login(kms, username, password);
    assert_eq!(status, 200, "login of {username}: {session}");
    session["access_token"].as_str().unwrap().to_string()
}

fn claims(token: &str) -> Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap())
        .unwrap()
}

#[test]
fn create_user_refuses_to_start_a_new_installation_in_the_wrong_folder() {
    let folder = tempfile::tempdir().unwrap();
    let output = run_with_stdin(
        {
            let mut command = fountain_in(folder.path());
            command.args(["admin", "create-user", "--username", "ops", "--role", "admin"]);
            command
        },
        &format!("{PASSWORD}\n"),
    );
    let line = refused(&output, 1);
    let data_dir = folder.path().join("data");
    assert!(line.contains(&format!("data directory {}", data_dir.display())), "{line}");
    assert!(
        line.contains("fountain serve") && line.contains("--data-dir") && line.contains("--config"),
        "{line}"
    );
    assert!(!data_dir.exists(), "nothing was created");
    assert!(!line.contains(PASSWORD));

    // The same with an explicit data directory, and every admin command.
    let elsewhere = folder.path().join("elsewhere");
    for args in [
        &["list-users"][..],
        &["disable-user", "--username", "ops"],
        &["set-roles", "--username", "ops", "--role", "user"],
    ] {
        let line = refused(&admin(&elsewhere, args, ""), 1);
        assert!(line.contains(&elsewhere.display().to_string()), "{line}");
    }
    assert!(!elsewhere.exists());

    // --init creates it on purpose.
    let created =
        admin(&elsewhere, &["create-user", "--init", "--username", "ops", "--role", "admin"], PASSWORD);
    assert!(succeeded(&created).contains("created user ops with roles admin"));
    assert!(elsewhere.join("master.key").is_file());
}

#[test]
fn create_user_refuses_a_postgresql_database_without_kms_tables() {
    let database = TestDatabase::create(Backend::Postgres);
    let key_file = database.dir.path().join("master.key");
    use base64::Engine;
    std::fs::write(&key_file, base64::engine::general_purpose::STANDARD.encode([7u8; 32])).unwrap();
    let mut command = fountain_command(&database.dir.path().join("data"));
    command
        .args(["admin", "create-user", "--username", "ops", "--role", "admin"])
        .env("FOUNTAIN_DATABASE__URL", &database.url)
        .env("FOUNTAIN_MASTER_KEY_FILE", &key_file);
    let line = refused(&run_with_stdin(command, PASSWORD), 1);
    assert!(line.contains("has no kms tables yet"), "{line}");
    let name = database.url.rsplit('/').next().unwrap();
    assert!(line.contains(name), "names the database: {line}");
    assert!(line.contains("fountain serve"), "{line}");
}

#[test]
fn role_names_kms_cannot_grant_are_refused_naming_the_valid_ones() {
    let folder = tempfile::tempdir().unwrap();
    let data = folder.path().join("data");
    for (role, reason) in
        [("Admin", "admin, user"), ("service", "reserved for service tokens"), ("a b", "admin, user")]
    {
        let output = admin(&data, &["create-user", "--init", "--username", "ops", "--role", role], PASSWORD);
        let line = refused(&output, 2);
        assert!(line.contains(&format!("role {role:?}")) && line.contains(reason), "{line}");
    }
    assert!(!data.exists(), "refused before anything was opened");
}

/// The README's way: `fountain serve` in one terminal, `fountain admin …` in another, same folder.
#[test]
fn admin_commands_change_accounts_that_a_running_server_honours_at_once() {
    let folder = tempfile::tempdir().unwrap();
    let data = folder.path().join("data");
    let process = ServeProcess::start(&data, &["kms"], &[CHEAP_BCRYPT]);
    let kms = process.addr("kms");

    // Exactly as the quick start says, from the same folder, the password on stdin.
    let mut create = fountain_in(folder.path());
    create.args(["admin", "create-user", "--username", "ops", "--role", "admin"]);
    assert!(succeeded(&run_with_stdin(create, &format!("{PASSWORD}\n"))).contains("created user ops"));
    let ops = token(kms, "ops", PASSWORD);
    assert_eq!(claims(&ops)["roles"], json!(["admin"]));

    let second = "another good password";
    succeeded(&admin(&data, &["create-user", "--username", "Alice"], &format!("{second}\n")));
    let alice = token(kms, "alice", second);
    assert_eq!(claims(&alice)["roles"], json!(["user"]));

    let listed = succeeded(&admin(&data, &["list-users"], ""));
    let lines: Vec<&str> = listed.lines().collect();
    assert!(lines[0].starts_with("USERNAME") && lines[0].contains("ROLES") && lines[0].contains("CREATED"));
    assert!(
        lines[1].starts_with("ops ") && lines[1].contains(" admin ") && lines[1].contains(" yes "),
        "{listed}"
    );
    assert!(lines[2].starts_with("alice ") && lines[2].contains(" user "), "{listed}");

    // set-roles: the old token is refused, a new login carries the new roles.
    let set = admin(&data, &["set-roles", "--username", "alice", "--role", "admin", "--role", "user"], "");
    assert!(succeeded(&set).contains("now has roles admin,user"));
    assert_eq!(blocking_call(kms, "GET", "/users", Some(&ops), None).0, 200);
    eventually_blocking("alice's old token to be refused", BOUND, || {
        // 403 while the token still counts (a plain user), 401 once it is refused.
        (blocking_call(kms, "GET", "/users", Some(&alice), None).0 == 401).then_some(())
    });
    let promoted = token(kms, "alice", second);
    assert_eq!(claims(&promoted)["roles"], json!(["admin", "user"]));
    assert_eq!(blocking_call(kms, "GET", "/users", Some(&promoted), None).0, 200);

    // disable-user: login refused, tokens ended; enable-user: back.
    succeeded(&admin(&data, &["disable-user", "--username", "alice"], ""));
    assert_eq!(login(kms, "alice", second).0, 401);
    eventually_blocking("the disabled user's token to be refused", BOUND, || {
        (blocking_call(kms, "GET", "/users", Some(&promoted), None).0 == 401).then_some(())
    });
    succeeded(&admin(&data, &["enable-user", "--username", "alice"], ""));
    assert_eq!(login(kms, "alice", second).0, 200);

    // reset-password: the old password is refused, the new one works.
    let file = folder.path().join("new-password");
    std::fs::write(&file, "a brand new password\n").unwrap();
    let file = file.to_str().unwrap();
    succeeded(&admin(&data, &["reset-password", "--username", "alice", "--password-file", file], ""));
    assert_eq!(login(kms, "alice", second).0, 401);
    assert_eq!(login(kms, "alice", "a brand new password").0, 200);

    // The last enabled admin stays: demote alice, then ops can be neither disabled nor demoted.
    succeeded(&admin(&data, &["set-roles", "--username", "alice", "--role", "user"], ""));
    let line = refused(&admin(&data, &["disable-user", "--username", "ops"], ""), 1);
    assert!(line.contains("no enabled admin"), "{line}");
    let line = refused(&admin(&data, &["set-roles", "--username", "ops", "--role", "user"], ""), 1);
    assert!(line.contains("no enabled admin"), "{line}");
    let line = refused(&admin(&data, &["disable-user", "--username", "nobody"], ""), 1);
    assert!(line.contains("no user nobody"), "{line}");

    // Every change is in the audit trail under the local actor; no password in it.
    let ops = token(kms, "ops", PASSWORD);
    let (status, audit) = blocking_call(kms, "GET", "/audit?role=kms&limit=500", Some(&ops), None);
    assert_eq!(status, 200, "{audit}");
    let by_cli: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["actor"].as_str().is_some_and(|a| a.starts_with("cli:")))
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for action in ["users.create", "users.update", "users.password_reset"] {
        assert!(by_cli.contains(&action), "{action} missing from {by_cli:?}");
    }
    let text = audit.to_string();
    for secret in [PASSWORD, second, "a brand new password"] {
        assert!(!text.contains(secret));
    }
}

/// On a terminal the password is asked twice without echo (driven through a pseudo-terminal).
#[test]
fn on_a_terminal_the_password_is_prompted_twice_without_echo() {
    let folder = tempfile::tempdir().unwrap();
    let data = folder.path().join("data");
    succeeded(&admin(&data, &["create-user", "--init", "--username", "ops", "--role", "admin"], PASSWORD));
    let script = r#"
import os, pty, sys, termios, time
argv, first, second = sys.argv[1:-2], sys.argv[-2], sys.argv[-1]
pid, fd = pty.fork()
if pid == 0:
    os.execv(argv[0], argv)
seen = b""
def read_until(marker):
    global seen
    while marker not in seen:
        try:
            chunk = os.read(fd, 1024)
        except OSError:
            return
        if not chunk:
            return
        seen += chunk
def type_when_echo_is_off(text):
    # Typed before the prompt has turned echo off, the terminal itself would echo it back.
    for _ in range(500):
        if not termios.tcgetattr(fd)[3] & termios.ECHO:
            break
        time.sleep(0.01)
    os.write(fd, text.encode() + b"\n")
read_until(b"New password for tty: ")
type_when_echo_is_off(first)
read_until(b"Repeat the password: ")
type_when_echo_is_off(second)
read_until(b"\x00never")
_, status = os.waitpid(pid, 0)
sys.stdout.write(seen.decode(errors="replace"))
sys.exit(os.waitstatus_to_exitcode(status))
"#;
    let through_a_terminal = |first: &str, second: &str| {
        let mut python = Command::new("python3");
        let path = std::env::var("PATH").unwrap_or_default();
        python.env_clear().env("PATH", path).env(CHEAP_BCRYPT.0, CHEAP_BCRYPT.1).current_dir(folder.path());
        python.args(["-c", script, fountain_bin(), "--data-dir"]).arg(&data);
        python.args(["admin", "create-user", "--username", "tty", "--role", "user", first, second]);
        python.output().expect("python3 runs")
    };

    let mismatch = through_a_terminal("first password here", "second password here");
    let shown = String::from_utf8_lossy(&mismatch.stdout).into_owned();
    assert_eq!(mismatch.status.code(), Some(1), "{shown}");
    assert!(shown.contains("do not match"), "{shown}");
    assert!(
        !shown.contains("first password here") && !shown.contains("second password here"),
        "echoed: {shown}"
    );

    let matching = through_a_terminal("typed on a terminal", "typed on a terminal");
    let shown = String::from_utf8_lossy(&matching.stdout).into_owned();
    assert_eq!(matching.status.code(), Some(0), "{shown}");
    assert!(shown.contains("created user tty"), "{shown}");
    assert!(!shown.contains("typed on a terminal"), "echoed: {shown}");

    let process = ServeProcess::start(&data, &["kms"], &[CHEAP_BCRYPT]);
    assert_eq!(login(process.addr("kms"), "tty", "typed on a terminal").0, 200);
}
