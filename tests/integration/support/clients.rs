//! Typed clients, one per role: each method is one documented endpoint, sends the real request
//! over HTTP and returns an [`Answer`] — the status and the JSON body, readable as the
//! endpoint's typed success value. A test reads like the API documentation:
//!
//! ```ignore
//! let key = app.kms().create_key(&admin, "svc").await.ok().api_key;
//! assert_eq!(app.kms().verify_key(&key).await.code, VerifyCode::Valid);
//! assert_eq!(app.secrets().get(&other, "svc").await.refusal(), (403, "forbidden"));
//! ```
//!
//! Where the crate has a typed wire shape (`platform::contracts`) the clients use it; the other
//! answers are read into the small shapes below, which name only the fields tests look at.
//! Requests that are malformed on purpose do not belong here: they go through `TestApp::call`
//! or `TestApp::post_raw`.

use std::marker::PhantomData;
use std::pin::Pin;
use std::time::Duration;

use actix_web::web::Bytes;
use futures_util::{Stream, StreamExt};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

use fountain::platform::contracts::{
    ClientCredentialsGrant, Lookup, RegisterRequest, SecretSet, TokenResponse, VerifyResponse,
};

use super::{TestApp, PASSWORD};

// ---- who calls, and what comes back ----

/// Who makes a call: a bearer token (`&str`, `&String`), or nobody ([`ANONYMOUS`]).
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a>(Option<&'a str>);

/// A call without credentials.
pub const ANONYMOUS: Caller<'static> = Caller(None);

impl<'a> From<&'a str> for Caller<'a> {
    fn from(token: &'a str) -> Self {
        Caller(Some(token))
    }
}

impl<'a> From<&'a String> for Caller<'a> {
    fn from(token: &'a String) -> Self {
        Caller(Some(token))
    }
}

/// What an endpoint answered: its status and JSON body (`null` when empty), and the status
/// the endpoint documents for success.
#[must_use]
#[derive(Debug, Clone)]
pub struct Answer<T> {
    pub status: u16,
    pub body: Value,
    success: u16,
    shape: PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned> Answer<T> {
    /// The documented success as its typed value; panics with the status and body otherwise.
    #[track_caller]
    pub fn ok(&self) -> T {
        assert_eq!(self.status, self.success, "expected the documented success, got {}", self.body);
        T::deserialize(&self.body).unwrap_or_else(|err| {
            panic!("the answer does not have the documented shape ({err}): {}", self.body)
        })
    }
}

impl<T> Answer<T> {
    /// A refusal in the standard error shape: its status and `errorCode`.
    #[track_caller]
    pub fn refusal(&self) -> (u16, &str) {
        assert_error_shape(&self.body);
        (self.status, self.body["errorCode"].as_str().unwrap_or_default())
    }
}

/// Asserts the standard error shape and returns the error code.
#[track_caller]
pub fn assert_error_shape(body: &Value) -> String {
    let code = body["errorCode"].as_str().unwrap_or_else(|| panic!("no errorCode in {body}"));
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "no message in {body}");
    assert!(body.get("details").is_some(), "no details in {body}");
    code.to_string()
}

/// Where a client's requests go: a role, and the path prefix it is reached under (empty on the
/// role itself, `/kms` for kms through the gateway).
#[derive(Clone, Copy)]
struct Endpoint<'a> {
    app: &'a TestApp,
    role: &'static str,
    prefix: &'static str,
}

impl Endpoint<'_> {
    async fn send<T>(
        &self,
        method: &str,
        path: &str,
        caller: Caller<'_>,
        body: Option<Value>,
        success: u16,
    ) -> Answer<T> {
        let path = format!("{}{path}", self.prefix);
        let (status, body) = self.app.call(method, self.role, &path, caller.0, body).await;
        Answer { status, body, success, shape: PhantomData }
    }
}

impl TestApp {
    /// The Key Management Service.
    pub fn kms(&self) -> Kms<'_> {
        Kms(Endpoint { app: self, role: "kms", prefix: "" })
    }

    /// The Secrets Manager.
    pub fn secrets(&self) -> Secrets<'_> {
        Secrets(Endpoint { app: self, role: "secrets", prefix: "" })
    }

    /// The notification service.
    pub fn notify(&self) -> Notify<'_> {
        Notify(Endpoint { app: self, role: "notify", prefix: "" })
    }

    /// The Typesense Client Microservice.
    pub fn search(&self) -> Search<'_> {
        Search(Endpoint { app: self, role: "search", prefix: "" })
    }

    /// The 2FA service.
    pub fn twofa(&self) -> Twofa<'_> {
        Twofa(Endpoint { app: self, role: "twofa", prefix: "" })
    }

    /// The gateway: its registry, and every role behind it.
    pub fn gateway(&self) -> Gateway<'_> {
        Gateway(Endpoint { app: self, role: "gateway", prefix: "" })
    }
}

