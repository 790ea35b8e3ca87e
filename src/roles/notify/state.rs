//! What the notify role builds once per process and its handlers and delivery worker share:
//! configuration, database, master key, metrics, and the rules for publishing and for webhook
//! destinations. Tokens are checked by the guards, through the process's verifier.

use std::net::SocketAddr;
use std::sync::Arc;

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts};

use super::callback::CallbackPolicy;
use super::config::NotifyConfig;
use super::topics::PublishPolicy;
use crate::platform::crypto::MasterKey;
use crate::platform::db::Db;
use crate::platform::role::RoleContext;

pub struct NotifyState {
    pub config: NotifyConfig,
    pub db: Db,
    pub master_key: Arc<MasterKey>,
    pub metrics: NotifyMetrics,
    /// Who may publish which topics.
    pub publishing: PublishPolicy,
    /// Where webhooks may go (never notify itself, link-local or metadata addresses).
    pub callbacks: CallbackPolicy,
    /// Ends event streams when the host stops.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
}

pub struct NotifyMetrics {
    pub published: IntCounter,
    pub fanned_out: IntCounter,
    pub deliveries: IntCounterVec,
    pub in_flight: IntGauge,
}

impl NotifyMetrics {
    fn register(registry: &prometheus::Registry) -> Result<Self, prometheus::Error> {
        let published = IntCounter::new("notify_events_published_total", "Events accepted by POST /events")?;
        let fanned_out = IntCounter::new("notify_deliveries_created_total", "Deliveries created by fan-out")?;
        let deliveries = IntCounterVec::new(
            Opts::new("notify_delivery_attempts_total", "Webhook delivery attempts by outcome"),
            &["outcome"],
        )?;
        let in_flight = IntGauge::new("notify_deliveries_in_flight", "Webhook calls in flight")?;
        registry.register(Box::new(published.clone()))?;
        registry.register(Box::new(fanned_out.clone()))?;
        registry.register(Box::new(deliveries.clone()))?;
        registry.register(Box::new(in_flight.clone()))?;
        Ok(Self { published, fanned_out, deliveries, in_flight })
    }
}

pub fn init(ctx: &RoleContext) -> Result<NotifyState, String> {
    let metrics = NotifyMetrics::register(ctx.metrics.registry()).map_err(|e| e.to_string())?;
    let config: NotifyConfig = ctx.config.role_settings(ctx.role.name())?;
    config.validate()?;
    Ok(NotifyState {
        publishing: PublishPolicy::new(config.publish_topics.clone()),
        callbacks: CallbackPolicy::new(own_listener(ctx)),
        config,
        db: ctx.db.clone(),
        master_key: ctx.master_key.clone(),
        metrics,
        shutdown: ctx.shutdown.clone(),
    })
}

/// Where this notify listens: the configured host (possibly every interface) at the port
/// actually bound, which the host has written into `peers.notify`.
fn own_listener(ctx: &RoleContext) -> SocketAddr {
    let name = ctx.role.name();
    let port = ctx
        .config
        .peer_url(name)
        .and_then(|u| url::Url::parse(&u).ok())
        .and_then(|u| u.port_or_known_default())
        .unwrap_or_else(|| ctx.config.role_port(name, ctx.role.default_port()));
    SocketAddr::new(ctx.config.server.host, port)
}
