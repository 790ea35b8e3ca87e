//! Tokens an attacker can make without kms's private key.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};

use super::TestApp;

fn raw_token(header: Value, claims: Value, signature: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        URL_SAFE_NO_PAD.encode(signature)
    )
}

/// Tokens an attacker can make without kms's private key: `alg: none` (with and without the real
/// kid), HS256 keyed with the published public key, a foreign Ed25519 key under the real kid and
/// under an unknown one, a tampered real token, and garbage. Also checks the JWKS's shape.
pub async fn forged_tokens(app: &TestApp, real_token: &str) -> Vec<String> {
    let jwks = app.kms().jwks().await;
    let jwk = &jwks["keys"][0];
    assert_eq!(
        (jwk["kty"].as_str(), jwk["crv"].as_str(), jwk["alg"].as_str()),
        (Some("OKP"), Some("Ed25519"), Some("EdDSA"))
    );
    assert_eq!(jwk["use"], "sig");
    let kid = jwk["kid"].as_str().unwrap();
    let public = URL_SAFE_NO_PAD.decode(jwk["x"].as_str().unwrap()).unwrap();
    let now = chrono::Utc::now().timestamp();
    let claims = json!({"sub": "root", "roles": ["admin"], "iss": "fountain-kms", "aud": "fountain",
                        "exp": now + 600, "iat": now, "nbf": now, "jti": "forged"});
    let hs256_with_public_key = jsonwebtoken::encode(
        &jsonwebtoken::Header {
            kid: Some(kid.into()),
            ..jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256)
        },
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(&public),
    )
    .unwrap();
    let other_key = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
    let other_der = ed25519_dalek::pkcs8::EncodePrivateKey::to_pkcs8_der(&other_key).unwrap();
    let sign_with_other = |kid: &str| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header {
                kid: Some(kid.into()),
                ..jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA)
            },
            &claims,
            &jsonwebtoken::EncodingKey::from_ed_der(other_der.as_bytes()),
        )
        .unwrap()
    };
    let mut tampered = real_token.to_string();
    tampered.insert(real_token.find('.').unwrap() + 2, 'x');
    vec![
        raw_token(json!({"alg": "none", "typ": "JWT", "kid": kid}), claims.clone(), b""),
        raw_token(json!({"alg": "none", "typ": "JWT"}), claims.clone(), b""),
        hs256_with_public_key,
        sign_with_other(kid),
        sign_with_other("unknown-kid"),
        tampered,
        "not-a-token".to_string(),
    ]
}
