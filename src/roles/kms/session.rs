//! Tokens: issuing, refreshing (rotating refresh tokens with reuse detection), client
//! credentials for services, logout, the JWKS and signing-key rotation.

use actix_web::dev::Payload;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::keys::{check_key, VerifyCode};
use super::state::KmsState;
use super::{signing, store, ROLE_NAME};
use crate::platform::audit::Outcome;
use crate::platform::auth::{Claims, LEEWAY_SECONDS, SERVICE_ROLE};
pub use crate::platform::contracts::TokenResponse;
use crate::platform::contracts::{SessionRevoked, SigningKeyRotated, StepUpGrant, TokenRevoked};
use crate::platform::crypto::random_token;
use crate::platform::db::DbError;
use crate::platform::error::{ApiError, ApiResult, ErrorCode};
use crate::platform::extract::{parse_json, read_limited, BodyLimit};
use crate::platform::guards::{AnyToken, Origin, Service, SteppedUpAdmin};
use crate::platform::unit::Who;

const REFRESH_CONTEXT: &str = "kms-refresh-token";
const REFRESH_PREFIX: &str = "frt_";

/// `POST /token` body, as OAuth 2 form fields or JSON.
#[derive(Debug, Deserialize, ToSchema)]
pub struct TokenRequest {
    /// `refresh_token` or `client_credentials`; any other grant is a 400.
    #[schema(value_type = GrantType)]
    pub grant_type: String,
    pub refresh_token: Option<String>,
    /// The service name (optional; the key identifies the service).
    pub client_id: Option<String>,
    /// The service's API key.
    pub client_secret: Option<String>,
    /// Alias of `client_secret`.
    pub api_key: Option<String>,
}

/// The grants `POST /token` issues tokens for, as its OpenAPI document lists them. The handler
/// reads `grant_type` as text so that an unknown grant gets OAuth's 400, not a 422.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum GrantType {
    RefreshToken,
    ClientCredentials,
}

fn unix_now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Whose token is signed: a user account (its identity and token epoch) or a service (the API
/// key it authenticated with). Every role's verifier checks these against kms's events.
enum Subject<'a> {
    User(&'a store::User),
    Service { name: &'a str, key_id: i64 },
}

/// The claims of a new access token for `subject`.
fn claims_for(state: &KmsState, subject: Subject<'_>, ttl: u64, sid: Option<String>) -> Claims {
    let now = unix_now();
    let (sub, roles, uid, epoch, akid) = match subject {
        Subject::User(user) => {
            (user.username.clone(), user.role_list(), Some(user.id), Some(user.token_epoch), None)
        }
        Subject::Service { name, key_id } => {
            (name.to_string(), vec![SERVICE_ROLE.to_string()], None, None, Some(key_id))
        }
    };
    Claims {
        sub,
        roles,
        iss: state.issuer.clone(),
        aud: state.audience.clone(),
        exp: now + ttl as i64,
        iat: now,
        nbf: now,
        jti: uuid::Uuid::new_v4().to_string(),
        mfa: None,
        sid,
        uid,
        epoch,
        akid,
        amr: None,
        mfa_pending: None,
    }
}

/// Signs an access token for `subject`. A user whose roles require a second factor gets a
/// token that reaches only twofa and logout (`mfa_pending`) until it steps up.
fn access_token(state: &KmsState, subject: Subject<'_>, ttl: u64, sid: Option<String>) -> ApiResult<String> {
    let mut claims = claims_for(state, subject, ttl, sid);
    if claims.uid.is_some() && state.step_up_required_for.iter().any(|role| claims.has_role(role)) {
        claims.mfa_pending = Some(true);
    }
    state.keys.sign(&claims).map_err(ApiError::internal)
}

fn bearer(access_token: String, expires_in: u64, refresh_token: Option<String>) -> TokenResponse {
    TokenResponse { access_token, token_type: "bearer".into(), expires_in, refresh_token }
}

fn refresh_expiry(state: &KmsState) -> chrono::NaiveDateTime {
    store::now() + chrono::Duration::seconds(state.config.refresh_token_ttl_seconds as i64)
}

/// Starts a login session: a new refresh-token family and its first access token.
pub async fn issue_session(
    state: &web::Data<KmsState>,
    user: &store::User,
    origin: Origin,
) -> ApiResult<TokenResponse> {
    let family = uuid::Uuid::new_v4().to_string();
    let refresh = format!("{REFRESH_PREFIX}{}", random_token(32));
    let hash = state.master_key.lookup_hash(REFRESH_CONTEXT, refresh.as_bytes());
    let expires = refresh_expiry(state);
    let (name, fam) = (user.username.clone(), family.clone());
    state
        .db
        .change(Who::new(ROLE_NAME, name.clone(), origin), move |tx| {
            store::insert_refresh(tx.conn(), &hash, &fam, &name, expires)?;
            tx.audit("login", &name, None)
        })
        .await?;
    let ttl = state.config.access_token_ttl_seconds;
    let access = access_token(state, Subject::User(user), ttl, Some(family))?;
    state.metrics.tokens_issued.with_label_values(&["password"]).inc();
    Ok(bearer(access, ttl, Some(refresh)))
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
        (status = 401, description = "Invalid, expired, reused or revoked credential", body = ErrorBody),
        (status = 429, description = "Too many failed logins or client credentials from this address", body = ErrorBody)
    )
)]
pub async fn token(
    state: web::Data<KmsState>,
    req: HttpRequest,
    origin: Origin,
    payload: web::Payload,
) -> ApiResult<HttpResponse> {
    let request = read_token_request(&req, &mut payload.into_inner()).await?;
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
            client_credentials(&state, key, request.client_id, &origin).await?
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

/// Why a refresh was refused (logged, never told to the client).
enum RefreshRefused {
    Unknown,
    RevokedOrExpired,
    Reused,
    AccountGone,
}

impl RefreshRefused {
    fn reason(&self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::RevokedOrExpired => "revoked or expired",
            Self::Reused => "refresh.reuse",
            Self::AccountGone => "refresh.disabled",
        }
    }
}

