//! Identifier rules shared by every role, checked at the edge.

use super::error::{ApiError, ApiResult};

/// Service names (API keys, secret sets, service tokens' `sub`): 1–64 of `a-z 0-9 _ -`.
pub fn validate_service_name(field: &str, name: &str) -> ApiResult<()> {
    let ok = (1..=64).contains(&name.len())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::validation(field, "must be 1-64 characters of a-z 0-9 _ -"))
    }
}
