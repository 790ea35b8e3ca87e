//! The one middleware every role runs: request id, log context, metrics, access log, and the
//! rewrite of bare error responses (actix's own 404/405, for instance) into the JSON error shape.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::{HttpMessage, ResponseError};

use super::error::{ApiError, ErrorCode};
use super::logging::{with_context, RequestContext};
use super::metrics::RoleMetrics;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The `User-Agent` of fountain's own calls between roles (`platform::injection`).
pub const INTERNAL_USER_AGENT: &str = concat!("fountain/", env!("CARGO_PKG_VERSION"));

/// The routine calls a role makes to its peers while it runs: service-token refresh, registry
/// heartbeat, peer lookup, secret fetch and the rotation stream. Answered successfully to
/// fountain's own client, they are logged at debug: every role repeats them every few seconds.
const ROUTINE_INTERNAL_CALLS: [(&str, &str); 5] = [
    ("POST", "/token"),
    ("POST", "/registry"),
    ("GET", "/lookup/{service}"),
    ("GET", "/secrets/{serviceName}"),
    ("GET", "/events/stream"),
];

/// Longest client-supplied request id that is kept (longer ones are replaced).
const MAX_REQUEST_ID_LEN: usize = 128;

/// The request id of a request, stored in its extensions for handlers and outgoing calls.
#[derive(Debug, Clone)]
pub struct RequestId(pub Arc<str>);

/// Per-role state of the middleware.
#[derive(Clone)]
pub struct Observability {
    pub role: &'static str,
    pub metrics: RoleMetrics,
}

/// The metrics label of a request that no route template describes, set by the handler that
/// served it: the gateway proxies from its default service and names the route prefix here.
/// Interned: labels are few (one per configured route prefix), and a request then carries its
/// label without touching a reference count that every worker writes.
#[derive(Debug, Clone, Copy)]
pub struct RouteLabel(pub &'static str);

impl RouteLabel {
    pub fn interned(label: &str) -> Self {
        static LABELS: Mutex<BTreeSet<&'static str>> = Mutex::new(BTreeSet::new());
        let mut labels = LABELS.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(known) = labels.get(label) {
            return RouteLabel(known);
        }
        let label: &'static str = Box::leak(label.into());
        labels.insert(label);
        RouteLabel(label)
    }
}

impl Observability {
    pub async fn handle(
        &self,
        req: ServiceRequest,
        next: Next<impl MessageBody + 'static>,
    ) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
        let started = Instant::now();
        let request_id = accepted_request_id(&req).unwrap_or_else(new_request_id);
        req.extensions_mut().insert(RequestId(request_id.clone()));
        // Cheap handles (an interned method, a shared URI) kept for the failure branch, where
        // the request is gone.
        let method = req.method().clone();
        let uri = req.uri().clone();
        let from_fountain = req
            .headers()
            .get(header::USER_AGENT)
            .is_some_and(|agent| agent.as_bytes() == INTERNAL_USER_AGENT.as_bytes());
        let context = RequestContext { request_id: request_id.clone(), role: self.role };

        with_context(context, async move {
            let response = match next.call(req).await {
                Ok(response) => response.map_into_boxed_body(),
                Err(err) => {
                    // Only a failing inner middleware gets here (handlers and extractors turn
                    // their errors into responses); actix renders it further out.
                    let status = err.as_response_error().status_code();
                    let elapsed = started.elapsed().as_secs_f64();
                    self.metrics.observe(method.as_str(), "unmatched", status, elapsed);
                    let access =
                        Access { method: method.as_str(), path: uri.path(), route: "unmatched", status };
                    access.log(false, elapsed * 1000.0);
                    return Err(err);
                }
            };
            let mut response = json_errors_only(response);
            if let Ok(value) = HeaderValue::from_str(&request_id) {
                response.headers_mut().insert(REQUEST_ID, value);
            }
            let status = response.status();
            let elapsed = started.elapsed().as_secs_f64();
            let label = response.request().extensions().get::<RouteLabel>().map(|l| l.0);
            let pattern = match label {
                Some(_) => None,
                None => response.request().match_pattern(),
            };
            let route = label.or(pattern.as_deref()).unwrap_or("unmatched");
            self.metrics.observe(method.as_str(), route, status, elapsed);
            let access = Access { method: method.as_str(), path: uri.path(), route, status };
            access.log(from_fountain, elapsed * 1000.0);
            Ok(response)
        })
        .await
    }
}

