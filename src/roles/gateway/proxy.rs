//! The proxy: `/{prefix}/{rest}` goes to the service the route table names, with the caller
//! authenticated at the edge (JWT from kms's JWKS, or X-API-KEY verified by kms), headers
//! cleaned, identity set from the verified credential, and bodies streamed both ways. Public
//! routes, access rules and the forwarded path all use the request's canonical path
//! (`path.rs`): the path as the service will route it.

use std::net::IpAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};
use hyper::header::{HeaderName as UpstreamHeaderName, HeaderValue as UpstreamHeaderValue};
use hyper::HeaderMap as UpstreamHeaders;

use super::admitted::{self, AdmittedToken};
use super::api_keys::{Exchange, ExchangeFailure, KeyDigest};
use super::limits::Caller;
use super::path::canonical;
use super::pool::{Connection, SendFailure, UpstreamClient};
use super::registry::{GatewayState, Route};
use super::upstream::{self, UploadError, UploadOutcome, UpstreamBody};
use crate::platform::auth::{self, SERVICE_ROLE};
use crate::platform::error::{ApiError, ApiResult, ErrorCode};
use crate::platform::middleware::RequestId;
use crate::platform::net::{client_ip, push_ip};
use crate::platform::trust::CheckFailure;

const API_KEY: HeaderName = HeaderName::from_static("x-api-key");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const UPSTREAM_FOUNTAIN_USER: UpstreamHeaderName = UpstreamHeaderName::from_static("x-fountain-user");
const UPSTREAM_FOUNTAIN_ROLES: UpstreamHeaderName = UpstreamHeaderName::from_static("x-fountain-roles");
const UPSTREAM_X_FORWARDED_FOR: UpstreamHeaderName = UpstreamHeaderName::from_static("x-forwarded-for");
const UPSTREAM_X_FORWARDED_PROTO: UpstreamHeaderName = UpstreamHeaderName::from_static("x-forwarded-proto");
const UPSTREAM_X_FORWARDED_HOST: UpstreamHeaderName = UpstreamHeaderName::from_static("x-forwarded-host");
const UPSTREAM_REQUEST_ID: UpstreamHeaderName = UpstreamHeaderName::from_static("x-request-id");
const UPSTREAM_X_FORWARDED_PREFIX: UpstreamHeaderName = UpstreamHeaderName::from_static("x-forwarded-prefix");
const UPSTREAM_API_KEY: UpstreamHeaderName = UpstreamHeaderName::from_static("x-api-key");

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
    "forwarded",
    "x-forwarded-prefix",
    "x-request-id",
];

/// Who the request is from, once the edge has checked it.
enum Identity {
    /// A verified JWT, as this worker admitted it.
    Token(Rc<AdmittedToken>),
    /// A valid X-API-KEY: the service it belongs to, and the key's digest.
    ApiKey { service: String, digest: KeyDigest },
}

/// What the service receives as the caller's credential, besides what the client sent.
enum Credential<'a> {
    /// The client's own headers (`Authorization` where the route takes tokens).
    AsSent,
    /// The service token an X-API-KEY was exchanged for, as `Authorization`.
    ServiceToken(UpstreamHeaderValue),
    /// The verified X-API-KEY itself (`forward_api_key_to`), and no `Authorization`.
    ApiKey(&'a str),
}

impl Identity {
    /// The rate bucket: by kind and name, so that a user who took a service's name is not that
    /// service.
    fn caller(&self) -> Caller<'_> {
        match self {
            Identity::Token(token) if token.service => Caller::Service(&token.claims.sub),
            Identity::Token(token) => Caller::User(&token.claims.sub),
            Identity::ApiKey { service, .. } => Caller::Service(service),
        }
    }

    /// Exact role membership.
    fn has_role(&self, role: &str) -> bool {
        match self {
            Identity::Token(token) => token.claims.has_role(role),
            Identity::ApiKey { .. } => role == SERVICE_ROLE,
        }
    }

    /// `X-Fountain-User` and `X-Fountain-Roles` as the upstream sees them.
    fn headers(&self) -> [Option<UpstreamHeaderValue>; 2] {
        match self {
            Identity::Token(token) => [token.user_header.clone(), token.roles_header.clone()],
            Identity::ApiKey { service, .. } => [
                UpstreamHeaderValue::from_str(service).ok(),
                Some(UpstreamHeaderValue::from_static(SERVICE_ROLE)),
            ],
        }
    }

    /// The token carries the twofa step-up claim.
    fn mfa(&self) -> bool {
        matches!(self, Identity::Token(token) if token.claims.mfa == Some(true))
    }

    /// The account's policy requires a second factor this token has not proven yet.
    fn step_up_pending(&self) -> bool {
        matches!(self, Identity::Token(token) if token.claims.step_up_pending())
    }
}

