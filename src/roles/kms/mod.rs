//! The Key Management Service role.

use super::RoleSpec;

pub const ROLE: RoleSpec = RoleSpec::standard_only(
    "kms",
    "Key Management Service",
    8003,
    "FountainAI's source of identity: users and login, EdDSA-signed JWTs published as a JWKS, refresh and revocation, and per-service API keys with rotation, grace periods and constant-time verification.",
);
