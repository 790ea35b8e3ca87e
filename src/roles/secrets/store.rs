//! secrets persistence: secret sets and their sealed versions.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};

use super::schema::{secret_sets, secret_versions};
use crate::platform::db::{AnyConnection, DbError};

pub fn now() -> NaiveDateTime {
    chrono::Utc::now().naive_utc()
}

/// Whether a write failed only because the row already exists.
pub fn is_unique_violation(err: &DbError) -> bool {
    matches!(err, DbError::Query(DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _)))
}

/// A service's secret set: which version is current, and whether it is (soft) deleted.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = secret_sets)]
pub struct SetRow {
    pub current_version: i32,
    pub deleted_at: Option<NaiveDateTime>,
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = secret_versions)]
pub struct SecretVersion {
    pub version: i32,
    pub sealed_values: String,
    pub created_at: NaiveDateTime,
    pub created_by: String,
}

pub fn find_set(conn: &mut AnyConnection, service: &str) -> Result<Option<SetRow>, DbError> {
    Ok(secret_sets::table
        .filter(secret_sets::service_name.eq(service))
        .select(SetRow::as_select())
        .first(conn)
        .optional()?)
}

/// Like `find_set`, holding the row lock until the transaction ends, so that concurrent
/// writers of one service queue instead of conflicting (`FOR UPDATE` on PostgreSQL; SQLite's
/// write transactions already hold the database lock).
pub fn lock_set(conn: &mut AnyConnection, service: &str) -> Result<Option<SetRow>, DbError> {
    let by_name = secret_sets::table.filter(secret_sets::service_name.eq(service));
    Ok(match conn {
        AnyConnection::Postgres(pg) => {
            by_name.select(SetRow::as_select()).for_update().first(pg).optional()?
        }
        AnyConnection::Sqlite(sqlite) => by_name.select(SetRow::as_select()).first(sqlite).optional()?,
    })
}

/// Creates a set at version 1. Fails with a unique violation when the service has one.
pub fn create_set(conn: &mut AnyConnection, service: &str, sealed: &str, by: &str) -> Result<(), DbError> {
    let at = now();
    diesel::insert_into(secret_sets::table)
        .values((
            secret_sets::service_name.eq(service),
            secret_sets::current_version.eq(1),
            secret_sets::created_at.eq(at),
            secret_sets::updated_at.eq(at),
        ))
        .execute(conn)?;
    insert_version(conn, service, 1, sealed, by)
}

fn insert_version(
    conn: &mut AnyConnection,
    service: &str,
    version: i32,
    sealed: &str,
    by: &str,
) -> Result<(), DbError> {
    diesel::insert_into(secret_versions::table)
        .values((
            secret_versions::service_name.eq(service),
            secret_versions::version.eq(version),
            secret_versions::sealed_values.eq(sealed),
            secret_versions::created_at.eq(now()),
            secret_versions::created_by.eq(by),
        ))
        .execute(conn)?;
    Ok(())
}

/// Makes `expected + 1` the current version if `expected` still is (check-and-set): returns
/// false when another writer got there first or the set is deleted.
pub fn advance(
    conn: &mut AnyConnection,
    service: &str,
    expected: i32,
    sealed: &str,
    by: &str,
) -> Result<bool, DbError> {
    let updated = diesel::update(
        secret_sets::table
            .filter(secret_sets::service_name.eq(service))
            .filter(secret_sets::current_version.eq(expected))
            .filter(secret_sets::deleted_at.is_null()),
    )
    .set((secret_sets::current_version.eq(expected + 1), secret_sets::updated_at.eq(now())))
    .execute(conn)?;
    if updated != 1 {
        return Ok(false);
    }
    insert_version(conn, service, expected + 1, sealed, by)?;
    Ok(true)
}

/// Keeps the newest `keep` versions of a service.
pub fn prune(conn: &mut AnyConnection, service: &str, current: i32, keep: i32) -> Result<usize, DbError> {
    Ok(diesel::delete(
        secret_versions::table
            .filter(secret_versions::service_name.eq(service))
            .filter(secret_versions::version.le(current - keep)),
    )
    .execute(conn)?)
}

pub fn get_version(
    conn: &mut AnyConnection,
    service: &str,
    version: i32,
) -> Result<Option<SecretVersion>, DbError> {
    Ok(secret_versions::table
        .filter(secret_versions::service_name.eq(service))
        .filter(secret_versions::version.eq(version))
        .select(SecretVersion::as_select())
        .first(conn)
        .optional()?)
}

pub fn list_versions(conn: &mut AnyConnection, service: &str) -> Result<Vec<SecretVersion>, DbError> {
    Ok(secret_versions::table
        .filter(secret_versions::service_name.eq(service))
        .order(secret_versions::version.desc())
        .select(SecretVersion::as_select())
        .load(conn)?)
}

/// Soft delete (`deleted = true`) or restore; returns whether a set changed state.
pub fn set_deleted(conn: &mut AnyConnection, service: &str, deleted: bool) -> Result<bool, DbError> {
    let target = secret_sets::table.filter(secret_sets::service_name.eq(service));
    let changed = if deleted {
        diesel::update(target.filter(secret_sets::deleted_at.is_null()))
            .set((secret_sets::deleted_at.eq(Some(now())), secret_sets::updated_at.eq(now())))
            .execute(conn)?
    } else {
        diesel::update(target.filter(secret_sets::deleted_at.is_not_null()))
            .set((secret_sets::deleted_at.eq(None::<NaiveDateTime>), secret_sets::updated_at.eq(now())))
            .execute(conn)?
    };
    Ok(changed > 0)
}

/// Removes a set and every version for good; returns whether it existed.
pub fn destroy(conn: &mut AnyConnection, service: &str) -> Result<bool, DbError> {
    diesel::delete(secret_versions::table.filter(secret_versions::service_name.eq(service))).execute(conn)?;
    Ok(diesel::delete(secret_sets::table.filter(secret_sets::service_name.eq(service))).execute(conn)? > 0)
}
