//! Verification of the audit chains (`fountain audit verify`): every record of a role, in id
//! order, must carry the next seq, link to the record before it and carry a MAC that matches
//! its contents; the last one must be the role's head.
//!
//! What a chain cannot show by itself: someone with database access who deletes a role's
//! newest records AND sets its head back to the last remaining record's values leaves a
//! shorter, valid chain. Only a head recorded elsewhere (the seq and hash printed by verify)
//! shows that: a later verify must never report a lower seq than one seen before.

use std::fmt;

use diesel::prelude::*;

use super::chain::{self, Head, StoredRecord, GENESIS};
use crate::platform::crypto::ChainKey;
use crate::platform::db::schema::{audit_chain_head, audit_log};
use crate::platform::db::{AnyConnection, DbError};

/// How many records are read per page while walking a chain.
const PAGE: i64 = 1000;

/// A chain that verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub role: String,
    /// Chained records walked (equal to the head's seq).
    pub records: i64,
    pub head: Option<Head>,
    /// Records written before chaining and not chained yet (the role has appended nothing
    /// since the upgrade); they are chained at the role's next audited change.
    pub unchained_legacy: i64,
}

/// What is wrong with a chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    /// A record's contents no longer match its MAC, or the head no longer matches the last record.
    Edited,
    /// A record that the chain does not account for.
    Inserted,
    /// Records missing from the chain.
    Deleted,
}

impl Problem {
    pub fn as_str(self) -> &'static str {
        match self {
            Problem::Edited => "edited",
            Problem::Inserted => "inserted",
            Problem::Deleted => "deleted",
        }
    }
}

/// The first problem found in one role's chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub role: String,
    /// The record the problem shows at (the head itself has none).
    pub id: Option<i64>,
    pub seq: Option<i64>,
    pub problem: Problem,
    pub what: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.role)?;
        match (self.id, self.seq) {
            (Some(id), Some(seq)) => write!(f, "record id {id} (seq {seq})")?,
            (Some(id), None) => write!(f, "record id {id} (no seq)")?,
            _ => f.write_str("chain head")?,
        }
        write!(f, " {}: {}", self.problem.as_str(), self.what)
    }
}

/// Runs `work` on one consistent snapshot of the database, so that a chain is read as it was
/// at one moment even while roles keep appending (otherwise a record appended after the head
/// was read would look like one beyond the head). Takes no write lock: writers go on.
pub fn in_snapshot<T>(
    conn: &mut AnyConnection,
    work: impl FnOnce(&mut AnyConnection) -> Result<T, DbError>,
) -> Result<T, DbError> {
    use diesel::connection::SimpleConnection;
    let postgres = matches!(conn, AnyConnection::Postgres(_));
    // SQLite: a deferred transaction reads one WAL snapshot from its first read on.
    // PostgreSQL: REPEATABLE READ sees one snapshot from its first statement on.
    conn.transaction(|conn| {
        if postgres {
            conn.batch_execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")?;
        }
        work(conn)
    })
}

/// Every role that has audit records or a chain head, sorted.
pub fn roles_in_trail(conn: &mut AnyConnection) -> Result<Vec<String>, DbError> {
    let mut roles: Vec<String> = audit_log::table.select(audit_log::role).distinct().load(conn)?;
    roles.extend(audit_chain_head::table.select(audit_chain_head::role).load::<String>(conn)?);
    roles.sort();
    roles.dedup();
    Ok(roles)
}

/// Walks `role`'s chain: `Ok(Err(finding))` names the first problem.
pub fn verify_chain(
    conn: &mut AnyConnection,
    key: &ChainKey,
    role: &str,
) -> Result<Result<Verified, Finding>, DbError> {
    let head = chain::read_head(conn, role)?;
    let legacy_max_id = chain::legacy_max_id(conn)?;
    let mut walk = Walk::new(key, role, head, legacy_max_id);
    let mut after = 0_i64;
    loop {
        let page: Vec<StoredRecord> = audit_log::table
            .filter(audit_log::role.eq(role))
            .filter(audit_log::id.gt(after))
            .order(audit_log::id.asc())
            .limit(PAGE)
            .select(StoredRecord::as_select())
            .load(conn)?;
        for record in &page {
            if let Err(finding) = walk.check(record) {
                return Ok(Err(finding));
            }
        }
        match page.last() {
            Some(last) if page.len() as i64 == PAGE => after = last.id,
            _ => break,
        }
    }
    Ok(walk.finish())
}

