//! Tokens this worker admitted recently. Every request with a bearer token would otherwise lock
//! the shared verified-token cache, share one reference count across workers and read-lock the
//! revocation lists: atomic writes to cache lines every core writes, on every request. A worker
//! remembers the tokens it let through, with its own copy of their claims, for as long as the
//! revocation lists have not changed (their generation) and the token is inside its validity
//! window. Anything else goes the full way (`RemoteKeys::check` and the revocation check).
//! The identity headers services receive are made once per admitted token, too.
//!
//! Entries are found by a seeded (per worker, random) foldhash of the token — a SHA-256 digest
//! cost more than the rest of the lookup — and a hit counts only if the stored token equals the
//! presented one, compared in constant time.

use std::cell::RefCell;
use std::rc::Rc;

use std::hash::BuildHasher;

use hyper::header::HeaderValue;
use rustc_hash::FxHashMap;

use crate::platform::auth::{Claims, LEEWAY_SECONDS};
use crate::platform::crypto::constant_time_eq;

/// Tokens remembered per worker; past this the memo starts over.
const CAPACITY: usize = 4096;

/// A token this worker let through.
pub struct AdmittedToken {
    pub claims: Claims,
    /// `X-Fountain-User` as services receive it (None if the subject is no valid header value).
    pub user_header: Option<HeaderValue>,
    /// `X-Fountain-Roles`: the roles, comma-separated.
    pub roles_header: Option<HeaderValue>,
    /// A service token (its rate bucket is the service's, not a user's of the same name).
    pub service: bool,
}

struct Admitted {
    /// The token itself, to rule out another token with the same hash.
    text: Box<str>,
    /// The revocation generation the token was checked against.
    generation: u64,
    token: Rc<AdmittedToken>,
}

thread_local! {
    /// By (gateway instance, hash of the token).
    static ADMITTED: RefCell<FxHashMap<(u64, u64), Admitted>> = RefCell::new(FxHashMap::default());
    static SEED: foldhash::quality::RandomState = foldhash::quality::RandomState::default();
}

/// The token's key in this worker's memo.
pub fn digest(token: &str) -> u64 {
    SEED.with(|seed| seed.hash_one(token))
}

/// A token this worker admitted under revocation generation `generation`, while it is still
/// valid now.
pub fn recall(gateway: u64, digest: u64, text: &str, generation: u64) -> Option<Rc<AdmittedToken>> {
    let now = chrono::Utc::now().timestamp();
    let leeway = LEEWAY_SECONDS as i64;
    ADMITTED.with_borrow(|admitted| {
        let entry = admitted.get(&(gateway, digest))?;
        let claims = &entry.token.claims;
        let current = entry.generation == generation
            && claims.exp + leeway >= now
            && claims.nbf - leeway <= now
            && constant_time_eq(entry.text.as_bytes(), text.as_bytes());
        current.then(|| entry.token.clone())
    })
}

/// Remembers a token that passed every check under `generation`; returns this worker's copy.
pub fn remember(
    gateway: u64,
    digest: u64,
    text: &str,
    generation: u64,
    claims: &Claims,
) -> Rc<AdmittedToken> {
    let token = Rc::new(AdmittedToken {
        claims: claims.clone(),
        user_header: HeaderValue::from_str(&claims.sub).ok(),
        roles_header: HeaderValue::from_str(&claims.roles.join(",")).ok(),
        service: claims.is_service(),
    });
    ADMITTED.with_borrow_mut(|admitted| {
        if admitted.len() >= CAPACITY {
            admitted.clear();
        }
        let entry = Admitted { text: text.into(), generation, token: token.clone() };
        admitted.insert((gateway, digest), entry);
    });
    token
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(sub: &str, exp_in: i64) -> Claims {
        let now = chrono::Utc::now().timestamp();
        Claims {
            sub: sub.into(),
            roles: vec!["admin".into(), "editor".into()],
            iss: "fountain-kms".into(),
            aud: "fountain".into(),
            exp: now + exp_in,
            iat: now,
            nbf: now,
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
    fn a_token_is_recalled_only_by_its_own_text_generation_and_validity() {
        let gateway = 9001;
        let token = "header.payload.signature";
        let admitted = remember(gateway, digest(token), token, 3, &claims("ann", 60));
        assert_eq!(admitted.roles_header.as_ref().unwrap(), "admin,editor");
        assert!(recall(gateway, digest(token), token, 3).is_some());
        // Another token under the same hash (a collision) is not the admitted one.
        assert!(recall(gateway, digest(token), "header.payload.forged", 3).is_none());
        // Revocation lists changed since: the full check runs again.
        assert!(recall(gateway, digest(token), token, 4).is_none());
        // Another gateway instance in the same process never shares a memo entry.
        assert!(recall(gateway + 1, digest(token), token, 3).is_none());

        let expired = "expired.payload.signature";
        remember(gateway, digest(expired), expired, 3, &claims("bob", -(LEEWAY_SECONDS as i64) - 5));
        assert!(recall(gateway, digest(expired), expired, 3).is_none());
    }
}
