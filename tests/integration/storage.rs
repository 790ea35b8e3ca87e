//! A full disk under the database: a change is refused with 507 `insufficient_storage` (rolled
//! back whole, no internals in the answer), what was stored can still be read, and once space is
//! freed the same process takes changes again. The `fountain serve` child runs in its own user and
//! mount namespace (`unshare`) with its data directory on a small tmpfs: nothing is mounted on the
//! host and no privilege is needed there.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

use crate::support::process::install_with_admin;
use crate::support::{blocking_call as call, fountain_bin, ServeProcess, PASSWORD};

/// Mounts a tmpfs of `size` at `$1`, copies the installation in `$2` onto it, then becomes
/// the command that follows (so the child's pid is fountain's).
const MOUNT_AND_EXEC: &str = r#"mount -t tmpfs -o "size=$3,mode=0700" fountain-test "$1" && cp -a "$2"/. "$1"/ && shift 3 && exec "$@""#;

/// `fountain serve --role kms,notify` on `data`, a tmpfs of `size` that starts as a copy of the
/// installation in `installed`.
fn serve_on_tmpfs(data: &Path, installed: &Path, size: &str) -> ServeProcess {
    let mut command = Command::new("unshare");
    command.args(["--user", "--map-root-user", "--mount", "sh", "-c", MOUNT_AND_EXEC, "sh"]);
    command.arg(data).arg(installed).arg(size).arg(fountain_bin());
    command.arg("--data-dir").arg(data).args(["serve", "--role", "kms,notify"]);
    for (key, _) in std::env::vars() {
        if key.starts_with("FOUNTAIN_") || key == "DATABASE_URL" {
            command.env_remove(key);
        }
    }
    for role in fountain::roles::ALL {
        command.env(format!("FOUNTAIN_ROLES__{}__PORT", role.name().to_uppercase()), "0");
    }
    ServeProcess::from_command(command, &["kms", "notify"])
}

/// `path` inside the child's mount namespace, as seen from here.
fn inside(process: &ServeProcess, path: &Path) -> PathBuf {
    Path::new(&format!("/proc/{}/root", process.child.id())).join(path.strip_prefix("/").unwrap())
}

/// Writes zeros to `path` until the file system has no room left.
fn fill(path: &Path) {
    let mut file = std::fs::File::create(path).expect("ballast file");
    let block = vec![0u8; 64 * 1024];
    loop {
        if let Err(err) = file.write_all(&block) {
            assert_eq!(err.raw_os_error(), Some(28), "the ballast stops at ENOSPC: {err}");
            return;
        }
    }
}

fn published_ids(process: &ServeProcess, token: &str) -> Vec<i64> {
    let (status, listed) =
        call(process.addr("notify"), "GET", "/events?topic=disk.filler&limit=500", Some(token), None);
    assert_eq!(status, 200, "{listed}");
    listed["events"].as_array().unwrap().iter().map(|e| e["id"].as_i64().unwrap()).collect()
}

#[test]
fn a_full_disk_refuses_changes_with_507_and_the_same_process_takes_them_again_when_space_is_freed() {
    let dir = tempfile::tempdir().unwrap();
    let installed = dir.path().join("installed");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    install_with_admin(&installed, "root", &[]);
    let mut process = serve_on_tmpfs(&data, &installed, "8m");
    process.wait_for_message("fountain is up: ", std::time::Duration::from_secs(60));
    let (status, session) = call(
        process.addr("kms"),
        "POST",
        "/login",
        None,
        Some(json!({"username": "root", "password": PASSWORD})),
    );
    assert_eq!(status, 200, "{session}");
    let token = session["access_token"].as_str().unwrap().to_string();
    let event = json!({"topic": "disk.filler", "payload": {"pad": "x".repeat(60_000)}});
    let publish = || call(process.addr("notify"), "POST", "/events", Some(&token), Some(event.clone()));

    let (status, first) = publish();
    assert_eq!(status, 202, "{first}");
    let mut acknowledged = vec![first["id"].as_i64().unwrap()];
    let ballast = inside(&process, &data.join("ballast"));
    fill(&ballast);

    // Pages the database already holds may take a few more events; the first refusal is the
    // one under test.
    let refusal: Value = (0..200)
        .find_map(|_| match publish() {
            (202, answer) => {
                acknowledged.push(answer["id"].as_i64().unwrap());
                None
            }
            (status, answer) => Some(json!({"status": status, "body": answer})),
        })
        .expect("a publish is refused once the disk is full");
    assert_eq!(
        refusal,
        json!({"status": 507, "body": {
            "errorCode": "insufficient_storage",
            "message": "there is no room to store this change; nothing was written",
            "details": null
        }})
    );
    assert_eq!(published_ids(&process, &token), acknowledged, "what was acknowledged can still be read");

    std::fs::remove_file(&ballast).unwrap();
    let (status, after) = publish();
    assert_eq!(status, 202, "the same process stores changes again once there is room: {after}");
    acknowledged.push(after["id"].as_i64().unwrap());
    assert_eq!(published_ids(&process, &token), acknowledged);
    assert!(process.child.try_wait().unwrap().is_none(), "fountain kept running");
}
