//! The 2FA Service role.

use super::RoleSpec;

pub const ROLE: RoleSpec = RoleSpec::standard_only(
    "twofa",
    "2FA Service",
    8004,
    "Second factor for FountainAI: TOTP enrolment and verification, one-time recovery codes, and the step-up tokens the gateway requires on privileged routes.",
);
