//! kms's own settings: `[roles.kms]` in configuration.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KmsConfig {
    pub access_token_ttl_seconds: u64,
    pub refresh_token_ttl_seconds: u64,
    pub service_token_ttl_seconds: u64,
    pub bcrypt_cost: u32,
    pub key_rotation_grace_seconds: u64,
    pub key_cache_ttl_ms: u64,
    pub login_failures_per_username: u32,
    pub login_failures_per_address: u32,
    pub login_failure_window_seconds: u64,
    /// Anonymous registrations one client address may make per hour.
    pub registrations_per_address_per_hour: u32,
    /// Anonymous registrations the whole instance accepts per minute.
    pub registrations_per_minute: u32,
    /// `POST /keys/verify` calls per client address per minute (sustained).
    pub verifications_per_address_per_minute: u32,
    /// `POST /keys/verify` calls a client address may make at once before the rate applies.
    pub verification_burst: u32,
}

impl KmsConfig {
    pub fn validate(&self) -> Result<(), String> {
        if !(4..=31).contains(&self.bcrypt_cost) {
            return Err("bcrypt_cost must be between 4 and 31".into());
        }
        if self.access_token_ttl_seconds == 0 || self.service_token_ttl_seconds == 0 {
            return Err("token lifetimes must be at least one second".into());
        }
        if self.login_failures_per_username == 0 || self.login_failures_per_address == 0 {
            return Err("login failure limits must be at least 1".into());
        }
        if self.registrations_per_address_per_hour == 0 || self.registrations_per_minute == 0 {
            return Err("registration limits must be at least 1".into());
        }
        if self.verifications_per_address_per_minute == 0 || self.verification_burst == 0 {
            return Err("verification limits must be at least 1".into());
        }
        Ok(())
    }
}
