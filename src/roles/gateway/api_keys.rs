//! X-API-KEY at the edge: kms's verdict on a key (reused briefly), and the service token the
//! key is exchanged for (kms `POST /token`, client credentials) so that services which check
//! tokens themselves — fountain's roles — accept a caller who only has a key.
//!
//! Both caches are keyed by an HMAC of the key under a key drawn at start, never by the key
//! itself, and both are dropped as soon as kms announces a change to any API key (created,
//! rotated, disabled or enabled, revoked): at once for changes committed in this process, and
//! as soon as the events table shows them for changes made elsewhere. A verdict or token fetched
//! while such a change happened is not stored (`epoch`), so nothing from before it survives.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use hyper::header::HeaderValue;
use rand::RngCore;
use rustc_hash::FxHashMap;
use sha2::Sha256;

use crate::platform::cache::TtlCache;
use crate::platform::contracts::{
    ClientCredentialsGrant, Event, KeyChanged, KeyCreated, KeyRevoked, KeyRotated, TokenResponse,
    VerifyRequest, VerifyResponse, TRUSTED_ISSUER_ROLE,
};
use crate::platform::db::Db;
use crate::platform::error::{ApiError, ApiResult};
use crate::platform::events::{self, StoredEvent};

/// How long a call to kms (verify or exchange) may take.
const KMS_TIMEOUT: Duration = Duration::from_secs(5);
/// A cached service token is replaced this long before it expires, so that it never expires
/// on its way to the service (or while the service checks it, with clocks a little apart).
const REFRESH_MARGIN: Duration = Duration::from_secs(30);
/// How often other processes' key changes are looked for when nothing wakes the follower.
const FOLLOW_POLL: Duration = Duration::from_secs(1);
/// Keys remembered at once (verdicts and tokens each).
const CAPACITY: usize = 10_000;

/// An HMAC-SHA256 of an API key: what both caches are keyed by.
pub type KeyDigest = [u8; 32];

/// A service token obtained for a key, as services receive it.
#[derive(Clone)]
struct Exchanged {
    /// `Bearer <token>`, ready to send.
    authorization: HeaderValue,
    /// When to exchange again instead.
    refresh_at: Instant,
}

/// Why an exchange produced no token.
pub enum ExchangeFailure {
    /// kms refused the key (or this client's address): the caller gets 401.
    Refused,
    /// kms could not be asked or answered something unexpected.
    Unavailable(ApiError),
}

pub struct ApiKeys {
    /// The key of the digests, drawn at start: digests mean nothing outside this process.
    digest_key: Hmac<Sha256>,
    /// kms's verdicts: the owning service when valid.
    verdicts: TtlCache<KeyDigest, Option<String>>,
    /// Service tokens by key; each entry carries its own refresh time.
    tokens: TtlCache<KeyDigest, Exchanged>,
    /// One exchange at a time per key: concurrent first requests wait for it and share its token.
    in_flight: Mutex<FxHashMap<KeyDigest, Arc<tokio::sync::Mutex<()>>>>,
    /// Bumped whenever the caches are dropped.
    epoch: AtomicU64,
}

