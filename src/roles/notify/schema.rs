//! The notify tables (migration `2026-11-23-000004_notify`); events live in `platform::events`.

diesel::table! {
    subscriptions (id) {
        id -> Text,
        owner -> Text,
        topics -> Text,
        callback_url -> Text,
        sealed_secret -> Text,
        after_event_id -> BigInt,
        created_at -> Timestamp,
    }
}

diesel::table! {
    deliveries (id) {
        id -> BigInt,
        subscription_id -> Text,
        event_id -> BigInt,
        status -> Text,
        attempts -> Integer,
        next_attempt_at -> Timestamp,
        last_error -> Nullable<Text>,
        created_at -> Timestamp,
        delivered_at -> Nullable<Timestamp>,
    }
}
