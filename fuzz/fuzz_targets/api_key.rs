//! API keys, the pure parts of their path from the edge to kms's verdict: the gateway's
//! `X-API-KEY` extraction (`roles::gateway::api_key`) and its per-process digest
//! (`ApiKeys::digest`), kms's format check of an imported key (`validate_imported_key`), what
//! kms stores for a key (`stored_forms_with`: lookup hash, sealed value, prefix) and how it
//! verifies one (`lookup_hash` + the constant-time `is_stored_key`, then `standing`). The
//! database round trip of `check_key` only finds the row by the same hash.
//!
//! Input: byte 0 flags, byte 1 the length of the stored key's part, bytes 2..26 three times
//! (expiry, end of grace, now), then the stored key's part and the presented key's part.
//! Flags: bit 0 the stored key is a generated one (`fk_` + base64url of 32 input bytes),
//! bit 1 the presented key is the stored one (bit 2: with one byte changed), bits 3 and 4
//! revoked and disabled, bits 5 and 6 the expiry and grace are set.
#![no_main]

use std::sync::LazyLock;

use actix_web::http::header::HeaderValue;
use actix_web::test::TestRequest;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::NaiveDateTime;
use fountain::platform::contracts::VerifyCode;
use fountain::platform::crypto::MasterKey;
use fountain::roles::gateway::{self, ApiKeys};
use fountain::roles::kms::keys;
use libfuzzer_sys::fuzz_target;

static MASTER: LazyLock<MasterKey> = LazyLock::new(|| MasterKey::from_bytes(&[0x5a; 32]));
static EDGE: LazyLock<ApiKeys> = LazyLock::new(|| ApiKeys::new(std::time::Duration::from_secs(60)));

const HEAD: usize = 26;

/// A time from 8 input bytes, within what chrono represents (else the Unix epoch).
fn time(bytes: &[u8]) -> NaiveDateTime {
    let seconds = i64::from_be_bytes(bytes.try_into().expect("8 bytes")) % (1 << 40);
    chrono::DateTime::from_timestamp(seconds, 0).unwrap_or_default().naive_utc()
}

/// The key kms holds: a generated one, or an imported one if kms would take it.
fn stored_key(generated: bool, part: &[u8]) -> Option<String> {
    if generated {
        let mut bits = [0u8; 32];
        let n = part.len().min(32);
        bits[..n].copy_from_slice(&part[..n]);
        return Some(format!("fk_{}", URL_SAFE_NO_PAD.encode(bits)));
    }
    let key = std::str::from_utf8(part).ok()?;
    let takes = keys::validate_imported_key(key).is_ok();
    let printable = key.bytes().all(|b| b.is_ascii_graphic());
    assert_eq!(takes, (16..=256).contains(&key.len()) && printable, "imported key {key:?}");
    takes.then(|| key.to_string())
}

/// The key the client presents, as the gateway reads it from `X-API-KEY`.
fn presented_key(raw: &[u8]) -> Option<String> {
    let value = HeaderValue::from_bytes(raw).ok()?;
    let req = TestRequest::default().insert_header(("x-api-key", value)).to_http_request();
    let key = gateway::api_key(&req)?;
    assert_eq!(key.as_bytes(), raw, "the key is the header's value, byte for byte");
    assert!(key.bytes().all(|b| b == b'\t' || (b' '..=b'~').contains(&b)));
    // A key the gateway accepted can be forwarded to a service that asks for it.
    assert!(http::HeaderValue::from_str(key).is_ok(), "key {key:?} cannot be forwarded");
    Some(key.to_string())
}

fuzz_target!(|data: &[u8]| {
    if data.len() < HEAD {
        return;
    }
    let (head, rest) = data.split_at(HEAD);
    let flags = head[0];
    let (stored_part, presented_part) = rest.split_at(usize::from(head[1]).min(rest.len()));
    let Some(stored) = stored_key(flags & 1 != 0, stored_part) else { return };

    let (hash, sealed, prefix) = keys::stored_forms_with(&MASTER, &stored);
    assert_eq!(hash.len(), 64);
    assert!(hash.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    assert_eq!(keys::reveal(&MASTER, &sealed).expect("kms opens what it sealed"), stored);
    assert!(stored.starts_with(&prefix) && prefix.len() == 7.min(stored.len()));

    let mut raw = presented_part.to_vec();
    if flags & 2 != 0 {
        raw = stored.clone().into_bytes();
        if flags & 4 != 0 && !presented_part.is_empty() {
            let at = usize::from(presented_part[0]) % raw.len();
            raw[at] = presented_part.get(1).copied().unwrap_or(b'!');
        }
    }
    let Some(presented) = presented_key(&raw) else { return };

    // Verified exactly when the presented key is the stored one, at the edge and at kms.
    let same = presented == stored;
    assert_eq!(keys::is_stored_key(&hash, &keys::lookup_hash(&MASTER, &presented)), same, "{presented:?}");
    assert_eq!(EDGE.digest(&presented) == EDGE.digest(&stored), same);

    let (revoked, disabled) = (flags & 8 != 0, flags & 16 != 0);
    let expires_at = (flags & 32 != 0).then(|| time(&head[2..10]));
    let valid_until = (flags & 64 != 0).then(|| time(&head[10..18]));
    let now = time(&head[18..26]);
    let code = keys::standing(revoked, disabled, expires_at, valid_until, now);
    let live = |t: Option<NaiveDateTime>| t.is_none_or(|t| t > now);
    assert_eq!(code == VerifyCode::Valid, !revoked && !disabled && live(expires_at) && live(valid_until));
    if revoked {
        assert_eq!(code, VerifyCode::Revoked, "a revoked key never verifies again");
    }
});