// ---- kms ----

/// `POST /register` answer.
#[derive(Debug, Deserialize)]
pub struct Registered {
    pub username: String,
    pub roles: Vec<String>,
}

/// A user as kms shows it.
#[derive(Debug, Deserialize)]
pub struct User {
    pub username: String,
    pub roles: Vec<String>,
    pub disabled: bool,
}

/// `GET /users` answer.
#[derive(Debug, Deserialize)]
pub struct UserPage {
    pub users: Vec<User>,
    /// The cursor of the next page.
    pub next: Option<String>,
}

/// `POST /keys` and `GET /keys/{service}` answer: the service's API key itself.
#[derive(Debug, Deserialize)]
pub struct ApiKey {
    pub api_key: String,
}

/// One key of `GET /keys` (never the key itself).
#[derive(Debug, Deserialize)]
pub struct KeyMetadata {
    pub service_name: String,
}

/// `GET /keys` answer.
#[derive(Debug, Deserialize)]
pub struct KeyList {
    pub keys: Vec<KeyMetadata>,
}

/// `PATCH /keys/{service}` answer.
#[derive(Debug, Deserialize)]
pub struct KeyState {
    pub disabled: bool,
}

/// `POST /keys/{service}/rotate` answer.
#[derive(Debug, Deserialize)]
pub struct RotatedKey {
    /// The new key; the previous one verifies until the grace period ends.
    pub api_key: String,
}

/// `POST /signing-keys/rotate` answer.
#[derive(Debug, Deserialize)]
pub struct SigningKey {
    pub kid: String,
}

/// One audit record.
#[derive(Debug, Deserialize)]
pub struct AuditEntry {
    pub action: String,
    pub target: String,
}

/// `GET /audit` answer.
#[derive(Debug, Deserialize)]
pub struct AuditPage {
    pub entries: Vec<AuditEntry>,
}

/// kms: users, sessions, tokens and API keys.
pub struct Kms<'a>(Endpoint<'a>);

