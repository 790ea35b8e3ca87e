//! The Service A domain. Every change is one unit of work (`Db::change`): the element's rows,
//! the outbox rows that carry it to search and the audit record commit together or not at all,
//! so search can be down without a change being lost or a stale one being sent.

use std::collections::{BTreeSet, HashMap};

use super::api::{
    ElementDetail, ElementPage, ElementType, ElementView, ReorderResponse, ReorderedElement, SearchDocument,
    SequenceResponse, VersionResponse, VersionView, MAX_COMMENT_CHARS, MAX_ELEMENT_ID, MAX_REORDER,
    MAX_VERSION_DATA_BYTES,
};
use super::store::{self, ElementRow, NewSync};
use crate::platform::db::{AnyConnection, Db, DbError};
use crate::platform::error::{ApiError, ErrorCode};
use crate::platform::time;
use crate::platform::unit::Change;

/// How often creating an element tries again when a concurrent writer took the number it
/// picked (the UNIQUE (element_type, sequence_number) constraint refused it).
const MAX_NUMBERING_ATTEMPTS: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum SequenceError {
    #[error("no such element")]
    NotFound,
    #[error("some elementIds name no element: {0:?}")]
    Missing(Vec<i64>),
    #[error("this element already exists")]
    Exists,
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("a sequence number could not be assigned: too many concurrent writers; retry")]
    Contended,
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<SequenceError> for ApiError {
    fn from(err: SequenceError) -> Self {
        match err {
            SequenceError::NotFound => ApiError::new(ErrorCode::NotFound, err.to_string()),
            SequenceError::Missing(ids) => {
                ApiError::new(ErrorCode::NotFound, "some elementIds name no element")
                    .with_details(serde_json::json!({ "missing": ids }))
            }
            SequenceError::Exists => ApiError::new(ErrorCode::AlreadyExists, err.to_string()),
            SequenceError::Invalid { field, reason } => ApiError::validation(field, reason),
            SequenceError::Contended => {
                ApiError::new(ErrorCode::Conflict, err.to_string()).with_retry_after(1)
            }
            SequenceError::Db(db) => db.into(),
        }
    }
}

fn invalid(field: &'static str, reason: impl Into<String>) -> SequenceError {
    SequenceError::Invalid { field, reason: reason.into() }
}

pub fn validate_element_id(field: &'static str, id: i64) -> Result<(), SequenceError> {
    if (1..=MAX_ELEMENT_ID).contains(&id) {
        Ok(())
    } else {
        Err(invalid(field, format!("must be between 1 and {MAX_ELEMENT_ID}")))
    }
}

pub fn validate_comment(comment: &str) -> Result<(), SequenceError> {
    if comment.chars().count() > MAX_COMMENT_CHARS {
        return Err(invalid("comment", format!("at most {MAX_COMMENT_CHARS} characters")));
    }
    if comment.chars().any(|c| c.is_control() && !matches!(c, '\n' | '\t' | '\r')) {
        return Err(invalid("comment", "no control characters other than tab and line breaks"));
    }
    Ok(())
}

/// `newVersionData` as stored: a JSON object of at most 64 KiB (compact).
pub fn version_data(data: &serde_json::Value) -> Result<String, SequenceError> {
    if !data.is_object() {
        return Err(invalid("newVersionData", "must be a JSON object"));
    }
    let text = data.to_string();
    if text.len() > MAX_VERSION_DATA_BYTES {
        return Err(invalid("newVersionData", format!("at most {MAX_VERSION_DATA_BYTES} bytes of JSON")));
    }
    Ok(text)
}

/// `newOrder` must list exactly the ids of `elementIds` (each once), at most 1000.
pub fn validate_reorder(ids: &[i64], order: &[i64]) -> Result<(), SequenceError> {
    if ids.is_empty() || ids.len() > MAX_REORDER {
        return Err(invalid("elementIds", format!("must list 1 to {MAX_REORDER} ids")));
    }
    for id in ids {
        validate_element_id("elementIds", *id)?;
    }
    let distinct: BTreeSet<i64> = ids.iter().copied().collect();
    if distinct.len() != ids.len() {
        return Err(invalid("elementIds", "must not repeat an id"));
    }
    let mut sorted_order = order.to_vec();
    sorted_order.sort_unstable();
    if sorted_order != distinct.into_iter().collect::<Vec<_>>() {
        return Err(invalid("newOrder", "must be a permutation of elementIds"));
    }
    Ok(())
}

