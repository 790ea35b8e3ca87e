//! The secrets domain. Every change is one unit of work (`Db::change`): its writes, its
//! `secrets.rotated` event and its audit record commit together or not at all. Values are
//! sealed per service and version; events and audit records never carry them.

use std::collections::BTreeMap;

use super::store::{self, SecretVersion, SetRow};
use crate::platform::contracts::{SecretSet, SecretsRotated};
use crate::platform::crypto::{random_token, MasterKey};
use crate::platform::db::{AnyConnection, Db, DbError};
use crate::platform::error::{ApiError, ErrorCode};
use crate::platform::unit::Change;

/// Secret name -> value.
pub type SecretMap = BTreeMap<String, String>;

/// Why a secrets operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("no secrets for this service")]
    NotFound,
    #[error("no deleted secrets for this service")]
    NothingDeleted,
    #[error("this service already has secrets")]
    Exists,
    #[error("version {current} is current, not {expected}")]
    VersionConflict { current: i32, expected: i32 },
    #[error("the secrets changed concurrently; retry")]
    Concurrent,
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<SecretsError> for ApiError {
    fn from(err: SecretsError) -> Self {
        match err {
            SecretsError::NotFound | SecretsError::NothingDeleted => {
                ApiError::new(ErrorCode::NotFound, err.to_string())
            }
            SecretsError::Exists => ApiError::new(ErrorCode::AlreadyExists, err.to_string()),
            SecretsError::VersionConflict { current, .. } => {
                ApiError::new(ErrorCode::VersionConflict, err.to_string())
                    .with_details(serde_json::json!({ "currentVersion": current }))
            }
            SecretsError::Concurrent => ApiError::new(ErrorCode::VersionConflict, err.to_string()),
            SecretsError::Db(db) => db.into(),
        }
    }
}

/// How a new version is made from the current one.
#[derive(Debug)]
pub enum Revision {
    /// JWT_SECRET and DB_PASSWORD regenerated, then `overrides` applied; other values kept.
    Rotate { overrides: SecretMap },
    /// Exactly `values`, if `expected` is still the current version (check-and-set).
    Replace { values: SecretMap, expected: i32 },
}

impl Revision {
    /// The audit action.
    fn action(&self) -> &'static str {
        match self {
            Revision::Rotate { .. } => "secrets.rotate",
            Revision::Replace { .. } => "secrets.replace",
        }
    }

    /// The reason the `secrets.rotated` event gives.
    fn reason(&self) -> &'static str {
        match self {
            Revision::Rotate { .. } => "rotate",
            Revision::Replace { .. } => "replace",
        }
    }
}

/// The values every new set starts with (and that a rotation regenerates).
pub fn generated_defaults() -> SecretMap {
    SecretMap::from([
        ("JWT_SECRET".to_string(), random_token(32)),
        ("DB_PASSWORD".to_string(), random_token(16)),
    ])
}

fn seal_context(service: &str, version: i32) -> String {
    format!("secrets:{service}:{version}")
}

fn seal(master: &MasterKey, service: &str, version: i32, values: &SecretMap) -> String {
    let json = serde_json::to_vec(values).unwrap_or_default();
    master.seal(&seal_context(service, version), &json)
}

/// The values of a stored version. A version that cannot be opened is damaged data (or sealed
/// with another key): an internal error whose cause is logged, never shown.
fn open(master: &MasterKey, service: &str, version: &SecretVersion) -> Result<SecretMap, DbError> {
    let unusable =
        |what: &str| DbError::Data(format!("secrets of {service} version {}: {what}", version.version));
    let plain = master
        .open(&seal_context(service, version.version), &version.sealed_values)
        .map_err(|e| unusable(&e.to_string()))?;
    // serde's message could quote a value: it is not passed on.
    serde_json::from_slice(&plain).map_err(|_| unusable("not a map of names to values"))
}

/// The service's set unless it is deleted.
fn live_set(conn: &mut AnyConnection, service: &str) -> Result<Option<SetRow>, DbError> {
    Ok(store::find_set(conn, service)?.filter(|s| s.deleted_at.is_none()))
}

/// Creates a service's set at version 1 with `values`.
pub fn create(
    tx: &mut Change<'_>,
    master: &MasterKey,
    service: &str,
    values: SecretMap,
) -> Result<SecretSet, SecretsError> {
    let sealed = seal(master, service, 1, &values);
    let by = tx.who().actor.clone();
    store::create_set(tx.conn(), service, &sealed, &by).map_err(|err| {
        if store::is_unique_violation(&err) {
            SecretsError::Exists
        } else {
            err.into()
        }
    })?;
    tx.audit("secrets.create", service, None)?;
    Ok(SecretSet { service_name: service.to_string(), secrets: values, version: 1 })
}

