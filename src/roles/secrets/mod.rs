//! The Secrets Manager role: per-service secrets, versioned and sealed at rest, rotation that
//! publishes `secrets.rotated`, and a generator for strong random secrets.

mod handlers;
mod schema;
mod store;

use std::sync::Arc;

use actix_web::web;
use utoipa::OpenApi;

use super::RoleSpec;
use crate::platform::crypto::MasterKey;
use crate::platform::db::Db;
use crate::platform::error::ErrorBody;
use crate::platform::identity::RemoteKeys;
use crate::platform::server::{RoleContext, RoleState};
use crate::platform::standard::BearerAuth;

pub use self::handlers::{ensure_secret_set, SecretMap};

pub const ROLE: RoleSpec = RoleSpec {
    name: "secrets",
    title: "Secrets Manager Service",
    default_port: 8005,
    description: "Per-service secrets for FountainAI, versioned and encrypted at rest, with rotation that every service picks up live through the Notification Service, and a generator for strong random secrets.",
    routes,
    openapi,
    init,
};

pub struct SecretsState {
    pub db: Db,
    pub master_key: Arc<MasterKey>,
    pub trusted_proxies: Vec<std::net::IpAddr>,
    pub max_versions: i32,
    pub keys: web::Data<RemoteKeys>,
}

fn init(ctx: &RoleContext) -> Result<Option<RoleState>, String> {
    Ok(Some(Arc::new(handlers::state_from(ctx))))
}

fn routes(cfg: &mut web::ServiceConfig, ctx: &RoleContext) {
    if let Some(state) = ctx.state::<SecretsState>() {
        cfg.app_data(state.keys.clone());
        cfg.app_data(web::Data::from(state));
    }
    cfg.service(
        web::resource("/secrets/{serviceName}")
            .post(handlers::create)
            .get(handlers::get)
            .put(handlers::replace)
            .delete(handlers::delete),
    )
    .service(web::resource("/secrets/{serviceName}/versions").get(handlers::versions))
    .service(web::resource("/secrets/{serviceName}/rotate").post(handlers::rotate))
    .service(web::resource("/secrets/{serviceName}/restore").post(handlers::restore))
    .service(web::resource("/secrets/{serviceName}/destroy").post(handlers::destroy))
    .service(web::resource("/factory/generate").post(handlers::generate))
    .service(web::resource("/notifications").post(handlers::notification));
}

#[derive(OpenApi)]
#[openapi(
    paths(
        handlers::create, handlers::get, handlers::versions, handlers::rotate, handlers::replace,
        handlers::delete, handlers::restore, handlers::destroy, handlers::generate, handlers::notification
    ),
    components(schemas(
        handlers::SecretResponse, handlers::VersionInfo, handlers::VersionList, handlers::RotateRequest,
        handlers::ReplaceRequest, handlers::GenerateRequest, handlers::GenerateResponse,
        handlers::NotificationPayload, handlers::Message, ErrorBody
    )),
    modifiers(&BearerAuth),
    tags(
        (name = "Secrets", description = "Per-service secrets and their versions"),
        (name = "Factory", description = "Random secret generation"),
        (name = "Notification", description = "Rotation notices")
    )
)]
struct SecretsApi;

fn openapi() -> utoipa::openapi::OpenApi {
    SecretsApi::openapi()
}
