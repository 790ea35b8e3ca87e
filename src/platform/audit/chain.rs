//! The hash chain of one role's audit records.
//!
//! Record n of a role carries `chain_seq = n`, `prev_hash` = the `hash` of record n-1 (or
//! [`GENESIS`] for n = 1) and `hash` = HMAC-SHA256, keyed from the master key, over a canonical
//! encoding of all its fields ([`Link::encode`]). The head table holds each role's last seq and
//! hash; it is locked and moved in the transaction that appends, so writers of one role, in any
//! number of processes, chain strictly one after another.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::NewEntry;
use crate::platform::crypto::ChainKey;
use crate::platform::db::schema::{audit_chain_head, audit_log, instance_meta};
use crate::platform::db::{AnyConnection, DbError};

/// The `prev_hash` of a chain's first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Where records written before chaining end (`instance_meta`, set by the migration that
/// introduced the chain): only records up to this id are ever chained after the fact.
const LEGACY_MAX_ID: &str = "audit_chain_legacy_max_id";

/// Separates this encoding from anything else the key might ever MAC.
const DOMAIN: &[u8] = b"fountain/audit-record/v1";

/// How many legacy records are chained per read.
const LEGACY_BATCH: i64 = 500;

/// The last link of a role's chain.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = audit_chain_head)]
pub struct Head {
    #[diesel(column_name = last_seq)]
    pub seq: i64,
    #[diesel(column_name = last_hash)]
    pub hash: String,
}

/// Every field a record's MAC covers.
#[derive(Debug, Clone, Copy)]
pub struct Link<'a> {
    pub role: &'a str,
    pub seq: i64,
    pub prev_hash: &'a str,
    pub occurred_at: NaiveDateTime,
    pub actor: &'a str,
    pub action: &'a str,
    pub target: &'a str,
    pub outcome: &'a str,
    pub source_addr: Option<&'a str>,
    pub request_id: Option<&'a str>,
    pub details: Option<&'a str>,
}

impl Link<'_> {
    /// The canonical encoding: a domain tag, then every field in a fixed order, each text
    /// length-prefixed and each optional one tagged present or absent, so that no two
    /// different records encode alike (`("ab","c")` and `("a","bc")`, `None` and `""` differ).
    /// The time is whole seconds since the epoch and nanoseconds: every digit either backend
    /// stores, for any date.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(DOMAIN);
        text(&mut out, self.role);
        out.extend_from_slice(&self.seq.to_be_bytes());
        text(&mut out, self.prev_hash);
        let at = self.occurred_at.and_utc();
        out.extend_from_slice(&at.timestamp().to_be_bytes());
        out.extend_from_slice(&at.timestamp_subsec_nanos().to_be_bytes());
        for field in [self.actor, self.action, self.target, self.outcome] {
            text(&mut out, field);
        }
        for field in [self.source_addr, self.request_id, self.details] {
            optional_text(&mut out, field);
        }
        out
    }

    pub fn mac(&self, key: &ChainKey) -> String {
        key.mac(&self.encode())
    }
}

fn text(out: &mut Vec<u8>, value: &str) {
    out.push(1);
    out.extend_from_slice(&(value.len() as u64).to_be_bytes());
    out.extend_from_slice(value.as_bytes());
}

fn optional_text(out: &mut Vec<u8>, value: Option<&str>) {
    match value {
        Some(value) => text(out, value),
        None => out.push(0),
    }
}

/// Now, at the precision both backends store (PostgreSQL keeps microseconds), so that the time
/// MACed is the time read back.
fn now_as_stored() -> NaiveDateTime {
    use chrono::SubsecRound;
    chrono::Utc::now().naive_utc().trunc_subsecs(6)
}

/// Appends `entry` to its role's chain: locks the head, inserts the record linked to it, moves
/// the head. Must run inside a transaction.
pub fn append(conn: &mut AnyConnection, key: &ChainKey, entry: &NewEntry<'_>) -> Result<(), DbError> {
    let head = lock_head(conn, key, entry.role)?;
    let details = entry.details.as_ref().map(|d| d.to_string());
    let link = Link {
        role: entry.role,
        seq: head.seq + 1,
        prev_hash: &head.hash,
        occurred_at: now_as_stored(),
        actor: entry.actor,
        action: entry.action,
        target: entry.target,
        outcome: entry.outcome.as_str(),
        source_addr: entry.source_addr,
        request_id: entry.request_id,
        details: details.as_deref(),
    };
    let hash = link.mac(key);
    diesel::insert_into(audit_log::table)
        .values((
            audit_log::occurred_at.eq(link.occurred_at),
            audit_log::role.eq(link.role),
            audit_log::actor.eq(link.actor),
            audit_log::action.eq(link.action),
            audit_log::target.eq(link.target),
            audit_log::outcome.eq(link.outcome),
            audit_log::source_addr.eq(link.source_addr),
            audit_log::request_id.eq(link.request_id),
            audit_log::details.eq(link.details),
            audit_log::chain_seq.eq(link.seq),
            audit_log::prev_hash.eq(link.prev_hash),
            audit_log::hash.eq(&hash),
        ))
        .execute(conn)?;
    move_head(conn, entry.role, link.seq, &hash)
}

