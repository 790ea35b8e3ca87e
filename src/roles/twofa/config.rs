//! twofa's own settings: `[roles.twofa]` in configuration.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TwofaConfig {
    /// Lifetime of a step-up token (kms caps it at its access-token lifetime).
    pub step_up_ttl_seconds: u64,
    /// Members of these roles get password tokens that reach only twofa and logout until they
    /// step up (kms reads this list at login).
    pub required_for_roles: Vec<String>,
    /// Wrong codes in a row before an account's second factor is locked.
    pub max_failures: u32,
    /// How long a locked second factor refuses every code (429 with Retry-After).
    pub lockout_seconds: u64,
}

impl TwofaConfig {
    pub fn validate(&self) -> Result<(), String> {
        if !(30..=3600).contains(&self.step_up_ttl_seconds) {
            return Err("step_up_ttl_seconds must be between 30 and 3600".into());
        }
        if self.max_failures == 0 {
            return Err("max_failures must be at least 1".into());
        }
        if self.lockout_seconds == 0 {
            return Err("lockout_seconds must be at least 1".into());
        }
        for role in &self.required_for_roles {
            let valid = (1..=32).contains(&role.len())
                && role
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-'));
            if !valid {
                return Err(format!("required_for_roles: {role:?} is not a role name (a-z 0-9 _ -)"));
            }
        }
        Ok(())
    }
}
