//! Typed guards: a handler's signature states who may call it. Each guard verifies the bearer
//! token through the process's one [`Verifier`] (signature, claims, revocation) and then checks
//! the exact role it names; no handler checks roles by hand.
//!
//! - [`Authenticated`]: any valid token (a user or a service).
//! - [`Admin`]: the exact role `admin`.
//! - [`Service`]: a service token (client credentials).
//! - [`AdminOrService`]: either of the two.
//! - [`AdminOrOwner`]: an admin, or the service named by the path's `{serviceName}` itself.
//! - [`StepUp`]: a token carrying the twofa step-up claim (`mfa: true`).
//! - [`SteppedUpAdmin`], [`SteppedUpAdminOrOwner`]: an admin who stepped up — privileged changes
//!   and plaintext reads of keys and secrets need it at the role itself, not only at the gateway.
//! - [`StepUpCandidate`]: a user's token, including one that still owes the second factor its
//!   account's policy requires (twofa's enrolment and verification).
//! - [`AnyToken`]: any valid token, that one included (logout).
//! - [`MaybeAuthenticated`]: anonymous, or a valid token (a present token must be valid).
//!
//! Beside them: [`Origin`] (client address and request id for the audit trail) and
//! [`ServiceName`] (a validated `{serviceName}` / `{service_name}` path segment).

use std::future::{ready, Ready};
use std::net::IpAddr;

use actix_web::dev::Payload;
use actix_web::{web, FromRequest, HttpRequest};
use futures_util::future::LocalBoxFuture;

use super::auth::{self, Claims};
use super::crypto::constant_time_eq;
use super::error::{ApiError, ErrorCode};
use super::trust::Verifier;

/// The peers whose forwarding headers are believed (the gateway, Caddy), as app data.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(pub Vec<IpAddr>);

fn verifier(req: &HttpRequest) -> Result<web::Data<Verifier>, ApiError> {
    req.app_data::<web::Data<Verifier>>().cloned().ok_or_else(|| ApiError::internal("token verifier missing"))
}

fn bearer_required() -> ApiError {
    ApiError::new(ErrorCode::Unauthorized, "a bearer token is required")
}

/// Verifies the request's bearer token, if it has one, whatever its step-up state.
fn verify_any(req: &HttpRequest) -> LocalBoxFuture<'static, Result<Option<Claims>, ApiError>> {
    let token = auth::bearer_token(req).map(str::to_string);
    let verifier = verifier(req);
    Box::pin(async move {
        let Some(token) = token else { return Ok(None) };
        Ok(Some(verifier?.verify(&token).await?))
    })
}

/// Verifies the request's bearer token, if it has one. A token that still owes its account's
/// second factor is refused here, so that every guard but [`StepUpCandidate`] refuses it.
fn verify_optional(req: &HttpRequest) -> LocalBoxFuture<'static, Result<Option<Claims>, ApiError>> {
    let verified = verify_any(req);
    Box::pin(async move {
        match verified.await? {
            Some(claims) if claims.step_up_pending() => Err(auth::mfa_required(
                "this account needs a second factor first: enrol and step up with twofa",
            )),
            other => Ok(other),
        }
    })
}

/// Verifies the request's bearer token; a request without one is refused.
fn verify_required(req: &HttpRequest) -> LocalBoxFuture<'static, Result<Claims, ApiError>> {
    let verified = verify_optional(req);
    Box::pin(async move { verified.await?.ok_or_else(bearer_required) })
}

/// Declares a guard over verified claims: `$check` says whether the claims may pass, `$refusal`
/// what a valid token that may not pass gets.
macro_rules! claims_guard {
    ($(#[$doc:meta])* $name:ident, $check:expr, $refusal:expr) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub struct $name(pub Claims);

        impl FromRequest for $name {
            type Error = ApiError;
            type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

            fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
                let verified = verify_required(req);
                Box::pin(async move {
                    let claims = verified.await?;
                    let allowed: fn(&Claims) -> bool = $check;
                    if allowed(&claims) {
                        Ok($name(claims))
                    } else {
                        Err($refusal)
                    }
                })
            }
        }
    };
}

claims_guard!(
    /// Any valid, unrevoked token of an enabled account or a service.
    Authenticated,
    |_| true,
    ApiError::from_code(ErrorCode::Forbidden)
);
claims_guard!(
    /// A caller holding the exact role `admin`.
    Admin,
    Claims::is_admin,
    ApiError::new(ErrorCode::Forbidden, "this requires the admin role")
);
claims_guard!(
    /// A service calling with its own service token.
    Service,
    Claims::is_service,
    ApiError::new(ErrorCode::Forbidden, "this requires a service token")
);
claims_guard!(
    /// An admin or a service.
    AdminOrService,
    |c| c.is_admin() || c.is_service(),
    ApiError::new(ErrorCode::Forbidden, "this requires an admin or a service token")
);
claims_guard!(
    /// A caller who proved a second factor (the twofa step-up claim `mfa: true`).
    StepUp,
    |c| c.mfa == Some(true),
    auth::mfa_required(ErrorCode::MfaRequired.default_message())
);

/// The refusal of an admin's token that has not been stepped up.
fn step_up_first() -> ApiError {
    auth::mfa_required("this needs a step-up token: verify a second factor with twofa first")
}

