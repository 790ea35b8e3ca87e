//! Token checks for roles other than kms: the JWKS is fetched from kms over HTTP and cached;
//! an unknown `kid` triggers one refetch (rate-limited, so a flood of forged kids cannot turn
//! into a flood of JWKS requests). Verified tokens are cached (see `auth::VerifiedTokens`).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use actix_web::dev::Payload;
use actix_web::{web, FromRequest, HttpRequest};
use futures_util::future::LocalBoxFuture;
use jsonwebtoken::DecodingKey;
use serde::Deserialize;

use super::auth::{self, Claims, Rejection, VerifiedTokens};
use super::error::{ApiError, ErrorCode};
use crate::config::Config;

/// The shortest time between two JWKS fetches.
const REFETCH_INTERVAL: Duration = Duration::from_secs(5);

/// Why `RemoteKeys::check` did not accept a token.
#[derive(Debug)]
pub enum KeyCheckFailure {
    /// The token itself is bad (clients see one uniform 401).
    Rejected(Rejection),
    /// kms's keys could not be fetched.
    Unavailable(ApiError),
}

impl From<Rejection> for KeyCheckFailure {
    fn from(rejection: Rejection) -> Self {
        Self::Rejected(rejection)
    }
}

pub struct RemoteKeys {
    jwks_url: String,
    keys: RwLock<HashMap<String, DecodingKey>>,
    /// When the JWKS was last fetched; held across the fetch so that concurrent requests with
    /// a new `kid` wait for one fetch instead of each being refused or each fetching.
    last_fetch: tokio::sync::Mutex<Option<Instant>>,
    verified: VerifiedTokens,
}

#[derive(Deserialize)]
struct JwkSet {
    keys: Vec<Jwk>,
}

#[derive(Deserialize)]
struct Jwk {
    kty: String,
    crv: Option<String>,
    x: Option<String>,
    kid: Option<String>,
}

impl RemoteKeys {
    pub fn from_config(config: &Config) -> Self {
        Self {
            jwks_url: format!("{}/.well-known/jwks.json", config.peer_url("kms").unwrap_or_default()),
            keys: RwLock::new(HashMap::new()),
            last_fetch: tokio::sync::Mutex::new(None),
            verified: VerifiedTokens::new(10_000, &config.kms.issuer, &config.kms.audience),
        }
    }

    fn key(&self, kid: &str) -> Option<DecodingKey> {
        self.keys.read().unwrap_or_else(|e| e.into_inner()).get(kid).cloned()
    }

    /// Verifies a bearer token against kms's published keys.
    pub async fn verify(&self, token: &str) -> Result<Claims, ApiError> {
        self.check(token).await.map(Arc::unwrap_or_clone).map_err(|failure| match failure {
            KeyCheckFailure::Rejected(rejection) => rejection.into(),
            KeyCheckFailure::Unavailable(err) => err,
        })
    }

    /// Like `verify`, but says why a token was refused (the gateway counts reasons).
    pub async fn check(&self, token: &str) -> Result<Arc<Claims>, KeyCheckFailure> {
        match self.verified.verify(token, |kid| self.key(kid)) {
            Err(Rejection::UnknownKey) => {
                let mut last = self.last_fetch.lock().await;
                // Another request may have fetched the keys while this one waited.
                if let Ok(claims) = self.verified.verify(token, |kid| self.key(kid)) {
                    return Ok(claims);
                }
                if last.is_none_or(|at| at.elapsed() >= REFETCH_INTERVAL) {
                    *last = Some(Instant::now());
                    self.fetch().await.map_err(KeyCheckFailure::Unavailable)?;
                }
                Ok(self.verified.verify(token, |kid| self.key(kid))?)
            }
            other => Ok(other?),
        }
    }

    async fn fetch(&self) -> Result<(), ApiError> {
        let client = awc::Client::builder().timeout(Duration::from_secs(5)).finish();
        let mut response = client
            .get(&self.jwks_url)
            .send()
            .await
            .map_err(|e| ApiError::unavailable("kms", format!("{}: {e}", self.jwks_url)))?;
        if !response.status().is_success() {
            return Err(ApiError::unavailable(
                "kms",
                format!("{} answered {}", self.jwks_url, response.status()),
            ));
        }
        let set: JwkSet =
            response.json().limit(1 << 20).await.map_err(|e| ApiError::unavailable("kms", e))?;
        let keys: HashMap<String, DecodingKey> = set
            .keys
            .into_iter()
            .filter(|k| k.kty == "OKP" && k.crv.as_deref() == Some("Ed25519"))
            .filter_map(|k| Some((k.kid?, DecodingKey::from_ed_components(&k.x?).ok()?)))
            .collect();
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = keys;
        Ok(())
    }
}

/// A caller holding a valid token with the exact role `admin` or `service`.
pub struct AdminOrService(pub Claims);

impl FromRequest for AdminOrService {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let token = auth::bearer_token(req).map(str::to_string);
        let keys = req.app_data::<web::Data<RemoteKeys>>().cloned();
        Box::pin(async move {
            let token =
                token.ok_or_else(|| ApiError::new(ErrorCode::Unauthorized, "a bearer token is required"))?;
            let keys = keys.ok_or_else(|| ApiError::internal("token verifier missing"))?;
            let claims = keys.verify(&token).await?;
            if !(claims.is_admin() || claims.is_service()) {
                return Err(ApiError::new(ErrorCode::Forbidden, "this requires an admin or a service token"));
            }
            Ok(AdminOrService(claims))
        })
    }
}
