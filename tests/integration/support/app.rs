//! The running roles of one test: the real role host on ephemeral ports over a fresh database,
//! with an HTTP client pointed at them. Tests reach the roles through the typed clients
//! (`app.kms()`, `app.secrets()`, … in `clients`); `call`, `get` and `post_raw` stay for requests
//! that are deliberately malformed or that no client method describes.

use std::net::SocketAddr;

use actix_web::web;
use fountain::app::Application;
use fountain::config::{Config, Overrides};
use fountain::platform::role::Role;
use fountain::platform::server::{ExtraRoutes, Platform};
use fountain::roles;
use serde_json::Value;

use super::{Backend, TestDatabase};

/// The password of every user the tests create.
pub const PASSWORD: &str = "correct horse battery";

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
    /// `root`'s step-up token, made once: a TOTP code is accepted once per step.
    stepped_up_admin: tokio::sync::OnceCell<String>,
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
        TestApp::from_application(application, database)
    }

    /// The test app around a started `application` over `database`.
    pub fn from_application(application: Application, database: TestDatabase) -> TestApp {
        TestApp {
            platform: application.platform().clone(),
            application: Some(application),
            client: test_client(),
            database,
            stepped_up_admin: tokio::sync::OnceCell::new(),
        }
    }

    /// Like `spawn_with`, then loads every role's secrets exactly as `fountain serve --role all`
    /// does (the all-in-one process provisioned their credentials and secret sets at start).
    pub async fn spawn_with_injection(backend: Backend, adjust: impl FnOnce(&mut Config)) -> TestApp {
        let app = Self::spawn_with(backend, adjust, None).await;
        app.application.as_ref().expect("running").inject_secrets().await.expect("secrets load");
        app
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

    /// The text of `role`'s Prometheus `/metrics`.
    pub async fn metrics(&self, role: &str) -> String {
        let (_, _, body) = self.get(role, "/metrics").await;
        String::from_utf8_lossy(&body).into_owned()
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

    /// The raw escape hatch: any method and path, an optional bearer token and JSON body, for
    /// requests no typed client describes (deliberately malformed input, probes across roles).
    /// Returns the status and the JSON answer (`null` when empty).
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

    /// Creates the admin `root` (as `fountain admin create-user` does), once per app.
    /// Creates the admin `root`, once: later calls find it there.
    pub fn create_admin(&self) {
        match fountain::roles::kms::create_user_offline(
            &self.platform,
            "root",
            PASSWORD,
            &["admin".to_string()],
        ) {
            Ok(_) => {}
            Err(e) if e.contains("already exists") => {}
            Err(e) => panic!("admin not created: {e}"),
        }
    }

    /// Creates `root` and returns its password token from kms: enough for reads, refused for
    /// privileged changes (they need a step-up).
    pub async fn admin_password_token(&self) -> String {
        self.create_admin();
        self.kms().login("root").await.access_token
    }

    /// `root`'s step-up token: `root` enrols a TOTP factor with twofa, activates it and steps
    /// up, as an operator does before privileged changes. Made once per app.
    pub async fn admin_token(&self) -> String {
        self.stepped_up_admin.get_or_init(|| self.step_up_admin()).await.clone()
    }

    async fn step_up_admin(&self) -> String {
        let password_token = self.admin_password_token().await;
        super::totp::away_from_a_step_edge();
        let enrollment = self.twofa().enroll(&password_token, None).await.ok();
        // Activation takes the previous step's code (within the ±1 step of skew), so that the
        // current step's code is still unused for the step-up itself.
        self.twofa().activate(&password_token, &super::totp::code(&enrollment.secret, -1)).await.ok();
        self.twofa()
            .verify(&password_token, &super::totp::code(&enrollment.secret, 0))
            .await
            .ok()
            .access_token
    }

    /// Creates an API key for `service` and exchanges it for a service token.
    pub async fn service_token(&self, admin: &str, service: &str) -> String {
        let key = self.kms().create_key(admin, service).await.ok().api_key;
        self.kms().exchange_key(&key).await.ok().access_token
    }

    pub async fn stop(mut self) {
        if let Some(application) = self.application.take() {
            application.stop(true).await;
        }
    }
}

/// The tests' HTTP client: no timeouts of its own, no redirects followed, and idle connections
/// dropped after 2 s — before the server's 5 s keep-alive closes them, so that a test pausing
/// (for a TOTP step, say) never sends on a connection the server has just closed.
fn test_client() -> awc::Client {
    let connector = awc::Connector::new().conn_keep_alive(std::time::Duration::from_secs(2));
    awc::Client::builder().connector(connector).disable_timeout().disable_redirects().finish()
}
