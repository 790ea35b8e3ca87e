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
    /// Services that receive a verified `X-API-KEY` itself (seed-era backends) instead of the
    /// service token the gateway exchanges it for.
    pub forward_api_key_to: Vec<String>,
    /// Path prefix -> service (`/service_a/...` goes to `sequence`): a service name, or a table
    /// that also says whether the prefix is stripped.
    pub routes: BTreeMap<String, RouteTarget>,
    /// A service registered under a name no route mentions is reachable at `/{service}/...`.
    pub route_registered_services: bool,
    /// Whether `mfa = true` rules are enforced (they need a step-up issuer: the twofa role).
    pub enforce_mfa: bool,
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

/// Where a route prefix goes: `kms = "kms"`, `search = { service = "search", strip_prefix = false }`,
/// or `reports = { service = "reporting", registered = true }` for a service that has no `[peers]`
/// entry and is found only in the registry.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RouteTarget {
    Service(String),
    Table(RouteTable),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteTable {
    pub service: String,
    /// `false`: `/{prefix}/rest` reaches the service as `/{prefix}/rest` (default: `/rest`).
    #[serde(default = "strip_by_default")]
    pub strip_prefix: bool,
    /// The service has no `[peers]` entry: its instances register themselves. Saying so is what
    /// tells such a route apart from a misspelt service name.
    #[serde(default)]
    pub registered: bool,
}

fn strip_by_default() -> bool {
    true
}

impl RouteTarget {
    pub fn service(&self) -> &str {
        match self {
            RouteTarget::Service(service) => service,
            RouteTarget::Table(table) => &table.service,
        }
    }

    /// Declared as found only through the registry.
    pub fn registered(&self) -> bool {
        matches!(self, RouteTarget::Table(table) if table.registered)
    }

    pub fn strip_prefix(&self) -> bool {
        match self {
            RouteTarget::Service(_) => true,
            RouteTarget::Table(table) => table.strip_prefix,
        }
    }
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
