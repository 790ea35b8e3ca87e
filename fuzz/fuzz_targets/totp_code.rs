//! TOTP code checking: `roles::twofa::totp::{matching_step, step_at}` with an
//! arbitrary entered code. The clock is bounded to real times (0 ..= 2^40 s): `now_step` comes
//! from `step_at(unix_now())` in the role, never from a client.
//! Input: byte 0 flags, bytes 1..6 the time, then the code (or, flag bit 0, secret|username).
//! `provisioning` (the QR code) has its own target, `totp_provisioning`: drawing the QR code
//! took ~90 % of this target's time.
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
    }
});
