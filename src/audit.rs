//! `fountain audit …`: checks the audit trail of the installation the configuration points at,
//! from the host, with the same data directory, database and master key as `fountain serve`.
//! It only reads: it never creates a database, a master key or a table. The chain itself is
//! `platform::audit`'s.

use diesel::r2d2::ManageConnection;

use crate::config::{Config, DatabaseTarget};
use crate::platform::audit::verify::{self, Finding, Verified};
use crate::platform::crypto::{self, MasterKey};
use crate::platform::db::{AnyConnection, ConnectionFactory};
use crate::platform::meta;

/// How many hex digits of a head's hash `verify` prints: enough to anchor it elsewhere (a
/// forger would have to produce a valid MAC with this prefix, without the key).
const HEAD_PREFIX: usize = 16;

/// The result of `fountain audit verify`: one line per role, and whether every chain verified.
pub struct Report {
    pub lines: Vec<String>,
    pub all_verified: bool,
}

/// Walks every role's chain (or only `role`'s) and reports each one: `ok: …` with its head, or
/// `FAILED: …` naming the first problem.
pub fn verify(config: &Config, role: Option<&str>) -> Result<Report, String> {
    let (mut conn, key) = open(config)?;
    let results = verify::in_snapshot(&mut conn, |conn| {
        let roles = match role {
            Some(role) => vec![role.to_string()],
            None => verify::roles_in_trail(conn)?,
        };
        roles.iter().map(|role| verify::verify_chain(conn, &key, role)).collect::<Result<Vec<_>, _>>()
    })
    .map_err(|e| unreadable(&e))?;
    let mut report = Report { lines: Vec::new(), all_verified: true };
    for result in &results {
        match result {
            Ok(verified) => report.lines.push(ok_line(verified)),
            Err(finding) => {
                report.all_verified = false;
                report.lines.push(failed_line(finding));
            }
        }
    }
    if results.is_empty() {
        report.lines.push("ok: the audit trail is empty".into());
    }
    Ok(report)
}

fn unreadable(err: &dyn std::fmt::Display) -> String {
    format!("cannot read the audit trail: {err} (was `fountain migrate` run with this version?)")
}

/// `ok: kms 123 records, head seq 123 1a2b3c4d5e6f7a8b`
fn ok_line(verified: &Verified) -> String {
    let role = &verified.role;
    match &verified.head {
        Some(head) => format!(
            "ok: {role} {} records, head seq {} {}",
            verified.records,
            head.seq,
            &head.hash[..HEAD_PREFIX.min(head.hash.len())]
        ),
        None if verified.unchained_legacy > 0 => format!(
            "ok: {role} 0 records, not chained yet: {} records from before chaining are chained at \
             {role}'s next audited change",
            verified.unchained_legacy
        ),
        None => format!("ok: {role} 0 records, no chain yet"),
    }
}

fn failed_line(finding: &Finding) -> String {
    format!("FAILED: {finding}")
}

/// A plain connection (no migrations) and the master key, both required to exist already.
fn open(config: &Config) -> Result<(AnyConnection, crypto::ChainKey), String> {
    let target = config.database_target().map_err(|e| e.to_string())?;
    if let DatabaseTarget::Sqlite(file) = &target {
        if !file.is_file() {
            return Err(format!("no fountain database at {}", file.display()));
        }
    }
    let key_file = crypto::configured_key_file(&config.security.master_key_file);
    let master_key = MasterKey::load_existing(key_file.as_deref(), &config.data.dir)
        .map_err(|e| format!("{e} (the audit chain is keyed from the master key)"))?;
    let factory = ConnectionFactory::from_config(config).map_err(|e| e.to_string())?;
    let mut conn = factory.connect().map_err(|e| {
        let reason = e.to_string();
        format!("cannot connect to the database: {}", reason.lines().next().unwrap_or_default())
    })?;
    meta::check_master_key(&mut conn, &master_key).map_err(|e| e.to_string())?;
    Ok((conn, master_key.audit_chain_key()))
}
