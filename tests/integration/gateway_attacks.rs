//! Attacks on the gateway over real HTTP, each one that once got through: rules bypassed by
//! percent-encoded or dot-segment paths, the registry handing out fountain's role names and
//! internal addresses, rate buckets shared across kinds of callers, and API-key guessing at the
//! public `/kms/token`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};

use crate::support::{assert_error_shape, Backend, TestApp, PASSWORD};

/// Sends `method target` exactly as written (no client normalises the target) with a bearer
/// token and an optional JSON body; returns the status and the JSON answer (Null if none).
async fn raw(
    addr: SocketAddr,
    method: &str,
    target: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(token) = token {
        request.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    request
        .push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len()));
    let answer = actix_web::rt::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        stream.write_all(request.as_bytes()).expect("write");
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        String::from_utf8_lossy(&answer).into_owned()
    })
    .await
    .unwrap();
    let status = answer.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        dechunk(body)
    } else {
        body.to_string()
    };
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

/// Logs `username` in at kms itself.
async fn login(app: &TestApp, username: &str) -> String {
    let body = json!({"username": username, "password": PASSWORD});
    let (status, session) = app.call("POST", "kms", "/login", None, Some(body)).await;
    assert_eq!(status, 200, "login of {username}: {session}");
    session["access_token"].as_str().unwrap().to_string()
}

/// An admin's password token (no second factor) and the API key of a new service `svc`
/// (created with the admin's step-up token).
async fn admin_and_key(app: &TestApp) -> (String, String) {
    let admin = app.admin_password_token().await;
    let stepped_up = app.admin_token().await;
    let (status, key) =
        app.call("POST", "kms", "/keys", Some(&stepped_up), Some(json!({"service_name": "svc"}))).await;
    assert_eq!(status, 201, "{key}");
    (admin, key["api_key"].as_str().unwrap().to_string())
}

/// What the edge answers `method path` with an admin token that carries no second factor.
async fn answer(gateway: SocketAddr, admin: &str, method: &str, path: &str) -> (u16, Value) {
    raw(gateway, method, path, Some(admin), None).await
}

