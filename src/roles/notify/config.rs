//! notify's own settings: `[roles.notify]` in configuration.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    /// How often the delivery worker looks for new events and due retries.
    pub poll_interval_ms: u64,
    /// First retry delay; doubled per attempt (with jitter) up to `max_retry_delay_seconds`.
    pub initial_retry_delay_ms: u64,
    pub max_retry_delay_seconds: u64,
    /// A delivery still failing this long after its event was published is dead-lettered.
    pub max_delivery_age_seconds: u64,
    /// Timeout of one webhook call.
    pub delivery_timeout_ms: u64,
    /// An event stream with nothing to send writes a keep-alive comment this often.
    pub stream_keepalive_seconds: u64,
}
