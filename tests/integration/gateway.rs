//! The gateway over real HTTP: routing to fountain roles and to a registered upstream, edge
//! authentication, header hygiene, streaming in both directions, limits and failure answers.

use std::collections::BTreeSet;
use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use fountain::platform::contracts::VerifyCode;
use futures_util::StreamExt;
use serde_json::{json, Value};

use crate::support::{assert_error_shape, eventually, Backend, TestApp, ANONYMOUS};

const TEN_MB: usize = 10 * 1024 * 1024;

/// An upstream that shows what reached it: headers, body size, and a large download.
fn start_echo() -> (String, actix_web::dev::ServerHandle) {
    start_echo_at("127.0.0.1:0")
}

fn start_echo_at(addr: &str) -> (String, actix_web::dev::ServerHandle) {
    crate::support::upstream::serve(addr, echo_routes)
}

/// The echo upstream closing each connection after one answer: once stopped, it answers nothing.
fn start_echo_closing_connections() -> (String, actix_web::dev::ServerHandle) {
    crate::support::upstream::serve_one_request_per_connection("127.0.0.1:0", echo_routes)
}

fn echo_routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/health", web::get().to(|| async { HttpResponse::Ok().json(json!({"status": "healthy"})) }))
        .route(
            "/headers",
            web::route()
                .guard(actix_web::guard::Any(actix_web::guard::Get()).or(actix_web::guard::Head()))
                .to(|req: HttpRequest| async move {
                    let headers: serde_json::Map<String, Value> = req
                        .headers()
                        .iter()
                        .map(|(k, v)| (k.as_str().to_string(), Value::from(v.to_str().unwrap_or_default())))
                        .collect();
                    HttpResponse::Ok().json(json!({ "headers": headers, "query": req.query_string() }))
                }),
        )
        .route(
            "/upload",
            web::post().to(|req: HttpRequest, mut body: web::Payload| async move {
                let mut total = 0usize;
                while let Some(chunk) = body.next().await {
                    total += chunk.map(|c| c.len()).unwrap_or(0);
                }
                let declared = req.headers().get("content-length").and_then(|v| v.to_str().ok());
                HttpResponse::Ok().json(json!({ "received": total, "contentLength": declared }))
            }),
        )
        .route(
            "/slow",
            web::get().to(|| async {
                actix_web::rt::time::sleep(Duration::from_secs(3)).await;
                HttpResponse::Ok().finish()
            }),
        )
        .route(
            "/download",
            web::get().to(|| async {
                let chunks = futures_util::stream::iter(
                    (0..160).map(|_| Ok::<_, actix_web::Error>(web::Bytes::from(vec![7u8; 64 * 1024]))),
                );
                HttpResponse::Ok().content_type("application/octet-stream").streaming(chunks)
            }),
        );
}

/// Every role, with `/echo/...` routed to the `echo` service (registered by each test).
async fn spawn_with_echo_route(adjust: impl FnOnce(&mut fountain::config::Config)) -> TestApp {
    TestApp::spawn_with(
        Backend::Sqlite,
        |c| {
            c.set_role_setting(
                "gateway",
                "routes.echo",
                serde_json::json!({"service": "echo", "registered": true}),
            );
            adjust(c);
        },
        None,
    )
    .await
}

async fn admin_token(app: &TestApp) -> String {
    app.create_admin();
    // Login is a public route: it passes the gateway without credentials.
    app.gateway().kms().login("root").await.access_token
}

