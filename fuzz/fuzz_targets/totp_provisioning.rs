//! What an authenticator receives at enrolment: `roles::twofa::totp::provisioning` (base32
//! secret, `otpauth://` URI, QR code as SVG) for arbitrary secrets and account names up to the
//! 64 characters kms registers (the role passes the caller's username; longer names make larger
//! QR codes fountain never draws). Separate from `totp_code` because drawing the QR code (mask
//! selection over the whole symbol) costs milliseconds under coverage instrumentation.
//! Input: byte 0 the secret's length, then the secret and the account name.
#![no_main]

use fountain::roles::twofa::totp;
use libfuzzer_sys::fuzz_target;

/// The longest account name kms registers (`validate_username`).
const MAX_USERNAME: usize = 64;

fuzz_target!(|data: &[u8]| {
    let Some((&length, rest)) = data.split_first() else { return };
    let (secret, username) = rest.split_at(usize::from(length).min(rest.len()));
    let Ok(username) = std::str::from_utf8(username) else { return };
    if username.len() > MAX_USERNAME {
        return;
    }
    let Ok(p) = totp::provisioning(secret, username) else { return };
    assert!(p.uri.starts_with("otpauth://totp/FountainAI:"), "{}", p.uri);
    assert!(p.uri.contains(&format!("secret={}", p.secret)), "{}", p.uri);
    assert_eq!(p.secret.len(), (secret.len() * 8).div_ceil(5), "unpadded base32 of the secret");
    assert!(p.qr_svg.starts_with("<?xml") && p.qr_svg.ends_with("</svg>"));
});
