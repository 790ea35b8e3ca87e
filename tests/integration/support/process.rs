//! The built binary as a child process, and a minimal blocking HTTP/1.1 client for the tests
//! that drive it from outside an async runtime's reactor.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::eventually_blocking;

pub fn fountain_bin() -> &'static str {
    env!("CARGO_BIN_EXE_fountain")
}

/// A `fountain` command with a private data dir and no inherited FOUNTAIN_* configuration.
pub fn fountain_command(data_dir: &Path) -> Command {
    let mut command = Command::new(fountain_bin());
    for (key, _) in std::env::vars() {
        if key.starts_with("FOUNTAIN_") || key == "DATABASE_URL" {
            command.env_remove(key);
        }
    }
    command.arg("--data-dir").arg(data_dir).env("RUST_BACKTRACE", "1");
    command
}

/// A running `fountain serve` child; killed when dropped.
pub struct ServeProcess {
    pub child: Child,
    pub addrs: HashMap<String, SocketAddr>,
    pub log_lines: Vec<String>,
    stdout: BufReader<std::process::ChildStdout>,
}

impl ServeProcess {
    /// Starts `fountain serve --role <roles>` with every role on port 0 and waits until each
    /// selected role logged its listening address.
    pub fn start(data_dir: &Path, roles: &[&str], extra_env: &[(&str, &str)]) -> ServeProcess {
        let mut command = fountain_command(data_dir);
        command.arg("serve").arg("--role").arg(roles.join(","));
        for role in fountain::roles::ALL {
            command.env(format!("FOUNTAIN_ROLES__{}__PORT", role.name().to_uppercase()), "0");
        }
        for (key, value) in extra_env {
            command.env(key, value);
        }
        Self::from_command(command, roles)
    }

    /// Spawns `command` (a `fountain serve --role <roles>`, possibly behind a wrapper such as
    /// `ip netns exec`) and waits until each of `roles` logged its listening address.
    pub fn from_command(mut command: Command, roles: &[&str]) -> ServeProcess {
        let mut child =
            command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn fountain");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut addrs = HashMap::new();
        let mut log_lines = Vec::new();
        // Not a poll: each turn blocks on the next log line; the bound is checked between lines.
        let deadline = Instant::now() + Duration::from_secs(60);
        while addrs.len() < roles.len() {
            assert!(Instant::now() < deadline, "roles did not start: {log_lines:?}");
            let mut line = String::new();
            if stdout.read_line(&mut line).expect("read stdout") == 0 {
                let mut err = String::new();
                let _ = child.stderr.take().map(|mut s| s.read_to_string(&mut err));
                let _ = child.kill();
                panic!("fountain exited before listening: {err} {log_lines:?}");
            }
            let value: Value =
                serde_json::from_str(line.trim()).unwrap_or_else(|_| panic!("non-JSON log line {line:?}"));
            if let (Some(role), Some(addr)) = (value["role"].as_str(), value["addr"].as_str()) {
                addrs.insert(role.to_string(), addr.parse().expect("addr"));
            }
            log_lines.push(line.trim().to_string());
        }
        ServeProcess { child, addrs, log_lines, stdout }
    }

    pub fn addr(&self, role: &str) -> SocketAddr {
        self.addrs[role]
    }

    /// Reads log lines (kept in `log_lines`) until one is a JSON record whose `message` starts
    /// with `prefix`, and returns that record; panics naming `prefix` if the child ends first
    /// or `limit` passes between lines.
    pub fn wait_for_message(&mut self, prefix: &str, limit: Duration) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            assert!(Instant::now() < deadline, "no log line starting with {prefix:?}: {:?}", self.log_lines);
            let mut line = String::new();
            if self.stdout.read_line(&mut line).expect("read stdout") == 0 {
                panic!("fountain ended before logging {prefix:?}: {:?}", self.log_lines);
            }
            self.log_lines.push(line.trim().to_string());
            let Ok(record) = serde_json::from_str::<Value>(line.trim()) else { continue };
            if record["message"].as_str().is_some_and(|m| m.starts_with(prefix)) {
                return record;
            }
        }
    }

    /// Sends a signal by name (TERM, INT, KILL) to the child.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Waits for the child to exit (bounded) and returns its exit code and the rest of stdout.
    pub fn wait(mut self, limit: Duration) -> (Option<i32>, Vec<String>) {
        let child = &mut self.child;
        let status = eventually_blocking(format!("fountain exits within {limit:?}"), limit, || {
            child.try_wait().expect("try_wait")
        });
        let mut rest = String::new();
        let _ = self.stdout.read_to_string(&mut rest);
        let mut lines = std::mem::take(&mut self.log_lines);
        lines.extend(rest.lines().map(str::to_string));
        (status.code(), lines)
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal blocking HTTP/1.1 GET, for process tests that run outside an async runtime.
pub fn blocking_get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (u16, String, String) {
    blocking_request(addr, "GET", path, headers, None)
}

/// A blocking JSON call with an optional bearer token: the status and the JSON answer (`null`
/// when the answer is not JSON).
pub fn blocking_call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
    let (status, _, text) = blocking_request(addr, method, path, &headers, body.as_ref());
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// A minimal blocking HTTP/1.1 request with an optional JSON body.
pub fn blocking_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    json: Option<&Value>,
) -> (u16, String, String) {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let body = json.map(Value::to_string).unwrap_or_default();
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    if json.is_some() {
        request.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", body.len()));
    }
    request.push_str("\r\n");
    request.push_str(&body);
    stream.write_all(request.as_bytes()).expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, head.to_string(), body.to_string())
}

/// A new installation in `data` with one admin, `username`, made by the real CLI as an operator
/// does (`fountain admin create-user --init`, the password from a file, cheap bcrypt), with
/// `env` (e.g. a PostgreSQL URL) for the command.
pub fn install_with_admin(data: &Path, username: &str, env: &[(&str, &str)]) {
    let password_file = data.with_extension("admin-password");
    std::fs::write(&password_file, super::PASSWORD).expect("password file");
    let created = fountain_command(data)
        .args([
            "admin",
            "create-user",
            "--init",
            "--username",
            username,
            "--role",
            "admin",
            "--password-file",
        ])
        .arg(&password_file)
        .env("FOUNTAIN_ROLES__KMS__BCRYPT_COST", "4")
        .envs(env.iter().copied())
        .output()
        .expect("fountain runs");
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
}