async fn refresh(state: &web::Data<KmsState>, token: String, origin: Origin) -> ApiResult<TokenResponse> {
    let hash = state.master_key.lookup_hash(REFRESH_CONTEXT, token.as_bytes());
    let next = format!("{REFRESH_PREFIX}{}", random_token(32));
    let next_hash = state.master_key.lookup_hash(REFRESH_CONTEXT, next.as_bytes());
    let expires = refresh_expiry(state);
    // A refusal that ends a session must be committed (the revocation, its event and its audit
    // record), so the unit of work succeeds and carries the refusal as its value.
    let outcome = state
        .db
        .change(Who::new(ROLE_NAME, "anonymous", origin), move |tx| {
            let Some(stored) = store::find_refresh(tx.conn(), &hash)? else {
                return Ok(Err(RefreshRefused::Unknown));
            };
            if stored.revoked_at.is_some() || stored.expires_at < store::now() {
                return Ok(Err(RefreshRefused::RevokedOrExpired));
            }
            let user = store::find_user(tx.conn(), &stored.username)?.filter(|u| !u.disabled);
            let won = store::claim_refresh(tx.conn(), &hash)?;
            let Some(user) = user.filter(|_| stored.used_at.is_none() && won) else {
                // A used token coming back means it leaked: end the whole session.
                let refused = if stored.used_at.is_some() || !won {
                    RefreshRefused::Reused
                } else {
                    RefreshRefused::AccountGone
                };
                store::revoke_family(tx.conn(), &stored.family_id)?;
                tx.publish(&SessionRevoked {
                    username: stored.username.clone(),
                    sid: stored.family_id.clone(),
                })?;
                tx.audit_outcome(refused.reason(), &stored.family_id, Outcome::Denied, None)?;
                return Ok(Err(refused));
            };
            store::insert_refresh(tx.conn(), &next_hash, &stored.family_id, &stored.username, expires)?;
            Ok::<_, DbError>(Ok((user, stored.family_id)))
        })
        .await?;
    let (user, family) = outcome.map_err(|refused| {
        log::info!(target: "fountain::kms", reason = refused.reason(); "refresh refused");
        invalid_grant()
    })?;
    let ttl = state.config.access_token_ttl_seconds;
    let access = access_token(state, Subject::User(&user), ttl, Some(family))?;
    state.metrics.tokens_issued.with_label_values(&["refresh_token"]).inc();
    Ok(bearer(access, ttl, Some(next)))
}

