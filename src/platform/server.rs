//! The role host: one actix-web listener per selected role, all in one process, stopped together.
//!
//! Every role gets the same app shell (middleware, standard endpoints, error handling) and then
//! its own routes. Roles talk to each other over HTTP even when they share this process, exactly
//! as they do across containers.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::body::MessageBody;
use actix_web::dev::{ServerHandle, ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::middleware::from_fn;
use actix_web::{web, App, HttpResponse, HttpServer};

use super::crypto::{self, MasterKey};
use super::db::Db;
use super::error::{ApiError, ErrorCode};
use super::extract::{path_error, query_error, BodyLimit, BodyReadTimeout};
use super::guards::TrustedProxies;
use super::injection::SecretHandle;
use super::meta;
use super::metrics::RoleMetrics;
use super::middleware::Observability;
use super::role::{BackgroundTask, Mount, Readiness, Role, RoleContext};
use super::standard;
use super::trust::Verifier;
use crate::config::Config;

/// What every role of a process shares: configuration, database, master key and the one token
/// verifier.
#[derive(Clone)]
pub struct Platform {
    pub config: Arc<Config>,
    pub db: Db,
    pub master_key: Arc<MasterKey>,
    pub verifier: Arc<Verifier>,
}

impl Platform {
    /// Connects the database (with retry, running migrations) and loads the master key,
    /// refusing a key that does not match the data already sealed in this database. The
    /// verifier follows what this process commits from here on. Blocking: call before serving,
    /// or inside `web::block`.
    pub fn open(config: Arc<Config>) -> Result<Platform, String> {
        let db = Db::connect(&config).map_err(|e| e.to_string())?;
        let key_file = crypto::configured_key_file(&config.security.master_key_file);
        let master_key =
            MasterKey::load_or_create(key_file.as_deref(), &config.data.dir).map_err(|e| e.to_string())?;
        let mut conn = db.conn().map_err(|e| e.to_string())?;
        meta::ensure_master_key_matches(&mut conn, &master_key).map_err(|e| e.to_string())?;
        drop(conn);
        let db = db.with_audit_key(master_key.audit_chain_key());
        let verifier = Arc::new(Verifier::new(
            &config.security.token_issuer,
            &config.security.token_audience,
            &config.peer_url("kms").unwrap_or_default(),
        ));
        let revocations = verifier.revocations().clone();
        db.on_commit(Arc::new(move |events| revocations.apply(events)));
        Ok(Platform { config, db, master_key: Arc::new(master_key), verifier })
    }
}

/// What the standard endpoints of one role need.
pub struct Hosted {
    pub role: &'static dyn Role,
    pub db: Db,
    pub metrics: RoleMetrics,
    /// The role's OpenAPI document, rendered once at start.
    pub openapi_json: web::Bytes,
    pub readiness: Vec<Readiness>,
}

/// Extra routes mounted on every role after its own (used by embedding code and tests).
pub type ExtraRoutes = Arc<dyn Fn(&mut web::ServiceConfig) + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("role {role} cannot listen on {addr}: {reason}")]
    Bind { role: &'static str, addr: String, reason: String },
    #[error("role {role} cannot start: {reason}")]
    Setup { role: &'static str, reason: String },
    /// Several roles cannot listen: each is named.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Ports(Vec<HostError>),
}

/// The listeners of the selected roles, bound before anything else happens, and the
/// configuration with `peers` pointing at the addresses actually bound.
pub struct Listeners {
    bound: Vec<(&'static dyn Role, std::net::TcpListener)>,
    pub config: Config,
}

impl Listeners {
    /// Binds every selected role's listener. Every address is tried, so that one start names
    /// every port that cannot be bound; if any fails, nothing is served.
    pub fn bind(mut config: Config, roles: &[&'static dyn Role]) -> Result<Listeners, HostError> {
        let mut bound = Vec::with_capacity(roles.len());
        let mut failures = Vec::new();
        for role in roles {
            let addr = SocketAddr::new(
                config.role_host(role.name()),
                config.role_port(role.name(), role.default_port()),
            );
            match std::net::TcpListener::bind(addr) {
                Ok(listener) => bound.push((*role, listener)),
                Err(e) => failures.push(HostError::Bind {
                    role: role.name(),
                    addr: addr.to_string(),
                    reason: io_reason(&e),
                }),
            }
        }
        match failures.len() {
            0 => {}
            1 => return Err(failures.remove(0)),
            _ => return Err(HostError::Ports(failures)),
        }
        // Roles in this process reach each other at the addresses actually bound.
        for (role, listener) in &bound {
            if let Ok(addr) = listener.local_addr() {
                let host =
                    if addr.ip().is_unspecified() { "127.0.0.1".to_string() } else { addr.ip().to_string() };
                let host = if host.contains(':') { format!("[{host}]") } else { host };
                config.peers.insert(role.name().to_string(), format!("http://{host}:{}", addr.port()));
            }
        }
        Ok(Listeners { bound, config })
    }

    pub fn roles(&self) -> Vec<&'static dyn Role> {
        self.bound.iter().map(|(role, _)| *role).collect()
    }
}

struct RunningRole {
    role: &'static dyn Role,
    name: &'static str,
    secrets: Arc<SecretHandle>,
    addr: SocketAddr,
    handle: ServerHandle,
    task: actix_web::rt::task::JoinHandle<std::io::Result<()>>,
}

/// The running roles of this process.
pub struct Host {
    roles: Vec<RunningRole>,
    platform: Platform,
    shutdown: tokio::sync::watch::Sender<bool>,
    tasks: Arc<Mutex<Vec<BackgroundTask>>>,
}

impl Host {
    /// Starts every bound role: builds its state, then serves it on its listener. Call on the
    /// actix system's thread.
    pub fn start(
        platform: &Platform,
        listeners: Listeners,
        all_roles: &[&'static dyn Role],
        extra: Option<ExtraRoutes>,
    ) -> Result<Host, HostError> {
        let config = platform.config.clone();
        let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
        let tasks = Arc::new(Mutex::new(Vec::new()));
        let role_names: Arc<[&'static str]> = all_roles.iter().map(|r| r.name()).collect();
        let mut running = Vec::with_capacity(listeners.bound.len());
        for (role, listener) in listeners.bound {
            let setup = |reason: String| HostError::Setup { role: role.name(), reason };
            let metrics = RoleMetrics::new(role.name()).map_err(|e| setup(e.to_string()))?;
            let secrets = Arc::new(SecretHandle::new(metrics.registry()).map_err(|e| setup(e.to_string()))?);
            let context = RoleContext {
                role,
                config: config.clone(),
                db: platform.db.clone(),
                master_key: platform.master_key.clone(),
                verifier: platform.verifier.clone(),
                metrics: metrics.clone(),
                secrets: secrets.clone(),
                role_names: role_names.clone(),
                shutdown: shutdown_rx.clone(),
                tasks: tasks.clone(),
            };
            let mount = role.start(&context).map_err(setup)?;
            let openapi = standard::role_openapi(role).to_json().map_err(|e| setup(e.to_string()))?;
            let hosted = Arc::new(Hosted {
                role,
                db: platform.db.clone(),
                metrics,
                openapi_json: web::Bytes::from(openapi),
                readiness: mount.readiness.clone(),
            });
            let addr = listener.local_addr().map_err(|e| setup(e.to_string()))?;
            let shell = Shell { hosted, mount, verifier: platform.verifier.clone(), config: config.clone() };
            let extra = extra.clone();
            let server = HttpServer::new(move || build_app(&shell, extra.clone()))
                .workers(worker_count(&config))
                .shutdown_timeout(config.server.shutdown_timeout_seconds)
                .disable_signals()
                .listen(listener)
                .map_err(|e| HostError::Bind {
                    role: role.name(),
                    addr: addr.to_string(),
                    reason: io_reason(&e),
                })?
                .run();
            let handle = server.handle();
            let url = format!("http://{addr}");
            log::info!(
                target: "fountain::server", role = role.name(), addr = addr.to_string().as_str(), url = url.as_str();
                "role {} listening on {url}", role.name()
            );
            running.push(RunningRole {
                role,
                name: role.name(),
                secrets,
                addr,
                handle,
                task: actix_web::rt::spawn(server),
            });
        }
        Ok(Host { roles: running, platform: platform.clone(), shutdown: shutdown_tx, tasks })
    }

    /// The platform as the roles see it (peers filled in with the bound addresses).
    pub fn platform(&self) -> &Platform {
        &self.platform
    }

    /// Each running role's secret handle, for `injection::start`.
    pub fn secret_handles(&self) -> Vec<(&'static str, Arc<SecretHandle>)> {
        self.roles.iter().map(|r| (r.name, r.secrets.clone())).collect()
    }

    /// The address a role listens on (useful with port 0).
    pub fn addr(&self, role: &str) -> Option<SocketAddr> {
        self.roles.iter().find(|r| r.name == role).map(|r| r.addr)
    }

    /// The roles this host serves, in start order.
    pub fn roles(&self) -> Vec<&'static dyn Role> {
        self.roles.iter().map(|r| r.role).collect()
    }

    /// Each served role and the URL it answers at.
    pub fn urls(&self) -> Vec<(&'static str, String)> {
        self.roles.iter().map(|r| (r.name, format!("http://{}", r.addr))).collect()
    }

    /// Runs a platform task (not a role's) until it ends or the host stops.
    pub fn spawn(&self, name: &'static str, task: impl std::future::Future<Output = ()> + 'static) {
        super::role::spawn_until_stopped(&self.tasks, self.shutdown.subscribe(), "platform", name, task);
    }

    /// A watch that turns true when the host starts stopping.
    pub fn shutdown_signal(&self) -> tokio::sync::watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// Waits for SIGTERM or SIGINT, then drains in-flight requests and stops every role.
    pub async fn run_until_signal(self, mut signal: ShutdownSignal) {
        signal.received().await;
        log::info!(target: "fountain::server", "shutdown signal received; draining in-flight requests");
        self.stop(true).await;
        log::info!(target: "fountain::server", "all roles stopped");
    }

    /// Stops every role and its background tasks; `graceful` waits for in-flight requests up
    /// to the shutdown timeout.
    ///
    /// The order keeps a clean stop quiet: background tasks are told first and listeners stop
    /// accepting, then the tasks are awaited (a call one of them had just opened to a role of
    /// this process is served, not handed to a worker that is already gone — actix logs that as
    /// an error), and only then do the workers drain and stop.
    pub async fn stop(self, graceful: bool) {
        super::logging::stopping();
        let _ = self.shutdown.send(true);
        futures_util::future::join_all(self.roles.iter().map(|r| r.handle.pause())).await;
        self.await_background_tasks().await;
        let stops = self.roles.iter().map(|r| r.handle.stop(graceful));
        futures_util::future::join_all(stops).await;
        for role in self.roles {
            if let Ok(Err(err)) = role.task.await {
                log::warn!(target: "fountain::server", role = role.name; "role stopped with an error: {err}");
            }
        }
    }

    /// Waits for every background task to end, each at most the shutdown timeout.
    async fn await_background_tasks(&self) {
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        let limit = Duration::from_secs(self.platform.config.server.shutdown_timeout_seconds.max(1));
        for task in tasks {
            if actix_web::rt::time::timeout(limit, task.handle).await.is_err() {
                log::warn!(target: "fountain::server", task = task.name; "background task did not stop in time");
            }
        }
    }
}

/// What each worker's app is built from.
#[derive(Clone)]
struct Shell {
    hosted: Arc<Hosted>,
    mount: Mount,
    verifier: Arc<Verifier>,
    config: Arc<Config>,
}

/// The app shell every role shares, then the role's own routes, then `extra`.
fn build_app(
    shell: &Shell,
    extra: Option<ExtraRoutes>,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    // Per worker (apps are built on each worker's thread): the per-request handle is a plain
    // reference count, not the metrics' shared atomic ones.
    let observability =
        Rc::new(Observability { role: shell.hosted.role.name(), metrics: shell.hosted.metrics.clone() });
    let body_limit = usize::try_from(shell.config.server.body_limit_bytes).unwrap_or(usize::MAX);
    let routes = shell.mount.routes.clone();
    App::new()
        .app_data(web::Data::from(shell.hosted.clone()))
        .app_data(web::Data::from(shell.verifier.clone()))
        .app_data(TrustedProxies(shell.config.server.trusted_proxies.clone()))
        .app_data(BodyLimit(body_limit))
        .app_data(BodyReadTimeout(Duration::from_secs(shell.config.server.body_read_timeout_seconds.max(1))))
        .app_data(web::PayloadConfig::new(body_limit))
        .app_data(web::QueryConfig::default().error_handler(query_error))
        .app_data(web::PathConfig::default().error_handler(path_error))
        .wrap(from_fn(move |req, next| {
            let observability = observability.clone();
            async move { observability.handle(req, next).await }
        }))
        // Before the role's routes, so that a role may replace it (the gateway proxies there).
        .default_service(web::to(|| async {
            Err::<HttpResponse, _>(ApiError::from_code(ErrorCode::NotFound))
        }))
        .configure(standard::configure)
        .configure(|cfg| {
            if let Some(routes) = &routes {
                routes(cfg);
            }
        })
        .configure(|cfg| {
            if let Some(extra) = &extra {
                extra(cfg);
            }
        })
}

fn worker_count(config: &Config) -> usize {
    match config.server.workers {
        0 => std::thread::available_parallelism().map_or(1, usize::from),
        n => n,
    }
}

fn io_reason(err: &std::io::Error) -> String {
    match err.kind() {
        std::io::ErrorKind::AddrInUse => "address already in use".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        std::io::ErrorKind::AddrNotAvailable => "address not available on this host".into(),
        _ => err.to_string(),
    }
}

/// SIGTERM / SIGINT, listened for from the moment it is installed: install it before anything
/// slow happens at start, so an early SIGTERM is a clean stop rather than the default kill.
pub struct ShutdownSignal {
    #[cfg(unix)]
    terminate: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    interrupt: Option<tokio::signal::unix::Signal>,
}

impl ShutdownSignal {
    pub fn install() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Self {
                terminate: signal(SignalKind::terminate()).ok(),
                interrupt: signal(SignalKind::interrupt()).ok(),
            }
        }
        #[cfg(not(unix))]
        {
            Self {}
        }
    }

    /// Resolves when either signal arrives.
    pub async fn received(&mut self) {
        #[cfg(unix)]
        {
            async fn next(signal: &mut Option<tokio::signal::unix::Signal>) {
                match signal {
                    Some(signal) => {
                        signal.recv().await;
                    }
                    None => std::future::pending().await,
                }
            }
            tokio::select! {
                _ = next(&mut self.terminate) => {}
                _ = next(&mut self.interrupt) => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
