//! The Typesense backend: a real Typesense server over HTTP, the scale-out path (many search
//! replicas over one Typesense cluster).
//!
//! The API key is the role's injected secret `TYPESENSE_API_KEY` (read per request, so a
//! rotation applies at once), never configuration. The collection is created with the seed's
//! schema on first use if missing. Writes are synchronous in Typesense, so an answered change is
//! searchable. Every line of an import answer is checked. An unreachable or not-ready server is
//! a 503 with `Retry-After`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::LocalBoxFuture;
use serde::Deserialize;
use serde_json::{json, Value};

use super::api::{Document, FacetCount, FacetValue, Highlight, Hit, SearchResponse};
use super::backend::{BackendError, BackendResult, Change, Outcome, Query, SearchBackend};
use super::query::{FieldType, DEFAULT_SORTING_FIELD, FIELDS};
use crate::platform::injection::SecretHandle;

/// The secret that holds the Typesense API key.
pub const API_KEY_SECRET: &str = "TYPESENSE_API_KEY";

/// Words Typesense considers for a prefix or a typo. Its default (4) would make a short prefix
/// find fewer documents than contain it; the embedded engine considers every such word, and so
/// does Typesense with this bound.
const MAX_CANDIDATES: u32 = 10_000;

/// Largest answer read from Typesense.
const MAX_ANSWER_BYTES: usize = 256 << 20;

thread_local! {
    /// awc's client is per thread (`Rc`-based); one per worker, never one per request.
    static CLIENT: awc::Client = awc::Client::builder().disable_timeout().finish();
}

pub struct Typesense {
    url: String,
    collection: String,
    timeout: Duration,
    secrets: Arc<SecretHandle>,
    collection_ready: AtomicBool,
}

fn unavailable(cause: impl std::fmt::Display) -> BackendError {
    BackendError::Unavailable(format!("typesense: {cause}"))
}

/// The seed's schema, as Typesense wants it: `id` is implicit; the facet fields are declared so
/// that `facet_by` works.
pub fn collection_schema(name: &str) -> Value {
    let fields: Vec<Value> = FIELDS
        .iter()
        .map(|f| {
            let kind = match f.kind {
                FieldType::Str => "string",
                FieldType::Int32 => "int32",
            };
            json!({"name": f.name, "type": kind, "facet": f.facet})
        })
        .collect();
    json!({"name": name, "fields": fields, "default_sorting_field": DEFAULT_SORTING_FIELD})
}

/// A document as Typesense returns it, extra keys dropped.
fn document_of(value: &Value) -> BackendResult<Document> {
    let mut object = value.as_object().cloned().unwrap_or_default();
    object.retain(|k, _| k == "id" || FIELDS.iter().any(|f| f.name == k));
    serde_json::from_value(Value::Object(object))
        .map_err(|e| BackendError::Upstream(format!("typesense returned a document of another shape: {e}")))
}

#[derive(Deserialize)]
struct RawHighlight {
    field: String,
    #[serde(default)]
    snippet: Option<String>,
    #[serde(default)]
    matched_tokens: Value,
}

#[derive(Deserialize)]
struct RawHit {
    document: Value,
    #[serde(default)]
    highlights: Vec<RawHighlight>,
}

#[derive(Deserialize)]
struct RawFacetValue {
    value: String,
    count: u64,
}

#[derive(Deserialize)]
struct RawFacet {
    field_name: String,
    counts: Vec<RawFacetValue>,
}

#[derive(Deserialize)]
struct RawSearch {
    found: u64,
    #[serde(default)]
    search_time_ms: u64,
    #[serde(default)]
    hits: Vec<RawHit>,
    #[serde(default)]
    facet_counts: Vec<RawFacet>,
}

impl Typesense {
    pub fn new(url: &str, collection: &str, timeout: Duration, secrets: Arc<SecretHandle>) -> Self {
        Self {
            url: url.trim_end_matches('/').to_string(),
            collection: collection.to_string(),
            timeout,
            secrets,
            collection_ready: AtomicBool::new(false),
        }
    }

    fn api_key(&self) -> BackendResult<String> {
        self.secrets
            .current()
            .and_then(|s| s.values.expose().get(API_KEY_SECRET).cloned())
            .ok_or_else(|| unavailable(format!("{API_KEY_SECRET} is not among the role's secrets")))
    }

    fn collection_path(&self) -> String {
        format!("/collections/{}", self.collection)
    }

