//! The delivery worker: fans new events out to subscriptions, then makes due webhook calls,
//! signed with the subscription's secret, retried with exponential backoff and jitter until the
//! event is older than the delivery age limit, then dead-lettered.
//!
//! Scheduling is fair per subscription. Every call runs as its own task and completes on its
//! own; as calls finish, their outcomes are recorded and the next due deliveries are claimed
//! into the freed slots. At most `max_concurrent_deliveries` calls are in flight, and at most
//! `max_deliveries_per_subscription` to any one subscription, shared round-robin among the
//! subscriptions with due work: a subscriber that answers slowly, or never, holds only its own
//! slots until its calls time out, and delays nobody else's deliveries.
//!
//! Every call connects to an address checked just before it (`callback`): a callback host that
//! resolves somewhere notify does not call (itself, link-local, metadata) is refused at delivery
//! time too, and the connection goes to the checked address, not to a second lookup.

use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use rand::Rng;
use sha2::Sha256;
use tokio::task::{Id, JoinSet};

use super::callback::CheckedResolver;
use super::state::NotifyState;
use super::store::{self, Capacity, DueDelivery, Outcome};

/// How many new events one fan-out takes.
const FAN_OUT_BATCH: i64 = 500;
/// A claimed delivery stays reserved for the worker that claimed it for the longest a call may
/// take (`delivery_timeout_ms`, which bounds the whole attempt) plus this much for recording its
/// outcome. A crashed worker's calls in flight come back after that.
const LEASE_GRACE_SECONDS: i64 = 10;
pub const SECRET_CONTEXT: &str = "notify-webhook-secret";

/// What a delivery task needs besides its delivery.
struct Sender {
    state: Arc<NotifyState>,
    client: awc::Client,
    resolver: CheckedResolver,
    /// Bounds a whole attempt: resolving, connecting, sending, the answer's head.
    timeout: Duration,
}

/// Runs until the host stops it (the role spawns it with `RoleContext::spawn`, which ends it on
/// shutdown, and the calls in flight with it). Errors are logged and the loop goes on: a
/// database outage delays deliveries, it never loses them. Ended mid-call, it loses nothing
/// either: unrecorded attempts come back when their leases expire (at least once).
pub async fn run(state: Arc<NotifyState>) {
    let config = &state.config;
    let total = config.max_concurrent_deliveries.max(1);
    let per_subscription = config.max_deliveries_per_subscription.max(1);
    let timeout = Duration::from_millis(config.delivery_timeout_ms);
    let lease = chrono::Duration::milliseconds(config.delivery_timeout_ms as i64)
        + chrono::Duration::seconds(LEASE_GRACE_SECONDS);
    let poll = Duration::from_millis(config.poll_interval_ms.max(10));
    let client = awc::Client::builder()
        .connector(awc::Connector::new().limit(total))
        .timeout(timeout)
        .disable_redirects()
        .finish();
    let resolver = CheckedResolver::new(state.callbacks.clone());
    let sender = Rc::new(Sender { resolver, client, timeout, state: state.clone() });

    let mut waiter = crate::platform::events::waiter();
    let mut calls: JoinSet<Outcome> = JoinSet::new();
    // Which subscription each running call is for.
    let mut running: HashMap<Id, String> = HashMap::new();
    let mut finished: Vec<Outcome> = Vec::new();
    let mut fan_out_wanted = true;
    let mut next_fan_out = Instant::now();
    loop {
        let fan_out = fan_out_wanted || Instant::now() >= next_fan_out;
        if fan_out {
            next_fan_out = Instant::now() + poll;
        }
        let mut in_flight: HashMap<String, usize> = HashMap::new();
        for sub in running.values() {
            *in_flight.entry(sub.clone()).or_default() += 1;
        }
        let free = total.saturating_sub(calls.len());
        let outcomes = std::mem::take(&mut finished);
        // One trip to the database, one transaction: fan out, record what finished, claim into
        // the free slots. If it fails, the unrecorded attempts come back when their leases
        // expire (at least once).
        let cycle = state
            .db
            .run(move |conn| {
                let capacity = Capacity { total: free, per_subscription, in_flight: &in_flight };
                store::turn(conn, fan_out.then_some(FAN_OUT_BATCH), &outcomes, &capacity, lease)
            })
            .await;
        fan_out_wanted = false;
        match cycle {
            Ok((fanned, claimed)) => {
                if fanned.deliveries > 0 {
                    state.metrics.fanned_out.inc_by(fanned.deliveries as u64);
                }
                // A full batch: more events may be waiting right now.
                fan_out_wanted = fanned.events as i64 >= FAN_OUT_BATCH;
                for delivery in claimed {
                    let subscription = delivery.subscription_id.clone();
                    let task = calls.spawn_local(attempt(sender.clone(), delivery));
                    running.insert(task.id(), subscription);
                }
                state.metrics.in_flight.set(calls.len() as i64);
            }
            Err(err) => log::warn!(target: "fountain::notify", "delivery pass failed: {err}"),
        }
        // Wait for an event to be committed, a call to finish, or the poll interval; committed
        // events first, so that they are fanned out in the very next turn however busy the
        // calls keep it. Every call that has finished by then is recorded in that turn.
        let wait = next_fan_out.saturating_duration_since(Instant::now());
        tokio::select! {
            biased;
            _ = waiter.wait(wait) => fan_out_wanted = true,
            Some(done) = calls.join_next_with_id(), if !calls.is_empty() => {
                collect(done, &mut running, &mut finished);
            }
        }
        while let Some(done) = calls.try_join_next_with_id() {
            collect(done, &mut running, &mut finished);
        }
        state.metrics.in_flight.set(calls.len() as i64);
    }
}

