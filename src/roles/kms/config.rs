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
        Ok(())
    }
}
