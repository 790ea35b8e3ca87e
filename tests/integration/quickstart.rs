//! The README's quick start, run exactly as written: `fountain serve` on its default ports in a
//! fresh folder, then the quick-start block in bash in that same folder, with only the
//! `cargo run --release --quiet --` prefix replaced by the binary under test. Its step-up
//! computes TOTP codes with Python's `pyotp`, as the block says.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::support::eventually_blocking;
use crate::support::process::{blocking_get, fountain_bin};

const README: &str = include_str!("../../README.md");
const CARGO_RUN: &str = "cargo run --release --quiet -- ";
const GATEWAY: &str = "127.0.0.1:8000";

/// The shell block between the quick-start markers.
fn quickstart_script() -> String {
    let start = README.find("<!-- quickstart:begin -->").expect("README has a quick start");
    let end = README.find("<!-- quickstart:end -->").expect("quick start ends");
    let block = &README[start..end];
    let body = block.split("```sh\n").nth(1).expect("a sh block").split("```").next().expect("closed block");
    assert!(body.contains(CARGO_RUN), "the quick start runs fountain through cargo");
    body.replace(CARGO_RUN, &format!("{} ", fountain_bin()))
}

/// A command with no inherited fountain configuration, in `dir`.
fn clean_command(program: &str, dir: &Path) -> Command {
    let mut command = Command::new(program);
    for (key, _) in std::env::vars() {
        if key.starts_with("FOUNTAIN_") || key == "DATABASE_URL" {
            command.env_remove(key);
        }
    }
    command.current_dir(dir);
    command
}

/// `fountain serve` exactly as "Run it" says (all roles, default ports, `./data`), with its
/// output drained so it never blocks on a full pipe.
struct Served(Child);

impl Served {
    fn start(dir: &Path) -> Served {
        assert!(README.contains("cargo run --release -- serve"), "README's first command");
        let mut child = clean_command(fountain_bin(), dir)
            .arg("serve")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn fountain serve");
        let stdout = child.stdout.take().expect("stdout");
        std::thread::spawn(move || for _ in BufReader::new(stdout).lines() {});
        let gateway: SocketAddr = GATEWAY.parse().expect("address");
        eventually_blocking("the gateway is ready on its default port", Duration::from_secs(60), || {
            let (status, _, _) = try_get(gateway, "/ready")?;
            (status == 200).then_some(())
        });
        Served(child)
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `blocking_get`, or `None` while nothing listens yet.
fn try_get(addr: SocketAddr, path: &str) -> Option<(u16, String, String)> {
    std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
    Some(blocking_get(addr, path, &[]))
}

#[test]
fn the_readme_quick_start_creates_an_admin_a_key_and_rotates_a_secret_through_the_gateway() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _served = Served::start(dir.path());
    let password = "quick-start-password-1";

    let mut bash = clean_command("bash", dir.path())
        .args(["-euo", "pipefail", "-c", &quickstart_script()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("bash");
    writeln!(bash.stdin.take().expect("stdin"), "{password}").expect("type the password");
    let output = bash.wait_with_output().expect("quick start runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "quick start failed:\n{stdout}\n{stderr}");
    assert!(!stdout.contains(password) && !stderr.contains(password), "the password is never echoed");

    // The activation answered with the recovery codes, and the step-up let the key through.
    let activated: Value = stdout
        .lines()
        .find_map(|line| {
            serde_json::from_str::<Value>(line).ok().filter(|v| v.get("recoveryCodes").is_some())
        })
        .expect("the activation's recovery codes were printed");
    assert_eq!(activated["recoveryCodes"].as_array().map(Vec::len), Some(10));
    // The last line is billing's secret set as billing itself reads it with its API key.
    let last: Value = serde_json::from_str(stdout.lines().last().expect("output")).expect("JSON");
    assert_eq!(last["service_name"], "billing");
    assert_eq!(last["version"], 2, "the rotation is what billing reads");
    let created: Value = stdout
        .lines()
        .find_map(|line| serde_json::from_str::<Value>(line).ok().filter(|v| v["version"] == 1))
        .expect("the created set (version 1) was printed");
    for name in ["JWT_SECRET", "DB_PASSWORD"] {
        assert_ne!(created["secrets"][name], last["secrets"][name], "{name} was regenerated");
    }
}
