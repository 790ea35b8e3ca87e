//! kms persistence: users, refresh tokens, revoked token ids and API keys.
//! Every function takes a connection so callers can group them in one transaction.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};

use super::schema::{api_keys, refresh_tokens, revoked_tokens, users};
use crate::platform::db::{AnyConnection, DbError};

pub fn now() -> NaiveDateTime {
    chrono::Utc::now().naive_utc()
}

/// Whether an insert failed only because the row already exists.
pub fn is_unique_violation(err: &DbError) -> bool {
    matches!(err, DbError::Query(DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _)))
}

// ---- users ----

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = users)]
pub struct User {
    pub id: i64,
    pub username: String,
    pub password_hash: String,
    pub roles: String,
    pub disabled: bool,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
    /// Raised by every change of roles or enabled state; tokens of older epochs are refused.
    pub token_epoch: i64,
}

impl User {
    pub fn role_list(&self) -> Vec<String> {
        serde_json::from_str(&self.roles).unwrap_or_default()
    }
}

pub fn insert_user(
    conn: &mut AnyConnection,
    username: &str,
    hash: &str,
    roles: &[String],
) -> Result<User, DbError> {
    let at = now();
    let id: i64 = diesel::insert_into(users::table)
        .values((
            users::username.eq(username),
            users::password_hash.eq(hash),
            users::roles.eq(serde_json::to_string(roles).unwrap_or_else(|_| "[]".into())),
            users::disabled.eq(false),
            users::created_at.eq(at),
            users::updated_at.eq(at),
            users::token_epoch.eq(0),
        ))
        .returning(users::id)
        .get_result(conn)?;
    Ok(users::table.find(id).select(User::as_select()).first(conn)?)
}

pub fn find_user(conn: &mut AnyConnection, username: &str) -> Result<Option<User>, DbError> {
    Ok(users::table.filter(users::username.eq(username)).select(User::as_select()).first(conn).optional()?)
}

pub fn list_users(conn: &mut AnyConnection, after_id: i64, limit: i64) -> Result<Vec<User>, DbError> {
    Ok(users::table
        .filter(users::id.gt(after_id))
        .order(users::id.asc())
        .limit(limit)
        .select(User::as_select())
        .load(conn)?)
}

/// Applies the given changes and raises the user's token epoch (every token issued before is
/// refused from now on); returns false when no such user exists.
pub fn update_user(
    conn: &mut AnyConnection,
    username: &str,
    roles: Option<&[String]>,
    disabled: Option<bool>,
) -> Result<bool, DbError> {
    let target = users::table.filter(users::username.eq(username));
    let touched = diesel::update(target)
        .set((users::updated_at.eq(now()), users::token_epoch.eq(users::token_epoch + 1)))
        .execute(conn)?;
    if touched == 0 {
        return Ok(false);
    }
    if let Some(roles) = roles {
        let json = serde_json::to_string(roles).unwrap_or_else(|_| "[]".into());
        diesel::update(target).set(users::roles.eq(json)).execute(conn)?;
    }
    if let Some(disabled) = disabled {
        diesel::update(target).set(users::disabled.eq(disabled)).execute(conn)?;
    }
    Ok(true)
}

/// Replaces the user's password hash and raises the token epoch (tokens issued under the old
/// password are refused from now on); returns false when no such user exists.
pub fn set_password_hash(conn: &mut AnyConnection, username: &str, hash: &str) -> Result<bool, DbError> {
    let touched = diesel::update(users::table.filter(users::username.eq(username)))
        .set((
            users::password_hash.eq(hash),
            users::updated_at.eq(now()),
            users::token_epoch.eq(users::token_epoch + 1),
        ))
        .execute(conn)?;
    Ok(touched > 0)
}

pub fn delete_user(conn: &mut AnyConnection, username: &str) -> Result<bool, DbError> {
    Ok(diesel::delete(users::table.filter(users::username.eq(username))).execute(conn)? > 0)
}

pub fn count_admins(conn: &mut AnyConnection) -> Result<usize, DbError> {
    let all: Vec<(String, bool)> = users::table.select((users::roles, users::disabled)).load(conn)?;
    Ok(all
        .iter()
        .filter(|(roles, disabled)| {
            !disabled
                && serde_json::from_str::<Vec<String>>(roles)
                    .is_ok_and(|r| r.iter().any(|x| x == crate::platform::auth::ADMIN_ROLE))
        })
        .count())
}

