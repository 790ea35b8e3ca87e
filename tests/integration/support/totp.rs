//! TOTP codes for the tests' own step-ups (RFC 6238 as twofa configures it: SHA-1, 6 digits,
//! 30 s). The twofa tests check the server against an independent implementation (pyotp);
//! this is only how the other tests' admin gets its second factor.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use totp_rs::{Algorithm, Secret, TOTP};

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_secs()
}

/// The code of `secret` (base32) `steps` time steps from now.
pub fn code(secret: &str, steps: i64) -> String {
    let key = Secret::Encoded(secret.to_string()).to_bytes().expect("a base32 secret");
    let totp = TOTP::new_unchecked(Algorithm::SHA1, 6, 1, 30, key, None, String::new());
    let at = now().saturating_add_signed(steps * 30);
    totp.generate(at)
}

/// Waits out the last seconds of a 30-second step, so that codes computed now still name the
/// steps the server sees when the calls that use them arrive.
pub fn away_from_a_step_edge() {
    let left = 30 - now() % 30;
    if left < 5 {
        std::thread::sleep(Duration::from_secs(left + 1));
    }
}

/// What a blocking step-up produced: the step-up token and the factor's secrets (so that a test
/// can check they never reach a log).
pub struct SteppedUp {
    pub token: String,
    pub secret: String,
    pub recovery_codes: Vec<String>,
}

/// Enrols, activates and steps up the holder of `password_token` at the twofa role on `twofa`,
/// for the process tests that drive the binary without an async runtime.
pub fn step_up_blocking(twofa: std::net::SocketAddr, password_token: &str) -> SteppedUp {
    use serde_json::{json, Value};
    let post = |path: &str, body: Value| {
        let (status, answer) = super::blocking_call(twofa, "POST", path, Some(password_token), Some(body));
        assert_eq!(status, 200, "{path}: {answer}");
        answer
    };
    away_from_a_step_edge();
    let secret = post("/2fa/enroll", json!({}))["secret"].as_str().expect("secret").to_string();
    // The previous step's code activates, so the current one is still unused for the step-up.
    let activated = post("/2fa/activate", json!({ "code": code(&secret, -1) }));
    let recovery_codes = activated["recoveryCodes"]
        .as_array()
        .expect("codes")
        .iter()
        .filter_map(Value::as_str)
        .map(String::from)
        .collect();
    let token = post("/2fa/verify", json!({ "code": code(&secret, 0) }))["access_token"]
        .as_str()
        .expect("a step-up token")
        .to_string();
    SteppedUp { token, secret, recovery_codes }
}
