//! The one trust path: every role of a process checks callers through one [`Verifier`] —
//! signature (kms's own keys inside kms, its JWKS elsewhere), claims, and revocation.
//!
//! Revocation is fed by kms's security events (logged-out tokens, ended sessions, account
//! changes, key changes), read from the durable events table and honoured only when kms
//! published them. A change committed in this process is applied before its request answers
//! (the unit of work hands committed events over); other processes follow the table.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::DecodingKey;
use serde::Deserialize;

use super::auth::{Claims, Rejection, VerifiedTokens};
use super::contracts::{
    AccountChange, Event, KeyChanged, KeyRevoked, SessionRevoked, SigningKeyRotated, TokenRevoked,
    UserChanged, TRUSTED_ISSUER_ROLE,
};
use super::db::{Db, DbError};
use super::error::ApiError;
use super::events::{self, StoredEvent};

/// The shortest time between two JWKS fetches (or local key reloads) for unknown `kid`s.
const REFETCH_INTERVAL: Duration = Duration::from_secs(5);
/// How often other processes' security events are looked for when nothing wakes the follower.
const FOLLOW_POLL: Duration = Duration::from_millis(200);
/// Longest accepted `jti` or `sid` in a revocation: anything longer is not kms's.
const MAX_ID_LEN: usize = 128;

/// Why a token was not accepted.
#[derive(Debug)]
pub enum CheckFailure {
    /// The token itself is bad or revoked (clients see one uniform 401).
    Rejected(Rejection),
    /// kms's keys could not be fetched.
    Unavailable(ApiError),
}

impl From<Rejection> for CheckFailure {
    fn from(rejection: Rejection) -> Self {
        Self::Rejected(rejection)
    }
}

impl From<CheckFailure> for ApiError {
    fn from(failure: CheckFailure) -> Self {
        match failure {
            CheckFailure::Rejected(rejection) => rejection.into(),
            CheckFailure::Unavailable(err) => err,
        }
    }
}

/// Keys held by the role that signs (kms): verification without a network round trip.
pub trait LocalKeys: Send + Sync + 'static {
    fn decoding_key(&self, kid: &str) -> Option<DecodingKey>;
    /// Reloads the keys from storage (blocking): another replica may have rotated.
    fn reload(&self) -> Result<(), String>;
}

/// The public keys as kms publishes them, fetched over HTTP and cached.
struct RemoteKeys {
    jwks_url: String,
    keys: RwLock<HashMap<String, DecodingKey>>,
}

#[derive(Deserialize)]
struct JwkSet {
    keys: Vec<Jwk>,
}

#[derive(Deserialize)]
struct Jwk {
    kty: String,
    crv: Option<String>,
    x: Option<String>,
    kid: Option<String>,
}

impl RemoteKeys {
    fn key(&self, kid: &str) -> Option<DecodingKey> {
        self.keys.read().unwrap_or_else(|e| e.into_inner()).get(kid).cloned()
    }

    async fn fetch(&self) -> Result<(), ApiError> {
        let client = awc::Client::builder().timeout(Duration::from_secs(5)).finish();
        let unavailable = |reason: String| ApiError::unavailable("kms", reason);
        let mut response = client
            .get(&self.jwks_url)
            .send()
            .await
            .map_err(|e| unavailable(format!("{}: {e}", self.jwks_url)))?;
        if !response.status().is_success() {
            return Err(unavailable(format!("{} answered {}", self.jwks_url, response.status())));
        }
        let set: JwkSet = response.json().limit(1 << 20).await.map_err(|e| unavailable(e.to_string()))?;
        let keys: HashMap<String, DecodingKey> = set
            .keys
            .into_iter()
            .filter(|k| k.kty == "OKP" && k.crv.as_deref() == Some("Ed25519"))
            .filter_map(|k| Some((k.kid?, DecodingKey::from_ed_components(&k.x?).ok()?)))
            .collect();
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = keys;
        Ok(())
    }
}

/// One per process: verifies tokens for every role it serves.
pub struct Verifier {
    verified: VerifiedTokens,
    remote: Arc<RemoteKeys>,
    local: OnceLock<Arc<dyn LocalKeys>>,
    /// When keys were last (re)loaded because of an unknown `kid`, and the count of kms's
    /// signing-key rotations known then. Held across the reload so concurrent requests with a
    /// new `kid` wait for one reload instead of each starting one.
    last_refresh: Arc<tokio::sync::Mutex<Option<(Instant, u64)>>>,
    revocations: Arc<Revocations>,
}

