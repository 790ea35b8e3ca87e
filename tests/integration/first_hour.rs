//! first_hour
