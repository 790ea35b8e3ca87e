//! admin_cli
