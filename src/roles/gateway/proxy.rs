//! The proxy: `/{prefix}/{rest}` goes to the service the route table names, with the caller
//! authenticated at the edge (JWT from kms's JWKS, or X-API-KEY verified by kms), headers
//! cleaned, identity set from the verified credential, and bodies streamed both ways.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};
use futures_util::StreamExt;

use super::registry::GatewayState;
use crate::platform::auth::{self, Claims, SERVICE_ROLE};
use crate::platform::error::{ApiError, ApiResult, ErrorCode};
use crate::platform::middleware::RequestId;

const FOUNTAIN_USER: HeaderName = HeaderName::from_static("x-fountain-user");
const FOUNTAIN_ROLES: HeaderName = HeaderName::from_static("x-fountain-roles");
const API_KEY: HeaderName = HeaderName::from_static("x-api-key");

/// Headers that describe one hop and never travel further (RFC 9110 §7.6.1), plus the ones
/// the gateway itself decides.
const DROPPED_REQUEST_HEADERS: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
    "x-api-key",
    "x-fountain-user",
    "x-fountain-roles",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-request-id",
];
const DROPPED_RESPONSE_HEADERS: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
];

/// Verdicts of X-API-KEY checks at kms (the owning service when valid), by SHA-256 of the key.
pub type ApiKeyCache = crate::platform::cache::TtlCache<[u8; 32], Option<String>>;

/// Who the request is from, once the edge has checked it.
struct Identity {
    subject: String,
    roles: Vec<String>,
    /// The token carries the twofa step-up claim.
    mfa: bool,
}

/// Applies the first `gateway.rules` entry that matches the request, if any.
fn check_rules(state: &GatewayState, req: &HttpRequest, identity: &Identity) -> ApiResult<()> {
    let path = req.path();
    let method = req.method().as_str();
    let rule = state.config.rules.iter().find(|rule| {
        let path_matches = match rule.path.strip_suffix('*') {
            Some(prefix) => path.starts_with(prefix),
            None => path == rule.path,
        };
        path_matches
            && (rule.methods.is_empty() || rule.methods.iter().any(|m| m.eq_ignore_ascii_case(method)))
    });
    let Some(rule) = rule else { return Ok(()) };
    if !rule.roles.is_empty() && !rule.roles.iter().any(|r| identity.roles.contains(r)) {
        return Err(ApiError::new(ErrorCode::Forbidden, "this route requires another role"));
    }
    if rule.mfa && !identity.mfa {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            "this route requires a second factor (step up with twofa)",
        )
        .with_details(serde_json::json!({ "mfaRequired": true })));
    }
    Ok(())
}

fn is_public(state: &GatewayState, path: &str, tail: &str) -> bool {
    tail == "health"
        || state.config.public_routes.iter().any(|rule| match rule.strip_suffix('*') {
            Some(prefix) => path.starts_with(prefix),
            None => path == rule,
        })
}

async fn authenticate(state: &GatewayState, req: &HttpRequest) -> ApiResult<Identity> {
    if let Some(token) = auth::bearer_token(req) {
        let claims: Claims = state.keys.verify(token).await?;
        if state.revocations.is_revoked(&claims) {
            log::info!(target: "fountain::auth", reason = "revoked"; "token rejected");
            return Err(auth::invalid_token());
        }
        return Ok(Identity { mfa: claims.mfa == Some(true), subject: claims.sub, roles: claims.roles });
    }
    if let Some(key) = req.headers().get(API_KEY).and_then(|v| v.to_str().ok()) {
        let service = verify_api_key(state, key).await?;
        return service
            .map(|service| Identity { subject: service, roles: vec![SERVICE_ROLE.to_string()], mfa: false })
            .ok_or_else(auth::invalid_token);
    }
    Err(ApiError::new(ErrorCode::Unauthorized, "a bearer token or an X-API-KEY is required"))
}

