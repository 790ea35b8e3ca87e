//! Installation facts kept in the database (`instance_meta`).

use diesel::prelude::*;

use super::crypto::{CryptoError, MasterKey};
use super::db::schema::instance_meta;
use super::db::{AnyConnection, DbError};

const MASTER_KEY_CHECK: &str = "master_key_check";

#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Key(#[from] CryptoError),
}

impl From<diesel::result::Error> for MetaError {
    fn from(err: diesel::result::Error) -> Self {
        MetaError::Db(err.into())
    }
}

/// Refuses a key that cannot open this database's check value, without writing anything (for
/// commands that only read: a database that has none yet passes).
pub fn check_master_key(conn: &mut AnyConnection, key: &MasterKey) -> Result<(), MetaError> {
    let stored: Option<String> = instance_meta::table
        .filter(instance_meta::name.eq(MASTER_KEY_CHECK))
        .select(instance_meta::value)
        .first(conn)
        .optional()?;
    match stored {
        Some(check) => Ok(key.verify_check_value(&check)?),
        None => Ok(()),
    }
}

/// On first start records a check value sealed with `key`; on every later start refuses a key
/// that cannot open it, before anything is decrypted into garbage or sealed with the wrong key.
pub fn ensure_master_key_matches(conn: &mut AnyConnection, key: &MasterKey) -> Result<(), MetaError> {
    let stored: Option<String> = instance_meta::table
        .filter(instance_meta::name.eq(MASTER_KEY_CHECK))
        .select(instance_meta::value)
        .first(conn)
        .optional()?;
    match stored {
        Some(check) => Ok(key.verify_check_value(&check)?),
        None => {
            let inserted = diesel::insert_into(instance_meta::table)
                .values((
                    instance_meta::name.eq(MASTER_KEY_CHECK),
                    instance_meta::value.eq(key.check_value()),
                ))
                .execute(conn);
            match inserted {
                Ok(_) => Ok(()),
                // Another instance recorded its check value first: ours must match it.
                Err(diesel::result::Error::DatabaseError(
                    diesel::result::DatabaseErrorKind::UniqueViolation,
                    _,
                )) => ensure_master_key_matches(conn, key),
                Err(err) => Err(err.into()),
            }
        }
    }
}
