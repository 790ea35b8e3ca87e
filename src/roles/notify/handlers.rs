//! notify endpoints: publish, replay, live stream, subscriptions and the dead-letter queue.

use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::callback::CallbackError;
use super::state::NotifyState;
use super::store::{self, Subscription};
use super::topics::{self, PublishRefusal, MAX_PAYLOAD_BYTES};
use super::worker::SECRET_CONTEXT;
use crate::platform::auth::Claims;
use crate::platform::crypto::random_token;
use crate::platform::db::DbError;
use crate::platform::error::{ApiError, ApiResult, ErrorCode};
use crate::platform::events::{self, valid_topic, StoredEvent};
use crate::platform::extract::{page_limit, Json};
use crate::platform::guards::{Admin, AdminOrService, Origin};
use crate::platform::unit::Who;

/// The events' source and audit role of the changes made here.
const ROLE: &str = "notify";
const MAX_TOPICS: usize = 32;
const STREAM_BATCH: i64 = 100;

/// Why a notify request was refused.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// Also what a caller gets for someone else's subscription: absent, not forbidden.
    #[error("no such subscription")]
    NoSubscription,
    #[error("no such dead delivery")]
    NoDeadDelivery,
    #[error("the topic {0} is published only by fountain's own roles (rule: reserved_topic)")]
    ReservedTopic(String),
    #[error(
        "a service publishes only the topics it owns: {service}.<name> and those \
         roles.notify.publish_topics.{service} lists (rule: topic_ownership)"
    )]
    TopicNotOwned { service: String, allowed: Vec<String> },
    #[error("an event payload is at most {} bytes of JSON", MAX_PAYLOAD_BYTES)]
    PayloadTooLarge,
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<NotifyError> for ApiError {
    fn from(err: NotifyError) -> Self {
        let message = err.to_string();
        match err {
            NotifyError::NoSubscription | NotifyError::NoDeadDelivery => {
                ApiError::new(ErrorCode::NotFound, message)
            }
            NotifyError::ReservedTopic(_) => ApiError::new(ErrorCode::Forbidden, message)
                .with_details(serde_json::json!({ "rule": "reserved_topic" })),
            NotifyError::TopicNotOwned { allowed, .. } => ApiError::new(ErrorCode::Forbidden, message)
                .with_details(serde_json::json!({ "rule": "topic_ownership", "allowed": allowed })),
            NotifyError::PayloadTooLarge => ApiError::new(ErrorCode::PayloadTooLarge, message)
                .with_details(serde_json::json!({ "field": "payload", "limitBytes": MAX_PAYLOAD_BYTES })),
            NotifyError::Db(db) => db.into(),
        }
    }
}

