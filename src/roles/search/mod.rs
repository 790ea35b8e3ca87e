//! The Typesense Client Microservice role: document sync (create, update, delete, bulk import)
//! and search with Typesense's semantics, on the embedded engine (tantivy, default) or on a
//! remote Typesense. Both backends pass one conformance suite.

mod api;
mod backend;
mod config;
mod embedded;
mod handlers;
pub mod query;
mod service;
mod typesense;

use std::sync::Arc;
use std::time::Duration;

use actix_web::web;
use utoipa::OpenApi;

use self::backend::SearchBackend;
use self::config::{BackendKind, SearchConfig};
use self::service::SearchState;
use crate::platform::error::ErrorBody;
use crate::platform::role::{About, Mount, Role, RoleContext};
use crate::platform::standard::BearerAuth;

pub use self::api::{Document, ImportResult, SearchResponse};
/// Request bodies, public for the fuzz targets (`fuzz/`).
pub use self::api::{SearchRequest, SyncRequest};
pub use self::typesense::API_KEY_SECRET;

const ROLE_NAME: &str = "search";

const ABOUT: About = About {
    name: ROLE_NAME,
    title: "Typesense Client Microservice",
    description: "Keeps FountainAI's searchable documents in sync and answers searches: create, update, delete and bulk import of documents, on an embedded engine or a remote Typesense.",
    default_port: 8001,
};

pub struct Search;

impl Role for Search {
    fn about(&self) -> &'static About {
        &ABOUT
    }

    fn openapi(&self) -> utoipa::openapi::OpenApi {
        SearchApi::openapi()
    }

    fn check_config(&self, config: &crate::config::Config) -> Result<(), String> {
        config.role_settings::<SearchConfig>(ROLE_NAME)?.validate()
    }

    fn start(&self, ctx: &RoleContext) -> Result<Mount, String> {
        let settings = ctx.config.role_settings::<SearchConfig>(ROLE_NAME)?;
        settings.validate()?;
        let backend: Arc<dyn SearchBackend> = match settings.backend {
            BackendKind::Embedded => {
                let metrics = embedded::CommitMetrics::register(ctx.metrics.registry())?;
                let dir = ctx.config.data.dir.join("search").join(&settings.collection);
                let engine = embedded::Embedded::open(&dir, &settings, metrics)?;
                log::info!(target: "fountain::search", path = engine.path().display().to_string().as_str(); "search index open");
                Arc::new(engine)
            }
            BackendKind::Typesense => Arc::new(typesense::Typesense::new(
                &settings.typesense_url,
                &settings.collection,
                Duration::from_millis(settings.typesense_timeout_ms),
                Arc::clone(&ctx.secrets),
            )),
        };
        let state =
            web::Data::new(SearchState { backend: Arc::clone(&backend), collection: settings.collection });
        let limit = handlers::ImportLimit(settings.import_max_bytes);
        Ok(Mount::routes(move |cfg| routes(cfg, state.clone(), limit)).ready_when(
            "search backend",
            move || {
                let backend = Arc::clone(&backend);
                async move { backend.ready().await }
            },
        ))
    }
}

fn routes(cfg: &mut web::ServiceConfig, state: web::Data<SearchState>, limit: handlers::ImportLimit) {
    cfg.app_data(state);
    cfg.service(web::resource("/documents/sync").post(handlers::sync))
        .service(web::resource("/documents/import").app_data(limit).post(handlers::import))
        .service(web::resource("/documents/{id}").get(handlers::get).delete(handlers::delete))
        .service(web::resource("/collections/{name}").get(handlers::collection))
        .service(web::resource("/search").post(handlers::search));
}

#[derive(OpenApi)]
#[openapi(
    paths(
        handlers::sync, handlers::import, handlers::search, handlers::get, handlers::delete, handlers::collection
    ),
    components(schemas(
        api::Document, api::SyncRequest, api::Message, api::SearchRequest, api::SearchResponse, api::Hit,
        api::Highlight, api::FacetCount, api::FacetValue, api::CollectionInfo, api::FieldInfo, api::ImportResult,
        ErrorBody
    )),
    modifiers(&BearerAuth),
    tags(
        (name = "Synchronization", description = "Keeping the collection in sync"),
        (name = "Search", description = "Typesense-compatible search"),
        (name = "Documents", description = "Documents and the collection")
    )
)]
struct SearchApi;
