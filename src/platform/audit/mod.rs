//! The audit trail every role writes to: who did what to which target, when, from where, and
//! whether it was allowed. Entries are append-only and never hold a secret value.
//!
//! Each role's records form a hash chain (`chain`): a record carries its place in the chain
//! (`chain_seq`, contiguous from 1), the MAC of the record before it and its own MAC, keyed
//! from the master key. `fountain audit verify` (`verify`) walks the chains and names the first
//! record that was edited, inserted or deleted. A record that cannot be written fails its
//! change: nothing happens that the trail does not show.

mod chain;
pub mod verify;

use chrono::NaiveDateTime;
use diesel::prelude::*;
use serde::Serialize;
use utoipa::ToSchema;

use super::crypto::ChainKey;
use super::db::schema::audit_log;
use super::db::{AnyConnection, DbError};

pub use chain::{read_head, Head, GENESIS};

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
    /// The record's place in its role's hash chain (1, 2, …; absent on records written before
    /// the trail was chained and not chained since).
    pub chain_seq: Option<i64>,
    /// HMAC-SHA256 (hex) over every field of the record and the previous record's `hash`.
    pub hash: Option<String>,
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

/// Appends one entry to its role's chain. Call it inside the transaction of the change it
/// describes, so that a change and its audit record commit or vanish together (outside one it
/// opens its own). Any failure is a [`DbError::Audit`]: the caller's change must fail with it;
/// a full disk stays what it is (507 for the client, who can do nothing about an audit fault but
/// can free space).
pub fn record(conn: &mut AnyConnection, key: &ChainKey, entry: NewEntry<'_>) -> Result<(), DbError> {
    let appended = if super::db::in_transaction(conn) {
        chain::append(conn, key, &entry)
    } else {
        super::db::transaction(conn, |conn| chain::append(conn, key, &entry))
    };
    appended.map_err(|err| match err {
        audit @ DbError::Audit(_) => audit,
        full if full.is_storage_full() => full,
        other => DbError::Audit(other.to_string()),
    })
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