/// The state of a walk along one role's records in id order.
struct Walk<'k> {
    key: &'k ChainKey,
    role: String,
    head: Option<Head>,
    legacy_max_id: i64,
    /// The last chained record seen: (id, seq, hash).
    last: Option<(i64, i64, String)>,
    unchained_legacy: i64,
}

impl<'k> Walk<'k> {
    fn new(key: &'k ChainKey, role: &str, head: Option<Head>, legacy_max_id: i64) -> Self {
        Self { key, role: role.to_string(), head, legacy_max_id, last: None, unchained_legacy: 0 }
    }

    fn finding(&self, record: &StoredRecord, problem: Problem, what: String) -> Finding {
        Finding { role: self.role.clone(), id: Some(record.id), seq: record.chain_seq, problem, what }
    }

    fn check(&mut self, record: &StoredRecord) -> Result<(), Finding> {
        let (Some(seq), Some(prev_hash), Some(hash)) = (record.chain_seq, &record.prev_hash, &record.hash)
        else {
            return self.unchained(record);
        };
        let Some(head) = &self.head else {
            let what = "it is chained but its role has no chain head (the head row was deleted)";
            return Err(self.finding(record, Problem::Deleted, what.into()));
        };
        let (expected, expected_prev) = match &self.last {
            Some((_, last_seq, last_hash)) => (last_seq + 1, last_hash.as_str()),
            None => (1, GENESIS),
        };
        if seq < expected {
            let what = format!("seq {seq} repeats or goes back (expected seq {expected})");
            return Err(self.finding(record, Problem::Inserted, what));
        }
        if seq > expected {
            let missing = if seq == expected + 1 {
                format!("seq {expected}")
            } else {
                format!("seqs {expected}–{}", seq - 1)
            };
            let what = format!("a gap before it: {missing} missing");
            return Err(self.finding(record, Problem::Deleted, what));
        }
        if seq > head.seq {
            let what = format!("it lies beyond the chain head (seq {})", head.seq);
            return Err(self.finding(record, Problem::Inserted, what));
        }
        if !self.key.verify(&record.link(seq, prev_hash).encode(), hash) {
            let what = "its contents do not match its MAC".to_string();
            return Err(self.finding(record, Problem::Edited, what));
        }
        if prev_hash != expected_prev {
            let what = "its prev_hash does not link to the record before it".to_string();
            return Err(self.finding(record, Problem::Inserted, what));
        }
        self.last = Some((record.id, seq, hash.clone()));
        Ok(())
    }

    /// A record without chain fields is fine only before the role's chain began: written
    /// before chaining (id up to the recorded boundary), with no head yet.
    fn unchained(&mut self, record: &StoredRecord) -> Result<(), Finding> {
        if self.head.is_none() && self.last.is_none() && record.id <= self.legacy_max_id {
            self.unchained_legacy += 1;
            return Ok(());
        }
        let what = "it has no chain fields (written around fountain, or its chain fields were cleared)";
        Err(self.finding(record, Problem::Inserted, what.into()))
    }

