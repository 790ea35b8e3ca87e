//! The gateway's own settings: `[roles.gateway]` in configuration.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// How long the gateway waits for an upstream's response head before answering 504.
    pub upstream_timeout_seconds: u64,
    /// Every known instance gets `GET /health` this often (0: no active checks).
    pub health_check_interval_ms: u64,
    /// A probe that takes longer than this fails.
    pub health_check_timeout_ms: u64,
    /// How long an instance that a request could not reach is skipped (passive health).
    pub failure_cool_down_ms: u64,
    /// Paths that pass without credentials: exact paths, or prefixes ending in `*`.
    /// `/<prefix>/health` of every route is always public.
    pub public_routes: Vec<String>,
    /// How long an X-API-KEY verdict from kms is reused.
    pub api_key_cache_ttl_ms: u64,
    /// Largest request body the gateway streams to an upstream (larger: 413).
    pub max_body_bytes: u64,
    /// Services that receive the client's `Authorization` header (fountain's roles check
    /// tokens themselves); other upstreams only see `X-Fountain-User` / `X-Fountain-Roles`.
    pub forward_authorization_to: Vec<String>,
    /// Path prefix -> service name (`/service_a/...` goes to `sequence`).
    pub routes: BTreeMap<String, String>,
    /// Requests per caller (user, API-key service, or client address when anonymous).
    pub rate_limit: RateLimitConfig,
    /// Route prefix -> its own limit instead of `rate_limit`.
    pub route_limits: BTreeMap<String, RateLimitConfig>,
    /// Failed authentications per client address; past it the address gets 429 without any
    /// credential check until its bucket refills.
    pub auth_failure_limit: RateLimitConfig,
    /// Per-route access rules, checked after authentication.
    pub rules: Vec<RouteRule>,
    /// Private networks (`10.0.0.0/8`, `fd00::/8`, single addresses) registered instances may
    /// be in. Loopback and public addresses are always allowed; link-local and cloud metadata
    /// addresses never are.
    pub registry_allowed_networks: Vec<String>,
    /// Live registered instances per service; a registration past it is refused (409).
    pub registry_max_instances_per_service: u32,
    /// Registrations per caller (heartbeats included).
    pub registry_rate_limit: RateLimitConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteRule {
    /// An exact gateway path, or a prefix ending in `*`.
    pub path: String,
    /// Methods the rule applies to; empty: all.
    #[serde(default)]
    pub methods: Vec<String>,
    /// The caller must hold one of these roles (exact match); empty: any authenticated caller.
    #[serde(default)]
    pub roles: Vec<String>,
    /// The caller's token must carry `mfa: true` (a twofa step-up).
    #[serde(default)]
    pub mfa: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Sustained rate; 0 turns the limit off.
    pub requests_per_second: u32,
    /// Requests allowed at once before the rate applies.
    pub burst: u32,
}
