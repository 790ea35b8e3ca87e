//! Secrets Manager endpoints (seed paths and operationIds), with versions, check-and-set,
//! soft delete, destroy, the secret factory and rotation events. Each handler extracts its
//! typed guard and input, makes one call into the domain (`service`), and answers.

use actix_web::{web, HttpResponse, HttpResponseBuilder};
use rand::Rng;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

pub use super::service::SecretMap;
use super::service::{self, Revision, SecretsError};
use super::store::SecretVersion;
use super::{SecretsState, ROLE_NAME};
use crate::platform::contracts::{SecretSet, SecretsRotated};
use crate::platform::error::{ApiError, ApiResult, ErrorCode};
use crate::platform::extract::{Json, OptionalJson};
use crate::platform::guards::{
    Admin, AdminOrOwner, AdminOrService, Origin, ServiceName, SteppedUpAdmin, SteppedUpAdminOrOwner,
};
use crate::platform::names::validate_service_name;
use crate::platform::unit::Who;

const MAX_ENTRIES: usize = 256;
const MAX_VALUE_BYTES: usize = 64 * 1024;
const DEFAULT_ALPHABET: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

#[derive(Debug, Deserialize, IntoParams)]
pub struct VersionParam {
    /// A specific version (default: the current one).
    #[param(minimum = 1, example = 1)]
    pub version: Option<i32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VersionInfo {
    pub version: i32,
    /// RFC 3339, UTC, with `Z`.
    #[serde(with = "crate::platform::time::utc")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: chrono::NaiveDateTime,
    pub created_by: String,
}

impl From<SecretVersion> for VersionInfo {
    fn from(v: SecretVersion) -> Self {
        Self { version: v.version, created_at: v.created_at, created_by: v.created_by }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VersionList {
    pub service_name: String,
    pub current_version: i32,
    pub versions: Vec<VersionInfo>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(non_snake_case)]
#[schema(example = json!({"newSecrets": {"API_TOKEN": "new-upstream-token-4f9c2a"}}))]
pub struct RotateRequest {
    /// Values to set in the new version; JWT_SECRET and DB_PASSWORD are regenerated unless given.
    /// At most 256 names of 1–128 characters of A-Z a-z 0-9 _ - . ; values at most 64 KiB.
    #[schema(value_type = Option<BTreeMap<String, String>>)]
    pub newSecrets: Option<SecretMap>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(non_snake_case)]
#[schema(example = json!({"secrets": {"API_TOKEN": "upstream-token-8d1e7b", "DB_PASSWORD": "db-password-5c3f9e"}, "expectedVersion": 1}))]
pub struct ReplaceRequest {
    /// The complete set of values of the new version: at most 256 names of 1–128 characters of
    /// A-Z a-z 0-9 _ - . ; values at most 64 KiB.
    #[schema(value_type = BTreeMap<String, String>)]
    pub secrets: SecretMap,
    /// The version the caller read; 409 if it is no longer current.
    #[schema(minimum = 1)]
    pub expectedVersion: i32,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"length": 32, "alphabet": "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"}))]
pub struct GenerateRequest {
    /// 16–1024 characters (default 32).
    #[schema(minimum = 16, maximum = 1024, default = 32)]
    pub length: Option<usize>,
    /// Characters to draw from: 2–94 distinct printable ASCII characters (no space); default
    /// the URL-safe base64 alphabet.
    #[schema(min_length = 2, max_length = 94, pattern = "^[!-~]+$")]
    pub alphabet: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct GenerateResponse {
    pub secret: String,
}

/// The seed's rotation notice.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(non_snake_case)]
#[schema(example = json!({"serviceName": "service_a", "rotationTime": "2026-11-30T11:36:26.123Z", "version": "v2"}))]
pub struct NotificationPayload {
    /// The service whose secrets were rotated.
    #[schema(min_length = 1, max_length = 64, pattern = "^[a-z0-9_-]{1,64}$")]
    pub serviceName: String,
    /// When the secrets were rotated: RFC 3339; a time without a zone (Python's
    /// `datetime.utcnow().isoformat()`) is read as UTC.
    #[serde(with = "crate::platform::time::aware")]
    #[schema(value_type = String, format = DateTime)]
    pub rotationTime: chrono::DateTime<chrono::Utc>,
    /// The new version: a whole number from 1, as a string with an optional `v` (`"7"`,
    /// `"v2"`, as the seed sends it); a JSON number is accepted too.
    #[schema(value_type = String, pattern = "^[vV]?[0-9]{1,9}$")]
    pub version: VersionLabel,
}

/// A version as rotation notices write it: `7`, `"7"` or `"v7"`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum VersionLabel {
    Number(i64),
    Text(String),
}