    /// Sends a request; returns the status and the body. Unreachable, timed out or not ready
    /// (503) is `Unavailable`.
    async fn send(&self, method: &str, path: &str, body: Option<Vec<u8>>) -> BackendResult<(u16, Vec<u8>)> {
        let key = self.api_key()?;
        let method = awc::http::Method::from_bytes(method.as_bytes())
            .map_err(|e| BackendError::Internal(e.to_string()))?;
        let url = format!("{}{path}", self.url);
        let request = CLIENT
            .with(|c| c.request(method, url))
            .insert_header(("X-TYPESENSE-API-KEY", key))
            .timeout(self.timeout);
        let sent = match body {
            Some(body) => request.insert_header(("content-type", "application/json")).send_body(body).await,
            None => request.send().await,
        };
        let mut response = sent.map_err(unavailable)?;
        let status = response.status().as_u16();
        let bytes = response.body().limit(MAX_ANSWER_BYTES).await.map_err(unavailable)?;
        if status == 503 {
            return Err(unavailable("the server is not ready"));
        }
        if status == 401 {
            return Err(BackendError::Upstream("typesense refused the API key".into()));
        }
        Ok((status, bytes.to_vec()))
    }

    fn unexpected(what: &str, status: u16, body: &[u8]) -> BackendError {
        let message: String = String::from_utf8_lossy(body).chars().take(300).collect();
        BackendError::Upstream(format!("typesense {what}: {status} {message}"))
    }

    /// Creates the collection with the seed's schema unless it exists (once per process).
    async fn ensure_collection(&self) -> BackendResult<()> {
        if self.collection_ready.load(Ordering::Acquire) {
            return Ok(());
        }
        let (status, body) = self.send("GET", &self.collection_path(), None).await?;
        match status {
            200 => {}
            404 => {
                let schema = serde_json::to_vec(&collection_schema(&self.collection)).unwrap_or_default();
                let (status, body) = self.send("POST", "/collections", Some(schema)).await?;
                // 409: another replica created it in between.
                if !matches!(status, 201 | 200 | 409) {
                    return Err(Self::unexpected("collection creation", status, &body));
                }
                log::info!(target: "fountain::search", collection = self.collection.as_str(); "typesense collection created");
            }
            _ => return Err(Self::unexpected("collection lookup", status, &body)),
        }
        self.collection_ready.store(true, Ordering::Release);
        Ok(())
    }

    async fn delete(&self, id: &str) -> BackendResult<Outcome> {
        let path = format!("{}/documents/{id}", self.collection_path());
        let (status, body) = self.send("DELETE", &path, None).await?;
        match status {
            200 => Ok(Outcome::Done),
            404 => Ok(Outcome::Missing),
            _ => Err(Self::unexpected("delete", status, &body)),
        }
    }

    /// Upserts through one import call; every answer line is checked.
    async fn import(&self, documents: &[&Document]) -> BackendResult<Vec<Outcome>> {
        let mut body = Vec::new();
        for document in documents {
            serde_json::to_writer(&mut body, document).map_err(|e| BackendError::Internal(e.to_string()))?;
            body.push(b'\n');
        }
        let path = format!("{}/documents/import?action=upsert", self.collection_path());
        let (status, answer) = self.send("POST", &path, Some(body)).await?;
        if status != 200 {
            return Err(Self::unexpected("import", status, &answer));
        }
        let text = String::from_utf8_lossy(&answer);
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        if lines.len() != documents.len() {
            return Err(BackendError::Upstream(format!(
                "typesense answered {} import lines for {} documents",
                lines.len(),
                documents.len()
            )));
        }
        lines
            .into_iter()
            .map(|line| {
                let result: Value = serde_json::from_str(line)
                    .map_err(|e| BackendError::Upstream(format!("typesense import line: {e}")))?;
                if result["success"] == json!(true) {
                    Ok(Outcome::Done)
                } else {
                    let error = result["error"].as_str().unwrap_or("refused by typesense").to_string();
                    Ok(Outcome::Refused(error))
                }
            })
            .collect()
    }

    async fn write_all(&self, changes: Vec<Change>) -> BackendResult<Vec<Outcome>> {
        self.ensure_collection().await?;
        // Consecutive upserts go in one import call; deletes one by one, in order.
        let mut outcomes = Vec::with_capacity(changes.len());
        let mut run: Vec<&Document> = Vec::new();
        for change in &changes {
            match change {
                Change::Upsert(document) => run.push(document),
                Change::Delete(id) => {
                    if !run.is_empty() {
                        outcomes.extend(self.import(&run).await?);
                        run.clear();
                    }
                    outcomes.push(self.delete(id).await?);
                }
            }
        }
        if !run.is_empty() {
            outcomes.extend(self.import(&run).await?);
        }
        Ok(outcomes)
    }