/// An admin who proved a second factor (`mfa: true`): what a privileged change needs at the role
/// itself, so that the gateway's `mfa` rule is a second layer and not the only one.
#[derive(Debug)]
pub struct SteppedUpAdmin(pub Claims);

impl FromRequest for SteppedUpAdmin {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let verified = verify_required(req);
        Box::pin(async move {
            let claims = verified.await?;
            if !claims.is_admin() {
                return Err(ApiError::new(ErrorCode::Forbidden, "this requires the admin role"));
            }
            if claims.mfa != Some(true) {
                return Err(step_up_first());
            }
            Ok(SteppedUpAdmin(claims))
        })
    }
}

/// Any valid token, including one that still owes its second factor: logging out is always
/// allowed.
#[derive(Debug)]
pub struct AnyToken(pub Claims);

impl FromRequest for AnyToken {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let verified = verify_any(req);
        Box::pin(async move { Ok(AnyToken(verified.await?.ok_or_else(bearer_required)?)) })
    }
}

/// A user's token (never a service's), including one that still owes the second factor its
/// account's policy requires: what twofa's enrolment and verification, and logout, take.
#[derive(Debug)]
pub struct StepUpCandidate(pub Claims);

impl FromRequest for StepUpCandidate {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let verified = verify_any(req);
        Box::pin(async move {
            let claims = verified.await?.ok_or_else(bearer_required)?;
            if claims.is_service() || claims.uid.is_none() {
                return Err(ApiError::new(ErrorCode::Forbidden, "this requires a user's token"));
            }
            Ok(StepUpCandidate(claims))
        })
    }
}

impl Admin {
    pub fn name(&self) -> &str {
        &self.0.sub
    }
}

impl SteppedUpAdmin {
    pub fn name(&self) -> &str {
        &self.0.sub
    }
}

/// Anonymous, or a valid token: a token that is present must be valid (a forged admin token is
/// an error, not an anonymous request).
#[derive(Debug)]
pub struct MaybeAuthenticated(pub Option<Claims>);

impl FromRequest for MaybeAuthenticated {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let verified = verify_optional(req);
        Box::pin(async move { Ok(MaybeAuthenticated(verified.await?)) })
    }
}

impl MaybeAuthenticated {
    /// The caller's claims when the caller is an admin.
    pub fn admin(&self) -> Option<&Claims> {
        self.0.as_ref().filter(|c| c.is_admin())
    }
}

/// A service name from the path: `{serviceName}` (seed paths) or `{service_name}` (kms).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceName(String);

impl ServiceName {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

impl std::fmt::Display for ServiceName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn service_name_of(req: &HttpRequest) -> Result<ServiceName, ApiError> {
    let (field, raw) = ["serviceName", "service_name", "service"]
        .iter()
        .find_map(|field| req.match_info().get(field).map(|v| (*field, v)))
        .ok_or_else(|| ApiError::internal("route has no service name segment"))?;
    super::names::validate_service_name(field, raw)?;
    Ok(ServiceName(raw.to_string()))
}

impl FromRequest for ServiceName {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(service_name_of(req))
    }
}

/// An admin, or the service the path names calling with its own token (compared in constant
/// time). Carries the validated service name.
#[derive(Debug)]
pub struct AdminOrOwner {
    pub claims: Claims,
    pub service: ServiceName,
}

impl FromRequest for AdminOrOwner {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        admin_or_owner(req, false)
    }
}

/// Like [`AdminOrOwner`], but an admin must have stepped up: reading another service's key or
/// secret values in plaintext is as privileged as changing them. The owning service needs no
/// second factor for its own.
#[derive(Debug)]
pub struct SteppedUpAdminOrOwner(pub AdminOrOwner);

impl FromRequest for SteppedUpAdminOrOwner {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let checked = admin_or_owner(req, true);
        Box::pin(async move { checked.await.map(SteppedUpAdminOrOwner) })
    }
}

fn admin_or_owner(
    req: &HttpRequest,
    admin_needs_step_up: bool,
) -> LocalBoxFuture<'static, Result<AdminOrOwner, ApiError>> {
    let service = service_name_of(req);
    let verified = verify_required(req);
    Box::pin(async move {
        let claims = verified.await?;
        let service = service?;
        let owner =
            claims.is_service() && constant_time_eq(claims.sub.as_bytes(), service.as_str().as_bytes());
        if owner {
            return Ok(AdminOrOwner { claims, service });
        }
        if !claims.is_admin() {
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                "only an admin or the owning service may do this",
            ));
        }
        if admin_needs_step_up && claims.mfa != Some(true) {
            return Err(step_up_first());
        }
        Ok(AdminOrOwner { claims, service })
    })
}

/// Where a request came from, captured on the request thread so that audit records written on
/// the database thread still name the client address and request id.
#[derive(Debug, Clone)]
pub struct Origin {
    pub addr: String,
    pub request_id: Option<String>,
}

impl Origin {
    /// For changes made outside a request (the command line, start-up provisioning).
    pub fn local(what: &str) -> Self {
        Self { addr: what.to_string(), request_id: None }
    }

    pub fn of(req: &HttpRequest) -> Self {
        let trusted = req.app_data::<TrustedProxies>().map(|t| t.0.as_slice()).unwrap_or_default();
        Self {
            addr: super::net::client_addr(req, trusted),
            request_id: super::logging::current_context().map(|c| c.request_id.to_string()),
        }
    }
}

impl FromRequest for Origin {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(Ok(Origin::of(req)))
    }
}
