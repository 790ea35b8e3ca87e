//! sequence's own settings: `[roles.sequence]` in configuration.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SequenceConfig {
    /// `service_name` of every document sent to search (the seed's `service_a`).
    pub service_name: String,
    /// The peer that receives `POST /documents/sync` (found through the gateway's lookup).
    pub search_service: String,
    /// How often the outbox worker looks for due deliveries when no change woke it.
    pub poll_interval_ms: u64,
    /// First retry delay; doubled per attempt (±50 % jitter) up to `max_retry_delay_seconds`.
    pub initial_retry_delay_ms: u64,
    pub max_retry_delay_seconds: u64,
    /// Timeout of one sync call.
    pub delivery_timeout_ms: u64,
    /// Sync calls in flight at once (each to a different element: one element's changes go
    /// out one after the other, in order).
    pub max_concurrent_deliveries: usize,
}

impl SequenceConfig {
    /// What `fountain config check` and every start refuse.
    pub fn validate(&self) -> Result<(), String> {
        if self.service_name.trim().is_empty() {
            return Err("service_name must not be empty".into());
        }
        if self.search_service.trim().is_empty() {
            return Err("search_service must not be empty".into());
        }
        if self.max_concurrent_deliveries == 0 {
            return Err("max_concurrent_deliveries must be at least 1".into());
        }
        if self.delivery_timeout_ms == 0 || self.poll_interval_ms == 0 {
            return Err("delivery_timeout_ms and poll_interval_ms must be at least 1".into());
        }
        Ok(())
    }
}