/// The port of an upstream that died, held by the test so that no other test's server can take
/// it meanwhile: every connection is closed unanswered, as a crashed process's port would be.
struct DeadPort {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl DeadPort {
    fn hold(url: &str) -> DeadPort {
        let addr = url.trim_start_matches("http://");
        let listener = std::net::TcpListener::bind(addr).expect("the dead upstream's port is free");
        listener.set_nonblocking(true).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        std::thread::spawn(move || {
            while !stopped.load(std::sync::atomic::Ordering::SeqCst) {
                match listener.accept() {
                    Ok((connection, _)) => drop(connection),
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        DeadPort { stop }
    }
}

impl Drop for DeadPort {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

async fn register_echo(app: &TestApp, admin: &str, url: &str) {
    app.gateway().register_instance(admin, "echo", url, 300).await.ok();
}

#[actix_web::test]
async fn registered_instances_expire_at_an_rfc3339_utc_time_as_the_spec_says() {
    // Found by schemathesis: `expiresAt` came without a zone ("2026-11-30T14:58:36.547641724"),
    // which is not the `date-time` the OpenAPI document promises.
    let app = TestApp::spawn(Backend::Sqlite).await;
    let admin = admin_token(&app).await;
    register_echo(&app, &admin, "http://127.0.0.1:9").await;
    let registry = app.gateway().registry(&admin).await.ok();
    let echo = registry.entries.iter().find(|e| e.service == "echo").expect("the registered instance");
    let expires = echo.expires_at.as_deref().expect("a registered instance expires");
    assert!(expires.ends_with('Z'), "{expires}");
    chrono::DateTime::parse_from_rfc3339(expires).expect("RFC 3339");
    assert!(registry.entries.iter().filter(|e| e.is_static).all(|e| e.expires_at.is_none()));
    app.stop().await;
}

#[actix_web::test]
async fn the_gateway_routes_authenticates_and_cleans_headers() {
    let app = spawn_with_echo_route(|c| {
        c.set_role_setting("gateway", "max_body_bytes", 16 * 1024 * 1024);
        // The step-up rules as they apply once twofa issues step-up tokens.
        c.set_role_setting("gateway", "enforce_mfa", true);
    })
    .await;
    let gateway = app.gateway();
    let admin = admin_token(&app).await;
    let (echo, echo_handle) = start_echo_closing_connections();
    register_echo(&app, &admin, &echo).await;

    assert_eq!(gateway.get(ANONYMOUS, "/kms/health").await.ok()["status"], "healthy");
    assert_eq!(gateway.kms().users(ANONYMOUS).await.refusal(), (401, "unauthorized"));
    let users = gateway.kms().users(&admin).await;
    assert_eq!(users.status, 200, "kms receives the caller's token: {}", users.body);
    assert_eq!(gateway.get(&admin, "/nowhere/at/all").await.refusal(), (404, "not_found"));

    // Spoofed identity and hop-by-hop headers never reach the upstream.
    let mut response = app
        .client
        .get(app.url("gateway", "/echo/headers?a=1&b=%2F"))
        .insert_header(("authorization", format!("Bearer {admin}")))
        .insert_header(("x-fountain-user", "mallory"))
        .insert_header(("x-fountain-roles", "admin,superuser"))
        .insert_header(("x-request-id", "trace-gw-1"))
        .insert_header(("x-forwarded-for", "203.0.113.9"))
        .insert_header(("proxy-authorization", "Basic c2VjcmV0"))
        .insert_header(("x-forwarded-proto", "https"))
        .insert_header(("x-forwarded-host", "evil.example"))
        .insert_header(("forwarded", "for=198.51.100.1;proto=https"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let seen: Value = response.json().await.unwrap();
    let headers = &seen["headers"];
    assert_eq!(headers["x-fountain-user"], "root");
    assert_eq!(headers["x-fountain-roles"], "admin");
    assert_eq!(headers["x-request-id"], "trace-gw-1");
    assert_eq!(headers["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    // Loopback is a trusted proxy by default (Caddy on the same host): its view is relayed.
    assert_eq!(headers["x-forwarded-proto"], "https");
    assert_eq!(headers["x-forwarded-host"], "evil.example");
    assert!(headers.get("forwarded").is_none());
    assert!(headers.get("authorization").is_none(), "echo is not in forward_authorization_to");
    assert!(headers.get("proxy-authorization").is_none());
    assert_eq!(seen["query"], "a=1&b=%2F");

    // Key and secret mutations need a second factor at the edge; reads and verify do not.
    let refused = gateway.kms().create_key(&admin, "svc").await;
    assert_eq!(
        (refused.status, refused.body["details"]["mfaRequired"].as_bool()),
        (403, Some(true)),
        "{}",
        refused.body
    );
    assert_eq!(gateway.secrets().create(&admin, "svc", None).await.status, 403);
    assert_eq!(gateway.kms().keys(&admin).await.status, 200);
    assert_eq!(gateway.kms().verify_key_as(&admin, "fk_x").await.ok().code, VerifyCode::NotFound);

    // API keys work at the edge too; a bad one gets the same 401 as a forged token.
    let api_key = app.kms().create_key(&app.admin_token().await, "svc").await.ok().api_key;
    let api_key = api_key.as_str();
    let mut response = app
        .client
        .get(app.url("gateway", "/echo/headers"))
        .insert_header(("x-api-key", api_key))
        .send()
        .await
        .unwrap();
    let seen: Value = response.json().await.unwrap();
    assert_eq!(
        (seen["headers"]["x-fountain-user"].as_str(), seen["headers"]["x-fountain-roles"].as_str()),
        (Some("svc"), Some("service"))
    );
    let mut bad_key = app
        .client
        .get(app.url("gateway", "/echo/headers"))
        .insert_header(("x-api-key", "fk_forged"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad_key.status().as_u16(), 401);
    let bad_key: Value = bad_key.json().await.unwrap();
    let mut forged = app
        .client
        .get(app.url("gateway", "/echo/headers"))
        .insert_header(("authorization", "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJyb290In0."))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status().as_u16(), 401);
    assert_eq!(forged.json::<Value>().await.unwrap(), bad_key, "one answer for every bad credential");

    // 10 MB up and down, streamed; over the limit is 413.
    let (status, length, seen) =
        upload_via_gateway(&app, &admin, vec![web::Bytes::from(vec![1u8; TEN_MB])], true).await;
    assert_eq!((status, length.as_deref()), (200, Some("48")), "the upstream's length is kept");
    assert_eq!(
        (seen["received"].as_u64(), seen["contentLength"].as_str()),
        (Some(TEN_MB as u64), Some("10485760"))
    );
    let chunks = (0..10).map(|_| web::Bytes::from(vec![3u8; TEN_MB / 10])).collect();
    let (status, _, seen) = upload_via_gateway(&app, &admin, chunks, false).await;
    assert_eq!(status, 200);
    assert_eq!((seen["received"].as_u64(), seen["contentLength"].as_str()), (Some(TEN_MB as u64), None));
    let mut response = app
        .client
        .get(app.url("gateway", "/echo/download"))
        .insert_header(("authorization", format!("Bearer {admin}")))
        .send()
        .await
        .unwrap();
    let body = response.body().limit(2 * TEN_MB).await.unwrap();
    assert_eq!(body.len(), TEN_MB);
    let (status, body) = app
        .call(
            "POST",
            "gateway",
            "/echo/upload",
            Some(&admin),
            Some(Value::String("x".repeat(17 * 1024 * 1024))),
        )
        .await;
    assert_eq!((status, assert_error_shape(&body).as_str()), (413, "payload_too_large"));
    // Over the limit without a declared length: counted while streaming, still 413.
    let chunks = (0..17).map(|_| web::Bytes::from(vec![1u8; 1024 * 1024])).collect();
    let (status, _, body) = upload_via_gateway(&app, &admin, chunks, false).await;
    assert_eq!((status, assert_error_shape(&body).as_str()), (413, "payload_too_large"));
    // A chunked upload that breaks its own framing is the client's fault: never a success, and
    // the upstream is not counted as failing (nor taken out of rotation) for it. Sent raw.
    let addr = app.addr("gateway");
    let malformed = format!(
        "POST /echo/upload HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {admin}\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\nnot-hex\r\n\r\n"
    );
    let (end, answer) = actix_web::rt::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        // The bound only turns a connection left open into a failure (a timeout, not an end).
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        stream.write_all(malformed.as_bytes()).unwrap();
        let mut answer = Vec::new();
        let end = stream.read_to_end(&mut answer).map_err(|e| e.kind());
        (end, String::from_utf8_lossy(&answer).into_owned())
    })
    .await
    .unwrap();
    // actix-http's chunked decoder reports a malformed chunk-size line as an I/O error, and its
    // dispatcher treats that as a client that went away: it closes the connection at once and
    // drops the request's handler, so nothing is answered, not even a 400. No other outcome is
    // possible here: the handler cannot answer first, because the upstream answers an upload
    // only once its body has ended, and this body never ends.
    assert_eq!((end, answer.as_str()), (Ok(0), ""), "the connection is closed without an answer");
    let metrics = app.metrics("gateway").await;
    assert!(!metrics.contains("gateway_upstream_failures_total"), "{metrics}");

    // HEAD: the upstream's declared length comes through, no body.
    let mut head = app
        .client
        .head(app.url("gateway", "/echo/headers"))
        .insert_header(("authorization", format!("Bearer {admin}")))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status().as_u16(), 200);
    // actix answers HEAD with the length the GET body would have.
    let declared = head.headers().get("content-length").expect("content-length").to_str().unwrap();
    assert!(declared.parse::<u64>().unwrap() > 100, "{declared}");
    assert!(head.body().await.unwrap().is_empty());

    // The upstream dies: 502; a new instance registers: served again, no gateway restart.
    echo_handle.stop(false).await;
    let dead = DeadPort::hold(&echo);
    assert_eq!(gateway.get(&admin, "/echo/headers").await.refusal(), (502, "bad_gateway"));
    drop(dead);
    let (echo2, echo2_handle) = start_echo();
    register_echo(&app, &admin, &echo2).await;
    let answer = gateway.get(&admin, "/echo/headers").await;
    assert_eq!(answer.status, 200, "the failed instance is skipped during its cool-down");
    let metrics = app.metrics("gateway").await;
    for expected in [
        r#"gateway_upstream_responses_total{service="echo",status="200"}"#,
        r#"gateway_upstream_duration_seconds_bucket{service="echo""#,
        r#"gateway_upstream_failures_total{kind="unreachable",service="echo"}"#,
        r#"gateway_auth_failures_total{reason="missing"} 1"#,
        r#"gateway_auth_failures_total{reason="malformed"} 1"#,
        r#"gateway_auth_failures_total{reason="api_key"} 1"#,
        r#"gateway_auth_failures_total{reason="mfa_required"} 2"#,
        r#"http_requests_total{method="GET",role="gateway",route="/echo/*",status="200"}"#,
    ] {
        assert!(metrics.contains(expected), "{expected} missing from gateway metrics");
    }
    echo2_handle.stop(false).await;
    app.stop().await;
}

/// Which instances `GET /lookup/echo` hands out over `n` asks, and whether each was healthy.
async fn lookups(app: &TestApp, token: &str, n: usize) -> BTreeSet<(String, bool)> {
    let mut seen = BTreeSet::new();
    for _ in 0..n {
        let found = app.gateway().lookup(token, "echo").await.ok();
        seen.insert((found.url, found.healthy));
    }
    seen
}

async fn wait_for_lookups(app: &TestApp, token: &str, expected: &[(&str, bool)]) {
    let expected: BTreeSet<(String, bool)> =
        expected.iter().map(|(url, healthy)| (url.to_string(), *healthy)).collect();
    eventually(format!("lookups to give {expected:?}"), Duration::from_secs(10), async || {
        (lookups(app, token, 6).await == expected).then_some(())
    })
    .await;
}

#[actix_web::test]
async fn health_probes_take_failing_instances_out_and_back_in() {
    let app = spawn_with_echo_route(|c| {
        c.set_role_setting("gateway", "health_check_interval_ms", 100);
        // Long enough that only the probes can explain an instance coming back.
        c.set_role_setting("gateway", "failure_cool_down_ms", 600_000);
    })
    .await;
    let admin = admin_token(&app).await;
    let (live, live_handle) = start_echo();
    // A port nothing listens on yet: the second instance starts dead.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dead = format!("http://127.0.0.1:{port}");
    register_echo(&app, &admin, &live).await;
    register_echo(&app, &admin, &dead).await;

    // The probe takes the dead instance out before any request has to fail on it.
    wait_for_lookups(&app, &admin, &[(&live, true)]).await;
    for _ in 0..10 {
        assert_eq!(through_edge(&app, &admin).await, 200);
    }
    let metrics = app.metrics("gateway").await;
    assert!(metrics.contains(&format!(r#"gateway_upstream_healthy{{service="echo",url="{live}"}} 1"#)));
    assert!(metrics.contains(&format!(r#"gateway_upstream_healthy{{service="echo",url="{dead}"}} 0"#)));
    assert!(!metrics.contains(r#"gateway_upstream_failures_total{kind="unreachable",service="echo"}"#));

    // It starts answering: the probe brings it back into the rotation.
    let (_, revived_handle) = start_echo_at(&format!("127.0.0.1:{port}"));
    wait_for_lookups(&app, &admin, &[(&live, true), (&dead, true)]).await;

    // Every instance down: lookups still answer (requests are tried) but say so.
    live_handle.stop(false).await;
    revived_handle.stop(false).await;
    wait_for_lookups(&app, &admin, &[(&live, false), (&dead, false)]).await;
    assert_eq!(app.gateway().get(&admin, "/echo/headers").await.refusal(), (502, "bad_gateway"));
    app.stop().await;
}

#[actix_web::test]
async fn forwarding_headers_are_believed_only_from_trusted_proxies() {
    let app = spawn_with_echo_route(|c| c.server.trusted_proxies.clear()).await;
    let admin = admin_token(&app).await;
    let (echo, echo_handle) = start_echo();
    register_echo(&app, &admin, &echo).await;
    let mut response = app
        .client
        .get(app.url("gateway", "/echo/headers"))
        .insert_header(("authorization", format!("Bearer {admin}")))
        .insert_header(("x-forwarded-for", "203.0.113.9"))
        .insert_header(("x-forwarded-proto", "https"))
        .insert_header(("x-forwarded-host", "evil.example"))
        .send()
        .await
        .unwrap();
    let seen: Value = response.json().await.unwrap();
    let headers = &seen["headers"];
    assert_eq!(headers["x-forwarded-proto"], "http", "a client's claim of TLS is not relayed");
    let gateway_host = app.url("gateway", "").trim_start_matches("http://").to_string();
    assert_eq!(headers["x-forwarded-host"], gateway_host.as_str(), "nor its claim of another host");
    assert_eq!(headers["x-forwarded-for"], "203.0.113.9, 127.0.0.1", "the chain is appended to, as ever");
    echo_handle.stop(false).await;
    app.stop().await;
}

/// How many requests kms's `POST /keys/verify` has served.
async fn kms_verifications(app: &TestApp) -> u64 {
    app.metrics("kms")
        .await
        .lines()
        .filter(|l| l.starts_with("http_requests_total{") && l.contains(r#"route="/keys/verify""#))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[actix_web::test]
async fn failed_authentications_throttle_the_address_before_kms_is_asked() {
    let app = spawn_with_echo_route(|c| {
        c.set_role_setting("gateway", "auth_failure_limit", json!({"requests_per_second": 1, "burst": 3}));
    })
    .await;
    let admin = admin_token(&app).await;
    let (echo, echo_handle) = start_echo();
    register_echo(&app, &admin, &echo).await;
    let guess = |n: usize| {
        app.client
            .get(app.url("gateway", "/echo/headers"))
            .insert_header(("x-api-key", format!("fk_guess_{n}")))
            .send()
    };
    for n in 0..3 {
        assert_eq!(guess(n).await.unwrap().status().as_u16(), 401);
    }
    assert_eq!(kms_verifications(&app).await, 3, "each distinct guess is one question to kms");
    // The failure that exhausts the budget is answered 429; from then on kms is not asked.
    for n in 3..8 {
        let mut refused = guess(n).await.unwrap();
        assert_eq!(refused.status().as_u16(), 429);
        assert!(refused.headers().get("retry-after").is_some());
        assert_eq!(assert_error_shape(&refused.json::<Value>().await.unwrap()), "rate_limited");
    }
    assert_eq!(kms_verifications(&app).await, 4);
    // The whole address waits, whatever it presents next; other addresses do not.
    assert_eq!(through_edge(&app, &admin).await, 429);
    let metrics = app.metrics("gateway").await;
    assert!(metrics.contains(r#"gateway_auth_failures_total{reason="throttled"} 5"#), "{metrics}");
    echo_handle.stop(false).await;
    app.stop().await;
}

#[actix_web::test]
async fn rate_limits_apply_per_caller_with_headers_and_retry_after() {
    let app = TestApp::spawn_with(
        Backend::Sqlite,
        |c| {
            c.set_role_setting("gateway", "route_limits.kms", json!({"requests_per_second": 1, "burst": 3}));
        },
        None,
    )
    .await;
    let get = |from: &'static str| {
        app.client.get(app.url("gateway", "/kms/health")).insert_header(("x-forwarded-for", from)).send()
    };
    for remaining in ["2", "1", "0"] {
        let response = get("198.51.100.7").await.unwrap();
        assert_eq!(response.status().as_u16(), 200);
        assert_eq!(response.headers().get("ratelimit-limit").unwrap(), "3");
        assert_eq!(response.headers().get("ratelimit-remaining").unwrap(), remaining);
    }
    let mut limited = get("198.51.100.7").await.unwrap();
    assert_eq!(limited.status().as_u16(), 429);
    let retry_after: u64 = limited.headers().get("retry-after").unwrap().to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry_after));
    let body: Value = limited.json().await.unwrap();
    assert_eq!(assert_error_shape(&body), "rate_limited");
    assert_eq!(
        get("198.51.100.8").await.unwrap().status().as_u16(),
        200,
        "another caller has its own bucket"
    );
    assert!(app.metrics("gateway").await.contains(r#"status="429""#));
    app.stop().await;
}

/// POSTs `chunks` to the echo upstream's `/upload` through the gateway, with a Content-Length
/// when `sized`, chunked otherwise: (status, the answer's Content-Length, its JSON body).
async fn upload_via_gateway(
    app: &TestApp,
    token: &str,
    chunks: Vec<web::Bytes>,
    sized: bool,
) -> (u16, Option<String>, Value) {
    let request = app
        .client
        .post(app.url("gateway", "/echo/upload"))
        .insert_header(("authorization", format!("Bearer {token}")));
    let mut response = if sized {
        request.send_body(chunks.concat()).await.unwrap()
    } else {
        request
            .send_stream(futures_util::stream::iter(chunks.into_iter().map(Ok::<_, actix_web::Error>)))
            .await
            .unwrap()
    };
    let length = response.headers().get("content-length").map(|v| v.to_str().unwrap().to_string());
    (response.status().as_u16(), length, response.json::<Value>().await.unwrap())
}

/// The status of a `GET /echo/headers` through the gateway with `token`.
async fn through_edge(app: &TestApp, token: &str) -> u16 {
    app.gateway().get(token, "/echo/headers").await.status
}

async fn wait_refused(app: &TestApp, token: &str) {
    eventually("the edge to refuse a revoked credential", Duration::from_secs(10), async || {
        (through_edge(app, token).await == 401).then_some(())
    })
    .await;
}

/// Once refused, refused by every worker: none may still admit it from its own memo. (429: the
/// refusals spent the address's failure budget — still a refusal.)
async fn assert_stays_refused(app: &TestApp, token: &str) {
    for _ in 0..8 {
        let status = through_edge(app, token).await;
        assert!(matches!(status, 401 | 429), "a worker admitted a revoked credential: {status}");
    }
}

async fn login_as(app: &TestApp, user: &str) -> String {
    app.gateway().kms().login(user).await.access_token
}

#[actix_web::test]
async fn revoked_tokens_sessions_and_disabled_users_are_refused_at_the_edge() {
    let app = spawn_with_echo_route(|_| {}).await;
    let admin = admin_token(&app).await;
    let (echo, echo_handle) = start_echo();
    register_echo(&app, &admin, &echo).await;
    for user in ["dora", "eve"] {
        app.gateway().kms().register(ANONYMOUS, user, &[]).await.ok();
    }

    // Logout: the token is refused at the edge although the upstream checks nothing.
    let token = login_as(&app, "dora").await;
    assert_eq!(through_edge(&app, &token).await, 200);
    app.gateway().kms().logout(&token).await.ok();
    wait_refused(&app, &token).await;
    assert_stays_refused(&app, &token).await;

    // A disabled user's still-unexpired token is refused too; re-enabling lets new ones in.
    let token = login_as(&app, "eve").await;
    assert_eq!(through_edge(&app, &token).await, 200);
    app.kms().set_disabled(&app.admin_token().await, "eve", true).await.ok();
    wait_refused(&app, &token).await;
    assert_stays_refused(&app, &token).await;
    app.kms().set_disabled(&app.admin_token().await, "eve", false).await.ok();
    eventually("a re-enabled user to pass the edge again", Duration::from_secs(10), async || {
        let fresh = login_as(&app, "eve").await;
        (through_edge(&app, &fresh).await == 200).then_some(())
    })
    .await;
    echo_handle.stop(false).await;
    app.stop().await;
}

#[actix_web::test]
async fn idempotent_requests_move_to_a_live_instance_when_one_is_down() {
    let app = spawn_with_echo_route(|_| {}).await;
    let admin = admin_token(&app).await;
    let (first, first_handle) = start_echo();
    let (second, second_handle) = start_echo();
    register_echo(&app, &admin, &first).await;
    register_echo(&app, &admin, &second).await;
    first_handle.stop(false).await;
    for _ in 0..10 {
        let answer = app.gateway().get(&admin, "/echo/headers").await;
        assert_eq!(answer.status, 200, "a GET is retried on the live instance, never answered 502");
    }
    assert!(app
        .metrics("gateway")
        .await
        .contains(r#"gateway_upstream_failures_total{kind="unreachable",service="echo"}"#));
    second_handle.stop(false).await;
    app.stop().await;
}

/// An upstream that answers the first request on each connection and closes the connection,
/// unanswered, when the next one arrives: a service closing an idle kept-alive connection just
/// as the gateway reuses it.
fn start_one_answer_per_connection() -> String {
    use std::io::{BufRead, BufReader, Read, Write};
    /// Reads one request (head and `Content-Length` body); false once the client is gone.
    fn read_request(reader: &mut BufReader<std::net::TcpStream>) -> bool {
        let mut length = 0;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return false;
            }
            if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = value.trim().parse().unwrap();
            }
            if line == "\r\n" {
                let mut body = vec![0; length];
                return reader.read_exact(&mut body).is_ok();
            }
        }
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                if read_request(&mut reader) {
                    let answer = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\r\n{\"ok\":true}";
                    let _ = (&stream).write_all(answer.as_bytes());
                    read_request(&mut reader);
                }
            });
        }
    });
    url
}

#[actix_web::test]
async fn a_request_the_service_dropped_unanswered_is_sent_again_only_when_idempotent() {
    let app = spawn_with_echo_route(|_| {}).await;
    let admin = admin_token(&app).await;
    register_echo(&app, &admin, &start_one_answer_per_connection()).await;
    for _ in 0..6 {
        let answer = app.gateway().get(&admin, "/echo/anything").await;
        assert_eq!(
            (answer.status, answer.body),
            (200, json!({"ok": true})),
            "a GET met a dropped connection"
        );
    }
    // A POST may have been acted on before its connection dropped: never sent twice.
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let answer = app.gateway().post(&admin, "/echo/anything", json!({"n": 1})).await;
        let status = answer.status;
        assert!(status == 200 || answer.refusal() == (502, "bad_gateway"), "{status}");
        statuses.push(status);
    }
    assert!(statuses.contains(&502), "a POST on a dropped connection was sent again: {statuses:?}");
    let metrics = app.metrics("gateway").await;
    assert!(metrics.contains(r#"gateway_upstream_failures_total{kind="dropped",service="echo"}"#));
    assert!(!metrics.contains(r#"kind="unreachable""#), "a dropped connection is no health failure");
    app.stop().await;
}

#[actix_web::test]
async fn a_slow_upstream_is_answered_504() {
    let app = spawn_with_echo_route(|c| c.set_role_setting("gateway", "upstream_timeout_seconds", 1)).await;
    let admin = admin_token(&app).await;
    let (echo, handle) = start_echo();
    register_echo(&app, &admin, &echo).await;
    let started = std::time::Instant::now();
    assert_eq!(app.gateway().get(&admin, "/echo/slow").await.refusal(), (504, "gateway_timeout"));
    assert!(started.elapsed() < Duration::from_secs(3), "the gateway did not wait for the upstream");
    handle.stop(false).await;
    app.stop().await;
}

/// Resident memory of a process in kB, from /proc.
fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[actix_web::test]
async fn large_bodies_stream_through_a_gateway_process_in_bounded_memory() {
    let (echo, echo_handle) = start_echo();
    let dir = tempfile::tempdir().unwrap();
    let process = crate::support::ServeProcess::start(
        &dir.path().join("data"),
        &["kms", "gateway"],
        &[
            ("FOUNTAIN_PEERS__ECHO", echo.as_str()),
            ("FOUNTAIN_ROLES__GATEWAY__ROUTES__ECHO", "echo"),
            ("FOUNTAIN_ROLES__GATEWAY__PUBLIC_ROUTES", r#"["/echo/*"]"#),
        ],
    );
    let gateway = format!("http://{}", process.addr("gateway"));
    let client = awc::Client::builder().disable_timeout().finish();
    // Warm up the path (connection pools, buffers) before the baseline is taken.
    let mut response = client.get(format!("{gateway}/echo/headers")).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    response.body().await.unwrap();
    actix_web::rt::time::sleep(Duration::from_millis(200)).await;
    let pid = process.child.id();
    let baseline = rss_kb(pid);

    // Sample the gateway's RSS every few milliseconds while 40 MB go up and 40 MB come down.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut peak = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(rss_kb(pid));
                std::thread::sleep(Duration::from_millis(2));
            }
            peak
        })
    };
    for _ in 0..4 {
        let mut response =
            client.post(format!("{gateway}/echo/upload")).send_body(vec![5u8; TEN_MB]).await.unwrap();
        assert_eq!(response.json::<Value>().await.unwrap()["received"], TEN_MB);
        let mut response = client.get(format!("{gateway}/echo/download")).send().await.unwrap();
        assert_eq!(response.body().limit(2 * TEN_MB).await.unwrap().len(), TEN_MB);
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let peak = sampler.join().unwrap();
    let growth_mb = peak.saturating_sub(baseline) as f64 / 1024.0;
    eprintln!("gateway RSS: baseline {} kB, peak {peak} kB, growth {growth_mb:.1} MB", baseline);
    // One buffered body alone would be 10 MB; streaming keeps the growth to a few buffers.
    assert!(growth_mb < 5.0, "the gateway grew {growth_mb:.1} MB moving 10 MB bodies");
    drop(process);
    echo_handle.stop(false).await;
}

#[actix_web::test]
async fn forged_foreign_expired_and_revoked_tokens_get_one_401_at_the_edge() {
    let app = spawn_with_echo_route(|_| {}).await;
    let admin = admin_token(&app).await;
    let (echo, echo_handle) = start_echo();
    register_echo(&app, &admin, &echo).await;
    let mut tokens = crate::support::forged_tokens(&app, &admin).await;

    // Tokens signed with kms's real key whose claims are wrong: another issuer or audience,
    // expired or not yet valid beyond the leeway.
    let ring = {
        let mut conn = app.platform.db.conn().unwrap();
        fountain::roles::kms::signing::KeyRing::load(&mut conn, &app.platform.master_key).unwrap()
    };
    let now = chrono::Utc::now().timestamp();
    // The account identity of the real admin token, so that only the changed claim is wrong.
    let issued: fountain::platform::auth::Claims = {
        use base64::Engine;
        let payload = admin.split('.').nth(1).unwrap();
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap())
            .unwrap()
    };
    let valid = fountain::platform::auth::Claims {
        exp: now + 600,
        iat: now,
        nbf: now,
        jti: "minted-by-test".into(),
        sid: None,
        ..issued
    };
    let signed = |claims: fountain::platform::auth::Claims| ring.sign(&claims).unwrap();
    assert_eq!(through_edge(&app, &signed(valid.clone())).await, 200, "the minted baseline is valid");
    tokens.push(signed(fountain::platform::auth::Claims { iss: "evil-kms".into(), ..valid.clone() }));
    tokens.push(signed(fountain::platform::auth::Claims { aud: "elsewhere".into(), ..valid.clone() }));
    tokens.push(signed(fountain::platform::auth::Claims { exp: now - 60, ..valid.clone() }));
    tokens.push(signed(fountain::platform::auth::Claims { nbf: now + 60, ..valid.clone() }));
    // And a real token after logout.
    app.gateway().kms().logout(&admin).await.ok();
    wait_refused(&app, &admin).await;
    tokens.push(admin.clone());

    // Each sent raw: they are the attack.
    let mut bodies = Vec::new();
    for token in &tokens {
        let (status, body) = app.call("GET", "gateway", "/echo/headers", Some(token), None).await;
        assert_eq!(status, 401, "{token}: {body}");
        bodies.push(body);
    }
    assert!(bodies.windows(2).all(|w| w[0] == w[1]), "one uniform answer: {bodies:?}");
    let metrics = app.metrics("gateway").await;
    for reason in [
        "malformed",
        "algorithm",
        "signature",
        "unknown_kid",
        "issuer",
        "audience",
        "expired",
        "not_yet_valid",
        "revoked",
    ] {
        let line = format!(r#"gateway_auth_failures_total{{reason="{reason}"}}"#);
        assert!(metrics.contains(&line), "{line} missing");
    }
    echo_handle.stop(false).await;
    app.stop().await;
}