/// The role's head, locked until the transaction ends. The first time a role appends, its head
/// is created and the role's records from before chaining are chained first, once.
///
/// The price, measured with bench/sequence.sh (every `POST /sequence` is audited; wrk -c64,
/// 2 cores shared with other work, so ±10 %): SQLite 2.9–3.2k → 2.4–2.7k req/s, PostgreSQL
/// 371 → 300 req/s. A role's audited writes queue on its head from the audit record to commit.
fn lock_head(conn: &mut AnyConnection, key: &ChainKey, role: &str) -> Result<Head, DbError> {
    if let Some(head) = read_head_locked(conn, role)? {
        return Ok(head);
    }
    if create_head(conn, role)? {
        chain_legacy_records(conn, key, role)?;
    }
    read_head_locked(conn, role)?
        .ok_or_else(|| DbError::Data(format!("the audit chain head of {role} vanished")))
}

/// `SELECT … FOR UPDATE` on PostgreSQL; SQLite's write transactions (`BEGIN IMMEDIATE`) already
/// hold the database's write lock.
fn read_head_locked(conn: &mut AnyConnection, role: &str) -> Result<Option<Head>, DbError> {
    let by_role = audit_chain_head::table.filter(audit_chain_head::role.eq(role));
    Ok(match conn {
        AnyConnection::Postgres(pg) => by_role.select(Head::as_select()).for_update().first(pg).optional()?,
        AnyConnection::Sqlite(sqlite) => by_role.select(Head::as_select()).first(sqlite).optional()?,
    })
}

/// The role's head, unlocked (for verification).
pub fn read_head(conn: &mut AnyConnection, role: &str) -> Result<Option<Head>, DbError> {
    Ok(audit_chain_head::table
        .filter(audit_chain_head::role.eq(role))
        .select(Head::as_select())
        .first(conn)
        .optional()?)
}

/// Inserts an empty head unless one exists; true when this transaction created it. A second
/// process creating the same head at once waits on the key, then inserts nothing.
fn create_head(conn: &mut AnyConnection, role: &str) -> Result<bool, DbError> {
    let insert = diesel::insert_into(audit_chain_head::table)
        .values((
            audit_chain_head::role.eq(role),
            audit_chain_head::last_seq.eq(0_i64),
            audit_chain_head::last_hash.eq(GENESIS),
        ))
        .on_conflict_do_nothing();
    let inserted = match conn {
        AnyConnection::Postgres(pg) => insert.execute(pg)?,
        AnyConnection::Sqlite(sqlite) => insert.execute(sqlite)?,
    };
    Ok(inserted == 1)
}

fn move_head(conn: &mut AnyConnection, role: &str, seq: i64, hash: &str) -> Result<(), DbError> {
    let moved = diesel::update(audit_chain_head::table.filter(audit_chain_head::role.eq(role)))
        .set((audit_chain_head::last_seq.eq(seq), audit_chain_head::last_hash.eq(hash)))
        .execute(conn)?;
    if moved != 1 {
        return Err(DbError::Data(format!("the audit chain head of {role} is missing")));
    }
    Ok(())
}

/// The last id written before chaining (0 on an installation that started chained).
pub fn legacy_max_id(conn: &mut AnyConnection) -> Result<i64, DbError> {
    let stored: Option<String> = instance_meta::table
        .filter(instance_meta::name.eq(LEGACY_MAX_ID))
        .select(instance_meta::value)
        .first(conn)
        .optional()?;
    match stored {
        None => Ok(0),
        Some(value) => value.parse().map_err(|_| DbError::Data(format!("{LEGACY_MAX_ID} is not a number"))),
    }
}

/// A stored record with its chain fields, as verification and legacy chaining read it.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable)]
#[diesel(table_name = audit_log)]
pub struct StoredRecord {
    pub id: i64,
    pub occurred_at: NaiveDateTime,
    pub role: String,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub outcome: String,
    pub source_addr: Option<String>,
    pub request_id: Option<String>,
    pub details: Option<String>,
    pub chain_seq: Option<i64>,
    pub prev_hash: Option<String>,
    pub hash: Option<String>,
}