async fn verify_api_key(state: &GatewayState, key: &str) -> ApiResult<Option<String>> {
    use sha2::Digest;
    let digest: [u8; 32] = sha2::Sha256::digest(key.as_bytes()).into();
    if let Some(service) = state.api_keys.get(&digest) {
        return Ok(service);
    }
    let kms = state
        .resolve("kms")
        .await?
        .ok_or_else(|| ApiError::unavailable("kms", "no kms instance is known"))?;
    let client = awc::Client::builder().timeout(Duration::from_secs(5)).finish();
    let mut response = client
        .post(format!("{kms}/keys/verify"))
        .send_json(&serde_json::json!({ "api_key": key }))
        .await
        .map_err(|e| ApiError::unavailable("kms", e))?;
    if !response.status().is_success() {
        return Err(ApiError::unavailable("kms", format!("key verification answered {}", response.status())));
    }
    let verdict: serde_json::Value = response.json().await.map_err(|e| ApiError::unavailable("kms", e))?;
    let service =
        (verdict["valid"] == true).then(|| verdict["service_name"].as_str().map(str::to_string)).flatten();
    state.api_keys.insert(digest, service.clone());
    Ok(service)
}

/// Copies the client's headers minus hop-by-hop and identity headers, then sets the
/// forwarding and identity headers from what the gateway knows.
fn upstream_headers(
    req: &HttpRequest,
    identity: Option<&Identity>,
    forward_authorization: bool,
) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let connection_listed: Vec<String> = req
        .headers()
        .get_all(header::CONNECTION)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|t| t.trim().to_ascii_lowercase()))
        .collect();
    for (name, value) in req.headers() {
        let lower = name.as_str();
        let dropped = DROPPED_REQUEST_HEADERS.contains(&lower)
            || connection_listed.iter().any(|c| c == lower)
            || (name == header::AUTHORIZATION && !forward_authorization);
        if !dropped {
            headers.append(name.clone(), value.clone());
        }
    }
    let info = req.connection_info();
    let peer = req.peer_addr().map(|a| a.ip().to_string()).unwrap_or_default();
    let forwarded_for = match req.headers().get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(chain) if !chain.trim().is_empty() => format!("{chain}, {peer}"),
        _ => peer,
    };
    let mut set = |name: &str, value: &str| {
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(name), HeaderValue::from_str(value)) {
            headers.insert(name, value);
        }
    };
    set("x-forwarded-for", &forwarded_for);
    set("x-forwarded-proto", info.scheme());
    set("x-forwarded-host", info.host());
    if let Some(id) = req.extensions().get::<RequestId>() {
        set("x-request-id", &id.0);
    }
    if let Some(identity) = identity {
        set(FOUNTAIN_USER.as_str(), &identity.subject);
        set(FOUNTAIN_ROLES.as_str(), &identity.roles.join(","));
    }
    headers
}

