//! seed_notify
