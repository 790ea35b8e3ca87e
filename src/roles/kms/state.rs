//! What the kms role builds once per process: signing keys, request limits, the bcrypt work
//! bound, metrics.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, NotUntil, Quota, RateLimiter};
use prometheus::{IntCounter, IntCounterVec, IntGaugeVec, Opts};
use tokio::sync::{Semaphore, SemaphorePermit};

use super::config::KmsConfig;
use super::signing::KeyRing;
use crate::platform::crypto::MasterKey;
use crate::platform::db::Db;
use crate::platform::error::{ApiError, ApiResult};
use crate::platform::role::RoleContext;

/// How often idle limiter entries are dropped.
pub const PRUNE_INTERVAL: Duration = Duration::from_secs(60);
/// A limiter holding more keys than this is pruned at once, not only on the timer (at most
/// once per [`MIN_PRUNE_GAP`], so that a limiter full of live keys is not scanned per request).
const MAX_LIMITER_KEYS: usize = 50_000;
const MIN_PRUNE_GAP: Duration = Duration::from_secs(1);

/// Whether a size-bound prune may run now; records it when so.
fn prune_due(last: &Mutex<Instant>) -> bool {
    let mut last = last.lock().unwrap_or_else(|e| e.into_inner());
    let due = last.elapsed() >= MIN_PRUNE_GAP;
    if due {
        *last = Instant::now();
    }
    due
}

pub struct KmsState {
    pub config: KmsConfig,
    pub db: Db,
    pub master_key: Arc<MasterKey>,
    pub keys: Arc<KeyRing>,
    /// The `iss` and `aud` every token carries.
    pub issuer: String,
    pub audience: String,
    pub limiter: LoginLimiter,
    pub registrations: RegistrationLimiter,
    /// `POST /keys/verify` per client address.
    pub verifications: KeyedLimit,
    /// Bounds concurrent bcrypt work; logins always keep a share.
    pub hashing: HashingPermits,
    /// A bcrypt hash of a random password at the configured cost: unknown usernames are checked
    /// against it so that they take as long as wrong passwords.
    pub decoy_hash: String,
    pub metrics: KmsMetrics,
    /// API-key rows (or their absence) by lookup hash, reused for `kms.key_cache_ttl_ms` so the
    /// gateway's verify traffic rarely reaches the database. Every key change in this process
    /// clears it; another kms replica's change is seen within the TTL. Expiry and grace are
    /// always computed fresh from the row.
    pub key_lookups: crate::platform::cache::TtlCache<String, Option<super::store::ApiKey>>,
    /// Roles whose members must step up with twofa (`[roles.twofa] required_for_roles`): their
    /// password tokens carry `mfa_pending` and reach only twofa and logout.
    pub step_up_required_for: Vec<String>,
}

/// The part of twofa's settings kms enforces at login. Read from the shared configuration, so
/// a kms that runs without twofa in its process applies the same policy.
#[derive(Debug, Default, serde::Deserialize)]
struct StepUpPolicy {
    #[serde(default)]
    required_for_roles: Vec<String>,
}

impl KmsState {
    /// Drops idle limiter entries (timer and size bound) and publishes the limiters' sizes.
    pub fn prune_limiters(&self) {
        self.limiter.prune();
        self.registrations.by_addr.prune();
        self.verifications.prune();
        self.observe_limiters();
    }

    /// Sets `kms_limiter_keys` to what the limiters hold now.
    pub fn observe_limiters(&self) {
        let (users, addresses, blocked) = self.limiter.sizes();
        let sizes = [
            ("login_username", users),
            ("login_address", addresses),
            ("login_blocked", blocked),
            ("registration_address", self.registrations.by_addr.size()),
            ("verification_address", self.verifications.size()),
        ];
        for (limiter, size) in sizes {
            self.observe_limiter(limiter, size);
        }
    }

    /// Sets `kms_limiter_keys{limiter}` to `size`.
    pub fn observe_limiter(&self, limiter: &str, size: usize) {
        self.metrics.limiter_keys.with_label_values(&[limiter]).set(size as i64);
    }
}

