//! fountain's integration tests, compiled as one binary (link time dominates on small machines).
//! Every test talks HTTP to the real server or runs the real binary.

mod helpers;

mod architecture;
mod errors;
mod gateway;
mod injection;
mod kms;
mod notify;
mod openapi;
mod process;
mod replicas;
mod secrets;
mod standard_endpoints;
mod store;
mod trust;
