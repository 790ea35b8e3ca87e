//! Test harness: the real role host on ephemeral ports over a fresh SQLite file or a fresh
//! PostgreSQL database, plus helpers to run the built binary as a child process.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::web;
use diesel::connection::SimpleConnection;
use diesel::{Connection, PgConnection};
use fountain::app::Application;
use fountain::config::{Config, Overrides};
use fountain::platform::role::Role;
use fountain::platform::server::{ExtraRoutes, Platform};
use fountain::roles;
use serde_json::Value;

/// The password of every user the tests create.
pub const PASSWORD: &str = "correct horse battery";

/// Where the test PostgreSQL server is; each test run creates its own databases in it.
pub fn pg_admin_url() -> String {
    std::env::var("FOUNTAIN_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A database created for one test and dropped after it.
pub struct TestDatabase {
    pub url: String,
    pg_name: Option<String>,
    pub dir: tempfile::TempDir,
}

impl TestDatabase {
    pub fn create(backend: Backend) -> TestDatabase {
        let dir = tempfile::tempdir().expect("temp dir");
        match backend {
            Backend::Sqlite => {
                let url = format!("sqlite://{}", dir.path().join("fountain.db").display());
                TestDatabase { url, pg_name: None, dir }
            }
            Backend::Postgres => {
                let name = format!("fountain_test_{}", uuid::Uuid::new_v4().simple());
                let mut admin = PgConnection::establish(&pg_admin_url())
                    .expect("PostgreSQL must be running for the PostgreSQL tests (see .ci/run)");
                admin.batch_execute(&format!("CREATE DATABASE {name}")).expect("create test database");
                let base = pg_admin_url();
                let url = format!("{}/{name}", base.rsplit_once('/').expect("admin url has a database").0);
                TestDatabase { url, pg_name: Some(name), dir }
            }
        }
    }

    /// The SQLite file, for tests that inspect what is stored at rest.
    pub fn sqlite_path(&self) -> Option<PathBuf> {
        self.url.strip_prefix("sqlite://").map(PathBuf::from)
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Some(name) = &self.pg_name {
            if let Ok(mut admin) = PgConnection::establish(&pg_admin_url()) {
                let _ = admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
            }
        }
    }
}

/// A configuration for tests: every role on port 0, the given database, quiet logs.
pub fn test_config(database: &TestDatabase) -> Config {
    let overrides = Overrides { file: None, data_dir: Some(database.dir.path().join("data")) };
    let mut config = Config::load_from(&overrides, figment::providers::Env::prefixed("FOUNTAIN_TEST_NONE_"))
        .expect("test config loads");
    config.database.url = database.url.clone();
    config.database.connect_attempts = 3;
    config.database.connect_timeout_seconds = 2;
    config.server.workers = 1;
    config.server.body_limit_bytes = 64 * 1024;
    config.server.shutdown_timeout_seconds = 5;
    config.set_role_setting("kms", "bcrypt_cost", 4);
    for role in roles::ALL {
        config.roles.entry(role.name().to_string()).or_default().port = Some(0);
    }
    config
}

/// The running roles of one test, with a client pointed at them.
pub struct TestApp {
    pub application: Option<Application>,
    pub platform: Platform,
    pub client: awc::Client,
    pub database: TestDatabase,
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> TestApp {
        Self::spawn_with(backend, |_| {}, None).await
    }

    /// Starts every role with `adjust` applied to the config and `extra` routes mounted.
    pub async fn spawn_with(
        backend: Backend,
        adjust: impl FnOnce(&mut Config),
        extra: Option<ExtraRoutes>,
    ) -> TestApp {
        Self::spawn_roles(backend, roles::ALL, adjust, extra).await
    }

    /// Starts only `selected` through the composition root, as `fountain serve --role` does.
    pub async fn spawn_roles(
        backend: Backend,
        selected: &[&'static dyn Role],
        adjust: impl FnOnce(&mut Config),
        extra: Option<ExtraRoutes>,
    ) -> TestApp {
        let database = TestDatabase::create(backend);
        let mut config = test_config(&database);
        adjust(&mut config);
        let application = Application::build(config, selected, extra).await.expect("roles start");
        TestApp {
            platform: application.platform().clone(),
            application: Some(application),
            client: awc::Client::builder().disable_timeout().disable_redirects().finish(),
            database,
        }
    }

    pub fn addr(&self, role: &str) -> SocketAddr {
        self.application
            .as_ref()
            .and_then(|a| a.addr(role))
            .unwrap_or_else(|| panic!("role {role} is not running"))
    }

    pub fn url(&self, role: &str, path: &str) -> String {
        format!("http://{}{path}", self.addr(role))
    }

    pub async fn get(&self, role: &str, path: &str) -> (u16, awc::http::header::HeaderMap, web::Bytes) {
        let mut response = self.client.get(self.url(role, path)).send().await.expect("request sent");
        let body = response.body().limit(8 << 20).await.expect("body read");
        (response.status().as_u16(), response.headers().clone(), body)
    }

    pub async fn get_json(&self, role: &str, path: &str) -> (u16, Value) {
        let (status, _, body) = self.get(role, path).await;
        (
            status,
            serde_json::from_slice(&body).unwrap_or_else(|_| panic!("{path} returned non-JSON: {body:?}")),
        )
    }

    /// Sends `body` as-is with the given content type; returns status and the JSON answer.
    pub async fn post_raw(&self, role: &str, path: &str, content_type: &str, body: Vec<u8>) -> (u16, Value) {
        let mut response = self
            .client
            .post(self.url(role, path))
            .insert_header(("content-type", content_type))
            .send_body(body)
            .await
            .expect("request sent");
        let body = response.body().limit(8 << 20).await.expect("body read");
        let json =
            serde_json::from_slice(&body).unwrap_or_else(|_| panic!("{path} returned non-JSON: {body:?}"));
        (response.status().as_u16(), json)
    }

    /// Sends a request with an optional bearer token and JSON body; returns status and JSON.
    pub async fn call(
        &self,
        method: &str,
        role: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let method = awc::http::Method::from_bytes(method.as_bytes()).expect("method");
        let mut request = self.client.request(method, self.url(role, path));
        if let Some(token) = token {
            request = request.insert_header(("authorization", format!("Bearer {token}")));
        }
        let mut response = match body {
            Some(body) => request.send_json(&body).await,
            None => request.send().await,
        }
        .expect("request sent");
        let bytes = response.body().limit(8 << 20).await.expect("body read");
        let json =
            if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).expect("JSON answer") };
        (response.status().as_u16(), json)
    }

    /// Like `spawn_with`, then loads every role's secrets exactly as `fountain serve --role all`
    /// does (the all-in-one process provisioned their credentials and secret sets at start).
    pub async fn spawn_with_injection(backend: Backend, adjust: impl FnOnce(&mut Config)) -> TestApp {
        let app = Self::spawn_with(backend, adjust, None).await;
        app.application.as_ref().expect("running").inject_secrets().await.expect("secrets load");
        app
    }

    /// Creates the admin `root` (as `fountain admin create-user` does), once per app.
    pub fn create_admin(&self) {
        fountain::roles::kms::create_user_offline(&self.platform, "root", PASSWORD, &["admin".to_string()])
            .expect("admin created");
    }

    /// Logs `username` in at `path` of `role` (kms itself, or the gateway's `/kms/login`).
    pub async fn login(&self, role: &str, path: &str, username: &str) -> String {
        let body = serde_json::json!({"username": username, "password": PASSWORD});
        let (status, session) = self.call("POST", role, path, None, Some(body)).await;
        assert_eq!(status, 200, "login of {username} at {role}{path}: {session}");
        session["access_token"].as_str().expect("access token").to_string()
    }

    /// Creates `root` and returns its access token from kms.
    pub async fn admin_token(&self) -> String {
        self.create_admin();
        self.login("kms", "/login", "root").await
    }

    /// Creates an API key for `service` and exchanges it for a service token.
    pub async fn service_token(&self, admin: &str, service: &str) -> String {
        let (status, key) = self
            .call("POST", "kms", "/keys", Some(admin), Some(serde_json::json!({"service_name": service})))
            .await;
        assert_eq!(status, 201, "{key}");
        let body = serde_json::json!({"grant_type": "client_credentials", "client_secret": key["api_key"]});
        let (status, token) = self.call("POST", "kms", "/token", None, Some(body)).await;
        assert_eq!(status, 200, "{token}");
        token["access_token"].as_str().expect("service token").to_string()
    }

    pub async fn stop(mut self) {
        if let Some(application) = self.application.take() {
            application.stop(true).await;
        }
    }
}

/// Asserts that none of `secrets` is stored in plaintext: not in the SQLite file or its WAL,
/// not in any row of `pg_tables` on PostgreSQL.
pub fn assert_not_at_rest(app: &TestApp, pg_tables: &[&str], secrets: &[&str]) {
    match app.database.sqlite_path() {
        Some(path) => {
            for file in [path.clone(), path.with_extension("db-wal")] {
                let bytes = std::fs::read(&file).unwrap_or_default();
                for secret in secrets {
                    let found = bytes.windows(secret.len()).any(|w| w == secret.as_bytes());
                    assert!(!found, "a secret is stored in plaintext in {}", file.display());
                }
            }
        }
        None => {
            use diesel::RunQueryDsl;
            #[derive(diesel::QueryableByName)]
            struct Dump {
                #[diesel(sql_type = diesel::sql_types::Text)]
                row: String,
            }
            let mut conn = PgConnection::establish(&app.database.url).expect("test database");
            for table in pg_tables {
                let rows: Vec<Dump> = diesel::sql_query(format!("SELECT t::text AS row FROM {table} t"))
                    .load(&mut conn)
                    .expect("table dump");
                for row in rows {
                    for secret in secrets {
                        assert!(!row.row.contains(secret), "a secret is stored in plaintext in {table}");
                    }
                }
            }
        }
    }
}

/// Asserts the standard error shape and returns the error code.
pub fn assert_error_shape(body: &Value) -> String {
    let code = body["errorCode"].as_str().unwrap_or_else(|| panic!("no errorCode in {body}"));
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "no message in {body}");
    assert!(body.get("details").is_some(), "no details in {body}");
    code.to_string()
}

