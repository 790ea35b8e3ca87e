//! JWT claims and local verification, shared by every role that checks tokens.
//!
//! Only EdDSA (Ed25519) tokens with a known `kid` are accepted: `alg: none`, HS256 (including
//! HS256 "signed" with a published public key) and every other algorithm are refused before any
//! key is touched. `iss`, `aud`, `exp`, `nbf` and `iat` are required and checked.

use std::collections::HashSet;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};

use super::error::{ApiError, ErrorCode};

/// Clock skew tolerated on `exp` and `nbf`.
pub const LEEWAY_SECONDS: u64 = 5;

/// The role name that grants administration. Matched exactly, never as a substring.
pub const ADMIN_ROLE: &str = "admin";
/// The role carried by service tokens (client credentials).
pub const SERVICE_ROLE: &str = "service";
/// The service that issues step-up tokens (through kms): the one place a token that still owes
/// its second factor may go, besides logging out.
pub const STEP_UP_SERVICE: &str = "twofa";
/// Where a client steps up, through the gateway.
pub const STEP_UP_PATH: &str = "/twofa/2fa/verify";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub roles: Vec<String>,
    pub iss: String,
    pub aud: String,
    pub exp: i64,
    pub iat: i64,
    pub nbf: i64,
    pub jti: String,
    /// Set by the 2FA step-up: the holder proved a second factor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mfa: Option<bool>,
    /// The login session (refresh-token family) this access token belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// The account's identity (never reused: a re-created username gets a new one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<i64>,
    /// The account's token epoch at issue; raised by every change of roles or enabled state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<i64>,
    /// Service tokens: the id of the API key they were obtained with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub akid: Option<i64>,
    /// Step-up tokens: how the holder authenticated (RFC 8176: `["pwd", "otp"]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amr: Option<Vec<String>>,
    /// Set at login for members of `[roles.twofa] required_for_roles`: the token reaches only
    /// twofa (enrolment and verification) and logout until a step-up token replaces it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mfa_pending: Option<bool>,
}

impl Claims {
    /// Exact role membership: `superadmin` or `admin2` is not `admin`.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }

    pub fn is_admin(&self) -> bool {
        self.has_role(ADMIN_ROLE)
    }

    pub fn is_service(&self) -> bool {
        self.has_role(SERVICE_ROLE)
    }

    /// The account's policy requires a second factor this token has not proven: it may only
    /// step up or log out.
    pub fn step_up_pending(&self) -> bool {
        self.mfa_pending == Some(true) && self.mfa != Some(true)
    }
}

/// The answer to a caller without the second factor a route requires: 403 `mfa_required`,
/// naming where to step up.
pub fn mfa_required(message: &str) -> ApiError {
    ApiError::new(ErrorCode::MfaRequired, message)
        .with_details(serde_json::json!({ "mfaRequired": true, "stepUp": STEP_UP_PATH }))
}

/// Why a token was refused. Clients see one uniform 401; the reason goes to logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    Malformed,
    Algorithm,
    UnknownKey,
    BadSignature,
    Expired,
    NotYetValid,
    WrongIssuer,
    WrongAudience,
    Revoked,
    Disabled,
}

impl Rejection {
    pub fn reason(self) -> &'static str {
        match self {
            Rejection::Malformed => "malformed",
            Rejection::Algorithm => "algorithm",
            Rejection::UnknownKey => "unknown_kid",
            Rejection::BadSignature => "signature",
            Rejection::Expired => "expired",
            Rejection::NotYetValid => "not_yet_valid",
            Rejection::WrongIssuer => "issuer",
            Rejection::WrongAudience => "audience",
            Rejection::Revoked => "revoked",
            Rejection::Disabled => "disabled",
        }
    }
}

impl From<Rejection> for ApiError {
    fn from(rejection: Rejection) -> Self {
        log::info!(target: "fountain::auth", reason = rejection.reason(); "token rejected");
        invalid_token()
    }
}

