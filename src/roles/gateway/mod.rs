//! The API Gateway role: the proxy (`proxy.rs`: edge auth, routing, header hygiene, limits) on
//! canonical paths (`path.rs`), the service registry behind `GET /lookup/{service}`
//! (`registry.rs`) and the addresses its instances may have (`network.rs`), upstream health
//! (`health.rs`). Tokens are checked through the process's one verifier (`platform::trust`).

mod admitted;
mod api_keys;
mod config;
mod health;
mod limits;
mod metrics;
mod network;
pub mod path;
mod pool;
mod proxy;
mod registry;
mod upstream;

pub use api_keys::ApiKeys;
pub use proxy::api_key;

use std::time::Duration;

use actix_web::web;
use utoipa::OpenApi;

use self::registry::GatewayState;
use crate::platform::error::ErrorBody;
use crate::platform::role::{About, Mount, Role, RoleContext};
use crate::platform::standard::BearerAuth;

const ABOUT: About = About {
    name: "gateway",
    title: "API Gateway",
    description: "The one public entry to FountainAI: verifies JWTs and API keys, routes each path prefix to its service, keeps the service registry behind GET /lookup/{service}, cleans headers and enforces rate limits and step-up MFA.",
    default_port: 8000,
};

pub struct Gateway;

impl Role for Gateway {
    fn about(&self) -> &'static About {
        &ABOUT
    }

    fn openapi(&self) -> utoipa::openapi::OpenApi {
        GatewayApi::openapi()
    }

    fn check_config(&self, config: &crate::config::Config) -> Result<(), String> {
        let gateway: config::GatewayConfig = config.role_settings("gateway")?;
        for (prefix, target) in &gateway.routes {
            let service = target.service();
            if crate::platform::names::validate_service_name("service", service).is_err() {
                return Err(format!("routes.{prefix}: {service:?} is not a service name"));
            }
            if !config.peers.contains_key(service) && !target.registered() {
                return Err(format!(
                    "routes.{prefix}: no service {service:?} (name a role, give its address in [peers], or write {{ service = {service:?}, registered = true }} for a service found only in the registry)"
                ));
            }
        }
        // Rules and public routes are compared with canonical paths (see `path.rs`): one that is
        // not canonical itself could never match.
        let rule_paths = gateway.rules.iter().map(|r| ("rules", &r.path));
        for (key, rule) in rule_paths.chain(gateway.public_routes.iter().map(|p| ("public_routes", p))) {
            let path = rule.strip_suffix('*').unwrap_or(rule);
            let canonical = path.is_empty()
                || (path.starts_with('/')
                    && !path.contains('%')
                    && matches!(path::canonical(path), Ok(std::borrow::Cow::Borrowed(_))));
            if !canonical {
                return Err(format!(
                    "{key}: {rule:?} must be a path as services route it: starting with '/', no '%', '\\', '//', '.' or '..' segments"
                ));
            }
        }
        for network in &gateway.registry_allowed_networks {
            network.parse::<network::Network>().map_err(|e| format!("registry_allowed_networks: {e}"))?;
        }
        if gateway.registry_max_instances_per_service == 0 {
            return Err("registry_max_instances_per_service: must be at least 1".into());
        }
        Ok(())
    }

    fn start(&self, ctx: &RoleContext) -> Result<Mount, String> {
        let static_entries =
            ctx.config.peers.iter().map(|(s, u)| (s.clone(), u.trim_end_matches('/').to_string())).collect();
        let metrics = metrics::GatewayMetrics::register(ctx.metrics.registry()).map_err(|e| e.to_string())?;
        let gateway: config::GatewayConfig = ctx.config.role_settings(self.name())?;
        let gateway = &gateway;
        if !gateway.enforce_mfa && gateway.rules.iter().any(|rule| rule.mfa) {
            log::info!(
                target: "fountain::gateway",
                "roles.gateway.enforce_mfa is off: rules with mfa = true are not enforced (step-up tokens from the twofa role pass them when it is on)"
            );
        }
        let state = GatewayState::new(
            ctx.db.clone(),
            ctx.verifier.clone(),
            gateway.clone(),
            &ctx.role_names,
            static_entries,
            ctx.trusted_proxies(),
            metrics,
        )?;
        ctx.spawn(
            "gateway.health",
            health::probe_until_stopped(
                state.clone(),
                Duration::from_millis(gateway.health_check_interval_ms),
                Duration::from_millis(gateway.health_check_timeout_ms.max(1)),
                ctx.shutdown.clone(),
            ),
        );
        // API-key verdicts and service tokens end with any change to a key: at once for changes
        // this process commits, and as the events table shows those of other processes.
        let keys = state.api_keys.clone();
        ctx.db.on_commit(std::sync::Arc::new(move |events| keys.apply(events)));
        ctx.spawn("gateway.api_keys", state.api_keys.clone().follow(ctx.db.clone(), ctx.shutdown.clone()));
        let janitor = state.clone();
        ctx.spawn("gateway.limits", async move {
            // Idle rate-limit buckets are dropped once a minute.
            loop {
                actix_web::rt::time::sleep(Duration::from_secs(60)).await;
                janitor.limits.shrink();
            }
        });
        let state = web::Data::from(state);
        Ok(Mount::routes(move |cfg| routes(cfg, state.clone())))
    }
}

fn routes(cfg: &mut web::ServiceConfig, state: web::Data<GatewayState>) {
    // Per worker thread: awc for the gateway's own calls to kms (awc clients stay on their
    // thread), the worker's own connection pool for proxied requests.
    cfg.app_data(web::Data::new(awc::Client::builder().disable_redirects().finish()));
    cfg.app_data(web::Data::new(pool::UpstreamClient::new(state.address_policy.clone())));
    cfg.app_data(state);
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
    modifiers(&BearerAuth, &ApiKeyAuth),
    tags((name = "Discovery", description = "Service registry and lookup"))
)]
struct GatewayApi;

/// Declares the `apiKey` scheme (`X-API-KEY` header) the edge accepts beside bearer tokens.
struct ApiKeyAuth;

impl utoipa::Modify for ApiKeyAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
        let scheme = ApiKey::Header(ApiKeyValue::with_description(
            "X-API-KEY",
            "A service's API key from kms; accepted on every proxied route",
        ));
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme("apiKey", SecurityScheme::ApiKey(scheme));
    }
}