/// A service token for an API key. Refused grants spend the client address's failed-login
/// budget, and an address that has spent it waits (429) before its key is even looked up: the
/// key is a password too.
async fn client_credentials(
    state: &web::Data<KmsState>,
    key: String,
    client_id: Option<String>,
    origin: &Origin,
) -> ApiResult<TokenResponse> {
    if let Err(retry_after) = state.limiter.check_address(&origin.addr) {
        state.metrics.limited.with_label_values(&["client_credentials"]).inc();
        return Err(ApiError::from_code(ErrorCode::RateLimited).with_retry_after(retry_after));
    }
    let refused = || {
        state.limiter.record_address_failure(&origin.addr);
        state.observe_limiters();
        invalid_grant()
    };
    let verdict = check_key(state, key).await?;
    let (service, key_id) = match (verdict.response.code, verdict.response.service_name, verdict.key_id) {
        (VerifyCode::Valid, Some(service), Some(key_id)) => (service, key_id),
        _ => return Err(refused()),
    };
    if client_id.is_some_and(|id| id != service) {
        return Err(refused());
    }
    let ttl = state.config.service_token_ttl_seconds;
    let access = access_token(state, Subject::Service { name: &service, key_id }, ttl, None)?;
    state.metrics.tokens_issued.with_label_values(&["client_credentials"]).inc();
    Ok(bearer(access, ttl, None))
}