/// Why the edge refused a request, as counted in `gateway_auth_failures_total{reason}`.
fn count_refusal(state: &GatewayState, reason: &str) {
    state.metrics.auth_failures.with_label_values(&[reason]).inc();
}

/// Applies the first `gateway.rules` entry that matches the request's canonical `path`, if any.
fn check_rules(state: &GatewayState, path: &str, method: &str, identity: &Identity) -> ApiResult<()> {
    let rule = state.config.rules.iter().find(|rule| {
        let path_matches = match rule.path.strip_suffix('*') {
            Some(prefix) => path.starts_with(prefix),
            None => path == rule.path,
        };
        path_matches
            && (rule.methods.is_empty() || rule.methods.iter().any(|m| m.eq_ignore_ascii_case(method)))
    });
    let Some(rule) = rule else { return Ok(()) };
    if !rule.roles.is_empty() && !rule.roles.iter().any(|r| identity.has_role(r)) {
        count_refusal(state, "role");
        return Err(ApiError::new(ErrorCode::Forbidden, "this route requires another role"));
    }
    // Without a step-up issuer (`enforce_mfa` off) nobody could pass an mfa rule at all.
    if rule.mfa && state.config.enforce_mfa && !identity.mfa() {
        count_refusal(state, "mfa_required");
        return Err(auth::mfa_required("this route requires a second factor: step up with twofa"));
    }
    Ok(())
}

/// A token that still owes its account's second factor reaches only the step-up service and
/// kms's logout, whatever the route's rules (services behind the gateway that do not check
/// tokens themselves rely on this).
fn check_step_up_pending(
    state: &GatewayState,
    identity: &Identity,
    route: &Route,
    rest: &str,
) -> ApiResult<()> {
    let allowed = &*route.service == auth::STEP_UP_SERVICE || (route.issuer && rest == "/logout");
    if identity.step_up_pending() && !allowed {
        count_refusal(state, "mfa_required");
        return Err(auth::mfa_required(
            "this account needs a second factor first: enrol and step up with twofa",
        ));
    }
    Ok(())
}

/// Whether a request passes without credentials: a configured public route, every
/// `/{prefix}/health`, and a stripped route's pages for people (landing page, Swagger UI and
/// its assets, the OpenAPI document), read-only.
fn is_public(
    state: &GatewayState,
    path: &str,
    rest: &str,
    route: &Route,
    method: &actix_web::http::Method,
) -> bool {
    rest == "/health"
        || (route.strip_prefix
            && is_page(rest)
            && matches!(*method, actix_web::http::Method::GET | actix_web::http::Method::HEAD))
        || state.config.public_routes.iter().any(|rule| match rule.strip_suffix('*') {
            Some(prefix) => path.starts_with(prefix),
            None => path == rule,
        })
}

/// A role's pages for people, as every role serves them (`platform::standard`).
fn is_page(rest: &str) -> bool {
    matches!(rest, "" | "/" | "/docs" | "/openapi.json") || rest.starts_with("/docs/")
}

/// `authenticate`, unless the address has failed too often: then 429 before any check, so a
/// client guessing keys cannot make the gateway ask kms at its own pace.
async fn authenticate_within_budget(
    state: &GatewayState,
    client: &awc::Client,
    req: &HttpRequest,
    addr: Option<IpAddr>,
) -> ApiResult<Identity> {
    if let Some(addr) = addr {
        state.limits.check_throttled(addr).inspect_err(|_| count_refusal(state, "throttled"))?;
    }
    let refusal = match authenticate(state, client, req).await {
        Ok(identity) => return Ok(identity),
        Err(refusal) => refusal,
    };
    // A verifier outage is not the client's failure.
    if let (Some(addr), true) = (addr, refusal.code == ErrorCode::Unauthorized) {
        state.limits.record_failure(addr)?;
    }
    Err(refusal)
}