#[actix_web::test]
async fn encoded_and_dot_segment_paths_meet_the_rules_of_the_plain_path() {
    // The step-up rules as they apply once twofa issues step-up tokens.
    let app =
        TestApp::spawn_with(Backend::Sqlite, |c| c.set_role_setting("gateway", "enforce_mfa", true), None)
            .await;
    let (admin, key) = admin_and_key(&app).await;
    let stepped_up = app.admin_token().await;
    let (status, created) = app.call("POST", "secrets", "/secrets/svc", Some(&stepped_up), None).await;
    assert_eq!(status, 201, "{created}");
    let gateway = app.addr("gateway");

    // Each plain path needs a second factor at the edge; the same request in disguise gets
    // exactly the same answer.
    let disguises: [(&str, &str, &[&str]); 4] = [
        (
            "POST",
            "/kms/keys/svc/rotate",
            &[
                "/kms/%6beys/svc/rotate",
                "/kms/%6Beys/svc/rotate",
                "/%6bms/keys/svc/rotate",
                "/kms/./keys/svc/rotate",
                "/kms//keys/svc/rotate",
                "//kms/keys/svc/rotate",
                "/kms/foo/../keys/svc/rotate",
                "/kms/foo/%2e%2E/keys/svc/rotate",
                "/kms/keys/svc/./rotate",
            ],
        ),
        ("POST", "/secrets/secrets/svc/rotate", &["/secrets/secret%73/svc/rotate"]),
        ("DELETE", "/secrets/secrets/svc", &["/secrets/%73ecrets/svc"]),
        ("POST", "/kms/signing-keys/rotate", &["/kms/signing-key%73/rotate"]),
    ];
    for (method, plain, disguised) in disguises {
        let expected = answer(gateway, &admin, method, plain).await;
        assert_eq!((expected.0, &expected.1["details"]["mfaRequired"]), (403, &json!(true)), "{plain}");
        for path in disguised {
            assert_eq!(answer(gateway, &admin, method, path).await, expected, "{method} {path}");
        }
        assert_eq!(assert_error_shape(&expected.1), "mfa_required", "{plain}");
    }
    // Nothing was changed behind the edge's back.
    let (_, kept) = app.call("GET", "kms", "/keys/svc", Some(&stepped_up), None).await;
    assert_eq!(kept["api_key"].as_str(), Some(key.as_str()), "the key was rotated");
    let (status, secrets) = app.call("GET", "secrets", "/secrets/svc", Some(&stepped_up), None).await;
    assert_eq!((status, secrets["version"].as_i64()), (200, Some(1)), "{secrets}");

    // What services and proxies read differently is not routed at all.
    for path in [
        "/kms/keys%2Fsvc/rotate",
        "/kms/keys%2fsvc",
        "/kms/keys%5Csvc",
        "/kms/keys%00/svc/rotate",
        "/kms/keys\\svc/rotate",
        "/kms/%zz",
        "/kms/..",
        "/kms/../secrets/secrets/svc/rotate",
        "/kms/keys/../../secrets/secrets/svc/rotate",
        "/kms/%2e%2e/secrets/secrets/svc/rotate",
    ] {
        let (status, body) = raw(gateway, "POST", path, Some(&admin), None).await;
        assert_eq!(status, 400, "{path}: {body}");
        if !body.is_null() {
            assert_eq!(assert_error_shape(&body), "bad_request", "{path}");
        }
    }

    // The canonical path is what the service receives: reads and public routes still work in
    // any spelling, and `.well-known` is a name, not a dot segment.
    let (status, keys) = raw(gateway, "GET", "/kms/%6beys", Some(&admin), None).await;
    assert_eq!(status, 200, "{keys}");
    let login = json!({"username": "root", "password": PASSWORD});
    let (status, session) = raw(gateway, "POST", "/kms/./%6cogin", None, Some(login)).await;
    assert_eq!(status, 200, "an encoded public route is that route: {session}");
    let (status, jwks) = raw(gateway, "GET", "/kms/.well-known/jwks.json", None, None).await;
    assert_eq!((status, jwks["keys"].is_array()), (200, true));
    let (status, _) = raw(gateway, "GET", "/kms/%68ealth", None, None).await;
    assert_eq!(status, 200);
    app.stop().await;
}

/// A listener an attacker controls: it vouches for every API key and answers every request.
fn start_impostor() -> (String, actix_web::dev::ServerHandle) {
    crate::support::upstream::serve("127.0.0.1:0", move |cfg: &mut web::ServiceConfig| {
        cfg.route(
            "/keys/verify",
            web::post().to(|| async {
                HttpResponse::Ok().json(json!({"valid": true, "code": "VALID", "service_name": "svc"}))
            }),
        )
        .default_service(web::to(|req: HttpRequest| async move {
            HttpResponse::Ok().json(json!({"impostor": true, "path": req.path()}))
        }));
    })
}

fn registration(service: &str, url: &str) -> Value {
    json!({"service": service, "url": url, "ttlSeconds": 300})
}

#[actix_web::test]
async fn an_admin_cannot_register_a_listener_as_one_of_fountains_roles() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let (admin, _) = admin_and_key(&app).await;
    let (impostor, handle) = start_impostor();

    // An admin may register other services, but no fountain role: other roles send their
    // tokens to what the registry says those roles are.
    for role in ["kms", "secrets", "notify", "gateway"] {
        let (status, body) =
            app.call("POST", "gateway", "/registry", Some(&admin), Some(registration(role, &impostor))).await;
        assert_eq!(status, 403, "an admin registered {role}");
        assert_eq!(assert_error_shape(&body), "forbidden", "{role}");
    }
    let (status, _) =
        app.call("POST", "gateway", "/registry", Some(&admin), Some(registration("echo", &impostor))).await;
    assert_eq!(status, 204);
    handle.stop(false).await;
    app.stop().await;
}

