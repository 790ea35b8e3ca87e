//! The Service A role: screenplay elements with sequence numbers unique per element type,
//! reordering, versions, and a transactional outbox that keeps search in sync.

pub mod api;
mod config;
mod handlers;
mod schema;
mod service;
mod state;
mod store;
mod worker;

use actix_web::web;
use utoipa::OpenApi;

use self::state::SequenceState;
use crate::platform::error::ErrorBody;
use crate::platform::role::{About, Mount, Role, RoleContext};
use crate::platform::standard::BearerAuth;

const ROLE_NAME: &str = "sequence";

const ABOUT: About = About {
    name: ROLE_NAME,
    title: "Service A",
    description: "Screenplay elements for FountainAI: ordered sequence numbers, reordering and versions, kept in sync with search through a transactional outbox so that nothing is lost when search is down.",
    default_port: 8002,
};

pub struct Sequence;

impl Role for Sequence {
    fn about(&self) -> &'static About {
        &ABOUT
    }

    fn openapi(&self) -> utoipa::openapi::OpenApi {
        SequenceApi::openapi()
    }

    fn check_config(&self, config: &crate::config::Config) -> Result<(), String> {
        config.role_settings::<config::SequenceConfig>(ROLE_NAME)?.validate()
    }

    fn start(&self, ctx: &RoleContext) -> Result<Mount, String> {
        let state = web::Data::new(state::init(ctx)?);
        ctx.spawn("sequence.outbox", worker::run(state.clone().into_inner()));
        Ok(Mount::routes(move |cfg| routes(cfg, state.clone())))
    }
}

fn routes(cfg: &mut web::ServiceConfig, state: web::Data<SequenceState>) {
    cfg.app_data(state);
    cfg.service(web::resource("/sequence").post(handlers::create))
        .service(web::resource("/sequence/reorder").post(handlers::reorder))
        .service(web::resource("/sequence/version").post(handlers::version))
        .service(web::resource("/elements").get(handlers::list))
        .service(web::resource("/elements/{elementType}/{elementId}").get(handlers::detail))
        .service(web::resource("/sync/status").get(handlers::sync_status))
        .service(web::resource("/sync/resync").post(handlers::resync));
}

#[derive(OpenApi)]
#[openapi(
    paths(
        handlers::create, handlers::reorder, handlers::version, handlers::list, handlers::detail,
        handlers::sync_status, handlers::resync
    ),
    components(schemas(
        api::ElementType, api::SequenceRequest, api::SequenceResponse, api::ReorderRequest,
        api::ReorderedElement, api::ReorderResponse, api::VersionRequest, api::VersionResponse,
        api::ElementView, api::ElementPage, api::VersionView, api::ElementDetail, api::SyncError,
        api::SyncStatus, api::ResyncResponse, ErrorBody
    )),
    modifiers(&BearerAuth),
    tags(
        (name = "Sequence Management", description = "Sequence numbers and reordering"),
        (name = "Version Management", description = "Versions of elements"),
        (name = "Elements", description = "Reading elements and their versions"),
        (name = "Sync", description = "The outbox towards search")
    )
)]
struct SequenceApi;
