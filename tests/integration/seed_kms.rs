//! seed_kms
