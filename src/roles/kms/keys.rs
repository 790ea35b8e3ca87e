//! Per-service API keys: create, read (admin or owner), list (metadata only), rotate with a
//! grace period, revoke, and verify by keyed-hash lookup.

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::NaiveDateTime;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::state::KmsState;
use super::{store, ROLE_NAME};
use crate::platform::contracts::{KeyChanged, KeyCreated, KeyRevoked, KeyRotated};
pub use crate::platform::contracts::{VerifyCode, VerifyRequest, VerifyResponse};
use crate::platform::crypto::{constant_time_eq, random_token, MasterKey};
use crate::platform::db::DbError;
use crate::platform::error::{ApiError, ApiResult, ErrorCode};
use crate::platform::extract::{Json, OptionalJson};
use crate::platform::guards::{
    Admin, Origin, ServiceName, SteppedUpAdmin, SteppedUpAdminOrOwner, TrustedProxies,
};
use crate::platform::names::validate_service_name;
use crate::platform::unit::{Change, Who};

const KEY_PREFIX: &str = "fk_";
const HASH_CONTEXT: &str = "kms-api-key";
const SEAL_CONTEXT: &str = "kms-api-key-value";
/// The longest grace a rotation may give the old key (30 days).
const MAX_GRACE_SECONDS: u64 = 30 * 24 * 3600;
/// The furthest ahead a key's expiry may be set (10 years).
const MAX_EXPIRY_MONTHS: u32 = 12 * 10;

/// The shortest and longest key a caller may bring (printable ASCII, no spaces).
const IMPORTED_KEY_LENGTH: std::ops::RangeInclusive<usize> = 16..=256;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"service_name": "service_a", "api_key": "new_service_api_key_456"}))]
pub struct CreateKeyRequest {
    /// 1–64 characters of `a-z 0-9 _ -`, starting with a letter or digit.
    pub service_name: String,
    /// A key brought from an existing deployment: 16–256 printable ASCII characters, no spaces
    /// or control characters; marked `imported`. Absent: a new key `fk_` + 256 random bits.
    #[schema(min_length = 16, max_length = 256, pattern = "^[!-~]{16,256}$")]
    pub api_key: Option<String>,
    /// When the key stops verifying: in the future, at most 10 years ahead. RFC 3339; a time
    /// without a zone is read as UTC.
    #[serde(default, with = "crate::platform::time::aware_option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct KeyResponse {
    pub service_name: String,
    pub api_key: String,
    #[serde(with = "crate::platform::time::utc_option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<NaiveDateTime>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct KeyMetadata {
    pub service_name: String,
    /// The first characters of the key, to tell keys apart.
    pub key_prefix: String,
    /// `active` or `retiring` (verifies until `valid_until`).
    pub state: String,
    /// A disabled key does not verify until it is enabled again.
    pub disabled: bool,
    /// The key was brought by the caller (from an existing deployment), not generated here.
    pub imported: bool,
    #[serde(with = "crate::platform::time::utc")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: NaiveDateTime,
    #[serde(with = "crate::platform::time::utc_option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<NaiveDateTime>,
    #[serde(with = "crate::platform::time::utc_option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub valid_until: Option<NaiveDateTime>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct KeyList {
    pub keys: Vec<KeyMetadata>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"grace_seconds": 3600}))]
pub struct RotateKeyRequest {
    /// How long the old key keeps verifying (0–2592000 s; default from config).
    #[schema(minimum = 0, maximum = 2592000)]
    pub grace_seconds: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RotatedKey {
    pub service_name: String,
    pub api_key: String,
    #[serde(with = "crate::platform::time::utc")]
    #[schema(value_type = String, format = DateTime)]
    pub previous_valid_until: NaiveDateTime,
}

/// The metrics label of a verdict.
trait Label {
    fn label(self) -> &'static str;
}

impl Label for VerifyCode {
    fn label(self) -> &'static str {
        match self {
            VerifyCode::Valid => "VALID",
            VerifyCode::NotFound => "NOT_FOUND",
            VerifyCode::Revoked => "REVOKED",
            VerifyCode::Expired => "EXPIRED",
            VerifyCode::Disabled => "DISABLED",
        }
    }
}