// ---- the built binary as a child process ----

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
    pub addrs: std::collections::HashMap<String, SocketAddr>,
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
        let mut child =
            command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn fountain");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut addrs = std::collections::HashMap::new();
        let mut log_lines = Vec::new();
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
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                let mut rest = String::new();
                let _ = self.stdout.read_to_string(&mut rest);
                let mut lines = std::mem::take(&mut self.log_lines);
                lines.extend(rest.lines().map(str::to_string));
                return (status.code(), lines);
            }
            assert!(Instant::now() < deadline, "fountain did not exit within {limit:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
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

/// Runs an async test body once on SQLite and once on PostgreSQL, as two named tests.
#[macro_export]
macro_rules! on_both_backends {
    ($name:ident) => {
        mod $name {
            #[actix_web::test]
            async fn sqlite() {
                super::$name($crate::helpers::Backend::Sqlite).await
            }
            #[actix_web::test]
            async fn postgres() {
                super::$name($crate::helpers::Backend::Postgres).await
            }
        }
    };
}

// ---- a webhook subscriber ----

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use actix_web::{App, HttpRequest, HttpResponse, HttpServer};

/// A webhook receiver on an ephemeral port that records what it gets and can be told to fail.
pub struct Subscriber {
    pub url: String,
    pub received: Arc<Mutex<Vec<(actix_web::http::header::HeaderMap, String)>>>,
    pub failing: Arc<AtomicBool>,
    pub handle: actix_web::dev::ServerHandle,
}

impl Subscriber {
    pub fn start() -> Subscriber {
        let received = Arc::new(Mutex::new(Vec::new()));
        let failing = Arc::new(AtomicBool::new(false));
        let (r, f) = (received.clone(), failing.clone());
        let server = HttpServer::new(move || {
            let (r, f) = (r.clone(), f.clone());
            App::new().default_service(web::to(move |req: HttpRequest, body: String| {
                let (r, f) = (r.clone(), f.clone());
                async move {
                    r.lock().unwrap().push((req.headers().clone(), body));
                    if f.load(Ordering::SeqCst) {
                        HttpResponse::ServiceUnavailable().finish()
                    } else {
                        HttpResponse::NoContent().finish()
                    }
                }
            }))
        })
        .workers(1)
        .disable_signals()
        .bind("127.0.0.1:0")
        .unwrap();
        let addr = server.addrs()[0];
        let server = server.run();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        Subscriber { url: format!("http://{addr}/hook"), received, failing, handle }
    }

    pub fn bodies_for(&self, topic: &str) -> Vec<Value> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .map(|(_, body)| serde_json::from_str::<Value>(body).unwrap())
            .filter(|b| b["topic"] == topic)
            .collect()
    }

    pub async fn wait_for(&self, topic: &str, count: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let got = self.bodies_for(topic);
            if got.len() >= count {
                return got;
            }
            assert!(Instant::now() < deadline, "{topic}: {} of {count} deliveries arrived", got.len());
            actix_web::rt::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn raw_token(header: Value, claims: Value, signature: &[u8]) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        URL_SAFE_NO_PAD.encode(signature)
    )
}

