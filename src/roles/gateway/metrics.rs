//! Gateway-specific metrics, beside the request metrics every role has.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};

use crate::platform::metrics::Family;

pub struct GatewayMetrics {
    /// Upstream answers by service and status.
    pub upstream: Family<IntCounterVec>,
    /// Time from sending upstream to its response head, by service.
    pub upstream_latency: Family<HistogramVec>,
    /// Upstreams that could not be reached or timed out, by service and kind.
    pub upstream_failures: IntCounterVec,
    /// Requests refused at the edge, by reason.
    pub auth_failures: IntCounterVec,
    /// Requests refused by a rate limit, by route prefix.
    pub rate_limited: IntCounterVec,
    /// 1 when the instance passed its last health probe, by service and instance URL.
    pub upstream_healthy: IntGaugeVec,
    /// X-API-KEY -> service token exchanges at kms, by outcome (`issued`, `refused`,
    /// `unavailable`); cached tokens are not counted.
    pub api_key_exchanges: IntCounterVec,
}

impl GatewayMetrics {
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let upstream = IntCounterVec::new(
            Opts::new("gateway_upstream_responses_total", "Upstream responses by service and status"),
            &["service", "status"],
        )?;
        let upstream_latency = HistogramVec::new(
            HistogramOpts::new("gateway_upstream_duration_seconds", "Upstream time to response head")
                .buckets(vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0,
                ]),
            &["service"],
        )?;
        let upstream_failures = IntCounterVec::new(
            Opts::new("gateway_upstream_failures_total", "Proxied requests that got no answer from the service, by kind: unreachable, timeout, dropped (a kept-alive connection closed unanswered)"),
            &["service", "kind"],
        )?;
        let auth_failures = IntCounterVec::new(
            Opts::new("gateway_auth_failures_total", "Requests refused at the edge"),
            &["reason"],
        )?;
        let rate_limited = IntCounterVec::new(
            Opts::new("gateway_rate_limited_total", "Requests refused by a rate limit"),
            &["route"],
        )?;
        let upstream_healthy = IntGaugeVec::new(
            Opts::new("gateway_upstream_healthy", "1 if the instance passed its last health probe"),
            &["service", "url"],
        )?;
        let api_key_exchanges = IntCounterVec::new(
            Opts::new(
                "gateway_api_key_exchanges_total",
                "X-API-KEY exchanges for service tokens at kms, by outcome: issued, refused, unavailable",
            ),
            &["outcome"],
        )?;
        for metric in [&upstream_failures, &auth_failures, &rate_limited, &api_key_exchanges] {
            registry.register(Box::new(metric.clone()))?;
        }
        registry.register(Box::new(upstream_healthy.clone()))?;
        Ok(Self {
            upstream: Family::register(upstream, registry)?,
            upstream_latency: Family::register(upstream_latency, registry)?,
            upstream_failures,
            auth_failures,
            rate_limited,
            upstream_healthy,
            api_key_exchanges,
        })
    }
}
