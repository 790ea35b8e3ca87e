//! fountain: the FountainAI ecosystem as one executable, a role per service.
//!
//! `platform` holds what every role shares; `roles` holds one folder per service.

pub mod admin;
pub mod app;
pub mod audit;
pub mod cli;
pub mod config;
pub mod healthcheck;
pub mod platform;
pub mod roles;

#[cfg(not(any(
    feature = "gateway",
    feature = "kms",
    feature = "secrets",
    feature = "notify",
    feature = "search",
    feature = "sequence",
    feature = "twofa"
)))]
compile_error!("enable at least one role feature (gateway, kms, secrets, notify, search, sequence, twofa)");
