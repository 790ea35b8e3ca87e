//! The account domain: creating, changing and deleting users, each one unit of work that
//! carries its `users.changed` event (with the account's identity and token epoch, which the
//! trust path of every role follows) and its audit record.

use super::store::{self, User};
use crate::platform::contracts::{AccountChange, UserChanged};
use crate::platform::db::DbError;
use crate::platform::error::{ApiError, ErrorCode};
use crate::platform::unit::Change;

/// Why an account change was refused.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("this username is taken")]
    Taken,
    #[error("no such user")]
    NotFound,
    #[error("this change would leave no enabled admin")]
    LastAdmin,
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<AccountError> for ApiError {
    fn from(err: AccountError) -> Self {
        match err {
            AccountError::Taken => ApiError::new(ErrorCode::AlreadyExists, err.to_string()),
            AccountError::NotFound => ApiError::new(ErrorCode::NotFound, err.to_string()),
            AccountError::LastAdmin => ApiError::from_code(ErrorCode::LastAdmin),
            AccountError::Db(db) => db.into(),
        }
    }
}

fn changed(user: &User, change: AccountChange) -> UserChanged {
    UserChanged {
        username: user.username.clone(),
        uid: user.id,
        epoch: user.token_epoch,
        change,
        roles: user.role_list(),
        disabled: user.disabled,
    }
}

/// Creates a user with a bcrypt `hash` and `roles`.
pub fn create(
    tx: &mut Change<'_>,
    username: &str,
    hash: &str,
    roles: &[String],
) -> Result<User, AccountError> {
    let user = store::insert_user(tx.conn(), username, hash, roles).map_err(|err| {
        if store::is_unique_violation(&err) {
            AccountError::Taken
        } else {
            err.into()
        }
    })?;
    tx.publish(&changed(&user, AccountChange::Created))?;
    tx.audit("users.create", username, Some(serde_json::json!({ "roles": roles })))?;
    Ok(user)
}

/// Sets roles and/or the enabled state. Raises the token epoch, so every token issued before
/// is refused at once (a demoted admin loses admin now, not at expiry); disabling also ends
/// the user's sessions.
pub fn update(
    tx: &mut Change<'_>,
    username: &str,
    roles: Option<&[String]>,
    disabled: Option<bool>,
) -> Result<User, AccountError> {
    if !store::update_user(tx.conn(), username, roles, disabled)? {
        return Err(AccountError::NotFound);
    }
    if store::count_admins(tx.conn())? == 0 {
        return Err(AccountError::LastAdmin);
    }
    if disabled == Some(true) {
        store::revoke_user_sessions(tx.conn(), username)?;
    }
    let user = store::find_user(tx.conn(), username)?.ok_or(AccountError::NotFound)?;
    tx.publish(&changed(&user, AccountChange::Updated))?;
    tx.audit("users.update", username, Some(serde_json::json!({ "roles": roles, "disabled": disabled })))?;
    Ok(user)
}

/// Replaces a user's password (a bcrypt `hash`). Like a change of roles it raises the token
/// epoch and ends the user's sessions: whoever held the old password holds nothing after.
pub fn reset_password(tx: &mut Change<'_>, username: &str, hash: &str) -> Result<User, AccountError> {
    if !store::set_password_hash(tx.conn(), username, hash)? {
        return Err(AccountError::NotFound);
    }
    store::revoke_user_sessions(tx.conn(), username)?;
    let user = store::find_user(tx.conn(), username)?.ok_or(AccountError::NotFound)?;
    tx.publish(&changed(&user, AccountChange::Updated))?;
    tx.audit("users.password_reset", username, None)?;
    Ok(user)
}

/// Deletes a user and ends their sessions; the account's tokens are refused for good, even if
/// the username is registered again (the new account has a new identity).
pub fn delete(tx: &mut Change<'_>, username: &str) -> Result<(), AccountError> {
    let user = store::find_user(tx.conn(), username)?.ok_or(AccountError::NotFound)?;
    store::delete_user(tx.conn(), username)?;
    if store::count_admins(tx.conn())? == 0 {
        return Err(AccountError::LastAdmin);
    }
    store::revoke_user_sessions(tx.conn(), username)?;
    tx.publish(&changed(&user, AccountChange::Deleted))?;
    tx.audit("users.delete", username, None)?;
    Ok(())
}
