//! Upstream health: which instances are down. Two sources feed it:
//! - active probes: every instance (static and registered) gets `GET {url}/health` on an
//!   interval; a failed probe holds the instance down until a probe succeeds;
//! - passive health: a request that could not reach an instance holds it down for a cool-down.
//!
//! When every instance of a service is down, requests still go to all of them in turn ("panic
//! mode", as Envoy does): refusing outright would turn a flapping probe into a certain outage,
//! and a dead instance answers with a quick connect error (502) anyway.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::network::AddressPolicy;
use super::registry::GatewayState;

#[derive(Debug, Clone, Copy)]
enum Down {
    /// The last probe failed: down until a probe succeeds.
    Probe,
    /// A request failed at this time: down for the cool-down.
    Request(Instant),
}

pub struct Health {
    down: Mutex<HashMap<Arc<str>, Down>>,
    /// Whether `down` has any entry, readable without the lock: while every instance is up
    /// (the usual case) choosing one touches no shared cache line for writing.
    any_down: AtomicBool,
    cool_down: Duration,
}

/// The instance a request goes to, and whether it is believed healthy.
#[derive(Debug, Clone)]
pub struct Choice {
    pub url: Arc<str>,
    pub healthy: bool,
}

impl Health {
    pub fn new(cool_down: Duration) -> Self {
        Self { down: Mutex::new(HashMap::new()), any_down: AtomicBool::new(false), cool_down }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Down>> {
        self.down.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The `turn`-th healthy instance of `urls` (round-robin), or, if none is healthy, the
    /// `turn`-th of all of them marked unhealthy; `None` only when `urls` is empty.
    pub fn choose(&self, urls: &[Arc<str>], turn: usize) -> Option<Choice> {
        if !self.any_down.load(Ordering::Acquire) {
            let url = urls.get(turn % urls.len().max(1))?;
            return Some(Choice { url: url.clone(), healthy: true });
        }
        let down = self.lock();
        let is_up = |url: &Arc<str>| match down.get(url) {
            None => true,
            Some(Down::Probe) => false,
            Some(Down::Request(at)) => at.elapsed() >= self.cool_down,
        };
        let up = urls.iter().filter(|u| is_up(u)).count();
        if up == 0 {
            let url = urls.get(turn % urls.len().max(1))?;
            return Some(Choice { url: url.clone(), healthy: false });
        }
        urls.iter().filter(|u| is_up(u)).nth(turn % up).map(|url| Choice { url: url.clone(), healthy: true })
    }

    /// A request could not reach `url`.
    pub fn request_failed(&self, url: &Arc<str>) {
        let mut down = self.lock();
        if !matches!(down.get(url), Some(Down::Probe)) {
            down.insert(url.clone(), Down::Request(Instant::now()));
        }
        self.any_down.store(true, Ordering::Release);
    }

    /// Records one probe round and forgets instances that are no longer known.
    fn record_round(&self, results: &[(Arc<str>, bool)]) {
        let known: HashSet<&Arc<str>> = results.iter().map(|(url, _)| url).collect();
        let mut down = self.lock();
        down.retain(|url, _| known.contains(url));
        for (url, up) in results {
            let was_down = if *up {
                down.remove(url).is_some()
            } else {
                matches!(down.insert(url.clone(), Down::Probe), Some(Down::Probe))
            };
            match (*up, was_down) {
                (true, true) => {
                    log::info!(target: "fountain::gateway", url = url.as_ref(); "upstream healthy again")
                }
                (false, false) => {
                    log::warn!(target: "fountain::gateway", url = url.as_ref(); "upstream failed its health probe")
                }
                _ => {}
            }
        }
        // Every known instance was just probed: passive marks are replaced or cleared.
        self.any_down.store(!down.is_empty(), Ordering::Release);
    }
}

/// Probes every known instance each `interval` until the host stops. An interval of zero turns
/// active checks off (passive health still applies).
pub async fn probe_until_stopped(
    state: Arc<GatewayState>,
    interval: Duration,
    timeout: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    if interval.is_zero() {
        return;
    }
    let client = awc::Client::builder().timeout(timeout).disable_redirects().finish();
    loop {
        tokio::select! {
            _ = actix_web::rt::time::sleep(interval) => {}
            _ = shutdown.changed() => return,
        }
        let targets = match state.all_instances().await {
            Ok(targets) => targets,
            Err(err) => {
                log::warn!(target: "fountain::gateway", "health probes skipped: {err}");
                continue;
            }
        };
        let probes = targets.iter().map(|(_, url)| probe(&client, &state.address_policy, url));
        let outcomes = futures_util::future::join_all(probes).await;
        let results: Vec<(Arc<str>, bool)> =
            targets.iter().zip(outcomes).map(|((_, url), up)| (url.clone(), up)).collect();
        state.health.record_round(&results);
        state.metrics.upstream_healthy.reset();
        for ((service, url), (_, up)) in targets.iter().zip(&results) {
            state.metrics.upstream_healthy.with_label_values(&[service.as_str(), url]).set(i64::from(*up));
        }
    }
}

/// `GET {url}/health` answers 2xx. A registered instance whose address the gateway may not
/// reach (now: DNS may have changed since it registered) is not probed and counts as down.
async fn probe(client: &awc::Client, policy: &AddressPolicy, url: &str) -> bool {
    if policy.check_url(url).await.is_err() {
        return false;
    }
    match client.get(format!("{url}/health")).send().await {
        Ok(response) => response.status().is_success(),
        Err(_) => false,
    }
}
