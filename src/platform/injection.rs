//! Secrets at start-up and live rotation, for every role (the seed's two-point injection).
//!
//! 1. At start a role exchanges its service credential (an API key in
//!    `<security.credentials_dir>/<role>.key`) for a service token at kms and fetches its
//!    secrets from the secrets role, with bounded retry and backoff.
//! 2. It then follows `secrets.rotated` on notify's event stream; when its own secrets rotate it
//!    fetches the new version and swaps it in place. Requests already holding the old value
//!    finish with it; no restart, no failed request.
//!
//! A process that serves kms and secrets itself (`--role all`) provisions each role's API key
//! and secret set on first start (the roles' provisioning hooks) before this runs.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures_util::StreamExt;
use prometheus::{IntCounter, IntGauge};
use serde::Deserialize;

use super::contracts::{
    ClientCredentialsGrant, Lookup, RegisterRequest, SecretSet, SecretsRotated, TokenResponse,
};
use super::crypto::Secret;
use super::middleware::INTERNAL_USER_AGENT;
use super::server::Host;
use crate::config::Config;

/// One version of a role's secrets.
#[derive(Debug)]
pub struct Injected {
    pub version: i32,
    pub values: Secret<BTreeMap<String, String>>,
}

/// The swappable in-memory secrets of one role.
pub struct SecretHandle {
    current: RwLock<Option<Arc<Injected>>>,
    version_gauge: IntGauge,
    rotations: IntCounter,
}

impl SecretHandle {
    pub fn new(registry: &prometheus::Registry) -> Result<Self, prometheus::Error> {
        let version_gauge =
            IntGauge::new("fountain_secrets_version", "Version of this role's secrets in memory (0: none)")?;
        let rotations = IntCounter::new(
            "fountain_secret_rotations_applied_total",
            "Secret versions swapped in without restart",
        )?;
        registry.register(Box::new(version_gauge.clone()))?;
        registry.register(Box::new(rotations.clone()))?;
        Ok(Self { current: RwLock::new(None), version_gauge, rotations })
    }

    /// The secrets in force now (a cheap clone of an `Arc`; hold it for one request).
    pub fn current(&self) -> Option<Arc<Injected>> {
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Swaps in `next` unless the version in memory is already as new.
    fn install(&self, next: Injected) -> bool {
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        if current.as_ref().is_some_and(|c| c.version >= next.version) {
            return false;
        }
        let rotated = current.is_some();
        self.version_gauge.set(i64::from(next.version));
        *current = Some(Arc::new(next));
        if rotated {
            self.rotations.inc();
        }
        true
    }
}

/// The credential file of a role.
pub fn credential_path(config: &Config, role: &str) -> PathBuf {
    credentials_dir(config).join(format!("{role}.key"))
}

/// Where the roles' credential files are: `security.credentials_dir`, else
/// `<data.dir>/credentials`.
pub fn credentials_dir(config: &Config) -> PathBuf {
    let dir = config.security.credentials_dir.trim();
    if dir.is_empty() {
        config.data.dir.join("credentials")
    } else {
        PathBuf::from(dir)
    }
}

/// How long a looked-up peer URL is reused before asking the gateway again.
const LOOKUP_TTL: Duration = Duration::from_secs(30);
/// Registry entries live this long without a heartbeat; heartbeats come three times as often.
const REGISTRY_TTL_SECONDS: u64 = 30;

/// Where peers are: asked of the gateway's `GET /lookup/{service}` (cached, forgotten when a
/// call to the peer fails), with `[peers]` as the fallback and for kms itself (a lookup needs a
/// token, and tokens come from kms).
pub(crate) struct Peers {
    configured: BTreeMap<String, String>,
    looked_up: super::cache::TtlCache<String, String>,
}

impl Peers {
    /// The peers of `config`, nothing looked up yet (also used by `platform::peers`).
    pub(crate) fn new(config: &Config) -> Self {
        Self { configured: config.peers.clone(), looked_up: super::cache::TtlCache::new(LOOKUP_TTL, 1_000) }
    }

    fn configured(&self, service: &str) -> String {
        self.configured.get(service).map(|u| u.trim_end_matches('/').to_string()).unwrap_or_default()
    }

    pub(crate) async fn resolve(&self, client: &awc::Client, service: &str, token: &str) -> String {
        if let Some(url) = self.looked_up.get(&service.to_string()) {
            return url;
        }
        let gateway = self.configured("gateway");
        let lookup = format!("{gateway}/lookup/{service}");
        let found = async {
            let mut response = client
                .get(&lookup)
                .insert_header(("authorization", format!("Bearer {token}")))
                .send()
                .await
                .ok()?;
            if !response.status().is_success() {
                return None;
            }
            response.json::<Lookup>().await.ok().map(|a| a.url.trim_end_matches('/').to_string())
        }
        .await;
        match found {
            Some(url) => {
                self.looked_up.insert(service.to_string(), url.clone());
                url
            }
            None => {
                log::debug!(target: "fountain::secrets", service = service; "gateway lookup failed; using [peers]");
                self.configured(service)
            }
        }
    }

