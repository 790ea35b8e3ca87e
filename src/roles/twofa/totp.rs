//! TOTP as RFC 6238 defines it and authenticator apps expect it: HMAC-SHA-1, 6 digits, 30-second
//! steps (totp-rs computes the codes). Which step a code belongs to is what makes a code usable
//! once: the step of every accepted code is stored, and only later steps are accepted after it.

use qrcode::render::svg;
use qrcode::QrCode;
use rand::RngCore;
use totp_rs::{Algorithm, TOTP};

use crate::platform::crypto::constant_time_eq;

pub const ISSUER: &str = "FountainAI";
pub const DIGITS: usize = 6;
pub const STEP_SECONDS: u64 = 30;
/// Steps of clock skew accepted either side of now.
pub const SKEW_STEPS: i64 = 1;
/// 160 bits, the HMAC-SHA-1 key size RFC 4226 recommends.
pub const SECRET_BYTES: usize = 20;

/// A fresh random secret.
pub fn new_secret() -> Vec<u8> {
    let mut secret = vec![0u8; SECRET_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut secret);
    secret
}

fn totp(secret: &[u8], username: &str) -> Result<TOTP, String> {
    TOTP::new(
        Algorithm::SHA1,
        DIGITS,
        SKEW_STEPS as u8,
        STEP_SECONDS,
        secret.to_vec(),
        Some(ISSUER.to_string()),
        username.to_string(),
    )
    .map_err(|e| format!("TOTP parameters: {e}"))
}

/// What an authenticator needs: the base32 secret, the `otpauth://` URI and that URI as a QR
/// code (SVG, so a browser shows it as is).
pub struct Provisioning {
    pub secret: String,
    pub uri: String,
    pub qr_svg: String,
}

pub fn provisioning(secret: &[u8], username: &str) -> Result<Provisioning, String> {
    let totp = totp(secret, username)?;
    let uri = totp.get_url();
    let qr = QrCode::new(uri.as_bytes()).map_err(|e| format!("QR code: {e}"))?;
    let qr_svg = qr.render::<svg::Color<'_>>().min_dimensions(200, 200).quiet_zone(true).build();
    Ok(Provisioning { secret: totp.get_secret_base32(), uri, qr_svg })
}

/// The time step `unix_seconds` falls in.
pub fn step_at(unix_seconds: i64) -> i64 {
    unix_seconds.div_euclid(STEP_SECONDS as i64)
}

/// The step within ±[`SKEW_STEPS`] of `now_step` whose code is `code`, if any. Every candidate
/// is compared in constant time.
pub fn matching_step(
    secret: &[u8],
    username: &str,
    code: &str,
    now_step: i64,
) -> Result<Option<i64>, String> {
    let totp = totp(secret, username)?;
    let mut found = None;
    for step in now_step - SKEW_STEPS..=now_step + SKEW_STEPS {
        let Ok(time) = u64::try_from(step * STEP_SECONDS as i64) else { continue };
        if constant_time_eq(totp.generate(time).as_bytes(), code.as_bytes()) {
            found = found.or(Some(step));
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 appendix B: the SHA-1 key "12345678901234567890", codes truncated to 6 digits.
    #[test]
    fn codes_match_the_rfc_test_vectors_and_their_step() {
        let secret = b"12345678901234567890";
        for (time, code) in
            [(59, "287082"), (1111111109, "081804"), (1234567890, "005924"), (2000000000, "279037")]
        {
            let step = step_at(time);
            assert_eq!(matching_step(secret, "u", code, step).unwrap(), Some(step), "{time}");
            assert_eq!(matching_step(secret, "u", code, step + 1).unwrap(), Some(step), "one step late");
            assert_eq!(matching_step(secret, "u", code, step - 1).unwrap(), Some(step), "one step early");
            assert_eq!(matching_step(secret, "u", code, step + 2).unwrap(), None, "two steps: expired");
        }
        assert_eq!(matching_step(secret, "u", "000000", step_at(59)).unwrap(), None);
    }

    #[test]
    fn provisioning_names_the_issuer_and_account_and_draws_a_qr_code() {
        let secret = new_secret();
        let p = provisioning(&secret, "alice").unwrap();
        assert_eq!(p.uri, format!("otpauth://totp/FountainAI:alice?secret={}&issuer=FountainAI", p.secret));
        assert_eq!(p.secret.len(), 32, "160 bits in base32");
        assert!(p.qr_svg.contains("<svg") && p.qr_svg.contains("</svg>"));
        assert_ne!(new_secret(), secret);
    }
}
