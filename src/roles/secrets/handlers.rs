//! Secrets Manager endpoints (seed paths and operationIds), with versions, check-and-set,
//! soft delete, destroy, the secret factory and rotation events.

use std::collections::BTreeMap;
use std::sync::Arc;

use actix_web::{web, HttpRequest, HttpResponse};
use rand::Rng;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::store::{self, SecretVersion};
use super::SecretsState;
use crate::platform::audit::{self, Origin, Outcome};
use crate::platform::auth::{require_admin, require_admin_or_owner, Claims};
use crate::platform::crypto::random_token;
use crate::platform::db::{AnyConnection, DbError};
use crate::platform::error::{ApiError, ApiResult, ErrorCode};
use crate::platform::events;
use crate::platform::extract::{Json, OptionalJson};
use crate::platform::identity::AdminOrService;
use crate::platform::names::validate_service_name;

const ROLE_NAME: &str = "secrets";
const MAX_ENTRIES: usize = 256;
const MAX_VALUE_BYTES: usize = 64 * 1024;
const DEFAULT_ALPHABET: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

pub type SecretMap = BTreeMap<String, String>;

#[derive(Debug, Serialize, ToSchema)]
pub struct SecretResponse {
    pub service_name: String,
    #[schema(value_type = BTreeMap<String, String>)]
    pub secrets: SecretMap,
    pub version: i32,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct VersionParam {
    /// A specific version (default: the current one).
    pub version: Option<i32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VersionInfo {
    pub version: i32,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: chrono::NaiveDateTime,
    pub created_by: String,
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
pub struct RotateRequest {
    /// Values to set in the new version; JWT_SECRET and DB_PASSWORD are regenerated unless given.
    #[schema(value_type = Option<BTreeMap<String, String>>)]
    pub newSecrets: Option<SecretMap>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(non_snake_case)]
pub struct ReplaceRequest {
    /// The complete set of values of the new version.
    #[schema(value_type = BTreeMap<String, String>)]
    pub secrets: SecretMap,
    /// The version the caller read; 409 if it is no longer current.
    pub expectedVersion: i32,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GenerateRequest {
    /// 16–1024 characters (default 32).
    pub length: Option<usize>,
    /// Characters to draw from (at least 2 distinct printable ASCII); default URL-safe base64.
    pub alphabet: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct GenerateResponse {
    pub secret: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(non_snake_case)]
pub struct NotificationPayload {
    pub serviceName: String,
    #[schema(value_type = String, format = DateTime)]
    pub rotationTime: chrono::DateTime<chrono::Utc>,
    pub version: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Message {
    pub message: String,
}

fn seal_context(service: &str, version: i32) -> String {
    format!("secrets:{service}:{version}")
}

fn seal(state: &SecretsState, service: &str, version: i32, values: &SecretMap) -> String {
    seal_with(&state.master_key, service, version, values)
}

fn seal_with(
    master_key: &crate::platform::crypto::MasterKey,
    service: &str,
    version: i32,
    values: &SecretMap,
) -> String {
    let json = serde_json::to_vec(values).unwrap_or_default();
    master_key.seal(&seal_context(service, version), &json)
}

/// Creates a service's secret set with generated defaults unless it has one (start-up bootstrap
/// of a process that serves the secrets role itself).
pub fn ensure_secret_set(platform: &crate::platform::server::Platform, service: &str) -> Result<(), String> {
    let mut conn = platform.db.conn().map_err(|e| e.to_string())?;
    let result = crate::platform::db::transaction(&mut conn, |conn| {
        if store::find_set(conn, service)?.is_some() {
            return Ok(());
        }
        let sealed = seal_with(&platform.master_key, service, 1, &generated_defaults());
        store::create_set(conn, service, &sealed, "bootstrap")?;
        let origin = Origin { addr: "local".into(), request_id: None };
        audit::record(
            conn,
            origin.entry(ROLE_NAME, "bootstrap", "secrets.create", service, Outcome::Success, None),
        )
    });
    result.map_err(|e: DbError| e.to_string())
}

fn open(state: &SecretsState, service: &str, version: &SecretVersion) -> ApiResult<SecretMap> {
    let plain = state
        .master_key
        .open(&seal_context(service, version.version), &version.sealed_values)
        .map_err(ApiError::internal)?;
    serde_json::from_slice(&plain).map_err(ApiError::internal)
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

fn generated_defaults() -> SecretMap {
    SecretMap::from([
        ("JWT_SECRET".to_string(), random_token(32)),
        ("DB_PASSWORD".to_string(), random_token(16)),
    ])
}

fn not_found() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "no secrets for this service")
}

/// Publishes `secrets.rotated` in the transaction of the change (never lost if notify is down).
fn publish_rotation(
    conn: &mut AnyConnection,
    service: &str,
    version: i32,
    reason: &str,
) -> Result<(), DbError> {
    let payload = serde_json::json!({
        "serviceName": service,
        "version": version.to_string(),
        "rotationTime": chrono::Utc::now().to_rfc3339(),
        "reason": reason,
    });
    events::publish(conn, ROLE_NAME, "secrets.rotated", &payload).map(|_| ())
}

/// Create and store secrets for a service
///
/// Admin only. Generates JWT_SECRET and DB_PASSWORD, merged with the optional body; 409 if the service has secrets.
#[utoipa::path(
    post, path = "/secrets/{serviceName}", operation_id = "createSecretsForService", tag = "Secrets",
    params(("serviceName" = String, Path, description = "Service identifier")),
    request_body(content = Option<BTreeMap<String, String>>, description = "Optional name/value pairs"),
    responses(
        (status = 201, description = "Created at version 1", body = SecretResponse),
        (status = 409, description = "The service already has secrets", body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub async fn create(
    state: web::Data<SecretsState>,
    caller: AdminOrService,
    req: HttpRequest,
    path: web::Path<String>,
    body: OptionalJson<SecretMap>,
) -> ApiResult<HttpResponse> {
    require_admin(&caller.0)?;
    let service = path.into_inner();
    validate_service_name("serviceName", &service)?;
    let mut values = generated_defaults();
    if let Some(given) = body.0 {
        validate_values("secrets", &given)?;
        values.extend(given);
    }
    let sealed = seal(&state, &service, 1, &values);
    let origin = Origin::of(&req, &state.trusted_proxies);
    let (name, actor) = (service.clone(), caller.0.sub.clone());
    let created = state
        .db
        .run(move |conn| {
            crate::platform::db::transaction(conn, |conn| {
                store::create_set(conn, &name, &sealed, &actor)?;
                audit::record(
                    conn,
                    origin.entry(ROLE_NAME, &actor, "secrets.create", &name, Outcome::Success, None),
                )
            })
        })
        .await;
    match created {
        Err(DbError::Query(diesel::result::Error::DatabaseError(
            diesel::result::DatabaseErrorKind::UniqueViolation,
            _,
        ))) => {
            return Err(ApiError::new(ErrorCode::Conflict, "this service already has secrets"));
        }
        other => other?,
    }
    Ok(HttpResponse::Created().insert_header(("cache-control", "no-store")).json(SecretResponse {
        service_name: service,
        secrets: values,
        version: 1,
    }))
}

/// Retrieve secrets for a service
///
/// An admin, or the service itself with its own token. The current version, or ?version=N while it is kept.
#[utoipa::path(
    get, path = "/secrets/{serviceName}", operation_id = "getSecretsForService", tag = "Secrets",
    params(("serviceName" = String, Path, description = "Service identifier"), VersionParam),
    responses((status = 200, description = "The secrets", body = SecretResponse), (status = 404, description = "No such service or version", body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn get(
    state: web::Data<SecretsState>,
    caller: AdminOrService,
    path: web::Path<String>,
    params: web::Query<VersionParam>,
) -> ApiResult<HttpResponse> {
    let service = path.into_inner();
    require_admin_or_owner(&caller.0, &service, "these secrets")?;
    if params.version.is_some_and(|v| v < 1) {
        return Err(ApiError::new(ErrorCode::BadRequest, "version must be a positive integer"));
    }
    let (name, wanted) = (service.clone(), params.version);
    let found = state
        .db
        .run(move |conn| {
            let Some(set) = store::find_set(conn, &name)?.filter(|s| s.deleted_at.is_none()) else {
                return Ok(None);
            };
            store::get_version(conn, &name, wanted.unwrap_or(set.current_version))
        })
        .await?;
    let version = found.ok_or_else(not_found)?;
    let secrets = open(&state, &service, &version)?;
    Ok(HttpResponse::Ok().insert_header(("cache-control", "no-store")).json(SecretResponse {
        service_name: service,
        secrets,
        version: version.version,
    }))
}

/// List secret versions
///
/// An admin, or the service itself. Version numbers, when and by whom they were made; never values.
#[utoipa::path(
    get, path = "/secrets/{serviceName}/versions", operation_id = "listSecretVersions", tag = "Secrets",
    params(("serviceName" = String, Path, description = "Service identifier")),
    responses((status = 200, description = "Versions, newest first", body = VersionList), (status = 404, description = "No such service", body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn versions(
    state: web::Data<SecretsState>,
    caller: AdminOrService,
    path: web::Path<String>,
) -> ApiResult<web::Json<VersionList>> {
    let service = path.into_inner();
    require_admin_or_owner(&caller.0, &service, "these secrets")?;
    let name = service.clone();
    let found = state
        .db
        .run(move |conn| {
            let Some(set) = store::find_set(conn, &name)?.filter(|s| s.deleted_at.is_none()) else {
                return Ok(None);
            };
            Ok(Some((set.current_version, store::list_versions(conn, &name)?)))
        })
        .await?;
    let (current_version, list) = found.ok_or_else(not_found)?;
    let versions = list
        .into_iter()
        .map(|v| VersionInfo { version: v.version, created_at: v.created_at, created_by: v.created_by })
        .collect();
    Ok(web::Json(VersionList { service_name: service, current_version, versions }))
}

/// Writes a new version computed from the current values, check-and-set, with its event.
async fn new_version(
    state: web::Data<SecretsState>,
    caller: Claims,
    origin: Origin,
    service: String,
    expected: Option<i32>,
    reason: &'static str,
    next: impl FnOnce(SecretMap) -> SecretMap + Send + 'static,
) -> ApiResult<SecretResponse> {
    let keep = state.max_versions;
    let inner = state.clone();
    let name = service.clone();
    let outcome = state
        .db
        .run(move |conn| {
            crate::platform::db::transaction(conn, |conn| {
                let Some(set) = store::lock_set(conn, &name)?.filter(|s| s.deleted_at.is_none()) else {
                    return Ok(Err(not_found()));
                };
                if expected.is_some_and(|e| e != set.current_version) {
                    let message = format!(
                        "version {} is current, not {}",
                        set.current_version,
                        expected.unwrap_or_default()
                    );
                    return Ok(Err(ApiError::new(ErrorCode::Conflict, message)
                        .with_details(serde_json::json!({ "currentVersion": set.current_version }))));
                }
                let current = store::get_version(conn, &name, set.current_version)?
                    .ok_or_else(|| DbError::Data(format!("secrets of {name}: current version missing")))?;
                let values = match open(&inner, &name, &current) {
                    Ok(values) => next(values),
                    Err(err) => return Ok(Err(err)),
                };
                let version = set.current_version + 1;
                let sealed = seal(&inner, &name, version, &values);
                if !store::advance(conn, &name, set.current_version, &sealed, &caller.sub)? {
                    return Ok(Err(ApiError::new(
                        ErrorCode::Conflict,
                        "the secrets changed concurrently; retry",
                    )));
                }
                store::prune(conn, &name, version, keep)?;
                publish_rotation(conn, &name, version, reason)?;
                let details = serde_json::json!({ "version": version });
                audit::record(
                    conn,
                    origin.entry(ROLE_NAME, &caller.sub, reason, &name, Outcome::Success, Some(details)),
                )?;
                Ok(Ok(SecretResponse { service_name: name.clone(), secrets: values, version }))
            })
        })
        .await?;
    outcome
}

/// Rotate secrets for a service
///
/// Admin only. New version: JWT_SECRET and DB_PASSWORD regenerated, newSecrets applied, other values kept; publishes secrets.rotated.
#[utoipa::path(
    post, path = "/secrets/{serviceName}/rotate", operation_id = "rotateSecretsForService", tag = "Secrets",
    params(("serviceName" = String, Path, description = "Service identifier")),
    request_body(content = Option<RotateRequest>),
    responses((status = 200, description = "The new version", body = SecretResponse), (status = 404, description = "No such service", body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn rotate(
    state: web::Data<SecretsState>,
    caller: AdminOrService,
    req: HttpRequest,
    path: web::Path<String>,
    body: OptionalJson<RotateRequest>,
) -> ApiResult<HttpResponse> {
    require_admin(&caller.0)?;
    let overrides = body.0.unwrap_or_default().newSecrets.unwrap_or_default();
    validate_values("newSecrets", &overrides)?;
    let origin = Origin::of(&req, &state.trusted_proxies);
    let response =
        new_version(state, caller.0, origin, path.into_inner(), None, "secrets.rotate", move |mut values| {
            values.extend(generated_defaults());
            values.extend(overrides);
            values
        })
        .await?;
    Ok(HttpResponse::Ok().insert_header(("cache-control", "no-store")).json(response))
}

/// Replace secrets (check-and-set)
///
/// Admin only. Writes exactly the given values as a new version if expectedVersion is still current, else 409.
#[utoipa::path(
    put, path = "/secrets/{serviceName}", operation_id = "replaceSecretsForService", tag = "Secrets",
    params(("serviceName" = String, Path, description = "Service identifier")),
    request_body = ReplaceRequest,
    responses(
        (status = 200, description = "The new version", body = SecretResponse),
        (status = 409, description = "expectedVersion is not current", body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub async fn replace(
    state: web::Data<SecretsState>,
    caller: AdminOrService,
    req: HttpRequest,
    path: web::Path<String>,
    body: Json<ReplaceRequest>,
) -> ApiResult<HttpResponse> {
    require_admin(&caller.0)?;
    let body = body.into_inner();
    validate_values("secrets", &body.secrets)?;
    let origin = Origin::of(&req, &state.trusted_proxies);
    let values = body.secrets;
    let response = new_version(
        state,
        caller.0,
        origin,
        path.into_inner(),
        Some(body.expectedVersion),
        "secrets.replace",
        move |_| values,
    )
    .await?;
    Ok(HttpResponse::Ok().insert_header(("cache-control", "no-store")).json(response))
}

async fn change_state(
    state: web::Data<SecretsState>,
    caller: AdminOrService,
    req: HttpRequest,
    service: String,
    action: &'static str,
    change: fn(&mut AnyConnection, &str) -> Result<bool, DbError>,
) -> ApiResult<bool> {
    require_admin(&caller.0)?;
    let origin = Origin::of(&req, &state.trusted_proxies);
    let actor = caller.0.sub;
    Ok(state
        .db
        .run(move |conn| {
            crate::platform::db::transaction(conn, |conn| {
                let changed = change(conn, &service)?;
                if changed {
                    audit::record(
                        conn,
                        origin.entry(ROLE_NAME, &actor, action, &service, Outcome::Success, None),
                    )?;
                }
                Ok(changed)
            })
        })
        .await?)
}

/// Delete secrets (restorable)
///
/// Admin only. Hides the service's secrets; POST /secrets/{serviceName}/restore brings them back.
#[utoipa::path(
    delete, path = "/secrets/{serviceName}", operation_id = "deleteSecretsForService", tag = "Secrets",
    params(("serviceName" = String, Path, description = "Service identifier")),
    responses((status = 204, description = "Deleted"), (status = 404, description = "No such service", body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn delete(
    state: web::Data<SecretsState>,
    caller: AdminOrService,
    req: HttpRequest,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    if !change_state(state, caller, req, path.into_inner(), "secrets.delete", |c, s| {
        store::set_deleted(c, s, true)
    })
    .await?
    {
        return Err(not_found());
    }
    Ok(HttpResponse::NoContent().finish())
}

/// Restore deleted secrets
///
/// Admin only. Undoes a soft delete; every kept version comes back.
#[utoipa::path(
    post, path = "/secrets/{serviceName}/restore", operation_id = "restoreSecretsForService", tag = "Secrets",
    params(("serviceName" = String, Path, description = "Service identifier")),
    responses((status = 204, description = "Restored"), (status = 404, description = "Nothing deleted to restore", body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn restore(
    state: web::Data<SecretsState>,
    caller: AdminOrService,
    req: HttpRequest,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    if !change_state(state, caller, req, path.into_inner(), "secrets.restore", |c, s| {
        store::set_deleted(c, s, false)
    })
    .await?
    {
        return Err(ApiError::new(ErrorCode::NotFound, "no deleted secrets for this service"));
    }
    Ok(HttpResponse::NoContent().finish())
}

/// Destroy secrets
///
/// Admin only. Irreversibly removes the service's secrets and every version.
#[utoipa::path(
    post, path = "/secrets/{serviceName}/destroy", operation_id = "destroySecretsForService", tag = "Secrets",
    params(("serviceName" = String, Path, description = "Service identifier")),
    responses((status = 204, description = "Destroyed"), (status = 404, description = "No such service", body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn destroy(
    state: web::Data<SecretsState>,
    caller: AdminOrService,
    req: HttpRequest,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    if !change_state(state, caller, req, path.into_inner(), "secrets.destroy", store::destroy).await? {
        return Err(not_found());
    }
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
/// Admin only. Forwards a rotation notice to the Notification Service as a durable secrets.rotated event.
#[utoipa::path(
    post, path = "/notifications", operation_id = "publishNotification", tag = "Notification",
    request_body = NotificationPayload,
    responses((status = 202, description = "Forwarded", body = Message)),
    security(("bearer" = []))
)]
pub async fn notification(
    state: web::Data<SecretsState>,
    caller: AdminOrService,
    body: Json<NotificationPayload>,
) -> ApiResult<HttpResponse> {
    require_admin(&caller.0)?;
    let body = body.into_inner();
    validate_service_name("serviceName", &body.serviceName)?;
    let payload = serde_json::json!({
        "serviceName": body.serviceName,
        "version": body.version,
        "rotationTime": body.rotationTime.to_rfc3339(),
        "reason": "notification",
    });
    state.db.run(move |conn| events::publish(conn, ROLE_NAME, "secrets.rotated", &payload)).await?;
    Ok(HttpResponse::Accepted().json(Message {
        message: "Notification published; dependent services will re-fetch their secrets.".into(),
    }))
}

/// The state these handlers share.
pub fn state_from(ctx: &crate::platform::server::RoleContext) -> SecretsState {
    SecretsState {
        db: ctx.db.clone(),
        master_key: Arc::clone(&ctx.master_key),
        trusted_proxies: ctx.config.server.trusted_proxies.clone(),
        max_versions: ctx.config.secrets.max_versions.max(1) as i32,
        keys: web::Data::new(crate::platform::identity::RemoteKeys::from_config(&ctx.config)),
    }
}