impl ApiKeys {
    pub fn new(verdict_ttl: Duration) -> Self {
        let mut secret = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut secret);
        let digest_key = <Hmac<Sha256> as Mac>::new_from_slice(&secret).expect("HMAC takes any key length");
        Self {
            digest_key,
            verdicts: TtlCache::new(verdict_ttl, CAPACITY),
            // Entries leave by their own refresh time; the cache's TTL only bounds a stale one.
            tokens: TtlCache::new(Duration::from_secs(24 * 3600), CAPACITY),
            in_flight: Mutex::new(FxHashMap::default()),
            epoch: AtomicU64::new(0),
        }
    }

    pub fn digest(&self, key: &str) -> KeyDigest {
        let mut mac = self.digest_key.clone();
        mac.update(key.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// Drops every verdict and token: kms changed an API key.
    pub fn forget_all(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.verdicts.clear();
        self.tokens.clear();
    }

    /// Drops what is known about one key (kms refused its exchange).
    fn forget(&self, digest: &KeyDigest) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.verdicts.remove(digest);
        self.tokens.remove(digest);
    }

    /// Whether `events` (committed by this process or read from the table) change any API key.
    pub fn apply(&self, events: &[StoredEvent]) {
        let changes_keys = events.iter().any(|e| e.source == TRUSTED_ISSUER_ROLE && is_key_topic(&e.topic));
        if changes_keys {
            self.forget_all();
        }
    }

    /// kms's verdict on `key`: the owning service, or `None` for a key that is not valid.
    pub async fn verify(
        &self,
        client: &awc::Client,
        kms: &str,
        digest: &KeyDigest,
        key: &str,
    ) -> ApiResult<Option<String>> {
        if let Some(service) = self.verdicts.get(digest) {
            return Ok(service);
        }
        let epoch = self.epoch.load(Ordering::Acquire);
        let mut response = client
            .post(format!("{kms}/keys/verify"))
            .timeout(KMS_TIMEOUT)
            .send_json(&VerifyRequest { api_key: key.to_string() })
            .await
            .map_err(|e| ApiError::unavailable("kms", e))?;
        if !response.status().is_success() {
            return Err(ApiError::unavailable(
                "kms",
                format!("key verification answered {}", response.status()),
            ));
        }
        let verdict: VerifyResponse = response.json().await.map_err(|e| ApiError::unavailable("kms", e))?;
        let service = verdict.service_name.filter(|_| verdict.valid);
        if self.epoch.load(Ordering::Acquire) == epoch {
            self.verdicts.insert(*digest, service.clone());
        }
        Ok(service)
    }

    /// `Authorization: Bearer <service token>` for `key`: the cached one while it is fresh,
    /// else one exchange at kms shared by every request that asks meanwhile. `client_addr` is
    /// sent as `X-Forwarded-For`, so a refused exchange counts against the client at kms, not
    /// against the gateway.
    pub async fn service_token(
        &self,
        client: &awc::Client,
        kms: &str,
        digest: &KeyDigest,
        key: &str,
        client_addr: Option<IpAddr>,
    ) -> Result<(HeaderValue, Exchange), ExchangeFailure> {
        if let Some(token) = self.fresh_token(digest) {
            return Ok((token, Exchange::Cached));
        }
        let gate = self.gate(digest);
        let turn = gate.lock().await;
        let outcome = match self.fresh_token(digest) {
            // Another request exchanged while this one waited.
            Some(token) => Ok((token, Exchange::Cached)),
            None => self.exchange(client, kms, digest, key, client_addr).await.map(|t| (t, Exchange::Issued)),
        };
        drop(turn);
        self.release(digest, &gate);
        outcome
    }

    fn fresh_token(&self, digest: &KeyDigest) -> Option<HeaderValue> {
        self.tokens.get(digest).filter(|t| t.refresh_at > Instant::now()).map(|t| t.authorization)
    }

    async fn exchange(
        &self,
        client: &awc::Client,
        kms: &str,
        digest: &KeyDigest,
        key: &str,
        client_addr: Option<IpAddr>,
    ) -> Result<HeaderValue, ExchangeFailure> {
        let unavailable = |e: String| ExchangeFailure::Unavailable(ApiError::unavailable("kms", e));
        let epoch = self.epoch.load(Ordering::Acquire);
        let mut request = client.post(format!("{kms}/token")).timeout(KMS_TIMEOUT);
        if let Some(addr) = client_addr {
            request = request.insert_header(("x-forwarded-for", addr.to_string()));
        }
        let mut response = request
            .send_json(&ClientCredentialsGrant::new(key))
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        match response.status().as_u16() {
            200 => {}
            401 | 429 => {
                self.forget(digest);
                return Err(ExchangeFailure::Refused);
            }
            other => return Err(unavailable(format!("token exchange answered {other}"))),
        }
        // The parser's message could quote the answer, token and all: never logged.
        let answer: TokenResponse =
            response.json().await.map_err(|_| unavailable("kms's token answer could not be read".into()))?;
        let authorization = HeaderValue::try_from(format!("Bearer {}", answer.access_token))
            .map_err(|_| unavailable("kms issued a token that is no header value".into()))?;
        let lifetime = Duration::from_secs(answer.expires_in).saturating_sub(REFRESH_MARGIN);
        // A token too short-lived to keep is used once and exchanged again next time.
        if !lifetime.is_zero() && self.epoch.load(Ordering::Acquire) == epoch {
            let entry =
                Exchanged { authorization: authorization.clone(), refresh_at: Instant::now() + lifetime };
            self.tokens.insert(*digest, entry);
        }
        Ok(authorization)
    }

    /// The lock that orders exchanges of one key.
    fn gate(&self, digest: &KeyDigest) -> Arc<tokio::sync::Mutex<()>> {
        let mut in_flight = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        in_flight.entry(*digest).or_default().clone()
    }

    /// Forgets the lock of a key once nobody waits on it.
    fn release(&self, digest: &KeyDigest, gate: &Arc<tokio::sync::Mutex<()>>) {
        let mut in_flight = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        // The map's reference and the caller's: nobody else holds or waits for it.
        if Arc::strong_count(gate) <= 2 {
            in_flight.remove(digest);
        }
    }

    /// Follows kms's key changes made by other processes until `shutdown` turns true. Changes
    /// from before the start are skipped: the caches start empty.
    pub async fn follow(self: Arc<Self>, db: Db, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let mut waiter = events::waiter();
        let mut read_up_to = None;
        loop {
            let after = read_up_to;
            let read = db.run(move |conn| read_key_events(conn, after.unwrap_or(0))).await;
            match read {
                Ok((last, batch)) => {
                    if after.is_some() {
                        self.apply(&batch);
                    }
                    read_up_to = Some(last.max(after.unwrap_or(0)));
                }
                Err(err) => log::warn!(target: "fountain::gateway", "cannot read API key events: {err}"),
            }
            tokio::select! {
                _ = waiter.wait(FOLLOW_POLL) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// Whether the last exchange came from the cache or from kms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exchange {
    Cached,
    Issued,
}

fn is_key_topic(topic: &str) -> bool {
    [KeyCreated::TOPIC, KeyRotated::TOPIC, KeyChanged::TOPIC, KeyRevoked::TOPIC].contains(&topic)
}

/// The key events after `after` (all of them, in pages) and the id of the last one read.
fn read_key_events(
    conn: &mut crate::platform::db::AnyConnection,
    after: i64,
) -> Result<(i64, Vec<StoredEvent>), crate::platform::db::DbError> {
    const PAGE: i64 = 1000;
    let topics: Vec<String> = [KeyCreated::TOPIC, KeyRotated::TOPIC, KeyChanged::TOPIC, KeyRevoked::TOPIC]
        .map(String::from)
        .to_vec();
    let mut last = after;
    let mut all = Vec::new();
    loop {
        let batch = events::read_after(conn, last, Some(&topics), PAGE)?;
        let full = batch.len() as i64 == PAGE;
        if let Some(event) = batch.last() {
            last = event.id;
        }
        all.extend(batch);
        if !full {
            return Ok((last, all));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(source: &str, topic: &str) -> StoredEvent {
        StoredEvent {
            id: 1,
            topic: topic.into(),
            payload: "{}".into(),
            source: source.into(),
            created_at: chrono::Utc::now().naive_utc(),
        }
    }

    #[test]
    fn digests_are_keyed_per_process_and_key_changes_from_kms_drop_everything() {
        let keys = ApiKeys::new(Duration::from_secs(60));
        let other = ApiKeys::new(Duration::from_secs(60));
        assert_eq!(keys.digest("fk_a"), keys.digest("fk_a"));
        assert_ne!(keys.digest("fk_a"), keys.digest("fk_b"));
        assert_ne!(keys.digest("fk_a"), other.digest("fk_a"), "another process, another key");

        let digest = keys.digest("fk_a");
        let fresh = |keys: &ApiKeys| {
            let token = Exchanged {
                authorization: HeaderValue::from_static("Bearer t"),
                refresh_at: Instant::now() + Duration::from_secs(60),
            };
            keys.verdicts.insert(digest, Some("svc".into()));
            keys.tokens.insert(digest, token);
        };
        fresh(&keys);
        keys.apply(&[event("notify", KeyRevoked::TOPIC), event("kms", "users.changed")]);
        assert!(keys.fresh_token(&digest).is_some(), "only kms's key events count");
        for topic in [KeyCreated::TOPIC, KeyRotated::TOPIC, KeyChanged::TOPIC, KeyRevoked::TOPIC] {
            fresh(&keys);
            keys.apply(&[event("kms", topic)]);
            assert!(keys.fresh_token(&digest).is_none(), "{topic}");
            assert_eq!(keys.verdicts.get(&digest), None, "{topic}");
        }
    }
}
