//! twofa's client of kms: its own service token (client credentials with the credential the
//! all-in-one bootstrap or an operator stored for it), and the step-up grant kms signs only for
//! that identity.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::platform::contracts::{ClientCredentialsGrant, StepUpGrant, TokenResponse};
use crate::platform::crypto::Secret;
use crate::platform::error::{ApiError, ApiResult, ErrorCode};
use crate::platform::middleware::INTERNAL_USER_AGENT;

/// A service token is renewed this long before it expires.
const RENEW_BEFORE: Duration = Duration::from_secs(30);

pub struct KmsClient {
    kms_url: String,
    credential_file: PathBuf,
    /// The service token and when to renew it. Held across a renewal, so concurrent step-ups
    /// share one exchange.
    token: tokio::sync::Mutex<Option<(Secret<String>, Instant)>>,
}

fn unavailable(reason: impl std::fmt::Display) -> ApiError {
    ApiError::unavailable("kms", reason.to_string())
}

/// The client for calls between roles (it names itself, so kms logs them as routine).
fn client() -> awc::Client {
    awc::Client::builder()
        .timeout(Duration::from_secs(10))
        .add_default_header(("user-agent", INTERNAL_USER_AGENT))
        .finish()
}

impl KmsClient {
    pub fn new(kms_url: String, credential_file: PathBuf) -> Self {
        Self { kms_url, credential_file, token: tokio::sync::Mutex::new(None) }
    }

    /// twofa's service token, from the cache while it has more than [`RENEW_BEFORE`] left.
    async fn service_token(&self) -> ApiResult<Secret<String>> {
        let mut cached = self.token.lock().await;
        if let Some((token, renew_at)) = cached.as_ref() {
            if Instant::now() < *renew_at {
                return Ok(token.clone());
            }
        }
        // Read at each renewal: a credential provisioned after start is picked up.
        let credential = std::fs::read_to_string(&self.credential_file).map_err(|e| {
            unavailable(format!("no service credential at {}: {}", self.credential_file.display(), e.kind()))
        })?;
        let url = format!("{}/token", self.kms_url);
        let mut response = client()
            .post(&url)
            .send_json(&ClientCredentialsGrant::new(credential.trim()))
            .await
            .map_err(|e| unavailable(format!("{url}: {e}")))?;
        if !response.status().is_success() {
            return Err(unavailable(format!("{url} refused twofa's credential ({})", response.status())));
        }
        let answer: TokenResponse = response.json().await.map_err(|e| unavailable(format!("{url}: {e}")))?;
        let lifetime = Duration::from_secs(answer.expires_in).saturating_sub(RENEW_BEFORE);
        let token = Secret::new(answer.access_token);
        *cached = Some((token.clone(), Instant::now() + lifetime));
        Ok(token)
    }

    /// Forgets the cached service token (kms refused it: revoked key, rotated signing key).
    async fn forget_token(&self) {
        *self.token.lock().await = None;
    }

    /// A step-up token for the user whose current token is `user_token`. 401 when kms no
    /// longer accepts that token; 503 when kms cannot be asked.
    pub async fn step_up(&self, user_token: &str, ttl_seconds: u64) -> ApiResult<TokenResponse> {
        let url = format!("{}/step-up", self.kms_url);
        let grant = StepUpGrant { token: user_token.to_string(), ttl_seconds };
        for attempt in 0..2 {
            let service = self.service_token().await?;
            let mut response = client()
                .post(&url)
                .insert_header(("authorization", format!("Bearer {}", service.expose())))
                .send_json(&grant)
                .await
                .map_err(|e| unavailable(format!("{url}: {e}")))?;
            match response.status().as_u16() {
                200 => return response.json().await.map_err(|e| unavailable(format!("{url}: {e}"))),
                // Ours or the user's: a fresh service token tells them apart.
                401 if attempt == 0 => self.forget_token().await,
                401 => return Err(ApiError::new(ErrorCode::Unauthorized, "invalid or expired token")),
                status => return Err(unavailable(format!("{url} answered {status}"))),
            }
        }
        Err(ApiError::new(ErrorCode::Unauthorized, "invalid or expired token"))
    }
}
