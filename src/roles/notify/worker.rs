//! The delivery worker: fans new events out to subscriptions, then makes due webhook calls,
//! signed with the subscription's secret, retried with exponential backoff and jitter until the
//! event is older than the delivery age limit, then dead-lettered.

use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use rand::Rng;
use sha2::Sha256;

use super::state::NotifyState;
use super::store::{self, DueDelivery};
use crate::platform::crypto::MasterKey;

/// How many deliveries one pass attempts at once.
const BATCH: i64 = 256;
/// How long a claimed delivery is reserved for the worker that claimed it.
const LEASE_SECONDS: i64 = 60;
pub const SECRET_CONTEXT: &str = "notify-webhook-secret";

/// Runs until the host stops it (the role spawns it with `RoleContext::spawn`, which ends it on
/// shutdown). Errors are logged and the loop goes on: a database outage delays deliveries, it
/// never loses them. Ended mid-pass, it loses nothing either: unrecorded attempts come back when
/// their leases expire (at least once).
pub async fn run(state: Arc<NotifyState>) {
    let client = awc::Client::builder()
        .timeout(Duration::from_millis(state.config.delivery_timeout_ms))
        .disable_redirects()
        .finish();
    let poll = Duration::from_millis(state.config.poll_interval_ms.max(10));
    let mut waiter = crate::platform::events::waiter();
    loop {
        if let Err(err) = pass(&state, &client).await {
            log::warn!(target: "fountain::notify", "delivery pass failed: {err}");
        }
        waiter.wait(poll).await;
    }
}

/// Fans new events out and makes the due attempts. Only plain queue writes: no audit record, no
/// event, so `Db::run` rather than a unit of work.
async fn pass(state: &NotifyState, client: &awc::Client) -> Result<(), crate::platform::db::DbError> {
    let created = state.db.run(|conn| store::fan_out(conn, 500)).await?;
    if created > 0 {
        state.metrics.fanned_out.inc_by(created as u64);
    }
    let due =
        state.db.run(|conn| store::claim_due(conn, BATCH, chrono::Duration::seconds(LEASE_SECONDS))).await?;
    if due.is_empty() {
        return Ok(());
    }
    let attempts = due.into_iter().map(|delivery| attempt(state, client, delivery));
    let outcomes = futures_util::future::join_all(attempts).await;
    if let Err(err) = state.db.run(move |conn| store::record_outcomes(conn, &outcomes)).await {
        // The leases expire and the deliveries are attempted again: at least once, never lost.
        log::warn!(target: "fountain::notify", "could not record delivery outcomes: {err}");
    }
    Ok(())
}

async fn attempt(state: &NotifyState, client: &awc::Client, delivery: DueDelivery) -> store::Outcome {
    let attempts = delivery.attempts + 1;
    let id = delivery.id;
    match post(client, &state.master_key, &delivery).await {
        Ok(()) => {
            state.metrics.deliveries.with_label_values(&["delivered"]).inc();
            store::Outcome::Delivered { id }
        }
        Err(error) => {
            let age = store::now() - delivery.event.created_at;
            let retry_at = (age < chrono::Duration::seconds(state.config.max_delivery_age_seconds as i64))
                .then(|| store::now() + retry_delay(&state.config, attempts));
            let label = if retry_at.is_some() { "retry" } else { "dead" };
            state.metrics.deliveries.with_label_values(&[label]).inc();
            log::info!(target: "fountain::notify", delivery = id, attempts = attempts; "webhook delivery failed ({label}): {error}");
            store::Outcome::Failed { id, attempts, error, retry_at }
        }
    }
}

/// Exponential backoff with ±50 % jitter, capped.
fn retry_delay(config: &super::config::NotifyConfig, attempts: i32) -> chrono::Duration {
    let base = config.initial_retry_delay_ms as f64 * 2f64.powi((attempts - 1).clamp(0, 30));
    let capped = base.min(config.max_retry_delay_seconds as f64 * 1000.0);
    let jittered = capped * rand::thread_rng().gen_range(0.5..1.5);
    chrono::Duration::milliseconds(jittered as i64)
}

/// The JSON body a subscriber receives.
pub fn webhook_body(event: &crate::platform::events::StoredEvent) -> String {
    let payload: serde_json::Value = serde_json::from_str(&event.payload).unwrap_or(serde_json::Value::Null);
    serde_json::json!({
        "id": event.id,
        "topic": event.topic,
        "payload": payload,
        "source": event.source,
        "createdAt": event.created_at.and_utc().to_rfc3339(),
    })
    .to_string()
}

/// `sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`.
pub fn signature(secret: &[u8], timestamp: i64, body: &str) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    let bytes = mac.finalize().into_bytes();
    format!("sha256={}", bytes.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

async fn post(client: &awc::Client, master_key: &MasterKey, delivery: &DueDelivery) -> Result<(), String> {
    let secret = master_key
        .open(SECRET_CONTEXT, &delivery.sealed_secret)
        .map_err(|_| "the subscription secret cannot be opened".to_string())?;
    let body = webhook_body(&delivery.event);
    let timestamp = chrono::Utc::now().timestamp();
    let response = client
        .post(&delivery.callback_url)
        .insert_header(("content-type", "application/json"))
        .insert_header(("x-fountain-event-id", delivery.event.id.to_string()))
        .insert_header(("x-fountain-topic", delivery.event.topic.clone()))
        .insert_header(("x-fountain-timestamp", timestamp.to_string()))
        .insert_header(("x-fountain-signature", signature(&secret, timestamp, &body)))
        .send_body(body)
        .await
        .map_err(|e| format!("request failed: {e}"))?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(format!("subscriber answered {}", response.status().as_u16()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let config = super::super::config::NotifyConfig {
            poll_interval_ms: 100,
            initial_retry_delay_ms: 1000,
            max_retry_delay_seconds: 60,
            max_delivery_age_seconds: 86400,
            delivery_timeout_ms: 1000,
            stream_keepalive_seconds: 15,
        };
        let first = retry_delay(&config, 1).num_milliseconds();
        assert!((500..1500).contains(&first), "{first}");
        let fourth = retry_delay(&config, 4).num_milliseconds();
        assert!((4000..12000).contains(&fourth), "{fourth}");
        let late = retry_delay(&config, 30).num_milliseconds();
        assert!(late <= 90_000, "{late}");
    }

    #[test]
    fn signatures_cover_timestamp_and_body() {
        let a = signature(b"k", 1, "{}");
        assert!(a.starts_with("sha256=") && a.len() == 7 + 64);
        assert_ne!(a, signature(b"k", 2, "{}"));
        assert_ne!(a, signature(b"k", 1, "{ }"));
        assert_ne!(a, signature(b"j", 1, "{}"));
    }
}