/// What goes into the documents of one service.
#[derive(Clone)]
pub struct Documents {
    pub service_name: String,
}

impl Documents {
    fn of(&self, element: Held<'_>, version: i32, comment: &str) -> SearchDocument {
        SearchDocument {
            id: SearchDocument::id_of(element.kind, element.id, version),
            element_type: element.kind.to_string(),
            element_id: element.id,
            sequence_number: element.sequence,
            version_number: version,
            comment: comment.to_string(),
            service_name: self.service_name.clone(),
        }
    }

    fn sync(&self, element: Held<'_>, operation: &'static str, version: i32, comment: &str) -> NewSync {
        let document = serde_json::to_string(&self.of(element, version, comment)).unwrap_or_default();
        NewSync { element_type: element.kind.to_string(), element_id: element.id, operation, document }
    }
}

/// An element and the sequence number it holds, as its documents carry them.
#[derive(Clone, Copy)]
struct Held<'a> {
    kind: &'a str,
    id: i64,
    sequence: i64,
}

impl<'a> From<&'a ElementRow> for Held<'a> {
    fn from(row: &'a ElementRow) -> Self {
        Held { kind: &row.element_type, id: row.element_id, sequence: row.sequence_number }
    }
}

fn target(kind: ElementType, id: i64) -> String {
    format!("{}/{id}", kind.as_str())
}

/// Creates an element with the next sequence number of its type. The UNIQUE constraint is what
/// guarantees a number is given once: should two writers pick the same number (another process
/// writing without the numbering lock, an older replica), it refuses the second, whose insert is
/// undone to a savepoint and tried again with the number after the one that won.
pub fn create(
    tx: &mut Change<'_>,
    documents: &Documents,
    kind: ElementType,
    id: i64,
    comment: &str,
) -> Result<SequenceResponse, SequenceError> {
    let type_name = kind.as_str();
    store::serialize_numbering(tx.conn(), type_name)?;
    let mut assigned = None;
    for _ in 0..MAX_NUMBERING_ATTEMPTS {
        if store::find_element(tx.conn(), type_name, id)?.is_some() {
            return Err(SequenceError::Exists);
        }
        let next = store::max_sequence(tx.conn(), type_name)?.unwrap_or(0) + 1;
        let inserted = crate::platform::db::transaction(tx.conn(), |conn| {
            store::insert_element(conn, type_name, id, next, comment)
        });
        match inserted {
            Ok(()) => {
                assigned = Some(next);
                break;
            }
            Err(err) if store::is_unique_violation(&err) => continue,
            Err(err) => return Err(err.into()),
        }
    }
    let sequence = assigned.ok_or(SequenceError::Contended)?;
    let held = Held { kind: type_name, id, sequence };
    store::enqueue(tx.conn(), &[documents.sync(held, "create", 1, comment)])?;
    tx.audit("sequence.create", &target(kind, id), Some(serde_json::json!({ "sequenceNumber": sequence })))?;
    Ok(SequenceResponse { sequenceNumber: sequence, comment: comment.to_string() })
}

/// The one element type the listed ids belong to.
fn resolve_type(
    conn: &mut AnyConnection,
    ids: &[i64],
    given: Option<ElementType>,
) -> Result<String, SequenceError> {
    if let Some(kind) = given {
        return Ok(kind.as_str().to_string());
    }
    let found = store::types_of(conn, ids)?;
    let types: BTreeSet<&str> = found.iter().map(|(t, _)| t.as_str()).collect();
    let named: BTreeSet<i64> = found.iter().map(|(_, id)| *id).collect();
    let missing: Vec<i64> = ids.iter().copied().filter(|id| !named.contains(id)).collect();
    if types.len() > 1 {
        return Err(invalid("elementType", "required: these ids name elements of several types"));
    }
    if !missing.is_empty() || types.is_empty() {
        return Err(SequenceError::Missing(missing));
    }
    let only = types.into_iter().next().unwrap_or_default().to_string();
    Ok(only)
}

