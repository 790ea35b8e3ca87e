//! JWT parsing and verification: `platform::auth::{eddsa_kid, verify, VerifiedTokens::verify}`.
//!
//! Mode byte 0 (low 2 bits):
//! - 0: the rest as an arbitrary token string;
//! - 1: arbitrary header JSON, a valid payload, signed with the real key;
//! - 2: the default EdDSA header and an arbitrary payload JSON, signed with the real key
//!   (reaches claims decoding and validation past the signature);
//! - 3: byte edits (position, value pairs) of a valid, freshly signed token.
#![no_main]

use std::sync::OnceLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use ed25519_dalek::Signer;
use fountain::platform::auth::{self, Claims, VerifiedTokens};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use libfuzzer_sys::fuzz_target;

const ISSUER: &str = "fountain-kms";
const AUDIENCE: &str = "fountain";

struct Keys {
    signing: ed25519_dalek::SigningKey,
    decoding: DecodingKey,
    valid: String,
    cache: VerifiedTokens,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let signing = ed25519_dalek::SigningKey::from_bytes(&[42u8; 32]);
        let der = signing.to_pkcs8_der().expect("pkcs8");
        let x = URL_SAFE_NO_PAD.encode(signing.verifying_key().as_bytes());
        let decoding = DecodingKey::from_ed_components(&x).expect("public key");
        // Far in the future, so the valid token stays valid for the whole run.
        let now = 4_000_000_000i64;
        let claims = Claims {
            sub: "alice".into(),
            roles: vec!["user".into()],
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            exp: now + 3600,
            iat: 1_700_000_000,
            nbf: 1_700_000_000,
            jti: "fuzz".into(),
            mfa: None,
            sid: Some("session".into()),
            uid: Some(1),
            epoch: Some(0),
            akid: None,
            amr: None,
            mfa_pending: None,
        };
        let header = Header { kid: Some("k1".into()), ..Header::new(Algorithm::EdDSA) };
        let valid =
            jsonwebtoken::encode(&header, &claims, &EncodingKey::from_ed_der(der.as_bytes())).expect("sign");
        Keys { signing, decoding, valid, cache: VerifiedTokens::new(64, ISSUER, AUDIENCE) }
    })
}

fn signed(keys: &Keys, header: &[u8], payload: &[u8]) -> String {
    let message = format!("{}.{}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(payload));
    let signature = keys.signing.sign(message.as_bytes());
    format!("{message}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()))
}

fn check(keys: &Keys, token: &str) {
    let kid = auth::eddsa_kid(token);
    let direct = auth::verify(token, &keys.decoding, ISSUER, AUDIENCE);
    if let Ok(claims) = &direct {
        // A token that verifies came from this key: its claims name our issuer and audience.
        assert_eq!(claims.iss, ISSUER);
        assert_eq!(claims.aud, AUDIENCE);
    }
    let cached = keys.cache.verify(token, |k| (k == "k1").then(|| keys.decoding.clone()));
    if let Ok(claims) = &cached {
        assert!(kid.is_ok(), "the cache accepted a token without a well-formed EdDSA kid");
        assert_eq!(claims.iss, ISSUER);
    }
    let _ = token.len();
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let keys = keys();
    match mode & 3 {
        0 => {
            if let Ok(token) = std::str::from_utf8(rest) {
                check(keys, token);
            }
        }
        1 => {
            let payload = keys.valid.split('.').nth(1).unwrap();
            let payload = URL_SAFE_NO_PAD.decode(payload).unwrap();
            check(keys, &signed(keys, rest, &payload));
        }
        2 => {
            check(keys, &signed(keys, br#"{"typ":"JWT","alg":"EdDSA","kid":"k1"}"#, rest));
        }
        _ => {
            let mut token = keys.valid.clone().into_bytes();
            for edit in rest.chunks(3) {
                if let [hi, lo, value] = *edit {
                    let at = usize::from(u16::from_be_bytes([hi, lo]));
                    if at < token.len() {
                        token[at] = value;
                    } else if value & 1 == 0 {
                        token.truncate(at % (token.len() + 1));
                    } else {
                        token.push(value >> 1);
                    }
                }
            }
            if let Ok(token) = String::from_utf8(token) {
                check(keys, &token);
            }
        }
    }
});
