//! The Service A role.

use crate::platform::role::Role;

pub struct Sequence;

impl Role for Sequence {
    fn name(&self) -> &'static str {
        "sequence"
    }

    fn title(&self) -> &'static str {
        "Service A"
    }

    fn description(&self) -> &'static str {
        "Screenplay elements for FountainAI: ordered sequence numbers, reordering and versions, kept in sync with search through a transactional outbox so that nothing is lost when search is down."
    }

    fn default_port(&self) -> u16 {
        8002
    }
}
