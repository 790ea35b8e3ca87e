//! The Typesense Client Microservice role.

use super::RoleSpec;

pub const ROLE: RoleSpec = RoleSpec::standard_only(
    "search",
    "Typesense Client Microservice",
    8001,
    "Keeps FountainAI's searchable documents in sync and answers searches: create, update, delete and bulk import of documents, on an embedded engine or a remote Typesense.",
);
