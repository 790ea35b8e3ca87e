//! gateway_seed
