//! Event payload decoding: every typed event of `platform::contracts` (what `Change::publish`
//! writes and the trust path and other roles read back). Byte 0 picks the type; a payload that
//! decodes must survive encode → decode unchanged.
#![no_main]

use fountain::platform::contracts::{
    Event, KeyChanged, KeyCreated, KeyRevoked, KeyRotated, SecretsRotated, SessionRevoked, SigningKeyRotated,
    TokenRevoked, UserChanged,
};
use libfuzzer_sys::fuzz_target;

fn round_trip<T: Event + PartialEq + std::fmt::Debug>(payload: &[u8]) {
    assert!(!T::TOPIC.is_empty());
    let Ok(event) = serde_json::from_slice::<T>(payload) else { return };
    let encoded = serde_json::to_vec(&event).expect("encode");
    let again: T = serde_json::from_slice(&encoded).expect("an encoded event decodes");
    assert_eq!(event, again);
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, payload)) = data.split_first() else { return };
    match which % 9 {
        0 => round_trip::<TokenRevoked>(payload),
        1 => round_trip::<SessionRevoked>(payload),
        2 => round_trip::<UserChanged>(payload),
        3 => round_trip::<KeyCreated>(payload),
        4 => round_trip::<KeyRotated>(payload),
        5 => round_trip::<KeyChanged>(payload),
        6 => round_trip::<KeyRevoked>(payload),
        7 => round_trip::<SigningKeyRotated>(payload),
        _ => round_trip::<SecretsRotated>(payload),
    }
});
