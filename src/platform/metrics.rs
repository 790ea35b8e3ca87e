//! Prometheus metrics, one registry per role so that a scrape of a role's `/metrics` shows that
//! role alone even when every role shares one process.

use std::any::Any;
use std::cell::RefCell;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

use actix_web::http::StatusCode;
use prometheus::core::Collector;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry, TextEncoder,
};
use rustc_hash::{FxHashMap, FxHasher};

/// Request latency buckets in seconds: sub-millisecond resolution for the gateway's hot path,
/// up to the tens of seconds a slow upstream may take.
const LATENCY_BUCKETS: &[f64] =
    &[0.0002, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

const REQUEST_LABELS: &[&str] = &["role", "method", "route", "status"];

/// The request metrics of one role plus the registry its own counters go into.
#[derive(Clone)]
pub struct RoleMetrics {
    role: &'static str,
    registry: Registry,
    requests: Family<IntCounterVec>,
    latency: Family<HistogramVec>,
    audit_chain_seq: prometheus::IntGaugeVec,
}

impl RoleMetrics {
    pub fn new(role: &'static str) -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new("http_requests_total", "HTTP requests served, by route template and status"),
            REQUEST_LABELS,
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new("http_request_duration_seconds", "HTTP request latency in seconds")
                .buckets(LATENCY_BUCKETS.to_vec()),
            REQUEST_LABELS,
        )?;
        let build_info = prometheus::IntGaugeVec::new(
            Opts::new("fountain_build_info", "Always 1; labels name the role and fountain version"),
            &["role", "version"],
        )?;
        build_info.with_label_values(&[role, env!("CARGO_PKG_VERSION")]).set(1);
        registry.register(Box::new(build_info))?;
        let audit_chain_seq = prometheus::IntGaugeVec::new(
            Opts::new("audit_chain_seq", "The seq of the role's audit chain head (its audit records so far)"),
            &["role"],
        )?;
        registry.register(Box::new(audit_chain_seq.clone()))?;
        let requests = Family::register(requests, &registry)?;
        let latency = Family::register(latency, &registry)?;
        Ok(Self { role, registry, requests, latency, audit_chain_seq })
    }

    /// Shows the role's audit chain head, read at scrape time: a head that ever goes down was
    /// rewritten (alert on `delta(audit_chain_seq[1h]) < 0`).
    pub fn set_audit_chain_seq(&self, seq: i64) {
        self.audit_chain_seq.with_label_values(&[self.role]).set(seq);
    }

    /// Where a role registers its own counters (logins, rotations, outbox depth…).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Records one served request. `route` must be a route template, never a raw path, so that
    /// label cardinality stays bounded whatever clients send.
    pub fn observe(&self, method: &str, route: &str, status: StatusCode, seconds: f64) {
        let labels = [self.role, bounded_method(method), route, status.as_str()];
        self.requests.with(&labels, |counter| counter.inc());
        self.latency.with(&labels, |histogram| histogram.observe(seconds));
    }

    /// The Prometheus text exposition of everything in this role's registry.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        let mut buffer = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buffer)?;
        String::from_utf8(buffer).map_err(|e| prometheus::Error::Msg(e.to_string()))
    }
}

/// Identifies a family across threads for the per-thread handle caches.
static NEXT_FAMILY: AtomicU64 = AtomicU64::new(1);

/// A metric handle with the label values it was made for.
type CachedHandle = (Vec<String>, Box<dyn Any>);

thread_local! {
    /// This thread's handles, by (family, hash of label values), with the label values kept
    /// to rule out a hash collision.
    static HANDLES: RefCell<FxHashMap<(u64, u64), CachedHandle>> = RefCell::new(FxHashMap::default());
}

/// A labelled metric vector whose handles can be cached per thread.
pub trait LabelledVec: Collector + Clone + 'static {
    type Metric: 'static;
    fn handle(&self, labels: &[&str]) -> Self::Metric;
}

impl LabelledVec for IntCounterVec {
    type Metric = IntCounter;
    fn handle(&self, labels: &[&str]) -> IntCounter {
        self.with_label_values(labels)
    }
}

