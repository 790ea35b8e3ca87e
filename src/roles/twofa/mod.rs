//! The 2FA Service role: TOTP enrolment and activation, one-time recovery codes, and step-up
//! tokens (signed by kms for twofa's identity only) that the gateway requires on privileged
//! routes.

mod config;
mod handlers;
mod kms;
mod schema;
mod service;
mod store;
pub mod totp;

/// Request bodies, public for the fuzz targets (`fuzz/`).
pub use self::handlers::{ActivateRequest, EnrollRequest, ProofRequest};

use actix_web::web;
use utoipa::OpenApi;

use self::config::TwofaConfig;
use self::service::TwofaState;
use crate::platform::contracts::TokenResponse;
use crate::platform::error::ErrorBody;
use crate::platform::guards::Origin;
use crate::platform::role::{About, Mount, Role, RoleContext};
use crate::platform::server::Platform;
use crate::platform::standard::BearerAuth;
use crate::platform::unit::Who;

const ROLE_NAME: &str = "twofa";

const ABOUT: About = About {
    name: ROLE_NAME,
    title: "2FA Service",
    description: "Second factor for FountainAI: TOTP enrolment and verification, one-time recovery codes, and the step-up tokens the gateway requires on privileged routes.",
    default_port: 8004,
};

pub struct Twofa;

impl Role for Twofa {
    fn about(&self) -> &'static About {
        &ABOUT
    }

    fn openapi(&self) -> utoipa::openapi::OpenApi {
        TwofaApi::openapi()
    }

    fn check_config(&self, config: &crate::config::Config) -> Result<(), String> {
        config.role_settings::<TwofaConfig>(ROLE_NAME)?.validate()
    }

    fn start(&self, ctx: &RoleContext) -> Result<Mount, String> {
        let config: TwofaConfig = ctx.config.role_settings(ROLE_NAME)?;
        config.validate()?;
        let kms_url = ctx.config.peer_url("kms").ok_or("peers.kms must be configured")?;
        let credential = crate::platform::injection::credential_path(&ctx.config, ROLE_NAME);
        let state = web::Data::new(TwofaState {
            db: ctx.db.clone(),
            master_key: ctx.master_key.clone(),
            config,
            kms: kms::KmsClient::new(kms_url, credential),
        });
        Ok(Mount::routes(move |cfg| routes(cfg, state.clone())))
    }
}

fn routes(cfg: &mut web::ServiceConfig, state: web::Data<TwofaState>) {
    cfg.app_data(state);
    cfg.service(web::resource("/2fa").delete(handlers::disable))
        .service(web::resource("/2fa/enroll").post(handlers::enroll))
        .service(web::resource("/2fa/activate").post(handlers::activate))
        .service(web::resource("/2fa/verify").post(handlers::verify))
        .service(web::resource("/2fa/status").get(handlers::own_status))
        .service(web::resource("/2fa/status/{username}").get(handlers::user_status))
        .service(web::resource("/2fa/users/{username}/reset").post(handlers::reset));
}

#[derive(OpenApi)]
#[openapi(
    paths(
        handlers::enroll, handlers::activate, handlers::verify, handlers::own_status,
        handlers::user_status, handlers::disable, handlers::reset
    ),
    components(schemas(
        handlers::EnrollRequest, handlers::Enrollment, handlers::ActivateRequest, handlers::Activated,
        handlers::ProofRequest, handlers::StatusView, TokenResponse, ErrorBody
    )),
    modifiers(&BearerAuth),
    tags((name = "Two-factor", description = "TOTP enrolment, recovery codes and step-up tokens"))
)]
struct TwofaApi;

/// `fountain admin reset-2fa`: removes a user's second factor as the local actor (audited), for
/// a locked-out last admin. `Ok(false)` when the user has none.
pub fn reset_offline(platform: &Platform, actor: &str, username: &str) -> Result<bool, String> {
    let who = Who::new(ROLE_NAME, actor, Origin::local("cli"));
    match service::reset_blocking(&platform.db, who, &username.to_ascii_lowercase()) {
        Ok(()) => Ok(true),
        Err(service::TwofaError::NotFound) => Ok(false),
        Err(other) => Err(other.to_string()),
    }
}
