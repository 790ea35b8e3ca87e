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
/// configured in `[peers]` is reached (its own `host`, or `127.0.0.1`, at its port).
pub fn with_role_defaults(mut config: Config) -> Config {
    for role in roles::ALL {
        let port = config.role_port(role.name(), role.default_port());
        let host = match config.roles.get(role.name()).and_then(|r| r.host) {
            Some(own) if !own.is_unspecified() => std::net::SocketAddr::new(own, port).to_string(),
            _ => format!("127.0.0.1:{port}"),
        };
        config.peers.entry(role.name().to_string()).or_insert_with(|| format!("http://{host}"));
    }
    config
}

/// Checks the configuration against the role list: `[roles.<name>]` and `[peers]` name known
/// roles, every role accepts its own settings, and no two roles share a fixed port (every
/// clash is named at once, so one run shows everything to fix).
pub fn check_config(config: &Config) -> Result<(), String> {
    let known = roles::names().join(", ");
    for name in config.roles.keys() {
        if roles::find(name).is_none() {
            return Err(format!("roles.{name}: no such role (known: {known})"));
        }
    }
    for role in roles::ALL {
        role.check_config(config).map_err(|e| format!("roles.{}: {e}", role.name()))?;
    }
    port_clashes(config)
}

/// `port P is configured for a, b` for every fixed port more than one role is given on the
/// same address (roles with addresses of their own may share a port number).
fn port_clashes(config: &Config) -> Result<(), String> {
    let mut by_port: std::collections::BTreeMap<(std::net::IpAddr, u16), Vec<&str>> = Default::default();
    for role in roles::ALL {
        let port = config.role_port(role.name(), role.default_port());
        if port != 0 {
            by_port.entry((config.role_host(role.name()), port)).or_default().push(role.name());
        }
    }
    let clashes: Vec<String> = by_port
        .iter()
        .filter(|(_, names)| names.len() > 1)
        .map(|((_, port), names)| format!("port {port} is configured for {}", names.join(", ")))
        .collect();
    if clashes.is_empty() {
        Ok(())
    } else {
        Err(format!("{} (set roles.<role>.port)", clashes.join("; ")))
    }
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
        check_config(&config).map_err(|e| format!("invalid configuration: {e}"))?;
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

    /// Loads every role's secrets (one clear error if a role cannot), then follows rotations
    /// until the host stops.
    pub async fn inject_secrets(&self) -> Result<(), String> {
        crate::platform::injection::start(&self.host).await
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

    /// Announces that the roles are up (with the operator's next step, if any), serves until
    /// SIGTERM or SIGINT, then drains and stops.
    pub async fn run_until_stopped(self, signal: ShutdownSignal) {
        self.announce().await;
        self.host.run_until_signal(signal).await;
    }

    /// The start-up summary: one line with every role and its URL and, when a role waits for
    /// the operator (no admin yet, for instance), the next step as a command to run.
    pub async fn announce(&self) {
        let (roles, platform) = (self.host.roles(), self.host.platform().clone());
        let steps = blocking(move || Ok(roles.iter().filter_map(|r| r.next_step(&platform)).collect()))
            .await
            .unwrap_or_else(|_: String| Vec::new());
        let line = summary(&self.host.urls(), &steps);
        let roles = self.host.urls().iter().map(|(name, _)| *name).collect::<Vec<_>>().join(",");
        let next = steps.join("; ");
        log::info!(target: "fountain::server", roles = roles.as_str(), next_step = next.as_str(); "{line}");
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

/// `fountain is up: gateway http://…, kms http://… — next: …`.
fn summary(urls: &[(&str, String)], steps: &[String]) -> String {
    let up = urls.iter().map(|(name, url)| format!("{name} {url}")).collect::<Vec<_>>().join(", ");
    match steps {
        [] => format!("fountain is up: {up}"),
        steps => format!("fountain is up: {up} — next: {}", steps.join("; ")),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_role_with_its_own_address_is_reached_there_and_may_share_a_port_number() {
        let overrides = crate::config::Overrides::default();
        let mut config =
            Config::load_from(&overrides, figment::providers::Env::prefixed("FOUNTAIN_TEST_NONE_"))
                .expect("defaults load");
        for (role, host) in [("kms", "10.20.0.3"), ("notify", "10.20.0.4")] {
            let table = config.roles.entry(role.to_string()).or_default();
            table.host = Some(host.parse().unwrap());
            table.port = Some(8080);
        }
        let config = with_role_defaults(config);
        assert_eq!(config.peers["kms"], "http://10.20.0.3:8080");
        assert_eq!(config.peers["notify"], "http://10.20.0.4:8080");
        assert_eq!(config.peers["gateway"], "http://127.0.0.1:8000");
        port_clashes(&config).expect("different addresses");
    }

    #[test]
    fn the_summary_names_every_role_and_the_next_step() {
        let urls =
            [("gateway", "http://127.0.0.1:8000".to_string()), ("kms", "http://127.0.0.1:8003".into())];
        assert_eq!(
            summary(&urls, &[]),
            "fountain is up: gateway http://127.0.0.1:8000, kms http://127.0.0.1:8003"
        );
        assert_eq!(
            summary(&urls[1..], &["create the first admin: fountain admin create-user".into()]),
            "fountain is up: kms http://127.0.0.1:8003 — next: create the first admin: fountain admin create-user"
        );
    }
}