/// The one answer every bad token gets, so that a client learns nothing about why.
pub fn invalid_token() -> ApiError {
    ApiError::new(ErrorCode::Unauthorized, "invalid or expired token")
}

/// The `kid` of a token whose header is well-formed EdDSA, or why it is not.
pub fn eddsa_kid(token: &str) -> Result<String, Rejection> {
    let header = jsonwebtoken::decode_header(token).map_err(|_| Rejection::Malformed)?;
    if header.alg != Algorithm::EdDSA {
        return Err(Rejection::Algorithm);
    }
    header.kid.filter(|k| !k.is_empty()).ok_or(Rejection::Malformed)
}

/// Verifies signature and claims of an EdDSA token with the key its `kid` names.
pub fn verify(token: &str, key: &DecodingKey, issuer: &str, audience: &str) -> Result<Claims, Rejection> {
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.leeway = LEEWAY_SECONDS;
    validation.validate_nbf = true;
    validation.set_issuer(&[issuer]);
    validation.set_audience(&[audience]);
    validation.required_spec_claims =
        ["exp", "nbf", "iat", "sub", "iss", "aud"].into_iter().map(String::from).collect::<HashSet<_>>();
    jsonwebtoken::decode::<Claims>(token, key, &validation).map(|data| data.claims).map_err(|err| {
        use jsonwebtoken::errors::ErrorKind;
        match err.kind() {
            ErrorKind::ExpiredSignature => Rejection::Expired,
            ErrorKind::ImmatureSignature => Rejection::NotYetValid,
            ErrorKind::InvalidIssuer => Rejection::WrongIssuer,
            ErrorKind::InvalidAudience => Rejection::WrongAudience,
            ErrorKind::InvalidSignature => Rejection::BadSignature,
            ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => Rejection::Algorithm,
            _ => Rejection::Malformed,
        }
    })
}

/// A bounded cache of tokens whose signature and claims were verified, keyed by the SHA-256 of
/// the whole token: a hit is the same bytes, hence the same signature, so the ~35 µs Ed25519
/// verification is paid once per token instead of once per request. `exp` and `nbf` are checked
/// again on every hit; revocation stays the caller's check (denylist, events).
pub struct VerifiedTokens {
    /// Shared claims: a hit hands out a reference count, not a copy of every string.
    entries: std::sync::Mutex<std::collections::HashMap<[u8; 32], std::sync::Arc<Claims>>>,
    capacity: usize,
    issuer: String,
    audience: String,
}

impl VerifiedTokens {
    /// A cache for tokens of one issuer and audience, holding at most `capacity` tokens.
    pub fn new(capacity: usize, issuer: &str, audience: &str) -> Self {
        Self {
            entries: std::sync::Mutex::new(std::collections::HashMap::new()),
            capacity: capacity.max(1),
            issuer: issuer.to_string(),
            audience: audience.to_string(),
        }
    }

    fn digest(token: &str) -> [u8; 32] {
        use sha2::Digest;
        sha2::Sha256::digest(token.as_bytes()).into()
    }

    /// Verifies `token`, from the cache when it was verified before and is still in its
    /// validity window. `key_for` maps a `kid` to its public key.
    pub fn verify(
        &self,
        token: &str,
        key_for: impl FnOnce(&str) -> Option<DecodingKey>,
    ) -> Result<std::sync::Arc<Claims>, Rejection> {
        let digest = Self::digest(token);
        let now = chrono::Utc::now().timestamp();
        let leeway = LEEWAY_SECONDS as i64;
        let cached = self.entries.lock().unwrap_or_else(|e| e.into_inner()).get(&digest).cloned();
        if let Some(claims) = cached {
            if claims.exp + leeway < now {
                return Err(Rejection::Expired);
            }
            if claims.nbf - leeway > now {
                return Err(Rejection::NotYetValid);
            }
            return Ok(claims);
        }
        let kid = eddsa_kid(token)?;
        let key = key_for(&kid).ok_or(Rejection::UnknownKey)?;
        let claims = std::sync::Arc::new(verify(token, &key, &self.issuer, &self.audience)?);
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= self.capacity {
            entries.retain(|_, c| c.exp + leeway >= now);
            if entries.len() >= self.capacity {
                entries.clear();
            }
        }
        entries.insert(digest, claims.clone());
        Ok(claims)
    }

