//! Service discovery: instances register themselves (TTL + heartbeat), static entries come from
//! `[peers]`, and `GET /lookup/{service}` answers with one live URL, round-robin.

use std::cell::RefCell;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use actix_web::{web, HttpResponse};
use chrono::NaiveDateTime;
use diesel::prelude::*;
use hyper::header::HeaderValue as UpstreamHeaderValue;
use rustc_hash::{FxHashMap, FxHashSet};
use serde::Serialize;
use utoipa::ToSchema;

use super::api_keys::ApiKeys;
use super::health::{Choice, Health};
use super::limits::Caller;
use super::network::{normalise, AddressPolicy, Refused};
use crate::platform::cache::TtlCache;
use crate::platform::contracts::TRUSTED_ISSUER_ROLE;
pub use crate::platform::contracts::{Lookup, RegisterRequest};
use crate::platform::db::{AnyConnection, Db, DbError};
use crate::platform::error::{ApiError, ApiResult, ErrorCode};
use crate::platform::extract::Json;
use crate::platform::guards::AdminOrService;
use crate::platform::middleware::RouteLabel;
use crate::platform::names::validate_service_name;
use crate::platform::trust::Verifier;

diesel::table! {
    registry (service, url) {
        service -> Text,
        url -> Text,
        registered_by -> Text,
        expires_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

const MIN_TTL: u64 = 5;
const MAX_TTL: u64 = 3600;

/// One `[gateway.routes]` entry (or a registered service reached under its own name), prepared
/// once so that the proxy's hot path allocates nothing to find it.
pub struct Route {
    pub service: Arc<str>,
    /// The metrics label of requests under this prefix (`/kms/*`).
    pub label: RouteLabel,
    /// The service takes tokens: it receives the client's `Authorization` header, and an
    /// X-API-KEY caller's service token.
    pub forward_authorization: bool,
    /// The service receives a verified X-API-KEY itself (and no token for it).
    pub forward_api_key: bool,
    /// The service is kms, the issuer of every credential: its `/token` refusals count as
    /// failed authentications of the client address.
    pub issuer: bool,
    /// `/{prefix}/rest` reaches the service as `/rest` (else as the whole path).
    pub strip_prefix: bool,
    /// `X-Forwarded-Prefix` (`/kms`) for a service whose prefix is stripped.
    pub forwarded_prefix: Option<UpstreamHeaderValue>,
}

/// A header value made once and kept for the life of the process: cloning it copies a pointer,
/// with no allocation and no reference count shared between workers. (The interner is the one
/// behind route labels; route prefixes are few and fixed by configuration or registration.)
fn static_header(text: &str) -> Option<UpstreamHeaderValue> {
    let interned: &'static str = RouteLabel::interned(text).0;
    UpstreamHeaderValue::from_maybe_shared(web::Bytes::from_static(interned.as_bytes())).ok()
}

pub struct GatewayState {
    /// Tells this gateway's entries in per-worker memos from another's (tests run several).
    pub instance: u64,
    pub db: Db,
    /// The process's one token verifier (signature, claims, revocation).
    pub verifier: Arc<Verifier>,
    pub config: super::config::GatewayConfig,
    pub routes: FxHashMap<String, Route>,
    /// Routes to registered services that no configured prefix names, made on first use.
    registered_routes: RwLock<FxHashMap<String, Arc<Route>>>,
    /// The names with live registry entries, as last read.
    registered_names: TtlCache<(), Arc<FxHashSet<String>>>,
    pub api_keys: Arc<ApiKeys>,
    pub limits: super::limits::EdgeLimits,
    pub trusted_proxies: Vec<std::net::IpAddr>,
    pub metrics: super::metrics::GatewayMetrics,
    pub health: Health,
    /// Where registered instances may be (registration, probes and every worker's pool).
    pub address_policy: Arc<AddressPolicy>,
    /// fountain's role names: only the role itself may register one.
    fountain_roles: Vec<Box<str>>,
    /// Static entries (`[peers]`): never expire.
    pub static_entries: Vec<(String, Arc<str>)>,
    /// Live instances per service as last read from the registry table: the proxy's hot path
    /// must not query the database on every request.
    instances: TtlCache<String, Arc<[Arc<str>]>>,
    /// Bumped whenever `instances` is cleared, so that workers drop their copies at once.
    instances_generation: std::sync::atomic::AtomicU64,
}

/// How long a read of the registry table is reused (registrations here clear it at once). A
/// worker's own copy of a read lives as long again, so an instance that stopped heartbeating
/// (or was registered through another gateway) is seen at most two TTLs late.
const INSTANCES_TTL: std::time::Duration = std::time::Duration::from_secs(1);

impl GatewayState {
    pub fn new(
        db: Db,
        verifier: Arc<Verifier>,
        config: super::config::GatewayConfig,
        fountain_roles: &[&str],
        static_entries: Vec<(String, String)>,
        trusted_proxies: Vec<std::net::IpAddr>,
        metrics: super::metrics::GatewayMetrics,
    ) -> Result<Arc<Self>, String> {
        let address_policy = Arc::new(AddressPolicy::new(
            &config.registry_allowed_networks,
            static_entries.iter().map(|(_, url)| url.as_str()),
        )?);
        let limits = super::limits::EdgeLimits::new(&config);
        let api_keys = Arc::new(ApiKeys::new(std::time::Duration::from_millis(config.api_key_cache_ttl_ms)));
        let routes = config
            .routes
            .iter()
            .map(|(prefix, target)| {
                let route =
                    make_route(&config, fountain_roles, prefix, target.service(), target.strip_prefix());
                (prefix.clone(), route)
            })
            .collect();
        static INSTANCES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        Ok(Arc::new(Self {
            instance: INSTANCES.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            db,
            verifier,
            health: Health::new(std::time::Duration::from_millis(config.failure_cool_down_ms)),
            config,
            routes,
            registered_routes: RwLock::default(),
            registered_names: TtlCache::new(INSTANCES_TTL, 1),
            limits,
            trusted_proxies,
            metrics,
            api_keys,
            static_entries: static_entries.into_iter().map(|(s, u)| (s, Arc::from(u))).collect(),
            instances: TtlCache::new(INSTANCES_TTL, 10_000),
            instances_generation: Default::default(),
            address_policy,
            fountain_roles: fountain_roles.iter().map(|r| Box::from(*r)).collect(),
        }))
    }

    /// One instance of `service`: live registered instances round-robin, skipping unhealthy
    /// ones (unless all are), else the static entries.
    pub async fn resolve(&self, service: &str) -> ApiResult<Option<Choice>> {
        let generation = self.instances_generation.load(std::sync::atomic::Ordering::Acquire);
        let urls = match recall_instances(self.instance, service, generation) {
            Some(urls) => urls,
            None => {
                let shared = self.shared_instances(service).await?;
                remember_instances(self.instance, service, generation, &shared)
            }
        };
        if urls.is_empty() {
            return Ok(None);
        }
        Ok(self.health.choose(&urls, next_turn()))
    }

    /// The instances of `service` from the shared cache, reading the registry table when the
    /// cached read is older than its TTL. kms, which verifies every credential, is always the
    /// configured `[peers]` entry: no registration can put another listener in its place.
    async fn shared_instances(&self, service: &str) -> ApiResult<Arc<[Arc<str>]>> {
        if let Some(urls) = self.instances.get(service) {
            return Ok(urls);
        }
        let mut urls: Vec<Arc<str>> = if service == TRUSTED_ISSUER_ROLE {
            Vec::new()
        } else {
            let name = service.to_string();
            let rows = self.db.run(move |conn| live(conn, Some(&name))).await?;
            rows.into_iter().map(|(_, url, _)| Arc::from(url)).collect()
        };
        if urls.is_empty() {
            urls.extend(self.static_entries.iter().filter(|(s, _)| s == service).map(|(_, u)| u.clone()));
        }
        let urls: Arc<[Arc<str>]> = urls.into();
        self.instances.insert(service.to_string(), urls.clone());
        Ok(urls)
    }

    /// The route to a service registered under `prefix` when no configured route names it
    /// (`route_registered_services`); `None` for a name nobody registered. Never the gateway
    /// itself: `/gateway/gateway/…` would send one request round the gateway once per segment.
    pub async fn registered_route(&self, prefix: &str) -> ApiResult<Option<Arc<Route>>> {
        if !self.config.route_registered_services
            || prefix == super::ABOUT.name
            || validate_service_name("service", prefix).is_err()
        {
            return Ok(None);
        }
        if !self.registered_names().await?.contains(prefix) {
            return Ok(None);
        }
        if let Some(route) = self.registered_routes.read().unwrap_or_else(|e| e.into_inner()).get(prefix) {
            return Ok(Some(route.clone()));
        }
        let route = Arc::new(make_route(&self.config, &self.fountain_roles, prefix, prefix, true));
        let mut routes = self.registered_routes.write().unwrap_or_else(|e| e.into_inner());
        Ok(Some(routes.entry(prefix.to_string()).or_insert(route).clone()))
    }

    /// The services with live registry entries: read at most once per `INSTANCES_TTL` (and
    /// after each registration), however many unknown prefixes clients ask for.
    async fn registered_names(&self) -> ApiResult<Arc<FxHashSet<String>>> {
        if let Some(names) = self.registered_names.get(&()) {
            return Ok(names);
        }
        let rows = self.db.run(|conn| live(conn, None)).await?;
        let names: Arc<FxHashSet<String>> =
            Arc::new(rows.into_iter().map(|(service, _, _)| service).collect());
        self.registered_names.insert((), names.clone());
        Ok(names)
    }

    /// After a registration: every worker rereads.
    fn forget_instances(&self) {
        self.instances.clear();
        self.registered_names.clear();
        self.instances_generation.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    /// Every instance the gateway knows, static and registered, for the health probes.
    pub async fn all_instances(&self) -> Result<Vec<(String, Arc<str>)>, DbError> {
        let rows = self.db.run(|conn| live(conn, None)).await?;
        let mut all: Vec<(String, Arc<str>)> =
            rows.into_iter().map(|(s, url, _)| (s, Arc::from(url))).collect();
        all.extend(self.static_entries.iter().cloned());
        all.sort();
        all.dedup();
        Ok(all)
    }
}

/// The route to `service` under `prefix`. fountain's roles and `forward_authorization_to` take
/// tokens; `forward_api_key_to` receive a verified X-API-KEY itself instead.
fn make_route<R: AsRef<str>>(
    config: &super::config::GatewayConfig,
    fountain_roles: &[R],
    prefix: &str,
    service: &str,
    strip_prefix: bool,
) -> Route {
    let forward_api_key = config.forward_api_key_to.iter().any(|s| s == service);
    Route {
        service: Arc::from(service),
        label: RouteLabel::interned(&format!("/{prefix}/*")),
        forward_authorization: fountain_roles.iter().any(|r| r.as_ref() == service)
            || config.forward_authorization_to.iter().any(|s| s == service),
        forward_api_key,
        issuer: service == TRUSTED_ISSUER_ROLE,
        strip_prefix,
        forwarded_prefix: strip_prefix.then(|| static_header(&format!("/{prefix}"))).flatten(),
    }
}

/// A worker's own copy of a service's instances: its own reference counts, no lock.
struct InstancesMemo {
    urls: Arc<[Arc<str>]>,
    generation: u64,
    read_at: Instant,
}

thread_local! {
    /// By gateway (tests run several), then service.
    static INSTANCES: RefCell<FxHashMap<u64, FxHashMap<String, InstancesMemo>>> =
        RefCell::new(FxHashMap::default());
}

fn recall_instances(gateway: u64, service: &str, generation: u64) -> Option<Arc<[Arc<str>]>> {
    INSTANCES.with_borrow(|memo| {
        let entry = memo.get(&gateway)?.get(service)?;
        (entry.generation == generation && entry.read_at.elapsed() < INSTANCES_TTL)
            .then(|| entry.urls.clone())
    })
}

fn remember_instances(gateway: u64, service: &str, generation: u64, shared: &[Arc<str>]) -> Arc<[Arc<str>]> {
    let urls: Arc<[Arc<str>]> = shared.iter().map(|url| Arc::from(&**url)).collect();
    let entry = InstancesMemo { urls: urls.clone(), generation, read_at: Instant::now() };
    INSTANCES.with_borrow_mut(|memo| memo.entry(gateway).or_default().insert(service.to_string(), entry));
    urls
}

thread_local! {
    /// Round-robin position, per worker: each worker still spreads its requests evenly, and no
    /// counter is shared between cores on every request.
    static TURN: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

fn next_turn() -> usize {
    TURN.with(|turn| {
        let current = turn.get();
        turn.set(current.wrapping_add(1));
        current
    })
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegistryEntry {
    pub service: String,
    pub url: String,
    /// From configuration: never expires.
    #[serde(rename = "static")]
    pub is_static: bool,
    /// RFC 3339 in UTC with a `Z`, like every other timestamp; null for static entries.
    #[serde(with = "crate::platform::time::utc_option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<NaiveDateTime>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RegistryList {
    pub entries: Vec<RegistryEntry>,
}

fn now() -> NaiveDateTime {
    chrono::Utc::now().naive_utc()
}

/// What became of a registration.
#[derive(Debug, PartialEq, Eq)]
enum Registered {
    /// A new instance, or a heartbeat of a known one.
    Done,
    /// The service has `registry_max_instances_per_service` live instances already.
    Full,
}

fn upsert(
    conn: &mut AnyConnection,
    service: &str,
    url: &str,
    by: &str,
    ttl: u64,
    max_instances: u32,
) -> Result<Registered, DbError> {
    let expires = now() + chrono::Duration::seconds(ttl as i64);
    crate::platform::db::transaction(conn, |conn| {
        if let AnyConnection::Postgres(pg) = conn {
            // Registrations of one service queue, so that concurrent ones cannot pass the cap
            // together. (SQLite's BEGIN IMMEDIATE serialises writers anyway.) The name is a
            // validated service name.
            use diesel::connection::SimpleConnection;
            pg.batch_execute(&format!(
                "SELECT pg_advisory_xact_lock(hashtext('fountain.registry/{service}'))"
            ))?;
        }
        // Expired entries are dead weight, and must not count against the cap.
        diesel::delete(registry::table.filter(registry::expires_at.lt(now()))).execute(conn)?;
        let updated = diesel::update(
            registry::table.filter(registry::service.eq(service)).filter(registry::url.eq(url)),
        )
        .set((
            registry::expires_at.eq(expires),
            registry::updated_at.eq(now()),
            registry::registered_by.eq(by),
        ))
        .execute(conn)?;
        if updated > 0 {
            return Ok(Registered::Done);
        }
        let instances: i64 =
            registry::table.filter(registry::service.eq(service)).count().get_result(conn)?;
        if instances >= i64::from(max_instances) {
            return Ok(Registered::Full);
        }
        diesel::insert_into(registry::table)
            .values((
                registry::service.eq(service),
                registry::url.eq(url),
                registry::registered_by.eq(by),
                registry::expires_at.eq(expires),
                registry::updated_at.eq(now()),
            ))
            .execute(conn)?;
        Ok(Registered::Done)
    })
}

fn live(
    conn: &mut AnyConnection,
    service: Option<&str>,
) -> Result<Vec<(String, String, NaiveDateTime)>, DbError> {
    let mut query = registry::table
        .filter(registry::expires_at.gt(now()))
        .select((registry::service, registry::url, registry::expires_at))
        .into_boxed();
    if let Some(service) = service {
        query = query.filter(registry::service.eq(service.to_string()));
    }
    Ok(query.order((registry::service.asc(), registry::url.asc())).load(conn)?)
}

/// The instance URL as stored: plain `http://` with a host, no credentials, query or fragment,
/// in the URL parser's serialisation (so that what is checked is what is connected to).
fn instance_url(raw: &str) -> ApiResult<url::Url> {
    let invalid =
        || ApiError::validation("url", "must be an http:// URL without credentials, query or fragment");
    if raw.len() > 2048 {
        return Err(invalid());
    }
    let url = url::Url::parse(raw).map_err(|_| invalid())?;
    let plain = url.scheme() == "http"
        && url.host_str().is_some()
        && url.username().is_empty()
        && url.password().is_none()
        && url.query().is_none()
        && url.fragment().is_none();
    if plain {
        Ok(url)
    } else {
        Err(invalid())
    }
}

/// Refuses an instance URL whose host is, or resolves to, an address the gateway may not send
/// requests to. The service's own `[peers]` URL is the operator's choice and always passes. A
/// name that does not resolve (yet) is accepted: the gateway checks it again whenever it
/// connects.
async fn check_destination(
    state: &GatewayState,
    service: &str,
    url: &url::Url,
    stored: &str,
) -> ApiResult<()> {
    if state.static_entries.iter().any(|(s, u)| s == service && normalise(u).as_deref() == Some(stored)) {
        return Ok(());
    }
    let host = url.host_str().unwrap_or_default();
    match state.address_policy.resolve(host, url.port_or_known_default().unwrap_or(80)).await {
        Ok(_) | Err(Refused::Unresolved) => Ok(()),
        Err(refused) => Err(ApiError::validation("url", refused.to_string())),
    }
}

/// Register a service instance
///
/// A service registers its own URL (admins any service but fountain's roles); the entry lives ttlSeconds unless renewed. The URL is plain http without credentials, query or fragment; its host may not be or resolve to a link-local, metadata or (unless allowed) private address.
#[utoipa::path(
    post, path = "/registry", operation_id = "registerServiceInstance", tag = "Discovery",
    request_body = RegisterRequest,
    responses(
        (status = 204, description = "Registered or renewed"),
        (status = 403, description = "A service may register only itself; a fountain role's name only that role", body = ErrorBody),
        (status = 409, description = "The service has the most live instances allowed", body = ErrorBody),
        (status = 422, description = "Invalid name, TTL or URL, or an address the gateway may not reach", body = ErrorBody),
        (status = 429, description = "Too many registrations from this caller", body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub async fn register(
    state: web::Data<GatewayState>,
    caller: AdminOrService,
    body: Json<RegisterRequest>,
) -> ApiResult<HttpResponse> {
    let claims = &caller.0;
    let service_caller = claims.is_service();
    let who = if service_caller { Caller::Service(&claims.sub) } else { Caller::User(&claims.sub) };
    state.limits.check_registration(who)?;
    let body = body.into_inner();
    validate_service_name("service", &body.service)?;
    if !(MIN_TTL..=MAX_TTL).contains(&body.ttl_seconds) {
        return Err(ApiError::validation("ttlSeconds", format!("must be between {MIN_TTL} and {MAX_TTL}")));
    }
    let itself = service_caller && claims.sub == body.service;
    if state.fountain_roles.iter().any(|role| **role == *body.service) {
        // Other roles find fountain's roles through the registry and send them their tokens.
        if !itself {
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                "only the role itself may register a fountain role",
            ));
        }
    } else if !claims.is_admin() && !itself {
        return Err(ApiError::new(ErrorCode::Forbidden, "a service may register only itself"));
    }
    let url = instance_url(&body.url)?;
    let stored = url.as_str().trim_end_matches('/').to_string();
    check_destination(&state, &body.service, &url, &stored).await?;
    let by = claims.sub.clone();
    let max = state.config.registry_max_instances_per_service;
    let service = body.service;
    let outcome =
        state.db.run(move |conn| upsert(conn, &service, &stored, &by, body.ttl_seconds, max)).await?;
    if outcome == Registered::Full {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!("the service has {max} live instances, the most allowed: renew one or let one expire"),
        )
        .with_details(serde_json::json!({ "maxInstances": max })));
    }
    state.forget_instances();
    Ok(HttpResponse::NoContent().finish())
}

/// List registered services
///
/// Service or admin. Every live dynamic entry and every static entry from configuration.
#[utoipa::path(
    get, path = "/registry", operation_id = "listServiceInstances", tag = "Discovery",
    responses((status = 200, description = "The registry", body = RegistryList)),
    security(("bearer" = []))
)]
pub async fn list(
    state: web::Data<GatewayState>,
    _caller: AdminOrService,
) -> ApiResult<web::Json<RegistryList>> {
    let dynamic = state.db.run(|conn| live(conn, None)).await?;
    let mut entries: Vec<RegistryEntry> = dynamic
        .into_iter()
        .map(|(service, url, expires)| RegistryEntry {
            service,
            url,
            is_static: false,
            expires_at: Some(expires),
        })
        .collect();
    entries.extend(state.static_entries.iter().map(|(service, url)| RegistryEntry {
        service: service.clone(),
        url: url.to_string(),
        is_static: true,
        expires_at: None,
    }));
    Ok(web::Json(RegistryList { entries }))
}

/// Look up a service
///
/// Service or admin. One URL of the service, round-robin over its healthy registered instances, else its static entry; `healthy` is false when every instance fails its health checks.
#[utoipa::path(
    get, path = "/lookup/{service}", operation_id = "lookupService", tag = "Discovery",
    params(("service" = String, Path, description = "Service name")),
    responses((status = 200, description = "Where to reach it", body = Lookup), (status = 404, description = "Unknown service", body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn lookup(
    state: web::Data<GatewayState>,
    _caller: AdminOrService,
    path: web::Path<String>,
) -> ApiResult<web::Json<Lookup>> {
    let service = path.into_inner();
    match state.resolve(&service).await? {
        Some(choice) => {
            Ok(web::Json(Lookup { service, url: choice.url.to_string(), healthy: choice.healthy }))
        }
        None => Err(ApiError::new(ErrorCode::NotFound, "no such service")),
    }
}
