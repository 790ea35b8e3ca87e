//! The 2FA Service role.

use crate::platform::role::{About, Role};

const ABOUT: About = About {
    name: "twofa",
    title: "2FA Service",
    description: "Second factor for FountainAI: TOTP enrolment and verification, one-time recovery codes, and the step-up tokens the gateway requires on privileged routes.",
    default_port: 8004,
};

pub struct Twofa;

impl Role for Twofa {
    fn about(&self) -> &'static About {
        &ABOUT
    }
}
