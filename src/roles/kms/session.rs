//! Tokens: issuing, refreshing (rotating refresh tokens with reuse detection), client
//! credentials for services, logout, the JWKS and signing-key rotation.

use actix_web::dev::Payload;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::caller::{Admin, Caller};
use super::keys::{check_key, VerifyCode};
use super::state::KmsState;
use super::{publish, store, ROLE_NAME};
use crate::platform::audit::{self, Origin, Outcome};
use crate::platform::auth::{Claims, LEEWAY_SECONDS, SERVICE_ROLE};
use crate::platform::crypto::random_token;
use crate::platform::error::{ApiError, ApiResult, ErrorCode};
use crate::platform::extract::{parse_json, read_limited, BodyLimit};

const REFRESH_CONTEXT: &str = "kms-refresh-token";
const REFRESH_PREFIX: &str = "frt_";

#[derive(Debug, Serialize, ToSchema)]
pub struct TokenResponse {
    pub access_token: String,
    #[schema(example = "bearer")]
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    /// Present for user sessions; each use returns a new one and retires the old.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
}

/// `POST /token` body, as OAuth 2 form fields or JSON.
#[derive(Debug, Deserialize, ToSchema)]
pub struct TokenRequest {
    /// `refresh_token` or `client_credentials`.
    pub grant_type: String,
    pub refresh_token: Option<String>,
    /// The service name (optional; the key identifies the service).
    pub client_id: Option<String>,
    /// The service's API key.
    pub client_secret: Option<String>,
    /// Alias of `client_secret`.
    pub api_key: Option<String>,
}

fn unix_now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Signs an access token for `sub` with `roles`.
fn access_token(
    state: &KmsState,
    sub: &str,
    roles: Vec<String>,
    ttl: u64,
    sid: Option<String>,
) -> ApiResult<String> {
    let now = unix_now();
    let claims = Claims {
        sub: sub.to_string(),
        roles,
        iss: state.config.issuer.clone(),
        aud: state.config.audience.clone(),
        exp: now + ttl as i64,
        iat: now,
        nbf: now,
        jti: uuid::Uuid::new_v4().to_string(),
        mfa: None,
        sid,
    };
    state.keys.sign(&claims).map_err(ApiError::internal)
}

fn refresh_expiry(state: &KmsState) -> chrono::NaiveDateTime {
    store::now() + chrono::Duration::seconds(state.config.refresh_token_ttl_seconds as i64)
}

/// Starts a login session: a new refresh-token family and its first access token.
pub async fn issue_session(
    state: &web::Data<KmsState>,
    username: &str,
    roles: Vec<String>,
    origin: Origin,
) -> ApiResult<TokenResponse> {
    let family = uuid::Uuid::new_v4().to_string();
    let refresh = format!("{REFRESH_PREFIX}{}", random_token(32));
    let hash = state.master_key.lookup_hash(REFRESH_CONTEXT, refresh.as_bytes());
    let expires = refresh_expiry(state);
    let (user, fam) = (username.to_string(), family.clone());
    state
        .db
        .run(move |conn| {
            crate::platform::db::transaction(conn, |conn| {
                store::insert_refresh(conn, &hash, &fam, &user, expires)?;
                audit::record(conn, origin.entry(ROLE_NAME, &user, "login", &user, Outcome::Success, None))
            })
        })
        .await?;
    let ttl = state.config.access_token_ttl_seconds;
    let access = access_token(state, username, roles, ttl, Some(family))?;
    state.metrics.tokens_issued.with_label_values(&["password"]).inc();
    Ok(TokenResponse {
        access_token: access,
        token_type: "bearer",
        expires_in: ttl,
        refresh_token: Some(refresh),
    })
}