#[actix_web::test]
async fn kms_is_never_taken_from_the_registry() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let (admin, _) = admin_and_key(&app).await;
    let (impostor, handle) = start_impostor();

    // kms's own identity may register kms, but the gateway still uses the configured kms: for
    // proxying, for X-API-KEY verification and in lookups.
    let credential =
        std::fs::read_to_string(fountain::platform::injection::credential_path(&app.platform.config, "kms"))
            .expect("the all-in-one process provisioned kms's credential");
    let grant = json!({"grant_type": "client_credentials", "client_secret": credential.trim()});
    let (status, session) = app.call("POST", "kms", "/token", None, Some(grant)).await;
    assert_eq!(status, 200, "{session}");
    let kms_identity = session["access_token"].as_str().unwrap();
    let (status, _) = app
        .call("POST", "gateway", "/registry", Some(kms_identity), Some(registration("kms", &impostor)))
        .await;
    assert_eq!(status, 204, "a role registers itself");
    for _ in 0..4 {
        let (status, jwks) = app.call("GET", "gateway", "/kms/.well-known/jwks.json", None, None).await;
        assert_eq!((status, jwks["keys"].is_array()), (200, true), "kms was taken from the registry: {jwks}");
        let (status, found) = app.call("GET", "gateway", "/lookup/kms", Some(&admin), None).await;
        assert_eq!((status, found["url"].as_str()), (200, Some(app.url("kms", "").as_str())));
        let mut forged = app
            .client
            .get(app.url("gateway", "/kms/keys"))
            .insert_header(("x-api-key", "fk_vouched_for_by_the_impostor"))
            .send()
            .await
            .unwrap();
        assert_eq!(forged.status().as_u16(), 401, "{:?}", forged.body().await);
    }
    handle.stop(false).await;
    app.stop().await;
}

#[actix_web::test]
async fn the_registry_refuses_urls_that_reach_metadata_link_local_or_private_addresses() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let (admin, _) = admin_and_key(&app).await;
    let register = |url: &'static str| {
        app.call("POST", "gateway", "/registry", Some(admin.as_str()), Some(registration("echo", url)))
    };
    for url in [
        "http://169.254.169.254/latest/meta-data",
        "http://169.254.169.254:80",
        // The same address spelled as one number, and as an IPv4-mapped IPv6 address.
        "http://2852039166/",
        "http://[::ffff:169.254.169.254]/",
        "http://[fd00:ec2::254]/",
        "http://[fe80::1]:8080",
        "http://100.100.100.200/",
        "http://10.0.0.5:8080",
        "http://172.16.0.1",
        "http://192.168.1.1",
        "http://[fd12:3456::1]:9000",
        "http://0.0.0.0:8080",
        "http://127.0.0.1:9/?target=http://169.254.169.254",
        "http://127.0.0.1:9/#fragment",
        "http://user:secret@127.0.0.1:9",
    ] {
        let (status, body) = register(url).await;
        assert_eq!(status, 422, "{url} was registered");
        assert_eq!(assert_error_shape(&body), "validation_failed", "{url}");
    }
    // Loopback (by address or by name) and public addresses are fine.
    for url in ["http://127.0.0.1:9", "http://localhost:9", "http://[::1]:9", "http://203.0.113.10:8080"] {
        let (status, body) = register(url).await;
        assert_eq!(status, 204, "{url}: {body}");
    }
    // A lookup says where and whether healthy, nothing about how a probe went.
    let (status, found) = app.call("GET", "gateway", "/lookup/echo", Some(&admin), None).await;
    assert_eq!(status, 200);
    let mut fields: Vec<&str> = found.as_object().unwrap().keys().map(String::as_str).collect();
    fields.sort_unstable();
    assert_eq!(fields, ["healthy", "service", "url"]);
    app.stop().await;

    // A private network the operator allows is open; metadata and link-local never are.
    let app = TestApp::spawn_with(
        Backend::Sqlite,
        |c| c.set_role_setting("gateway", "registry_allowed_networks", ["10.0.0.0/8", "169.254.0.0/16"]),
        None,
    )
    .await;
    let (admin, _) = admin_and_key(&app).await;
    for (url, expected) in
        [("http://10.0.0.5:8080", 204), ("http://169.254.169.254/", 422), ("http://192.168.1.1", 422)]
    {
        let (status, body) =
            app.call("POST", "gateway", "/registry", Some(&admin), Some(registration("echo", url))).await;
        assert_eq!(status, expected, "{url}: {body}");
    }
    app.stop().await;
}

