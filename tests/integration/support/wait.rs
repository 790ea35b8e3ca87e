//! Waiting for what happens in the background (deliveries, rotations reaching a role, probes,
//! revocations): one bounded poll instead of a hand-written deadline loop in every test.
//!
//! The bound only turns a hang into a failure; no test asserts how fast anything happens.

use std::fmt::Display;
use std::time::{Duration, Instant};

/// How long to wait between two asks.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Asks `probe` until it answers `Some` and returns what it found; panics naming `what` when
/// `bound` has passed first.
pub async fn eventually<T>(
    what: impl Display,
    bound: Duration,
    mut probe: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + bound;
    loop {
        if let Some(found) = probe().await {
            return found;
        }
        assert!(Instant::now() < deadline, "gave up after {bound:?} waiting for {what}");
        actix_web::rt::time::sleep(POLL_INTERVAL).await;
    }
}

/// `eventually` for code outside an async runtime (a child process exiting).
pub fn eventually_blocking<T>(
    what: impl Display,
    bound: Duration,
    mut probe: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + bound;
    loop {
        if let Some(found) = probe() {
            return found;
        }
        assert!(Instant::now() < deadline, "gave up after {bound:?} waiting for {what}");
        std::thread::sleep(POLL_INTERVAL);
    }
}