/// The listed elements exchange the sequence numbers they hold: the element first in `order`
/// gets the smallest of them, and so on. Numbers leave the type's range for a moment (negated)
/// so that the UNIQUE constraint holds after every statement, not only at commit.
pub fn reorder(
    tx: &mut Change<'_>,
    documents: &Documents,
    ids: &[i64],
    order: &[i64],
    kind: Option<ElementType>,
) -> Result<ReorderResponse, SequenceError> {
    let type_name = resolve_type(tx.conn(), ids, kind)?;
    let locked = store::lock_elements(tx.conn(), &type_name, ids)?;
    if locked.len() != ids.len() {
        let held: BTreeSet<i64> = locked.iter().map(|e| e.element_id).collect();
        return Err(SequenceError::Missing(ids.iter().copied().filter(|id| !held.contains(id)).collect()));
    }
    let mut numbers: Vec<i64> = locked.iter().map(|e| e.sequence_number).collect();
    numbers.sort_unstable();
    let by_id: HashMap<i64, &ElementRow> = locked.iter().map(|e| (e.element_id, e)).collect();
    let moves: Vec<(&ElementRow, i64)> =
        order.iter().zip(numbers).map(|(id, number)| (by_id[id], number)).collect();
    let moved: Vec<&(&ElementRow, i64)> = moves.iter().filter(|(e, n)| e.sequence_number != *n).collect();
    for (element, number) in &moved {
        store::set_sequence(tx.conn(), &type_name, element.element_id, -number)?;
    }
    let mut syncs = Vec::new();
    let mut reordered = Vec::new();
    for (element, number) in &moved {
        store::set_sequence(tx.conn(), &type_name, element.element_id, *number)?;
        let held = Held { kind: &type_name, id: element.element_id, sequence: *number };
        // Every version of a moved element is a document carrying its sequence number.
        for version in store::versions_of(tx.conn(), &type_name, element.element_id)? {
            syncs.push(documents.sync(held, "update", version.version_number, &version.comment));
        }
        reordered.push(ReorderedElement {
            elementId: element.element_id,
            oldSequenceNumber: element.sequence_number,
            newSequenceNumber: *number,
        });
    }
    store::enqueue(tx.conn(), &syncs)?;
    tx.audit("sequence.reorder", &type_name, Some(serde_json::json!({ "moved": reordered.len() })))?;
    Ok(ReorderResponse { reorderedElements: reordered, comment: "Elements reordered successfully.".into() })
}

/// Adds the next version of an element (serialised per element by its row lock).
pub fn add_version(
    tx: &mut Change<'_>,
    documents: &Documents,
    kind: ElementType,
    id: i64,
    data: &str,
    comment: &str,
) -> Result<VersionResponse, SequenceError> {
    let element = store::lock_element(tx.conn(), kind.as_str(), id)?.ok_or(SequenceError::NotFound)?;
    let version = element.current_version + 1;
    store::insert_version(tx.conn(), kind.as_str(), id, version, comment, Some(data))?;
    store::set_current_version(tx.conn(), kind.as_str(), id, version)?;
    store::enqueue(tx.conn(), &[documents.sync((&element).into(), "create", version, comment)])?;
    tx.audit("sequence.version", &target(kind, id), Some(serde_json::json!({ "versionNumber": version })))?;
    Ok(VersionResponse { versionNumber: version, comment: comment.to_string() })
}

/// Queues every version of every element again (a lost index, a new search backend).
pub fn resync(tx: &mut Change<'_>, documents: &Documents) -> Result<i64, SequenceError> {
    let all = store::all_versions(tx.conn())?;
    let syncs: Vec<NewSync> = all
        .iter()
        .map(|(element, version, comment)| documents.sync(element.into(), "update", *version, comment))
        .collect();
    store::enqueue(tx.conn(), &syncs)?;
    tx.audit("sequence.resync", "*", Some(serde_json::json!({ "queued": syncs.len() })))?;
    Ok(syncs.len() as i64)
}

