//! The composition root: builds the platform, provisions, starts the selected roles and runs
//! until stopped. The command line and the tests both go through [`Application`]; nothing else
//! assembles fountain.

use std::sync::Arc;

use actix_web::web;

use crate::config::Config;
use crate::platform::events;
use crate::platform::role::{Provisioning, Role};
use crate::platform::server::{ExtraRoutes, Host, Listeners, Platform, ShutdownSignal};
use crate::roles;

/// Fills in what the role list implies and the configuration leaves out: where each role not
/// configured in `[peers]` is reached (`127.0.0.1` at its port).
pub fn with_role_defaults(mut config: Config) -> Config {
    for role in roles::ALL {
        let port = config.role_port(role.name(), role.default_port());
        config.peers.entry(role.name().to_string()).or_insert_with(|| format!("http://127.0.0.1:{port}"));
    }
    config
}

/// Checks the configuration against the role list: `[roles.<name>]` and `[peers]` name known
/// roles, every role accepts its own settings, and no two roles share a fixed port.
pub fn check_config(config: &Config) -> Result<(), String> {
    let known = roles::names().join(", ");
    for name in config.roles.keys() {
        if roles::find(name).is_none() {
            return Err(format!("roles.{name}: no such role (known: {known})"));
        }
    }
    let mut ports: Vec<(u16, &str)> = Vec::new();
    for role in roles::ALL {
        role.check_config(config).map_err(|e| format!("roles.{}: {e}", role.name()))?;
        let port = config.role_port(role.name(), role.default_port());
        if let Some((_, other)) = ports.iter().find(|(p, _)| *p == port && port != 0) {
            return Err(format!("roles.{}.port {port} is also the port of {other}", role.name()));
        }
        ports.push((port, role.name()));
    }
    Ok(())
}

/// The running fountain of this process.
pub struct Application {
    host: Host,
}

impl Application {
    /// Binds every selected role's port (nothing is served if one cannot be bound), opens the
    /// database and master key, catches the trust path up with kms's revocations, provisions an
    /// all-in-one process, and starts the roles. Call inside an actix system.
    pub async fn build(
        config: Config,
        selected: &[&'static dyn Role],
        extra: Option<ExtraRoutes>,
    ) -> Result<Application, String> {
        let config = with_role_defaults(config);
        check_config(&config)?;
        let listeners = Listeners::bind(config, selected).map_err(|e| e.to_string())?;
        let config = Arc::new(listeners.config.clone());
        let platform = blocking(move || Platform::open(config)).await?;
        log::info!(
            target: "fountain::server", backend = platform.db.backend().name(), database = platform.db.display();
            "database ready"
        );
        let opened = platform.clone();
        blocking(move || opened.verifier.revocations().catch_up(&opened.db).map_err(|e| e.to_string()))
            .await?;
        if serves_every_provisioner(selected) {
            let (provisioning, names) =
                (platform.clone(), selected.iter().map(|r| r.name()).collect::<Vec<_>>());
            let roles = selected.to_vec();
            blocking(move || provision(&provisioning, &roles, &names)).await?;
        }
        let host = Host::start(&platform, listeners, roles::ALL, extra).map_err(|e| e.to_string())?;
        let revocations = platform.verifier.revocations().clone();
        host.spawn("trust.revocations", revocations.follow(platform.db.clone(), host.shutdown_signal()));
        events::listen_across_processes(platform.db.clone(), host.shutdown_signal());
        Ok(Application { host })
    }

    /// Loads every role's secrets (one clear error if a role cannot), then follows rotations.
    pub async fn inject_secrets(&self) -> Result<(), String> {
        crate::platform::injection::start(self.host.platform(), &self.host.secret_handles()).await
    }

    pub fn host(&self) -> &Host {
        &self.host
    }

    pub fn platform(&self) -> &Platform {
        self.host.platform()
    }

    /// The address a role listens on (useful with port 0).
    pub fn addr(&self, role: &str) -> Option<std::net::SocketAddr> {
        self.host.addr(role)
    }

    /// Serves until SIGTERM or SIGINT, then drains and stops.
    pub async fn run_until_stopped(self, signal: ShutdownSignal) {
        self.host.run_until_signal(signal).await;
    }

    /// Stops every role and background task; `graceful` waits for in-flight requests.
    pub async fn stop(self, graceful: bool) {
        self.host.stop(graceful).await;
    }
}

/// Whether this process serves every role that provisions for others: then it is its own
/// bootstrap (the all-in-one case) and creates each role's credential and secret set.
fn serves_every_provisioner(selected: &[&'static dyn Role]) -> bool {
    let provisioners: Vec<&str> =
        roles::ALL.iter().filter(|r| r.provisions_for_others()).map(|r| r.name()).collect();
    !provisioners.is_empty() && provisioners.iter().all(|p| selected.iter().any(|r| r.name() == *p))
}

fn provision(
    platform: &Platform,
    selected: &[&'static dyn Role],
    names: &[&'static str],
) -> Result<(), String> {
    let provisioning = Provisioning { platform, roles: names };
    for role in selected {
        role.provision(&provisioning).map_err(|e| format!("role {} cannot provision: {e}", role.name()))?;
    }
    Ok(())
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    web::block(work).await.map_err(|e| e.to_string())?
}