    async fn search_once(&self, query: &Query) -> BackendResult<SearchResponse> {
        self.ensure_collection().await?;
        let request = &query.request;
        let mut params: Vec<(&str, String)> = vec![
            ("q", if query.words.is_empty() { "*".to_string() } else { request.q.clone() }),
            ("query_by", request.query_by.clone()),
            ("per_page", query.per_page.to_string()),
            ("page", query.page.to_string()),
            ("max_candidates", MAX_CANDIDATES.to_string()),
        ];
        for (name, value) in [
            ("filter_by", &query.typesense_filter),
            ("sort_by", &request.sort_by),
            ("facet_by", &request.facet_by),
        ] {
            if let Some(value) = value.as_ref().filter(|v| !v.trim().is_empty()) {
                params.push((name, value.clone()));
            }
        }
        let encoded =
            serde_urlencoded::to_string(&params).map_err(|e| BackendError::Internal(e.to_string()))?;
        let path = format!("{}/documents/search?{encoded}", self.collection_path());
        let (status, body) = self.send("GET", &path, None).await?;
        if status != 200 {
            return Err(Self::unexpected("search", status, &body));
        }
        let raw: RawSearch = serde_json::from_slice(&body)
            .map_err(|e| BackendError::Upstream(format!("typesense search answer: {e}")))?;
        let hits = raw
            .hits
            .into_iter()
            .map(|hit| {
                Ok(Hit {
                    document: document_of(&hit.document)?,
                    highlights: hit
                        .highlights
                        .into_iter()
                        .map(|h| Highlight {
                            field: h.field,
                            snippet: h.snippet.unwrap_or_default(),
                            matched_tokens: serde_json::from_value(h.matched_tokens).unwrap_or_default(),
                        })
                        .collect(),
                })
            })
            .collect::<BackendResult<Vec<_>>>()?;
        let facet_counts = (!query.facet_by.is_empty()).then(|| {
            raw.facet_counts
                .into_iter()
                .map(|f| {
                    let mut counts: Vec<FacetValue> =
                        f.counts.into_iter().map(|c| FacetValue { value: c.value, count: c.count }).collect();
                    counts.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.value.cmp(&b.value)));
                    FacetCount { field_name: f.field_name, counts }
                })
                .collect()
        });
        Ok(SearchResponse {
            hits,
            found: raw.found,
            page: query.page,
            search_time_ms: raw.search_time_ms,
            facet_counts,
        })
    }

    /// Forgets that the collection exists when Typesense says it does not (it was dropped, or
    /// the server was replaced), so that the next call creates it again.
    fn forget_collection_on<T>(&self, result: &BackendResult<T>) {
        if let Err(BackendError::Upstream(message)) = result {
            if message.contains(": 404 ") {
                self.collection_ready.store(false, Ordering::Release);
            }
        }
    }
}

impl SearchBackend for Typesense {
    fn kind(&self) -> &'static str {
        "typesense"
    }

    fn write(&self, changes: Vec<Change>) -> LocalBoxFuture<'_, BackendResult<Vec<Outcome>>> {
        Box::pin(async move {
            let result = self.write_all(changes).await;
            self.forget_collection_on(&result);
            result
        })
    }

    fn get(&self, id: String) -> LocalBoxFuture<'_, BackendResult<Option<Document>>> {
        Box::pin(async move {
            self.ensure_collection().await?;
            let path = format!("{}/documents/{id}", self.collection_path());
            let (status, body) = self.send("GET", &path, None).await?;
            match status {
                200 => {
                    let value: Value = serde_json::from_slice(&body)
                        .map_err(|e| BackendError::Upstream(format!("typesense document: {e}")))?;
                    Ok(Some(document_of(&value)?))
                }
                404 => Ok(None),
                _ => Err(Self::unexpected("get", status, &body)),
            }
        })
    }

    fn search(&self, query: Query) -> LocalBoxFuture<'_, BackendResult<SearchResponse>> {
        Box::pin(async move {
            let result = self.search_once(&query).await;
            self.forget_collection_on(&result);
            result
        })
    }

    fn count(&self) -> LocalBoxFuture<'_, BackendResult<u64>> {
        Box::pin(async move {
            self.ensure_collection().await?;
            let (status, body) = self.send("GET", &self.collection_path(), None).await?;
            if status != 200 {
                return Err(Self::unexpected("collection", status, &body));
            }
            let value: Value = serde_json::from_slice(&body)
                .map_err(|e| BackendError::Upstream(format!("typesense collection: {e}")))?;
            Ok(value["num_documents"].as_u64().unwrap_or(0))
        })
    }

    fn ready(&self) -> LocalBoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let (status, _) = self.send("GET", "/health", None).await.map_err(|e| e.to_string())?;
            if status == 200 {
                Ok(())
            } else {
                Err(format!("typesense health answered {status}"))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_is_the_seeds_without_the_implicit_id() {
        let schema = collection_schema("elements");
        let names: Vec<&str> =
            schema["fields"].as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap()).collect();
        assert_eq!(
            names,
            ["element_type", "element_id", "sequence_number", "version_number", "comment", "service_name"]
        );
        assert_eq!(schema["default_sorting_field"], "sequence_number");
    }
}