    pub(crate) fn forget(&self, service: &str) {
        self.looked_up.remove(&service.to_string());
    }
}

/// One event as notify's stream sends it, with a typed payload.
#[derive(Deserialize)]
struct StreamedEvent<P> {
    source: String,
    payload: P,
}

/// Talks to kms, secrets, notify and the gateway on behalf of one role.
struct Injector {
    role: &'static str,
    credential: Secret<String>,
    peers: Arc<Peers>,
    /// This role's own base URL, registered with the gateway.
    own_url: Option<String>,
    client: awc::Client,
    handle: Arc<SecretHandle>,
    /// Turns true when the host stops: a stream that ends then was closed on purpose.
    stopping: tokio::sync::watch::Receiver<bool>,
}

impl Injector {
    /// A fresh service token for this role's credential.
    async fn session(&self) -> Result<TokenResponse, String> {
        let url = format!("{}/token", self.peers.configured("kms"));
        let grant = ClientCredentialsGrant::new(self.credential.expose());
        let mut response =
            self.client.post(&url).send_json(&grant).await.map_err(|e| format!("{url}: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("{url} answered {}", response.status().as_u16()));
        }
        response.json().await.map_err(|e| format!("{url}: {e}"))
    }

    async fn token(&self) -> Result<String, String> {
        Ok(self.session().await?.access_token)
    }

    async fn fetch(&self) -> Result<Injected, String> {
        let token = self.token().await?;
        let base = self.peers.resolve(&self.client, "secrets", &token).await;
        let url = format!("{base}/secrets/{}", self.role);
        let sent =
            self.client.get(&url).insert_header(("authorization", format!("Bearer {token}"))).send().await;
        let mut response = sent.map_err(|e| {
            self.peers.forget("secrets");
            format!("{url}: {e}")
        })?;
        if !response.status().is_success() {
            return Err(format!("{url} answered {}", response.status().as_u16()));
        }
        let answer: SecretSet = response.json().limit(4 << 20).await.map_err(|e| format!("{url}: {e}"))?;
        Ok(Injected { version: answer.version, values: Secret::new(answer.secrets) })
    }

    async fn fetch_with_retry(&self, attempts: u32) -> Result<(), String> {
        let mut delay = Duration::from_millis(250);
        let mut last = String::new();
        for attempt in 1..=attempts {
            match self.fetch().await {
                Ok(injected) => {
                    let version = injected.version;
                    // Debug: the start-up summary says the roles are up; seven "loaded" lines do not help.
                    if self.handle.install(injected) {
                        log::debug!(target: "fountain::secrets", role = self.role, version = version; "secrets loaded");
                    }
                    return Ok(());
                }
                Err(err) => {
                    last = err;
                    if attempt < attempts {
                        actix_web::rt::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(5));
                    }
                }
            }
        }
        Err(format!("role {}: cannot load its secrets after {attempts} attempt(s): {last}", self.role))
    }

    /// Registers this role's URL with the gateway and renews it, so peers find it by lookup.
    async fn heartbeat(self: std::rc::Rc<Self>) {
        let Some(own) = self.own_url.clone() else { return };
        let every = Duration::from_secs(REGISTRY_TTL_SECONDS / 3);
        loop {
            if let Err(err) = self.register(&own).await {
                log::debug!(target: "fountain::secrets", role = self.role; "registration with the gateway failed: {err}");
            }
            actix_web::rt::time::sleep(every).await;
        }
    }

    async fn register(&self, own: &str) -> Result<(), String> {
        let token = self.token().await?;
        let url = format!("{}/registry", self.peers.configured("gateway"));
        let body =
            RegisterRequest { service: self.role.into(), url: own.into(), ttl_seconds: REGISTRY_TTL_SECONDS };
        let response = self
            .client
            .post(&url)
            .insert_header(("authorization", format!("Bearer {token}")))
            .send_json(&body)
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(format!("{url} answered {}", response.status().as_u16()))
        }
    }

