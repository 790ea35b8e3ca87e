//! fountain's integration tests, compiled as one binary (link time dominates on small machines).
//! Every test talks HTTP to the real server or runs the real binary.

mod support;

mod architecture;
mod errors;
mod gateway;
mod gateway_attacks;
mod injection;
mod kms;
mod kms_attacks;
mod notify;
mod notify_attacks;
mod openapi;
mod platform_attacks;
mod process;
mod replicas;
mod secrets;
mod standard_endpoints;
mod store;
mod trust;