impl VersionLabel {
    /// The version number, from 1.
    fn number(&self) -> ApiResult<i32> {
        let invalid =
            || ApiError::validation("version", "must be a whole number from 1, optionally after a v");
        let number = match self {
            VersionLabel::Number(n) => i32::try_from(*n).map_err(|_| invalid())?,
            VersionLabel::Text(text) => {
                let digits = text.strip_prefix(['v', 'V']).unwrap_or(text);
                if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
                    return Err(invalid());
                }
                digits.parse().map_err(|_| invalid())?
            }
        };
        if number < 1 {
            return Err(invalid());
        }
        Ok(number)
    }
}

impl NotificationPayload {
    /// The `secrets.rotated` event this notice announces (its `version` a number).
    fn into_event(self) -> ApiResult<SecretsRotated> {
        validate_service_name("serviceName", &self.serviceName)?;
        Ok(SecretsRotated {
            version: self.version.number()?,
            service_name: self.serviceName,
            rotation_time: self.rotationTime,
            reason: Some("notification".to_string()),
        })
    }
}

/// What `POST /notifications` answers, in the seed's words.
pub const NOTIFICATION_RECEIVED: &str =
    "Notification received; dependent services should update their secrets.";

#[derive(Debug, Serialize, ToSchema)]
pub struct Message {
    pub message: String,
}

/// Who makes a change: the admin, from where the request came.
fn who(admin: &str, origin: Origin) -> Who {
    Who::new(ROLE_NAME, admin, origin)
}

/// Secret values are never cached by a client or a proxy.
fn no_store(mut response: HttpResponseBuilder, set: &SecretSet) -> HttpResponse {
    response.insert_header(("cache-control", "no-store")).json(set)
}

fn validate_values(field: &str, values: &SecretMap) -> ApiResult<()> {
    if values.len() > MAX_ENTRIES {
        return Err(ApiError::validation(field, format!("at most {MAX_ENTRIES} entries")));
    }
    for (name, value) in values {
        let name_ok = (1..=128).contains(&name.len())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if !name_ok {
            return Err(ApiError::validation(field, "names must be 1-128 characters of A-Z a-z 0-9 _ - ."));
        }
        if value.len() > MAX_VALUE_BYTES {
            return Err(ApiError::validation(
                field,
                format!("values must be at most {MAX_VALUE_BYTES} bytes"),
            ));
        }
    }
    Ok(())
}

/// Creates a service's secret set with generated defaults unless it has one (start-up
/// provisioning of a process that serves the secrets role itself).
pub fn ensure_secret_set(platform: &crate::platform::server::Platform, service: &str) -> Result<(), String> {
    ensure_secret_set_as(platform, service, "bootstrap")
}

/// Like [`ensure_secret_set`], made (and audited, when created) as `actor`: the command line's
/// `fountain admin issue-credential`.
pub fn ensure_secret_set_as(
    platform: &crate::platform::server::Platform,
    service: &str,
    actor: &str,
) -> Result<(), String> {
    let who = Who::new(ROLE_NAME, actor, Origin::local("local"));
    let master = &platform.master_key;
    match platform.db.change_blocking(who, |tx| service::ensure(tx, master, service)) {
        // Another process starting at the same time created it first.
        Ok(()) | Err(SecretsError::Exists) => Ok(()),
        Err(err) => Err(err.to_string()),
    }
}