// ---- refresh tokens ----

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = refresh_tokens)]
pub struct RefreshToken {
    pub family_id: String,
    pub username: String,
    pub expires_at: NaiveDateTime,
    pub used_at: Option<NaiveDateTime>,
    pub revoked_at: Option<NaiveDateTime>,
}

pub fn insert_refresh(
    conn: &mut AnyConnection,
    hash: &str,
    family: &str,
    username: &str,
    expires_at: NaiveDateTime,
) -> Result<(), DbError> {
    diesel::insert_into(refresh_tokens::table)
        .values((
            refresh_tokens::token_hash.eq(hash),
            refresh_tokens::family_id.eq(family),
            refresh_tokens::username.eq(username),
            refresh_tokens::created_at.eq(now()),
            refresh_tokens::expires_at.eq(expires_at),
        ))
        .execute(conn)?;
    Ok(())
}

pub fn find_refresh(conn: &mut AnyConnection, hash: &str) -> Result<Option<RefreshToken>, DbError> {
    Ok(refresh_tokens::table
        .filter(refresh_tokens::token_hash.eq(hash))
        .select(RefreshToken::as_select())
        .first(conn)
        .optional()?)
}

/// Marks a refresh token used, only if nobody used it first (two concurrent refreshes with
/// the same token: exactly one wins). Returns whether this call won.
pub fn claim_refresh(conn: &mut AnyConnection, hash: &str) -> Result<bool, DbError> {
    let updated = diesel::update(
        refresh_tokens::table
            .filter(refresh_tokens::token_hash.eq(hash))
            .filter(refresh_tokens::used_at.is_null())
            .filter(refresh_tokens::revoked_at.is_null()),
    )
    .set(refresh_tokens::used_at.eq(now()))
    .execute(conn)?;
    Ok(updated == 1)
}

/// Whether a session (refresh family) can still be continued: it holds a refresh token that is
/// neither used, revoked nor expired.
pub fn session_is_live(conn: &mut AnyConnection, family: &str) -> Result<bool, DbError> {
    let live: i64 = refresh_tokens::table
        .filter(refresh_tokens::family_id.eq(family))
        .filter(refresh_tokens::used_at.is_null())
        .filter(refresh_tokens::revoked_at.is_null())
        .filter(refresh_tokens::expires_at.gt(now()))
        .count()
        .get_result(conn)?;
    Ok(live > 0)
}

pub fn revoke_family(conn: &mut AnyConnection, family: &str) -> Result<usize, DbError> {
    Ok(diesel::update(
        refresh_tokens::table
            .filter(refresh_tokens::family_id.eq(family))
            .filter(refresh_tokens::revoked_at.is_null()),
    )
    .set(refresh_tokens::revoked_at.eq(now()))
    .execute(conn)?)
}

pub fn revoke_user_sessions(conn: &mut AnyConnection, username: &str) -> Result<usize, DbError> {
    Ok(diesel::update(
        refresh_tokens::table
            .filter(refresh_tokens::username.eq(username))
            .filter(refresh_tokens::revoked_at.is_null()),
    )
    .set(refresh_tokens::revoked_at.eq(now()))
    .execute(conn)?)
}

// ---- revoked access tokens ----

pub fn revoke_jti(conn: &mut AnyConnection, jti: &str, expires_at: NaiveDateTime) -> Result<(), DbError> {
    let inserted = diesel::insert_into(revoked_tokens::table)
        .values((revoked_tokens::jti.eq(jti), revoked_tokens::expires_at.eq(expires_at)))
        .execute(conn)
        .map_err(DbError::from);
    match inserted {
        Err(err) if is_unique_violation(&err) => Ok(()),
        other => other.map(|_| ()),
    }
}

/// Drops denylist entries and refresh tokens whose lifetime is over.
pub fn purge_expired(conn: &mut AnyConnection) -> Result<usize, DbError> {
    let at = now();
    let tokens =
        diesel::delete(revoked_tokens::table.filter(revoked_tokens::expires_at.lt(at))).execute(conn)?;
    let refresh =
        diesel::delete(refresh_tokens::table.filter(refresh_tokens::expires_at.lt(at))).execute(conn)?;
    Ok(tokens + refresh)
}

// ---- API keys ----