/// Checks the caller's credential; every refusal is counted by its reason.
async fn authenticate(state: &GatewayState, client: &awc::Client, req: &HttpRequest) -> ApiResult<Identity> {
    if let Some(token) = auth::bearer_token(req) {
        // Read before the revocation check below: a memo entry never claims a newer generation
        // than the lists it was checked against.
        let generation = state.verifier.revocations().generation();
        let digest = admitted::digest(token);
        if let Some(token) = admitted::recall(state.instance, digest, token, generation) {
            return Ok(Identity::Token(token));
        }
        let claims = match state.verifier.check(token).await {
            Ok(claims) => claims,
            Err(CheckFailure::Rejected(rejection)) => {
                count_refusal(state, rejection.reason());
                return Err(rejection.into());
            }
            Err(CheckFailure::Unavailable(err)) => {
                count_refusal(state, "verifier_unavailable");
                return Err(err);
            }
        };
        return Ok(Identity::Token(admitted::remember(state.instance, digest, token, generation, &claims)));
    }
    if let Some(key) = api_key(req) {
        let digest = state.api_keys.digest(key);
        return match verify_api_key(state, client, &digest, key).await {
            Ok(Some(service)) => Ok(Identity::ApiKey { service, digest }),
            Ok(None) => {
                count_refusal(state, "api_key");
                Err(auth::invalid_token())
            }
            Err(err) => {
                count_refusal(state, "verifier_unavailable");
                Err(err)
            }
        };
    }
    count_refusal(state, "missing");
    Err(ApiError::new(ErrorCode::Unauthorized, "a bearer token or an X-API-KEY is required"))
}

/// The X-API-KEY a caller sent, if it is visible ASCII (anything else is no key).
pub fn api_key(req: &HttpRequest) -> Option<&str> {
    req.headers().get(API_KEY).and_then(|v| v.to_str().ok())
}

/// kms's address: always its `[peers]` entry (`GatewayState::resolve`).
async fn kms_url(state: &GatewayState) -> ApiResult<std::sync::Arc<str>> {
    let kms = state.resolve("kms").await?;
    Ok(kms.ok_or_else(|| ApiError::unavailable("kms", "no kms instance is known"))?.url)
}

/// kms's verdict on an X-API-KEY, over the worker's pooled client (kept-alive connections).
async fn verify_api_key(
    state: &GatewayState,
    client: &awc::Client,
    digest: &KeyDigest,
    key: &str,
) -> ApiResult<Option<String>> {
    state.api_keys.verify(client, &kms_url(state).await?, digest, key).await
}

/// What the service receives for the caller's credential. Only an X-API-KEY caller needs
/// anything: the service token its key is exchanged for where the route takes tokens, or the
/// key itself where the route asks for it. A key kms will not exchange gets the same 401 as
/// any bad key, and spends the address's failure budget.
async fn upstream_credential<'r>(
    state: &GatewayState,
    client: &awc::Client,
    req: &'r HttpRequest,
    identity: Option<&Identity>,
    route: &Route,
    addr: Option<IpAddr>,
) -> ApiResult<Credential<'r>> {
    let (Some(Identity::ApiKey { digest, .. }), Some(key)) = (identity, api_key(req)) else {
        return Ok(Credential::AsSent);
    };
    if route.forward_api_key {
        return Ok(Credential::ApiKey(key));
    }
    if !route.forward_authorization {
        return Ok(Credential::AsSent);
    }
    let kms = kms_url(state).await?;
    let count = |outcome: &str| state.metrics.api_key_exchanges.with_label_values(&[outcome]).inc();
    match state.api_keys.service_token(client, &kms, digest, key, addr).await {
        Ok((token, exchange)) => {
            if exchange == Exchange::Issued {
                count("issued");
            }
            Ok(Credential::ServiceToken(token))
        }
        Err(ExchangeFailure::Refused) => {
            count("refused");
            count_refusal(state, "api_key");
            if let Some(addr) = addr {
                state.limits.record_failure(addr)?;
            }
            Err(auth::invalid_token())
        }
        Err(ExchangeFailure::Unavailable(err)) => {
            count("unavailable");
            Err(err)
        }
    }
}