/// Creates a service's set with generated defaults unless it has one (deleted or not).
pub fn ensure(tx: &mut Change<'_>, master: &MasterKey, service: &str) -> Result<(), SecretsError> {
    if store::find_set(tx.conn(), service)?.is_some() {
        return Ok(());
    }
    create(tx, master, service, generated_defaults()).map(drop)
}

/// Writes the next version of a service's secrets (check-and-set on the current version, under
/// the set's row lock), prunes versions beyond `keep`, and publishes `secrets.rotated`.
pub fn revise(
    tx: &mut Change<'_>,
    master: &MasterKey,
    keep: i32,
    service: &str,
    revision: Revision,
) -> Result<SecretSet, SecretsError> {
    let set = store::lock_set(tx.conn(), service)?
        .filter(|s| s.deleted_at.is_none())
        .ok_or(SecretsError::NotFound)?;
    let current = set.current_version;
    let (action, reason) = (revision.action(), revision.reason());
    let values = match revision {
        Revision::Replace { expected, .. } if expected != current => {
            return Err(SecretsError::VersionConflict { current, expected });
        }
        Revision::Replace { values, .. } => values,
        Revision::Rotate { overrides } => {
            let stored = store::get_version(tx.conn(), service, current)?.ok_or_else(|| {
                DbError::Data(format!("secrets of {service}: current version {current} missing"))
            })?;
            let mut values = open(master, service, &stored)?;
            values.extend(generated_defaults());
            values.extend(overrides);
            values
        }
    };
    let version = current + 1;
    let sealed = seal(master, service, version, &values);
    let by = tx.who().actor.clone();
    if !store::advance(tx.conn(), service, current, &sealed, &by)? {
        return Err(SecretsError::Concurrent);
    }
    store::prune(tx.conn(), service, version, keep)?;
    tx.publish(&SecretsRotated {
        service_name: service.to_string(),
        version,
        rotation_time: chrono::Utc::now(),
        reason: Some(reason.to_string()),
    })?;
    tx.audit(action, service, Some(serde_json::json!({ "version": version })))?;
    Ok(SecretSet { service_name: service.to_string(), secrets: values, version })
}

/// Hides a service's secrets (restorable).
pub fn delete(tx: &mut Change<'_>, service: &str) -> Result<(), SecretsError> {
    if !store::set_deleted(tx.conn(), service, true)? {
        return Err(SecretsError::NotFound);
    }
    tx.audit("secrets.delete", service, None)?;
    Ok(())
}

/// Undoes a soft delete.
pub fn restore(tx: &mut Change<'_>, service: &str) -> Result<(), SecretsError> {
    if !store::set_deleted(tx.conn(), service, false)? {
        return Err(SecretsError::NothingDeleted);
    }
    tx.audit("secrets.restore", service, None)?;
    Ok(())
}

/// Removes a service's secrets and every version for good.
pub fn destroy(tx: &mut Change<'_>, service: &str) -> Result<(), SecretsError> {
    if !store::destroy(tx.conn(), service)? {
        return Err(SecretsError::NotFound);
    }
    tx.audit("secrets.destroy", service, None)?;
    Ok(())
}

/// Publishes a rotation notice given by an admin (`POST /notifications`).
pub fn announce(tx: &mut Change<'_>, notice: &SecretsRotated) -> Result<(), SecretsError> {
    tx.publish(notice)?;
    tx.audit("secrets.notify", &notice.service_name, Some(serde_json::json!({ "version": notice.version })))?;
    Ok(())
}

/// The current version of a service's secrets, or version `wanted` while it is kept.
pub async fn read(
    db: &Db,
    master: &MasterKey,
    service: String,
    wanted: Option<i32>,
) -> Result<SecretSet, SecretsError> {
    let name = service.clone();
    let found = db
        .run(move |conn| {
            let Some(set) = live_set(conn, &name)? else { return Ok(None) };
            store::get_version(conn, &name, wanted.unwrap_or(set.current_version))
        })
        .await?;
    let version = found.ok_or(SecretsError::NotFound)?;
    let secrets = open(master, &service, &version)?;
    Ok(SecretSet { service_name: service, secrets, version: version.version })
}

/// The current version number and every kept version (newest first), without values.
pub async fn history(db: &Db, service: String) -> Result<(i32, Vec<SecretVersion>), SecretsError> {
    let found = db
        .run(move |conn| {
            let Some(set) = live_set(conn, &service)? else { return Ok(None) };
            Ok(Some((set.current_version, store::list_versions(conn, &service)?)))
        })
        .await?;
    found.ok_or(SecretsError::NotFound)
}
