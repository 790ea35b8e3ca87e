//! Calling another role as this role: [`ServiceClient`] sends a request to a peer with the
//! role's own service token (its credential exchanged at kms, reused until half its life has
//! passed), at the URL the gateway's `GET /lookup/{service}` names (cached, forgotten when a call
//! fails; `[peers]` as the fallback), exactly as the secret injection finds its peers.
//!
//! Not `Send`: awc's client is per thread. Build one inside the task that uses it.

use std::cell::RefCell;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use actix_web::web::Bytes;
use serde::Serialize;

use super::contracts::{ClientCredentialsGrant, TokenResponse};
use super::injection::{credential_path, Peers};
use crate::config::Config;

/// Why a call produced no answer from the peer.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// This role has no service credential, or kms refused or could not be reached.
    #[error("no service token: {0}")]
    Token(String),
    /// The peer could not be reached or did not answer in time.
    #[error("{0}")]
    Unreachable(String),
}

/// A peer's answer.
#[derive(Debug)]
pub struct PeerAnswer {
    pub status: u16,
    pub body: Bytes,
}

/// Calls peers as `role`, with `role`'s service token.
pub struct ServiceClient {
    role: &'static str,
    kms: String,
    credential: PathBuf,
    peers: Peers,
    client: awc::Client,
    token: RefCell<Option<(String, Instant)>>,
}

impl ServiceClient {
    /// A client for `role`; every call gives up after `timeout`.
    pub fn new(role: &'static str, config: &Config, timeout: Duration) -> Self {
        Self {
            role,
            kms: config.peer_url("kms").unwrap_or_default(),
            credential: credential_path(config, role),
            peers: Peers::new(config),
            client: awc::Client::builder().timeout(timeout).disable_redirects().finish(),
            token: RefCell::new(None),
        }
    }

    /// Sends `body` (JSON) to `path` of `service`. An answer of any status is `Ok`. A `401` is
    /// answered once more with a freshly fetched token (the held one may have been revoked or
    /// have expired early), so a `401` that comes back means this role itself is refused.
    pub async fn call<B: Serialize>(
        &self,
        service: &str,
        method: awc::http::Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<PeerAnswer, CallError> {
        let answer = self.call_once(service, method.clone(), path, body).await?;
        if answer.status != 401 {
            return Ok(answer);
        }
        self.token.borrow_mut().take();
        self.call_once(service, method, path, body).await
    }

    async fn call_once<B: Serialize>(
        &self,
        service: &str,
        method: awc::http::Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<PeerAnswer, CallError> {
        let token = self.token().await?;
        let base = self.peers.resolve(&self.client, service, &token).await;
        if base.is_empty() {
            return Err(CallError::Unreachable(format!("no address known for {service}")));
        }
        let url = format!("{base}{path}");
        let request =
            self.client.request(method, &url).insert_header(("authorization", format!("Bearer {token}")));
        let sent = match body {
            Some(body) => request.send_json(body).await,
            None => request.send().await,
        };
        let mut response = sent.map_err(|err| {
            self.peers.forget(service);
            CallError::Unreachable(format!("{service} at {url}: {err}"))
        })?;
        let status = response.status().as_u16();
        let body = response
            .body()
            .limit(1 << 20)
            .await
            .map_err(|err| CallError::Unreachable(format!("{service} at {url}: {err}")))?;
        Ok(PeerAnswer { status, body })
    }

    /// The role's service token, fetched from kms when none is held or half its life is over.
    async fn token(&self) -> Result<String, CallError> {
        if let Some((token, renew_at)) = self.token.borrow().as_ref() {
            if Instant::now() < *renew_at {
                return Ok(token.clone());
            }
        }
        let fresh = self.fetch_token().await?;
        let renew_at = Instant::now() + Duration::from_secs(fresh.expires_in / 2);
        *self.token.borrow_mut() = Some((fresh.access_token.clone(), renew_at));
        Ok(fresh.access_token)
    }

    async fn fetch_token(&self) -> Result<TokenResponse, CallError> {
        // Read at every renewal, so a credential replaced on disk is picked up.
        let credential = std::fs::read_to_string(&self.credential).map_err(|e| {
            CallError::Token(format!("role {}: no service credential ({})", self.role, e.kind()))
        })?;
        let url = format!("{}/token", self.kms);
        let grant = ClientCredentialsGrant::new(credential.trim());
        let mut response = self
            .client
            .post(&url)
            .send_json(&grant)
            .await
            .map_err(|e| CallError::Token(format!("{url}: {e}")))?;
        if !response.status().is_success() {
            return Err(CallError::Token(format!("{url} answered {}", response.status().as_u16())));
        }
        response.json().await.map_err(|e| CallError::Token(format!("{url}: {e}")))
    }
}