/// A key brought from an existing deployment (the seed's are as short as 23 characters): long
/// enough not to be guessed in the verification budget, printable, nothing a header would mangle.
pub fn validate_imported_key(key: &str) -> ApiResult<()> {
    let ok = IMPORTED_KEY_LENGTH.contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic());
    if ok {
        Ok(())
    } else {
        Err(ApiError::validation("api_key", "must be 16-256 printable ASCII characters without spaces"))
    }
}

/// A key's expiry must lie ahead, and not further than ten years.
fn validate_expiry(expires_at: chrono::DateTime<chrono::Utc>) -> ApiResult<NaiveDateTime> {
    let now = chrono::Utc::now();
    if expires_at <= now {
        return Err(ApiError::validation("expires_at", "must be in the future"));
    }
    let latest = now.checked_add_months(chrono::Months::new(MAX_EXPIRY_MONTHS));
    if latest.is_none_or(|latest| expires_at > latest) {
        return Err(ApiError::validation("expires_at", "must be at most 10 years ahead"));
    }
    Ok(expires_at.naive_utc())
}

fn generate_key() -> String {
    format!("{KEY_PREFIX}{}", random_token(32))
}

/// What is stored for a key: the lookup hash, the sealed value, a short visible prefix.
fn stored_forms(state: &KmsState, key: &str) -> (String, String, String) {
    stored_forms_with(&state.master_key, key)
}

pub fn stored_forms_with(master_key: &MasterKey, key: &str) -> (String, String, String) {
    let hash = lookup_hash(master_key, key);
    let sealed = master_key.seal(SEAL_CONTEXT, key.as_bytes());
    let prefix: String = key.chars().take(7).collect();
    (hash, sealed, prefix)
}

/// The keyed hash a key is stored under and looked up by.
pub fn lookup_hash(master_key: &MasterKey, key: &str) -> String {
    master_key.lookup_hash(HASH_CONTEXT, key.as_bytes())
}

/// The key a stored row holds, from its sealed value.
pub fn reveal(master_key: &MasterKey, sealed: &str) -> ApiResult<String> {
    let plain = master_key.open(SEAL_CONTEXT, sealed).map_err(ApiError::internal)?;
    String::from_utf8(plain).map_err(ApiError::internal)
}

/// Whether the row the index lookup found is the presented key's. The lookup already matched;
/// the comparison is repeated in constant time so that correctness never rests on the
/// database's collation or comparison.
pub fn is_stored_key(stored_hash: &str, presented_hash: &str) -> bool {
    constant_time_eq(stored_hash.as_bytes(), presented_hash.as_bytes())
}

/// How a key that is the presented one stands at `now`: revocation first, then a disabled
/// key, then its own expiry or the end of its rotation grace.
pub fn standing(
    revoked: bool,
    disabled: bool,
    expires_at: Option<NaiveDateTime>,
    valid_until: Option<NaiveDateTime>,
    now: NaiveDateTime,
) -> VerifyCode {
    if revoked {
        VerifyCode::Revoked
    } else if disabled {
        VerifyCode::Disabled
    } else if expires_at.is_some_and(|t| t <= now) || valid_until.is_some_and(|t| t <= now) {
        VerifyCode::Expired
    } else {
        VerifyCode::Valid
    }
}