impl Kms<'_> {
    /// `POST /register` (201): a user with [`PASSWORD`]. `roles` are honoured for an admin
    /// caller only; none asks for the default.
    pub async fn register<'t>(
        &self,
        who: impl Into<Caller<'t>>,
        username: &str,
        roles: &[&str],
    ) -> Answer<Registered> {
        let mut body = json!({"username": username, "password": PASSWORD});
        if !roles.is_empty() {
            body["roles"] = json!(roles);
        }
        self.0.send("POST", "/register", who.into(), Some(body), 201).await
    }

    /// `POST /login` (200) with [`PASSWORD`]: the session, asserting the login succeeded.
    pub async fn login(&self, username: &str) -> TokenResponse {
        let answer = self.login_with(username, PASSWORD).await;
        assert_eq!(answer.status, 200, "login of {username}: {}", answer.body);
        answer.ok()
    }

    /// `POST /login` (200) with the given password.
    pub async fn login_with(&self, username: &str, password: &str) -> Answer<TokenResponse> {
        let body = json!({"username": username, "password": password});
        self.0.send("POST", "/login", ANONYMOUS, Some(body), 200).await
    }

    /// `POST /token` (200), `grant_type=refresh_token` as JSON: a new session for a refresh token.
    pub async fn refresh(&self, refresh_token: &str) -> Answer<TokenResponse> {
        let body = json!({"grant_type": "refresh_token", "refresh_token": refresh_token});
        self.0.send("POST", "/token", ANONYMOUS, Some(body), 200).await
    }

    /// `POST /token` (200), `grant_type=client_credentials`: a service token for an API key.
    pub async fn exchange_key(&self, api_key: &str) -> Answer<TokenResponse> {
        let body = serde_json::to_value(ClientCredentialsGrant::new(api_key)).unwrap();
        self.0.send("POST", "/token", ANONYMOUS, Some(body), 200).await
    }

    /// `POST /logout` (204): ends the caller's token and its session.
    pub async fn logout<'t>(&self, who: impl Into<Caller<'t>>) -> Answer<()> {
        self.0.send("POST", "/logout", who.into(), None, 204).await
    }

    /// `GET /.well-known/jwks.json` (200): the public signing keys.
    pub async fn jwks(&self) -> Value {
        let answer: Answer<Value> = self.0.send("GET", "/.well-known/jwks.json", ANONYMOUS, None, 200).await;
        answer.ok()
    }

    /// `POST /signing-keys/rotate` (200), admin only.
    pub async fn rotate_signing_key<'t>(&self, who: impl Into<Caller<'t>>) -> Answer<SigningKey> {
        self.0.send("POST", "/signing-keys/rotate", who.into(), None, 200).await
    }

    /// `GET /users` (200), admin only: the first page.
    pub async fn users<'t>(&self, who: impl Into<Caller<'t>>) -> Answer<UserPage> {
        self.0.send("GET", "/users", who.into(), None, 200).await
    }

    /// `GET /users?limit=&after=` (200): a page of `limit` users after the cursor `after`.
    pub async fn users_page<'t>(
        &self,
        who: impl Into<Caller<'t>>,
        limit: u32,
        after: Option<&str>,
    ) -> Answer<UserPage> {
        let path = match after {
            Some(after) => format!("/users?limit={limit}&after={after}"),
            None => format!("/users?limit={limit}"),
        };
        self.0.send("GET", &path, who.into(), None, 200).await
    }

    /// `GET /users/{username}` (200), admin only.
    pub async fn user<'t>(&self, who: impl Into<Caller<'t>>, username: &str) -> Answer<User> {
        self.0.send("GET", &format!("/users/{username}"), who.into(), None, 200).await
    }

    /// `PATCH /users/{username}` (200) `{"roles": …}`: replaces the user's roles.
    pub async fn set_roles<'t>(
        &self,
        who: impl Into<Caller<'t>>,
        username: &str,
        roles: &[&str],
    ) -> Answer<User> {
        self.update_user(who.into(), username, json!({"roles": roles})).await
    }

    /// `PATCH /users/{username}` (200) `{"disabled": …}`: disables or enables the user.
    pub async fn set_disabled<'t>(
        &self,
        who: impl Into<Caller<'t>>,
        username: &str,
        disabled: bool,
    ) -> Answer<User> {
        self.update_user(who.into(), username, json!({"disabled": disabled})).await
    }

    async fn update_user(&self, who: Caller<'_>, username: &str, change: Value) -> Answer<User> {
        self.0.send("PATCH", &format!("/users/{username}"), who, Some(change), 200).await
    }

    /// `DELETE /users/{username}` (204), admin only.
    pub async fn delete_user<'t>(&self, who: impl Into<Caller<'t>>, username: &str) -> Answer<()> {
        self.0.send("DELETE", &format!("/users/{username}"), who.into(), None, 204).await
    }

    /// `POST /keys` (201), admin only: a generated API key for `service`.
    pub async fn create_key<'t>(&self, who: impl Into<Caller<'t>>, service: &str) -> Answer<ApiKey> {
        self.0.send("POST", "/keys", who.into(), Some(json!({"service_name": service})), 201).await
    }

    /// `GET /keys` (200), admin only: every key's metadata.
    pub async fn keys<'t>(&self, who: impl Into<Caller<'t>>) -> Answer<KeyList> {
        self.0.send("GET", "/keys", who.into(), None, 200).await
    }

    /// `GET /keys/{service}` (200): the key, for an admin or the service itself.
    pub async fn key<'t>(&self, who: impl Into<Caller<'t>>, service: &str) -> Answer<ApiKey> {
        self.0.send("GET", &format!("/keys/{service}"), who.into(), None, 200).await
    }

    /// `PATCH /keys/{service}` (200) `{"disabled": …}`, admin only.
    pub async fn set_key_disabled<'t>(
        &self,
        who: impl Into<Caller<'t>>,
        service: &str,
        disabled: bool,
    ) -> Answer<KeyState> {
        let body = json!({"disabled": disabled});
        self.0.send("PATCH", &format!("/keys/{service}"), who.into(), Some(body), 200).await
    }

    /// `POST /keys/{service}/rotate` (200), admin only: a new key; the old one verifies for
    /// `grace_seconds` more (the configured default when `None`).
    pub async fn rotate_key<'t>(
        &self,
        who: impl Into<Caller<'t>>,
        service: &str,
        grace_seconds: Option<i64>,
    ) -> Answer<RotatedKey> {
        let body = grace_seconds.map(|grace| json!({"grace_seconds": grace}));
        self.0.send("POST", &format!("/keys/{service}/rotate"), who.into(), body, 200).await
    }

    /// `DELETE /keys/{service}` (204), admin only: revokes every key of the service.
    pub async fn revoke_key<'t>(&self, who: impl Into<Caller<'t>>, service: &str) -> Answer<()> {
        self.0.send("DELETE", &format!("/keys/{service}"), who.into(), None, 204).await
    }

    /// `POST /keys/verify` (200, also for unknown keys), without credentials: the verdict.
    pub async fn verify_key(&self, api_key: &str) -> VerifyResponse {
        self.verify_key_as(ANONYMOUS, api_key).await.ok()
    }

    /// `POST /keys/verify` (200) as `who`.
    pub async fn verify_key_as<'t>(
        &self,
        who: impl Into<Caller<'t>>,
        api_key: &str,
    ) -> Answer<VerifyResponse> {
        self.0.send("POST", "/keys/verify", who.into(), Some(json!({"api_key": api_key})), 200).await
    }

    /// `GET /audit?{query}` (200), admin only: kms's audit records, newest first.
    pub async fn audit<'t>(&self, who: impl Into<Caller<'t>>, query: &str) -> Answer<AuditPage> {
        self.0.send("GET", &format!("/audit?{query}"), who.into(), None, 200).await
    }
}

