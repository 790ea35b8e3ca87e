//! The API Gateway role: the proxy (`proxy.rs`: edge auth, routing, header hygiene, limits), the
//! service registry behind `GET /lookup/{service}` (`registry.rs`), upstream health
//! (`health.rs`), revocations from kms's events (`revocations.rs`).

mod admitted;
mod health;
mod limits;
mod metrics;
mod pool;
mod proxy;
mod registry;
mod revocations;
mod upstream;

use std::time::Duration;

use actix_web::web;
use utoipa::OpenApi;

use self::registry::GatewayState;
use super::RoleSpec;
use crate::platform::error::ErrorBody;
use crate::platform::identity::RemoteKeys;
use crate::platform::server::{RoleContext, RoleState};
use crate::platform::standard::BearerAuth;

pub const ROLE: RoleSpec = RoleSpec {
    name: "gateway",
    title: "API Gateway",
    default_port: 8000,
    description: "The one public entry to FountainAI: verifies JWTs and API keys, routes each path prefix to its service, keeps the service registry behind GET /lookup/{service}, cleans headers and enforces rate limits and step-up MFA.",
    routes,
    openapi,
    init,
};

fn init(ctx: &RoleContext) -> Result<Option<RoleState>, String> {
    let static_entries =
        ctx.config.peers.iter().map(|(s, u)| (s.clone(), u.trim_end_matches('/').to_string())).collect();
    let keys = web::Data::new(RemoteKeys::from_config(&ctx.config));
    let trusted = ctx.config.server.trusted_proxies.clone();
    let metrics = metrics::GatewayMetrics::register(ctx.metrics.registry()).map_err(|e| e.to_string())?;
    let state =
        GatewayState::new(ctx.db.clone(), keys, ctx.config.gateway.clone(), static_entries, trusted, metrics);
    actix_web::rt::spawn(state.revocations.clone().follow(ctx.db.clone(), ctx.shutdown.clone()));
    let gateway = &ctx.config.gateway;
    actix_web::rt::spawn(health::probe_until_stopped(
        state.clone(),
        Duration::from_millis(gateway.health_check_interval_ms),
        Duration::from_millis(gateway.health_check_timeout_ms.max(1)),
        ctx.shutdown.clone(),
    ));
    let janitor = state.clone();
    let mut shutdown = ctx.shutdown.clone();
    actix_web::rt::spawn(async move {
        // Idle rate-limit buckets are dropped once a minute until the host stops.
        loop {
            tokio::select! {
                _ = actix_web::rt::time::sleep(Duration::from_secs(60)) => janitor.limits.shrink(),
                _ = shutdown.changed() => return,
            }
        }
    });
    Ok(Some(state))
}

fn routes(cfg: &mut web::ServiceConfig, ctx: &RoleContext) {
    if let Some(state) = ctx.state::<GatewayState>() {
        cfg.app_data(state.keys.clone());
        cfg.app_data(web::Data::from(state));
    }
    // Per worker thread: awc for the gateway's own calls to kms (awc clients stay on their
    // thread), the worker's own connection pool for proxied requests.
    cfg.app_data(web::Data::new(awc::Client::builder().disable_redirects().finish()));
    cfg.app_data(web::Data::new(pool::UpstreamClient::default()));
    cfg.service(web::resource("/registry").post(registry::register).get(registry::list))
        // In a scope: its static prefix is all the router checks for proxied paths.
        .service(web::scope("/lookup").service(web::resource("/{service}").get(registry::lookup)))
        // Everything else is proxied by prefix (unrouted prefixes answer 404). A default service
        // rather than a `/{prefix}/{tail:.*}` resource: no pattern matching on the hot path.
        .default_service(web::to(proxy::forward));
}

#[derive(OpenApi)]
#[openapi(
    paths(registry::register, registry::list, registry::lookup),
    components(schemas(registry::RegisterRequest, registry::RegistryEntry, registry::RegistryList, registry::Lookup, ErrorBody)),
    modifiers(&BearerAuth),
    tags((name = "Discovery", description = "Service registry and lookup"))
)]
struct GatewayApi;

fn openapi() -> utoipa::openapi::OpenApi {
    GatewayApi::openapi()
}
