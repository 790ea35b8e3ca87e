//! notify's own settings: `[roles.notify]` in configuration.

use std::collections::BTreeMap;

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
    /// Webhook calls one notify process makes at once, over all subscriptions.
    pub max_concurrent_deliveries: usize,
    /// Webhook calls in flight to one subscription at once: a subscriber that answers slowly
    /// (or never) holds this many calls and delays only its own deliveries.
    pub max_deliveries_per_subscription: usize,
    /// Topics a service may publish through `POST /events` besides its own `<service>.*`, by
    /// service name: exact topics, `prefix.*` or `*`.
    #[serde(default)]
    pub publish_topics: BTreeMap<String, Vec<String>>,
}

impl NotifyConfig {
    /// What `fountain config check` and every start refuse.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_concurrent_deliveries == 0 {
            return Err("max_concurrent_deliveries must be at least 1".into());
        }
        if self.max_deliveries_per_subscription == 0 {
            return Err("max_deliveries_per_subscription must be at least 1".into());
        }
        if self.delivery_timeout_ms == 0 {
            return Err("delivery_timeout_ms must be at least 1".into());
        }
        super::topics::PublishPolicy::validate(&self.publish_topics)
    }
}
