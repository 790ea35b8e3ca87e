//! The secrets tables (migration `2026-11-23-000005_secrets`).

diesel::table! {
    secret_sets (service_name) {
        service_name -> Text,
        current_version -> Integer,
        deleted_at -> Nullable<Timestamp>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    secret_versions (service_name, version) {
        service_name -> Text,
        version -> Integer,
        sealed_values -> Text,
        created_at -> Timestamp,
        created_by -> Text,
    }
}
