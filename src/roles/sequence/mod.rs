//! The Service A role.

use super::RoleSpec;

pub const ROLE: RoleSpec = RoleSpec::standard_only(
    "sequence",
    "Service A",
    8002,
    "Screenplay elements for FountainAI: ordered sequence numbers, reordering and versions, kept in sync with search through a transactional outbox so that nothing is lost when search is down.",
);
