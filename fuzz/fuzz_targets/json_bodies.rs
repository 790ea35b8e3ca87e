//! Every public JSON request body, parsed the way the roles' handlers parse them
//! (`platform::extract::parse_json`: serde_json + serde_path_to_error, 400/422 mapping).
//! Byte 0 picks the type.
#![no_main]

use fountain::platform::contracts;
use fountain::platform::extract::parse_json;
use fountain::roles::{kms, notify, search, secrets, sequence, twofa};
use libfuzzer_sys::fuzz_target;

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) {
    let _ = parse_json::<T>(body);
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else { return };
    match which % 24 {
        0 => parse::<kms::users::RegisterRequest>(body),
        1 => parse::<kms::users::LoginRequest>(body),
        2 => parse::<kms::users::UpdateUserRequest>(body),
        3 => parse::<kms::keys::CreateKeyRequest>(body),
        4 => parse::<kms::keys::RotateKeyRequest>(body),
        5 => parse::<kms::keys::UpdateKeyRequest>(body),
        6 => parse::<kms::session::TokenRequest>(body),
        7 => parse::<secrets::RotateRequest>(body),
        8 => parse::<secrets::ReplaceRequest>(body),
        9 => parse::<secrets::GenerateRequest>(body),
        10 => parse::<notify::PublishRequest>(body),
        11 => parse::<sequence::api::SequenceRequest>(body),
        12 => parse::<sequence::api::ReorderRequest>(body),
        13 => parse::<sequence::api::VersionRequest>(body),
        14 => parse::<search::SyncRequest>(body),
        15 => parse::<search::SearchRequest>(body),
        16 => parse::<search::Document>(body),
        17 => parse::<twofa::EnrollRequest>(body),
        18 => parse::<twofa::ActivateRequest>(body),
        19 => parse::<twofa::ProofRequest>(body),
        20 => parse::<contracts::RegisterRequest>(body),
        21 => parse::<contracts::VerifyRequest>(body),
        22 => parse::<contracts::Lookup>(body),
        _ => parse::<contracts::SecretSet>(body),
    }
});
