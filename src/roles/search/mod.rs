//! The Typesense Client Microservice role.

use crate::platform::role::Role;

pub struct Search;

impl Role for Search {
    fn name(&self) -> &'static str {
        "search"
    }

    fn title(&self) -> &'static str {
        "Typesense Client Microservice"
    }

    fn description(&self) -> &'static str {
        "Keeps FountainAI's searchable documents in sync and answers searches: create, update, delete and bulk import of documents, on an embedded engine or a remote Typesense."
    }

    fn default_port(&self) -> u16 {
        8001
    }
}