#[actix_web::test]
async fn registrations_are_capped_per_service() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let (admin, _) = admin_and_key(&app).await;
    let url = |n: u16| format!("http://127.0.0.1:{}", 40_000 + n);
    let register = |url: String| {
        let body = registration("echo", &url);
        app.call("POST", "gateway", "/registry", Some(admin.as_str()), Some(body))
    };
    for n in 0..16 {
        let (status, body) = register(url(n)).await;
        assert_eq!(status, 204, "instance {n}: {body}");
    }
    let (status, body) = register(url(16)).await;
    assert_eq!(status, 409, "a seventeenth instance was registered");
    assert_eq!(assert_error_shape(&body), "conflict");
    assert_eq!(body["details"]["maxInstances"], 16);
    let (status, _) = register(url(3)).await;
    assert_eq!(status, 204, "a known instance renews");
    // Another service has room of its own.
    let (status, _) =
        app.call("POST", "gateway", "/registry", Some(&admin), Some(registration("other", &url(0)))).await;
    assert_eq!(status, 204);
    app.stop().await;
}

#[actix_web::test]
async fn registrations_are_rate_limited_per_caller() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let (admin, _) = admin_and_key(&app).await;
    let url = |n: u16| format!("http://127.0.0.1:{}", 40_000 + n);
    // The default budget is 20 at once, then one a second: a flood gets 429 + Retry-After.
    let started = Instant::now();
    let mut limited = None;
    for n in 0..30 {
        let body = registration(&format!("flood-{n}"), &url(n));
        let mut answer = app
            .client
            .post(app.url("gateway", "/registry"))
            .insert_header(("authorization", format!("Bearer {admin}")))
            .send_json(&body)
            .await
            .unwrap();
        match answer.status().as_u16() {
            204 => {}
            429 => {
                assert!(answer.headers().get("retry-after").is_some());
                limited = Some((n, answer.json::<Value>().await.unwrap()));
                break;
            }
            other => panic!("registration {n} got {other}"),
        }
    }
    let (n, body) = limited.expect("thirty registrations in a row from one caller were all accepted");
    let refills = started.elapsed().as_secs() + 1;
    assert!((20..=20 + refills).contains(&u64::from(n)), "registration {n} was the first refused");
    assert_eq!(assert_error_shape(&body), "rate_limited");
    // Another caller has its own budget.
    let svc = service_token(&app).await;
    let (status, body) =
        app.call("POST", "gateway", "/registry", Some(&svc), Some(registration("svc", &url(99)))).await;
    assert_eq!(status, 204, "{body}");
    app.stop().await;
}

/// A service token for `svc` (whose key `admin_and_key` created; reading it back in plaintext
/// takes the admin's step-up).
async fn service_token(app: &TestApp) -> String {
    let (_, key) = app.call("GET", "kms", "/keys/svc", Some(&app.admin_token().await), None).await;
    let grant = json!({"grant_type": "client_credentials", "client_secret": key["api_key"]});
    let (status, session) = app.call("POST", "kms", "/token", None, Some(grant)).await;
    assert_eq!(status, 200, "{session}");
    session["access_token"].as_str().unwrap().to_string()
}