// ---- secrets ----

/// `GET /secrets/{service}/versions` answer.
#[derive(Debug, Deserialize)]
pub struct Versions {
    pub current_version: i32,
    pub versions: Vec<Value>,
}

/// `POST /factory/generate` answer.
#[derive(Debug, Deserialize)]
pub struct Generated {
    pub secret: String,
}

/// secrets: versioned secret sets per service.
pub struct Secrets<'a>(Endpoint<'a>);

impl Secrets<'_> {
    /// `POST /secrets/{service}` (201), admin only: version 1 with `values` (or no body: the
    /// generated defaults only).
    pub async fn create<'t>(
        &self,
        who: impl Into<Caller<'t>>,
        service: &str,
        values: impl Into<Option<Value>>,
    ) -> Answer<SecretSet> {
        self.0.send("POST", &format!("/secrets/{service}"), who.into(), values.into(), 201).await
    }

    /// `GET /secrets/{service}` (200): the current version, for an admin or the service itself.
    pub async fn get<'t>(&self, who: impl Into<Caller<'t>>, service: &str) -> Answer<SecretSet> {
        self.0.send("GET", &format!("/secrets/{service}"), who.into(), None, 200).await
    }

    /// `GET /secrets/{service}?version=` (200): one kept version.
    pub async fn get_version<'t>(
        &self,
        who: impl Into<Caller<'t>>,
        service: &str,
        version: i32,
    ) -> Answer<SecretSet> {
        self.0.send("GET", &format!("/secrets/{service}?version={version}"), who.into(), None, 200).await
    }

    /// `GET /secrets/{service}/versions` (200): the kept versions, without values.
    pub async fn versions<'t>(&self, who: impl Into<Caller<'t>>, service: &str) -> Answer<Versions> {
        self.0.send("GET", &format!("/secrets/{service}/versions"), who.into(), None, 200).await
    }

    /// `POST /secrets/{service}/rotate` (200), admin only, with `request` (`{"newSecrets": …}`)
    /// or no body: a new version, defaults regenerated, custom values kept.
    pub async fn rotate<'t>(
        &self,
        who: impl Into<Caller<'t>>,
        service: &str,
        request: impl Into<Option<Value>>,
    ) -> Answer<SecretSet> {
        self.0.send("POST", &format!("/secrets/{service}/rotate"), who.into(), request.into(), 200).await
    }

    /// `PUT /secrets/{service}` (200), admin only: check-and-set of the whole set.
    pub async fn replace<'t>(
        &self,
        who: impl Into<Caller<'t>>,
        service: &str,
        secrets: Value,
        expected_version: i32,
    ) -> Answer<SecretSet> {
        let body = json!({"secrets": secrets, "expectedVersion": expected_version});
        self.0.send("PUT", &format!("/secrets/{service}"), who.into(), Some(body), 200).await
    }

    /// `DELETE /secrets/{service}` (204), admin only: a soft delete.
    pub async fn delete<'t>(&self, who: impl Into<Caller<'t>>, service: &str) -> Answer<()> {
        self.0.send("DELETE", &format!("/secrets/{service}"), who.into(), None, 204).await
    }

    /// `POST /secrets/{service}/restore` (204), admin only.
    pub async fn restore<'t>(&self, who: impl Into<Caller<'t>>, service: &str) -> Answer<()> {
        self.0.send("POST", &format!("/secrets/{service}/restore"), who.into(), None, 204).await
    }

    /// `POST /secrets/{service}/destroy` (204), admin only: every version, irreversibly.
    pub async fn destroy<'t>(&self, who: impl Into<Caller<'t>>, service: &str) -> Answer<()> {
        self.0.send("POST", &format!("/secrets/{service}/destroy"), who.into(), None, 204).await
    }

    /// `POST /factory/generate` (200) with `request` (`{"length", "alphabet"}`) or no body.
    pub async fn generate<'t>(
        &self,
        who: impl Into<Caller<'t>>,
        request: impl Into<Option<Value>>,
    ) -> Answer<Generated> {
        self.0.send("POST", "/factory/generate", who.into(), request.into(), 200).await
    }

    /// `POST /notifications` (200): announces that `service`'s secrets are at `version`.
    pub async fn announce_rotation<'t>(
        &self,
        who: impl Into<Caller<'t>>,
        service: &str,
        rotation_time: &str,
        version: &str,
    ) -> Answer<Value> {
        let body = json!({"serviceName": service, "rotationTime": rotation_time, "version": version});
        self.0.send("POST", "/notifications", who.into(), Some(body), 200).await
    }
}

