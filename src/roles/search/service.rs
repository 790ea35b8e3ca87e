//! The search role's domain: every input checked before a backend sees it, so both backends
//! refuse the same inputs with the same errors.

use std::sync::Arc;

use serde_json::json;

use super::api::{
    CollectionInfo, Document, FieldInfo, ImportResult, Message, Operation, SearchRequest, SearchResponse,
    SyncRequest, MAX_HITS, MAX_PAGE, MAX_QUERY_BYTES,
};
use super::backend::{Change, Outcome, Query, SearchBackend};
use super::query::{self, FieldType, QueryError, DEFAULT_SORTING_FIELD, FIELDS};
use crate::platform::error::{ApiError, ApiResult, ErrorCode};
use crate::platform::extract::parse_json;

pub struct SearchState {
    pub backend: Arc<dyn SearchBackend>,
    pub collection: String,
}

fn refused(outcome: &Outcome) -> ApiResult<()> {
    match outcome {
        Outcome::Refused(cause) => {
            log::warn!(target: "fountain::search", "the search backend refused a change: {cause}");
            Err(ApiError::from_code(ErrorCode::BadGateway))
        }
        _ => Ok(()),
    }
}

/// `POST /documents/sync`: applies one change; answers once it is durable and searchable.
pub async fn sync(state: &SearchState, request: SyncRequest) -> ApiResult<Message> {
    let operation = Operation::parse(&request.operation)?;
    request.document.validate("document.")?;
    let (change, message) = match operation {
        Operation::Upsert => (Change::Upsert(request.document), "Document synchronized successfully."),
        // Deleting a document that is not there succeeds: a retried delete must not fail.
        Operation::Delete => (Change::Delete(request.document.id), "Document deleted successfully."),
    };
    let outcomes = state.backend.write(vec![change]).await?;
    outcomes.iter().try_for_each(refused)?;
    Ok(Message { message: message.to_string() })
}

/// One line of an import body: a valid document, or the result that refuses it.
fn import_line(line: &str) -> Result<Document, ImportResult> {
    let document: Document =
        parse_json(line.as_bytes()).map_err(|e| ImportResult::failed(e.message, line))?;
    document.validate("").map_err(|e| ImportResult::failed(e.message, line))?;
    Ok(document)
}

/// `POST /documents/import`: JSON lines, each upserted; one result per non-blank line, in
/// order. Every accepted line is durable and searchable when the answer comes.
pub async fn import(state: &SearchState, body: &[u8]) -> ApiResult<Vec<ImportResult>> {
    let text = std::str::from_utf8(body)
        .map_err(|_| ApiError::new(ErrorCode::BadRequest, "the body is not UTF-8"))?;
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.is_empty() {
        return Err(ApiError::new(ErrorCode::BadRequest, "the body holds no JSON lines"));
    }
    let mut results: Vec<Option<ImportResult>> = Vec::with_capacity(lines.len());
    let mut changes = Vec::new();
    for line in &lines {
        match import_line(line) {
            Ok(document) => {
                results.push(None);
                changes.push(Change::Upsert(document));
            }
            Err(result) => results.push(Some(result)),
        }
    }
    let mut outcomes = state.backend.write(changes).await?.into_iter();
    Ok(results
        .into_iter()
        .zip(&lines)
        .map(|(result, line)| {
            result.unwrap_or_else(|| match outcomes.next() {
                Some(Outcome::Refused(error)) => ImportResult::failed(error, line),
                _ => ImportResult::ok(),
            })
        })
        .collect())
}

/// Ids the collection can hold; anything else cannot be found.
fn plausible_id(id: &str) -> bool {
    (1..=super::api::MAX_ID_CHARS).contains(&id.len())
        && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'))
}

fn no_document() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "no document with this id")
}

pub async fn get(state: &SearchState, id: String) -> ApiResult<Document> {
    if !plausible_id(&id) {
        return Err(no_document());
    }
    state.backend.get(id).await?.ok_or_else(no_document)
}

