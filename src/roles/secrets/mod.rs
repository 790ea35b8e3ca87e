//! The Secrets Manager Service role.

use super::RoleSpec;

pub const ROLE: RoleSpec = RoleSpec::standard_only(
    "secrets",
    "Secrets Manager Service",
    8005,
    "Per-service secrets for FountainAI, versioned and encrypted at rest, with rotation that every service picks up live through the Notification Service, and a generator for strong random secrets.",
);
