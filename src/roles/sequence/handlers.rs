//! Service A endpoints (the seed's paths and field names). Each handler extracts its typed
//! guard and input, makes one call into the domain (`service`), and answers.

use actix_web::{web, HttpResponse};

use super::api::{
    ElementDetail, ElementPage, ElementType, ListParams, ReorderRequest, ReorderResponse, ResyncResponse,
    SequenceRequest, SyncStatus, VersionRequest,
};
use super::service::{self, SequenceError};
use super::state::SequenceState;
use super::ROLE_NAME;
use crate::platform::error::{ApiError, ApiResult, ErrorCode};
use crate::platform::extract::{page_limit, Json};
use crate::platform::guards::{Admin, Authenticated, Origin};
use crate::platform::unit::Who;

fn who(caller: &crate::platform::auth::Claims, origin: Origin) -> Who {
    Who::new(ROLE_NAME, caller.sub.clone(), origin)
}

/// Runs a change as one unit of work, then wakes the outbox worker.
async fn change<T: Send + 'static>(
    state: &SequenceState,
    who: Who,
    work: impl FnOnce(&mut crate::platform::unit::Change<'_>) -> Result<T, SequenceError> + Send + 'static,
) -> Result<T, SequenceError> {
    let value = state.db.change(who, work).await?;
    state.wake();
    Ok(value)
}

/// Generate sequence number
///
/// Creates an element with the next sequence number of its type (unique per type). 409 if the element exists.
#[utoipa::path(
    post, path = "/sequence", operation_id = "generateSequenceNumber", tag = "Sequence Management",
    request_body = SequenceRequest,
    responses(
        (status = 201, description = "Created; queued for search", body = SequenceResponse),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 409, description = "The element exists (already_exists), or too many concurrent writers took the next numbers (conflict; retry)", body = ErrorBody),
        (status = 422, description = "Unknown elementType, elementId out of range, comment too long", body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub async fn create(
    state: web::Data<SequenceState>,
    caller: Authenticated,
    origin: Origin,
    body: Json<SequenceRequest>,
) -> ApiResult<HttpResponse> {
    let request = body.into_inner();
    service::validate_element_id("elementId", request.elementId)?;
    service::validate_comment(&request.comment)?;
    let documents = state.documents.clone();
    let created = change(&state, who(&caller.0, origin), move |tx| {
        service::create(tx, &documents, request.elementType, request.elementId, &request.comment)
    })
    .await?;
    Ok(HttpResponse::Created().json(created))
}

/// Reorder elements
///
/// The listed elements exchange the sequence numbers they hold: the first of newOrder gets the smallest. One transaction.
#[utoipa::path(
    post, path = "/sequence/reorder", operation_id = "reorderElements", tag = "Sequence Management",
    request_body = ReorderRequest,
    responses(
        (status = 200, description = "Reordered; moved elements queued for search", body = ReorderResponse),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 404, description = "Some ids name no element", body = ErrorBody),
        (status = 422, description = "newOrder is not a permutation of elementIds, or elementType is needed", body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub async fn reorder(
    state: web::Data<SequenceState>,
    caller: Authenticated,
    origin: Origin,
    body: Json<ReorderRequest>,
) -> ApiResult<web::Json<ReorderResponse>> {
    let request = body.into_inner();
    service::validate_reorder(&request.elementIds, &request.newOrder)?;
    let documents = state.documents.clone();
    let reordered = change(&state, who(&caller.0, origin), move |tx| {
        service::reorder(tx, &documents, &request.elementIds, &request.newOrder, request.elementType)
    })
    .await?;
    Ok(web::Json(reordered))
}

/// Create new version
///
/// Adds the next version of an element with its data (a JSON object up to 64 KiB). 404 if the element does not exist.
#[utoipa::path(
    post, path = "/sequence/version", operation_id = "createVersion", tag = "Version Management",
    request_body = VersionRequest,
    responses(
        (status = 201, description = "Created; queued for search", body = VersionResponse),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 404, description = "No such element", body = ErrorBody),
        (status = 422, description = "Invalid field, or newVersionData not an object or over 64 KiB", body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub async fn version(
    state: web::Data<SequenceState>,
    caller: Authenticated,
    origin: Origin,
    body: Json<VersionRequest>,
) -> ApiResult<HttpResponse> {
    let request = body.into_inner();
    service::validate_element_id("elementId", request.elementId)?;
    service::validate_comment(&request.comment)?;
    let data = service::version_data(&request.newVersionData)?;
    let documents = state.documents.clone();
    let created = change(&state, who(&caller.0, origin), move |tx| {
        service::add_version(tx, &documents, request.elementType, request.elementId, &data, &request.comment)
    })
    .await?;
    Ok(HttpResponse::Created().json(created))
}

/// List elements
///
/// Elements by type, then sequence number, a page at a time (cursor paging).
#[utoipa::path(
    get, path = "/elements", operation_id = "listElements", tag = "Elements",
    params(ListParams),
    responses(
        (status = 200, description = "One page", body = ElementPage),
        (status = 400, description = "Unknown elementType, bad cursor or limit", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub async fn list(
    state: web::Data<SequenceState>,
    _caller: Authenticated,
    params: web::Query<ListParams>,
) -> ApiResult<web::Json<ElementPage>> {
    let limit = page_limit(params.limit, 100, 500)?;
    let page = service::list(&state.db, params.elementType, params.cursor.as_deref(), limit).await?;
    Ok(web::Json(page))
}

/// Get an element
///
/// One element with every version and its newVersionData.
#[utoipa::path(
    get, path = "/elements/{elementType}/{elementId}", operation_id = "getElement", tag = "Elements",
    params(
        ("elementType" = ElementType, Path, description = "Element type", example = "script"),
        ("elementId" = i64, Path, description = "Element id", example = 1)
    ),
    responses(
        (status = 200, description = "The element and its versions", body = ElementDetail),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 404, description = "No such element (or element type)", body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub async fn detail(
    state: web::Data<SequenceState>,
    _caller: Authenticated,
    path: web::Path<(String, i64)>,
) -> ApiResult<web::Json<ElementDetail>> {
    let (kind, id) = path.into_inner();
    let kind = ElementType::parse(&kind)
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "no such element type"))?;
    Ok(web::Json(service::detail(&state.db, kind, id).await?))
}

/// Search sync status
///
/// Outbox depth, age of the oldest undelivered change, failed count and the last delivery error.
#[utoipa::path(
    get, path = "/sync/status", operation_id = "getSyncStatus", tag = "Sync",
    responses(
        (status = 200, description = "The outbox now", body = SyncStatus),
        (status = 401, description = "No valid token", body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub async fn sync_status(
    state: web::Data<SequenceState>,
    _caller: Authenticated,
) -> ApiResult<web::Json<SyncStatus>> {
    Ok(web::Json(state.status().await?))
}

/// Resync everything to search
///
/// Admin only. Queues every version of every element again: the recovery for a lost index or a new search backend.
#[utoipa::path(
    post, path = "/sync/resync", operation_id = "resyncAll", tag = "Sync",
    responses(
        (status = 202, description = "Queued", body = ResyncResponse),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Not an admin", body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub async fn resync(
    state: web::Data<SequenceState>,
    admin: Admin,
    origin: Origin,
) -> ApiResult<HttpResponse> {
    let documents = state.documents.clone();
    let queued = change(&state, who(&admin.0, origin), move |tx| service::resync(tx, &documents)).await?;
    Ok(HttpResponse::Accepted().json(ResyncResponse { queued }))
}
