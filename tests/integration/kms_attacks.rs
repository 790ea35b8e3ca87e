//! Attacks on kms that were found against the running product, replayed over HTTP against the
//! real server. Each test fails on the version that had the defect.
//!
//! Requests sent "from" a client carry `X-Forwarded-For`: the tests connect from loopback, which
//! is a trusted proxy by default, exactly as the gateway or Caddy relays a client.

use serde_json::{json, Value};

use crate::on_both_backends;
use crate::support::{assert_error_shape, fountain_command, Backend, TestApp, PASSWORD};

/// Sends `body` to kms's `path` as relayed for `client`; returns status, `Retry-After` and JSON.
async fn post_from(app: &TestApp, path: &str, client: &str, body: &Value) -> (u16, Option<u64>, Value) {
    let mut response = app
        .client
        .post(app.url("kms", path))
        .insert_header(("x-forwarded-for", client))
        .send_json(body)
        .await
        .expect("request sent");
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().expect("ascii").parse::<u64>().expect("Retry-After in seconds"));
    let bytes = response.body().limit(8 << 20).await.expect("body read");
    let json = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).expect("JSON") };
    (response.status().as_u16(), retry_after, json)
}

/// Asserts a 429 with the standard error shape and a `Retry-After` of at least a second.
fn assert_limited(status: u16, retry_after: Option<u64>, body: &Value) {
    assert_eq!(status, 429, "{body}");
    assert_eq!(assert_error_shape(body), "rate_limited");
    assert!(retry_after.is_some_and(|s| s >= 1), "Retry-After: {retry_after:?}");
}

/// Asserts a 422 naming `field`.
fn assert_invalid(status: u16, body: &Value, field: &str) {
    assert_eq!(status, 422, "{body}");
    assert_eq!(assert_error_shape(body), "validation_failed");
    assert_eq!(body["details"]["field"], field, "{body}");
}