    /// After the last record: the head must be exactly the last record.
    fn finish(self) -> Result<Verified, Finding> {
        let records = self.last.as_ref().map_or(0, |(_, seq, _)| *seq);
        if let Some(head) = &self.head {
            let finding =
                |id, seq, problem, what| Finding { role: self.role.clone(), id, seq, problem, what };
            match &self.last {
                Some((id, seq, _)) if *seq < head.seq => {
                    let what = format!(
                        "the head is at seq {} but this is the last record: the records after it were deleted \
                         (tail truncated)",
                        head.seq
                    );
                    return Err(finding(Some(*id), Some(*seq), Problem::Deleted, what));
                }
                None if head.seq > 0 => {
                    let what =
                        format!("the head is at seq {} but the role has no chained record left", head.seq);
                    return Err(finding(None, None, Problem::Deleted, what));
                }
                Some((_, _, hash)) if *hash != head.hash => {
                    let what = format!("its hash does not match the last record (seq {})", head.seq);
                    return Err(finding(None, Some(head.seq), Problem::Edited, what));
                }
                _ => {}
            }
        }
        Ok(Verified { role: self.role, records, head: self.head, unchained_legacy: self.unchained_legacy })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::crypto::MasterKey;

    fn key() -> ChainKey {
        MasterKey::from_bytes(&[5; 32]).audit_chain_key()
    }

    /// A chain of `n` records of kms with ids 10, 20, …, sealed with `key()`, and its head.
    fn chain(n: i64) -> (Vec<StoredRecord>, Head) {
        let key = key();
        let mut records = Vec::new();
        let mut prev = GENESIS.to_string();
        for seq in 1..=n {
            let mut record = StoredRecord {
                id: seq * 10,
                occurred_at: chrono::DateTime::from_timestamp(1_800_000_000 + seq, 0).unwrap().naive_utc(),
                role: "kms".into(),
                actor: "root".into(),
                action: "users.create".into(),
                target: format!("user{seq}"),
                outcome: "success".into(),
                source_addr: Some("127.0.0.1".into()),
                request_id: None,
                details: None,
                chain_seq: Some(seq),
                prev_hash: Some(prev.clone()),
                hash: None,
            };
            let hash = record.link(seq, &prev).mac(&key);
            record.hash = Some(hash.clone());
            prev = hash;
            records.push(record);
        }
        (records, Head { seq: n, hash: prev })
    }

    fn walk(records: &[StoredRecord], head: Option<Head>, legacy_max_id: i64) -> Result<Verified, Finding> {
        let key = key();
        let mut walk = Walk::new(&key, "kms", head, legacy_max_id);
        for record in records {
            walk.check(record)?;
        }
        walk.finish()
    }

    fn problem(result: Result<Verified, Finding>) -> (Option<i64>, Problem) {
        let finding = result.expect_err("a finding");
        (finding.id, finding.problem)
    }

    #[test]
    fn an_untouched_chain_verifies() {
        let (records, head) = chain(4);
        let verified = walk(&records, Some(head.clone()), 0).unwrap();
        assert_eq!((verified.records, verified.head), (4, Some(head)));
    }

    #[test]
    fn an_edited_record_is_named() {
        let (mut records, head) = chain(4);
        records[1].actor = "mallory".into();
        assert_eq!(problem(walk(&records, Some(head), 0)), (Some(20), Problem::Edited));
    }

    #[test]
    fn a_deleted_middle_record_is_a_gap_at_the_next_one() {
        let (mut records, head) = chain(4);
        records.remove(1);
        let finding = walk(&records, Some(head), 0).unwrap_err();
        assert_eq!((finding.id, finding.problem), (Some(30), Problem::Deleted));
        assert!(finding.to_string().contains("seq 2 missing"), "{finding}");
    }

    #[test]
    fn a_truncated_tail_is_named_at_the_last_record_left() {
        let (mut records, head) = chain(4);
        records.truncate(2);
        assert_eq!(problem(walk(&records, Some(head), 0)), (Some(20), Problem::Deleted));
    }

    #[test]
    fn inserted_records_are_named() {
        let (records, head) = chain(3);
        let mut unchained = records.clone();
        let mut forged = records[2].clone();
        forged.id = 35;
        forged.chain_seq = None;
        forged.prev_hash = None;
        forged.hash = None;
        unchained.push(forged.clone());
        assert_eq!(problem(walk(&unchained, Some(head.clone()), 0)), (Some(35), Problem::Inserted));

        let mut beyond = records.clone();
        forged.chain_seq = Some(4);
        forged.prev_hash = records[2].hash.clone();
        forged.hash = Some("ab".repeat(32));
        beyond.push(forged);
        assert_eq!(problem(walk(&beyond, Some(head.clone()), 0)), (Some(35), Problem::Inserted));

        let mut repeated = records.clone();
        repeated.insert(2, StoredRecord { id: 25, ..records[1].clone() });
        assert_eq!(problem(walk(&repeated, Some(head), 0)), (Some(25), Problem::Inserted));
    }

    #[test]
    fn a_head_moved_or_removed_is_named() {
        let (records, head) = chain(3);
        let edited = Head { hash: records[0].hash.clone().unwrap(), ..head };
        assert_eq!(problem(walk(&records, Some(edited), 0)), (None, Problem::Edited));
        assert_eq!(problem(walk(&records, None, 0)), (Some(10), Problem::Deleted));
    }

    #[test]
    fn records_from_before_chaining_pass_only_while_no_head_exists() {
        let (mut records, _) = chain(2);
        for record in &mut records {
            (record.chain_seq, record.prev_hash, record.hash) = (None, None, None);
        }
        let verified = walk(&records, None, 20).unwrap();
        assert_eq!((verified.records, verified.unchained_legacy), (0, 2));
        assert_eq!(problem(walk(&records, None, 10)), (Some(20), Problem::Inserted), "above the boundary");
        let empty = Head { seq: 0, hash: GENESIS.into() };
        assert_eq!(problem(walk(&records, Some(empty), 20)), (Some(10), Problem::Inserted), "after the head");
    }
}
