//! The role host: one actix-web listener per selected role, all in one process, stopped together.
//!
//! Every role gets the same app shell (middleware, standard endpoints, error handling) and then
//! its own routes. Roles talk to each other over HTTP even when they share this process, exactly
//! as they do across containers.

use std::any::Any;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;

use actix_web::body::MessageBody;
use actix_web::dev::{ServerHandle, ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::middleware::from_fn;
use actix_web::{web, App, HttpResponse, HttpServer};

use super::crypto::{self, MasterKey};
use super::db::Db;
use super::error::{ApiError, ErrorCode};
use super::extract::{path_error, query_error, BodyLimit};
use super::injection::SecretHandle;
use super::meta;
use super::metrics::RoleMetrics;
use super::middleware::Observability;
use super::standard;
use crate::config::Config;
use crate::roles::RoleSpec;

/// What every role of a process shares: configuration, database and master key.
#[derive(Clone)]
pub struct Platform {
    pub config: Arc<Config>,
    pub db: Db,
    pub master_key: Arc<MasterKey>,
}

impl Platform {
    /// Connects the database (with retry, running migrations) and loads the master key,
    /// refusing a key that does not match the data already sealed in this database.
    /// Blocking: call before serving, or inside `web::block`.
    pub fn open(config: Arc<Config>) -> Result<Platform, String> {
        let db = Db::connect(&config).map_err(|e| e.to_string())?;
        let key_file = crypto::configured_key_file(&config.security.master_key_file);
        let master_key =
            MasterKey::load_or_create(key_file.as_deref(), &config.data.dir).map_err(|e| e.to_string())?;
        let mut conn = db.conn().map_err(|e| e.to_string())?;
        meta::ensure_master_key_matches(&mut conn, &master_key).map_err(|e| e.to_string())?;
        Ok(Platform { config, db, master_key: Arc::new(master_key) })
    }
}

/// State a role builds once per process and shares across its workers.
pub type RoleState = Arc<dyn Any + Send + Sync>;

/// What a role's handlers can reach: its identity, the platform, its metrics and state.
#[derive(Clone)]
pub struct RoleContext {
    pub spec: &'static RoleSpec,
    pub config: Arc<Config>,
    pub db: Db,
    pub master_key: Arc<MasterKey>,
    pub metrics: RoleMetrics,
    /// The role's OpenAPI document, rendered once at start.
    pub openapi_json: web::Bytes,
    /// What the role's `init` built, if anything.
    pub state: Option<RoleState>,
    /// The role's injected secrets (see `platform::injection`).
    pub secrets: Arc<SecretHandle>,
    /// Becomes true when the host starts stopping: long-lived responses (event streams) end
    /// themselves so that a graceful stop does not wait for them.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
}

impl RoleContext {
    pub fn new(
        spec: &'static RoleSpec,
        platform: &Platform,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Result<Self, HostError> {
        let setup = |reason: String| HostError::Setup { role: spec.name, reason };
        let metrics = RoleMetrics::new(spec.name).map_err(|e| setup(e.to_string()))?;
        let openapi = standard::role_openapi(spec).to_json().map_err(|e| setup(e.to_string()))?;
        let metrics_registry = metrics.registry().clone();
        let metrics_registry = &metrics_registry;
        let mut context = Self {
            spec,
            config: platform.config.clone(),
            db: platform.db.clone(),
            master_key: platform.master_key.clone(),
            metrics,
            openapi_json: web::Bytes::from(openapi),
            state: None,
            secrets: Arc::new(SecretHandle::new(metrics_registry).map_err(|e| setup(e.to_string()))?),
            shutdown,
        };
        context.state = (spec.init)(&context).map_err(setup)?;
        Ok(context)
    }

    /// The role's state as its concrete type.
    pub fn state<T: Any + Send + Sync>(&self) -> Option<Arc<T>> {
        self.state.clone()?.downcast::<T>().ok()
    }
}

/// Extra routes mounted on every role after its own (used by embedding code and tests).
pub type ExtraRoutes = Arc<dyn Fn(&mut web::ServiceConfig) + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("role {role} cannot listen on {addr}: {reason}")]
    Bind { role: &'static str, addr: String, reason: String },
    #[error("role {role} cannot start: {reason}")]
    Setup { role: &'static str, reason: String },
}

struct RunningRole {
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
}

impl Host {
    /// Binds every selected role's listener first, then starts serving: if any address cannot
    /// be bound, nothing is served and the error names the role and the address.
    pub fn start(
        platform: &Platform,
        roles: &[&'static RoleSpec],
        extra: Option<ExtraRoutes>,
    ) -> Result<Host, HostError> {
        let config = platform.config.clone();
        let mut listeners = Vec::with_capacity(roles.len());
        for spec in roles {
            let addr = SocketAddr::new(config.server.host, config.role_port(spec.name, spec.default_port));
            let listener = std::net::TcpListener::bind(addr).map_err(|e| HostError::Bind {
                role: spec.name,
                addr: addr.to_string(),
                reason: io_reason(&e),
            })?;
            listeners.push((spec, listener));
        }
        // Roles in this process reach each other at the addresses actually bound.
        let mut config = (*config).clone();
        for (spec, listener) in &listeners {
            if let Ok(addr) = listener.local_addr() {
                let host =
                    if addr.ip().is_unspecified() { "127.0.0.1".to_string() } else { addr.ip().to_string() };
                let host = if host.contains(':') { format!("[{host}]") } else { host };
                config.peers.insert(spec.name.to_string(), format!("http://{host}:{}", addr.port()));
            }
        }
        let config = Arc::new(config);
        let platform = &Platform { config: config.clone(), ..platform.clone() };
        let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
        let mut running = Vec::with_capacity(listeners.len());
        for (spec, listener) in listeners {
            let context = RoleContext::new(spec, platform, shutdown_rx.clone())?;
            let secrets = context.secrets.clone();
            let addr = listener
                .local_addr()
                .map_err(|e| HostError::Setup { role: spec.name, reason: e.to_string() })?;
            let extra = extra.clone();
            let server = HttpServer::new(move || build_app(context.clone(), extra.clone()))
                .workers(worker_count(&config))
                .shutdown_timeout(config.server.shutdown_timeout_seconds)
                .disable_signals()
                .listen(listener)
                .map_err(|e| HostError::Bind {
                    role: spec.name,
                    addr: addr.to_string(),
                    reason: io_reason(&e),
                })?
                .run();
            let handle = server.handle();
            log::info!(
                target: "fountain::server", role = spec.name, addr = addr.to_string().as_str();
                "role {} listening on http://{addr}", spec.name
            );
            running.push(RunningRole {
                name: spec.name,
                secrets,
                addr,
                handle,
                task: actix_web::rt::spawn(server),
            });
        }
        Ok(Host { roles: running, platform: platform.clone(), shutdown: shutdown_tx })
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

    /// Waits for SIGTERM or SIGINT, then drains in-flight requests and stops every role.
    pub async fn run_until_signal(self, mut signal: ShutdownSignal) {
        signal.received().await;
        log::info!(target: "fountain::server", "shutdown signal received; draining in-flight requests");
        self.stop(true).await;
        log::info!(target: "fountain::server", "all roles stopped");
    }

    /// Stops every role; `graceful` waits for in-flight requests up to the shutdown timeout.
    pub async fn stop(self, graceful: bool) {
        let _ = self.shutdown.send(true);
        let stops = self.roles.iter().map(|r| r.handle.stop(graceful));
        futures_util::future::join_all(stops).await;
        for role in self.roles {
            if let Ok(Err(err)) = role.task.await {
                log::warn!(target: "fountain::server", role = role.name; "role stopped with an error: {err}");
            }
        }
    }
}

/// The app shell every role shares, then the role's own routes, then `extra`.
fn build_app(
    context: RoleContext,
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
    let observability = Rc::new(Observability { role: context.spec.name, metrics: context.metrics.clone() });
    let body_limit = usize::try_from(context.config.server.body_limit_bytes).unwrap_or(usize::MAX);
    let spec = context.spec;
    App::new()
        .app_data(web::Data::new(context.clone()))
        .app_data(BodyLimit(body_limit))
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
        .configure(|cfg| (spec.routes)(cfg, &context))
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
