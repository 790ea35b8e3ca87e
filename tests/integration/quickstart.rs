//! quickstart
