//! twofa's endpoints. Each handler states its caller with a guard, reads its input, makes one
//! call into the domain (`service`) and answers.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::service::{self, Account, Proof, Standing, TwofaState};
use super::ROLE_NAME;
use crate::platform::auth::{self, Claims};
use crate::platform::error::{ApiError, ApiResult};
use crate::platform::extract::{Json, OptionalJson};
use crate::platform::guards::{Admin, Origin, StepUp, StepUpCandidate};
use crate::platform::unit::Who;

/// Longest recovery code accepted as typed (with dashes and spaces).
const MAX_RECOVERY_CODE_CHARS: usize = 32;

/// `POST /2fa/enroll` body: needed only while a second factor is active.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    /// A current code of the active factor (required while one is active).
    #[schema(min_length = 6, max_length = 6, pattern = "^[0-9]{6}$")]
    pub code: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Enrollment {
    /// The TOTP secret in base32 (for typing into an authenticator by hand).
    pub secret: String,
    /// `otpauth://totp/FountainAI:<username>?secret=…&issuer=FountainAI` (SHA-1, 6 digits, 30 s).
    pub otpauth_uri: String,
    /// The same URI as a QR code (SVG) for an authenticator app.
    pub qr_svg: String,
}

/// `POST /2fa/activate` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ActivateRequest {
    /// A current code of the enrolled (pending) secret.
    #[schema(min_length = 6, max_length = 6, pattern = "^[0-9]{6}$")]
    pub code: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Activated {
    /// Ten one-time recovery codes, shown only now.
    pub recovery_codes: Vec<String>,
}

/// A second factor: exactly one of `code` and `recoveryCode`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ProofRequest {
    /// A current TOTP code (6 digits).
    #[schema(min_length = 6, max_length = 6, pattern = "^[0-9]{6}$")]
    pub code: Option<String>,
    /// One of the recovery codes shown at activation (each works once).
    #[schema(min_length = 10, max_length = 32)]
    pub recovery_code: Option<String>,
}

/// A user's second factor.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatusView {
    pub username: String,
    /// An active second factor.
    pub enrolled: bool,
    /// An enrolment waiting for its first code.
    pub pending: bool,
    /// RFC 3339, UTC, with `Z`.
    #[serde(with = "crate::platform::time::utc_option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub activated_at: Option<chrono::NaiveDateTime>,
    pub recovery_codes_left: i64,
    /// Set while too many wrong codes lock the factor.
    #[serde(with = "crate::platform::time::utc_option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub locked_until: Option<chrono::NaiveDateTime>,
}

impl StatusView {
    fn new(username: String, standing: Standing) -> Self {
        Self {
            username,
            enrolled: standing.enrolled,
            pending: standing.pending,
            activated_at: standing.activated_at,
            recovery_codes_left: standing.recovery_codes_left,
            locked_until: standing.locked_until,
        }
    }
}

/// The code as entered: six ASCII digits.
fn valid_code(field: &str, code: String) -> ApiResult<String> {
    if code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit()) {
        Ok(code)
    } else {
        Err(ApiError::validation(field, "must be 6 digits"))
    }
}

impl ProofRequest {
    fn into_proof(self) -> ApiResult<Proof> {
        match (self.code, self.recovery_code) {
            (Some(code), None) => Ok(Proof::Code(valid_code("code", code)?)),
            (None, Some(code))
                if code.chars().count() <= MAX_RECOVERY_CODE_CHARS && !code.trim().is_empty() =>
            {
                Ok(Proof::Recovery(code))
            }
            (None, Some(_)) => Err(ApiError::validation(
                "recoveryCode",
                format!("must be 1-{MAX_RECOVERY_CODE_CHARS} characters"),
            )),
            _ => Err(ApiError::validation("code", "give exactly one of code and recoveryCode")),
        }
    }
}

fn account(claims: &Claims) -> ApiResult<Account> {
    let uid = claims.uid.ok_or_else(auth::invalid_token)?;
    Ok(Account { username: claims.sub.clone(), uid })
}

fn who(claims: &Claims, origin: Origin) -> Who {
    Who::new(ROLE_NAME, claims.sub.clone(), origin)
}

/// Usernames as kms stores them: 3-64 of `A-Z a-z 0-9 . _ -`, lower-case.
fn username_of(path: web::Path<String>) -> ApiResult<String> {
    let raw = path.into_inner();
    let valid = (3..=64).contains(&raw.len())
        && raw.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if valid {
        Ok(raw.to_ascii_lowercase())
    } else {
        Err(ApiError::validation("username", "must be 3-64 characters of A-Z a-z 0-9 . _ -"))
    }
}