pub struct KmsMetrics {
    pub logins: IntCounterVec,
    pub verifications: IntCounterVec,
    pub tokens_issued: IntCounterVec,
    pub key_rotations: IntCounter,
    /// bcrypt hashes and verifications by purpose (`login`, `registration`).
    pub password_hashing: IntCounterVec,
    /// Requests refused by a kms limit, by limit.
    pub limited: IntCounterVec,
    /// Keys each limiter holds.
    pub limiter_keys: IntGaugeVec,
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
        let password_hashing = IntCounterVec::new(
            Opts::new("kms_password_hashing_total", "bcrypt hashes and verifications by purpose"),
            &["purpose"],
        )?;
        let limited = IntCounterVec::new(
            Opts::new("kms_requests_limited_total", "Requests refused by a kms limit, by limit"),
            &["limit"],
        )?;
        let limiter_keys =
            IntGaugeVec::new(Opts::new("kms_limiter_keys", "Keys held by each kms limiter"), &["limiter"])?;
        registry.register(Box::new(logins.clone()))?;
        registry.register(Box::new(verifications.clone()))?;
        registry.register(Box::new(tokens_issued.clone()))?;
        registry.register(Box::new(key_rotations.clone()))?;
        registry.register(Box::new(password_hashing.clone()))?;
        registry.register(Box::new(limited.clone()))?;
        registry.register(Box::new(limiter_keys.clone()))?;
        Ok(Self {
            logins,
            verifications,
            tokens_issued,
            key_rotations,
            password_hashing,
            limited,
            limiter_keys,
        })
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
    let master_key = ctx.master_key.clone();
    let limiter = LoginLimiter::new(&config, master_key.clone());
    let registrations = RegistrationLimiter::new(&config, master_key.clone());
    let verifications = KeyedLimit::new(
        "kms-limit-verify-address",
        master_key.clone(),
        per_minute(config.verifications_per_address_per_minute, config.verification_burst),
    );
    let parallelism = std::thread::available_parallelism().map_or(1, |n| n.get());
    let policy: StepUpPolicy = ctx.config.role_settings(crate::platform::auth::STEP_UP_SERVICE)?;
    let state = KmsState {
        config,
        db: ctx.db.clone(),
        master_key,
        keys,
        issuer: ctx.config.security.token_issuer.clone(),
        audience: ctx.config.security.token_audience.clone(),
        limiter,
        registrations,
        verifications,
        hashing: HashingPermits::new(parallelism),
        decoy_hash,
        metrics,
        key_lookups: crate::platform::cache::TtlCache::new(Duration::from_millis(key_cache_ms), 10_000),
        step_up_required_for: policy.required_for_roles,
    };
    state.observe_limiters();
    Ok(state)
}

/// Seconds until a refused key may try again (at least one).
fn wait_seconds(not_until: &NotUntil<<DefaultClock as Clock>::Instant>) -> u64 {
    let wait = not_until.wait_time_from(DefaultClock::default().now());
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

/// A token bucket per key, where a key is a keyed hash of what it limits (a username, an
/// address): every entry has the same small size whatever the caller sends, and no entry
/// holds the text it was made from.
pub struct KeyedLimit {
    context: &'static str,
    master_key: Arc<MasterKey>,
    limiter: DefaultKeyedRateLimiter<String>,
    pruned_at: Mutex<Instant>,
}

impl KeyedLimit {
    fn new(context: &'static str, master_key: Arc<MasterKey>, quota: Quota) -> Self {
        Self {
            context,
            master_key,
            limiter: RateLimiter::keyed(quota),
            pruned_at: Mutex::new(Instant::now()),
        }
    }

    fn key(&self, raw: &str) -> String {
        self.master_key.lookup_hash(self.context, raw.as_bytes())
    }

    /// Takes one cell for `raw`; `Err(seconds)` when its bucket is empty.
    pub fn take(&self, raw: &str) -> Result<(), u64> {
        let result = self.limiter.check_key(&self.key(raw)).map_err(|n| wait_seconds(&n));
        if self.limiter.len() > MAX_LIMITER_KEYS && prune_due(&self.pruned_at) {
            self.prune();
        }
        result
    }

    /// Drops the keys whose buckets are full again (indistinguishable from a new key).
    fn prune(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    /// Keys held now.
    pub fn size(&self) -> usize {
        self.limiter.len()
    }
}

/// A sustained rate per minute with a burst.
fn per_minute(rate: u32, burst: u32) -> Quota {
    let rate = NonZeroU32::new(rate).unwrap_or(NonZeroU32::MIN);
    Quota::per_minute(rate).allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN))
}

/// Anonymous registrations per client address (per hour) and for the instance (per minute):
/// each registration costs a bcrypt hash, so open registration must not be a CPU lever.
pub struct RegistrationLimiter {
    by_addr: KeyedLimit,
    global: DefaultDirectRateLimiter,
}

/// Which registration limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegistrationRefusal {
    Address(u64),
    Global(u64),
}

impl RegistrationLimiter {
    fn new(config: &KmsConfig, master_key: Arc<MasterKey>) -> Self {
        let per_address =
            NonZeroU32::new(config.registrations_per_address_per_hour).unwrap_or(NonZeroU32::MIN);
        let global = NonZeroU32::new(config.registrations_per_minute).unwrap_or(NonZeroU32::MIN);
        Self {
            by_addr: KeyedLimit::new("kms-limit-register-address", master_key, Quota::per_hour(per_address)),
            global: RateLimiter::direct(Quota::per_minute(global)),
        }
    }

