//! The sequence tables (migration `2026-12-01-000020_sequence`).

diesel::table! {
    sequence_elements (element_type, element_id) {
        element_type -> Text,
        element_id -> BigInt,
        sequence_number -> BigInt,
        current_version -> Integer,
        comment -> Text,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    sequence_versions (element_type, element_id, version_number) {
        element_type -> Text,
        element_id -> BigInt,
        version_number -> Integer,
        comment -> Text,
        data -> Nullable<Text>,
        created_at -> Timestamp,
    }
}

diesel::table! {
    sequence_outbox (id) {
        id -> BigInt,
        element_type -> Text,
        element_id -> BigInt,
        operation -> Text,
        document -> Text,
        status -> Text,
        attempts -> Integer,
        next_attempt_at -> Timestamp,
        lease_until -> Nullable<Timestamp>,
        last_error -> Nullable<Text>,
        created_at -> Timestamp,
    }
}