pub const KEY_ACTIVE: &str = "active";
pub const KEY_RETIRING: &str = "retiring";
pub const KEY_REVOKED: &str = "revoked";

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = api_keys)]
pub struct ApiKey {
    pub id: i64,
    pub service_name: String,
    pub key_hash: String,
    pub sealed_key: String,
    pub key_prefix: String,
    pub state: String,
    pub disabled: bool,
    pub created_at: NaiveDateTime,
    pub expires_at: Option<NaiveDateTime>,
    pub valid_until: Option<NaiveDateTime>,
    /// Brought by the caller (from an existing deployment) rather than generated.
    pub imported: bool,
}

pub struct NewApiKey<'a> {
    pub service_name: &'a str,
    pub key_hash: &'a str,
    pub sealed_key: &'a str,
    pub key_prefix: &'a str,
    pub expires_at: Option<NaiveDateTime>,
    pub disabled: bool,
    pub imported: bool,
}

pub fn insert_key(conn: &mut AnyConnection, key: &NewApiKey<'_>) -> Result<(), DbError> {
    diesel::insert_into(api_keys::table)
        .values((
            api_keys::service_name.eq(key.service_name),
            api_keys::key_hash.eq(key.key_hash),
            api_keys::sealed_key.eq(key.sealed_key),
            api_keys::key_prefix.eq(key.key_prefix),
            api_keys::state.eq(KEY_ACTIVE),
            api_keys::disabled.eq(key.disabled),
            api_keys::created_at.eq(now()),
            api_keys::expires_at.eq(key.expires_at),
            api_keys::imported.eq(key.imported),
        ))
        .execute(conn)?;
    Ok(())
}

pub fn active_key(conn: &mut AnyConnection, service: &str) -> Result<Option<ApiKey>, DbError> {
    Ok(api_keys::table
        .filter(api_keys::service_name.eq(service))
        .filter(api_keys::state.eq(KEY_ACTIVE))
        .select(ApiKey::as_select())
        .first(conn)
        .optional()?)
}

pub fn key_by_hash(conn: &mut AnyConnection, hash: &str) -> Result<Option<ApiKey>, DbError> {
    Ok(api_keys::table
        .filter(api_keys::key_hash.eq(hash))
        .select(ApiKey::as_select())
        .first(conn)
        .optional()?)
}

/// Every key that is not revoked, oldest service first.
pub fn list_keys(conn: &mut AnyConnection) -> Result<Vec<ApiKey>, DbError> {
    Ok(api_keys::table
        .filter(api_keys::state.ne(KEY_REVOKED))
        .order((api_keys::service_name.asc(), api_keys::id.asc()))
        .select(ApiKey::as_select())
        .load(conn)?)
}

/// Turns the active key into a retiring one that verifies until `valid_until`.
pub fn retire_active(
    conn: &mut AnyConnection,
    service: &str,
    valid_until: NaiveDateTime,
) -> Result<bool, DbError> {
    let updated = diesel::update(
        api_keys::table.filter(api_keys::service_name.eq(service)).filter(api_keys::state.eq(KEY_ACTIVE)),
    )
    .set((api_keys::state.eq(KEY_RETIRING), api_keys::valid_until.eq(valid_until)))
    .execute(conn)?;
    Ok(updated > 0)
}

/// Disables or re-enables every live key of a service (a reversible stop, unlike revoke).
pub fn set_service_disabled(
    conn: &mut AnyConnection,
    service: &str,
    disabled: bool,
) -> Result<Vec<i64>, DbError> {
    Ok(diesel::update(
        api_keys::table.filter(api_keys::service_name.eq(service)).filter(api_keys::state.ne(KEY_REVOKED)),
    )
    .set(api_keys::disabled.eq(disabled))
    .returning(api_keys::id)
    .get_results(conn)?)
}

/// Revokes every key of a service (active and retiring); returns their ids.
pub fn revoke_service_keys(conn: &mut AnyConnection, service: &str) -> Result<Vec<i64>, DbError> {
    Ok(diesel::update(
        api_keys::table.filter(api_keys::service_name.eq(service)).filter(api_keys::state.ne(KEY_REVOKED)),
    )
    .set((api_keys::state.eq(KEY_REVOKED), api_keys::revoked_at.eq(now())))
    .returning(api_keys::id)
    .get_results(conn)?)
}