    /// Takes one registration for `addr`. The address's own limit is checked first, so that one
    /// address spending its allowance does not use up the instance's.
    pub fn take(&self, addr: &str) -> Result<(), RegistrationRefusal> {
        self.by_addr.take(addr).map_err(RegistrationRefusal::Address)?;
        self.global.check().map_err(|n| RegistrationRefusal::Global(wait_seconds(&n)))
    }
}

/// Failed-login limits per username and per client address (governor token buckets, keyed by
/// keyed hashes). A key whose bucket runs dry is blocked until the bucket refills enough for one
/// more attempt. Failed `client_credentials` grants spend the same per-address budget.
pub struct LoginLimiter {
    master_key: Arc<MasterKey>,
    by_user: DefaultKeyedRateLimiter<String>,
    by_addr: DefaultKeyedRateLimiter<String>,
    /// Blocked keys (user and address hashes, from distinct contexts) and until when.
    blocked: Mutex<HashMap<String, Instant>>,
    pruned_at: Mutex<Instant>,
}

const USER_CONTEXT: &str = "kms-limit-login-user";
const ADDR_CONTEXT: &str = "kms-limit-login-address";

impl LoginLimiter {
    fn new(config: &KmsConfig, master_key: Arc<MasterKey>) -> Self {
        let window = Duration::from_secs(config.login_failure_window_seconds.max(1));
        Self {
            master_key,
            by_user: RateLimiter::keyed(quota(config.login_failures_per_username, window)),
            by_addr: RateLimiter::keyed(quota(config.login_failures_per_address, window)),
            blocked: Mutex::new(HashMap::new()),
            pruned_at: Mutex::new(Instant::now()),
        }
    }

    fn user_key(&self, username: &str) -> String {
        self.master_key.lookup_hash(USER_CONTEXT, username.as_bytes())
    }

    fn addr_key(&self, addr: &str) -> String {
        self.master_key.lookup_hash(ADDR_CONTEXT, addr.as_bytes())
    }

    /// `Err(seconds)` when this username or address must wait before trying again.
    pub fn check(&self, username: &str, addr: &str) -> Result<(), u64> {
        self.wait_for(&[self.user_key(username), self.addr_key(addr)])
    }

    /// `Err(seconds)` when this address must wait before trying again.
    pub fn check_address(&self, addr: &str) -> Result<(), u64> {
        self.wait_for(&[self.addr_key(addr)])
    }

    fn wait_for(&self, keys: &[String]) -> Result<(), u64> {
        let now = Instant::now();
        let blocked = self.blocked.lock().unwrap_or_else(|e| e.into_inner());
        let wait = keys
            .iter()
            .filter_map(|key| blocked.get(key))
            .filter(|until| **until > now)
            .map(|until| until.duration_since(now))
            .max();
        match wait {
            Some(wait) => Err((wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)),
            None => Ok(()),
        }
    }

    /// Counts one failed login against the username and the address.
    pub fn record_failure(&self, username: &str, addr: &str) {
        self.spend(&self.by_user, self.user_key(username));
        self.spend(&self.by_addr, self.addr_key(addr));
        self.bound();
    }

    /// Counts one failure that names no user (a refused client credential) against the address.
    pub fn record_address_failure(&self, addr: &str) {
        self.spend(&self.by_addr, self.addr_key(addr));
        self.bound();
    }

    /// Takes one cell for `key`, blocking the key when its allowance is used up.
    fn spend(&self, limiter: &DefaultKeyedRateLimiter<String>, key: String) {
        if let Err(not_until) = limiter.check_key(&key) {
            let until = Instant::now() + not_until.wait_time_from(DefaultClock::default().now());
            self.blocked.lock().unwrap_or_else(|e| e.into_inner()).insert(key, until);
        }
    }

    /// Prunes at once when a spray of distinct names or addresses outgrows the bound.
    fn bound(&self) {
        let blocked = self.blocked.lock().unwrap_or_else(|e| e.into_inner()).len();
        let largest = self.by_user.len().max(self.by_addr.len()).max(blocked);
        if largest > MAX_LIMITER_KEYS && prune_due(&self.pruned_at) {
            self.prune();
        }
    }

