//! Tables shared by every role. Each role keeps its own tables in its own `store` module.

diesel::table! {
    audit_log (id) {
        id -> BigInt,
        occurred_at -> Timestamp,
        role -> Text,
        actor -> Text,
        action -> Text,
        target -> Text,
        outcome -> Text,
        source_addr -> Nullable<Text>,
        request_id -> Nullable<Text>,
        details -> Nullable<Text>,
        chain_seq -> Nullable<BigInt>,
        prev_hash -> Nullable<Text>,
        hash -> Nullable<Text>,
    }
}

diesel::table! {
    audit_chain_head (role) {
        role -> Text,
        last_seq -> BigInt,
        last_hash -> Text,
    }
}

diesel::table! {
    instance_meta (name) {
        name -> Text,
        value -> Text,
    }
}

diesel::table! {
    events (id) {
        id -> BigInt,
        topic -> Text,
        payload -> Text,
        source -> Text,
        created_at -> Timestamp,
    }
}
