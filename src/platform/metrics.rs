//! Prometheus metrics, one registry per role so that a scrape of a role's `/metrics` shows that
//! role alone even when every role shares one process.

use actix_web::http::StatusCode;
use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder};

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
    requests: IntCounterVec,
    latency: HistogramVec,
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
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        Ok(Self { role, registry, requests, latency })
    }

    /// Where a role registers its own counters (logins, rotations, outbox depth…).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Records one served request. `route` must be a route template, never a raw path, so that
    /// label cardinality stays bounded whatever clients send.
    pub fn observe(&self, method: &str, route: &str, status: StatusCode, seconds: f64) {
        let labels = [self.role, bounded_method(method), route, status.as_str()];
        self.requests.with_label_values(&labels).inc();
        self.latency.with_label_values(&labels).observe(seconds);
    }

    /// The Prometheus text exposition of everything in this role's registry.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        let mut buffer = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buffer)?;
        String::from_utf8(buffer).map_err(|e| prometheus::Error::Msg(e.to_string()))
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
}