/// Forwards `/{prefix}/{tail}` to its service.
pub async fn forward(
    state: web::Data<GatewayState>,
    client: web::Data<awc::Client>,
    req: HttpRequest,
    payload: web::Payload,
) -> ApiResult<HttpResponse> {
    let prefix = req.match_info().get("prefix").unwrap_or_default().to_string();
    let tail = req.match_info().get("tail").unwrap_or_default().to_string();
    let service = state
        .config
        .routes
        .get(&prefix)
        .cloned()
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "no service is routed under this path"))?;
    let path = req.path().to_string();
    let identity = if is_public(&state, &path, &tail) {
        None
    } else {
        match authenticate(&state, &req).await {
            Ok(identity) => Some(identity),
            Err(err) => {
                let reason = if err.code == ErrorCode::Unauthorized { "credential" } else { "verifier" };
                state.metrics.auth_failures.with_label_values(&[reason]).inc();
                return Err(err);
            }
        }
    };
    let caller = match &identity {
        Some(identity) => format!("id:{}", identity.subject),
        None => format!("addr:{}", crate::platform::net::client_addr(&req, &state.trusted_proxies)),
    };
    let allowance = state.limits.check(&prefix, &caller).inspect_err(|_| {
        state.metrics.rate_limited.with_label_values(&[prefix.as_str()]).inc();
    })?;
    if let Some(identity) = &identity {
        check_rules(&state, &req, identity).inspect_err(|_| {
            state.metrics.auth_failures.with_label_values(&["rule"]).inc();
        })?;
    }

    let limit = state.config.max_body_bytes;
    let declared: Option<u64> =
        req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(too_large(limit));
    }
    let base = state
        .resolve(&service)
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::BadGateway, "no instance of this service is available"))?;
    // Keep the client's path encoding: everything after `/{prefix}`.
    let rest = &req.uri().path()[1 + prefix.len()..];
    let rest = if rest.is_empty() { "/" } else { rest };
    let query = req.uri().query().map(|q| format!("?{q}")).unwrap_or_default();
    let forward_authorization = state.config.forward_authorization_to.contains(&service);
    let headers = upstream_headers(&req, identity.as_ref(), forward_authorization);
    let timeout = Duration::from_secs(state.config.upstream_timeout_seconds.max(1));
    let build = |base: &str| {
        let mut upstream = client
            .request(req.method().clone(), format!("{base}{rest}{query}"))
            .timeout(timeout)
            .no_decompress();
        // The cleaned map replaces awc's defaults wholesale (no per-header re-parsing).
        *upstream.headers_mut() = headers.clone();
        upstream
    };
    let started = Instant::now();
    let has_body =
        declared.is_some_and(|len| len > 0) || req.headers().contains_key(header::TRANSFER_ENCODING);
    let sent = Arc::new(AtomicU64::new(0));
    let mut base = base;
    let result = if has_body {
        let counter = sent.clone();
        let limited = payload.map(move |chunk| {
            let chunk = chunk.map_err(|e| actix_web::error::ErrorBadRequest(e.to_string()))?;
            if counter.fetch_add(chunk.len() as u64, Ordering::Relaxed) + chunk.len() as u64 > limit {
                return Err(actix_web::error::ErrorPayloadTooLarge("request body too large"));
            }
            Ok(chunk)
        });
        build(&base).send_stream(limited).await
    } else {
        // Without a body nothing is lost by trying once more: an idempotent request whose
        // connection could not even be opened goes to another instance, if there is one.
        let idempotent = matches!(req.method().as_str(), "GET" | "HEAD" | "OPTIONS" | "PUT" | "DELETE");
        let first = build(&base).send().await;
        match first {
            Err(awc::error::SendRequestError::Connect(err)) if idempotent => {
                state.metrics.upstream_failures.with_label_values(&[service.as_str(), "unreachable"]).inc();
                state.forget(&service, &base);
                match state.resolve(&service).await? {
                    Some(next) if next != base => {
                        base = next;
                        build(&base).send().await
                    }
                    _ => Err(awc::error::SendRequestError::Connect(err)),
                }
            }
            other => other,
        }
    };
    let response = result.map_err(|err| {
        if sent.load(Ordering::Relaxed) > limit {
            return too_large(limit);
        }
        match err {
            awc::error::SendRequestError::Timeout => {
                state.metrics.upstream_failures.with_label_values(&[service.as_str(), "timeout"]).inc();
                ApiError::new(ErrorCode::GatewayTimeout, "the service did not answer in time")
            }
            other => {
                state.metrics.upstream_failures.with_label_values(&[service.as_str(), "unreachable"]).inc();
                state.forget(&service, &base);
                log::warn!(target: "fountain::gateway", service = service.as_str(); "upstream request failed: {other}");
                ApiError::new(ErrorCode::BadGateway, "the service is unavailable")
            }
        }
    })?;
    state
        .metrics
        .upstream_latency
        .with_label_values(&[service.as_str()])
        .observe(started.elapsed().as_secs_f64());
    state.metrics.upstream.with_label_values(&[service.as_str(), response.status().as_str()]).inc();
    let mut reply = HttpResponse::build(response.status());
    for (name, value) in response.headers() {
        if !DROPPED_RESPONSE_HEADERS.contains(&name.as_str()) {
            reply.append_header((name.clone(), value.clone()));
        }
    }
    if let Some(allowance) = allowance {
        reply.insert_header(("ratelimit-limit", allowance.limit.to_string()));
        reply.insert_header(("ratelimit-remaining", allowance.remaining.to_string()));
    }
    Ok(reply.streaming(response))
}

fn too_large(limit: u64) -> ApiError {
    ApiError::from_code(ErrorCode::PayloadTooLarge).with_details(serde_json::json!({ "limitBytes": limit }))
}
