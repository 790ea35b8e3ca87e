//! sequence persistence: elements, their versions, and the outbox towards search.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};

use super::schema::{
    sequence_elements as elements, sequence_outbox as outbox, sequence_versions as versions,
};
use crate::platform::db::{AnyConnection, DbError};

pub fn now() -> NaiveDateTime {
    chrono::Utc::now().naive_utc()
}

/// Whether a write failed only because a unique key already holds the value.
pub fn is_unique_violation(err: &DbError) -> bool {
    matches!(err, DbError::Query(DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _)))
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = elements)]
pub struct ElementRow {
    pub element_type: String,
    pub element_id: i64,
    pub sequence_number: i64,
    pub current_version: i32,
    pub comment: String,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = versions)]
pub struct VersionRow {
    pub version_number: i32,
    pub comment: String,
    pub data: Option<String>,
    pub created_at: NaiveDateTime,
}

pub fn find_element(conn: &mut AnyConnection, kind: &str, id: i64) -> Result<Option<ElementRow>, DbError> {
    Ok(elements::table
        .filter(elements::element_type.eq(kind))
        .filter(elements::element_id.eq(id))
        .select(ElementRow::as_select())
        .first(conn)
        .optional()?)
}

/// Like `find_element`, holding the row lock until the transaction ends (`FOR UPDATE` on
/// PostgreSQL; SQLite's write transactions already hold the database lock).
pub fn lock_element(conn: &mut AnyConnection, kind: &str, id: i64) -> Result<Option<ElementRow>, DbError> {
    let query = elements::table.filter(elements::element_type.eq(kind)).filter(elements::element_id.eq(id));
    Ok(match conn {
        AnyConnection::Postgres(pg) => {
            query.select(ElementRow::as_select()).for_update().first(pg).optional()?
        }
        AnyConnection::Sqlite(sqlite) => query.select(ElementRow::as_select()).first(sqlite).optional()?,
    })
}

/// The elements of one type with these ids, locked, in id order (a fixed lock order, so two
/// reorders never wait for each other in a circle).
pub fn lock_elements(conn: &mut AnyConnection, kind: &str, ids: &[i64]) -> Result<Vec<ElementRow>, DbError> {
    let query = elements::table
        .filter(elements::element_type.eq(kind))
        .filter(elements::element_id.eq_any(ids.to_vec()))
        .order(elements::element_id.asc());
    Ok(match conn {
        AnyConnection::Postgres(pg) => query.select(ElementRow::as_select()).for_update().load(pg)?,
        AnyConnection::Sqlite(sqlite) => query.select(ElementRow::as_select()).load(sqlite)?,
    })
}

/// Which element types hold elements with these ids: (type, id) pairs.
pub fn types_of(conn: &mut AnyConnection, ids: &[i64]) -> Result<Vec<(String, i64)>, DbError> {
    Ok(elements::table
        .filter(elements::element_id.eq_any(ids.to_vec()))
        .select((elements::element_type, elements::element_id))
        .load(conn)?)
}

/// Makes the creates of one element type take their numbers one after the other until commit
/// (PostgreSQL; SQLite's write transactions are one at a time already). Without it, concurrent
/// creates all read the same highest number, and all but one are refused by the UNIQUE
/// constraint and try again: correct, but measured at 336 creates/s with 64 clients, against
/// the lock's rate in bench/README.md.
pub fn serialize_numbering(conn: &mut AnyConnection, kind: &str) -> Result<(), DbError> {
    if let AnyConnection::Postgres(pg) = conn {
        use diesel::connection::SimpleConnection;
        let slot = super::api::ElementType::ALL.iter().position(|t| t.as_str() == kind).unwrap_or(0);
        pg.batch_execute(&format!("SELECT pg_advisory_xact_lock({})", NUMBERING_LOCK_KEY + slot as i64))?;
    }
    Ok(())
}

/// Advisory lock keys of the five element types' numbering ("seqn" + the type's slot).
const NUMBERING_LOCK_KEY: i64 = 0x7365_716e_0000_0000;

/// The highest sequence number of a type.
pub fn max_sequence(conn: &mut AnyConnection, kind: &str) -> Result<Option<i64>, DbError> {
    Ok(elements::table
        .filter(elements::element_type.eq(kind))
        .select(diesel::dsl::max(elements::sequence_number))
        .first::<Option<i64>>(conn)?)
}

/// Inserts an element at version 1 with its first version row. A unique violation means the
/// element exists or another writer took `sequence` first.
pub fn insert_element(
    conn: &mut AnyConnection,
    kind: &str,
    id: i64,
    sequence: i64,
    comment: &str,
) -> Result<(), DbError> {
    let at = now();
    diesel::insert_into(elements::table)
        .values((
            elements::element_type.eq(kind),
            elements::element_id.eq(id),
            elements::sequence_number.eq(sequence),
            elements::current_version.eq(1),
            elements::comment.eq(comment),
            elements::created_at.eq(at),
            elements::updated_at.eq(at),
        ))
        .execute(conn)?;
    insert_version(conn, kind, id, 1, comment, None)
}