/// Exchange a refresh token or an API key for a token
///
/// grant_type=refresh_token rotates the refresh token (reusing a used one revokes its session); grant_type=client_credentials turns a service API key into a short-lived service token.
#[utoipa::path(
    post, path = "/token", operation_id = "issueToken", tag = "Sessions",
    request_body(content = TokenRequest, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "A new token", body = TokenResponse),
        (status = 400, description = "Unknown grant type or missing field", body = ErrorBody),
        (status = 401, description = "Invalid, expired, reused or revoked credential", body = ErrorBody)
    )
)]
pub async fn token(
    state: web::Data<KmsState>,
    req: HttpRequest,
    payload: web::Payload,
) -> ApiResult<HttpResponse> {
    let request = read_token_request(&req, &mut payload.into_inner()).await?;
    let origin = Origin::of(&req, &state.trusted_proxies);
    let response = match request.grant_type.as_str() {
        "refresh_token" => {
            let token =
                request.refresh_token.ok_or_else(|| ApiError::validation("refresh_token", "is required"))?;
            refresh(&state, token, origin).await?
        }
        "client_credentials" => {
            let key = request
                .client_secret
                .or(request.api_key)
                .ok_or_else(|| ApiError::validation("client_secret", "is required"))?;
            client_credentials(&state, key, request.client_id).await?
        }
        _ => {
            return Err(ApiError::new(
                ErrorCode::BadRequest,
                "grant_type must be refresh_token or client_credentials",
            ))
        }
    };
    Ok(HttpResponse::Ok().insert_header(("cache-control", "no-store")).json(response))
}

async fn read_token_request(req: &HttpRequest, payload: &mut Payload) -> ApiResult<TokenRequest> {
    let limit = req.app_data::<BodyLimit>().map_or(64 * 1024, |l| l.0);
    let content_type = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let body = read_limited(payload, limit).await?;
    match content_type.as_str() {
        "application/x-www-form-urlencoded" => serde_urlencoded::from_bytes(&body)
            .map_err(|_| ApiError::new(ErrorCode::BadRequest, "the form body is not valid")),
        "application/json" => parse_json(&body),
        _ => Err(ApiError::from_code(ErrorCode::UnsupportedMediaType)),
    }
}

fn invalid_grant() -> ApiError {
    ApiError::new(ErrorCode::Unauthorized, "the credential is invalid, expired or revoked")
}

async fn refresh(state: &web::Data<KmsState>, token: String, origin: Origin) -> ApiResult<TokenResponse> {
    let hash = state.master_key.lookup_hash(REFRESH_CONTEXT, token.as_bytes());
    let next = format!("{REFRESH_PREFIX}{}", random_token(32));
    let next_hash = state.master_key.lookup_hash(REFRESH_CONTEXT, next.as_bytes());
    let expires = refresh_expiry(state);
    let outcome = state
        .db
        .run(move |conn| {
            crate::platform::db::transaction(conn, |conn| {
                let Some(stored) = store::find_refresh(conn, &hash)? else { return Ok(Err("unknown")) };
                if stored.revoked_at.is_some() || stored.expires_at < store::now() {
                    return Ok(Err("revoked or expired"));
                }
                let user = store::find_user(conn, &stored.username)?.filter(|u| !u.disabled);
                let won = store::claim_refresh(conn, &hash)?;
                if stored.used_at.is_some() || !won || user.is_none() {
                    // A used token coming back means it leaked: end the whole session.
                    store::revoke_family(conn, &stored.family_id)?;
                    let revoked = serde_json::json!({"username": stored.username, "sid": stored.family_id});
                    publish(conn, "sessions.revoked", revoked)?;
                    let action = if user.is_none() { "refresh.disabled" } else { "refresh.reuse" };
                    let entry = origin.entry(
                        ROLE_NAME,
                        &stored.username,
                        action,
                        &stored.family_id,
                        Outcome::Denied,
                        None,
                    );
                    audit::record(conn, entry)?;
                    return Ok(Err(action));
                }
                let user = user.expect("checked above");
                store::insert_refresh(conn, &next_hash, &stored.family_id, &stored.username, expires)?;
                Ok(Ok((user.username.clone(), user.role_list(), stored.family_id)))
            })
        })
        .await?;
    let (username, roles, family) = outcome.map_err(|reason| {
        log::info!(target: "fountain::kms", reason = reason; "refresh refused");
        invalid_grant()
    })?;
    let ttl = state.config.access_token_ttl_seconds;
    let access = access_token(state, &username, roles, ttl, Some(family))?;
    state.metrics.tokens_issued.with_label_values(&["refresh_token"]).inc();
    Ok(TokenResponse {
        access_token: access,
        token_type: "bearer",
        expires_in: ttl,
        refresh_token: Some(next),
    })
}