fn view(row: ElementRow) -> ElementView {
    ElementView {
        elementType: ElementType::parse(&row.element_type).unwrap_or(ElementType::Script),
        elementId: row.element_id,
        sequenceNumber: row.sequence_number,
        versionNumber: row.current_version,
        comment: row.comment,
        createdAt: time::format(row.created_at),
        updatedAt: time::format(row.updated_at),
    }
}

/// A page cursor: the last element's type and sequence number.
fn encode_cursor(row: &ElementRow) -> String {
    format!("{}.{}", row.element_type, row.sequence_number)
}

fn decode_cursor(cursor: &str) -> Result<(ElementType, i64), ApiError> {
    let bad = || ApiError::new(ErrorCode::BadRequest, "cursor is not a cursor this service returned");
    let (kind, number) = cursor.split_once('.').ok_or_else(bad)?;
    Ok((ElementType::parse(kind).ok_or_else(bad)?, number.parse().map_err(|_| bad())?))
}

pub async fn list(
    db: &Db,
    kind: Option<ElementType>,
    cursor: Option<&str>,
    limit: i64,
) -> Result<ElementPage, ApiError> {
    let after = cursor.map(decode_cursor).transpose()?;
    let rows = db
        .run(move |conn| {
            let after = after.as_ref().map(|(k, n)| (k.as_str(), *n));
            store::list_elements(conn, kind.map(ElementType::as_str), after, limit + 1)
        })
        .await?;
    let more = rows.len() as i64 > limit;
    let rows: Vec<ElementRow> = rows.into_iter().take(limit as usize).collect();
    let next = if more { rows.last().map(encode_cursor) } else { None };
    Ok(ElementPage { elements: rows.into_iter().map(view).collect(), nextCursor: next })
}

pub async fn detail(db: &Db, kind: ElementType, id: i64) -> Result<ElementDetail, SequenceError> {
    let (element, versions) = db
        .run(move |conn| {
            let element = store::find_element(conn, kind.as_str(), id)?;
            let versions = match &element {
                Some(_) => store::versions_of(conn, kind.as_str(), id)?,
                None => Vec::new(),
            };
            Ok((element, versions))
        })
        .await?;
    let element = element.ok_or(SequenceError::NotFound)?;
    let versions = versions
        .into_iter()
        .map(|v| VersionView {
            versionNumber: v.version_number,
            comment: v.comment,
            newVersionData: v.data.and_then(|d| serde_json::from_str(&d).ok()),
            createdAt: time::format(v.created_at),
        })
        .collect();
    Ok(ElementDetail { element: view(element), versions })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_order_must_be_a_permutation_of_the_ids() {
        assert!(validate_reorder(&[1, 2, 3], &[3, 1, 2]).is_ok());
        for (ids, order) in [
            (vec![1, 2, 3], vec![1, 2]),
            (vec![1, 2, 3], vec![1, 2, 2]),
            (vec![1, 2, 3], vec![1, 2, 4]),
            (vec![1, 2, 3], vec![1, 2, 3, 3]),
        ] {
            let err = validate_reorder(&ids, &order).unwrap_err();
            assert!(matches!(err, SequenceError::Invalid { field: "newOrder", .. }), "{ids:?} {order:?}");
        }
        assert!(matches!(
            validate_reorder(&[1, 1], &[1, 1]).unwrap_err(),
            SequenceError::Invalid { field: "elementIds", .. }
        ));
        assert!(validate_reorder(&[], &[]).is_err());
        assert!(validate_reorder(&[0], &[0]).is_err());
    }

    #[test]
    fn version_data_is_a_bounded_object() {
        assert!(version_data(&serde_json::json!({"a": 1})).is_ok());
        assert!(version_data(&serde_json::json!([1])).is_err());
        assert!(version_data(&serde_json::json!("x")).is_err());
        let big = serde_json::json!({ "t": "x".repeat(MAX_VERSION_DATA_BYTES) });
        assert!(version_data(&big).is_err());
    }

    #[test]
    fn document_ids_include_the_element_type() {
        assert_eq!(SearchDocument::id_of("script", 7, 2), "script_7_2");
        assert_ne!(SearchDocument::id_of("script", 7, 1), SearchDocument::id_of("character", 7, 1));
    }
}
