//! The role contract: what a role tells the host, and what the host gives a role.
//!
//! A role is a folder under `src/roles/`, one line in `roles::ALL`, a Cargo feature and a
//! migration pair. Its [`Role`] implementation names it, validates its own configuration,
//! describes its API, provisions what it owns for an all-in-one process, and on start builds its
//! typed state, spawns its background tasks (stopped on shutdown) and returns its routes and
//! readiness checks as a [`Mount`]. The host never needs to know a role's types.

use std::future::Future;
use std::sync::{Arc, Mutex};

use actix_web::web;
use futures_util::future::LocalBoxFuture;

use super::crypto::MasterKey;
use super::db::Db;
use super::injection::SecretHandle;
use super::metrics::RoleMetrics;
use super::server::Platform;
use super::trust::Verifier;
use crate::config::Config;

/// Who a role is: what the landing page, the OpenAPI `info`, metrics and the port table say.
#[derive(Debug)]
pub struct About {
    /// The `--role` name, also the metrics `role` label and the `[roles.<name>]` config key.
    pub name: &'static str,
    /// Human title shown on the landing page and in the OpenAPI `info`.
    pub title: &'static str,
    /// One-line description (≤300 characters, as the ecosystem contract requires).
    pub description: &'static str,
    pub default_port: u16,
}

/// What every role implements.
pub trait Role: Sync + 'static {
    fn about(&self) -> &'static About;

    fn name(&self) -> &'static str {
        self.about().name
    }

    fn title(&self) -> &'static str {
        self.about().title
    }

    fn description(&self) -> &'static str {
        self.about().description
    }

    fn default_port(&self) -> u16 {
        self.about().default_port
    }

    /// The OpenAPI document of the role's own endpoints (the standard ones are merged in).
    fn openapi(&self) -> utoipa::openapi::OpenApi {
        utoipa::openapi::OpenApiBuilder::new().build()
    }

    /// Checks the role's own settings; `fountain config check` and every start call it.
    fn check_config(&self, _config: &Config) -> Result<(), String> {
        Ok(())
    }

    /// Whether this role provisions for the other roles of its process (kms: their service
    /// credentials; secrets: their secret sets). A process that serves every such role
    /// provisions itself at start (the all-in-one bootstrap).
    fn provisions_for_others(&self) -> bool {
        false
    }

    /// Creates what this role owns for the roles of an all-in-one process. Blocking; runs once
    /// before anything serves.
    fn provision(&self, _provisioning: &Provisioning<'_>) -> Result<(), String> {
        Ok(())
    }

    /// Builds the role's state and background tasks; returns what the host mounts. Runs once
    /// per process, on the host's thread, before the role's listener serves.
    fn start(&self, _ctx: &RoleContext) -> Result<Mount, String> {
        Ok(Mount::default())
    }

    /// What the operator should do next, if this role is waiting for something only a person
    /// can do (kms: create the first admin). Printed in the start-up summary as one sentence
    /// with the exact command. Blocking (it may read the database); runs once every role serves.
    fn next_step(&self, _platform: &Platform) -> Option<String> {
        None
    }
}

impl std::fmt::Debug for dyn Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Role").field("name", &self.name()).field("port", &self.default_port()).finish()
    }
}

/// What a process that serves several roles asks each role to provision.
pub struct Provisioning<'a> {
    pub platform: &'a Platform,
    /// The roles this process serves.
    pub roles: &'a [&'static str],
}

impl Provisioning<'_> {
    /// Stores a role's service credential where that role reads it at start (mode 0600);
    /// an existing file is kept.
    pub fn store_credential(&self, role: &str, api_key: &str) -> Result<(), String> {
        let path = super::injection::credential_path(&self.platform.config, role);
        if path.exists() {
            return Ok(());
        }
        super::fs::write_private_file(&path, api_key)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))
    }

    /// Whether the credential of `role` is already stored.
    pub fn has_credential(&self, role: &str) -> bool {
        super::injection::credential_path(&self.platform.config, role).exists()
    }
}

type RouteFn = dyn Fn(&mut web::ServiceConfig) + Send + Sync;
type CheckFn = dyn Fn() -> LocalBoxFuture<'static, Result<(), String>> + Send + Sync;

/// A readiness check: `/ready` answers 503 naming the first part whose check fails.
#[derive(Clone)]
pub struct Readiness {
    pub name: &'static str,
    pub check: Arc<CheckFn>,
}

/// What a started role hands the host: its routes (registered on every worker) and its
/// readiness checks (merged into `/ready`).
#[derive(Clone, Default)]
pub struct Mount {
    pub(crate) routes: Option<Arc<RouteFn>>,
    pub(crate) readiness: Vec<Readiness>,
}

impl Mount {
    /// Routes registered on each worker's app. Register the role's typed state here as
    /// `web::Data` (built once in `start`, shared by every worker).
    pub fn routes(routes: impl Fn(&mut web::ServiceConfig) + Send + Sync + 'static) -> Self {
        Self { routes: Some(Arc::new(routes)), readiness: Vec::new() }
    }

    /// Adds a readiness check named `name`.
    pub fn ready_when<F, Fut>(mut self, name: &'static str, check: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + 'static,
    {
        self.readiness.push(Readiness { name, check: Arc::new(move || Box::pin(check())) });
        self
    }
}

/// What a role's `start` can reach: the platform, its own metrics and injected secrets, the
/// process's one token verifier, and a way to run background tasks that stop on shutdown.
#[derive(Clone)]
pub struct RoleContext {
    pub role: &'static dyn Role,
    pub config: Arc<Config>,
    pub db: Db,
    pub master_key: Arc<MasterKey>,
    pub verifier: Arc<Verifier>,
    pub metrics: RoleMetrics,
    /// The role's injected secrets (see `platform::injection`).
    pub secrets: Arc<SecretHandle>,
    /// Every role compiled into this binary (the gateway forwards credentials to them).
    pub role_names: Arc<[&'static str]>,
    /// Becomes true when the host starts stopping: long-lived responses (event streams) end
    /// themselves so that a graceful stop does not wait for them.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
    pub(crate) tasks: Arc<Mutex<Vec<BackgroundTask>>>,
}

pub(crate) struct BackgroundTask {
    pub name: &'static str,
    pub handle: actix_web::rt::task::JoinHandle<()>,
}

/// Spawns `task` on the host's thread, ended when `shutdown` turns true, and records it in
/// `tasks` so that the host can wait for it.
pub(crate) fn spawn_until_stopped(
    tasks: &Mutex<Vec<BackgroundTask>>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
    owner: &'static str,
    name: &'static str,
    task: impl Future<Output = ()> + 'static,
) {
    let handle = actix_web::rt::spawn(async move {
        tokio::select! {
            _ = task => {}
            _ = shutdown.wait_for(|stopping| *stopping) => {}
        }
        log::debug!(target: "fountain::server", owner = owner, task = name; "background task stopped");
    });
    tasks.lock().unwrap_or_else(|e| e.into_inner()).push(BackgroundTask { name, handle });
}

impl RoleContext {
    /// Runs `task` in the background until it ends or the host stops, whichever comes first;
    /// the host waits for it on shutdown.
    pub fn spawn(&self, name: &'static str, task: impl Future<Output = ()> + 'static) {
        spawn_until_stopped(&self.tasks, self.shutdown.clone(), self.role.name(), name, task);
    }

    /// The client addresses whose forwarding headers are believed.
    pub fn trusted_proxies(&self) -> Vec<std::net::IpAddr> {
        self.config.server.trusted_proxies.clone()
    }
}