async fn client_credentials(
    state: &web::Data<KmsState>,
    key: String,
    client_id: Option<String>,
) -> ApiResult<TokenResponse> {
    let verdict = check_key(state, key).await?;
    let service = match (verdict.code, verdict.service_name) {
        (VerifyCode::Valid, Some(service)) => service,
        _ => return Err(invalid_grant()),
    };
    if client_id.is_some_and(|id| id != service) {
        return Err(invalid_grant());
    }
    let ttl = state.config.service_token_ttl_seconds;
    let access = access_token(state, &service, vec![SERVICE_ROLE.to_string()], ttl, None)?;
    state.metrics.tokens_issued.with_label_values(&["client_credentials"]).inc();
    Ok(TokenResponse { access_token: access, token_type: "bearer", expires_in: ttl, refresh_token: None })
}

/// Log out
///
/// Revokes the presented access token until it expires and ends its session's refresh tokens.
#[utoipa::path(
    post, path = "/logout", operation_id = "logoutUser", tag = "Sessions",
    responses((status = 204, description = "Logged out"), (status = 401, description = "No valid token", body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn logout(state: web::Data<KmsState>, req: HttpRequest, caller: Caller) -> ApiResult<HttpResponse> {
    let claims = caller.0;
    let origin = Origin::of(&req, &state.trusted_proxies);
    let expires = chrono::DateTime::from_timestamp(claims.exp + LEEWAY_SECONDS as i64, 0)
        .map(|t| t.naive_utc())
        .unwrap_or_else(store::now);
    state
        .db
        .run(move |conn| {
            crate::platform::db::transaction(conn, |conn| {
                store::purge_expired(conn)?;
                store::revoke_jti(conn, &claims.jti, expires)?;
                if let Some(family) = &claims.sid {
                    store::revoke_family(conn, family)?;
                }
                let revoked = serde_json::json!({"jti": claims.jti, "sub": claims.sub, "exp": claims.exp, "sid": claims.sid});
                publish(conn, "tokens.revoked", revoked)?;
                audit::record(
                    conn,
                    origin.entry(ROLE_NAME, &claims.sub, "logout", &claims.sub, Outcome::Success, None),
                )
            })
        })
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Get the JSON Web Key Set
///
/// The public Ed25519 keys (kid, alg EdDSA) that verify fountain tokens; refetch on an unknown kid.
#[utoipa::path(
    get, path = "/.well-known/jwks.json", operation_id = "getJwks", tag = "Sessions",
    responses((status = 200, description = "JWK Set", content_type = "application/json"))
)]
pub async fn jwks(state: web::Data<KmsState>) -> HttpResponse {
    HttpResponse::Ok().insert_header(("cache-control", "public, max-age=300")).json(state.keys.jwks())
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RotatedSigningKey {
    /// The key id that signs from now on.
    pub kid: String,
}

/// Rotate the token signing key
///
/// Admin only. A new Ed25519 key signs from now on; the old one stays in the JWKS until its tokens expire.
#[utoipa::path(
    post, path = "/signing-keys/rotate", operation_id = "rotateSigningKey", tag = "Sessions",
    responses((status = 200, description = "Rotated", body = RotatedSigningKey), (status = 403, description = "Not an admin", body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn rotate_signing_key(
    state: web::Data<KmsState>,
    req: HttpRequest,
    admin: Admin,
) -> ApiResult<web::Json<RotatedSigningKey>> {
    let origin = Origin::of(&req, &state.trusted_proxies);
    let longest = state.config.access_token_ttl_seconds.max(state.config.service_token_ttl_seconds);
    let publish_for = chrono::Duration::seconds((longest + 2 * LEEWAY_SECONDS) as i64);
    let inner = state.clone();
    let kid = state
        .db
        .run(move |conn| {
            let kid = inner.keys.rotate(conn, &inner.master_key, publish_for).map_err(|e| e.into_db())?;
            publish(conn, "signingkeys.rotated", serde_json::json!({ "kid": kid }))?;
            audit::record(
                conn,
                origin.entry(ROLE_NAME, &admin.0.sub, "signingkeys.rotate", &kid, Outcome::Success, None),
            )?;
            Ok(kid)
        })
        .await?;
    Ok(web::Json(RotatedSigningKey { kid }))
}
