//! The Typesense Client Microservice role.

use crate::platform::role::{About, Role};

const ABOUT: About = About {
    name: "search",
    title: "Typesense Client Microservice",
    description: "Keeps FountainAI's searchable documents in sync and answers searches: create, update, delete and bulk import of documents, on an embedded engine or a remote Typesense.",
    default_port: 8001,
};

pub struct Search;

impl Role for Search {
    fn about(&self) -> &'static About {
        &ABOUT
    }
}