impl Verifier {
    /// A verifier for tokens of `issuer` for `audience`, fetching keys from `kms_url` unless
    /// kms's own keys are installed with [`Verifier::use_local_keys`].
    pub fn new(issuer: &str, audience: &str, kms_url: &str) -> Self {
        Self {
            verified: VerifiedTokens::new(10_000, issuer, audience),
            remote: Arc::new(RemoteKeys {
                jwks_url: format!("{}/.well-known/jwks.json", kms_url.trim_end_matches('/')),
                keys: RwLock::new(HashMap::new()),
            }),
            local: OnceLock::new(),
            last_refresh: Arc::new(tokio::sync::Mutex::new(None)),
            revocations: Arc::new(Revocations::default()),
        }
    }

    /// kms verifies with the keys it signs with, not through its own JWKS.
    pub fn use_local_keys(&self, keys: Arc<dyn LocalKeys>) {
        let _ = self.local.set(keys);
    }

    pub fn revocations(&self) -> &Arc<Revocations> {
        &self.revocations
    }

    fn key(&self, kid: &str) -> Option<DecodingKey> {
        match self.local.get() {
            Some(local) => local.decoding_key(kid),
            None => self.remote.key(kid),
        }
    }

    /// Verifies a bearer token completely: signature, claims, identity and revocation.
    pub async fn check(&self, token: &str) -> Result<Arc<Claims>, CheckFailure> {
        let claims = match self.verified.verify(token, |kid| self.key(kid)) {
            Err(Rejection::UnknownKey) => {
                self.refresh_keys().await?;
                self.verified.verify(token, |kid| self.key(kid))?
            }
            other => other?,
        };
        self.revocations.check(&claims)?;
        Ok(claims)
    }

    /// Verifies and hands out an owned copy of the claims.
    pub async fn verify(&self, token: &str) -> Result<Claims, ApiError> {
        Ok(Arc::unwrap_or_clone(self.check(token).await?))
    }

    /// Reloads the keys for an unknown `kid`, at most once per [`REFETCH_INTERVAL`]. The reload
    /// runs as its own task: a caller that goes away (a cancelled request) cannot cancel it, so
    /// nobody can stamp the cool-down without the keys actually having been reloaded.
    async fn refresh_keys(&self) -> Result<(), CheckFailure> {
        let last_refresh = self.last_refresh.clone();
        let local = self.local.get().cloned();
        let remote = self.remote.clone();
        let rotations = self.revocations.signing_rotations.load(Ordering::Acquire);
        let reload = actix_web::rt::spawn(async move {
            let mut last = last_refresh.lock().await;
            // The cool-down holds unless kms announced a rotation since the last reload.
            if last.is_some_and(|(at, seen)| at.elapsed() < REFETCH_INTERVAL && seen == rotations) {
                return Ok(());
            }
            let result = match local {
                Some(local) => actix_web::rt::task::spawn_blocking(move || local.reload())
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|r| r)
                    .map_err(ApiError::internal),
                None => remote.fetch().await,
            };
            *last = Some((Instant::now(), rotations));
            result
        });
        match reload.await {
            Ok(result) => result.map_err(CheckFailure::Unavailable),
            Err(_) => Err(CheckFailure::Unavailable(ApiError::internal("key reload task failed"))),
        }
    }

    /// Drops a token from the verified cache (after logout, so it is re-examined).
    pub fn forget(&self, token: &str) {
        self.verified.forget(token);
    }
}

/// Standing of one account, from its latest `users.changed`.
#[derive(Debug, Clone, Copy)]
struct Standing {
    /// Tokens issued under an older epoch are refused.
    epoch: i64,
    blocked: bool,
    deleted: bool,
}

#[derive(Default)]
struct Lists {
    /// jti -> exp (unix seconds): kept until the token would have expired anyway.
    tokens: HashMap<String, i64>,
    sessions: HashSet<String>,
    users: HashMap<i64, Standing>,
    /// API keys (by id) that are revoked or disabled: their service tokens are refused.
    blocked_keys: HashSet<i64>,
}

/// What kms revoked, as far as this process has read its events.
#[derive(Default)]
pub struct Revocations {
    lists: RwLock<Lists>,
    /// Bumped by every applied event: a check made under an older generation must be redone.
    generation: AtomicU64,
    /// The id of the last event read from the table.
    read_up_to: std::sync::atomic::AtomicI64,
    /// kms's signing-key rotations seen: a new one lifts the key reload cool-down.
    signing_rotations: AtomicU64,
}