/// Enrol a TOTP authenticator
///
/// Starts an enrolment: a new secret, inactive until activated. While a factor is active, send a current code.
#[utoipa::path(
    post, path = "/2fa/enroll", operation_id = "enrollTotp", tag = "Two-factor",
    request_body(content = Option<EnrollRequest>, description = "Only while a factor is active"),
    responses(
        (status = 200, description = "The secret, its otpauth URI and a QR code", body = Enrollment),
        (status = 401, description = "Wrong, expired or used code", body = ErrorBody),
        (status = 422, description = "A factor is active and no code was sent", body = ErrorBody),
        (status = 429, description = "Too many wrong codes", body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub async fn enroll(
    state: web::Data<TwofaState>,
    caller: StepUpCandidate,
    origin: Origin,
    body: OptionalJson<EnrollRequest>,
) -> ApiResult<HttpResponse> {
    let code = body.0.unwrap_or_default().code.map(|c| valid_code("code", c)).transpose()?;
    let enrolment = service::enroll(&state, who(&caller.0, origin), account(&caller.0)?, code).await?;
    let p = enrolment.provisioning;
    Ok(HttpResponse::Ok().insert_header(("cache-control", "no-store")).json(Enrollment {
        secret: p.secret,
        otpauth_uri: p.uri,
        qr_svg: p.qr_svg,
    }))
}

/// Activate the enrolled authenticator
///
/// Confirms the enrolment with a current code and returns ten one-time recovery codes, shown only now.
#[utoipa::path(
    post, path = "/2fa/activate", operation_id = "activateTotp", tag = "Two-factor",
    request_body = ActivateRequest,
    responses(
        (status = 200, description = "Active; the recovery codes", body = Activated),
        (status = 401, description = "Wrong or expired code", body = ErrorBody),
        (status = 409, description = "Nothing enrolled", body = ErrorBody),
        (status = 429, description = "Too many wrong codes", body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub async fn activate(
    state: web::Data<TwofaState>,
    caller: StepUpCandidate,
    origin: Origin,
    body: Json<ActivateRequest>,
) -> ApiResult<HttpResponse> {
    let code = valid_code("code", body.into_inner().code)?;
    let codes = service::activate(&state, who(&caller.0, origin), account(&caller.0)?, code).await?;
    Ok(HttpResponse::Ok()
        .insert_header(("cache-control", "no-store"))
        .json(Activated { recovery_codes: codes }))
}

/// Step up with a second factor
///
/// Checks a TOTP code (once per code) or a recovery code (once) and returns a short-lived token with mfa in the same session.
#[utoipa::path(
    post, path = "/2fa/verify", operation_id = "verifyTotp", tag = "Two-factor",
    request_body = ProofRequest,
    responses(
        (status = 200, description = "The step-up token", body = TokenResponse),
        (status = 401, description = "Wrong, expired or used code, or an invalid token", body = ErrorBody),
        (status = 409, description = "No active second factor", body = ErrorBody),
        (status = 429, description = "Too many wrong codes", body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub async fn verify(
    state: web::Data<TwofaState>,
    caller: StepUpCandidate,
    origin: Origin,
    req: HttpRequest,
    body: Json<ProofRequest>,
) -> ApiResult<HttpResponse> {
    let proof = body.into_inner().into_proof()?;
    let token = auth::bearer_token(&req).ok_or_else(auth::invalid_token)?.to_string();
    let issued = service::step_up(&state, who(&caller.0, origin), account(&caller.0)?, proof, token).await?;
    Ok(HttpResponse::Ok().insert_header(("cache-control", "no-store")).json(issued))
}

/// Get your second factor's status
///
/// Whether your account has an active or pending authenticator, recovery codes left, and any lockout.
#[utoipa::path(
    get, path = "/2fa/status", operation_id = "getOwnTwoFactorStatus", tag = "Two-factor",
    responses((status = 200, description = "Your status", body = StatusView)),
    security(("bearer" = []))
)]
pub async fn own_status(
    state: web::Data<TwofaState>,
    caller: StepUpCandidate,
) -> ApiResult<web::Json<StatusView>> {
    let Account { username, uid } = account(&caller.0)?;
    let standing = service::standing(&state, username.clone(), Some(uid)).await?;
    Ok(web::Json(StatusView::new(username, standing)))
}

/// Get a user's second-factor status
///
/// Admin only. Whether the user has an active or pending authenticator, recovery codes left, and any lockout.
#[utoipa::path(
    get, path = "/2fa/status/{username}", operation_id = "getTwoFactorStatus", tag = "Two-factor",
    params(("username" = String, Path, description = "The username", example = "alice")),
    responses(
        (status = 200, description = "The user's status", body = StatusView),
        (status = 403, description = "Not an admin", body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub async fn user_status(
    state: web::Data<TwofaState>,
    _admin: Admin,
    path: web::Path<String>,
) -> ApiResult<web::Json<StatusView>> {
    let username = username_of(path)?;
    let standing = service::standing(&state, username.clone(), None).await?;
    Ok(web::Json(StatusView::new(username, standing)))
}

/// Remove your second factor
///
/// Needs a current code or a recovery code; removes the authenticator and every recovery code.
#[utoipa::path(
    delete, path = "/2fa", operation_id = "disableTotp", tag = "Two-factor",
    request_body = ProofRequest,
    responses(
        (status = 204, description = "Removed"),
        (status = 401, description = "Wrong, expired or used code", body = ErrorBody),
        (status = 409, description = "No active second factor", body = ErrorBody),
        (status = 429, description = "Too many wrong codes", body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub async fn disable(
    state: web::Data<TwofaState>,
    caller: StepUpCandidate,
    origin: Origin,
    body: Json<ProofRequest>,
) -> ApiResult<HttpResponse> {
    let proof = body.into_inner().into_proof()?;
    service::disable(&state, who(&caller.0, origin), account(&caller.0)?, proof).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Reset a user's second factor
///
/// Admin with a step-up token only. Removes the user's authenticator and recovery codes (audited); they enrol again.
#[utoipa::path(
    post, path = "/2fa/users/{username}/reset", operation_id = "resetTwoFactor", tag = "Two-factor",
    params(("username" = String, Path, description = "The username")),
    responses(
        (status = 204, description = "Reset"),
        (status = 403, description = "Not an admin, or no step-up token (mfa_required)", body = ErrorBody),
        (status = 404, description = "No second factor for this user", body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub async fn reset(
    state: web::Data<TwofaState>,
    admin: Admin,
    _step_up: StepUp,
    origin: Origin,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let username = username_of(path)?;
    service::reset(&state, who(&admin.0, origin), username).await?;
    Ok(HttpResponse::NoContent().finish())
}