/// Create and store secrets for a service
///
/// Admin only. Generates JWT_SECRET and DB_PASSWORD, merged with the optional body; 409 if the service has secrets.
#[utoipa::path(
    post, path = "/secrets/{serviceName}", operation_id = "createSecretsForService", tag = "Secrets",
    params(("serviceName" = String, Path, description = "Service identifier (1–64 of a-z 0-9 _ -)", example = "service_a", pattern = "^[a-z0-9_-]{1,64}$")),
    request_body(
        content = Option<BTreeMap<String, String>>,
        description = "Optional name/value pairs (at most 256; names 1–128 of A-Z a-z 0-9 _ - . ; values at most 64 KiB)",
        example = json!({"API_TOKEN": "upstream-token-8d1e7b"})
    ),
    responses(
        (status = 201, description = "Created at version 1", body = SecretSet),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 409, description = "The service already has secrets (already_exists)", body = ErrorBody),
        (status = 422, description = "Invalid service name, secret names or values", body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub async fn create(
    state: web::Data<SecretsState>,
    admin: SteppedUpAdmin,
    origin: Origin,
    name: ServiceName,
    body: OptionalJson<SecretMap>,
) -> ApiResult<HttpResponse> {
    let mut values = service::generated_defaults();
    if let Some(given) = body.0 {
        validate_values("secrets", &given)?;
        values.extend(given);
    }
    let master = state.master_key.clone();
    let set = state
        .db
        .change(who(admin.name(), origin), move |tx| service::create(tx, &master, name.as_str(), values))
        .await?;
    Ok(no_store(HttpResponse::Created(), &set))
}

/// Retrieve secrets for a service
///
/// An admin, or the service itself with its own token. The current version, or ?version=N while it is kept.
#[utoipa::path(
    get, path = "/secrets/{serviceName}", operation_id = "getSecretsForService", tag = "Secrets",
    params(("serviceName" = String, Path, description = "Service identifier (1–64 of a-z 0-9 _ -)", example = "service_a", pattern = "^[a-z0-9_-]{1,64}$"), VersionParam),
    responses(
        (status = 200, description = "The secrets", body = SecretSet),
        (status = 400, description = "version is not a positive integer", body = ErrorBody),
        (status = 403, description = "Neither an admin nor the service itself", body = ErrorBody),
        (status = 404, description = "No such service or version", body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub async fn get(
    state: web::Data<SecretsState>,
    caller: SteppedUpAdminOrOwner,
    params: web::Query<VersionParam>,
) -> ApiResult<HttpResponse> {
    if params.version.is_some_and(|v| v < 1) {
        return Err(ApiError::new(ErrorCode::BadRequest, "version must be a positive integer"));
    }
    let set =
        service::read(&state.db, &state.master_key, caller.0.service.into_inner(), params.version).await?;
    Ok(no_store(HttpResponse::Ok(), &set))
}

/// List secret versions
///
/// An admin, or the service itself. Version numbers, when and by whom they were made; never values.
#[utoipa::path(
    get, path = "/secrets/{serviceName}/versions", operation_id = "listSecretVersions", tag = "Secrets",
    params(("serviceName" = String, Path, description = "Service identifier (1–64 of a-z 0-9 _ -)", example = "service_a", pattern = "^[a-z0-9_-]{1,64}$")),
    responses(
        (status = 200, description = "Versions, newest first", body = VersionList),
        (status = 403, description = "Neither an admin nor the service itself", body = ErrorBody),
        (status = 404, description = "No such service", body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub async fn versions(
    state: web::Data<SecretsState>,
    caller: AdminOrOwner,
) -> ApiResult<web::Json<VersionList>> {
    let service_name = caller.service.into_inner();
    let (current_version, kept) = service::history(&state.db, service_name.clone()).await?;
    let versions = kept.into_iter().map(VersionInfo::from).collect();
    Ok(web::Json(VersionList { service_name, current_version, versions }))
}

/// Writes the next version of `name`'s secrets as one unit of work.
async fn revise(
    state: &SecretsState,
    admin: SteppedUpAdmin,
    origin: Origin,
    name: ServiceName,
    revision: Revision,
) -> Result<SecretSet, SecretsError> {
    let (master, keep) = (state.master_key.clone(), state.max_versions);
    state
        .db
        .change(who(admin.name(), origin), move |tx| {
            service::revise(tx, &master, keep, name.as_str(), revision)
        })
        .await
}

/// Rotate secrets for a service
///
/// Admin only. New version: JWT_SECRET and DB_PASSWORD regenerated, newSecrets applied, other values kept; publishes secrets.rotated.
#[utoipa::path(
    post, path = "/secrets/{serviceName}/rotate", operation_id = "rotateSecretsForService", tag = "Secrets",
    params(("serviceName" = String, Path, description = "Service identifier (1–64 of a-z 0-9 _ -)", example = "service_a", pattern = "^[a-z0-9_-]{1,64}$")),
    request_body(content = Option<RotateRequest>),
    responses(
        (status = 200, description = "The new version", body = SecretSet),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 404, description = "No such service", body = ErrorBody),
        (status = 409, description = "The secrets changed concurrently (version_conflict); retry", body = ErrorBody),
        (status = 422, description = "Invalid secret names or values", body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub async fn rotate(
    state: web::Data<SecretsState>,
    admin: SteppedUpAdmin,
    origin: Origin,
    name: ServiceName,
    body: OptionalJson<RotateRequest>,
) -> ApiResult<HttpResponse> {
    let overrides = body.0.unwrap_or_default().newSecrets.unwrap_or_default();
    validate_values("newSecrets", &overrides)?;
    let set = revise(&state, admin, origin, name, Revision::Rotate { overrides }).await?;
    Ok(no_store(HttpResponse::Ok(), &set))
}

/// Replace secrets (check-and-set)
///
/// Admin only. Writes exactly the given values as a new version if expectedVersion is still current, else 409.
#[utoipa::path(
    put, path = "/secrets/{serviceName}", operation_id = "replaceSecretsForService", tag = "Secrets",
    params(("serviceName" = String, Path, description = "Service identifier (1–64 of a-z 0-9 _ -)", example = "service_a", pattern = "^[a-z0-9_-]{1,64}$")),
    request_body = ReplaceRequest,
    responses(
        (status = 200, description = "The new version", body = SecretSet),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 404, description = "No such service", body = ErrorBody),
        (status = 409, description = "expectedVersion is not current (version_conflict; details.currentVersion)", body = ErrorBody),
        (status = 422, description = "Invalid secret names or values", body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub async fn replace(
    state: web::Data<SecretsState>,
    admin: SteppedUpAdmin,
    origin: Origin,
    name: ServiceName,
    body: Json<ReplaceRequest>,
) -> ApiResult<HttpResponse> {
    let body = body.into_inner();
    validate_values("secrets", &body.secrets)?;
    let revision = Revision::Replace { values: body.secrets, expected: body.expectedVersion };
    let set = revise(&state, admin, origin, name, revision).await?;
    Ok(no_store(HttpResponse::Ok(), &set))
}

/// Delete secrets (restorable)
///
/// Admin only. Hides the service's secrets; POST /secrets/{serviceName}/restore brings them back.
#[utoipa::path(
    delete, path = "/secrets/{serviceName}", operation_id = "deleteSecretsForService", tag = "Secrets",
    params(("serviceName" = String, Path, description = "Service identifier (1–64 of a-z 0-9 _ -)", example = "service_a", pattern = "^[a-z0-9_-]{1,64}$")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 404, description = "No such service", body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub async fn delete(
    state: web::Data<SecretsState>,
    admin: SteppedUpAdmin,
    origin: Origin,
    name: ServiceName,
) -> ApiResult<HttpResponse> {
    state.db.change(who(admin.name(), origin), move |tx| service::delete(tx, name.as_str())).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Restore deleted secrets
///
/// Admin only. Undoes a soft delete; every kept version comes back.
#[utoipa::path(
    post, path = "/secrets/{serviceName}/restore", operation_id = "restoreSecretsForService", tag = "Secrets",
    params(("serviceName" = String, Path, description = "Service identifier (1–64 of a-z 0-9 _ -)", example = "service_a", pattern = "^[a-z0-9_-]{1,64}$")),
    responses(
        (status = 204, description = "Restored"),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 404, description = "Nothing deleted to restore", body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub async fn restore(
    state: web::Data<SecretsState>,
    admin: SteppedUpAdmin,
    origin: Origin,
    name: ServiceName,
) -> ApiResult<HttpResponse> {
    state.db.change(who(admin.name(), origin), move |tx| service::restore(tx, name.as_str())).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Destroy secrets
///
/// Admin only. Irreversibly removes the service's secrets and every version.
#[utoipa::path(
    post, path = "/secrets/{serviceName}/destroy", operation_id = "destroySecretsForService", tag = "Secrets",
    params(("serviceName" = String, Path, description = "Service identifier (1–64 of a-z 0-9 _ -)", example = "service_a", pattern = "^[a-z0-9_-]{1,64}$")),
    responses(
        (status = 204, description = "Destroyed"),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 404, description = "No such service", body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub async fn destroy(
    state: web::Data<SecretsState>,
    admin: SteppedUpAdmin,
    origin: Origin,
    name: ServiceName,
) -> ApiResult<HttpResponse> {
    state.db.change(who(admin.name(), origin), move |tx| service::destroy(tx, name.as_str())).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Generate a new secret
///
/// Admin or service. A cryptographically random secret of 16-1024 characters from an optional alphabet.
#[utoipa::path(
    post, path = "/factory/generate", operation_id = "generateSecret", tag = "Factory",
    request_body(content = Option<GenerateRequest>),
    responses((status = 200, description = "A new secret", body = GenerateResponse), (status = 422, description = "Length or alphabet out of bounds", body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn generate(
    _caller: AdminOrService,
    body: OptionalJson<GenerateRequest>,
) -> ApiResult<HttpResponse> {
    let request = body.0.unwrap_or_default();
    let length = request.length.unwrap_or(32);
    if !(16..=1024).contains(&length) {
        return Err(ApiError::validation("length", "must be between 16 and 1024"));
    }
    let alphabet: Vec<char> = request.alphabet.as_deref().unwrap_or(DEFAULT_ALPHABET).chars().collect();
    let mut distinct = alphabet.clone();
    distinct.sort_unstable();
    distinct.dedup();
    let printable = alphabet.iter().all(|c| c.is_ascii_graphic());
    if distinct.len() != alphabet.len() || alphabet.len() < 2 || !printable {
        return Err(ApiError::validation(
            "alphabet",
            "must be at least 2 distinct printable ASCII characters",
        ));
    }
    // ThreadRng is a CSPRNG (ChaCha) seeded and periodically reseeded from the OS: one draw per
    // character without a system call each, and `gen_range` is unbiased.
    let mut rng = rand::thread_rng();
    let secret: String = (0..length).map(|_| alphabet[rng.gen_range(0..alphabet.len())]).collect();
    Ok(HttpResponse::Ok().insert_header(("cache-control", "no-store")).json(GenerateResponse { secret }))
}

/// Publish secret rotation notification
///
/// Admin only. Receives a rotation notice (the seed's shape) and publishes it as a durable secrets.rotated event with a numeric version; dependent services re-fetch their secrets.
#[utoipa::path(
    post, path = "/notifications", operation_id = "publishNotification", tag = "Notification",
    request_body = NotificationPayload,
    responses(
        (status = 200, description = "Received and published", body = Message,
            example = json!({"message": NOTIFICATION_RECEIVED})),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 422, description = "Invalid service name, rotation time or version (not a whole number)", body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub async fn notification(
    state: web::Data<SecretsState>,
    admin: Admin,
    origin: Origin,
    body: Json<NotificationPayload>,
) -> ApiResult<HttpResponse> {
    let notice = body.into_inner().into_event()?;
    state.db.change(who(admin.name(), origin), move |tx| service::announce(tx, &notice)).await?;
    Ok(HttpResponse::Ok().json(Message { message: NOTIFICATION_RECEIVED.into() }))
}