    /// Drops a token from the cache (after logout, so a revoked token is re-examined).
    pub fn forget(&self, token: &str) {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).remove(&Self::digest(token));
    }
}

/// The bearer token of a request, if it carries one.
pub fn bearer_token(req: &actix_web::HttpRequest) -> Option<&str> {
    // On bytes: `HeaderValue::to_str` checks the whole (long) token character by character on
    // every request; a token is ASCII or it fails verification anyway.
    let value = req.headers().get(actix_web::http::header::AUTHORIZATION)?.as_bytes();
    let (scheme, token) = value.split_at_checked(value.iter().position(|&b| b == b' ')?)?;
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    let token = std::str::from_utf8(token).ok()?.trim();
    (!token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_are_read_from_the_authorization_header_only_when_well_formed() {
        use actix_web::http::header::{HeaderValue, AUTHORIZATION};
        let token_of = |value: &[u8]| {
            let req = actix_web::test::TestRequest::default()
                .insert_header((AUTHORIZATION, HeaderValue::from_bytes(value).unwrap()))
                .to_http_request();
            bearer_token(&req).map(str::to_string)
        };
        assert_eq!(token_of(b"Bearer abc.def.ghi").as_deref(), Some("abc.def.ghi"));
        assert_eq!(token_of(b"bearer   abc ").as_deref(), Some("abc"));
        assert_eq!(token_of(b"BEARER abc").as_deref(), Some("abc"));
        for refused in [
            &b"Basic abc"[..],
            b"Bearer",
            b"Bearer ",
            b"Bearer    ",
            b"Bearerabc",
            b"Token abc",
            b"Bearer \xff\xfe",
        ] {
            assert_eq!(token_of(refused), None, "{:?}", String::from_utf8_lossy(refused));
        }
        assert_eq!(bearer_token(&actix_web::test::TestRequest::default().to_http_request()), None);
    }

    fn claims(roles: &[&str]) -> Claims {
        Claims {
            sub: "u".into(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            iss: "i".into(),
            aud: "a".into(),
            exp: 0,
            iat: 0,
            nbf: 0,
            jti: "j".into(),
            mfa: None,
            sid: None,
            uid: Some(1),
            epoch: Some(0),
            akid: None,
            amr: None,
            mfa_pending: None,
        }
    }

    #[test]
    fn roles_match_exactly() {
        assert!(claims(&["user", "admin"]).is_admin());
        for near_miss in ["superadmin", "admin2", "Admin", "ADMIN", " admin", "administrator"] {
            assert!(!claims(&[near_miss]).is_admin(), "{near_miss}");
        }
        assert!(!claims(&["services"]).is_service());
    }

    fn signed(claims: &Claims) -> (String, DecodingKey) {
        use base64::Engine;
        use ed25519_dalek::pkcs8::EncodePrivateKey;
        let key = ed25519_dalek::SigningKey::from_bytes(&[9u8; 32]);
        let der = key.to_pkcs8_der().unwrap();
        let header =
            jsonwebtoken::Header { kid: Some("k1".into()), ..jsonwebtoken::Header::new(Algorithm::EdDSA) };
        let token =
            jsonwebtoken::encode(&header, claims, &jsonwebtoken::EncodingKey::from_ed_der(der.as_bytes()))
                .unwrap();
        let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key.verifying_key().as_bytes());
        (token, DecodingKey::from_ed_components(&x).unwrap())
    }

    /// Claims kms would issue now: right issuer and audience, valid for a minute.
    fn valid_claims(now: i64) -> Claims {
        Claims { iss: "kms".into(), aud: "fountain".into(), exp: now + 60, iat: now, nbf: now, ..claims(&[]) }
    }

    #[test]
    fn claims_are_checked_after_the_signature() {
        let now = chrono::Utc::now().timestamp();
        let good = valid_claims(now);
        let check = |c: Claims| {
            let (token, key) = signed(&c);
            assert_eq!(eddsa_kid(&token).as_deref(), Ok("k1"));
            verify(&token, &key, "kms", "fountain")
        };
        assert_eq!(check(good.clone()), Ok(good.clone()));
        assert_eq!(check(Claims { iss: "evil".into(), ..good.clone() }), Err(Rejection::WrongIssuer));
        assert_eq!(check(Claims { aud: "other".into(), ..good.clone() }), Err(Rejection::WrongAudience));
        assert_eq!(check(Claims { exp: now - 60, ..good.clone() }), Err(Rejection::Expired));
        assert_eq!(check(Claims { nbf: now + 60, ..good.clone() }), Err(Rejection::NotYetValid));
        let (token, _) = signed(&good);
        let other = ed25519_dalek::SigningKey::from_bytes(&[8u8; 32]);
        use base64::Engine;
        let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(other.verifying_key().as_bytes());
        let wrong_key = DecodingKey::from_ed_components(&x).unwrap();
        assert_eq!(verify(&token, &wrong_key, "kms", "fountain"), Err(Rejection::BadSignature));
    }

    #[test]
    fn the_cache_returns_verified_claims_and_still_honours_expiry() {
        let now = chrono::Utc::now().timestamp();
        let good = valid_claims(now);
        let (token, key) = signed(&good);
        let cache = VerifiedTokens::new(2, "kms", "fountain");
        assert_eq!(cache.verify(&token, |_| Some(key.clone())), Ok(std::sync::Arc::new(good.clone())));
        // A hit needs no key at all.
        assert_eq!(cache.verify(&token, |_| None), Ok(std::sync::Arc::new(good.clone())));
        cache.forget(&token);
        assert_eq!(cache.verify(&token, |_| None), Err(Rejection::UnknownKey));
        let (bad, key2) = signed(&Claims { aud: "x".into(), ..good.clone() });
        assert_eq!(cache.verify(&bad, |_| Some(key2.clone())), Err(Rejection::WrongAudience));
        assert_eq!(
            cache.verify(&bad, |_| Some(key2)),
            Err(Rejection::WrongAudience),
            "failures are never cached"
        );
        let (expired, key3) = signed(&Claims { exp: now - 60, ..good.clone() });
        assert_eq!(cache.verify(&expired, |_| Some(key3)), Err(Rejection::Expired));
        for i in 0..5 {
            let (t, k) = signed(&Claims { jti: format!("j{i}"), ..good.clone() });
            assert!(cache.verify(&t, |_| Some(k)).is_ok());
        }
        assert!(cache.entries.lock().unwrap().len() <= 2, "bounded");
    }

    #[test]
    fn alg_none_and_hs256_headers_are_refused_before_key_lookup() {
        // {"alg":"none","typ":"JWT"}.{"sub":"x"}.
        let none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJ4In0.";
        assert!(eddsa_kid(none).is_err());
        let hs = jsonwebtoken::encode(
            &jsonwebtoken::Header { kid: Some("k".into()), ..jsonwebtoken::Header::new(Algorithm::HS256) },
            &claims(&["admin"]),
            &jsonwebtoken::EncodingKey::from_secret(b"public key bytes"),
        )
        .unwrap();
        assert_eq!(eddsa_kid(&hs), Err(Rejection::Algorithm));
        assert_eq!(eddsa_kid("not.a.jwt"), Err(Rejection::Malformed));
    }
}