/// `DELETE /documents/{id}`: 404 when there is no such document.
pub async fn delete(state: &SearchState, id: String) -> ApiResult<Message> {
    if !plausible_id(&id) {
        return Err(no_document());
    }
    match state.backend.write(vec![Change::Delete(id)]).await?.first() {
        Some(Outcome::Missing) => Err(no_document()),
        Some(outcome) => {
            refused(outcome)?;
            Ok(Message { message: "Document deleted successfully.".into() })
        }
        None => Err(ApiError::internal("the backend answered no outcome")),
    }
}

pub async fn collection(state: &SearchState, name: &str) -> ApiResult<CollectionInfo> {
    if name != state.collection {
        return Err(ApiError::new(ErrorCode::NotFound, "no such collection"));
    }
    let fields = FIELDS
        .iter()
        .map(|f| FieldInfo {
            name: f.name.to_string(),
            kind: match f.kind {
                FieldType::Str => "string",
                FieldType::Int32 => "int32",
            }
            .to_string(),
            facet: f.facet,
        })
        .collect();
    Ok(CollectionInfo {
        name: state.collection.clone(),
        num_documents: state.backend.count().await?,
        fields,
        default_sorting_field: DEFAULT_SORTING_FIELD.to_string(),
        backend: state.backend.kind().to_string(),
    })
}

/// A malformed expression: 400 naming the parameter, the problem and its position.
fn query_error(error: QueryError) -> ApiError {
    ApiError::new(ErrorCode::BadRequest, error.to_string()).with_details(json!({
        "field": error.parameter, "position": error.position, "reason": error.reason
    }))
}

/// Checks a search request and turns it into a backend query.
pub fn check_search(request: SearchRequest) -> ApiResult<Query> {
    let texts = [
        ("q", Some(&request.q)),
        ("query_by", Some(&request.query_by)),
        ("filter_by", request.filter_by.as_ref()),
        ("sort_by", request.sort_by.as_ref()),
        ("facet_by", request.facet_by.as_ref()),
    ];
    for (name, value) in texts {
        if value.is_some_and(|v| v.len() > MAX_QUERY_BYTES) {
            return Err(ApiError::validation(name, format!("must be at most {MAX_QUERY_BYTES} bytes")));
        }
    }
    if !(1..=MAX_HITS).contains(&request.max_hits) {
        return Err(ApiError::validation("max_hits", format!("must be between 1 and {MAX_HITS}")));
    }
    let page = request.page.unwrap_or(1);
    if !(1..=MAX_PAGE).contains(&page) {
        return Err(ApiError::validation("page", format!("must be between 1 and {MAX_PAGE}")));
    }
    let query_by = query::parse_query_by(&request.query_by).map_err(query_error)?;
    let (filter, typesense_filter) = match request.filter_by.as_deref().filter(|f| !f.trim().is_empty()) {
        Some(text) => {
            let parsed = query::parse_filter(text).map_err(query_error)?;
            let condition = query::check_filter(&parsed).map_err(query_error)?;
            (Some(condition), Some(query::typesense_filter(&parsed)))
        }
        None => (None, None),
    };
    let sort = query::parse_sort(request.sort_by.as_deref().unwrap_or("")).map_err(query_error)?;
    let facet_by = match request.facet_by.as_deref().filter(|f| !f.trim().is_empty()) {
        Some(text) => query::parse_facet_by(text).map_err(query_error)?,
        None => Vec::new(),
    };
    let words = if request.q.trim() == "*" { Vec::new() } else { query::tokenize(&request.q) };
    Ok(Query {
        words,
        query_by,
        filter,
        typesense_filter,
        sort,
        per_page: request.max_hits,
        page,
        facet_by,
        request,
    })
}

pub async fn search(state: &SearchState, request: SearchRequest) -> ApiResult<SearchResponse> {
    let query = check_search(request)?;
    Ok(state.backend.search(query).await?)
}