/// The sum of every series of the kms metric `family`.
async fn metric(app: &TestApp, family: &str) -> f64 {
    app.metrics("kms")
        .await
        .lines()
        .filter(|l| l.strip_prefix(family).is_some_and(|rest| rest.starts_with(['{', ' '])))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn limiter_keys(app: &TestApp, limiter: &str) -> f64 {
    metric(app, &format!(r#"kms_limiter_keys{{limiter="{limiter}"}}"#)).await
}

/// kms's audit trail, newest first.
async fn audit(app: &TestApp, admin: &str) -> Vec<Value> {
    let (status, page) = app.call("GET", "kms", "/audit?limit=500", Some(admin), None).await;
    assert_eq!(status, 200, "{page}");
    page["entries"].as_array().expect("entries").clone()
}

fn login_body(username: &str, password: &str) -> Value {
    json!({"username": username, "password": password})
}

#[actix_web::test]
async fn a_megabyte_username_is_refused_before_any_work() {
    let app = TestApp::spawn_with(Backend::Sqlite, |c| c.server.body_limit_bytes = 4 << 20, None).await;
    let admin = app.admin_token().await;
    let audit_rows = audit(&app, &admin).await.len();
    let hashed = metric(&app, "kms_password_hashing_total").await;
    let user_keys = limiter_keys(&app, "login_username").await;
    let address_keys = limiter_keys(&app, "login_address").await;

    let megabyte = "A".repeat(1 << 20);
    for n in 0..10 {
        let client = format!("198.51.100.{n}");
        let (status, _, body) =
            post_from(&app, "/login", &client, &login_body(&megabyte, "wrong password!")).await;
        assert_invalid(status, &body, "username");
        assert!(!body.to_string().contains(&megabyte[..64]), "the name is not echoed");
    }
    // Any name no account can have is refused the same way.
    for name in ["ab", &"a".repeat(65), "bob smith", "bob\u{0}", "аdmin"] {
        let (status, _, body) =
            post_from(&app, "/login", "198.51.100.50", &login_body(name, "wrong password!")).await;
        assert_invalid(status, &body, "username");
    }
    assert_eq!(audit(&app, &admin).await.len(), audit_rows, "no audit row");
    assert_eq!(metric(&app, "kms_password_hashing_total").await, hashed, "no bcrypt");
    assert_eq!(limiter_keys(&app, "login_username").await, user_keys, "no limiter entry");
    assert_eq!(limiter_keys(&app, "login_address").await, address_keys, "no limiter entry");

    // A name an account could have is a real failure: counted everywhere (the counters above
    // are live).
    let (status, _, body) =
        post_from(&app, "/login", "198.51.100.60", &login_body("nobody-here", "wrong password!")).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(audit(&app, &admin).await.len(), audit_rows + 1);
    assert_eq!(metric(&app, "kms_password_hashing_total").await, hashed + 1.0);
    assert_eq!(limiter_keys(&app, "login_username").await, user_keys + 1.0);
    assert_eq!(limiter_keys(&app, "login_address").await, address_keys + 1.0);
    app.stop().await;
}

#[actix_web::test]
async fn registrations_are_limited_per_address_and_for_the_instance_before_any_hashing() {
    let app = TestApp::spawn_with(
        Backend::Sqlite,
        |c| {
            c.set_role_setting("kms", "registrations_per_address_per_hour", 2);
            c.set_role_setting("kms", "registrations_per_minute", 3);
        },
        None,
    )
    .await;
    let admin = app.admin_token().await;
    let kms = &app;
    let register = |client: &'static str, name: &'static str| {
        let body = json!({"username": name, "password": PASSWORD});
        async move { post_from(kms, "/register", client, &body).await }
    };
    for name in ["spam1", "spam2"] {
        let (status, _, body) = register("203.0.113.5", name).await;
        assert_eq!(status, 201, "{body}");
    }
    let hashed = metric(&app, "kms_password_hashing_total").await;
    let (status, retry_after, body) = register("203.0.113.5", "spam3").await;
    assert_limited(status, retry_after, &body);
    assert_eq!(metric(&app, "kms_password_hashing_total").await, hashed, "refused before bcrypt");

    // Another address still registers, until the instance's allowance is spent.
    let (status, _, body) = register("203.0.113.6", "fresh1").await;
    assert_eq!(status, 201, "{body}");
    let (status, retry_after, body) = register("203.0.113.7", "fresh2").await;
    assert_limited(status, retry_after, &body);
    let metrics = app.metrics("kms").await;
    assert!(metrics.contains(r#"kms_requests_limited_total{limit="registration_address"} 1"#), "{metrics}");
    assert!(metrics.contains(r#"kms_requests_limited_total{limit="registration_global"} 1"#), "{metrics}");

    // The refused names were not created; an admin's registrations are not counted.
    for name in ["spam3", "fresh2"] {
        let (status, _) = app.call("GET", "kms", &format!("/users/{name}"), Some(&admin), None).await;
        assert_eq!(status, 404, "{name}");
    }
    let (status, body) = app
        .call(
            "POST",
            "kms",
            "/register",
            Some(&admin),
            Some(json!({"username": "staff1", "password": PASSWORD})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    app.stop().await;
}

#[actix_web::test]
async fn key_verification_is_limited_per_client_but_not_the_gateways_own_key_checks() {
    let app = TestApp::spawn_with(
        Backend::Sqlite,
        |c| {
            c.set_role_setting("kms", "verifications_per_address_per_minute", 1);
            c.set_role_setting("kms", "verification_burst", 3);
        },
        None,
    )
    .await;
    let admin = app.admin_token().await;
    let key = app.kms().create_key(&admin, "svc").await.ok().api_key;

    // A client sweeping keys gets its burst, then 429 — even for a valid key.
    let kms = &app;
    let verify = |client: &'static str, key: String| {
        let body = json!({"api_key": key});
        async move { post_from(kms, "/keys/verify", client, &body).await }
    };
    for n in 0..3 {
        let (status, _, verdict) = verify("198.51.100.7", format!("fk_guess_{n}")).await;
        assert_eq!((status, verdict["code"].as_str()), (200, Some("NOT_FOUND")), "{verdict}");
    }
    let (status, retry_after, body) = verify("198.51.100.7", key.clone()).await;
    assert_limited(status, retry_after, &body);
    // Other clients are not affected.
    let (status, _, verdict) = verify("198.51.100.8", key.clone()).await;
    assert_eq!((status, verdict["code"].as_str()), (200, Some("VALID")), "{verdict}");

    // The gateway asks kms about every X-API-KEY it has not seen, from its own address. Clients
    // spraying keys at it (each within its failure budget there) must not use up a budget that
    // would then refuse the gateway's checks for everyone: each sprayed key gets a verdict (401,
    // not a verifier outage), and a real key still passes.
    for n in 0..8 {
        let response = app
            .client
            .get(app.url("gateway", "/kms/keys/svc"))
            .insert_header(("x-api-key", format!("fk_spray_{n}")))
            .insert_header(("x-forwarded-for", format!("192.0.2.{n}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 401, "spray {n}");
    }
    let response = app
        .client
        .get(app.url("gateway", "/kms/keys/svc"))
        .insert_header(("x-api-key", key.as_str()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200, "the gateway's key check was refused");
    app.stop().await;
}

#[actix_web::test]
async fn failed_client_credentials_spend_the_same_address_budget_as_failed_logins() {
    let app = TestApp::spawn_with(
        Backend::Sqlite,
        |c| c.set_role_setting("kms", "login_failures_per_address", 3),
        None,
    )
    .await;
    let admin = app.admin_token().await;
    let key = app.kms().create_key(&admin, "svc").await.ok().api_key;
    let grant = |secret: &str| json!({"grant_type": "client_credentials", "client_secret": secret});
    let attacker = "198.51.100.30";
    for guess in ["fk_guess_1", "fk_guess_2"] {
        let (status, _, body) = post_from(&app, "/token", attacker, &grant(guess)).await;
        assert_eq!(status, 401, "{body}");
    }
    let (status, _, body) = post_from(&app, "/login", attacker, &login_body("root", "wrong password!")).await;
    assert_eq!(status, 401, "{body}");
    // Three failures of either kind spend the address's budget: the next key guess waits, even
    // with the right key, and so does a login with the right password.
    let (status, retry_after, body) = post_from(&app, "/token", attacker, &grant(&key)).await;
    assert_limited(status, retry_after, &body);
    let (status, retry_after, body) =
        post_from(&app, "/login", attacker, &login_body("root", PASSWORD)).await;
    assert_limited(status, retry_after, &body);
    // Another address is unaffected.
    let (status, _, body) = post_from(&app, "/token", "198.51.100.31", &grant(&key)).await;
    assert_eq!(status, 200, "{body}");
    app.stop().await;
}

async fn failed_logins_of_unknown_usernames_are_audited_by_a_keyed_tag_never_the_text(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_token().await;
    // A password typed into the username field has the shape of a username.
    let typed = "Tr0ub4dor.and.3";
    for client in ["198.51.100.40", "198.51.100.41"] {
        let (status, _, body) =
            post_from(&app, "/login", client, &login_body(typed, "wrong password!")).await;
        assert_eq!(status, 401, "{body}");
    }
    let (status, _, _) =
        post_from(&app, "/login", "198.51.100.42", &login_body("root", "wrong password!")).await;
    assert_eq!(status, 401);
    let (status, _, _) =
        post_from(&app, "/login", "198.51.100.43", &login_body("another.name", "wrong password!")).await;
    assert_eq!(status, 401);

    let entries = audit(&app, &admin).await;
    let text = Value::Array(entries.clone()).to_string().to_lowercase();
    assert!(!text.contains("tr0ub4dor"), "the typed text reached the audit trail");
    assert!(!text.contains("another.name"));
    let denied: Vec<(String, String)> = entries
        .iter()
        .rev()
        .filter(|e| e["action"] == "login" && e["outcome"] == "denied")
        .map(|e| (e["actor"].as_str().unwrap().to_string(), e["target"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(denied.len(), 4, "{denied:?}");
    let is_tag = |name: &str| {
        name.strip_prefix("unknown:").is_some_and(|hex| {
            hex.len() == 12 && hex.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        })
    };
    for (i, (actor, target)) in denied.iter().enumerate() {
        assert_eq!(actor, target, "{denied:?}");
        assert_eq!(is_tag(target), i != 2, "{denied:?}");
    }
    assert_eq!(denied[0], denied[1], "the same name gets the same tag");
    assert_ne!(denied[0], denied[3], "another name gets another tag");
    assert_eq!(denied[2].1, "root", "an existing account's failures keep its name");
    app.stop().await;
}
on_both_backends!(failed_logins_of_unknown_usernames_are_audited_by_a_keyed_tag_never_the_text);

#[actix_web::test]
async fn api_key_expiry_must_lie_ahead_and_within_ten_years() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let admin = app.admin_token().await;
    let now = chrono::Utc::now();
    let eleven_years = (now + chrono::Duration::days(11 * 366)).to_rfc3339();
    let yesterday = (now - chrono::Duration::days(1)).to_rfc3339();
    for (service, expires_at) in [
        ("far", "+99999-01-01T00:00:00Z"),
        ("eleven", eleven_years.as_str()),
        ("past", "2000-01-01T00:00:00Z"),
        ("yesterday", yesterday.as_str()),
    ] {
        let body = json!({"service_name": service, "expires_at": expires_at});
        let (status, refused) = app.call("POST", "kms", "/keys", Some(&admin), Some(body)).await;
        assert_invalid(status, &refused, "expires_at");
        let (status, _) = app.call("GET", "kms", &format!("/keys/{service}"), Some(&admin), None).await;
        assert_eq!(status, 404, "{service}: no key was stored");
    }
    let next_year = (now + chrono::Duration::days(365)).to_rfc3339();
    let body = json!({"service_name": "svc", "expires_at": next_year});
    let (status, created) = app.call("POST", "kms", "/keys", Some(&admin), Some(body)).await;
    assert_eq!(status, 201, "{created}");
    app.stop().await;
}

#[actix_web::test]
async fn passwords_with_control_characters_or_past_72_bytes_are_refused_before_hashing() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let admin = app.admin_token().await;
    let hashed = metric(&app, "kms_password_hashing_total").await;
    for (n, password) in [
        "correct horse\u{0}battery",
        "correct\thorse battery",
        "correct horse battery\u{7f}",
        "correct horse\u{85}battery",
    ]
    .into_iter()
    .enumerate()
    {
        let body = json!({"username": format!("ctl{n}"), "password": password});
        let (status, _, refused) = post_from(&app, "/register", &format!("198.51.100.{n}"), &body).await;
        assert_invalid(status, &refused, "password");
        let (status, _, refused) =
            post_from(&app, "/login", "198.51.100.20", &login_body("root", password)).await;
        assert_invalid(status, &refused, "password");
    }
    // NUL ends the password for other bcrypt implementations: the stored one's prefix must not
    // be enough, here or after a migration.
    let (status, _, refused) =
        post_from(&app, "/login", "198.51.100.21", &login_body("root", &format!("{PASSWORD}\u{0}suffix")))
            .await;
    assert_invalid(status, &refused, "password");
    // bcrypt reads 72 bytes: a longer password could only match by truncation.
    let seventy_two = "p".repeat(72);
    let (status, body) = app
        .call("POST", "kms", "/register", None, Some(json!({"username": "longpw", "password": seventy_two})))
        .await;
    assert_eq!(status, 201, "{body}");
    let hashed = hashed + 1.0;
    let (status, _, refused) =
        post_from(&app, "/login", "198.51.100.22", &login_body("longpw", &format!("{seventy_two}and more")))
            .await;
    assert_invalid(status, &refused, "password");
    assert_eq!(metric(&app, "kms_password_hashing_total").await, hashed, "no bcrypt for any of them");
    let (status, _) = app.call("GET", "kms", "/users/ctl0", Some(&admin), None).await;
    assert_eq!(status, 404);
    app.stop().await;
}

#[test]
fn admin_create_user_refuses_control_characters_in_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let file = dir.path().join("pw");
    std::fs::write(&file, "correct horse\u{0}battery\n").unwrap();
    let output = fountain_command(&data)
        .args(["admin", "create-user", "--init", "--username", "ops", "--role", "admin", "--password-file"])
        .arg(&file)
        .env("FOUNTAIN_ROLES__KMS__BCRYPT_COST", "4")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("password") && stderr.contains("control characters"), "{stderr}");

    std::fs::write(&file, "correct horse battery\n").unwrap();
    let output = fountain_command(&data)
        .args(["admin", "create-user", "--init", "--username", "ops", "--role", "admin", "--password-file"])
        .arg(&file)
        .env("FOUNTAIN_ROLES__KMS__BCRYPT_COST", "4")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
}
