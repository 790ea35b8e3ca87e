//! The Ed25519 signing keys: one active key signs, retired keys stay published in the JWKS until
//! every token they signed has expired. Private halves are sealed with the master key.

use std::sync::RwLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::NaiveDateTime;
use diesel::prelude::*;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use serde_json::{json, Value};

use super::schema::signing_keys;
use super::store::now;
use crate::platform::auth::Claims;
use crate::platform::crypto::{random_token, MasterKey};
use crate::platform::db::{AnyConnection, DbError};

const SEAL_CONTEXT: &str = "kms-signing-key";

#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("signing key {0} cannot be opened with this master key")]
    Sealed(String),
    #[error("signing key {0} is not a valid Ed25519 key")]
    Invalid(String),
}

impl From<diesel::result::Error> for SigningError {
    fn from(err: diesel::result::Error) -> Self {
        SigningError::Db(err.into())
    }
}

impl SigningError {
    pub fn into_db(self) -> DbError {
        match self {
            SigningError::Db(err) => err,
            other => DbError::Data(other.to_string()),
        }
    }
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = signing_keys)]
struct Row {
    kid: String,
    private_key: String,
    public_key: String,
    created_at: NaiveDateTime,
    retired_at: Option<NaiveDateTime>,
}

struct Published {
    kid: String,
    x: String,
    decoding: DecodingKey,
}

struct Ring {
    active_kid: String,
    active: EncodingKey,
    published: Vec<Published>,
}

/// The keys in memory; reloaded from the database after a rotation or on an unknown `kid`.
pub struct KeyRing {
    ring: RwLock<Ring>,
}

/// kms's keys as the process's verifier uses them: no JWKS round trip inside kms.
pub struct LocalKeyRing {
    pub keys: std::sync::Arc<KeyRing>,
    pub db: crate::platform::db::Db,
    pub master_key: std::sync::Arc<MasterKey>,
}

impl crate::platform::trust::LocalKeys for LocalKeyRing {
    fn decoding_key(&self, kid: &str) -> Option<DecodingKey> {
        self.keys.decoding_key(kid)
    }

    fn reload(&self) -> Result<(), String> {
        let mut conn = self.db.conn().map_err(|e| e.to_string())?;
        self.keys.reload(&mut conn, &self.master_key).map_err(|e| e.to_string())
    }
}

impl KeyRing {
    /// Loads the published keys, creating the first signing key on a fresh database.
    pub fn load(conn: &mut AnyConnection, master: &MasterKey) -> Result<KeyRing, SigningError> {
        Ok(KeyRing { ring: RwLock::new(load_ring(conn, master)?) })
    }

    pub fn reload(&self, conn: &mut AnyConnection, master: &MasterKey) -> Result<(), SigningError> {
        let ring = load_ring(conn, master)?;
        *self.ring.write().unwrap_or_else(|e| e.into_inner()) = ring;
        Ok(())
    }
}

/// Stores a new signing key and retires the current one, which stays published for
/// `publish_old_for`. Call inside the unit of work that also publishes and audits the rotation,
/// and reload the ring after it committed: the key signs only once the change is durable.
pub fn rotate(
    conn: &mut AnyConnection,
    master: &MasterKey,
    publish_old_for: chrono::Duration,
) -> Result<String, SigningError> {
    let at = now();
    diesel::update(signing_keys::table.filter(signing_keys::retired_at.is_null()))
        .set((signing_keys::retired_at.eq(at), signing_keys::publish_until.eq(at + publish_old_for)))
        .execute(conn)?;
    insert_new_key(conn, master)
}

impl KeyRing {
    /// Signs claims with the active key, naming it in the `kid` header.
    pub fn sign(&self, claims: &Claims) -> Result<String, jsonwebtoken::errors::Error> {
        let ring = self.ring.read().unwrap_or_else(|e| e.into_inner());
        let header = Header { kid: Some(ring.active_kid.clone()), ..Header::new(Algorithm::EdDSA) };
        jsonwebtoken::encode(&header, claims, &ring.active)
    }

    pub fn decoding_key(&self, kid: &str) -> Option<DecodingKey> {
        let ring = self.ring.read().unwrap_or_else(|e| e.into_inner());
        ring.published.iter().find(|k| k.kid == kid).map(|k| k.decoding.clone())
    }

    pub fn active_kid(&self) -> String {
        self.ring.read().unwrap_or_else(|e| e.into_inner()).active_kid.clone()
    }

    /// The public keys as a JWK Set (RFC 7517 / RFC 8037 OKP keys).
    pub fn jwks(&self) -> Value {
        let ring = self.ring.read().unwrap_or_else(|e| e.into_inner());
        let keys: Vec<Value> = ring
            .published
            .iter()
            .map(|k| json!({"kty": "OKP", "crv": "Ed25519", "x": k.x, "kid": k.kid, "alg": "EdDSA", "use": "sig"}))
            .collect();
        json!({ "keys": keys })
    }
}

fn load_ring(conn: &mut AnyConnection, master: &MasterKey) -> Result<Ring, SigningError> {
    let rows = published_rows(conn)?;
    let rows = if rows.iter().any(|r| r.retired_at.is_none()) {
        rows
    } else {
        insert_new_key(conn, master)?;
        published_rows(conn)?
    };
    let active_row = rows
        .iter()
        .filter(|r| r.retired_at.is_none())
        .max_by_key(|r| r.created_at)
        .ok_or_else(|| SigningError::Invalid("(none active)".into()))?;
    let der = master
        .open(SEAL_CONTEXT, &active_row.private_key)
        .map_err(|_| SigningError::Sealed(active_row.kid.clone()))?;
    let active = EncodingKey::from_ed_der(&der);
    let published = rows
        .iter()
        .map(|row| {
            let decoding = DecodingKey::from_ed_components(&row.public_key)
                .map_err(|_| SigningError::Invalid(row.kid.clone()))?;
            Ok(Published { kid: row.kid.clone(), x: row.public_key.clone(), decoding })
        })
        .collect::<Result<Vec<_>, SigningError>>()?;
    Ok(Ring { active_kid: active_row.kid.clone(), active, published })
}

fn published_rows(conn: &mut AnyConnection) -> Result<Vec<Row>, SigningError> {
    let at = now();
    Ok(signing_keys::table
        .filter(signing_keys::publish_until.is_null().or(signing_keys::publish_until.gt(at)))
        .order(signing_keys::created_at.asc())
        .select(Row::as_select())
        .load(conn)?)
}

fn insert_new_key(conn: &mut AnyConnection, master: &MasterKey) -> Result<String, SigningError> {
    let key = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
    let der = key.to_pkcs8_der().map_err(|_| SigningError::Invalid("(new)".into()))?;
    let kid = random_token(12);
    diesel::insert_into(signing_keys::table)
        .values((
            signing_keys::kid.eq(&kid),
            signing_keys::private_key.eq(master.seal(SEAL_CONTEXT, der.as_bytes())),
            signing_keys::public_key.eq(URL_SAFE_NO_PAD.encode(key.verifying_key().as_bytes())),
            signing_keys::created_at.eq(now()),
        ))
        .execute(conn)?;
    log::info!(target: "fountain::kms", kid = kid.as_str(); "new signing key created");
    Ok(kid)
}