pub fn insert_version(
    conn: &mut AnyConnection,
    kind: &str,
    id: i64,
    version: i32,
    comment: &str,
    data: Option<&str>,
) -> Result<(), DbError> {
    diesel::insert_into(versions::table)
        .values((
            versions::element_type.eq(kind),
            versions::element_id.eq(id),
            versions::version_number.eq(version),
            versions::comment.eq(comment),
            versions::data.eq(data),
            versions::created_at.eq(now()),
        ))
        .execute(conn)?;
    Ok(())
}

pub fn set_current_version(
    conn: &mut AnyConnection,
    kind: &str,
    id: i64,
    version: i32,
) -> Result<(), DbError> {
    diesel::update(
        elements::table.filter(elements::element_type.eq(kind)).filter(elements::element_id.eq(id)),
    )
    .set((elements::current_version.eq(version), elements::updated_at.eq(now())))
    .execute(conn)?;
    Ok(())
}

pub fn set_sequence(conn: &mut AnyConnection, kind: &str, id: i64, sequence: i64) -> Result<(), DbError> {
    diesel::update(
        elements::table.filter(elements::element_type.eq(kind)).filter(elements::element_id.eq(id)),
    )
    .set((elements::sequence_number.eq(sequence), elements::updated_at.eq(now())))
    .execute(conn)?;
    Ok(())
}

pub fn versions_of(conn: &mut AnyConnection, kind: &str, id: i64) -> Result<Vec<VersionRow>, DbError> {
    Ok(versions::table
        .filter(versions::element_type.eq(kind))
        .filter(versions::element_id.eq(id))
        .order(versions::version_number.asc())
        .select(VersionRow::as_select())
        .load(conn)?)
}

/// One page of elements by (type, sequence number), after `after` when given.
pub fn list_elements(
    conn: &mut AnyConnection,
    kind: Option<&str>,
    after: Option<(&str, i64)>,
    limit: i64,
) -> Result<Vec<ElementRow>, DbError> {
    let mut query = elements::table.select(ElementRow::as_select()).into_boxed();
    if let Some(kind) = kind {
        query = query.filter(elements::element_type.eq(kind.to_string()));
    }
    if let Some((after_kind, after_sequence)) = after {
        query = query.filter(
            elements::element_type.gt(after_kind.to_string()).or(elements::element_type
                .eq(after_kind.to_string())
                .and(elements::sequence_number.gt(after_sequence))),
        );
    }
    Ok(query
        .order((elements::element_type.asc(), elements::sequence_number.asc()))
        .limit(limit)
        .load(conn)?)
}

/// Every element with every version's number and comment, for a full resync.
pub fn all_versions(conn: &mut AnyConnection) -> Result<Vec<(ElementRow, i32, String)>, DbError> {
    let all: Vec<ElementRow> = elements::table.select(ElementRow::as_select()).load(conn)?;
    let mut by_key: std::collections::HashMap<(String, i64), ElementRow> =
        all.into_iter().map(|e| ((e.element_type.clone(), e.element_id), e)).collect();
    let rows: Vec<(String, i64, i32, String)> = versions::table
        .order((versions::element_type.asc(), versions::element_id.asc(), versions::version_number.asc()))
        .select((versions::element_type, versions::element_id, versions::version_number, versions::comment))
        .load(conn)?;
    let mut out = Vec::with_capacity(rows.len());
    for (kind, id, version, comment) in rows {
        if let Some(element) = by_key.get_mut(&(kind, id)) {
            out.push((element.clone(), version, comment));
        }
    }
    Ok(out)
}

// ---- the outbox ----

pub const PENDING: &str = "pending";
pub const FAILED: &str = "failed";

/// A document to send, before it is stored.
pub struct NewSync {
    pub element_type: String,
    pub element_id: i64,
    pub operation: &'static str,
    pub document: String,
}

pub fn enqueue(conn: &mut AnyConnection, rows: &[NewSync]) -> Result<(), DbError> {
    let at = now();
    for row in rows {
        diesel::insert_into(outbox::table)
            .values((
                outbox::element_type.eq(&row.element_type),
                outbox::element_id.eq(row.element_id),
                outbox::operation.eq(row.operation),
                outbox::document.eq(&row.document),
                outbox::status.eq(PENDING),
                outbox::attempts.eq(0),
                outbox::next_attempt_at.eq(at),
                outbox::created_at.eq(at),
            ))
            .execute(conn)?;
    }
    Ok(())
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = outbox)]
pub struct OutboxRow {
    pub id: i64,
    pub operation: String,
    pub document: String,
    pub attempts: i32,
}

