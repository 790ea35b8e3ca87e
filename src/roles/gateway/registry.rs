//! Service discovery: instances register themselves (TTL + heartbeat), static entries come from
//! `[peers]`, and `GET /lookup/{service}` answers with one live URL, round-robin.

use std::cell::RefCell;
use std::sync::Arc;
use std::time::Instant;

use actix_web::{web, HttpResponse};
use chrono::NaiveDateTime;
use diesel::prelude::*;
use rustc_hash::FxHashMap;
use serde::Serialize;
use utoipa::ToSchema;

use super::health::{Choice, Health};
use crate::platform::cache::TtlCache;
pub use crate::platform::contracts::{Lookup, RegisterRequest};
use crate::platform::db::{AnyConnection, Db, DbError};
use crate::platform::error::{ApiError, ApiResult, ErrorCode};
use crate::platform::extract::Json;
use crate::platform::guards::AdminOrService;
use crate::platform::middleware::RouteLabel;
use crate::platform::names::validate_service_name;
use crate::platform::net::is_plain_http_url;
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

/// One `[gateway.routes]` entry, prepared once so that the proxy's hot path allocates nothing
/// to find it.
pub struct Route {
    pub service: Arc<str>,
    /// The metrics label of requests under this prefix (`/kms/*`).
    pub label: RouteLabel,
    /// The client's `Authorization` header goes through to this service.
    pub forward_authorization: bool,
}

pub struct GatewayState {
    /// Tells this gateway's entries in per-worker memos from another's (tests run several).
    pub instance: u64,
    pub db: Db,
    /// The process's one token verifier (signature, claims, revocation).
    pub verifier: Arc<Verifier>,
    pub config: super::config::GatewayConfig,
    pub routes: FxHashMap<String, Route>,
    pub api_keys: super::proxy::ApiKeyCache,
    pub limits: super::limits::EdgeLimits,
    pub trusted_proxies: Vec<std::net::IpAddr>,
    pub metrics: super::metrics::GatewayMetrics,
    pub health: Health,
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
    ) -> Arc<Self> {
        let limits = super::limits::EdgeLimits::new(&config);
        let api_keys = super::proxy::ApiKeyCache::new(
            std::time::Duration::from_millis(config.api_key_cache_ttl_ms),
            10_000,
        );
        let routes = config
            .routes
            .iter()
            .map(|(prefix, service)| {
                let route = Route {
                    service: Arc::from(service.as_str()),
                    label: RouteLabel::interned(&format!("/{prefix}/*")),
                    forward_authorization: fountain_roles.contains(&service.as_str())
                        || config.forward_authorization_to.contains(service),
                };
                (prefix.clone(), route)
            })
            .collect();
        static INSTANCES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        Arc::new(Self {
            instance: INSTANCES.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            db,
            verifier,
            health: Health::new(std::time::Duration::from_millis(config.failure_cool_down_ms)),
            config,
            routes,
            limits,
            trusted_proxies,
            metrics,
            api_keys,
            static_entries: static_entries.into_iter().map(|(s, u)| (s, Arc::from(u))).collect(),
            instances: TtlCache::new(INSTANCES_TTL, 10_000),
            instances_generation: Default::default(),
        })
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
    /// cached read is older than its TTL.
    async fn shared_instances(&self, service: &str) -> ApiResult<Arc<[Arc<str>]>> {
        if let Some(urls) = self.instances.get(service) {
            return Ok(urls);
        }
        let name = service.to_string();
        let rows = self.db.run(move |conn| live(conn, Some(&name))).await?;
        let mut urls: Vec<Arc<str>> = rows.into_iter().map(|(_, url, _)| Arc::from(url)).collect();
        if urls.is_empty() {
            urls.extend(self.static_entries.iter().filter(|(s, _)| s == service).map(|(_, u)| u.clone()));
        }
        let urls: Arc<[Arc<str>]> = urls.into();
        self.instances.insert(service.to_string(), urls.clone());
        Ok(urls)
    }

    /// After a registration: every worker rereads.
    fn forget_instances(&self) {
        self.instances.clear();
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

fn upsert(conn: &mut AnyConnection, service: &str, url: &str, by: &str, ttl: u64) -> Result<(), DbError> {
    let expires = now() + chrono::Duration::seconds(ttl as i64);
    crate::platform::db::transaction(conn, |conn| {
        let updated = diesel::update(
            registry::table.filter(registry::service.eq(service)).filter(registry::url.eq(url)),
        )
        .set((
            registry::expires_at.eq(expires),
            registry::updated_at.eq(now()),
            registry::registered_by.eq(by),
        ))
        .execute(conn)?;
        if updated == 0 {
            diesel::insert_into(registry::table)
                .values((
                    registry::service.eq(service),
                    registry::url.eq(url),
                    registry::registered_by.eq(by),
                    registry::expires_at.eq(expires),
                    registry::updated_at.eq(now()),
                ))
                .execute(conn)?;
        }
        // Expired entries are dead weight: drop them while here.
        diesel::delete(registry::table.filter(registry::expires_at.lt(now()))).execute(conn)?;
        Ok(())
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

fn check_url(raw: &str) -> ApiResult<()> {
    if is_plain_http_url(raw) && raw.len() <= 2048 {
        Ok(())
    } else {
        Err(ApiError::validation("url", "must be an http:// URL without credentials"))
    }
}

/// Register a service instance
///
/// A service registers its own URL (admins any); the entry lives ttlSeconds unless renewed by a heartbeat.
#[utoipa::path(
    post, path = "/registry", operation_id = "registerServiceInstance", tag = "Discovery",
    request_body = RegisterRequest,
    responses((status = 204, description = "Registered or renewed"), (status = 403, description = "A service may register only itself", body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn register(
    state: web::Data<GatewayState>,
    caller: AdminOrService,
    body: Json<RegisterRequest>,
) -> ApiResult<HttpResponse> {
    let body = body.into_inner();
    validate_service_name("service", &body.service)?;
    check_url(&body.url)?;
    if !(MIN_TTL..=MAX_TTL).contains(&body.ttl_seconds) {
        return Err(ApiError::validation("ttlSeconds", format!("must be between {MIN_TTL} and {MAX_TTL}")));
    }
    if !caller.0.is_admin() && caller.0.sub != body.service {
        return Err(ApiError::new(ErrorCode::Forbidden, "a service may register only itself"));
    }
    let by = caller.0.sub;
    let url = body.url.trim_end_matches('/').to_string();
    state.db.run(move |conn| upsert(conn, &body.service, &url, &by, body.ttl_seconds)).await?;
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
