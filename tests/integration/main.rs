//! fountain's integration tests, compiled as one binary (link time dominates on small machines).
//! Every test talks HTTP to the real server or runs the real binary.

mod support;

mod admin_cli;
mod architecture;
mod audit_chain;
mod caddy;
mod config_errors;
mod deploy_files;
mod errors;
mod examples;
mod first_hour;
mod gateway;
mod gateway_attacks;
mod gateway_seed;
mod injection;
mod kms;
mod kms_attacks;
mod notify;
mod notify_attacks;
mod openapi;
mod per_role;
mod platform_attacks;
mod process;
mod quickstart;
mod replicas;
mod search;
mod search_conformance;
mod secrets;
mod seed_kms;
mod seed_notify;
mod sequence;
mod sequence_search;
mod standard_endpoints;
mod storage;
mod store;
mod systemd;
mod trust;
mod twofa;
