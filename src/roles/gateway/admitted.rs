//! Tokens this worker admitted recently. Every request with a bearer token would otherwise lock
//! the shared verified-token cache, share one reference count across workers and read-lock the
//! revocation lists: atomic writes to cache lines every core writes, on every request. A worker
//! remembers the tokens it let through, with its own copy of their claims, for as long as the
//! revocation lists have not changed (their generation) and the token is inside its validity
//! window. Anything else goes the full way (`RemoteKeys::check` and the revocation check).
//! The identity headers services receive are made once per admitted token, too.

use std::cell::RefCell;
use std::rc::Rc;

use hyper::header::HeaderValue;
use rustc_hash::FxHashMap;

use crate::platform::auth::{Claims, LEEWAY_SECONDS};

/// Tokens remembered per worker; past this the memo starts over.
const CAPACITY: usize = 4096;

/// A token this worker let through.
pub struct AdmittedToken {
    pub claims: Claims,
    /// `X-Fountain-User` as services receive it (None if the subject is no valid header value).
    pub user_header: Option<HeaderValue>,
    /// `X-Fountain-Roles`: the roles, comma-separated.
    pub roles_header: Option<HeaderValue>,
}

struct Admitted {
    /// The revocation generation the token was checked against.
    generation: u64,
    token: Rc<AdmittedToken>,
}

thread_local! {
    /// By (gateway instance, SHA-256 of the token).
    static ADMITTED: RefCell<FxHashMap<(u64, [u8; 32]), Admitted>> = RefCell::new(FxHashMap::default());
}

pub fn digest(token: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(token.as_bytes()).into()
}

/// A token this worker admitted under revocation generation `generation`, while it is still
/// valid now.
pub fn recall(gateway: u64, digest: &[u8; 32], generation: u64) -> Option<Rc<AdmittedToken>> {
    let now = chrono::Utc::now().timestamp();
    let leeway = LEEWAY_SECONDS as i64;
    ADMITTED.with_borrow(|admitted| {
        let entry = admitted.get(&(gateway, *digest))?;
        let claims = &entry.token.claims;
        let current =
            entry.generation == generation && claims.exp + leeway >= now && claims.nbf - leeway <= now;
        current.then(|| entry.token.clone())
    })
}

/// Remembers a token that passed every check under `generation`; returns this worker's copy.
pub fn remember(gateway: u64, digest: [u8; 32], generation: u64, claims: &Claims) -> Rc<AdmittedToken> {
    let token = Rc::new(AdmittedToken {
        claims: claims.clone(),
        user_header: HeaderValue::from_str(&claims.sub).ok(),
        roles_header: HeaderValue::from_str(&claims.roles.join(",")).ok(),
    });
    ADMITTED.with_borrow_mut(|admitted| {
        if admitted.len() >= CAPACITY {
            admitted.clear();
        }
        admitted.insert((gateway, digest), Admitted { generation, token: token.clone() });
    });
    token
}
