//! The kms tables (migration `2026-11-23-000002_kms`, then `2026-11-30-000007_kms_token_epoch`
//! and `2026-12-01-000008_kms_imported_keys`).

diesel::table! {
    users (id) {
        id -> BigInt,
        username -> Text,
        password_hash -> Text,
        roles -> Text,
        disabled -> Bool,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        token_epoch -> BigInt,
    }
}

diesel::table! {
    signing_keys (kid) {
        kid -> Text,
        private_key -> Text,
        public_key -> Text,
        created_at -> Timestamp,
        retired_at -> Nullable<Timestamp>,
        publish_until -> Nullable<Timestamp>,
    }
}

diesel::table! {
    refresh_tokens (token_hash) {
        token_hash -> Text,
        family_id -> Text,
        username -> Text,
        created_at -> Timestamp,
        expires_at -> Timestamp,
        used_at -> Nullable<Timestamp>,
        revoked_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    revoked_tokens (jti) {
        jti -> Text,
        expires_at -> Timestamp,
    }
}

diesel::table! {
    api_keys (id) {
        id -> BigInt,
        service_name -> Text,
        key_hash -> Text,
        sealed_key -> Text,
        key_prefix -> Text,
        state -> Text,
        disabled -> Bool,
        created_at -> Timestamp,
        expires_at -> Nullable<Timestamp>,
        valid_until -> Nullable<Timestamp>,
        revoked_at -> Nullable<Timestamp>,
        imported -> Bool,
    }
}