// ---- notify ----

/// `POST /events` answer.
#[derive(Debug, Deserialize)]
pub struct Published {
    pub id: i64,
}

/// One stored event.
#[derive(Debug, Deserialize)]
pub struct Event {
    pub id: i64,
    pub topic: String,
    pub payload: Value,
    pub source: String,
}

/// `GET /events` answer.
#[derive(Debug, Deserialize)]
pub struct EventPage {
    pub events: Vec<Event>,
}

/// A subscription as notify shows it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Subscription {
    pub id: String,
    pub callback_url: String,
    /// Only when notify generated it, in the creation answer.
    pub secret: Option<String>,
}

/// One webhook delivery.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    pub id: i64,
    pub attempts: i32,
    pub last_error: Option<String>,
}

/// `GET /deliveries` answer.
#[derive(Debug, Deserialize)]
pub struct Deliveries {
    pub deliveries: Vec<Delivery>,
}

/// notify: events, webhook subscriptions and their deliveries, the live stream.
pub struct Notify<'a>(Endpoint<'a>);

impl Notify<'_> {
    /// `POST /events` (202), a service or an admin: stores the event; delivery follows.
    pub async fn publish<'t>(
        &self,
        who: impl Into<Caller<'t>>,
        topic: &str,
        payload: Value,
    ) -> Answer<Published> {
        let body = json!({"topic": topic, "payload": payload});
        self.0.send("POST", "/events", who.into(), Some(body), 202).await
    }

    /// `GET /events?{query}` (200): stored events (`topic`, `since`, `limit`), oldest first.
    pub async fn replay<'t>(&self, who: impl Into<Caller<'t>>, query: &str) -> Answer<EventPage> {
        self.0.send("GET", &format!("/events?{query}"), who.into(), None, 200).await
    }

    /// `GET /events/stream?topics=` (200, `text/event-stream`), resuming after
    /// `last_event_id` when given (the `Last-Event-ID` header).
    pub async fn stream<'t>(
        &self,
        who: impl Into<Caller<'t>>,
        topics: &str,
        last_event_id: Option<i64>,
    ) -> EventStream {
        let app = self.0.app;
        let mut request = app.client.get(app.url(self.0.role, &format!("/events/stream?topics={topics}")));
        if let Caller(Some(token)) = who.into() {
            request = request.insert_header(("authorization", format!("Bearer {token}")));
        }
        if let Some(id) = last_event_id {
            request = request.insert_header(("last-event-id", id.to_string()));
        }
        let response = request.send().await.expect("stream opened");
        EventStream {
            status: response.status().as_u16(),
            content_type: response
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string(),
            chunks: Box::pin(response),
        }
    }

    /// `POST /subscriptions` (201): webhook deliveries of `topics` to `callback_url`, signed
    /// with `secret` (generated and returned once when `None`).
    pub async fn subscribe<'t>(
        &self,
        who: impl Into<Caller<'t>>,
        topics: &[&str],
        callback_url: &str,
        secret: Option<&str>,
    ) -> Answer<Subscription> {
        let mut body = json!({"topics": topics, "callbackUrl": callback_url});
        if let Some(secret) = secret {
            body["secret"] = json!(secret);
        }
        self.0.send("POST", "/subscriptions", who.into(), Some(body), 201).await
    }

    /// `GET /subscriptions/{id}` (200): for its owner or an admin.
    pub async fn subscription<'t>(&self, who: impl Into<Caller<'t>>, id: &str) -> Answer<Subscription> {
        self.0.send("GET", &format!("/subscriptions/{id}"), who.into(), None, 200).await
    }

    /// `DELETE /subscriptions/{id}` (204): for its owner or an admin.
    pub async fn unsubscribe<'t>(&self, who: impl Into<Caller<'t>>, id: &str) -> Answer<()> {
        self.0.send("DELETE", &format!("/subscriptions/{id}"), who.into(), None, 204).await
    }

    /// `GET /deliveries?status=` (200), admin only: `pending`, `delivered` or `dead`.
    pub async fn deliveries<'t>(&self, who: impl Into<Caller<'t>>, status: &str) -> Answer<Deliveries> {
        self.0.send("GET", &format!("/deliveries?status={status}"), who.into(), None, 200).await
    }

    /// `POST /deliveries/{id}/retry` (202), admin only: a dead delivery is queued again.
    pub async fn retry_delivery<'t>(&self, who: impl Into<Caller<'t>>, id: i64) -> Answer<()> {
        self.0.send("POST", &format!("/deliveries/{id}/retry"), who.into(), None, 202).await
    }
}