    /// Follows `secrets.rotated` until the process stops, reconnecting (with a fresh token,
    /// resuming after the last event seen) whenever the stream ends.
    async fn watch(self: std::rc::Rc<Self>) {
        let mut last_event: Option<String> = None;
        let mut backoff = Duration::from_millis(500);
        loop {
            match self.follow(&mut last_event).await {
                Ok(()) => {
                    log::debug!(target: "fountain::secrets", role = self.role; "rotation stream renewed with a fresh token");
                    backoff = Duration::from_millis(500);
                }
                // notify ends its streams when the process stops: nothing went wrong.
                Err(_) if self.is_stopping() => return,
                Err(err) => {
                    log::warn!(target: "fountain::secrets", role = self.role; "rotation stream interrupted: {err}");
                    actix_web::rt::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
    }

    async fn follow(&self, last_event: &mut Option<String>) -> Result<(), String> {
        let session = self.session().await?;
        let token = session.access_token;
        let base = self.peers.resolve(&self.client, "notify", &token).await;
        let url = format!("{base}/events/stream?topics=secrets.rotated");
        let mut request = self.client.get(&url).insert_header(("authorization", format!("Bearer {token}")));
        if let Some(id) = last_event.as_deref() {
            request = request.insert_header(("last-event-id", id.to_string()));
        }
        let mut stream = request.send().await.map_err(|e| {
            self.peers.forget("notify");
            format!("{url}: {e}")
        })?;
        if !stream.status().is_success() {
            return Err(format!("{url} answered {}", stream.status().as_u16()));
        }
        // Catch up on a rotation missed while disconnected, then apply live ones.
        self.refresh().await;
        // Reconnect with a fresh token halfway through the token's life.
        let deadline = tokio::time::Instant::now() + Duration::from_secs((session.expires_in / 2).max(1));
        let mut buffer = String::new();
        loop {
            let next = tokio::time::timeout_at(deadline, stream.next()).await;
            let chunk = match next {
                Err(_) => return Ok(()), // the token is about to expire: reconnect with a new one
                Ok(None) => return Err("stream closed".into()),
                Ok(Some(chunk)) => chunk.map_err(|e| e.to_string())?,
            };
            buffer.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buffer.find("\n\n") {
                let frame: String = buffer.drain(..end + 2).collect();
                self.on_frame(&frame, last_event).await;
            }
        }
    }

    async fn on_frame(&self, frame: &str, last_event: &mut Option<String>) {
        let mut data = None;
        for line in frame.lines() {
            if let Some(id) = line.strip_prefix("id: ") {
                *last_event = Some(id.trim().to_string());
            } else if let Some(d) = line.strip_prefix("data: ") {
                data = serde_json::from_str::<StreamedEvent<SecretsRotated>>(d).ok();
            }
        }
        // Only the secrets role's own rotations count (anyone could publish the topic elsewhere).
        let ours = data.is_some_and(|e| e.source == "secrets" && e.payload.service_name == self.role);
        if ours {
            self.refresh().await;
        }
    }

    async fn refresh(&self) {
        match self.fetch().await {
            Ok(injected) => {
                let version = injected.version;
                if self.handle.install(injected) {
                    log::info!(target: "fountain::secrets", role = self.role, version = version; "rotated secrets applied");
                }
            }
            Err(_) if self.is_stopping() => {}
            Err(err) => {
                log::warn!(target: "fountain::secrets", role = self.role; "could not fetch rotated secrets: {err}")
            }
        }
    }

    fn is_stopping(&self) -> bool {
        *self.stopping.borrow()
    }
}

/// Loads every role's secrets (failing start-up with one clear line if a role cannot), then
/// follows rotations and renews registrations in background tasks that end with the host.
/// Roles without a credential file are skipped.
pub async fn start(host: &Host) -> Result<(), String> {
    let config = &host.platform().config;
    for required in ["kms", "secrets", "notify"] {
        if config.peer_url(required).is_none() {
            return Err(format!("peers.{required} must be configured"));
        }
    }
    let peers = Arc::new(Peers {
        configured: config.peers.clone(),
        looked_up: super::cache::TtlCache::new(LOOKUP_TTL, 1_000),
    });
    let mut injectors = Vec::new();
    for (role, handle) in host.secret_handles() {
        let path = credential_path(config, role);
        let Ok(text) = std::fs::read_to_string(&path) else {
            log::warn!(target: "fountain::secrets", role = role, path = path.display().to_string().as_str();
                "no service credential {}: role {role} cannot load its secrets or register with the \
                 gateway; create it with `fountain admin issue-credential --service {role}` (or set \
                 security.credentials_dir to the directory that holds {role}.key)",
                path.display());
            continue;
        };
        injectors.push(Injector {
            role,
            credential: Secret::new(text.trim().to_string()),
            peers: peers.clone(),
            own_url: config.peer_url(role),
            client: internal_client(),
            handle,
            stopping: host.shutdown_signal(),
        });
    }
    let attempts = config.security.secret_fetch_attempts.max(1);
    let loads = injectors.iter().map(|i| i.fetch_with_retry(attempts));
    for result in futures_util::future::join_all(loads).await {
        result?;
    }
    for injector in injectors {
        let injector = std::rc::Rc::new(injector);
        host.spawn("secrets.registration", injector.clone().heartbeat());
        host.spawn("secrets.rotation", injector.watch());
    }
    Ok(())
}

/// The client for calls between roles. It names itself, so that the receiving role logs its
/// routine calls (token refresh, heartbeat, stream reconnect) at debug.
fn internal_client() -> awc::Client {
    awc::Client::builder()
        .timeout(Duration::from_secs(10))
        .add_default_header(("user-agent", INTERNAL_USER_AGENT))
        .finish()
}