    /// Drops blocks that have ended and buckets that are full again.
    pub fn prune(&self) {
        let now = Instant::now();
        {
            let mut blocked = self.blocked.lock().unwrap_or_else(|e| e.into_inner());
            blocked.retain(|_, until| *until > now);
            blocked.shrink_to_fit();
        }
        for limiter in [&self.by_user, &self.by_addr] {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }

    /// Keys held: per username, per address, blocked.
    pub fn sizes(&self) -> (usize, usize, usize) {
        let blocked = self.blocked.lock().unwrap_or_else(|e| e.into_inner()).len();
        (self.by_user.len(), self.by_addr.len(), blocked)
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

/// Bounds concurrent bcrypt work to the machine's cores. Every hash or verification holds a
/// permit of the shared pool; a registration first needs one of a pool half that size, so
/// registrations can never hold every shared permit and logins always keep a share.
pub struct HashingPermits {
    shared: Semaphore,
    registrations: Semaphore,
}

/// Held while one bcrypt operation runs.
pub struct HashingPermit<'a> {
    _shared: SemaphorePermit<'a>,
    _registration: Option<SemaphorePermit<'a>>,
}

impl HashingPermits {
    /// `parallelism` cores: that many shared permits (at least two, so that a share is left for
    /// logins even on one core), half of them for registrations.
    pub fn new(parallelism: usize) -> Self {
        let shared = parallelism.max(2);
        Self { shared: Semaphore::new(shared), registrations: Semaphore::new(shared / 2) }
    }

    pub async fn for_login(&self) -> ApiResult<HashingPermit<'_>> {
        let shared = self.shared.acquire().await.map_err(ApiError::internal)?;
        Ok(HashingPermit { _shared: shared, _registration: None })
    }

    pub async fn for_registration(&self) -> ApiResult<HashingPermit<'_>> {
        let registration = self.registrations.acquire().await.map_err(ApiError::internal)?;
        let shared = self.shared.acquire().await.map_err(ApiError::internal)?;
        Ok(HashingPermit { _shared: shared, _registration: Some(registration) })
    }

    /// Shared permits free now.
    pub fn available(&self) -> usize {
        self.shared.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> KmsConfig {
        KmsConfig {
            access_token_ttl_seconds: 900,
            refresh_token_ttl_seconds: 3600,
            service_token_ttl_seconds: 300,
            bcrypt_cost: 4,
            key_rotation_grace_seconds: 60,
            key_cache_ttl_ms: 0,
            login_failures_per_username: 2,
            login_failures_per_address: 2,
            login_failure_window_seconds: 1,
            registrations_per_address_per_hour: 1,
            registrations_per_minute: 1,
            verifications_per_address_per_minute: 1,
            verification_burst: 1,
        }
    }

    fn master_key() -> Arc<MasterKey> {
        Arc::new(MasterKey::from_bytes(&[9; 32]))
    }

    #[actix_web::test]
    async fn registrations_never_hold_every_hashing_permit() {
        for cores in [1, 2, 3, 8] {
            let permits = HashingPermits::new(cores);
            let mut held = Vec::new();
            // Take every registration permit there is; each also holds a shared one.
            while let Ok(registration) = permits.registrations.try_acquire() {
                let shared = permits.shared.try_acquire().expect("a shared permit is free");
                held.push(HashingPermit { _shared: shared, _registration: Some(registration) });
            }
            assert!(!held.is_empty(), "{cores} cores: registrations get a permit");
            assert!(permits.available() >= 1, "{cores} cores: logins keep a share");
            let login = permits.for_login().await.expect("a login gets a permit at once");
            drop(login);
        }
    }

    #[test]
    fn limiter_keys_are_keyed_hashes_of_one_size() {
        let limiter = LoginLimiter::new(&config(), master_key());
        let huge = "a".repeat(1 << 20);
        assert_eq!(limiter.user_key(&huge).len(), 64);
        assert_eq!(limiter.user_key("alice").len(), 64);
        assert_ne!(limiter.user_key("alice"), limiter.addr_key("alice"), "domain separated");
        let other = LoginLimiter::new(&config(), Arc::new(MasterKey::from_bytes(&[8; 32])));
        assert_ne!(limiter.user_key("alice"), other.user_key("alice"), "keyed");
    }

    #[test]
    fn idle_login_limiter_entries_are_pruned() {
        let limiter = LoginLimiter::new(&config(), master_key());
        for n in 0..3 {
            limiter.record_failure(&format!("user{n}"), "10.0.0.1");
        }
        limiter.record_failure("user0", "10.0.0.1");
        let (users, addresses, blocked) = limiter.sizes();
        assert_eq!((users, addresses), (3, 1));
        assert!(blocked >= 1, "the address spent its allowance");
        assert!(limiter.check_address("10.0.0.1").is_err());
        // The window is one second: after it every bucket is full again and every block over.
        std::thread::sleep(Duration::from_millis(2100));
        limiter.prune();
        assert_eq!(limiter.sizes(), (0, 0, 0));
        assert!(limiter.check("user0", "10.0.0.1").is_ok());
    }
}