/// An open `text/event-stream` answer.
pub struct EventStream {
    pub status: u16,
    pub content_type: String,
    chunks: Pin<Box<dyn Stream<Item = Result<Bytes, awc::error::PayloadError>>>>,
}

impl EventStream {
    /// The next chunk that carries event frames (keep-alive comments skipped), as text. Waits at
    /// most 20 s: the bound only turns a missing event into a failure.
    pub async fn next_events(&mut self) -> String {
        loop {
            let chunk = actix_web::rt::time::timeout(Duration::from_secs(20), self.chunks.next())
                .await
                .expect("an event within the test's bound")
                .expect("stream open")
                .expect("chunk");
            let text = String::from_utf8(chunk.to_vec()).expect("UTF-8 frames");
            if text.contains("event: ") {
                return text;
            }
        }
    }
}

// ---- gateway ----

/// One entry of the gateway's registry.
#[derive(Debug, Deserialize)]
pub struct RegistryEntry {
    pub service: String,
    /// From configuration: never expires.
    #[serde(rename = "static")]
    pub is_static: bool,
    /// RFC 3339 in UTC; null for static entries.
    #[serde(rename = "expiresAt")]
    pub expires_at: Option<String>,
}

/// `GET /registry` answer.
#[derive(Debug, Deserialize)]
pub struct Registry {
    pub entries: Vec<RegistryEntry>,
}

/// The gateway: the service registry, and the roles and services routed behind it.
pub struct Gateway<'a>(Endpoint<'a>);

impl<'a> Gateway<'a> {
    /// The 2FA service behind the gateway (`/twofa/...`).
    pub fn twofa(&self) -> Twofa<'a> {
        Twofa(Endpoint { app: self.0.app, role: "gateway", prefix: "/twofa" })
    }

    /// kms through the gateway (`/kms/…`): the edge authenticates first.
    pub fn kms(&self) -> Kms<'a> {
        Kms(Endpoint { prefix: "/kms", ..self.0 })
    }

    /// secrets through the gateway (`/secrets/…`).
    pub fn secrets(&self) -> Secrets<'a> {
        Secrets(Endpoint { prefix: "/secrets", ..self.0 })
    }

    /// Service A through the gateway (`/service_a/…`), the seed's client path.
    pub fn service_a(&self) -> Sequence<'a> {
        Sequence(Endpoint { prefix: "/service_a", ..self.0 })
    }

    /// The search service through the gateway (`/typesense_client/…`).
    pub fn typesense_client(&self) -> Search<'a> {
        Search(Endpoint { prefix: "/typesense_client", ..self.0 })
    }

    /// The seed's `POST /search` on the gateway itself, which reaches search's `/search`.
    pub fn seed_search(&self) -> Search<'a> {
        Search(Endpoint { prefix: "", ..self.0 })
    }

    /// `POST /registry` (204): an instance of `service` at `url`, living `ttl_seconds` without
    /// a heartbeat. A service token registers only its own service.
    pub async fn register_instance<'t>(
        &self,
        who: impl Into<Caller<'t>>,
        service: &str,
        url: &str,
        ttl_seconds: u64,
    ) -> Answer<()> {
        let request = RegisterRequest { service: service.into(), url: url.into(), ttl_seconds };
        let body = serde_json::to_value(request).unwrap();
        self.0.send("POST", "/registry", who.into(), Some(body), 204).await
    }

    /// `GET /registry` (200): static and registered instances.
    pub async fn registry<'t>(&self, who: impl Into<Caller<'t>>) -> Answer<Registry> {
        self.0.send("GET", "/registry", who.into(), None, 200).await
    }

    /// `GET /lookup/{service}` (200): one instance of the service, healthy ones first.
    pub async fn lookup<'t>(&self, who: impl Into<Caller<'t>>, service: &str) -> Answer<Lookup> {
        self.0.send("GET", &format!("/lookup/{service}"), who.into(), None, 200).await
    }

    /// A `GET` of `path` through the gateway to the service routed there (200 expected).
    pub async fn get<'t>(&self, who: impl Into<Caller<'t>>, path: &str) -> Answer<Value> {
        self.0.send("GET", path, who.into(), None, 200).await
    }

    /// A JSON `POST` of `body` to `path` through the gateway (200 expected).
    pub async fn post<'t>(&self, who: impl Into<Caller<'t>>, path: &str, body: Value) -> Answer<Value> {
        self.0.send("POST", path, who.into(), Some(body), 200).await
    }
}

