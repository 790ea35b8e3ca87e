//! What a search backend does, whichever engine is behind it: the embedded tantivy index or a
//! remote Typesense. The role's domain (`service`) validates every input first, so a backend
//! receives only well-formed documents and checked queries.

use futures_util::future::LocalBoxFuture;

use super::api::{Document, SearchRequest, SearchResponse};
use super::query::{Condition, SortKey};
use crate::platform::error::{ApiError, ErrorCode};

/// One change to the collection.
#[derive(Debug, Clone)]
pub enum Change {
    /// Create or replace the document with this id.
    Upsert(Document),
    Delete(String),
}

/// What became of one change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Done,
    /// A delete of a document that was not there.
    Missing,
    /// The backend refused this change (the others may have been applied).
    Refused(String),
}

/// A search checked against the collection, ready for a backend.
#[derive(Debug, Clone)]
pub struct Query {
    /// The words of `q`; empty: every document.
    pub words: Vec<String>,
    pub query_by: Vec<&'static str>,
    pub filter: Option<Condition>,
    /// The same filter in Typesense's dialect.
    pub typesense_filter: Option<String>,
    pub sort: Vec<SortKey>,
    pub per_page: u32,
    pub page: u32,
    pub facet_by: Vec<&'static str>,
    /// The request as the client sent it (the Typesense backend forwards its expressions).
    pub request: SearchRequest,
}

/// Why a backend could not answer.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The engine cannot be reached or is not ready: the caller should retry (503).
    #[error("{0}")]
    Unavailable(String),
    /// The engine answered something unexpected (502).
    #[error("{0}")]
    Upstream(String),
    /// A fault inside this process (500).
    #[error("{0}")]
    Internal(String),
}

impl From<BackendError> for ApiError {
    fn from(error: BackendError) -> Self {
        match error {
            BackendError::Unavailable(cause) => ApiError::unavailable("the search backend", cause),
            BackendError::Upstream(cause) => {
                log::warn!(target: "fountain::search", "search backend answered unexpectedly: {cause}");
                ApiError::from_code(ErrorCode::BadGateway)
            }
            BackendError::Internal(cause) => ApiError::internal(cause),
        }
    }
}

pub type BackendResult<T> = Result<T, BackendError>;

/// A search engine behind the role. Writes return once they are durable and visible to
/// searches (read-your-writes).
pub trait SearchBackend: Send + Sync + 'static {
    /// `embedded` or `typesense`.
    fn kind(&self) -> &'static str;

    /// Applies the changes in order; one outcome per change.
    fn write(&self, changes: Vec<Change>) -> LocalBoxFuture<'_, BackendResult<Vec<Outcome>>>;

    fn get(&self, id: String) -> LocalBoxFuture<'_, BackendResult<Option<Document>>>;

    fn search(&self, query: Query) -> LocalBoxFuture<'_, BackendResult<SearchResponse>>;

    /// How many documents the collection holds.
    fn count(&self) -> LocalBoxFuture<'_, BackendResult<u64>>;

    /// Whether the engine can serve now (`/ready`).
    fn ready(&self) -> LocalBoxFuture<'_, Result<(), String>>;
}
