//! What the sequence role builds once per process and its handlers and outbox worker share.

use std::sync::{Arc, Mutex};

use prometheus::{Gauge, IntCounterVec, IntGauge, Opts};

use super::api::{SyncError, SyncStatus};
use super::config::SequenceConfig;
use super::service::Documents;
use super::store;
use crate::config::Config;
use crate::platform::db::Db;
use crate::platform::error::ApiError;
use crate::platform::role::RoleContext;

pub struct SequenceState {
    pub config: SequenceConfig,
    /// The whole configuration: the worker's peer client reads kms, `[peers]` and credentials.
    pub platform_config: Arc<Config>,
    pub db: Db,
    pub documents: Documents,
    pub metrics: SyncMetrics,
    /// Woken after a change that queued documents has committed.
    pub outbox_wake: Arc<tokio::sync::Notify>,
    /// The last delivery failure this process saw.
    pub last_error: Mutex<Option<SyncError>>,
}

pub struct SyncMetrics {
    pub depth: IntGauge,
    pub oldest_age: Gauge,
    pub deliveries: IntCounterVec,
}

impl SyncMetrics {
    fn register(registry: &prometheus::Registry) -> Result<Self, prometheus::Error> {
        let depth = IntGauge::new("sequence_outbox_depth", "Changes not yet delivered to search")?;
        let oldest_age = Gauge::new(
            "sequence_outbox_oldest_age_seconds",
            "Age of the oldest change not yet delivered to search (0 when none)",
        )?;
        let deliveries = IntCounterVec::new(
            Opts::new("sequence_sync_deliveries_total", "Sync calls to search by outcome"),
            &["outcome"],
        )?;
        registry.register(Box::new(depth.clone()))?;
        registry.register(Box::new(oldest_age.clone()))?;
        registry.register(Box::new(deliveries.clone()))?;
        Ok(Self { depth, oldest_age, deliveries })
    }
}

pub fn init(ctx: &RoleContext) -> Result<SequenceState, String> {
    let config: SequenceConfig = ctx.config.role_settings(ctx.role.name())?;
    config.validate()?;
    let metrics = SyncMetrics::register(ctx.metrics.registry()).map_err(|e| e.to_string())?;
    Ok(SequenceState {
        documents: Documents { service_name: config.service_name.clone() },
        config,
        platform_config: ctx.config.clone(),
        db: ctx.db.clone(),
        metrics,
        outbox_wake: Arc::new(tokio::sync::Notify::new()),
        last_error: Mutex::new(None),
    })
}

impl SequenceState {
    /// Tells the worker that documents were queued (after the commit).
    pub fn wake(&self) {
        self.outbox_wake.notify_one();
    }

    pub fn note_error(&self, message: String) {
        let error = SyncError { message, at: crate::platform::time::now() };
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(error);
    }

    /// The outbox as it is now; the depth gauges follow.
    pub async fn status(&self) -> Result<SyncStatus, ApiError> {
        let (depth, oldest, failed) = self.db.run(store::depth).await?;
        let age = oldest.map_or(0.0, |at| (store::now() - at).num_milliseconds().max(0) as f64 / 1000.0);
        self.metrics.depth.set(depth);
        self.metrics.oldest_age.set(age);
        let last = self.last_error.lock().unwrap_or_else(|e| e.into_inner());
        let last_error = last.as_ref().map(|e| SyncError { message: e.message.clone(), at: e.at.clone() });
        Ok(SyncStatus {
            outboxDepth: depth,
            oldestPendingAgeSeconds: age,
            failedCount: failed,
            lastError: last_error,
        })
    }
}
