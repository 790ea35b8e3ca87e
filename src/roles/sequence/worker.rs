//! The outbox worker: delivers queued documents to search's `POST /documents/sync` with this
//! role's service token. Of each element only the oldest pending document is in flight, so one
//! element's changes arrive in the order they were made; different elements go out together.
//!
//! - 2xx: delivered, the row is deleted.
//! - 408, 429, 5xx, or no answer: retried with exponential backoff and ±50 % jitter; the
//!   element's later documents wait for it. When search could not be reached (no answer, 502,
//!   503, 504) and then takes a delivery again, every retry still waiting is made due at once:
//!   the backoff an outage built up (up to `max_retry_delay_seconds` × 1.5 per element) would
//!   otherwise keep search stale that long after it is back (measured: 89 s to catch up on
//!   3,000 writes after a 60 s outage, `bench/faults/search-down.sh`).
//! - any other 4xx: search refuses the document for good; the row stays as `failed` (counted,
//!   and shown as the last error) and the element's later documents go on.
//!
//! Document ids are `{element_type}_{element_id}_{version_number}` and search upserts them, so
//! a document sent again after a crash mid-call changes nothing.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::task::JoinSet;

use super::api::SyncRequest;
use super::state::SequenceState;
use super::store::{self, OutboxRow, Outcome};
use crate::platform::peers::{CallError, ServiceClient};

/// A claimed delivery is reserved for the longest a call may take plus this.
const LEASE_GRACE_SECONDS: i64 = 10;

/// Runs until the host stops it. Every call is its own task: as calls finish, their outcomes
/// are recorded and the freed slots filled, so a call that hangs until its timeout holds one
/// slot (and its element's later changes), not everybody's deliveries. Database errors are
/// logged and the loop goes on: an outage delays deliveries, it never loses them.
pub async fn run(state: Arc<SequenceState>) {
    let config = &state.config;
    let timeout = Duration::from_millis(config.delivery_timeout_ms);
    let client = Rc::new(ServiceClient::new(super::ROLE_NAME, &state.platform_config, timeout));
    let poll = Duration::from_millis(config.poll_interval_ms);
    let slots = config.max_concurrent_deliveries;
    let lease = chrono::Duration::milliseconds(config.delivery_timeout_ms as i64)
        + chrono::Duration::seconds(LEASE_GRACE_SECONDS);
    let mut calls: JoinSet<Outcome> = JoinSet::new();
    let mut finished: Vec<Outcome> = Vec::new();
    // Believed down at start: retries left waiting by an earlier process (search was down when
    // it stopped) become due at this process's first delivery.
    let mut search_down = true;
    loop {
        if !finished.is_empty() {
            let outcomes = std::mem::take(&mut finished);
            let (down, came_back) = follow_search(search_down, &outcomes);
            let recorded = state
                .db
                .run(move |conn| {
                    store::record(conn, &outcomes)?;
                    if came_back {
                        store::retry_waiting_now(conn)?;
                    }
                    Ok(())
                })
                .await;
            match recorded {
                Ok(()) => search_down = down,
                // The leases expire and the rows are sent again: at least once.
                Err(err) => log::warn!(target: "fountain::sequence", "recording deliveries failed: {err}"),
            }
        }
        let free = slots.saturating_sub(calls.len()) as i64;
        let mut claimed_any = false;
        if free > 0 {
            match state.db.run(move |conn| store::claim(conn, free, store::now() + lease)).await {
                Ok(rows) => {
                    claimed_any = !rows.is_empty();
                    for row in rows {
                        calls.spawn_local(deliver(state.clone(), client.clone(), row));
                    }
                }
                Err(err) => log::warn!(target: "fountain::sequence", "outbox pass failed: {err}"),
            }
        }
        let _ = state.status().await;
        // Wait for a call to finish, a change to be committed, or the next retry to be due.
        let wait = if claimed_any && calls.len() < slots {
            Duration::ZERO
        } else {
            until_next_due(&state, poll).await
        };
        tokio::select! {
            Some(done) = calls.join_next(), if !calls.is_empty() => collect(done, &mut finished),
            _ = tokio::time::timeout(wait, state.outbox_wake.notified()) => {}
        }
        while let Some(done) = calls.try_join_next() {
            collect(done, &mut finished);
        }
    }
}

/// Whether search is reachable, followed through `outcomes` in the order the calls finished:
/// down after a call that could not reach it, up again at the next delivery. Returns the new
/// state and whether search came back within `outcomes`.
fn follow_search(mut down: bool, outcomes: &[Outcome]) -> (bool, bool) {
    let mut came_back = false;
    for outcome in outcomes {
        match outcome {
            Outcome::Retry { unavailable: true, .. } => down = true,
            Outcome::Delivered { .. } if down => {
                down = false;
                came_back = true;
            }
            _ => {}
        }
    }
    (down, came_back)
}

/// Keeps a finished call's outcome for recording. A call that panicked has none: its lease
/// expires and it is sent again.
fn collect(done: Result<Outcome, tokio::task::JoinError>, finished: &mut Vec<Outcome>) {
    match done {
        Ok(outcome) => finished.push(outcome),
        Err(err) => log::warn!(target: "fountain::sequence", "a delivery task failed: {err}"),
    }
}

