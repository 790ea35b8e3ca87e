//! The Notification Service role.

use super::RoleSpec;

pub const ROLE: RoleSpec = RoleSpec::standard_only(
    "notify",
    "Notification Service",
    8006,
    "FountainAI's event hub: durable topics, HMAC-signed webhook deliveries with retry and dead-lettering, a live Server-Sent Events stream with resume, and replay of past events.",
);