/// Copies the client's headers minus hop-by-hop and identity headers, then sets the
/// forwarding and identity headers from what the gateway knows. `X-Forwarded-Proto` and
/// `X-Forwarded-Host` are kept only from a trusted proxy (Caddy); anyone else gets them set from
/// the connection, so a client cannot claim it came over TLS or through another host name.
/// (actix and hyper use different releases of the `http` types, hence the conversions.)
fn upstream_headers(
    state: &GatewayState,
    req: &HttpRequest,
    identity: Option<&Identity>,
    credential: &Credential<'_>,
    route: &Route,
    declared_length: Option<u64>,
) -> UpstreamHeaders {
    let mut headers = UpstreamHeaders::with_capacity(req.headers().len() + 7);
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
            || (name == header::AUTHORIZATION
                && (!route.forward_authorization || !matches!(credential, Credential::AsSent)));
        if !dropped {
            append_converted(&mut headers, name, value);
        }
    }
    let peer = req.peer_addr().map(|a| a.ip());
    let from_proxy = peer.is_some_and(|ip| state.trusted_proxies.contains(&ip));
    let relayed = |name: &HeaderName| from_proxy.then(|| req.headers().get(name)).flatten();
    let scheme = if req.app_config().secure() { "https" } else { "http" };
    let proto = relayed(&X_FORWARDED_PROTO).and_then(|v| UpstreamHeaderValue::from_bytes(v.as_bytes()).ok());
    headers.insert(UPSTREAM_X_FORWARDED_PROTO, proto.unwrap_or(UpstreamHeaderValue::from_static(scheme)));
    let host = relayed(&X_FORWARDED_HOST).or_else(|| req.headers().get(header::HOST));
    if let Some(host) = host.and_then(|v| UpstreamHeaderValue::from_bytes(v.as_bytes()).ok()) {
        headers.insert(UPSTREAM_X_FORWARDED_HOST, host);
    }
    if let Some(value) = forwarded_for(req, peer) {
        headers.insert(UPSTREAM_X_FORWARDED_FOR, value);
    }
    let mut set = |name: UpstreamHeaderName, value: &str| {
        if let Ok(value) = UpstreamHeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    };
    if let Some(id) = req.extensions().get::<RequestId>() {
        set(UPSTREAM_REQUEST_ID, &id.0);
    }
    if let Some(prefix) = &route.forwarded_prefix {
        headers.insert(UPSTREAM_X_FORWARDED_PREFIX, prefix.clone());
    }
    match credential {
        Credential::AsSent => {}
        Credential::ServiceToken(token) => {
            headers.insert(hyper::header::AUTHORIZATION, token.clone());
        }
        Credential::ApiKey(key) => {
            if let Ok(key) = UpstreamHeaderValue::from_str(key) {
                headers.insert(UPSTREAM_API_KEY, key);
            }
        }
    }
    if let Some(identity) = identity {
        let [user, roles] = identity.headers();
        for (name, value) in [(UPSTREAM_FOUNTAIN_USER, user), (UPSTREAM_FOUNTAIN_ROLES, roles)] {
            if let Some(value) = value {
                headers.insert(name, value);
            }
        }
    }
    // A declared length is kept (some services refuse chunked uploads); otherwise hyper sends
    // the body chunked.
    if let Some(length) = declared_length {
        headers.insert(hyper::header::CONTENT_LENGTH, UpstreamHeaderValue::from(length));
    }
    headers
}

/// The client's `X-Forwarded-For` chain with the peer appended.
fn forwarded_for(req: &HttpRequest, peer: Option<IpAddr>) -> Option<UpstreamHeaderValue> {
    let mut chain = String::with_capacity(48);
    match req.headers().get(X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(earlier) if !earlier.trim().is_empty() => {
            chain.push_str(earlier);
            chain.push_str(", ");
        }
        _ => {}
    }
    if let Some(ip) = peer {
        push_ip(&mut chain, ip);
    }
    // Bytes::from takes the string's buffer: validated, not copied.
    UpstreamHeaderValue::from_maybe_shared(web::Bytes::from(chain)).ok()
}