/// Claims up to `limit` due deliveries: of each element only its oldest pending row (so one
/// element's changes go out in order), not leased by another worker. The claim holds until
/// `lease_until`; a worker that dies mid-call loses nothing, its rows come back then.
pub fn claim(
    conn: &mut AnyConnection,
    limit: i64,
    lease_until: NaiveDateTime,
) -> Result<Vec<OutboxRow>, DbError> {
    let at = now();
    // The oldest pending row of each element, read from a second name of the same table.
    let pending = diesel::alias!(outbox as pending_rows);
    let heads = pending
        .filter(pending.field(outbox::status).eq(PENDING))
        .group_by((pending.field(outbox::element_type), pending.field(outbox::element_id)))
        .select(diesel::dsl::min(pending.field(outbox::id)));
    let free = outbox::lease_until.is_null().or(outbox::lease_until.lt(at));
    let due: Vec<i64> = outbox::table
        .filter(outbox::id.nullable().eq_any(heads))
        .filter(outbox::next_attempt_at.le(at))
        .filter(free)
        .order(outbox::id.asc())
        .limit(limit)
        .select(outbox::id)
        .load(conn)?;
    if due.is_empty() {
        return Ok(Vec::new());
    }
    // Another worker may have claimed some of them since: the lease filter is checked again
    // under the row lock, and only the rows this update changed are ours.
    let claimed: Vec<i64> = diesel::update(
        outbox::table
            .filter(outbox::id.eq_any(due))
            .filter(outbox::lease_until.is_null().or(outbox::lease_until.lt(at))),
    )
    .set(outbox::lease_until.eq(Some(lease_until)))
    .returning(outbox::id)
    .get_results(conn)?;
    Ok(outbox::table
        .filter(outbox::id.eq_any(claimed))
        .order(outbox::id.asc())
        .select(OutboxRow::as_select())
        .load(conn)?)
}

/// When the next delivery that could be claimed is due (the oldest pending row of an element,
/// not in flight), if any.
pub fn next_due(conn: &mut AnyConnection) -> Result<Option<NaiveDateTime>, DbError> {
    let at = now();
    let pending = diesel::alias!(outbox as pending_rows);
    let heads = pending
        .filter(pending.field(outbox::status).eq(PENDING))
        .group_by((pending.field(outbox::element_type), pending.field(outbox::element_id)))
        .select(diesel::dsl::min(pending.field(outbox::id)));
    Ok(outbox::table
        .filter(outbox::id.nullable().eq_any(heads))
        .filter(outbox::lease_until.is_null().or(outbox::lease_until.lt(at)))
        .select(diesel::dsl::min(outbox::next_attempt_at))
        .first::<Option<NaiveDateTime>>(conn)?)
}

/// What became of one claimed delivery.
#[derive(Debug)]
pub enum Outcome {
    Delivered {
        id: i64,
    },
    /// `unavailable`: search was not there to answer (the worker follows it; nothing stored).
    Retry {
        id: i64,
        attempts: i32,
        at: NaiveDateTime,
        error: String,
        unavailable: bool,
    },
    Failed {
        id: i64,
        attempts: i32,
        error: String,
    },
}

/// Makes every pending row that waits out a retry due now (search answered again), and returns
/// how many there were.
pub fn retry_waiting_now(conn: &mut AnyConnection) -> Result<usize, DbError> {
    let at = now();
    Ok(diesel::update(
        outbox::table
            .filter(outbox::status.eq(PENDING))
            .filter(outbox::attempts.gt(0))
            .filter(outbox::next_attempt_at.gt(at)),
    )
    .set(outbox::next_attempt_at.eq(at))
    .execute(conn)?)
}

pub fn record(conn: &mut AnyConnection, outcomes: &[Outcome]) -> Result<(), DbError> {
    for outcome in outcomes {
        match outcome {
            Outcome::Delivered { id } => {
                diesel::delete(outbox::table.filter(outbox::id.eq(id))).execute(conn)?;
            }
            Outcome::Retry { id, attempts, at, error, .. } => {
                diesel::update(outbox::table.filter(outbox::id.eq(id)))
                    .set((
                        outbox::attempts.eq(attempts),
                        outbox::next_attempt_at.eq(at),
                        outbox::lease_until.eq(None::<NaiveDateTime>),
                        outbox::last_error.eq(Some(error)),
                    ))
                    .execute(conn)?;
            }
            Outcome::Failed { id, attempts, error } => {
                diesel::update(outbox::table.filter(outbox::id.eq(id)))
                    .set((
                        outbox::status.eq(FAILED),
                        outbox::attempts.eq(attempts),
                        outbox::lease_until.eq(None::<NaiveDateTime>),
                        outbox::last_error.eq(Some(error)),
                    ))
                    .execute(conn)?;
            }
        }
    }
    Ok(())
}

/// How many deliveries are pending, since when, and how many failed for good.
pub fn depth(conn: &mut AnyConnection) -> Result<(i64, Option<NaiveDateTime>, i64), DbError> {
    let (pending, oldest) = outbox::table
        .filter(outbox::status.eq(PENDING))
        .select((diesel::dsl::count_star(), diesel::dsl::min(outbox::created_at)))
        .first::<(i64, Option<NaiveDateTime>)>(conn)?;
    let failed = outbox::table.filter(outbox::status.eq(FAILED)).count().get_result(conn)?;
    Ok((pending, oldest, failed))
}
