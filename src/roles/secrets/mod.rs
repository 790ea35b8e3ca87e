//! The Secrets Manager role: per-service secrets, versioned and sealed at rest, rotation that
//! publishes `secrets.rotated`, and a generator for strong random secrets.

mod handlers;
mod schema;
mod service;
mod store;

use std::sync::Arc;

use actix_web::web;
use utoipa::OpenApi;

use crate::platform::contracts::SecretSet;
use crate::platform::crypto::MasterKey;
use crate::platform::db::Db;
use crate::platform::error::ErrorBody;
use crate::platform::role::{About, Mount, Provisioning, Role, RoleContext};
use crate::platform::standard::BearerAuth;

pub use self::handlers::{ensure_secret_set, ensure_secret_set_as, SecretMap};
/// Request bodies, public for the fuzz targets (`fuzz/`).
pub use self::handlers::{GenerateRequest, ReplaceRequest, RotateRequest};

const ROLE_NAME: &str = "secrets";

const ABOUT: About = About {
    name: ROLE_NAME,
    title: "Secrets Manager Service",
    description: "Per-service secrets for FountainAI, versioned and encrypted at rest, with rotation that every service picks up live through the Notification Service, and a generator for strong random secrets.",
    default_port: 8005,
};

pub struct Secrets;

impl Role for Secrets {
    fn about(&self) -> &'static About {
        &ABOUT
    }

    fn openapi(&self) -> utoipa::openapi::OpenApi {
        SecretsApi::openapi()
    }

    fn check_config(&self, config: &crate::config::Config) -> Result<(), String> {
        config.role_settings::<SecretsConfig>(ROLE_NAME).map(|_| ())
    }

    fn provisions_for_others(&self) -> bool {
        true
    }

    /// Every role of an all-in-one process gets its secret set.
    fn provision(&self, provisioning: &Provisioning<'_>) -> Result<(), String> {
        for role in provisioning.roles {
            ensure_secret_set(provisioning.platform, role)?;
        }
        Ok(())
    }

    fn start(&self, ctx: &RoleContext) -> Result<Mount, String> {
        let state = web::Data::new(SecretsState {
            db: ctx.db.clone(),
            master_key: Arc::clone(&ctx.master_key),
            max_versions: ctx.config.role_settings::<SecretsConfig>(ROLE_NAME)?.max_versions.max(1) as i32,
        });
        Ok(Mount::routes(move |cfg| routes(cfg, state.clone())))
    }
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
/// The secrets role's own settings: `[roles.secrets]`.
pub struct SecretsConfig {
    /// Versions kept per service (older ones are pruned on each new version).
    pub max_versions: u32,
}

pub struct SecretsState {
    pub db: Db,
    pub master_key: Arc<MasterKey>,
    pub max_versions: i32,
}

fn routes(cfg: &mut web::ServiceConfig, state: web::Data<SecretsState>) {
    cfg.app_data(state);
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
        SecretSet, handlers::VersionInfo, handlers::VersionList, handlers::RotateRequest,
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