/// Log out
///
/// Revokes the presented access token until it expires and ends its session's refresh tokens.
#[utoipa::path(
    post, path = "/logout", operation_id = "logoutUser", tag = "Sessions",
    responses((status = 204, description = "Logged out"), (status = 401, description = "No valid token", body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn logout(state: web::Data<KmsState>, origin: Origin, caller: AnyToken) -> ApiResult<HttpResponse> {
    let claims = caller.0;
    let expires = chrono::DateTime::from_timestamp(claims.exp + LEEWAY_SECONDS as i64, 0)
        .map(|t| t.naive_utc())
        .unwrap_or_else(store::now);
    state
        .db
        .change(Who::new(ROLE_NAME, claims.sub.clone(), origin), move |tx| {
            store::purge_expired(tx.conn())?;
            store::revoke_jti(tx.conn(), &claims.jti, expires)?;
            tx.publish(&TokenRevoked {
                jti: claims.jti.clone(),
                sub: claims.sub.clone(),
                exp: claims.exp,
                sid: claims.sid.clone(),
            })?;
            // Logging out ends the session: its refresh tokens and every access token of it
            // (a refreshed one, a step-up one) stop working too.
            if let Some(sid) = &claims.sid {
                store::revoke_family(tx.conn(), sid)?;
                tx.publish(&SessionRevoked { username: claims.sub.clone(), sid: sid.clone() })?;
            }
            tx.audit("logout", &claims.sub, None)
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
    origin: Origin,
    admin: SteppedUpAdmin,
) -> ApiResult<web::Json<RotatedSigningKey>> {
    let longest = state.config.access_token_ttl_seconds.max(state.config.service_token_ttl_seconds);
    let publish_for = chrono::Duration::seconds((longest + 2 * LEEWAY_SECONDS) as i64);
    let master = state.master_key.clone();
    // The new key, its event and its audit record commit together; it signs only after that.
    let kid = state
        .db
        .change(Who::new(ROLE_NAME, admin.0.sub, origin), move |tx| {
            let kid = signing::rotate(tx.conn(), &master, publish_for).map_err(|e| e.into_db())?;
            tx.publish(&SigningKeyRotated { kid: kid.clone() })?;
            tx.audit("signingkeys.rotate", &kid, None)?;
            Ok::<_, DbError>(kid)
        })
        .await?;
    let reload = state.clone();
    state.db.run(move |conn| reload.keys.reload(conn, &reload.master_key).map_err(|e| e.into_db())).await?;
    Ok(web::Json(RotatedSigningKey { kid }))
}

/// How a step-up token says its holder authenticated (RFC 8176).
const STEP_UP_AMR: [&str; 2] = ["pwd", "otp"];

/// twofa's own service token: the only caller kms signs step-up tokens for.
pub struct StepUpIssuer;

impl actix_web::FromRequest for StepUpIssuer {
    type Error = ApiError;
    type Future = futures_util::future::LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let service = Service::from_request(req, payload);
        Box::pin(async move {
            let Service(claims) = service.await?;
            let issuer = crate::platform::auth::STEP_UP_SERVICE;
            if crate::platform::crypto::constant_time_eq(claims.sub.as_bytes(), issuer.as_bytes()) {
                Ok(StepUpIssuer)
            } else {
                Err(ApiError::new(ErrorCode::Forbidden, "only the twofa service may ask for step-up tokens"))
            }
        })
    }
}

/// Issue a step-up token
///
/// twofa's service token only. Signs a short-lived token with mfa and amr ["pwd","otp"] for the user whose current token twofa forwards, in the same session.
#[utoipa::path(
    post, path = "/step-up", operation_id = "issueStepUpToken", tag = "Sessions",
    request_body = StepUpGrant,
    responses(
        (status = 200, description = "The step-up token", body = TokenResponse),
        (status = 401, description = "The forwarded token is not a user's current, valid token", body = ErrorBody),
        (status = 403, description = "The caller is not the twofa service", body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub async fn step_up(
    state: web::Data<KmsState>,
    verifier: web::Data<crate::platform::trust::Verifier>,
    _issuer: StepUpIssuer,
    origin: Origin,
    body: crate::platform::extract::Json<StepUpGrant>,
) -> ApiResult<HttpResponse> {
    let grant = body.into_inner();
    // The whole trust path: signature, claims, logout, ended sessions, account changes.
    let presented = verifier.verify(&grant.token).await?;
    let (Some(uid), Some(epoch), Some(sid)) = (presented.uid, presented.epoch, presented.sid.clone()) else {
        return Err(crate::platform::auth::invalid_token());
    };
    // A step-up token cannot be stepped up again: that would renew a second factor without the
    // password session behind it. Only a password token of a live session can.
    if presented.is_service() || presented.mfa == Some(true) {
        return Err(crate::platform::auth::invalid_token());
    }
    let name = presented.sub.clone();
    let family = sid.clone();
    let (user, live) = state
        .db
        .run(move |conn| {
            Ok::<_, DbError>((store::find_user(conn, &name)?, store::session_is_live(conn, &family)?))
        })
        .await?;
    if !live {
        return Err(crate::platform::auth::invalid_token());
    }
    // The account as it is now: the same identity, enabled, and no change since the token.
    let user = user
        .filter(|u| u.id == uid && !u.disabled && u.token_epoch == epoch)
        .ok_or_else(crate::platform::auth::invalid_token)?;
    let ttl = grant.ttl_seconds.clamp(1, state.config.access_token_ttl_seconds);
    let mut claims = claims_for(&state, Subject::User(&user), ttl, Some(sid));
    claims.mfa = Some(true);
    claims.amr = Some(STEP_UP_AMR.iter().map(|m| m.to_string()).collect());
    let token = state.keys.sign(&claims).map_err(ApiError::internal)?;
    let (username, jti) = (user.username.clone(), claims.jti.clone());
    state
        .db
        .change(Who::new(ROLE_NAME, crate::platform::auth::STEP_UP_SERVICE, origin), move |tx| {
            tx.audit("token.step_up", &username, Some(serde_json::json!({ "jti": jti })))
        })
        .await?;
    state.metrics.tokens_issued.with_label_values(&["step_up"]).inc();
    Ok(HttpResponse::Ok().insert_header(("cache-control", "no-store")).json(bearer(token, ttl, None)))
}