/// Takes a finished call off the running list and keeps its outcome for recording. A call that
/// panicked has no outcome: its lease expires and it is attempted again.
fn collect(
    done: Result<(Id, Outcome), tokio::task::JoinError>,
    running: &mut HashMap<Id, String>,
    finished: &mut Vec<Outcome>,
) {
    match done {
        Ok((id, outcome)) => {
            running.remove(&id);
            finished.push(outcome);
        }
        Err(err) => {
            running.remove(&err.id());
            log::warn!(target: "fountain::notify", "a delivery task failed: {err}");
        }
    }
}

async fn attempt(sender: Rc<Sender>, delivery: DueDelivery) -> Outcome {
    let state = &sender.state;
    let attempts = delivery.attempts + 1;
    let id = delivery.id;
    let posted = tokio::time::timeout(sender.timeout, post(&sender, &delivery))
        .await
        .unwrap_or_else(|_| Err(format!("timed out after {} ms", sender.timeout.as_millis())));
    match posted {
        Ok(()) => {
            state.metrics.deliveries.with_label_values(&["delivered"]).inc();
            Outcome::Delivered { id }
        }
        Err(error) => {
            let age = store::now() - delivery.event.created_at;
            let retry_at = (age < chrono::Duration::seconds(state.config.max_delivery_age_seconds as i64))
                .then(|| store::now() + retry_delay(&state.config, attempts));
            let label = if retry_at.is_some() { "retry" } else { "dead" };
            state.metrics.deliveries.with_label_values(&[label]).inc();
            log::info!(target: "fountain::notify", delivery = id, attempts = attempts; "webhook delivery failed ({label}): {error}");
            Outcome::Failed { id, attempts, error, retry_at }
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
        "createdAt": crate::platform::time::format(event.created_at),
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

/// One webhook call: the callback's host resolved and checked, then a connection to a checked
/// address (the next one only when connecting to the previous failed).
async fn post(sender: &Sender, delivery: &DueDelivery) -> Result<(), String> {
    let secret = sender
        .state
        .master_key
        .open(SECRET_CONTEXT, &delivery.sealed_secret)
        .map_err(|_| "the subscription secret cannot be opened".to_string())?;
    let url =
        url::Url::parse(&delivery.callback_url).map_err(|_| "the callback URL is invalid".to_string())?;
    let addrs = sender.resolver.addresses(&url).await.map_err(|e| format!("callback refused: {e}"))?;
    let body = webhook_body(&delivery.event);
    let timestamp = chrono::Utc::now().timestamp();
    let signature = signature(&secret, timestamp, &body);
    let mut failure = String::from("no address to connect to");
    for addr in addrs {
        let sent = sender
            .client
            .post(url.as_str())
            .address(addr)
            .insert_header(("content-type", "application/json"))
            .insert_header(("x-fountain-event-id", delivery.event.id.to_string()))
            .insert_header(("x-fountain-topic", delivery.event.topic.clone()))
            .insert_header(("x-fountain-timestamp", timestamp.to_string()))
            .insert_header(("x-fountain-signature", signature.clone()))
            .send_body(body.clone())
            .await;
        match sent {
            Ok(response) if response.status().is_success() => return Ok(()),
            Ok(response) => return Err(format!("subscriber answered {}", response.status().as_u16())),
            Err(awc::error::SendRequestError::Connect(err)) => failure = format!("request failed: {err}"),
            Err(err) => return Err(format!("request failed: {err}")),
        }
    }
    Err(failure)
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
            max_concurrent_deliveries: 64,
            max_deliveries_per_subscription: 8,
            publish_topics: Default::default(),
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
