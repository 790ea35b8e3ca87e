//! Who is calling kms: extractors whose type states what a handler requires.
//!
//! `Caller` is any valid, unrevoked token of an enabled user or a service; `Admin` additionally
//! holds the exact role `admin`; `MaybeCaller` is for endpoints open to anonymous callers that
//! behave differently for an admin (registration).

use actix_web::dev::Payload;
use actix_web::{web, FromRequest, HttpRequest};
use futures_util::future::LocalBoxFuture;

use super::state::KmsState;
use super::store;
use crate::platform::auth::{self, Claims, Rejection};
use crate::platform::error::{ApiError, ErrorCode};

pub struct Caller(pub Claims);
pub struct Admin(pub Claims);
pub struct MaybeCaller(pub Option<Claims>);

fn kms_state(req: &HttpRequest) -> Result<web::Data<KmsState>, ApiError> {
    req.app_data::<web::Data<KmsState>>().cloned().ok_or_else(|| ApiError::internal("kms state missing"))
}

/// Verifies a bearer token completely: signature, claims, revocation and account state.
pub async fn authenticate(state: web::Data<KmsState>, token: String) -> Result<Claims, ApiError> {
    let claims = match state.verified.verify(&token, |kid| state.keys.decoding_key(kid)) {
        Err(Rejection::UnknownKey) => {
            // Another kms replica may have rotated: reload once before refusing the kid.
            let reload_state = state.clone();
            state
                .db
                .run(move |conn| {
                    reload_state.keys.reload(conn, &reload_state.master_key).map_err(|e| e.into_db())
                })
                .await?;
            state.verified.verify(&token, |kid| state.keys.decoding_key(kid))?
        }
        other => other?,
    };
    let (jti, sub, is_service) = (claims.jti.clone(), claims.sub.clone(), claims.is_service());
    let standing = state
        .db
        .run(move |conn| {
            if store::is_jti_revoked(conn, &jti)? {
                return Ok(Err(Rejection::Revoked));
            }
            if !is_service {
                match store::find_user(conn, &sub)? {
                    Some(user) if !user.disabled => {}
                    _ => return Ok(Err(Rejection::Disabled)),
                }
            }
            Ok(Ok(()))
        })
        .await?;
    standing?;
    Ok(std::sync::Arc::unwrap_or_clone(claims))
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let token = auth::bearer_token(req).map(str::to_string);
        let state = kms_state(req);
        Box::pin(async move {
            let token =
                token.ok_or_else(|| ApiError::new(ErrorCode::Unauthorized, "a bearer token is required"))?;
            Ok(Caller(authenticate(state?, token).await?))
        })
    }
}

impl FromRequest for Admin {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let caller = Caller::from_request(req, payload);
        Box::pin(async move {
            let Caller(claims) = caller.await?;
            auth::require_admin(&claims)?;
            Ok(Admin(claims))
        })
    }
}

impl FromRequest for MaybeCaller {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let has_token = auth::bearer_token(req).is_some();
        let caller = Caller::from_request(req, payload);
        Box::pin(async move {
            // A token that is present must be valid: a forged admin token is an error, not
            // an anonymous registration.
            if has_token {
                Ok(MaybeCaller(Some(caller.await?.0)))
            } else {
                Ok(MaybeCaller(None))
            }
        })
    }
}