/// How long to sleep: until the next retry is due, at most `poll`.
async fn until_next_due(state: &SequenceState, poll: Duration) -> Duration {
    match state.db.run(store::next_due).await {
        Ok(Some(at)) => {
            let left = (at - store::now()).to_std().unwrap_or(Duration::ZERO);
            left.clamp(Duration::from_millis(5), poll)
        }
        _ => poll,
    }
}

async fn deliver(state: Arc<SequenceState>, client: Rc<ServiceClient>, row: OutboxRow) -> Outcome {
    let (id, attempts) = (row.id, row.attempts + 1);
    let sent = send(&state, &client, &row).await;
    let failure = match sent {
        Ok(()) => {
            state.metrics.deliveries.with_label_values(&["delivered"]).inc();
            return Outcome::Delivered { id };
        }
        Err(failure) => failure,
    };
    state.note_error(failure.message.clone());
    if failure.permanent {
        state.metrics.deliveries.with_label_values(&["failed"]).inc();
        log::warn!(target: "fountain::sequence", outbox_id = id; "search refused a document: {}", failure.message);
        Outcome::Failed { id, attempts, error: failure.message }
    } else {
        state.metrics.deliveries.with_label_values(&["retry"]).inc();
        log::info!(target: "fountain::sequence", outbox_id = id, attempts = attempts; "sync failed, will retry: {}", failure.message);
        let at = store::now() + retry_delay(&state.config, attempts);
        Outcome::Retry { id, attempts, at, error: failure.message, unavailable: failure.unavailable }
    }
}

struct Failure {
    message: String,
    /// Whether sending it again cannot help.
    permanent: bool,
    /// Whether search was not there to answer (no answer, 502, 503, 504), as opposed to an
    /// answer about this document: its coming back says nothing about this document.
    unavailable: bool,
}

async fn send(state: &SequenceState, client: &ServiceClient, row: &OutboxRow) -> Result<(), Failure> {
    let document: serde_json::Value = serde_json::from_str(&row.document).map_err(|_| Failure {
        message: "a queued document is not JSON".into(),
        permanent: true,
        unavailable: false,
    })?;
    let body = SyncRequest { operation: &row.operation, document: &document };
    let service = &state.config.search_service;
    let answer = client
        .call(service, awc::http::Method::POST, "/documents/sync", Some(&body))
        .await
        .map_err(|err| Failure {
            unavailable: matches!(err, CallError::Unreachable(_)),
            message: describe(&err),
            permanent: false,
        })?;
    match answer.status {
        200..=299 => Ok(()),
        408 | 429 | 500..=599 => Err(Failure {
            message: format!("{service} answered {}", answer.status),
            permanent: false,
            unavailable: matches!(answer.status, 502..=504),
        }),
        status => {
            let code = serde_json::from_slice::<serde_json::Value>(&answer.body)
                .ok()
                .and_then(|b| b["errorCode"].as_str().map(str::to_string));
            let message = match code {
                Some(code) => format!("{service} answered {status} ({code})"),
                None => format!("{service} answered {status}"),
            };
            Err(Failure { message, permanent: true, unavailable: false })
        }
    }
}

fn describe(err: &CallError) -> String {
    err.to_string()
}

/// Exponential backoff with ±50 % jitter, capped.
fn retry_delay(config: &super::config::SequenceConfig, attempts: i32) -> chrono::Duration {
    let base = config.initial_retry_delay_ms as f64 * 2f64.powi((attempts - 1).clamp(0, 30));
    let capped = base.min(config.max_retry_delay_seconds as f64 * 1000.0);
    let jittered = capped * rand::thread_rng().gen_range(0.5..1.5);
    chrono::Duration::milliseconds(jittered as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_is_capped() {
        let config = super::super::config::SequenceConfig {
            service_name: "service_a".into(),
            search_service: "search".into(),
            poll_interval_ms: 1000,
            initial_retry_delay_ms: 1000,
            max_retry_delay_seconds: 60,
            delivery_timeout_ms: 1000,
            max_concurrent_deliveries: 8,
        };
        let first = retry_delay(&config, 1).num_milliseconds();
        assert!((500..1500).contains(&first), "{first}");
        let fourth = retry_delay(&config, 4).num_milliseconds();
        assert!((4000..12000).contains(&fourth), "{fourth}");
        assert!(retry_delay(&config, 30).num_milliseconds() <= 90_000);
    }

    fn retry(unavailable: bool) -> Outcome {
        Outcome::Retry { id: 1, attempts: 1, at: store::now(), error: String::new(), unavailable }
    }

    #[test]
    fn search_comes_back_at_the_first_delivery_after_it_could_not_be_reached() {
        let delivered = Outcome::Delivered { id: 2 };
        assert_eq!(follow_search(false, &[retry(true)]), (true, false));
        assert_eq!(follow_search(true, &[delivered]), (false, true));
        let delivered = Outcome::Delivered { id: 2 };
        assert_eq!(follow_search(false, &[retry(true), delivered, retry(true)]), (true, true));
        // A 500 about one document says nothing about search being there.
        let delivered = Outcome::Delivered { id: 2 };
        assert_eq!(follow_search(false, &[retry(false), delivered]), (false, false));
    }
}