#[actix_web::test]
async fn a_user_named_like_a_service_does_not_drain_that_services_rate_bucket() {
    let app = TestApp::spawn_with(
        Backend::Sqlite,
        |c| c.set_role_setting("gateway", "route_limits.kms", json!({"requests_per_second": 1, "burst": 3})),
        None,
    )
    .await;
    admin_and_key(&app).await;
    let service = service_token(&app).await;
    // Anyone may register a user called `svc`.
    let (status, _) = app
        .call("POST", "kms", "/register", None, Some(json!({"username": "svc", "password": PASSWORD})))
        .await;
    assert_eq!(status, 201);
    let user = login(&app, "svc").await;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(app.call("GET", "gateway", "/kms/keys/svc", Some(&user), None).await.0);
    }
    assert_eq!(statuses.last(), Some(&429), "the user spent its own bucket: {statuses:?}");
    // The service `svc` is someone else, with a bucket of its own.
    let mut answer = app
        .client
        .get(app.url("gateway", "/kms/keys/svc"))
        .insert_header(("authorization", format!("Bearer {service}")))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 200, "{:?}", answer.body().await);
    assert_eq!(answer.headers().get("ratelimit-remaining").unwrap(), "2");
    app.stop().await;
}

/// How many requests kms's `POST /token` has served.
async fn kms_token_requests(app: &TestApp) -> u64 {
    let (_, _, metrics) = app.get("kms", "/metrics").await;
    String::from_utf8_lossy(&metrics)
        .lines()
        .filter(|l| l.starts_with("http_requests_total{") && l.contains(r#"route="/token""#))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[actix_web::test]
async fn api_key_guessing_at_the_public_token_endpoint_is_throttled_per_address() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let (_, key) = admin_and_key(&app).await;
    let asked_before = kms_token_requests(&app).await;
    let exchange = |from: &'static str, secret: String| {
        app.client
            .post(app.url("gateway", "/kms/token"))
            .insert_header(("x-forwarded-for", from))
            .send_json(&json!({"grant_type": "client_credentials", "client_secret": secret}))
    };
    let started = Instant::now();
    let mut refused = 0u64;
    let mut throttled = 0u64;
    for n in 0..300 {
        let mut answer = exchange("198.51.100.20", format!("fk_guess_{n}")).await.unwrap();
        match answer.status().as_u16() {
            401 => refused += 1,
            429 => {
                throttled += 1;
                assert!(answer.headers().get("retry-after").is_some());
                let body: Value = answer.json().await.unwrap();
                assert_eq!(assert_error_shape(&body), "rate_limited");
            }
            other => panic!("guess {n} got {other}"),
        }
    }
    // The default budget: 20 failures at once, then 5 a second. After each refill one guess
    // spends it and the next, already on its way to kms when it fails, is answered 429.
    let elapsed = started.elapsed();
    let budget = 20 + (10.0 * elapsed.as_secs_f64()).ceil() as u64 + 5;
    assert!(refused <= budget, "{refused} guesses were answered by kms in {elapsed:?}");
    assert_eq!(refused + throttled, 300);
    let asked = kms_token_requests(&app).await - asked_before;
    assert!(asked <= budget, "kms was asked {asked} times in {elapsed:?}");
    // The address waits whatever it presents next; another address exchanges its key.
    let answer = exchange("198.51.100.20", key.clone()).await.unwrap();
    assert_eq!(answer.status().as_u16(), 429);
    let answer = exchange("198.51.100.21", key).await.unwrap();
    assert_eq!(answer.status().as_u16(), 200);
    let (_, _, metrics) = app.get("gateway", "/metrics").await;
    assert!(
        String::from_utf8_lossy(&metrics).contains(r#"gateway_auth_failures_total{reason="token_grant"}"#)
    );
    app.stop().await;
}