/// Tokens an attacker can make without kms's private key: `alg: none` (with and without the real
/// kid), HS256 keyed with the published public key, a foreign Ed25519 key under the real kid and
/// under an unknown one, a tampered real token, and garbage. Also checks the JWKS's shape.
pub async fn forged_tokens(app: &TestApp, real_token: &str) -> Vec<String> {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use serde_json::json;
    let (_, jwks) = app.call("GET", "kms", "/.well-known/jwks.json", None, None).await;
    let jwk = &jwks["keys"][0];
    assert_eq!(
        (jwk["kty"].as_str(), jwk["crv"].as_str(), jwk["alg"].as_str()),
        (Some("OKP"), Some("Ed25519"), Some("EdDSA"))
    );
    assert_eq!(jwk["use"], "sig");
    let kid = jwk["kid"].as_str().unwrap();
    let public = URL_SAFE_NO_PAD.decode(jwk["x"].as_str().unwrap()).unwrap();
    let now = chrono::Utc::now().timestamp();
    let claims = json!({"sub": "root", "roles": ["admin"], "iss": "fountain-kms", "aud": "fountain",
                        "exp": now + 600, "iat": now, "nbf": now, "jti": "forged"});
    let hs256_with_public_key = jsonwebtoken::encode(
        &jsonwebtoken::Header {
            kid: Some(kid.into()),
            ..jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256)
        },
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(&public),
    )
    .unwrap();
    let other_key = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
    let other_der = ed25519_dalek::pkcs8::EncodePrivateKey::to_pkcs8_der(&other_key).unwrap();
    let sign_with_other = |kid: &str| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header {
                kid: Some(kid.into()),
                ..jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA)
            },
            &claims,
            &jsonwebtoken::EncodingKey::from_ed_der(other_der.as_bytes()),
        )
        .unwrap()
    };
    let mut tampered = real_token.to_string();
    tampered.insert(real_token.find('.').unwrap() + 2, 'x');
    vec![
        raw_token(json!({"alg": "none", "typ": "JWT", "kid": kid}), claims.clone(), b""),
        raw_token(json!({"alg": "none", "typ": "JWT"}), claims.clone(), b""),
        hs256_with_public_key,
        sign_with_other(kid),
        sign_with_other("unknown-kid"),
        tampered,
        "not-a-token".to_string(),
    ]
}