// ---- search ----

/// `POST /documents/sync` and `DELETE /documents/{id}` answer.
#[derive(Debug, Deserialize)]
pub struct SearchMessage {
    pub message: String,
}

/// The search role.
pub struct Search<'a>(Endpoint<'a>);

impl Search<'_> {
    /// `POST /documents/sync` (200): `operation` on `document`.
    pub async fn sync<'t>(
        &self,
        who: impl Into<Caller<'t>>,
        operation: &str,
        document: &Value,
    ) -> Answer<SearchMessage> {
        let body = json!({"operation": operation, "document": document});
        self.0.send("POST", "/documents/sync", who.into(), Some(body), 200).await
    }

    /// `POST /documents/import` (200): JSON lines in, the status and one result per line out.
    pub async fn import<'t>(&self, who: impl Into<Caller<'t>>, lines: &str) -> (u16, Vec<Value>) {
        let mut request = self.0.app.client.post(self.0.app.url(self.0.role, "/documents/import"));
        if let Some(token) = who.into().0 {
            request = request.insert_header(("authorization", format!("Bearer {token}")));
        }
        let mut response = request
            .insert_header(("content-type", "application/x-ndjson"))
            .send_body(lines.to_string())
            .await
            .expect("request sent");
        let body = response.body().limit(64 << 20).await.expect("body read");
        let text = String::from_utf8_lossy(&body);
        let status = response.status().as_u16();
        if status != 200 {
            return (status, vec![serde_json::from_str(&text).expect("JSON error")]);
        }
        (status, text.lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect())
    }

    /// `POST /search` (200).
    pub async fn search<'t>(
        &self,
        who: impl Into<Caller<'t>>,
        request: Value,
    ) -> Answer<fountain::roles::search::SearchResponse> {
        self.0.send("POST", "/search", who.into(), Some(request), 200).await
    }

    /// `GET /documents/{id}` (200).
    pub async fn get<'t>(
        &self,
        who: impl Into<Caller<'t>>,
        id: &str,
    ) -> Answer<fountain::roles::search::Document> {
        self.0.send("GET", &format!("/documents/{id}"), who.into(), None, 200).await
    }

    /// `DELETE /documents/{id}` (200).
    pub async fn delete<'t>(&self, who: impl Into<Caller<'t>>, id: &str) -> Answer<SearchMessage> {
        self.0.send("DELETE", &format!("/documents/{id}"), who.into(), None, 200).await
    }

    /// `GET /collections/{name}` (200).
    pub async fn collection<'t>(&self, who: impl Into<Caller<'t>>, name: &str) -> Answer<Value> {
        self.0.send("GET", &format!("/collections/{name}"), who.into(), None, 200).await
    }
}

// ---- sequence (Service A) ----

pub use fountain::roles::sequence::api::{
    ElementDetail, ElementPage, ReorderResponse, ResyncResponse, SequenceResponse, SyncStatus,
    VersionResponse,
};

impl TestApp {
    /// Service A.
    pub fn sequence(&self) -> Sequence<'_> {
        Sequence(Endpoint { app: self, role: "sequence", prefix: "" })
    }
}

pub struct Sequence<'a>(Endpoint<'a>);