/// The subscription `found` as `caller` may see it: an admin sees every subscription, anyone
/// else only their own.
fn visible(found: Option<Subscription>, caller: &Claims) -> Result<Subscription, NotifyError> {
    match found {
        Some(sub) if caller.is_admin() || sub.owner == caller.sub => Ok(sub),
        _ => Err(NotifyError::NoSubscription),
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"topic": "service_a.element_moved", "payload": {"elementId": 42, "sequenceNumber": 7}}))]
pub struct PublishRequest {
    /// Dot-separated words of a-z 0-9 _ - (at most 128 characters), e.g. `service_a.element_moved`.
    /// A service publishes under its own name; the roles' own topics are refused.
    #[schema(min_length = 1, max_length = 128, pattern = "^[a-z0-9_-]+(\\.[a-z0-9_-]+)*$")]
    pub topic: String,
    /// Any JSON value of at most 64 KiB; never put a secret in it.
    #[schema(value_type = Value)]
    pub payload: serde_json::Value,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Published {
    pub id: i64,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventView {
    pub id: i64,
    pub topic: String,
    /// The JSON value it was published with (any type).
    #[schema(value_type = Value)]
    pub payload: serde_json::Value,
    pub source: String,
    /// RFC 3339, UTC, with `Z`.
    #[serde(with = "crate::platform::time::utc")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: chrono::NaiveDateTime,
}

impl From<StoredEvent> for EventView {
    fn from(event: StoredEvent) -> Self {
        Self {
            id: event.id,
            payload: serde_json::from_str(&event.payload).unwrap_or(serde_json::Value::Null),
            topic: event.topic,
            source: event.source,
            created_at: event.created_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventPage {
    pub events: Vec<EventView>,
    /// Pass as `since` for the next page; absent when there is nothing more yet.
    pub next: Option<i64>,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct ReplayParams {
    /// Only this topic (exact).
    #[param(example = "service_a.element_moved", max_length = 128)]
    pub topic: Option<String>,
    /// Only events with a larger id (default 0: from the beginning).
    #[param(minimum = 0, example = 0)]
    pub since: Option<i64>,
    /// Page size, 1–1000 (default 100).
    #[param(minimum = 1, maximum = 1000, example = 100)]
    pub limit: Option<i64>,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct StreamParams {
    /// Comma-separated topics (exact); all topics when absent.
    pub topics: Option<String>,
    /// Resume after this id (the `Last-Event-ID` header wins when both are given).
    pub since: Option<i64>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schema(example = json!({
    "topics": ["secrets.rotated", "service_a.*"],
    "callbackUrl": "http://localhost:9000/hooks/fountain",
    "secret": "change-me-to-a-long-random-secret"
}))]
pub struct SubscribeRequest {
    /// 1–32 topics: exact, `prefix.*` or `*`.
    #[schema(min_items = 1, max_items = 32)]
    pub topics: Vec<String>,
    /// Absolute http(s) URL without credentials (at most 2048 characters) that receives a POST
    /// per event.
    #[schema(min_length = 1, max_length = 2048)]
    pub callback_url: String,
    /// HMAC secret for `X-Fountain-Signature` (16–256 characters); generated when absent.
    #[schema(min_length = 16, max_length = 256)]
    pub secret: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionView {
    pub id: String,
    pub topics: Vec<String>,
    pub callback_url: String,
    pub owner: String,
    /// RFC 3339, UTC, with `Z`.
    #[serde(with = "crate::platform::time::utc")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: chrono::NaiveDateTime,
    /// Only in the creation response, and only when fountain generated it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

impl SubscriptionView {
    fn of(sub: Subscription, secret: Option<String>) -> Self {
        Self {
            topics: sub.topic_list(),
            id: sub.id,
            callback_url: sub.callback_url,
            owner: sub.owner,
            created_at: sub.created_at,
            secret,
        }
    }
}

/// A page of subscriptions.
#[derive(Debug, Serialize, ToSchema)]
pub struct SubscriptionList {
    pub subscriptions: Vec<SubscriptionView>,
    /// Pass as `after` for the next page; absent on the last page.
    pub next: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct SubscriptionListParams {
    /// Opaque cursor from a previous page.
    pub after: Option<String>,
    /// Page size, 1–200 (default 50).
    #[param(minimum = 1, maximum = 200, example = 50)]
    pub limit: Option<i64>,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct DeliveryParams {
    /// `pending`, `delivered` or `dead`.
    #[param(pattern = "^(pending|delivered|dead)$", example = "dead")]
    pub status: Option<String>,
    /// Only the deliveries of this subscription (its id).
    pub subscription: Option<String>,
    /// 1–500 (default 100).
    #[param(minimum = 1, maximum = 500, example = 100)]
    pub limit: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryView {
    pub id: i64,
    pub subscription_id: String,
    pub event_id: i64,
    pub status: String,
    pub attempts: i32,
    /// RFC 3339, UTC, with `Z` (as every time below).
    #[serde(with = "crate::platform::time::utc")]
    #[schema(value_type = String, format = DateTime)]
    pub next_attempt_at: chrono::NaiveDateTime,
    pub last_error: Option<String>,
    #[serde(with = "crate::platform::time::utc")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: chrono::NaiveDateTime,
    #[serde(with = "crate::platform::time::utc_option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub delivered_at: Option<chrono::NaiveDateTime>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryList {
    pub deliveries: Vec<DeliveryView>,
}

/// Publish an event
///
/// Service or admin. Stored durably first, then delivered to subscribers (at least once). A service publishes only topics it owns: <service>.<name> and those roles.notify.publish_topics grants it; an admin, any topic. The roles' own topics are refused to all. Payload: at most 64 KiB of JSON.
#[utoipa::path(
    post, path = "/events", operation_id = "publishEvent", tag = "Events",
    request_body = PublishRequest,
    responses(
        (status = 202, description = "Stored; delivery follows", body = Published),
        (status = 403, description = "Neither a service nor an admin, a topic the service does not own (rule topic_ownership), or a topic only fountain's roles publish (rule reserved_topic)", body = ErrorBody),
        (status = 413, description = "The payload is larger than 64 KiB of JSON", body = ErrorBody),
        (status = 422, description = "Invalid topic", body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub async fn publish(
    state: web::Data<NotifyState>,
    caller: AdminOrService,
    origin: Origin,
    body: Json<PublishRequest>,
) -> ApiResult<HttpResponse> {
    let PublishRequest { topic, payload } = body.into_inner();
    if !valid_topic(&topic) {
        return Err(ApiError::validation(
            "topic",
            "must be dot-separated words of a-z 0-9 _ - (at most 128 characters)",
        ));
    }
    if topics::serialized_len(&payload) > MAX_PAYLOAD_BYTES {
        return Err(NotifyError::PayloadTooLarge.into());
    }
    match state.publishing.check(&caller.0, &topic) {
        Ok(()) => {}
        Err(PublishRefusal::Reserved) => return Err(NotifyError::ReservedTopic(topic).into()),
        Err(PublishRefusal::NotOwned { service, allowed }) => {
            return Err(NotifyError::TopicNotOwned { service, allowed }.into())
        }
    }
    let source = caller.0.sub;
    let id = state
        .db
        .change(Who::new(ROLE, source.clone(), origin), move |tx| {
            Ok::<_, NotifyError>(tx.publish_raw(&source, &topic, &payload)?)
        })
        .await?;
    state.metrics.published.inc();
    Ok(HttpResponse::Accepted().json(Published { id }))
}

/// Replay events
///
/// Service or admin. Stored events after an id, oldest first, optionally of one topic.
#[utoipa::path(
    get, path = "/events", operation_id = "listEvents", tag = "Events", params(ReplayParams),
    responses((status = 200, description = "A page of events", body = EventPage)),
    security(("bearer" = []))
)]
pub async fn replay(
    state: web::Data<NotifyState>,
    _caller: AdminOrService,
    params: web::Query<ReplayParams>,
) -> ApiResult<web::Json<EventPage>> {
    let limit = page_limit(params.limit, 100, 1000)?;
    let since = params.since.unwrap_or(0).max(0);
    let topics = params.topic.clone().map(|t| vec![t]);
    let found = state.db.run(move |conn| events::read_after(conn, since, topics.as_deref(), limit)).await?;
    let next = found.last().map(|e| e.id);
    Ok(web::Json(EventPage { events: found.into_iter().map(EventView::from).collect(), next }))
}

/// Stream events live
///
/// Service or admin. Server-Sent Events; each event's id is its event id, so Last-Event-ID resumes.
#[utoipa::path(
    get, path = "/events/stream", operation_id = "streamEvents", tag = "Events", params(StreamParams),
    responses((status = 200, description = "text/event-stream of events", content_type = "text/event-stream")),
    security(("bearer" = []))
)]
pub async fn stream(
    state: web::Data<NotifyState>,
    _caller: AdminOrService,
    req: HttpRequest,
    params: web::Query<StreamParams>,
) -> ApiResult<HttpResponse> {
    let last_event_id =
        req.headers().get("last-event-id").and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse().ok());
    // Without a resume point the stream starts with the events published from now on.
    let start = match last_event_id.or(params.since) {
        Some(id) => id.max(0),
        None => latest_id(&state).await?,
    };
    let topics: Option<Vec<String>> = params
        .topics
        .as_ref()
        .map(|t| t.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect());
    if let Some(topics) = &topics {
        if topics.len() > MAX_TOPICS || topics.iter().any(|t| !valid_topic(t)) {
            return Err(ApiError::new(
                ErrorCode::BadRequest,
                "topics must be a comma-separated list of valid topic names",
            ));
        }
    }
    let db = state.db.clone();
    let shutdown = state.shutdown.clone();
    // Committed events wake the stream at once (in this process, and from others through
    // PostgreSQL's NOTIFY); the poll only covers what nothing announced.
    let keepalive = Duration::from_secs(state.config.stream_keepalive_seconds.max(1));
    let poll = Duration::from_millis(state.config.poll_interval_ms.max(10)).min(keepalive);
    // Created before the first read: a commit while a read is in flight is not missed.
    let waiter = events::waiter();
    let events =
        futures_util::stream::unfold((db, start, topics, waiter), move |(db, after, topics, mut waiter)| {
            let mut shutdown = shutdown.clone();
            async move {
                let idle_since = std::time::Instant::now();
                loop {
                    if *shutdown.borrow() {
                        return None;
                    }
                    let wanted = topics.clone();
                    match db
                        .run(move |conn| events::read_after(conn, after, wanted.as_deref(), STREAM_BATCH))
                        .await
                    {
                        Ok(batch) if !batch.is_empty() => {
                            let last = batch.last().map_or(after, |e| e.id);
                            let text: String = batch.into_iter().map(sse_frame).collect();
                            return Some((
                                Ok::<_, actix_web::Error>(web::Bytes::from(text)),
                                (db, last, topics, waiter),
                            ));
                        }
                        Ok(_) => {}
                        Err(err) => log::warn!(target: "fountain::notify", "event stream read failed: {err}"),
                    }
                    if idle_since.elapsed() >= keepalive {
                        return Some((
                            Ok(web::Bytes::from_static(b": keep-alive\n\n")),
                            (db, after, topics, waiter),
                        ));
                    }
                    // The host's stop ends the stream at once, not at the next poll.
                    tokio::select! {
                        _ = waiter.wait(poll) => {}
                        _ = shutdown.wait_for(|stopping| *stopping) => return None,
                    }
                }
            }
        });
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("cache-control", "no-cache"))
        .insert_header(("x-accel-buffering", "no"))
        .streaming(events))
}

async fn latest_id(state: &NotifyState) -> ApiResult<i64> {
    Ok(state.db.run(store::latest_event_id).await?)
}

fn sse_frame(event: StoredEvent) -> String {
    let id = event.id;
    let topic = event.topic.clone();
    let data = serde_json::to_string(&EventView::from(event)).unwrap_or_default();
    format!("id: {id}\nevent: {topic}\ndata: {data}\n\n")
}

/// Subscribe a webhook
///
/// Service or admin. Every event on the topics is POSTed to callbackUrl, signed with HMAC-SHA256 of timestamp.body. The callback host may not resolve to notify itself, a link-local or a cloud metadata address (checked again before every delivery).
#[utoipa::path(
    post, path = "/subscriptions", operation_id = "createSubscription", tag = "Subscriptions",
    request_body = SubscribeRequest,
    responses(
        (status = 201, description = "Subscribed", body = SubscriptionView),
        (status = 403, description = "Neither a service nor an admin", body = ErrorBody),
        (status = 422, description = "Invalid topics, URL or secret, or a callback host that resolves to an address notify does not call (itself, link-local, cloud metadata)", body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub async fn subscribe(
    state: web::Data<NotifyState>,
    caller: AdminOrService,
    origin: Origin,
    body: Json<SubscribeRequest>,
) -> ApiResult<HttpResponse> {
    let body = body.into_inner();
    if body.topics.is_empty() || body.topics.len() > MAX_TOPICS {
        return Err(ApiError::validation("topics", format!("must list 1 to {MAX_TOPICS} topics")));
    }
    for topic in &body.topics {
        let pattern = topic.strip_suffix(".*").unwrap_or(topic);
        if topic != "*" && !valid_topic(pattern) {
            return Err(ApiError::validation("topics", "each must be a topic, a prefix ending in .* or *"));
        }
    }
    let (secret, generated) = match body.secret {
        Some(secret) if (16..=256).contains(&secret.len()) => (secret, false),
        Some(_) => return Err(ApiError::validation("secret", "must be 16 to 256 characters")),
        None => (random_token(32), true),
    };
    // Last: the only check that may wait on the network (resolving the callback's host).
    let callback = check_callback(&state, &body.callback_url).await?;
    let owner = caller.0.sub;
    let mut sub = Subscription {
        after_event_id: 0,
        id: uuid::Uuid::new_v4().to_string(),
        owner: owner.clone(),
        topics: serde_json::to_string(&body.topics).unwrap_or_default(),
        callback_url: body.callback_url,
        sealed_secret: state.master_key.seal(SECRET_CONTEXT, secret.as_bytes()),
        created_at: store::now(),
    };
    // The audit names the callback's host only: a URL's path or query may carry a credential.
    let details = serde_json::json!({ "topics": body.topics, "callbackHost": callback.host_str() });
    let sub = state
        .db
        .change(Who::new(ROLE, owner, origin), move |tx| {
            // The subscription receives the events published after it was created.
            sub.after_event_id = store::latest_event_id(tx.conn())?;
            store::insert_subscription(tx.conn(), &sub)?;
            tx.audit("subscriptions.create", &sub.id, Some(details))?;
            Ok::<_, NotifyError>(sub)
        })
        .await?;
    Ok(HttpResponse::Created().json(SubscriptionView::of(sub, generated.then_some(secret))))
}

/// Callbacks are absolute http(s) URLs without credentials whose host resolves only to
/// addresses notify may call (`callback`: never notify itself, link-local or metadata
/// addresses). The delivery worker checks the addresses again before every call.
async fn check_callback(state: &NotifyState, raw: &str) -> ApiResult<url::Url> {
    let invalid = |reason: String| Err(ApiError::validation("callbackUrl", reason));
    let Ok(url) = url::Url::parse(raw) else { return invalid("must be an absolute URL".into()) };
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return invalid("must be an http or https URL".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return invalid("must not carry credentials (use the subscription secret)".into());
    }
    if raw.len() > 2048 {
        return invalid("must be at most 2048 characters".into());
    }
    match state.callbacks.resolve_checked(&url).await {
        Ok(_) => Ok(url),
        // The address is not named: it was derived from the submitted value.
        Err(CallbackError::Refused { refused, .. }) => invalid(format!("must not point at {refused}")),
        Err(unresolvable) => invalid(unresolvable.to_string()),
    }
}

/// Get a subscription
///
/// Its owner or an admin (a service or admin token; someone else's subscription is absent). Topics and callback URL; the secret is never shown again.
#[utoipa::path(
    get, path = "/subscriptions/{id}", operation_id = "getSubscription", tag = "Subscriptions",
    params(("id" = String, Path, description = "Subscription id")),
    responses(
        (status = 200, description = "The subscription", body = SubscriptionView),
        (status = 403, description = "Neither a service nor an admin", body = ErrorBody),
        (status = 404, description = "No such subscription, or someone else's", body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub async fn get_subscription(
    state: web::Data<NotifyState>,
    caller: AdminOrService,
    path: web::Path<String>,
) -> ApiResult<web::Json<SubscriptionView>> {
    let id = path.into_inner();
    let found = state.db.run(move |conn| store::find_subscription(conn, &id)).await?;
    let sub = visible(found, &caller.0)?;
    Ok(web::Json(SubscriptionView::of(sub, None)))
}

/// List subscriptions
///
/// Service or admin. A service sees its own subscriptions, an admin every one; in id order, one page at a time. Secrets are never shown.
#[utoipa::path(
    get, path = "/subscriptions", operation_id = "listSubscriptions", tag = "Subscriptions",
    params(SubscriptionListParams),
    responses(
        (status = 200, description = "A page of subscriptions", body = SubscriptionList),
        (status = 400, description = "limit out of range", body = ErrorBody),
        (status = 403, description = "Neither a service nor an admin", body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub async fn list_subscriptions(
    state: web::Data<NotifyState>,
    caller: AdminOrService,
    params: web::Query<SubscriptionListParams>,
) -> ApiResult<web::Json<SubscriptionList>> {
    let limit = page_limit(params.limit, 50, 200)?;
    let after = params.after.clone();
    // An admin's listing is not narrowed to an owner.
    let owner = (!caller.0.is_admin()).then_some(caller.0.sub);
    let found = state
        .db
        .run(move |conn| store::list_subscriptions(conn, owner.as_deref(), after.as_deref(), limit))
        .await?;
    let next = (found.len() as i64 == limit).then(|| found.last().map(|s| s.id.clone())).flatten();
    let subscriptions = found.into_iter().map(|sub| SubscriptionView::of(sub, None)).collect();
    Ok(web::Json(SubscriptionList { subscriptions, next }))
}

/// Delete a subscription
///
/// Its owner or an admin (a service or admin token; someone else's subscription is absent). Stops deliveries, including pending retries.
#[utoipa::path(
    delete, path = "/subscriptions/{id}", operation_id = "deleteSubscription", tag = "Subscriptions",
    params(("id" = String, Path, description = "Subscription id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 403, description = "Neither a service nor an admin", body = ErrorBody),
        (status = 404, description = "No such subscription, or someone else's", body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub async fn delete_subscription(
    state: web::Data<NotifyState>,
    caller: AdminOrService,
    origin: Origin,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let id = path.into_inner();
    let caller = caller.0;
    state
        .db
        .change(Who::new(ROLE, caller.sub.clone(), origin), move |tx| {
            let sub = visible(store::find_subscription(tx.conn(), &id)?, &caller)?;
            store::delete_subscription(tx.conn(), &sub.id)?;
            tx.audit("subscriptions.delete", &sub.id, Some(serde_json::json!({ "owner": sub.owner })))?;
            Ok::<_, NotifyError>(())
        })
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// List deliveries
///
/// Admin only. Webhook deliveries by status (pending, delivered, dead), newest first.
#[utoipa::path(
    get, path = "/deliveries", operation_id = "listDeliveries", tag = "Subscriptions", params(DeliveryParams),
    responses(
        (status = 200, description = "Deliveries", body = DeliveryList),
        (status = 400, description = "Unknown status", body = ErrorBody),
        (status = 403, description = "Not an admin", body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub async fn list_deliveries(
    state: web::Data<NotifyState>,
    _admin: Admin,
    params: web::Query<DeliveryParams>,
) -> ApiResult<web::Json<DeliveryList>> {
    let limit = page_limit(params.limit, 100, 500)?;
    let status = params.status.clone();
    if status.as_deref().is_some_and(|s| ![store::PENDING, store::DELIVERED, store::DEAD].contains(&s)) {
        return Err(ApiError::new(ErrorCode::BadRequest, "status must be pending, delivered or dead"));
    }
    let subscription = params.subscription.clone();
    let rows = state
        .db
        .run(move |conn| store::list_deliveries(conn, status.as_deref(), subscription.as_deref(), limit))
        .await?;
    let deliveries = rows
        .into_iter()
        .map(|d| DeliveryView {
            id: d.id,
            subscription_id: d.subscription_id,
            event_id: d.event_id,
            status: d.status,
            attempts: d.attempts,
            next_attempt_at: d.next_attempt_at,
            last_error: d.last_error,
            created_at: d.created_at,
            delivered_at: d.delivered_at,
        })
        .collect();
    Ok(web::Json(DeliveryList { deliveries }))
}

/// Retry a dead delivery
///
/// Admin only. Puts a dead-lettered delivery back in the queue for another attempt.
#[utoipa::path(
    post, path = "/deliveries/{id}/retry", operation_id = "retryDelivery", tag = "Subscriptions",
    params(("id" = i64, Path, description = "Delivery id")),
    responses(
        (status = 202, description = "Queued again"),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 404, description = "No such dead delivery", body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub async fn retry_delivery(
    state: web::Data<NotifyState>,
    admin: Admin,
    origin: Origin,
    path: web::Path<i64>,
) -> ApiResult<HttpResponse> {
    let id = path.into_inner();
    state
        .db
        .change(Who::new(ROLE, admin.0.sub, origin), move |tx| {
            if !store::retry_dead(tx.conn(), id)? {
                return Err(NotifyError::NoDeadDelivery);
            }
            tx.audit("deliveries.retry", &id.to_string(), None)?;
            Ok(())
        })
        .await?;
    Ok(HttpResponse::Accepted().finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(sub: &str, role: &str) -> Claims {
        Claims {
            sub: sub.into(),
            roles: vec![role.into()],
            iss: "fountain".into(),
            aud: "fountain".into(),
            exp: 0,
            iat: 0,
            nbf: 0,
            jti: "j".into(),
            mfa: None,
            sid: None,
            uid: None,
            epoch: None,
            akid: None,
            amr: None,
            mfa_pending: None,
        }
    }

    fn subscription(owner: &str) -> Subscription {
        Subscription {
            id: "s".into(),
            owner: owner.into(),
            topics: "[]".into(),
            callback_url: "http://example.test/hook".into(),
            sealed_secret: String::new(),
            after_event_id: 0,
            created_at: store::now(),
        }
    }

    #[test]
    fn a_subscription_is_visible_to_its_owner_and_admins_only() {
        assert!(visible(Some(subscription("svc")), &claims("svc", "service")).is_ok());
        assert!(visible(Some(subscription("svc")), &claims("root", "admin")).is_ok());
        let other = visible(Some(subscription("svc")), &claims("svc2", "service"));
        assert!(matches!(other, Err(NotifyError::NoSubscription)), "absent, not forbidden");
        assert!(matches!(visible(None, &claims("root", "admin")), Err(NotifyError::NoSubscription)));
    }
}