/// One of the client's headers, in hyper's types.
fn append_converted(headers: &mut UpstreamHeaders, name: &HeaderName, value: &HeaderValue) {
    let converted = (
        UpstreamHeaderName::from_bytes(name.as_str().as_bytes()),
        UpstreamHeaderValue::from_bytes(value.as_bytes()),
    );
    if let (Ok(name), Ok(value)) = converted {
        headers.append(name, value);
    }
}

/// `/{prefix}/{rest}` split at the first segment: `("kms", "/keys/x")`; `rest` is empty for
/// `/{prefix}` alone.
fn split_prefix(path: &str) -> (&str, &str) {
    let path = path.strip_prefix('/').unwrap_or(path);
    match path.find('/') {
        Some(at) => (&path[..at], &path[at..]),
        None => (path, ""),
    }
}

/// Forwards `/{prefix}/{rest}` to the service the route table names. This is the gateway's
/// default service: every path no other gateway endpoint matches comes here.
pub async fn forward(req: HttpRequest, payload: web::Payload) -> ApiResult<HttpResponse> {
    // Borrowed rather than extracted: an extractor clones each `Data`'s reference count, an
    // atomic write to a line every worker writes, on every request.
    let (Some(state), Some(client), Some(upstream)) = (
        req.app_data::<web::Data<GatewayState>>(),
        req.app_data::<web::Data<awc::Client>>(),
        req.app_data::<web::Data<UpstreamClient>>(),
    ) else {
        return Err(ApiError::from_code(ErrorCode::Internal));
    };
    // Checked and forwarded as the service will route it (`path.rs`).
    let path = canonical(req.path())?;
    let (prefix, rest) = split_prefix(&path);
    // Configured prefixes first (no lock, no allocation); then services registered under
    // their own name.
    let registered;
    let route = match state.routes.get(prefix) {
        Some(route) => route,
        None => {
            registered = state
                .registered_route(prefix)
                .await?
                .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "no service is routed under this path"))?;
            &*registered
        }
    };
    req.extensions_mut().insert(route.label);
    let service = &*route.service;
    let addr = client_ip(&req, &state.trusted_proxies);
    // kms's token endpoint checks credentials (API keys, refresh tokens) itself: its refusals
    // spend the address's failure budget like refusals at the edge do.
    let credential_grant = route.issuer && rest == "/token" && req.method() == actix_web::http::Method::POST;
    let identity = if is_public(state, &path, rest, route, req.method()) {
        if let (true, Some(addr)) = (credential_grant, addr) {
            state.limits.check_throttled(addr).inspect_err(|_| count_refusal(state, "throttled"))?;
        }
        None
    } else {
        Some(authenticate_within_budget(state, client, &req, addr).await?)
    };
    let caller = match &identity {
        Some(identity) => identity.caller(),
        None => Caller::Address(addr),
    };
    let allowance = state.limits.check(prefix, caller).inspect_err(|_| {
        state.metrics.rate_limited.with_label_values(&[prefix]).inc();
    })?;
    if let Some(identity) = &identity {
        check_step_up_pending(state, identity, route, rest)?;
        check_rules(state, &path, req.method().as_str(), identity)?;
    }
    let credential = upstream_credential(state, client, &req, identity.as_ref(), route, addr).await?;

    let limit = state.config.max_body_bytes;
    let chunked = req.headers().contains_key(header::TRANSFER_ENCODING);
    let declared: Option<u64> =
        req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(too_large(limit));
    }
    let choice = state
        .resolve(service)
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::BadGateway, "no instance of this service is available"))?;
    let method = hyper::Method::from_bytes(req.method().as_str().as_bytes())
        .map_err(|_| ApiError::new(ErrorCode::BadRequest, "this method cannot be forwarded"))?;
    let declared = declared.filter(|_| !chunked);
    let has_body = chunked || declared.is_some_and(|len| len > 0);
    // What the service routes: the rest after the prefix, or the whole path.
    let forwarded = match (route.strip_prefix, rest.is_empty()) {
        (false, _) => &*path,
        (true, true) => "/",
        (true, false) => rest,
    };
    // The target in origin form (`/rest?query`); the instance's address is the pool's part.
    let request = |body: UpstreamBody| {
        let target = match req.uri().query() {
            Some(query) => format!("{forwarded}?{query}"),
            None => forwarded.to_string(),
        };
        let mut request = hyper::Request::new(body);
        *request.method_mut() = method.clone();
        *request.uri_mut() = hyper::Uri::try_from(target).map_err(|_| {
            ApiError::new(ErrorCode::BadRequest, "this path cannot be forwarded to the service")
        })?;
        *request.headers_mut() =
            upstream_headers(state, &req, identity.as_ref(), &credential, route, declared);
        Ok::<_, ApiError>(request)
    };
    let timeout = Duration::from_secs(state.config.upstream_timeout_seconds.max(1));
    let started = Instant::now();
    let mut url = choice.url;
    let (result, upload) = if has_body {
        let (body, upload) = upstream::stream_upload(payload, limit);
        (upstream.send(&url, request(body)?, Connection::Reuse, timeout).await, Some(upload))
    } else {
        // Without a body nothing is lost by trying once more: an idempotent request whose
        // connection could not even be opened goes to another instance, if there is one.
        let idempotent = matches!(req.method().as_str(), "GET" | "HEAD" | "OPTIONS" | "PUT" | "DELETE");
        let mut result = upstream.send(&url, request(upstream::no_body())?, Connection::Reuse, timeout).await;
        if idempotent && matches!(result, Err(SendFailure::Dropped(_))) {
            // The service closed a kept-alive connection as the request went out: once more,
            // on a new connection.
            result = upstream.send(&url, request(upstream::no_body())?, Connection::New, timeout).await;
        }
        if let (Err(SendFailure::Connect(_)), true) = (&result, idempotent) {
            state.metrics.upstream_failures.with_label_values(&[service, "unreachable"]).inc();
            state.health.request_failed(&url);
            if let Some(next) = state.resolve(service).await?.filter(|next| next.url != url) {
                url = next.url;
                result = upstream.send(&url, request(upstream::no_body())?, Connection::Reuse, timeout).await;
            }
        }
        (result, None)
    };
    let response = result.map_err(|failure| {
        match upload.as_ref().and_then(UploadOutcome::failure) {
            Some(UploadError::TooLarge) => return too_large(limit),
            Some(UploadError::ClientFailed) => {
                return ApiError::new(ErrorCode::BadRequest, "the request body broke off before its end")
            }
            None => {}
        }
        let (kind, detail) = match failure {
            SendFailure::Timeout => {
                state.metrics.upstream_failures.with_label_values(&[service, "timeout"]).inc();
                return ApiError::new(ErrorCode::GatewayTimeout, "the service did not answer in time");
            }
            // A kept-alive connection the service closed says nothing about its health.
            SendFailure::Dropped(detail) => ("dropped", detail),
            SendFailure::Connect(detail) | SendFailure::Broken(detail) => {
                state.health.request_failed(&url);
                ("unreachable", detail)
            }
        };
        state.metrics.upstream_failures.with_label_values(&[service, kind]).inc();
        log::warn!(target: "fountain::gateway", service = service; "upstream request failed: {detail}");
        ApiError::new(ErrorCode::BadGateway, "the service is unavailable")
    })?;
    let seconds = started.elapsed().as_secs_f64();
    state.metrics.upstream_latency.with(&[service], |histogram| histogram.observe(seconds));
    state.metrics.upstream.with(&[service, response.status().as_str()], |counter| counter.inc());
    // A refused grant (401), or one kms refused because this address failed there too often
    // (429), spends the address's failure budget here.
    if credential_grant && matches!(response.status().as_u16(), 401 | 429) {
        count_refusal(state, "token_grant");
        if let Some(addr) = addr {
            // The refusal that exhausts the budget is answered 429 itself.
            state.limits.record_failure(addr)?;
        }
    }
    Ok(upstream::relay(response, allowance))
}

fn too_large(limit: u64) -> ApiError {
    ApiError::from_code(ErrorCode::PayloadTooLarge).with_details(serde_json::json!({ "limitBytes": limit }))
}
