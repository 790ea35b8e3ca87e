//! Typed wire contracts: the shapes one role sends and another reads, defined once so that the
//! publisher of an event and every reader of it, or a role's handler and every in-process client
//! of it, cannot drift apart.
//!
//! Events: one type per topic ([`Event::TOPIC`]); `Change::publish` in the unit of work takes
//! only these. The kms security events are what the trust path (`platform::trust`) follows, and
//! it honours them only when kms published them.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A typed event payload and the topic it is published under.
pub trait Event: Serialize + DeserializeOwned {
    const TOPIC: &'static str;
}

/// The role whose security events every verifier honours.
pub const TRUSTED_ISSUER_ROLE: &str = "kms";

/// An access token was logged out: refused until it would have expired anyway.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenRevoked {
    pub jti: String,
    pub sub: String,
    pub exp: i64,
    #[serde(default)]
    pub sid: Option<String>,
}

impl Event for TokenRevoked {
    const TOPIC: &'static str = "tokens.revoked";
}

/// A login session (refresh-token family) ended: every access token of it is refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionRevoked {
    pub username: String,
    pub sid: String,
}

impl Event for SessionRevoked {
    const TOPIC: &'static str = "sessions.revoked";
}

/// What happened to an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccountChange {
    Created,
    Updated,
    Deleted,
}

/// An account was created, changed (roles, enabled state) or deleted. Carries the account's
/// identity (`uid`, never reused) and its token epoch: tokens issued under an older epoch are
/// refused, so a demoted admin loses admin at once and a re-created username revives nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserChanged {
    pub username: String,
    pub uid: i64,
    pub epoch: i64,
    pub change: AccountChange,
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    pub disabled: bool,
}

impl Event for UserChanged {
    const TOPIC: &'static str = "users.changed";
}

/// A service got an API key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyCreated {
    pub service_name: String,
}

impl Event for KeyCreated {
    const TOPIC: &'static str = "keys.created";
}

/// A service's API key was replaced; the previous one verifies until `previous_valid_until`
/// (RFC 3339 UTC with `Z`, as every timestamp of the API).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyRotated {
    pub service_name: String,
    #[serde(default, with = "crate::platform::time::utc_option")]
    pub previous_valid_until: Option<chrono::NaiveDateTime>,
}

impl Event for KeyRotated {
    const TOPIC: &'static str = "keys.rotated";
}

/// A service's keys were disabled or enabled again (`key_ids`: the keys affected). Service
/// tokens obtained with a disabled key are refused while it stays disabled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyChanged {
    pub service_name: String,
    pub disabled: bool,
    #[serde(default)]
    pub key_ids: Vec<i64>,
}

impl Event for KeyChanged {
    const TOPIC: &'static str = "keys.changed";
}

/// A service's keys were revoked: they stop verifying and service tokens obtained with them
/// are refused from now on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyRevoked {
    pub service_name: String,
    #[serde(default)]
    pub key_ids: Vec<i64>,
}

impl Event for KeyRevoked {
    const TOPIC: &'static str = "keys.revoked";
}

/// kms signs with a new key from now on; verifiers refetch the JWKS.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SigningKeyRotated {
    pub kid: String,
}

impl Event for SigningKeyRotated {
    const TOPIC: &'static str = "signingkeys.rotated";
}

/// A service's secrets have a new version (the seed's rotation notice).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretsRotated {
    #[schema(example = "service_a")]
    pub service_name: String,
    #[schema(example = 2)]
    pub version: i32,
    /// When the version changed: RFC 3339, UTC, with `Z`.
    #[serde(with = "crate::platform::time::aware")]
    #[schema(value_type = String, format = DateTime, example = "2026-11-30T11:36:26.123Z")]
    pub rotation_time: chrono::DateTime<chrono::Utc>,
    /// Why the version changed (`rotate`, `replace`, `notification`…).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Event for SecretsRotated {
    const TOPIC: &'static str = "secrets.rotated";
}

// ---- request/response shapes between roles ----

/// kms `POST /token` answer (also the login answer).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TokenResponse {
    pub access_token: String,
    #[schema(example = "bearer")]
    pub token_type: String,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    /// Present for user sessions; each use returns a new one and retires the old.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
}

/// kms `POST /token` with `grant_type=client_credentials`, as JSON.
#[derive(Debug, Clone, Serialize)]
pub struct ClientCredentialsGrant<'a> {
    pub grant_type: &'static str,
    pub client_secret: &'a str,
}

impl<'a> ClientCredentialsGrant<'a> {
    pub fn new(api_key: &'a str) -> Self {
        Self { grant_type: "client_credentials", client_secret: api_key }
    }
}

/// kms `POST /keys/verify` answer codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum VerifyCode {
    Valid,
    NotFound,
    Revoked,
    Expired,
    Disabled,
}

/// kms `POST /keys/verify` request.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct VerifyRequest {
    pub api_key: String,
}

/// kms `POST /keys/verify` answer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct VerifyResponse {
    pub valid: bool,
    pub code: VerifyCode,
    pub service_name: Option<String>,
    /// RFC 3339, UTC, with `Z`; null when the key does not expire.
    #[serde(default, with = "crate::platform::time::utc_option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<chrono::NaiveDateTime>,
}

/// secrets `GET /secrets/{serviceName}` answer: one version of a service's secrets.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SecretSet {
    pub service_name: String,
    /// Name -> value.
    pub secrets: BTreeMap<String, String>,
    pub version: i32,
}

/// gateway `POST /registry` request.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RegisterRequest {
    /// The service name; a service token may register only itself.
    pub service: String,
    /// Base URL of the instance (http).
    pub url: String,
    /// How long the entry lives without a heartbeat (5–3600 s).
    pub ttl_seconds: u64,
}

/// gateway `GET /lookup/{service}` answer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Lookup {
    pub service: String,
    pub url: String,
    /// False when every known instance is failing its health checks.
    pub healthy: bool,
}

/// kms `POST /step-up` request: twofa, with its own service token, asks for a step-up token
/// for the user whose current token it forwards (after checking the user's second factor).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StepUpGrant {
    /// The user's current access token, as the user presented it to twofa.
    #[schema(min_length = 1, max_length = 8192)]
    pub token: String,
    /// Lifetime of the step-up token; kms caps it at its access-token lifetime.
    #[schema(minimum = 30, maximum = 3600)]
    pub ttl_seconds: u64,
}