/// Why a key change was refused.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("this service already has an API key")]
    Exists,
    /// The same value is another service's key, or was revoked: a revoked key never verifies
    /// again, so it cannot come back.
    #[error("this API key is in use or was revoked; bring another one")]
    ValueTaken,
    #[error("this service has no API key")]
    NoKey,
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<KeyError> for ApiError {
    fn from(err: KeyError) -> Self {
        match err {
            KeyError::Exists => ApiError::new(ErrorCode::AlreadyExists, err.to_string()),
            KeyError::ValueTaken => ApiError::new(ErrorCode::Conflict, err.to_string()),
            KeyError::NoKey => ApiError::new(ErrorCode::NotFound, err.to_string()),
            KeyError::Db(db) => db.into(),
        }
    }
}

/// A key to store: its value, whether the caller brought it, and when it expires.
struct NewKey<'a> {
    value: &'a str,
    imported: bool,
    expires_at: Option<NaiveDateTime>,
}

/// Stores a new active key for `service` (the sealed value and lookup hash of the key). A
/// service whose keys were revoked may get a new one; a revoked value never comes back.
fn insert_active(
    tx: &mut Change<'_>,
    master: &crate::platform::crypto::MasterKey,
    service: &str,
    key: NewKey<'_>,
) -> Result<(), KeyError> {
    if store::active_key(tx.conn(), service)?.is_some() {
        return Err(KeyError::Exists);
    }
    let (hash, sealed, prefix) = stored_forms_with(master, key.value);
    if store::key_by_hash(tx.conn(), &hash)?.is_some() {
        return Err(KeyError::ValueTaken);
    }
    let new = store::NewApiKey {
        service_name: service,
        key_hash: &hash,
        sealed_key: &sealed,
        key_prefix: &prefix,
        expires_at: key.expires_at,
        disabled: false,
        imported: key.imported,
    };
    store::insert_key(tx.conn(), &new).map_err(|err| {
        if store::is_unique_violation(&err) {
            KeyError::Exists
        } else {
            err.into()
        }
    })?;
    tx.publish(&KeyCreated { service_name: service.to_string() })?;
    tx.audit("keys.create", service, Some(serde_json::json!({ "imported": key.imported })))?;
    Ok(())
}

/// The API key of `service`, created if it has none (start-up provisioning of a process that
/// serves kms itself: every role it runs gets its own service credential, no admin involved).
pub fn ensure_service_key(
    platform: &crate::platform::server::Platform,
    service: &str,
) -> Result<String, String> {
    let master = platform.master_key.clone();
    let who = Who::new(ROLE_NAME, "bootstrap", Origin::local("local"));
    let result = platform.db.change_blocking(who, |tx| active_or_new(tx, &master, service));
    result.map(|(key, _)| key).map_err(|e: KeyError| e.to_string())
}

/// A role's service credential for `fountain admin issue-credential`: its active API key,
/// created if it has none (`true`). Every issue is audited as `keys.issue` under `actor`, so
/// each copy written to a credential file is on record. Issuing again returns the same key;
/// a new one comes only from a rotation (`POST /keys/{service}/rotate`).
pub fn issue_service_key(
    platform: &crate::platform::server::Platform,
    service: &str,
    actor: &str,
) -> Result<(String, bool), String> {
    let master = platform.master_key.clone();
    let who = Who::new(ROLE_NAME, actor, Origin::local("local"));
    let result = platform.db.change_blocking(who, |tx| {
        let (key, created) = active_or_new(tx, &master, service)?;
        tx.audit("keys.issue", service, Some(serde_json::json!({ "created": created })))?;
        Ok((key, created))
    });
    result.map_err(|e: KeyError| e.to_string())
}

/// The active key of `service` in clear, or a new one stored in its place (`true`).
fn active_or_new(
    tx: &mut Change<'_>,
    master: &crate::platform::crypto::MasterKey,
    service: &str,
) -> Result<(String, bool), KeyError> {
    if let Some(existing) = store::active_key(tx.conn(), service)? {
        let plain =
            master.open(SEAL_CONTEXT, &existing.sealed_key).map_err(|e| DbError::Data(e.to_string()))?;
        return Ok((String::from_utf8_lossy(&plain).into_owned(), false));
    }
    let key = generate_key();
    insert_active(tx, master, service, NewKey { value: &key, imported: false, expires_at: None })?;
    Ok((key, true))
}

