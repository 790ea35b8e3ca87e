//! The audit trail every role writes to: who did what to which target, when, from where, and
//! whether it was allowed. Entries are append-only and never hold a secret value.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use serde::Serialize;
use utoipa::ToSchema;

use super::db::schema::audit_log;
use super::db::{AnyConnection, DbError};

/// Most entries one page may return.
pub const MAX_PAGE: i64 = 500;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Success,
    Denied,
    Failure,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Denied => "denied",
            Outcome::Failure => "failure",
        }
    }
}

/// What to record. `details` must never contain a password, key, token or secret value.
#[derive(Debug, Clone)]
pub struct NewEntry<'a> {
    pub role: &'a str,
    pub actor: &'a str,
    pub action: &'a str,
    pub target: &'a str,
    pub outcome: Outcome,
    pub source_addr: Option<&'a str>,
    pub request_id: Option<&'a str>,
    pub details: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema, Queryable, Selectable)]
#[diesel(table_name = audit_log)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    pub id: i64,
    #[serde(with = "crate::platform::time::utc")]
    #[schema(value_type = String, format = DateTime)]
    pub occurred_at: NaiveDateTime,
    /// The role that wrote the record (`kms`, `secrets`, `notify`…).
    pub role: String,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub outcome: String,
    pub source_addr: Option<String>,
    pub request_id: Option<String>,
    pub details: Option<String>,
}

/// Which entries to list: newest first, optionally before an id (keyset paging). `None`
/// filters nothing: every role's records share the one trail.
#[derive(Debug, Clone, Default)]
pub struct Query {
    pub role: Option<String>,
    pub actor: Option<String>,
    pub before_id: Option<i64>,
    pub limit: i64,
}

/// Appends one entry. Call it inside the transaction of the change it describes, so that a
/// change and its audit record commit or vanish together.
pub fn record(conn: &mut AnyConnection, entry: NewEntry<'_>) -> Result<(), DbError> {
    let now = chrono::Utc::now().naive_utc();
    let details = entry.details.map(|d| d.to_string());
    diesel::insert_into(audit_log::table)
        .values((
            audit_log::occurred_at.eq(now),
            audit_log::role.eq(entry.role),
            audit_log::actor.eq(entry.actor),
            audit_log::action.eq(entry.action),
            audit_log::target.eq(entry.target),
            audit_log::outcome.eq(entry.outcome.as_str()),
            audit_log::source_addr.eq(entry.source_addr),
            audit_log::request_id.eq(entry.request_id),
            audit_log::details.eq(details),
        ))
        .execute(conn)?;
    Ok(())
}

/// One page of entries, newest first.
pub fn list(conn: &mut AnyConnection, query: &Query) -> Result<Vec<Entry>, DbError> {
    let mut select = audit_log::table.select(Entry::as_select()).into_boxed();
    if let Some(role) = &query.role {
        select = select.filter(audit_log::role.eq(role.clone()));
    }
    if let Some(actor) = &query.actor {
        select = select.filter(audit_log::actor.eq(actor.clone()));
    }
    if let Some(before) = query.before_id {
        select = select.filter(audit_log::id.lt(before));
    }
    let limit = query.limit.clamp(1, MAX_PAGE);
    Ok(select.order(audit_log::id.desc()).limit(limit).load(conn)?)
}
