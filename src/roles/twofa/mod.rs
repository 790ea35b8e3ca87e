//! The 2FA Service role.

use crate::platform::role::Role;

pub struct Twofa;

impl Role for Twofa {
    fn name(&self) -> &'static str {
        "twofa"
    }

    fn title(&self) -> &'static str {
        "2FA Service"
    }

    fn description(&self) -> &'static str {
        "Second factor for FountainAI: TOTP enrolment and verification, one-time recovery codes, and the step-up tokens the gateway requires on privileged routes."
    }

    fn default_port(&self) -> u16 {
        8004
    }
}
