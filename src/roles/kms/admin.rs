//! Administration from the host (`fountain admin …`): the same account domain and unit of work
//! as the HTTP API, so every change publishes `users.changed` (running roles refuse the user's
//! older tokens through the token epoch) and writes an audit record naming the local actor.

use super::accounts::{self, AccountError};
use super::config::KmsConfig;
use super::store::{self, User};
use super::users::{validate_password, validate_role, validate_roles, validate_username, BUILT_IN_ROLES};
use super::ROLE_NAME;
use crate::platform::db::AnyConnection;
use crate::platform::guards::Origin;
use crate::platform::server::Platform;
use crate::platform::unit::{Change, Who};

/// Users read per page when listing them all.
const LIST_PAGE: i64 = 200;

/// One user as the command line lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSummary {
    pub username: String,
    pub roles: Vec<String>,
    pub enabled: bool,
    /// RFC 3339 UTC.
    pub created: String,
}

impl From<User> for UserSummary {
    fn from(user: User) -> Self {
        Self {
            roles: user.role_list(),
            enabled: !user.disabled,
            created: crate::platform::time::format(user.created_at),
            username: user.username,
        }
    }
}

/// Whether this database holds kms's tables (false before `fountain serve` or `fountain
/// migrate` first ran against it). Reads only: nothing is created.
pub fn has_account_tables(conn: &mut AnyConnection) -> bool {
    use diesel::prelude::*;
    super::schema::users::table.select(super::schema::users::id).first::<i64>(conn).optional().is_ok()
}

/// Checks role names the way kms grants them, naming the offending one and the valid ones.
pub fn check_roles(roles: &[String]) -> Result<Vec<String>, String> {
    for role in roles {
        validate_role(role).map_err(|reason| format!("role {role:?} cannot be granted: {reason}"))?;
    }
    validate_roles(roles).map_err(|e| e.message)
}

/// The roles kms knows by name (others are custom roles for gateway rules).
pub fn built_in_roles() -> &'static [&'static str] {
    &BUILT_IN_ROLES
}

/// Account administration on `platform`'s database as `actor` (e.g. `cli:alice`).
pub struct OfflineAdmin<'p> {
    platform: &'p Platform,
    actor: String,
}

impl<'p> OfflineAdmin<'p> {
    pub fn new(platform: &'p Platform, actor: impl Into<String>) -> Self {
        Self { platform, actor: actor.into() }
    }

    /// Creates a user; returns the stored (lower-case) username.
    pub fn create_user(&self, username: &str, password: &str, roles: &[String]) -> Result<String, String> {
        let username = validate_username(username).map_err(|e| e.message)?;
        let roles = check_roles(roles)?;
        let hash = self.hash(password)?;
        let name = username.clone();
        self.change(|tx| accounts::create(tx, &name, &hash, &roles)).map_err(|e| match e {
            AccountError::Taken => format!("user {username} already exists"),
            other => describe(&username, other),
        })?;
        Ok(username)
    }

    /// Every user, in creation order.
    pub fn list_users(&self) -> Result<Vec<UserSummary>, String> {
        let mut conn = self.platform.db.conn().map_err(|e| e.to_string())?;
        let mut all = Vec::new();
        let mut after = 0;
        loop {
            let page = store::list_users(&mut conn, after, LIST_PAGE).map_err(|e| e.to_string())?;
            let full = page.len() as i64 == LIST_PAGE;
            after = page.last().map_or(after, |u| u.id);
            all.extend(page.into_iter().map(UserSummary::from));
            if !full {
                return Ok(all);
            }
        }
    }

    /// Replaces a user's roles; the last enabled admin keeps `admin`.
    pub fn set_roles(&self, username: &str, roles: &[String]) -> Result<UserSummary, String> {
        let roles = check_roles(roles)?;
        self.update(username, Some(roles), None)
    }

    /// Disables (ending every session and token) or enables a user; the last enabled admin
    /// stays enabled.
    pub fn set_disabled(&self, username: &str, disabled: bool) -> Result<UserSummary, String> {
        self.update(username, None, Some(disabled))
    }

    /// Sets a new password; the user's sessions and tokens end.
    pub fn reset_password(&self, username: &str, password: &str) -> Result<UserSummary, String> {
        let username = existing_name(username);
        let hash = self.hash(password)?;
        let name = username.clone();
        let user = self
            .change(|tx| accounts::reset_password(tx, &name, &hash))
            .map_err(|e| describe(&username, e))?;
        Ok(user.into())
    }

    fn update(
        &self,
        username: &str,
        roles: Option<Vec<String>>,
        disabled: Option<bool>,
    ) -> Result<UserSummary, String> {
        let username = existing_name(username);
        let name = username.clone();
        let user = self
            .change(|tx| accounts::update(tx, &name, roles.as_deref(), disabled))
            .map_err(|e| describe(&username, e))?;
        Ok(user.into())
    }

    /// A bcrypt hash of a valid new password at kms's configured cost.
    fn hash(&self, password: &str) -> Result<String, String> {
        validate_password(password).map_err(|e| e.message)?;
        let cost = self.platform.config.role_settings::<KmsConfig>(ROLE_NAME)?.bcrypt_cost;
        bcrypt::hash(password, cost).map_err(|e| e.to_string())
    }

    /// One unit of work as the local actor: the change, its events and its audit record.
    fn change<T>(
        &self,
        work: impl FnOnce(&mut Change<'_>) -> Result<T, AccountError>,
    ) -> Result<T, AccountError> {
        let who = Who::new(ROLE_NAME, self.actor.clone(), Origin::local("cli"));
        self.platform.db.change_blocking(who, work)
    }
}

/// Usernames are stored lower-case; an existing one is looked up the same way.
fn existing_name(username: &str) -> String {
    username.to_ascii_lowercase()
}

fn describe(username: &str, err: AccountError) -> String {
    match err {
        AccountError::NotFound => format!("no user {username}"),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_checked_as_kms_grants_them_naming_the_valid_ones() {
        assert_eq!(check_roles(&["admin".into(), "user".into(), "admin".into()]).unwrap(), ["admin", "user"]);
        assert_eq!(check_roles(&["ops".into()]).unwrap(), ["ops"], "custom roles for gateway rules");
        let refused = check_roles(&["Admin".into()]).unwrap_err();
        assert!(refused.contains("\"Admin\"") && refused.contains("admin, user"), "{refused}");
        let reserved = check_roles(&["service".into()]).unwrap_err();
        assert!(reserved.contains("reserved for service tokens"), "{reserved}");
    }
}