impl Sequence<'_> {
    /// `POST /sequence` (201): a new element with the next sequence number of its type.
    pub async fn create<'t>(
        &self,
        who: impl Into<Caller<'t>>,
        element_type: &str,
        element_id: i64,
        comment: &str,
    ) -> Answer<SequenceResponse> {
        let body = json!({"elementType": element_type, "elementId": element_id, "comment": comment});
        self.0.send("POST", "/sequence", who.into(), Some(body), 201).await
    }

    /// `POST /sequence/reorder` (200): `request` is `{elementIds, newOrder, elementType?}`.
    pub async fn reorder<'t>(&self, who: impl Into<Caller<'t>>, request: Value) -> Answer<ReorderResponse> {
        self.0.send("POST", "/sequence/reorder", who.into(), Some(request), 200).await
    }

    /// `POST /sequence/version` (201): the next version of an element with `data`.
    pub async fn version<'t>(
        &self,
        who: impl Into<Caller<'t>>,
        element_type: &str,
        element_id: i64,
        data: Value,
        comment: &str,
    ) -> Answer<VersionResponse> {
        let body = json!({"elementType": element_type, "elementId": element_id,
                          "newVersionData": data, "comment": comment});
        self.0.send("POST", "/sequence/version", who.into(), Some(body), 201).await
    }

    /// `GET /elements?…` (200): `query` is the query string without `?`.
    pub async fn list<'t>(&self, who: impl Into<Caller<'t>>, query: &str) -> Answer<ElementPage> {
        self.0.send("GET", &format!("/elements?{query}"), who.into(), None, 200).await
    }

    /// `GET /elements/{type}/{id}` (200): the element and its versions.
    pub async fn get<'t>(
        &self,
        who: impl Into<Caller<'t>>,
        element_type: &str,
        id: i64,
    ) -> Answer<ElementDetail> {
        self.0.send("GET", &format!("/elements/{element_type}/{id}"), who.into(), None, 200).await
    }

    /// `GET /sync/status` (200).
    pub async fn sync_status<'t>(&self, who: impl Into<Caller<'t>>) -> Answer<SyncStatus> {
        self.0.send("GET", "/sync/status", who.into(), None, 200).await
    }

    /// `POST /sync/resync` (202), admin only.
    pub async fn resync<'t>(&self, who: impl Into<Caller<'t>>) -> Answer<ResyncResponse> {
        self.0.send("POST", "/sync/resync", who.into(), None, 202).await
    }
}

// ---- twofa ----

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Enrollment {
    pub secret: String,
    pub otpauth_uri: String,
    pub qr_svg: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Activated {
    pub recovery_codes: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TwofaStatus {
    pub enrolled: bool,
    pub pending: bool,
    pub recovery_codes_left: i64,
    pub locked_until: Option<String>,
}

pub struct Twofa<'a>(Endpoint<'a>);

impl Twofa<'_> {
    /// `POST /2fa/enroll`, with a current code while a factor is active.
    pub async fn enroll<'t>(&self, who: impl Into<Caller<'t>>, code: Option<&str>) -> Answer<Enrollment> {
        let body = code.map(|code| json!({ "code": code }));
        self.0.send("POST", "/2fa/enroll", who.into(), body, 200).await
    }

    /// `POST /2fa/activate {code}`.
    pub async fn activate<'t>(&self, who: impl Into<Caller<'t>>, code: &str) -> Answer<Activated> {
        self.0.send("POST", "/2fa/activate", who.into(), Some(json!({ "code": code })), 200).await
    }

    /// `POST /2fa/verify {code}`: a step-up token.
    pub async fn verify<'t>(&self, who: impl Into<Caller<'t>>, code: &str) -> Answer<TokenResponse> {
        self.0.send("POST", "/2fa/verify", who.into(), Some(json!({ "code": code })), 200).await
    }

    /// `POST /2fa/verify {recoveryCode}`.
    pub async fn verify_recovery<'t>(&self, who: impl Into<Caller<'t>>, code: &str) -> Answer<TokenResponse> {
        self.0.send("POST", "/2fa/verify", who.into(), Some(json!({ "recoveryCode": code })), 200).await
    }

    /// `GET /2fa/status`.
    pub async fn status<'t>(&self, who: impl Into<Caller<'t>>) -> Answer<TwofaStatus> {
        self.0.send("GET", "/2fa/status", who.into(), None, 200).await
    }

    /// `GET /2fa/status/{username}` (admin).
    pub async fn status_of<'t>(&self, who: impl Into<Caller<'t>>, username: &str) -> Answer<TwofaStatus> {
        self.0.send("GET", &format!("/2fa/status/{username}"), who.into(), None, 200).await
    }

    /// `DELETE /2fa` with `{code}` or `{recoveryCode}`.
    pub async fn disable<'t>(&self, who: impl Into<Caller<'t>>, proof: Value) -> Answer<()> {
        self.0.send("DELETE", "/2fa", who.into(), Some(proof), 204).await
    }

    /// `POST /2fa/users/{username}/reset` (admin with a step-up token).
    pub async fn reset<'t>(&self, who: impl Into<Caller<'t>>, username: &str) -> Answer<()> {
        self.0.send("POST", &format!("/2fa/users/{username}/reset"), who.into(), None, 204).await
    }
}