/// Create an API key for a service
///
/// Admin only. Stores the key encrypted, with a keyed hash for verification; 409 if the service already has one.
#[utoipa::path(
    post, path = "/keys", operation_id = "createApiKey", tag = "API keys",
    request_body = CreateKeyRequest,
    responses(
        (status = 201, description = "Created; the only time a generated key is shown besides GET", body = KeyResponse),
        (status = 409, description = "The service already has a key, or the key brought is in use or was revoked", body = ErrorBody),
        (status = 422, description = "Invalid service name, key or expiry", body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub async fn create_key(
    state: web::Data<KmsState>,
    admin: SteppedUpAdmin,
    origin: Origin,
    body: Json<CreateKeyRequest>,
) -> ApiResult<HttpResponse> {
    let body = body.into_inner();
    validate_service_name("service_name", &body.service_name)?;
    if let Some(imported) = &body.api_key {
        validate_imported_key(imported)?;
    }
    let expires_at = body.expires_at.map(validate_expiry).transpose()?;
    let imported = body.api_key.is_some();
    let key = body.api_key.unwrap_or_else(generate_key);
    let (service, stored, master) = (body.service_name.clone(), key.clone(), state.master_key.clone());
    let created = state
        .db
        .change(Who::new(ROLE_NAME, admin.0.sub, origin), move |tx| {
            insert_active(tx, &master, &service, NewKey { value: &stored, imported, expires_at })
        })
        .await;
    state.key_lookups.clear();
    created?;
    Ok(HttpResponse::Created().insert_header(("cache-control", "no-store")).json(KeyResponse {
        service_name: body.service_name,
        api_key: key,
        expires_at,
    }))
}

/// Get a service's API key
///
/// Returns the current key in plaintext to an admin or to that service's own token only.
#[utoipa::path(
    get, path = "/keys/{service_name}", operation_id = "getApiKey", tag = "API keys",
    params(("service_name" = String, Path, description = "The service", example = "service_a")),
    responses(
        (status = 200, description = "The key", body = KeyResponse),
        (status = 403, description = "Neither admin nor the owning service", body = ErrorBody),
        (status = 404, description = "The service has no key", body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub async fn get_key(state: web::Data<KmsState>, caller: SteppedUpAdminOrOwner) -> ApiResult<HttpResponse> {
    let caller = caller.0;
    // The step-up issuer's key lets its holder have kms sign `mfa` tokens: only twofa itself may
    // read it (an admin who needs a new one rotates it or issues a credential on the host).
    if caller.service.as_str() == crate::platform::auth::STEP_UP_SERVICE && !caller.claims.is_service() {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            "the step-up service's key is readable by that service only; rotate it to replace it",
        ));
    }
    let service = caller.service.into_inner();
    let lookup = service.clone();
    let key = state.db.run(move |conn| store::active_key(conn, &lookup)).await?;
    let key = key.ok_or(KeyError::NoKey)?;
    let api_key = reveal(&state.master_key, &key.sealed_key)?;
    Ok(HttpResponse::Ok().insert_header(("cache-control", "no-store")).json(KeyResponse {
        service_name: service,
        api_key,
        expires_at: key.expires_at,
    }))
}

/// List API keys
///
/// Admin only. Metadata of every active or retiring key; never the keys themselves.
#[utoipa::path(
    get, path = "/keys", operation_id = "listApiKeys", tag = "API keys",
    responses((status = 200, description = "Key metadata", body = KeyList), (status = 403, description = "Not an admin", body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn list_keys(state: web::Data<KmsState>, _admin: Admin) -> ApiResult<web::Json<KeyList>> {
    let keys = state.db.run(store::list_keys).await?;
    let keys = keys
        .into_iter()
        .map(|k| KeyMetadata {
            service_name: k.service_name,
            key_prefix: k.key_prefix,
            state: k.state,
            disabled: k.disabled,
            imported: k.imported,
            created_at: k.created_at,
            expires_at: k.expires_at,
            valid_until: k.valid_until,
        })
        .collect();
    Ok(web::Json(KeyList { keys }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"disabled": false}))]
pub struct UpdateKeyRequest {
    /// true stops the service's keys from verifying; false lets them verify again.
    pub disabled: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UpdatedKey {
    pub service_name: String,
    pub disabled: bool,
}

/// Disable or enable a service's API keys
///
/// Admin only. A reversible stop: disabled keys answer DISABLED on verify until enabled again.
#[utoipa::path(
    patch, path = "/keys/{service_name}", operation_id = "updateApiKey", tag = "API keys",
    params(("service_name" = String, Path, description = "The service", example = "service_a")),
    request_body = UpdateKeyRequest,
    responses((status = 200, description = "Updated", body = UpdatedKey), (status = 404, description = "The service has no key", body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn update_key(
    state: web::Data<KmsState>,
    admin: SteppedUpAdmin,
    origin: Origin,
    service: ServiceName,
    body: Json<UpdateKeyRequest>,
) -> ApiResult<web::Json<UpdatedKey>> {
    let service = service.into_inner();
    let disabled = body.disabled;
    let name = service.clone();
    let changed = state
        .db
        .change(Who::new(ROLE_NAME, admin.0.sub, origin), move |tx| {
            let key_ids = store::set_service_disabled(tx.conn(), &name, disabled)?;
            if key_ids.is_empty() {
                return Err(KeyError::NoKey);
            }
            tx.publish(&KeyChanged { service_name: name.clone(), disabled, key_ids })?;
            tx.audit(if disabled { "keys.disable" } else { "keys.enable" }, &name, None)?;
            Ok::<_, KeyError>(())
        })
        .await;
    state.key_lookups.clear();
    changed?;
    Ok(web::Json(UpdatedKey { service_name: service, disabled }))
}

/// Revoke a service's API keys
///
/// Admin only. The active key and any key still in its grace period stop verifying at once.
#[utoipa::path(
    delete, path = "/keys/{service_name}", operation_id = "deleteApiKey", tag = "API keys",
    params(("service_name" = String, Path, description = "The service", example = "service_a")),
    responses((status = 204, description = "Revoked"), (status = 404, description = "The service has no key", body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn delete_key(
    state: web::Data<KmsState>,
    admin: SteppedUpAdmin,
    origin: Origin,
    service: ServiceName,
) -> ApiResult<HttpResponse> {
    let service = service.into_inner();
    let revoked = state
        .db
        .change(Who::new(ROLE_NAME, admin.0.sub, origin), move |tx| {
            let key_ids = store::revoke_service_keys(tx.conn(), &service)?;
            if key_ids.is_empty() {
                return Err(KeyError::NoKey);
            }
            tx.publish(&KeyRevoked { service_name: service.clone(), key_ids })?;
            tx.audit("keys.revoke", &service, None)?;
            Ok::<_, KeyError>(())
        })
        .await;
    state.key_lookups.clear();
    revoked?;
    Ok(HttpResponse::NoContent().finish())
}

/// Rotate a service's API key
///
/// Admin only. Issues a new key; the old one keeps verifying for grace_seconds so callers never fail mid-rotation.
#[utoipa::path(
    post, path = "/keys/{service_name}/rotate", operation_id = "rotateApiKey", tag = "API keys",
    params(("service_name" = String, Path, description = "The service", example = "service_a")),
    request_body = RotateKeyRequest,
    responses(
        (status = 200, description = "The new key", body = RotatedKey),
        (status = 404, description = "The service has no key", body = ErrorBody),
        (status = 422, description = "Grace out of range", body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub async fn rotate_key(
    state: web::Data<KmsState>,
    admin: SteppedUpAdmin,
    origin: Origin,
    service: ServiceName,
    body: OptionalJson<RotateKeyRequest>,
) -> ApiResult<HttpResponse> {
    let service = service.into_inner();
    let grace = body.0.unwrap_or_default().grace_seconds.unwrap_or(state.config.key_rotation_grace_seconds);
    if grace > MAX_GRACE_SECONDS {
        return Err(ApiError::validation("grace_seconds", format!("must be at most {MAX_GRACE_SECONDS}")));
    }
    let key = generate_key();
    let (hash, sealed, prefix) = stored_forms(&state, &key);
    let valid_until = store::now() + chrono::Duration::seconds(grace as i64);
    let name = service.clone();
    let rotated = state
        .db
        .change(Who::new(ROLE_NAME, admin.0.sub, origin), move |tx| {
            let old = store::active_key(tx.conn(), &name)?.ok_or(KeyError::NoKey)?;
            store::retire_active(tx.conn(), &name, valid_until)?;
            let new = store::NewApiKey {
                service_name: &name,
                key_hash: &hash,
                sealed_key: &sealed,
                key_prefix: &prefix,
                expires_at: old.expires_at,
                disabled: old.disabled,
                imported: false,
            };
            store::insert_key(tx.conn(), &new)?;
            tx.publish(&KeyRotated { service_name: name.clone(), previous_valid_until: Some(valid_until) })?;
            tx.audit("keys.rotate", &name, Some(serde_json::json!({ "graceSeconds": grace })))?;
            Ok::<_, KeyError>(())
        })
        .await;
    state.key_lookups.clear();
    rotated.map_err(ApiError::from)?;
    state.metrics.key_rotations.inc();
    Ok(HttpResponse::Ok().insert_header(("cache-control", "no-store")).json(RotatedKey {
        service_name: service,
        api_key: key,
        previous_valid_until: valid_until,
    }))
}

/// Who asks for a verdict, for the per-caller limit: the client address, or `None` for a
/// trusted proxy's own call (the gateway checking an `X-API-KEY` it was shown sends no
/// `X-Forwarded-For`). The gateway is not counted against itself: it already spends a failed
/// key against the presenting client's address (its `auth_failure_limit`) before asking, and
/// caches every verdict per worker, so its own calls are bounded per client; one bucket for
/// the gateway's address would let one client spraying keys starve every API-key caller.
/// Whatever a trusted proxy relays (`X-Forwarded-For` present) is limited per the client's
/// address, like any direct caller.
fn verify_caller(req: &HttpRequest) -> Option<String> {
    let trusted = req.app_data::<TrustedProxies>().map(|t| t.0.as_slice()).unwrap_or_default();
    let from_proxy = req.peer_addr().is_some_and(|peer| trusted.contains(&peer.ip()));
    if from_proxy && !req.headers().contains_key("x-forwarded-for") {
        return None;
    }
    Some(crate::platform::net::client_addr(req, trusted))
}

/// Verify an API key
///
/// For the gateway: says whether a key is valid and whose it is. One keyed-hash lookup, no scan. Limited per client address (the gateway's own checks are not).
#[utoipa::path(
    post, path = "/keys/verify", operation_id = "verifyApiKey", tag = "API keys",
    request_body = VerifyRequest,
    responses(
        (status = 200, description = "The verdict (also for unknown keys)", body = VerifyResponse),
        (status = 429, description = "Too many verifications from this address", body = ErrorBody)
    )
)]
pub async fn verify_key(
    state: web::Data<KmsState>,
    req: HttpRequest,
    body: Json<VerifyRequest>,
) -> ApiResult<web::Json<VerifyResponse>> {
    if let Some(caller) = verify_caller(&req) {
        let taken = state.verifications.take(&caller);
        state.observe_limiter("verification_address", state.verifications.size());
        if let Err(retry_after) = taken {
            state.metrics.limited.with_label_values(&["verification"]).inc();
            return Err(ApiError::from_code(ErrorCode::RateLimited).with_retry_after(retry_after));
        }
    }
    let verdict = check_key(&state, body.into_inner().api_key).await?;
    Ok(web::Json(verdict.response))
}

/// A verification result and, for a known key, the key's id (service tokens carry it, so that
/// revoking the key ends them).
pub struct Verdict {
    pub response: VerifyResponse,
    pub key_id: Option<i64>,
}

/// Looks a key up by its keyed hash and classifies it.
pub async fn check_key(state: &web::Data<KmsState>, key: String) -> ApiResult<Verdict> {
    let hash = lookup_hash(&state.master_key, &key);
    let found = match state.key_lookups.get(&hash) {
        Some(cached) => cached,
        None => {
            let lookup = hash.clone();
            let found = state.db.run(move |conn| store::key_by_hash(conn, &lookup)).await?;
            state.key_lookups.insert(hash.clone(), found.clone());
            found
        }
    };
    let now = store::now();
    let verdict = match found {
        Some(k) if is_stored_key(&k.key_hash, &hash) => {
            let code = standing(k.state == store::KEY_REVOKED, k.disabled, k.expires_at, k.valid_until, now);
            let response = VerifyResponse {
                valid: code == VerifyCode::Valid,
                code,
                service_name: Some(k.service_name),
                expires_at: k.expires_at.or(k.valid_until),
            };
            Verdict { response, key_id: Some(k.id) }
        }
        _ => Verdict {
            response: VerifyResponse {
                valid: false,
                code: VerifyCode::NotFound,
                service_name: None,
                expires_at: None,
            },
            key_id: None,
        },
    };
    state.metrics.verifications.with_label_values(&[verdict.response.code.label()]).inc();
    Ok(verdict)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn master() -> MasterKey {
        MasterKey::from_bytes(&[7u8; 32])
    }

    #[test]
    fn imported_keys_are_16_to_256_printable_characters_without_spaces() {
        for ok in ["a".repeat(16), "~".repeat(256), "service_api_key_123".into(), generate_key()] {
            assert!(validate_imported_key(&ok).is_ok(), "{ok:?}");
        }
        for bad in [
            "a".repeat(15),
            "a".repeat(257),
            "with a space 1234".into(),
            "tab\there_123456".into(),
            "é".repeat(16),
        ] {
            assert!(validate_imported_key(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_stored_key_verifies_only_for_itself_and_reveals_as_stored() {
        let master = master();
        let key = generate_key();
        let (hash, sealed, prefix) = stored_forms_with(&master, &key);
        assert!(is_stored_key(&hash, &lookup_hash(&master, &key)));
        assert!(!is_stored_key(&hash, &lookup_hash(&master, &format!("{key}x"))));
        assert!(
            !is_stored_key(&hash, &lookup_hash(&MasterKey::from_bytes(&[8u8; 32]), &key)),
            "another master key"
        );
        assert_eq!(reveal(&master, &sealed).unwrap(), key);
        assert_eq!(prefix, key[..7]);
        assert!(key.starts_with(KEY_PREFIX) && key.len() == KEY_PREFIX.len() + 43, "256 bits in base64url");
    }

    #[test]
    fn standing_puts_revocation_before_disabling_before_expiry() {
        let now = store::now();
        let past = Some(now - chrono::Duration::seconds(1));
        let future = Some(now + chrono::Duration::seconds(1));
        assert_eq!(standing(true, true, past, past, now), VerifyCode::Revoked);
        assert_eq!(standing(false, true, past, None, now), VerifyCode::Disabled);
        assert_eq!(standing(false, false, past, future, now), VerifyCode::Expired);
        assert_eq!(
            standing(false, false, future, Some(now), now),
            VerifyCode::Expired,
            "grace ends at its instant"
        );
        assert_eq!(standing(false, false, future, future, now), VerifyCode::Valid);
        assert_eq!(standing(false, false, None, None, now), VerifyCode::Valid);
    }
}