/// A fresh UUIDv4 request id, formatted on the stack and stored once.
fn new_request_id() -> Arc<str> {
    let mut buffer = uuid::Uuid::encode_buffer();
    Arc::from(&*uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buffer))
}

/// Keeps a client's request id when it is short and plain, so ids can be traced across systems
/// without letting a client inject log content.
fn accepted_request_id(req: &ServiceRequest) -> Option<Arc<str>> {
    let value = req.headers().get(REQUEST_ID)?.to_str().ok()?;
    let plain = !value.is_empty()
        && value.len() <= MAX_REQUEST_ID_LEN
        && value.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
    plain.then(|| Arc::from(value))
}

/// Error responses that are not JSON (a resource's 405, a guard's 404…) get the standard body;
/// headers such as `Allow` and `Retry-After` are kept.
fn json_errors_only(response: ServiceResponse<BoxBody>) -> ServiceResponse<BoxBody> {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (request, original) = response.into_parts();
    let mut replacement = ApiError::from_code(ErrorCode::for_status(status)).error_response();
    *replacement.status_mut() = status;
    for (name, value) in original.headers() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            replacement.headers_mut().insert(name.clone(), value.clone());
        }
    }
    ServiceResponse::new(request, replacement)
}

/// One access-log line.
struct Access<'a> {
    method: &'a str,
    path: &'a str,
    route: &'a str,
    status: StatusCode,
}

impl Access<'_> {
    fn log(&self, from_fountain: bool, millis: f64) {
        let Access { method, path, route, .. } = *self;
        let status = self.status.as_u16();
        let millis = (millis * 1000.0).round() / 1000.0;
        log::log!(
            target: "fountain::access", self.level(from_fountain),
            method = method, path = path, route = route, status = status, duration_ms = millis;
            "{method} {path} {status}"
        );
    }

    /// Probes and scrapes arrive every few seconds, and so do the roles' routine calls to each
    /// other: they are logged at debug so that the access log shows traffic, not housekeeping.
    /// A routine call that fails keeps its level (only fountain's own successful calls are
    /// quieted, so a client naming itself fountain hides nothing that went wrong).
    fn level(&self, from_fountain: bool) -> log::Level {
        let routine = from_fountain
            && self.status.is_success()
            && ROUTINE_INTERNAL_CALLS.contains(&(self.method, self.route));
        match self.route {
            "/health" | "/ready" | "/metrics" => log::Level::Debug,
            _ if routine => log::Level::Debug,
            _ if self.status.is_server_error() => log::Level::Warn,
            _ => log::Level::Info,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn level(method: &str, route: &str, status: u16, from_fountain: bool) -> log::Level {
        let status = StatusCode::from_u16(status).unwrap();
        Access { method, path: route, route, status }.level(from_fountain)
    }

    #[test]
    fn routine_calls_between_roles_log_at_debug_unless_they_fail() {
        assert_eq!(level("POST", "/registry", 204, true), log::Level::Debug);
        assert_eq!(level("GET", "/events/stream", 200, true), log::Level::Debug);
        assert_eq!(level("POST", "/token", 200, true), log::Level::Debug);
        assert_eq!(level("POST", "/token", 200, false), log::Level::Info, "a person's refresh is traffic");
        assert_eq!(level("POST", "/token", 401, true), log::Level::Info, "a refused call is not routine");
        assert_eq!(level("POST", "/registry", 503, true), log::Level::Warn);
        assert_eq!(level("POST", "/keys", 201, true), log::Level::Info, "only routine routes");
        assert_eq!(level("GET", "/health", 200, false), log::Level::Debug);
    }
}
