//! TOTP code checking: `roles::twofa::totp::{matching_step, step_at, provisioning}` with an
//! arbitrary entered code. The clock is bounded to real times (0 ..= 2^40 s): `now_step` comes
//! from `step_at(unix_now())` in the role, never from a client.
//! Input: byte 0 flags, bytes 1..6 the time, then the code (or, flag bit 0, secret|username;
//! then also `provisioning`, bounded to account names kms issues).
#![no_main]

use fountain::roles::twofa::totp;
use libfuzzer_sys::fuzz_target;

const SECRET: &[u8] = b"12345678901234567890";

fuzz_target!(|data: &[u8]| {
    if data.len() < 6 {
        return;
    }
    let (head, rest) = data.split_at(6);
    let seconds =
        i64::from_be_bytes([0, 0, 0, head[1], head[2], head[3], head[4], head[5]]) & ((1 << 40) - 1);
    let now_step = totp::step_at(seconds);
    if head[0] & 1 == 0 {
        let Ok(code) = std::str::from_utf8(rest) else { return };
        let found = totp::matching_step(SECRET, "alice", code, now_step).expect("a valid secret");
        if let Some(step) = found {
            assert!((step - now_step).abs() <= totp::SKEW_STEPS);
            assert!(code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit()), "code {code:?} matched");
        }
    } else {
        let split = usize::from(head[0] >> 1).min(rest.len());
        let (secret, username) = rest.split_at(split);
        let Ok(username) = std::str::from_utf8(username) else { return };
        let _ = totp::matching_step(secret, username, "123456", now_step);
        // The QR code is drawn only for account names as long as kms issues (at most 64
        // characters): a 4 KiB name makes a version-40 code, ~100 times the work, that
        // fountain never draws. One input in 16 of this mode, so the codes stay the hot path.
        if username.len() <= MAX_USERNAME && head[1] & 0x0f == 0 {
            provision(secret, username);
        }
    }
});

/// The longest account name kms registers (`validate_username`).
const MAX_USERNAME: usize = 64;

/// What an authenticator receives names the issuer, the account and the secret, and the QR
/// code is an SVG image.
fn provision(secret: &[u8], username: &str) {
    let Ok(p) = totp::provisioning(secret, username) else { return };
    assert!(p.uri.starts_with("otpauth://totp/FountainAI:"), "{}", p.uri);
    assert!(p.uri.contains(&format!("secret={}", p.secret)), "{}", p.uri);
    assert_eq!(p.secret.len(), (secret.len() * 8).div_ceil(5), "unpadded base32 of the secret");
    assert!(p.qr_svg.starts_with("<?xml") && p.qr_svg.ends_with("</svg>"));
}