impl Revocations {
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Refuses a verified token that was revoked, whose account changed since it was issued,
    /// or that lacks the identity claims every token of this kms carries.
    pub fn check(&self, claims: &Claims) -> Result<(), Rejection> {
        let lists = self.lists.read().unwrap_or_else(|e| e.into_inner());
        if lists.tokens.contains_key(&claims.jti)
            || claims.sid.as_ref().is_some_and(|sid| lists.sessions.contains(sid))
        {
            return Err(Rejection::Revoked);
        }
        if claims.is_service() {
            let key = claims.akid.ok_or(Rejection::Malformed)?;
            return if lists.blocked_keys.contains(&key) { Err(Rejection::Revoked) } else { Ok(()) };
        }
        let (Some(uid), Some(epoch)) = (claims.uid, claims.epoch) else {
            return Err(Rejection::Malformed);
        };
        match lists.users.get(&uid) {
            Some(standing) if standing.blocked => Err(Rejection::Disabled),
            Some(standing) if epoch < standing.epoch => Err(Rejection::Revoked),
            _ => Ok(()),
        }
    }

    /// Applies events committed by this process or read from the table. Events not published
    /// by kms are ignored: no other party may revoke or restore anyone's access.
    pub fn apply(&self, batch: &[StoredEvent]) {
        let relevant: Vec<&StoredEvent> = batch.iter().filter(|e| e.source == TRUSTED_ISSUER_ROLE).collect();
        if relevant.is_empty() {
            return;
        }
        let mut lists = self.lists.write().unwrap_or_else(|e| e.into_inner());
        for event in relevant {
            if event.topic == SigningKeyRotated::TOPIC {
                self.signing_rotations.fetch_add(1, Ordering::AcqRel);
            }
            lists.apply(event);
        }
        let now = chrono::Utc::now().timestamp();
        if lists.tokens.len() > 100_000 {
            lists.tokens.retain(|_, exp| *exp > now);
        }
        // Under the write lock: a reader that sees the new generation sees the new lists.
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Reads every kms security event not read yet (blocking). Call once before serving, so
    /// that a restarted process refuses what was revoked before it started.
    pub fn catch_up(&self, db: &Db) -> Result<(), DbError> {
        let mut conn = db.conn()?;
        loop {
            let after = self.read_up_to.load(Ordering::Acquire);
            let batch = events::read_after(&mut conn, after, Some(&security_topics()), 1000)?;
            self.apply(&batch);
            if let Some(last) = batch.last() {
                self.read_up_to.fetch_max(last.id, Ordering::AcqRel);
            }
            if batch.len() < 1000 {
                return Ok(());
            }
        }
    }

    /// Follows the events table until `shutdown` turns true.
    pub async fn follow(self: Arc<Self>, db: Db, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let mut waiter = events::waiter();
        loop {
            let me = self.clone();
            let reader = db.clone();
            let caught_up = actix_web::rt::task::spawn_blocking(move || me.catch_up(&reader)).await;
            if let Ok(Err(err)) = caught_up {
                log::warn!(target: "fountain::trust", "cannot read revocation events: {err}");
            }
            tokio::select! {
                _ = waiter.wait(FOLLOW_POLL) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

fn security_topics() -> Vec<String> {
    [
        TokenRevoked::TOPIC,
        SessionRevoked::TOPIC,
        UserChanged::TOPIC,
        KeyChanged::TOPIC,
        KeyRevoked::TOPIC,
        SigningKeyRotated::TOPIC,
    ]
    .iter()
    .map(|t| t.to_string())
    .collect()
}

impl Lists {
    fn apply(&mut self, event: &StoredEvent) {
        let payload = event.payload.as_str();
        match event.topic.as_str() {
            TokenRevoked::TOPIC => {
                if let Ok(e) = serde_json::from_str::<TokenRevoked>(payload) {
                    if e.jti.len() <= MAX_ID_LEN {
                        self.tokens.insert(e.jti, e.exp);
                    }
                }
            }
            SessionRevoked::TOPIC => {
                if let Ok(e) = serde_json::from_str::<SessionRevoked>(payload) {
                    if e.sid.len() <= MAX_ID_LEN {
                        self.sessions.insert(e.sid);
                    }
                }
            }
            UserChanged::TOPIC => {
                if let Ok(e) = serde_json::from_str::<UserChanged>(payload) {
                    let deleted = e.change == AccountChange::Deleted;
                    let next = Standing { epoch: e.epoch, blocked: e.disabled || deleted, deleted };
                    match self.users.get_mut(&e.uid) {
                        // A deleted account never comes back; events arrive in commit order,
                        // and an older one never lowers the bar.
                        Some(standing) if standing.deleted || e.epoch < standing.epoch => {}
                        Some(standing) => *standing = next,
                        None => {
                            self.users.insert(e.uid, next);
                        }
                    }
                }
            }
            KeyChanged::TOPIC => {
                if let Ok(e) = serde_json::from_str::<KeyChanged>(payload) {
                    for id in e.key_ids {
                        if e.disabled {
                            self.blocked_keys.insert(id);
                        } else {
                            self.blocked_keys.remove(&id);
                        }
                    }
                }
            }
            KeyRevoked::TOPIC => {
                if let Ok(e) = serde_json::from_str::<KeyRevoked>(payload) {
                    self.blocked_keys.extend(e.key_ids);
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: i64, source: &str, topic: &str, payload: serde_json::Value) -> StoredEvent {
        StoredEvent {
            id,
            topic: topic.into(),
            payload: payload.to_string(),
            source: source.into(),
            created_at: chrono::Utc::now().naive_utc(),
        }
    }

    fn user_token(uid: i64, epoch: i64) -> Claims {
        Claims {
            sub: "ann".into(),
            roles: vec!["admin".into()],
            iss: "i".into(),
            aud: "a".into(),
            exp: 0,
            iat: 0,
            nbf: 0,
            jti: format!("j{uid}-{epoch}"),
            mfa: None,
            sid: Some("s1".into()),
            uid: Some(uid),
            epoch: Some(epoch),
            akid: None,
            amr: None,
            mfa_pending: None,
        }
    }

    fn changed(uid: i64, epoch: i64, change: AccountChange, disabled: bool) -> serde_json::Value {
        serde_json::to_value(UserChanged {
            username: "ann".into(),
            uid,
            epoch,
            change,
            roles: vec![],
            disabled,
        })
        .unwrap()
    }

    #[test]
    fn account_changes_refuse_older_epochs_and_deleted_accounts_for_good() {
        let r = Revocations::default();
        assert_eq!(r.check(&user_token(1, 0)), Ok(()));
        r.apply(&[event(1, "kms", "users.changed", changed(1, 1, AccountChange::Updated, false))]);
        assert_eq!(r.check(&user_token(1, 0)), Err(Rejection::Revoked), "demoted: old epoch refused");
        assert_eq!(r.check(&user_token(1, 1)), Ok(()));
        r.apply(&[event(2, "kms", "users.changed", changed(1, 2, AccountChange::Deleted, false))]);
        assert_eq!(r.check(&user_token(1, 2)), Err(Rejection::Disabled));
        // The same username created again is a new account with a new uid.
        r.apply(&[event(3, "kms", "users.changed", changed(2, 0, AccountChange::Created, false))]);
        assert_eq!(r.check(&user_token(1, 2)), Err(Rejection::Disabled));
        assert_eq!(r.check(&user_token(2, 0)), Ok(()));
    }

    #[test]
    fn only_kms_may_revoke_or_restore() {
        let r = Revocations::default();
        r.apply(&[event(1, "notify", "users.changed", changed(1, 5, AccountChange::Deleted, true))]);
        assert_eq!(r.check(&user_token(1, 0)), Ok(()), "a forged event from another role is ignored");
        r.apply(&[event(2, "kms", "users.changed", changed(1, 1, AccountChange::Updated, true))]);
        r.apply(&[event(3, "secrets", "users.changed", changed(1, 9, AccountChange::Updated, false))]);
        assert_eq!(r.check(&user_token(1, 1)), Err(Rejection::Disabled), "no one but kms lifts a block");
    }

    #[test]
    fn logout_session_end_and_key_revocation_are_honoured() {
        let r = Revocations::default();
        let token = user_token(1, 0);
        r.apply(&[event(
            1,
            "kms",
            "tokens.revoked",
            serde_json::json!({"jti": token.jti, "sub": "ann", "exp": 9}),
        )]);
        assert_eq!(r.check(&token), Err(Rejection::Revoked));
        let other = Claims { jti: "fresh".into(), ..user_token(1, 0) };
        r.apply(&[event(2, "kms", "sessions.revoked", serde_json::json!({"username": "ann", "sid": "s1"}))]);
        assert_eq!(r.check(&other), Err(Rejection::Revoked));
        let service = Claims {
            roles: vec!["service".into()],
            akid: Some(7),
            uid: None,
            epoch: None,
            sid: None,
            ..other
        };
        assert_eq!(r.check(&service), Ok(()));
        r.apply(&[event(3, "kms", "keys.revoked", serde_json::json!({"serviceName": "svc", "keyIds": [7]}))]);
        assert_eq!(r.check(&service), Err(Rejection::Revoked));
        let unbound = Claims { akid: None, ..service };
        assert_eq!(r.check(&unbound), Err(Rejection::Malformed), "service tokens name their key");
    }
}
