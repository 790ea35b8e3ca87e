//! twofa persistence: each account's factor and its recovery codes. Single use is decided by
//! the database: a step or a recovery code is taken by an UPDATE that matches only while it is
//! still unused, so two concurrent requests with one code cannot both win.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::schema::{twofa_factors, twofa_recovery_codes};
use crate::platform::db::{AnyConnection, DbError};

pub fn now() -> NaiveDateTime {
    chrono::Utc::now().naive_utc()
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = twofa_factors)]
pub struct Factor {
    pub uid: i64,
    pub active_secret: Option<String>,
    pub pending_secret: Option<String>,
    pub failures: i32,
    pub locked_until: Option<NaiveDateTime>,
    pub activated_at: Option<NaiveDateTime>,
}

pub fn find(conn: &mut AnyConnection, username: &str) -> Result<Option<Factor>, DbError> {
    Ok(twofa_factors::table
        .filter(twofa_factors::username.eq(username))
        .select(Factor::as_select())
        .first(conn)
        .optional()?)
}

/// Like [`find`], holding the row until the transaction ends (`FOR UPDATE` on PostgreSQL;
/// SQLite's write transactions already hold the database lock): concurrent code checks of one
/// account queue, so none is checked against a failure count or lockout another is changing.
pub fn find_for_update(conn: &mut AnyConnection, username: &str) -> Result<Option<Factor>, DbError> {
    let query = twofa_factors::table.filter(twofa_factors::username.eq(username));
    Ok(match conn {
        AnyConnection::Postgres(pg) => query.select(Factor::as_select()).for_update().first(pg).optional()?,
        AnyConnection::Sqlite(sqlite) => query.select(Factor::as_select()).first(sqlite).optional()?,
    })
}

/// Starts (or restarts) an enrolment: `sealed` is the pending secret. A row of another account
/// that had this username is replaced.
pub fn set_pending(conn: &mut AnyConnection, username: &str, uid: i64, sealed: &str) -> Result<(), DbError> {
    let at = now();
    let updated = diesel::update(twofa_factors::table.filter(twofa_factors::username.eq(username)))
        .set((twofa_factors::pending_secret.eq(sealed), twofa_factors::updated_at.eq(at)))
        .execute(conn)?;
    if updated == 0 {
        diesel::insert_into(twofa_factors::table)
            .values((
                twofa_factors::username.eq(username),
                twofa_factors::uid.eq(uid),
                twofa_factors::pending_secret.eq(sealed),
                twofa_factors::last_step.eq(0i64),
                twofa_factors::failures.eq(0),
                twofa_factors::created_at.eq(at),
                twofa_factors::updated_at.eq(at),
            ))
            .execute(conn)?;
    }
    Ok(())
}

/// Makes the pending secret the active one, with `step` as its last accepted step.
pub fn activate(conn: &mut AnyConnection, username: &str, sealed: &str, step: i64) -> Result<(), DbError> {
    let at = now();
    diesel::update(twofa_factors::table.filter(twofa_factors::username.eq(username)))
        .set((
            twofa_factors::active_secret.eq(Some(sealed)),
            twofa_factors::pending_secret.eq(None::<String>),
            twofa_factors::last_step.eq(step),
            twofa_factors::failures.eq(0),
            twofa_factors::locked_until.eq(None::<NaiveDateTime>),
            twofa_factors::activated_at.eq(Some(at)),
            twofa_factors::updated_at.eq(at),
        ))
        .execute(conn)?;
    Ok(())
}

/// Takes `step` for the active secret: true only when it is later than every step taken before.
pub fn take_step(conn: &mut AnyConnection, username: &str, step: i64) -> Result<bool, DbError> {
    let taken = diesel::update(
        twofa_factors::table
            .filter(twofa_factors::username.eq(username))
            .filter(twofa_factors::last_step.lt(step)),
    )
    .set((twofa_factors::last_step.eq(step), twofa_factors::failures.eq(0)))
    .execute(conn)?;
    Ok(taken == 1)
}

/// Counts one failure; returns the failures in a row now.
pub fn add_failure(conn: &mut AnyConnection, username: &str) -> Result<i32, DbError> {
    diesel::update(twofa_factors::table.filter(twofa_factors::username.eq(username)))
        .set(twofa_factors::failures.eq(twofa_factors::failures + 1))
        .execute(conn)?;
    Ok(find(conn, username)?.map_or(0, |f| f.failures))
}

pub fn lock(conn: &mut AnyConnection, username: &str, until: NaiveDateTime) -> Result<(), DbError> {
    diesel::update(twofa_factors::table.filter(twofa_factors::username.eq(username)))
        .set((twofa_factors::failures.eq(0), twofa_factors::locked_until.eq(Some(until))))
        .execute(conn)?;
    Ok(())
}

pub fn reset_failures(conn: &mut AnyConnection, username: &str) -> Result<(), DbError> {
    diesel::update(twofa_factors::table.filter(twofa_factors::username.eq(username)))
        .set(twofa_factors::failures.eq(0))
        .execute(conn)?;
    Ok(())
}

/// Removes an account's factor and recovery codes; true when there was a factor.
pub fn delete(conn: &mut AnyConnection, username: &str) -> Result<bool, DbError> {
    diesel::delete(twofa_recovery_codes::table.filter(twofa_recovery_codes::username.eq(username)))
        .execute(conn)?;
    let removed =
        diesel::delete(twofa_factors::table.filter(twofa_factors::username.eq(username))).execute(conn)?;
    Ok(removed > 0)
}

/// Replaces an account's recovery codes with `hashes`.
pub fn replace_recovery_codes(
    conn: &mut AnyConnection,
    username: &str,
    hashes: &[String],
) -> Result<(), DbError> {
    diesel::delete(twofa_recovery_codes::table.filter(twofa_recovery_codes::username.eq(username)))
        .execute(conn)?;
    for hash in hashes {
        diesel::insert_into(twofa_recovery_codes::table)
            .values((twofa_recovery_codes::username.eq(username), twofa_recovery_codes::code_hash.eq(hash)))
            .execute(conn)?;
    }
    Ok(())
}

/// Uses the recovery code with this hash: true only the first time.
pub fn use_recovery_code(conn: &mut AnyConnection, username: &str, hash: &str) -> Result<bool, DbError> {
    let used = diesel::update(
        twofa_recovery_codes::table
            .filter(twofa_recovery_codes::username.eq(username))
            .filter(twofa_recovery_codes::code_hash.eq(hash))
            .filter(twofa_recovery_codes::used_at.is_null()),
    )
    .set(twofa_recovery_codes::used_at.eq(Some(now())))
    .execute(conn)?;
    if used == 1 {
        reset_failures(conn, username)?;
    }
    Ok(used == 1)
}

/// Recovery codes not used yet.
pub fn recovery_codes_left(conn: &mut AnyConnection, username: &str) -> Result<i64, DbError> {
    Ok(twofa_recovery_codes::table
        .filter(twofa_recovery_codes::username.eq(username))
        .filter(twofa_recovery_codes::used_at.is_null())
        .count()
        .get_result(conn)?)
}
