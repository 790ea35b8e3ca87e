//! What the notify role builds once per process and its handlers and delivery worker share:
//! configuration, database, master key, metrics. Tokens are checked by the guards, through the
//! process's verifier.

use std::sync::Arc;

use prometheus::{IntCounter, IntCounterVec, Opts};

use super::config::NotifyConfig;
use crate::platform::crypto::MasterKey;
use crate::platform::db::Db;
use crate::platform::role::RoleContext;

pub struct NotifyState {
    pub config: NotifyConfig,
    pub db: Db,
    pub master_key: Arc<MasterKey>,
    pub metrics: NotifyMetrics,
    /// `host:port` forms under which this notify instance is reachable: callbacks may not
    /// point here (a subscription must not make notify call itself).
    pub own_authorities: Vec<String>,
    /// Ends event streams when the host stops.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
}

pub struct NotifyMetrics {
    pub published: IntCounter,
    pub fanned_out: IntCounter,
    pub deliveries: IntCounterVec,
}

impl NotifyMetrics {
    fn register(registry: &prometheus::Registry) -> Result<Self, prometheus::Error> {
        let published = IntCounter::new("notify_events_published_total", "Events accepted by POST /events")?;
        let fanned_out = IntCounter::new("notify_deliveries_created_total", "Deliveries created by fan-out")?;
        let deliveries = IntCounterVec::new(
            Opts::new("notify_delivery_attempts_total", "Webhook delivery attempts by outcome"),
            &["outcome"],
        )?;
        registry.register(Box::new(published.clone()))?;
        registry.register(Box::new(fanned_out.clone()))?;
        registry.register(Box::new(deliveries.clone()))?;
        Ok(Self { published, fanned_out, deliveries })
    }
}

pub fn init(ctx: &RoleContext) -> Result<NotifyState, String> {
    let metrics = NotifyMetrics::register(ctx.metrics.registry()).map_err(|e| e.to_string())?;
    let own_authorities = own_authorities(ctx);
    Ok(NotifyState {
        config: ctx.config.role_settings(ctx.role.name())?,
        db: ctx.db.clone(),
        master_key: ctx.master_key.clone(),
        metrics,
        own_authorities,
        shutdown: ctx.shutdown.clone(),
    })
}

fn own_authorities(ctx: &RoleContext) -> Vec<String> {
    let Some(url) = ctx.config.peer_url("notify").and_then(|u| url::Url::parse(&u).ok()) else {
        return Vec::new();
    };
    let port = url.port_or_known_default().unwrap_or(80);
    let mut hosts = vec![url.host_str().unwrap_or_default().to_string()];
    if hosts[0] == "127.0.0.1" || hosts[0] == "localhost" || hosts[0] == "[::1]" {
        hosts = vec!["127.0.0.1".into(), "localhost".into(), "[::1]".into(), "0.0.0.0".into()];
    }
    hosts.into_iter().map(|h| format!("{h}:{port}")).collect()
}
