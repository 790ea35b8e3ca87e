//! The API Gateway role.

use super::RoleSpec;

pub const ROLE: RoleSpec = RoleSpec::standard_only(
    "gateway",
    "API Gateway",
    8000,
    "The one public entry to FountainAI: verifies JWTs and API keys, routes each path prefix to its service, keeps the service registry behind GET /lookup/{service}, cleans headers and enforces rate limits and step-up MFA.",
);
