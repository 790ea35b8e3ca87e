//! What every role shares: server shell, standard endpoints, errors, extractors, data layer,
//! metrics and logging.

pub mod audit;
pub mod auth;
pub mod cache;
pub mod contracts;
pub mod crypto;
pub mod db;
pub mod documented_errors;
pub mod error;
pub mod events;
pub mod extract;
pub mod fs;
pub mod guards;
pub mod injection;
pub mod logging;
pub mod meta;
pub mod metrics;
pub mod middleware;
pub mod names;
pub mod net;
pub mod peers;
pub mod role;
pub mod server;
pub mod standard;
pub mod time;
pub mod trust;
pub mod unit;