impl LabelledVec for HistogramVec {
    type Metric = Histogram;
    fn handle(&self, labels: &[&str]) -> Histogram {
        self.with_label_values(labels)
    }
}

/// A labelled metric family on a hot path. `MetricVec::with_label_values` takes a read lock and
/// clones a reference count on every call: with several workers those are atomic writes to
/// cache lines every core writes, on every request. Each worker thread keeps its own handle per
/// label set instead, so only the metric's own update is shared.
#[derive(Clone)]
pub struct Family<V> {
    id: u64,
    vec: V,
}

impl<V: LabelledVec> Family<V> {
    /// Registers `vec` in `registry` and wraps it.
    pub fn register(vec: V, registry: &Registry) -> Result<Self, prometheus::Error> {
        registry.register(Box::new(vec.clone()))?;
        Ok(Self { id: NEXT_FAMILY.fetch_add(1, Ordering::Relaxed), vec })
    }

    /// Runs `update` on the metric with these label values.
    pub fn with(&self, labels: &[&str], update: impl FnOnce(&V::Metric)) {
        // Fx rather than SipHash: label values come from route templates and bounded sets, and a
        // collision is ruled out below anyway.
        let mut hasher = FxHasher::default();
        labels.hash(&mut hasher);
        let key = (self.id, hasher.finish());
        HANDLES.with_borrow_mut(|handles| {
            let (known, handle) = handles.entry(key).or_insert_with(|| {
                let owned = labels.iter().map(|l| l.to_string()).collect();
                (owned, Box::new(self.vec.handle(labels)))
            });
            match handle.downcast_ref::<V::Metric>() {
                Some(metric) if known.iter().eq(labels.iter()) => update(metric),
                _ => update(&self.vec.handle(labels)),
            }
        });
    }
}

/// Keeps arbitrary client-chosen methods out of the label set.
fn bounded_method(method: &str) -> &str {
    match method {
        "GET" | "POST" | "PUT" | "PATCH" | "DELETE" | "HEAD" | "OPTIONS" => method,
        _ => "OTHER",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_render_with_role_route_and_status_labels() {
        let metrics = RoleMetrics::new("kms").unwrap();
        metrics.observe("GET", "/health", StatusCode::OK, 0.001);
        metrics.observe("BREW", "unmatched", StatusCode::NOT_FOUND, 0.001);
        let text = metrics.render().unwrap();
        assert!(
            text.contains(r#"http_requests_total{method="GET",role="kms",route="/health",status="200"} 1"#),
            "{text}"
        );
        assert!(text.contains(r#"method="OTHER""#), "{text}");
        assert!(text.contains("http_request_duration_seconds_bucket"), "{text}");
    }

    #[test]
    fn family_handles_cached_per_thread_update_the_registered_metric() {
        let registry = Registry::new();
        let vec = IntCounterVec::new(Opts::new("things_total", "things"), &["kind"]).unwrap();
        let family = Family::register(vec.clone(), &registry).unwrap();
        // A second family with the same labels must not share the first one's handles.
        let other_vec = IntCounterVec::new(Opts::new("others_total", "others"), &["kind"]).unwrap();
        let other = Family::register(other_vec.clone(), &Registry::new()).unwrap();
        for _ in 0..3 {
            family.with(&["a"], |c| c.inc());
        }
        family.with(&["b"], |c| c.inc());
        other.with(&["a"], |c| c.inc_by(10));
        let from_thread = family.clone();
        std::thread::spawn(move || from_thread.with(&["a"], |c| c.inc())).join().unwrap();
        assert_eq!(vec.with_label_values(&["a"]).get(), 4);
        assert_eq!(vec.with_label_values(&["b"]).get(), 1);
        assert_eq!(other_vec.with_label_values(&["a"]).get(), 10);
        let text = {
            let mut buffer = Vec::new();
            TextEncoder::new().encode(&registry.gather(), &mut buffer).unwrap();
            String::from_utf8(buffer).unwrap()
        };
        assert!(text.contains(r#"things_total{kind="a"} 4"#), "{text}");
    }
}
