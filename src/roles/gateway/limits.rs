//! Rate limits at the edge: a token bucket per caller (user, API-key service, or client address
//! for anonymous calls), with per-route overrides. Answers 429 with `Retry-After` and the
//! `RateLimit-Limit` / `RateLimit-Remaining` headers of the IETF draft.

use std::collections::HashMap;
use std::num::NonZeroU32;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::{Quota, RateLimiter};

use crate::config::RateLimitConfig;
use crate::platform::error::{ApiError, ErrorCode};

type Limiter = RateLimiter<
    String,
    governor::state::keyed::DefaultKeyedStateStore<String>,
    DefaultClock,
    StateInformationMiddleware,
>;

/// One limiter for the default rule and one per route prefix that overrides it.
pub struct EdgeLimits {
    default: Option<(Limiter, u32)>,
    per_route: HashMap<String, (Limiter, u32)>,
}

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
    pub fn new(
        default: &RateLimitConfig,
        per_route: &std::collections::BTreeMap<String, RateLimitConfig>,
    ) -> Self {
        Self {
            default: limiter(default),
            per_route: per_route
                .iter()
                .filter_map(|(prefix, rule)| Some((prefix.clone(), limiter(rule)?)))
                .collect(),
        }
    }

    /// Takes one request from `caller`'s bucket for this route, or says how long to wait.
    /// `caller` names the route too (`prefix|who`): the default limiter is shared by routes.
    pub fn check(&self, prefix: &str, caller: &String) -> Result<Option<Allowance>, ApiError> {
        let Some((limiter, limit)) = self.per_route.get(prefix).or(self.default.as_ref()) else {
            return Ok(None);
        };
        match limiter.check_key(caller) {
            Ok(snapshot) => {
                Ok(Some(Allowance { limit: *limit, remaining: snapshot.remaining_burst_capacity() }))
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                Err(ApiError::from_code(ErrorCode::RateLimited)
                    .with_retry_after(seconds.max(1))
                    .with_details(serde_json::json!({ "limit": limit })))
            }
        }
    }

    /// Drops idle buckets so that a spray of distinct callers cannot grow memory forever.
    pub fn shrink(&self) {
        if let Some((limiter, _)) = &self.default {
            limiter.retain_recent();
        }
        for (limiter, _) in self.per_route.values() {
            limiter.retain_recent();
        }
    }
}