impl StoredRecord {
    /// The record's fields as a link at `seq` after `prev_hash`.
    pub fn link<'a>(&'a self, seq: i64, prev_hash: &'a str) -> Link<'a> {
        Link {
            role: &self.role,
            seq,
            prev_hash,
            occurred_at: self.occurred_at,
            actor: &self.actor,
            action: &self.action,
            target: &self.target,
            outcome: &self.outcome,
            source_addr: self.source_addr.as_deref(),
            request_id: self.request_id.as_deref(),
            details: self.details.as_deref(),
        }
    }
}

/// Chains the role's records written before chaining, in id order, behind its new head.
fn chain_legacy_records(conn: &mut AnyConnection, key: &ChainKey, role: &str) -> Result<(), DbError> {
    let up_to = legacy_max_id(conn)?;
    let (mut seq, mut prev_hash, mut after) = (0_i64, GENESIS.to_string(), 0_i64);
    loop {
        let batch: Vec<StoredRecord> = audit_log::table
            .filter(audit_log::role.eq(role))
            .filter(audit_log::hash.is_null())
            .filter(audit_log::id.gt(after))
            .filter(audit_log::id.le(up_to))
            .order(audit_log::id.asc())
            .limit(LEGACY_BATCH)
            .select(StoredRecord::as_select())
            .load(conn)?;
        for record in &batch {
            seq += 1;
            let hash = record.link(seq, &prev_hash).mac(key);
            diesel::update(audit_log::table.filter(audit_log::id.eq(record.id)))
                .set((
                    audit_log::chain_seq.eq(seq),
                    audit_log::prev_hash.eq(&prev_hash),
                    audit_log::hash.eq(&hash),
                ))
                .execute(conn)?;
            prev_hash = hash;
            after = record.id;
        }
        if (batch.len() as i64) < LEGACY_BATCH {
            break;
        }
    }
    if seq > 0 {
        move_head(conn, role, seq, &prev_hash)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::crypto::MasterKey;

    fn at(secs: i64, nanos: u32) -> NaiveDateTime {
        chrono::DateTime::from_timestamp(secs, nanos).unwrap().naive_utc()
    }

    fn link() -> Link<'static> {
        Link {
            role: "kms",
            seq: 3,
            prev_hash: GENESIS,
            occurred_at: at(1_800_000_000, 123_456_000),
            actor: "ab",
            action: "c",
            target: "t",
            outcome: "success",
            source_addr: Some("127.0.0.1"),
            request_id: None,
            details: Some("{}"),
        }
    }

    #[test]
    fn moving_bytes_between_fields_changes_the_encoding() {
        let base = link().encode();
        let shifted = Link { actor: "a", action: "bc", ..link() }.encode();
        assert_ne!(base, shifted);
        let empty_instead_of_absent = Link { request_id: Some(""), ..link() }.encode();
        assert_ne!(base, empty_instead_of_absent);
        let into_next_optional = Link { source_addr: None, request_id: Some("127.0.0.1"), ..link() }.encode();
        assert_ne!(base, into_next_optional);
    }

    #[test]
    fn every_field_is_covered_by_the_mac() {
        let key = MasterKey::from_bytes(&[3; 32]).audit_chain_key();
        let base = link().mac(&key);
        let variants = [
            Link { role: "kmz", ..link() },
            Link { seq: 4, ..link() },
            Link { prev_hash: "1", ..link() },
            Link { occurred_at: at(1_800_000_000, 123_457_000), ..link() },
            Link { occurred_at: at(1_800_000_001, 123_456_000), ..link() },
            Link { occurred_at: at(9_300_000_000, 123_456_000), ..link() },
            Link { actor: "ac", ..link() },
            Link { action: "d", ..link() },
            Link { target: "u", ..link() },
            Link { outcome: "denied", ..link() },
            Link { source_addr: Some("127.0.0.2"), ..link() },
            Link { request_id: Some("r"), ..link() },
            Link { details: None, ..link() },
        ];
        for (i, variant) in variants.iter().enumerate() {
            assert_ne!(variant.mac(&key), base, "field {i} is not covered");
        }
        assert_eq!(link().mac(&key), base, "deterministic");
        assert_ne!(link().mac(&MasterKey::from_bytes(&[4; 32]).audit_chain_key()), base, "keyed");
    }

    #[test]
    fn stored_times_keep_microseconds_only() {
        let now = now_as_stored();
        assert_eq!(now.and_utc().timestamp_subsec_nanos() % 1000, 0);
    }
}
