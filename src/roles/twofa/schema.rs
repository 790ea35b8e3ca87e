//! The twofa tables (migration `2026-12-02-000010_twofa`).

diesel::table! {
    twofa_factors (username) {
        username -> Text,
        uid -> BigInt,
        active_secret -> Nullable<Text>,
        pending_secret -> Nullable<Text>,
        last_step -> BigInt,
        failures -> Integer,
        locked_until -> Nullable<Timestamp>,
        activated_at -> Nullable<Timestamp>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    twofa_recovery_codes (username, code_hash) {
        username -> Text,
        code_hash -> Text,
        used_at -> Nullable<Timestamp>,
    }
}
