//! The search role's endpoints (the seed's paths): each handler takes its typed guard and
//! input, makes one call into the domain (`service`), and answers.

use actix_web::dev::Payload;
use actix_web::{web, FromRequest, HttpRequest, HttpResponse};
use futures_util::future::LocalBoxFuture;
use serde::Deserialize;
use utoipa::IntoParams;

use super::api::{CollectionInfo, Document, Message, SearchRequest, SearchResponse, SyncRequest};
use super::service::{self, SearchState};
use crate::platform::error::{ApiError, ApiResult, ErrorCode};
use crate::platform::extract::{read_limited_within, Json, DEFAULT_BODY_READ_TIMEOUT};
use crate::platform::guards::{AdminOrService, Authenticated};

/// The largest import body (`roles.search.import_max_bytes`), as app data of the import route.
#[derive(Debug, Clone, Copy)]
pub struct ImportLimit(pub usize);

/// An import body: JSON lines up to the import limit, any content type.
pub struct ImportBody(web::Bytes);

impl FromRequest for ImportBody {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let limit = req.app_data::<ImportLimit>().map_or(64 << 20, |l| l.0);
        let mut payload = payload.take();
        Box::pin(async move {
            // A large import may take a while to arrive: allow ten times the usual read time.
            let body = read_limited_within(&mut payload, limit, DEFAULT_BODY_READ_TIMEOUT * 10).await?;
            Ok(ImportBody(body))
        })
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ImportParams {
    /// Only `upsert` (the default): a line whose id exists replaces that document.
    pub action: Option<String>,
}

/// Synchronize a document
///
/// Service or admin. create/update upsert the document, delete removes it by id; answers once the change is durable and searchable.
#[utoipa::path(
    post, path = "/documents/sync", operation_id = "syncDocument", tag = "Synchronization",
    request_body = SyncRequest,
    responses(
        (status = 200, description = "Applied, durable and searchable", body = Message),
        (status = 400, description = "Unknown operation or malformed JSON", body = ErrorBody),
        (status = 422, description = "A field is missing, of the wrong type or out of bounds", body = ErrorBody),
        (status = 503, description = "The search backend is unavailable; retry after Retry-After", body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub async fn sync(
    state: web::Data<SearchState>,
    _caller: AdminOrService,
    body: Json<SyncRequest>,
) -> ApiResult<web::Json<Message>> {
    Ok(web::Json(service::sync(&state, body.into_inner()).await?))
}

/// Import documents
///
/// Service or admin. JSON lines, each upserted; answers one JSON line per input line, {"success":true} or the error and the line.
#[utoipa::path(
    post, path = "/documents/import", operation_id = "importDocuments", tag = "Synchronization",
    params(ImportParams),
    request_body(
        content = String, content_type = "application/x-ndjson",
        example = json!("{\"id\":\"43_1\",\"element_type\":\"spokenWord\",\"element_id\":43,\"sequence_number\":8,\"version_number\":1,\"comment\":\"MARGARET: Who left the door open?\",\"service_name\":\"sequence\"}\n")
    ),
    responses(
        (status = 200, description = "One result line per input line", body = ImportResult, content_type = "application/x-ndjson"),
        (status = 400, description = "Not UTF-8, no lines, or an unknown action", body = ErrorBody),
        (status = 413, description = "Larger than roles.search.import_max_bytes", body = ErrorBody),
        (status = 503, description = "The search backend is unavailable", body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub async fn import(
    state: web::Data<SearchState>,
    _caller: AdminOrService,
    params: web::Query<ImportParams>,
    body: ImportBody,
) -> ApiResult<HttpResponse> {
    if params.action.as_deref().is_some_and(|a| a != "upsert") {
        return Err(ApiError::new(ErrorCode::BadRequest, "action: only upsert is supported")
            .with_details(serde_json::json!({"field": "action", "reason": "only upsert is supported"})));
    }
    let results = service::import(&state, &body.0).await?;
    let mut out = String::with_capacity(results.len() * 20);
    for result in results {
        out.push_str(&serde_json::to_string(&result).map_err(ApiError::internal)?);
        out.push('\n');
    }
    Ok(HttpResponse::Ok().content_type("application/x-ndjson").body(out))
}

/// Search documents
///
/// Any authenticated caller. Typesense semantics: query_by fields, prefix on the last word, typo and drop-word fallbacks, filter_by, sort_by, pages, facets.
#[utoipa::path(
    post, path = "/search", operation_id = "searchDocuments", tag = "Search",
    request_body = SearchRequest,
    responses(
        (status = 200, description = "Hits of the page, with highlights, and the total found", body = SearchResponse),
        (status = 400, description = "A malformed or ill-typed query_by, filter_by, sort_by or facet_by, with its position", body = ErrorBody),
        (status = 422, description = "A field of the wrong type or out of bounds", body = ErrorBody),
        (status = 503, description = "The search backend is unavailable", body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub async fn search(
    state: web::Data<SearchState>,
    _caller: Authenticated,
    body: Json<SearchRequest>,
) -> ApiResult<web::Json<SearchResponse>> {
    Ok(web::Json(service::search(&state, body.into_inner()).await?))
}

/// Get a document
///
/// Any authenticated caller. The document with this id.
#[utoipa::path(
    get, path = "/documents/{id}", operation_id = "getDocument", tag = "Documents",
    params(("id" = String, Path, description = "Document id", example = "42_1")),
    responses(
        (status = 200, description = "The document", body = Document),
        (status = 404, description = "No such document", body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub async fn get(
    state: web::Data<SearchState>,
    _caller: Authenticated,
    id: web::Path<String>,
) -> ApiResult<web::Json<Document>> {
    Ok(web::Json(service::get(&state, id.into_inner()).await?))
}

/// Delete a document
///
/// Service or admin. Removes the document with this id; answers once the removal is durable and searchable.
#[utoipa::path(
    delete, path = "/documents/{id}", operation_id = "deleteDocument", tag = "Documents",
    params(("id" = String, Path, description = "Document id", example = "42_1")),
    responses(
        (status = 200, description = "Deleted", body = Message),
        (status = 404, description = "No such document", body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub async fn delete(
    state: web::Data<SearchState>,
    _caller: AdminOrService,
    id: web::Path<String>,
) -> ApiResult<web::Json<Message>> {
    Ok(web::Json(service::delete(&state, id.into_inner()).await?))
}

/// Describe the collection
///
/// Any authenticated caller. The collection's schema, its document count and the backend serving it.
#[utoipa::path(
    get, path = "/collections/{name}", operation_id = "getCollection", tag = "Documents",
    params(("name" = String, Path, description = "Collection name (roles.search.collection)", example = "elements")),
    responses(
        (status = 200, description = "Schema and count", body = CollectionInfo),
        (status = 404, description = "No such collection", body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub async fn collection(
    state: web::Data<SearchState>,
    _caller: Authenticated,
    name: web::Path<String>,
) -> ApiResult<web::Json<CollectionInfo>> {
    Ok(web::Json(service::collection(&state, &name).await?))
}
