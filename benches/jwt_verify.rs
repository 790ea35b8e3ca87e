//! In-process JWT verification: fountain's `platform::auth` (decode header, pick key, verify
//! EdDSA signature and claims) on one thread. Run with `cargo bench --bench jwt_verify`.

use std::time::{Duration, Instant};

use base64::Engine;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use fountain::platform::auth::{self, Claims};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};

fn main() {
    let key = ed25519_dalek::SigningKey::from_bytes(&[42u8; 32]);
    let der = key.to_pkcs8_der().expect("pkcs8");
    let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key.verifying_key().as_bytes());
    let decoding = DecodingKey::from_ed_components(&x).expect("public key");
    let now = chrono::Utc::now().timestamp();
    let claims = Claims {
        sub: "alice".into(),
        roles: vec!["user".into()],
        iss: "fountain-kms".into(),
        aud: "fountain".into(),
        exp: now + 3600,
        iat: now,
        nbf: now,
        jti: "bench".into(),
        mfa: None,
        sid: Some("session".into()),
        uid: Some(1),
        epoch: Some(0),
        akid: None,
        amr: None,
        mfa_pending: None,
    };
    let header = Header { kid: Some("k1".into()), ..Header::new(Algorithm::EdDSA) };
    let token =
        jsonwebtoken::encode(&header, &claims, &EncodingKey::from_ed_der(der.as_bytes())).expect("sign");

    measure("jwt_verify signature (every call)", || {
        let kid = auth::eddsa_kid(&token).expect("kid");
        assert_eq!(kid, "k1");
        auth::verify(&token, &decoding, "fountain-kms", "fountain").expect("valid");
    });
    let cache = auth::VerifiedTokens::new(10_000, "fountain-kms", "fountain");
    measure("jwt_verify cached (repeat token)", || {
        cache.verify(&token, |_| Some(decoding.clone())).expect("valid");
    });
}

fn measure(name: &str, mut once: impl FnMut()) {
    for _ in 0..2_000 {
        once();
    }
    let mut samples = Vec::with_capacity(1_000_000);
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(4) {
        let t = Instant::now();
        once();
        samples.push(t.elapsed());
    }
    let total = started.elapsed();
    samples.sort_unstable();
    let pct = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
    println!(
        "{name}: {:.0}/s on one thread; p50 {:.2} us, p99 {:.2} us ({} samples)",
        samples.len() as f64 / total.as_secs_f64(),
        pct(0.50).as_secs_f64() * 1e6,
        pct(0.99).as_secs_f64() * 1e6,
        samples.len()
    );
}
