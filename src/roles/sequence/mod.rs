//! The Service A role.

use crate::platform::role::{About, Role};

const ABOUT: About = About {
    name: "sequence",
    title: "Service A",
    description: "Screenplay elements for FountainAI: ordered sequence numbers, reordering and versions, kept in sync with search through a transactional outbox so that nothing is lost when search is down.",
    default_port: 8002,
};

pub struct Sequence;

impl Role for Sequence {
    fn about(&self) -> &'static About {
        &ABOUT
    }
}
