//! Rate limits at the edge: a token bucket per caller (user, service, or client address for
//! anonymous calls), with per-route overrides, and one per caller for registrations. Answers
//! 429 with `Retry-After` and the `RateLimit-Limit` / `RateLimit-Remaining` headers of the IETF
//! draft.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use rustc_hash::FxHashMap;

use super::config::{GatewayConfig, RateLimitConfig};
use crate::platform::cache::TtlCache;
use crate::platform::error::{ApiError, ErrorCode};

/// Buckets are keyed by a keyed hash of (route, caller) rather than a formatted string: no
/// allocation per request, and with a 64-bit hash under a per-process random key two callers
/// share a bucket only by an accident nobody can aim for.
type Limiter = RateLimiter<
    u64,
    governor::state::keyed::DefaultKeyedStateStore<u64>,
    DefaultClock,
    StateInformationMiddleware,
>;

/// Who a request counts against. The kind is part of the bucket's key: a user who registered
/// a service's name (or an address) has a bucket of its own, not that service's.
#[derive(Hash)]
pub enum Caller<'a> {
    /// A verified user, by username.
    User(&'a str),
    /// A verified service (a service token or an API key), by service name.
    Service(&'a str),
    /// An anonymous client, by address (None when the address is unknown).
    Address(Option<IpAddr>),
}

/// One limiter for the default rule and one per route prefix that overrides it, plus the
/// budget of failed authentications per client address.
pub struct EdgeLimits {
    default: Option<(Limiter, u32)>,
    per_route: FxHashMap<String, (Limiter, u32)>,
    /// Failed authentications per client address. Rate limits proper apply to a verified
    /// caller, so without this an anonymous client could try keys (each an uncached call to
    /// kms) as fast as it likes.
    failures: Option<DefaultKeyedRateLimiter<IpAddr>>,
    /// Addresses that ran out of failures, until when: refused before any verification.
    throttled: TtlCache<IpAddr, Instant>,
    /// Registrations (`POST /registry`) per caller.
    registrations: Option<(Limiter, u32)>,
    /// The random key of the bucket hashes.
    keys: std::hash::RandomState,
}

/// The longest an address stays throttled after exhausting its failure budget.
const MAX_THROTTLE: Duration = Duration::from_secs(60);

/// What to add to a response that was allowed.
pub struct Allowance {
    pub limit: u32,
    pub remaining: u32,
}

fn limiter(rule: &RateLimitConfig) -> Option<(Limiter, u32)> {
    let per_second = NonZeroU32::new(rule.requests_per_second)?;
    let burst = NonZeroU32::new(rule.burst.max(1)).unwrap_or(NonZeroU32::MIN);
    let quota = Quota::per_second(per_second).allow_burst(burst);
    Some((RateLimiter::keyed(quota).with_middleware::<StateInformationMiddleware>(), burst.get()))
}

impl EdgeLimits {
    pub fn new(config: &GatewayConfig) -> Self {
        let failures = NonZeroU32::new(config.auth_failure_limit.requests_per_second).map(|per_second| {
            let burst = NonZeroU32::new(config.auth_failure_limit.burst.max(1)).unwrap_or(NonZeroU32::MIN);
            RateLimiter::keyed(Quota::per_second(per_second).allow_burst(burst))
        });
        Self {
            default: limiter(&config.rate_limit),
            per_route: config
                .route_limits
                .iter()
                .filter_map(|(prefix, rule)| Some((prefix.clone(), limiter(rule)?)))
                .collect(),
            failures,
            throttled: TtlCache::new(MAX_THROTTLE, 10_000),
            registrations: limiter(&config.registry_rate_limit),
            keys: std::hash::RandomState::new(),
        }
    }

    /// 429 while `addr` is throttled for failing authentication too often.
    pub fn check_throttled(&self, addr: IpAddr) -> Result<(), ApiError> {
        match self.throttled.get(&addr) {
            Some(until) if until > Instant::now() => Err(too_many(until - Instant::now(), None)),
            _ => Ok(()),
        }
    }

    /// Counts a failed authentication from `addr`; the one that exhausts its budget throttles
    /// the address (and is answered 429 itself).
    pub fn record_failure(&self, addr: IpAddr) -> Result<(), ApiError> {
        let Some(failures) = &self.failures else { return Ok(()) };
        match failures.check_key(&addr) {
            Ok(()) => Ok(()),
            Err(not_until) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now()).min(MAX_THROTTLE);
                self.throttled.insert(addr, Instant::now() + wait);
                Err(too_many(wait, None))
            }
        }
    }

    /// Takes one request from `caller`'s bucket for this route, or says how long to wait.
    /// The bucket is per route too: the default limiter is shared by routes.
    pub fn check(&self, prefix: &str, caller: Caller<'_>) -> Result<Option<Allowance>, ApiError> {
        use std::hash::BuildHasher;
        let Some((limiter, limit)) = self.per_route.get(prefix).or(self.default.as_ref()) else {
            return Ok(None);
        };
        match limiter.check_key(&self.keys.hash_one((prefix, caller))) {
            Ok(snapshot) => {
                Ok(Some(Allowance { limit: *limit, remaining: snapshot.remaining_burst_capacity() }))
            }
            Err(not_until) => {
                Err(too_many(not_until.wait_time_from(DefaultClock::default().now()), Some(*limit)))
            }
        }
    }

    /// Takes one registration from `caller`'s bucket, or says how long to wait.
    pub fn check_registration(&self, caller: Caller<'_>) -> Result<(), ApiError> {
        use std::hash::BuildHasher;
        let Some((limiter, limit)) = &self.registrations else { return Ok(()) };
        limiter.check_key(&self.keys.hash_one(caller)).map(|_| ()).map_err(|not_until| {
            too_many(not_until.wait_time_from(DefaultClock::default().now()), Some(*limit))
        })
    }

    /// Drops idle buckets so that a spray of distinct callers cannot grow memory forever.
    pub fn shrink(&self) {
        for (limiter, _) in self.default.iter().chain(&self.registrations) {
            limiter.retain_recent();
        }
        for (limiter, _) in self.per_route.values() {
            limiter.retain_recent();
        }
        if let Some(failures) = &self.failures {
            failures.retain_recent();
        }
    }
}

/// 429 with `Retry-After` rounded up to whole seconds.
fn too_many(wait: Duration, limit: Option<u32>) -> ApiError {
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let error = ApiError::from_code(ErrorCode::RateLimited).with_retry_after(seconds.max(1));
    match limit {
        Some(limit) => error.with_details(serde_json::json!({ "limit": limit })),
        None => error,
    }
}
