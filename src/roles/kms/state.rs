//! What the kms role builds once per process: signing keys, login limits, metrics.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use prometheus::{IntCounter, IntCounterVec, Opts};

use super::config::KmsConfig;
use super::signing::KeyRing;
use crate::platform::crypto::MasterKey;
use crate::platform::db::Db;
use crate::platform::role::RoleContext;

pub struct KmsState {
    pub config: KmsConfig,
    pub db: Db,
    pub master_key: Arc<MasterKey>,
    pub keys: Arc<KeyRing>,
    /// The `iss` and `aud` every token carries.
    pub issuer: String,
    pub audience: String,
    pub limiter: LoginLimiter,
    /// A bcrypt hash of a random password at the configured cost: unknown usernames are checked
    /// against it so that they take as long as wrong passwords.
    pub decoy_hash: String,
    pub metrics: KmsMetrics,
    /// API-key rows (or their absence) by lookup hash, reused for `kms.key_cache_ttl_ms` so the
    /// gateway's verify traffic rarely reaches the database. Every key change in this process
    /// clears it; another kms replica's change is seen within the TTL. Expiry and grace are
    /// always computed fresh from the row.
    pub key_lookups: crate::platform::cache::TtlCache<String, Option<super::store::ApiKey>>,
}

pub struct KmsMetrics {
    pub logins: IntCounterVec,
    pub verifications: IntCounterVec,
    pub tokens_issued: IntCounterVec,
    pub key_rotations: IntCounter,
}

impl KmsMetrics {
    fn register(registry: &prometheus::Registry) -> Result<Self, prometheus::Error> {
        let logins =
            IntCounterVec::new(Opts::new("kms_logins_total", "Login attempts by outcome"), &["outcome"])?;
        let verifications = IntCounterVec::new(
            Opts::new("kms_key_verifications_total", "API key verifications by result code"),
            &["code"],
        )?;
        let tokens_issued = IntCounterVec::new(
            Opts::new("kms_tokens_issued_total", "Access tokens issued by grant"),
            &["grant"],
        )?;
        let key_rotations = IntCounter::new("kms_api_key_rotations_total", "API key rotations")?;
        registry.register(Box::new(logins.clone()))?;
        registry.register(Box::new(verifications.clone()))?;
        registry.register(Box::new(tokens_issued.clone()))?;
        registry.register(Box::new(key_rotations.clone()))?;
        Ok(Self { logins, verifications, tokens_issued, key_rotations })
    }
}

/// Builds the kms state: loads (or creates) the signing keys and prepares the limits.
pub fn init(ctx: &RoleContext) -> Result<KmsState, String> {
    let config: KmsConfig = ctx.config.role_settings(ctx.role.name())?;
    config.validate()?;
    let key_cache_ms = config.key_cache_ttl_ms;
    let mut conn = ctx.db.conn().map_err(|e| e.to_string())?;
    let keys = Arc::new(KeyRing::load(&mut conn, &ctx.master_key).map_err(|e| e.to_string())?);
    let purged = super::store::purge_expired(&mut conn).map_err(|e| e.to_string())?;
    log::debug!(target: "fountain::kms", purged = purged; "expired token records purged");
    let decoy = crate::platform::crypto::random_token(24);
    let decoy_hash = bcrypt::hash(decoy, config.bcrypt_cost).map_err(|e| e.to_string())?;
    let metrics = KmsMetrics::register(ctx.metrics.registry()).map_err(|e| e.to_string())?;
    let limiter = LoginLimiter::new(&config);
    let state = KmsState {
        config,
        db: ctx.db.clone(),
        master_key: ctx.master_key.clone(),
        keys,
        issuer: ctx.config.security.token_issuer.clone(),
        audience: ctx.config.security.token_audience.clone(),
        limiter,
        decoy_hash,
        metrics,
        key_lookups: crate::platform::cache::TtlCache::new(Duration::from_millis(key_cache_ms), 10_000),
    };
    Ok(state)
}

/// Failed-login limits per username and per client address (governor token buckets). A key
/// whose bucket runs dry is blocked until the bucket refills enough for one more attempt.
pub struct LoginLimiter {
    by_user: DefaultKeyedRateLimiter<String>,
    by_addr: DefaultKeyedRateLimiter<String>,
    blocked: Mutex<HashMap<String, Instant>>,
}

impl LoginLimiter {
    fn new(config: &KmsConfig) -> Self {
        let window = Duration::from_secs(config.login_failure_window_seconds.max(1));
        Self {
            by_user: RateLimiter::keyed(quota(config.login_failures_per_username, window)),
            by_addr: RateLimiter::keyed(quota(config.login_failures_per_address, window)),
            blocked: Mutex::new(HashMap::new()),
        }
    }

    /// `Err(seconds)` when this username or address must wait before trying again.
    pub fn check(&self, username: &str, addr: &str) -> Result<(), u64> {
        let now = Instant::now();
        let blocked = self.blocked.lock().unwrap_or_else(|e| e.into_inner());
        let wait = [user_key(username), addr_key(addr)]
            .iter()
            .filter_map(|key| blocked.get(key))
            .filter(|until| **until > now)
            .map(|until| until.duration_since(now))
            .max();
        match wait {
            Some(wait) => Err(wait.as_secs().max(1)),
            None => Ok(()),
        }
    }

    /// Counts one failure against both keys, blocking a key whose allowance is used up.
    pub fn record_failure(&self, username: &str, addr: &str) {
        let clock = DefaultClock::default();
        let mut blocked = self.blocked.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(not_until) = self.by_user.check_key(&username.to_string()) {
            blocked.insert(user_key(username), Instant::now() + not_until.wait_time_from(clock.now()));
        }
        if let Err(not_until) = self.by_addr.check_key(&addr.to_string()) {
            blocked.insert(addr_key(addr), Instant::now() + not_until.wait_time_from(clock.now()));
        }
        // Keep memory bounded under a spray of distinct usernames.
        if blocked.len() > 10_000 {
            let now = Instant::now();
            blocked.retain(|_, until| *until > now);
            self.by_user.retain_recent();
            self.by_addr.retain_recent();
        }
    }
}

/// `failures` attempts per `window`: the bucket holds `failures - 1` so that the failure that
/// empties it blocks the next attempt (a burst of `failures` failures, then 429).
fn quota(failures: u32, window: Duration) -> Quota {
    let per_failure = window / failures.max(1);
    let burst = NonZeroU32::new(failures.saturating_sub(1).max(1)).unwrap_or(NonZeroU32::MIN);
    Quota::with_period(per_failure.max(Duration::from_millis(1)))
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
        .allow_burst(burst)
}

fn user_key(username: &str) -> String {
    format!("user:{username}")
}

fn addr_key(addr: &str) -> String {
    format!("addr:{addr}")
}
