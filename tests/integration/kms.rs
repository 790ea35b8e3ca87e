//! kms over real HTTP: users, sessions, tokens, API keys and their security requirements,
//! on SQLite and PostgreSQL.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};

use crate::helpers::{assert_error_shape, assert_not_at_rest, Backend, TestApp, PASSWORD};
use crate::on_both_backends;

async fn admin_token(app: &TestApp) -> String {
    app.admin_token().await
}

async fn login(app: &TestApp, username: &str, password: &str) -> Value {
    let (status, body) = app
        .call("POST", "kms", "/login", None, Some(json!({"username": username, "password": password})))
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

async fn register(app: &TestApp, token: Option<&str>, username: &str, roles: Option<Value>) -> (u16, Value) {
    let mut body = json!({"username": username, "password": PASSWORD});
    if let Some(roles) = roles {
        body["roles"] = roles;
    }
    app.call("POST", "kms", "/register", token, Some(body)).await
}

fn unauthorized(status: u16, body: &Value) {
    assert_eq!(status, 401, "{body}");
    assert_eq!(assert_error_shape(body), "unauthorized");
}

async fn registration_login_and_exact_roles(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = admin_token(&app).await;

    let (status, body) = register(&app, None, "Alice", Some(json!(["admin"]))).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["roles"], json!(["user"]), "anonymous callers cannot grant themselves roles");
    assert_eq!(body["username"], "alice");
    let (status, body) = register(&app, None, "alice", None).await;
    assert_eq!((status, assert_error_shape(&body).as_str()), (409, "already_exists"));

    for (username, password, field) in [
        ("bob", "short", "password"),
        ("bob", &"x".repeat(73)[..], "password"),
        ("b", PASSWORD, "username"),
        ("аdmin", PASSWORD, "username"), // Cyrillic а
        ("bob smith", PASSWORD, "username"),
        ("bob\u{200b}", PASSWORD, "username"),
    ] {
        let (status, body) = app
            .call("POST", "kms", "/register", None, Some(json!({"username": username, "password": password})))
            .await;
        assert_eq!(status, 422, "{username:?}: {body}");
        assert_eq!(body["details"]["field"], field);
        assert!(!body.to_string().contains(password), "the password is never echoed");
    }
    let (status, _) =
        app.call("POST", "kms", "/register", None, Some(json!({"username": 5, "password": []}))).await;
    assert_eq!(status, 422);

    let (status, body) =
        register(&app, Some(&admin), "mallory", Some(json!(["superadmin", "admin2", "user"]))).await;
    assert_eq!(status, 201, "{body}");
    let near_admin = login(&app, "mallory", PASSWORD).await;
    let token = near_admin["access_token"].as_str().unwrap();
    assert_eq!(near_admin["token_type"], "bearer");
    assert!(near_admin["refresh_token"].as_str().unwrap().starts_with("frt_"));
    let (status, body) = app.call("GET", "kms", "/users", Some(token), None).await;
    assert_eq!(
        (status, assert_error_shape(&body).as_str()),
        (403, "forbidden"),
        "superadmin/admin2 are not admin"
    );

    let (status, body) = app.call("GET", "kms", "/users", Some(&admin), None).await;
    assert_eq!(status, 200);
    let names: Vec<&str> =
        body["users"].as_array().unwrap().iter().map(|u| u["username"].as_str().unwrap()).collect();
    assert_eq!(names, ["root", "alice", "mallory"]);
    for bad in
        ["/users?limit=0", "/users?limit=201", "/users?limit=x", "/users?after=nope", "/audit?limit=501"]
    {
        let (status, body) = app.call("GET", "kms", bad, Some(&admin), None).await;
        assert_eq!((status, assert_error_shape(&body).as_str()), (400, "bad_request"), "{bad}");
    }
    let (status, page) = app.call("GET", "kms", "/users?limit=2", Some(&admin), None).await;
    assert_eq!((status, page["users"].as_array().unwrap().len()), (200, 2));
    let (status, rest) = app
        .call(
            "GET",
            "kms",
            &format!("/users?limit=2&after={}", page["next"].as_str().unwrap()),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!((status, rest["users"][0]["username"].as_str()), (200, Some("mallory")));
    let (status, body) = app.call("GET", "kms", "/users/mallory", Some(&admin), None).await;
    assert_eq!((status, body["roles"].clone()), (200, json!(["superadmin", "admin2", "user"])));

    // Wrong password and unknown user: the same answer.
    let (s1, wrong) = app
        .call(
            "POST",
            "kms",
            "/login",
            None,
            Some(json!({"username": "alice", "password": "wrong password!"})),
        )
        .await;
    let (s2, unknown) = app
        .call(
            "POST",
            "kms",
            "/login",
            None,
            Some(json!({"username": "nobody", "password": "wrong password!"})),
        )
        .await;
    assert_eq!((s1, &wrong), (s2, &unknown));
    unauthorized(s1, &wrong);
    app.stop().await;
}
on_both_backends!(registration_login_and_exact_roles);

/// Builds a token with the given header and claims, signed (or not) as given.
#[actix_web::test]
async fn forged_and_revoked_tokens_get_the_same_401() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let admin = admin_token(&app).await;
    let forged = crate::helpers::forged_tokens(&app, &admin).await;
    let mut bodies = Vec::new();
    for token in &forged {
        let (status, body) = app.call("GET", "kms", "/users", Some(token), None).await;
        unauthorized(status, &body);
        bodies.push(body);
    }
    assert!(bodies.windows(2).all(|w| w[0] == w[1]), "one uniform answer: {bodies:?}");

    // A real token works until logout revokes it.
    let (status, _) = app.call("GET", "kms", "/users", Some(&admin), None).await;
    assert_eq!(status, 200);
    let (status, _) = app.call("POST", "kms", "/logout", Some(&admin), None).await;
    assert_eq!(status, 204);
    let (status, body) = app.call("GET", "kms", "/users", Some(&admin), None).await;
    unauthorized(status, &body);
    assert_eq!(body, bodies[0]);
    app.stop().await;
}

async fn refresh_tokens_rotate_and_reuse_revokes_the_session(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = admin_token(&app).await;
    register(&app, None, "carol", None).await;
    let first = login(&app, "carol", PASSWORD).await;
    let refresh1 = first["refresh_token"].as_str().unwrap().to_string();

    let form = |token: &str| format!("grant_type=refresh_token&refresh_token={token}");
    let post_form = |body: String| {
        app.client
            .post(app.url("kms", "/token"))
            .insert_header(("content-type", "application/x-www-form-urlencoded"))
            .send_body(body)
    };
    let mut response = post_form(form(&refresh1)).await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let second: Value = response.json().await.unwrap();
    let refresh2 = second["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(refresh1, refresh2);
    let (status, _) =
        app.call("POST", "kms", "/logout", Some(second["access_token"].as_str().unwrap()), None).await;
    assert_eq!(status, 204, "the refreshed access token is valid");

    // A fresh session: reuse of a spent refresh token ends the whole family.
    let refresh = |token: &str| {
        let body = json!({"grant_type": "refresh_token", "refresh_token": token});
        app.call("POST", "kms", "/token", None, Some(body))
    };
    let session = login(&app, "carol", PASSWORD).await;
    let r1 = session["refresh_token"].as_str().unwrap().to_string();
    let (status, rotated) = refresh(&r1).await;
    assert_eq!(status, 200, "JSON bodies work too: {rotated}");
    let r2 = rotated["refresh_token"].as_str().unwrap().to_string();
    let (status, body) = refresh(&r1).await;
    unauthorized(status, &body);
    let (status, _) = refresh(&r2).await;
    assert_eq!(status, 401, "the newer token of a reused family is revoked too");

    // Disabling a user ends their sessions and their tokens.
    let session = login(&app, "carol", PASSWORD).await;
    let (status, body) =
        app.call("PATCH", "kms", "/users/carol", Some(&admin), Some(json!({"disabled": true}))).await;
    assert_eq!((status, body["disabled"].as_bool()), (200, Some(true)));
    let (status, _) = app
        .call(
            "POST",
            "kms",
            "/token",
            None,
            Some(json!({"grant_type": "refresh_token", "refresh_token": session["refresh_token"]})),
        )
        .await;
    assert_eq!(status, 401);
    let (status, _) =
        app.call("POST", "kms", "/logout", Some(session["access_token"].as_str().unwrap()), None).await;
    assert_eq!(status, 401, "a disabled user's access token is refused");
    let (status, _) = app
        .call("POST", "kms", "/login", None, Some(json!({"username": "carol", "password": PASSWORD})))
        .await;
    assert_eq!(status, 401);

    // Bad grants.
    // An unknown grant type is a bad request; a known grant missing its field fails validation.
    let grants = [
        (json!({"grant_type": "password"}), 400, "bad_request"),
        (json!({"grant_type": "refresh_token"}), 422, "validation_failed"),
        (json!({"grant_type": "client_credentials"}), 422, "validation_failed"),
        (json!({}), 422, "validation_failed"),
    ];
    for (grant, expected_status, expected_code) in grants {
        let (status, body) = app.call("POST", "kms", "/token", None, Some(grant.clone())).await;
        assert_eq!((status, assert_error_shape(&body).as_str()), (expected_status, expected_code), "{grant}");
    }
    // The last admin cannot be demoted or deleted.
    let (status, body) =
        app.call("PATCH", "kms", "/users/root", Some(&admin), Some(json!({"roles": ["user"]}))).await;
    assert_eq!((status, assert_error_shape(&body).as_str()), (409, "last_admin"));
    let (status, body) = app.call("DELETE", "kms", "/users/root", Some(&admin), None).await;
    assert_eq!((status, assert_error_shape(&body).as_str()), (409, "last_admin"));
    let (status, _) = app.call("DELETE", "kms", "/users/carol", Some(&admin), None).await;
    assert_eq!(status, 204);
    let (status, _) = app.call("GET", "kms", "/users/carol", Some(&admin), None).await;
    assert_eq!(status, 404);
    app.stop().await;
}
on_both_backends!(refresh_tokens_rotate_and_reuse_revokes_the_session);

async fn api_keys_lifecycle_and_nothing_in_plaintext_at_rest(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = admin_token(&app).await;
    let (status, created) =
        app.call("POST", "kms", "/keys", Some(&admin), Some(json!({"service_name": "service_a"}))).await;
    assert_eq!(status, 201, "{created}");
    let key = created["api_key"].as_str().unwrap().to_string();
    assert!(key.starts_with("fk_") && URL_SAFE_NO_PAD.decode(&key[3..]).unwrap().len() == 32, "256-bit key");
    let (status, _) =
        app.call("POST", "kms", "/keys", Some(&admin), Some(json!({"service_name": "service_a"}))).await;
    assert_eq!(status, 409);
    for bad in [
        json!({"service_name": "Service A"}),
        json!({"service_name": "x", "api_key": "short"}),
        json!({"service_name": ""}),
    ] {
        let (status, _) = app.call("POST", "kms", "/keys", Some(&admin), Some(bad)).await;
        assert_eq!(status, 422);
    }
    let (status, _) = app.call("POST", "kms", "/keys", None, Some(json!({"service_name": "b"}))).await;
    assert_eq!(status, 401);

    let verify = |k: String| app.call("POST", "kms", "/keys/verify", None, Some(json!({"api_key": k})));
    let (status, verdict) = verify(key.clone()).await;
    assert_eq!(
        (status, verdict["valid"].as_bool(), verdict["code"].as_str()),
        (200, Some(true), Some("VALID"))
    );
    assert_eq!(verdict["service_name"], "service_a");
    assert_eq!(verify("fk_unknown".into()).await.1["code"], "NOT_FOUND");

    // The service exchanges its key for a service token and may read its own key only.
    let (status, service) = app
        .call(
            "POST",
            "kms",
            "/token",
            None,
            Some(json!({"grant_type": "client_credentials", "client_secret": key})),
        )
        .await;
    assert_eq!(status, 200, "{service}");
    let service_token = service["access_token"].as_str().unwrap();
    assert!(service.get("refresh_token").is_none());
    let (status, own) = app.call("GET", "kms", "/keys/service_a", Some(service_token), None).await;
    assert_eq!((status, own["api_key"].as_str()), (200, Some(key.as_str())));
    app.call("POST", "kms", "/keys", Some(&admin), Some(json!({"service_name": "other"}))).await;
    let (status, _) = app.call("GET", "kms", "/keys/other", Some(service_token), None).await;
    assert_eq!(status, 403);
    let (status, _) = app.call("GET", "kms", "/users", Some(service_token), None).await;
    assert_eq!(status, 403);
    let (status, _) = app
        .call(
            "POST",
            "kms",
            "/token",
            None,
            Some(json!({"grant_type": "client_credentials", "client_secret": "fk_nope"})),
        )
        .await;
    assert_eq!(status, 401);

    let (status, list) = app.call("GET", "kms", "/keys", Some(&admin), None).await;
    assert_eq!(status, 200);
    // Besides the service credentials this all-in-one process provisioned for its own roles.
    let created: Vec<&str> = list["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|k| k["service_name"].as_str())
        .filter(|name| fountain::roles::find(name).is_none())
        .collect();
    assert_eq!(created.len(), 2, "{list}");
    assert!(!list.to_string().contains(&key[7..]), "listing never shows keys");

    // Rotation with grace: both keys verify; without grace the old one is expired at once.
    let (status, rotated) = app
        .call("POST", "kms", "/keys/service_a/rotate", Some(&admin), Some(json!({"grace_seconds": 60})))
        .await;
    assert_eq!(status, 200, "{rotated}");
    let key2 = rotated["api_key"].as_str().unwrap().to_string();
    assert_eq!(verify(key.clone()).await.1["code"], "VALID");
    assert_eq!(verify(key2.clone()).await.1["code"], "VALID");
    let (status, body) =
        app.call("PATCH", "kms", "/keys/service_a", Some(&admin), Some(json!({"disabled": true}))).await;
    assert_eq!((status, body["disabled"].as_bool()), (200, Some(true)));
    let (_, verdict) = verify(key2.clone()).await;
    assert_eq!((verdict["code"].as_str(), verdict["valid"].as_bool()), (Some("DISABLED"), Some(false)));
    app.call("PATCH", "kms", "/keys/service_a", Some(&admin), Some(json!({"disabled": false}))).await;
    assert_eq!(verify(key2.clone()).await.1["code"], "VALID");
    let (status, _) =
        app.call("PATCH", "kms", "/keys/nobody", Some(&admin), Some(json!({"disabled": true}))).await;
    assert_eq!(status, 404);
    let (status, rotated) = app
        .call("POST", "kms", "/keys/service_a/rotate", Some(&admin), Some(json!({"grace_seconds": 0})))
        .await;
    assert_eq!(status, 200);
    let key3 = rotated["api_key"].as_str().unwrap().to_string();
    assert_eq!(verify(key2.clone()).await.1["code"], "EXPIRED");
    let (status, _) = app
        .call("POST", "kms", "/keys/service_a/rotate", Some(&admin), Some(json!({"grace_seconds": -1})))
        .await;
    assert_eq!(status, 422);
    let (status, _) = app.call("DELETE", "kms", "/keys/service_a", Some(&admin), None).await;
    assert_eq!(status, 204);
    assert_eq!(verify(key3.clone()).await.1["code"], "REVOKED");
    assert_eq!(verify(key.clone()).await.1["code"], "REVOKED");
    let (status, _) = app.call("DELETE", "kms", "/keys/service_a", Some(&admin), None).await;
    assert_eq!(status, 404);

    // Audit: every mutation recorded, no secret in it.
    let (status, audit) = app.call("GET", "kms", "/audit?limit=500", Some(&admin), None).await;
    assert_eq!(status, 200);
    let actions: Vec<&str> =
        audit["entries"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    for action in ["users.create", "login", "keys.create", "keys.rotate", "keys.revoke", "keys.disable"] {
        assert!(actions.contains(&action), "{action} missing from {actions:?}");
    }
    let audit_text = audit.to_string();
    for secret in [key.as_str(), key2.as_str(), key3.as_str(), PASSWORD] {
        assert!(!audit_text.contains(secret));
    }

    // Every mutation published its event durably, in its own transaction; no secret in them.
    let events = app
        .platform
        .db
        .run(|conn| fountain::platform::events::read_after(conn, 0, None, 1000))
        .await
        .unwrap();
    let topics: Vec<&str> = events.iter().map(|e| e.topic.as_str()).collect();
    for topic in ["users.changed", "keys.created", "keys.rotated", "keys.changed", "keys.revoked"] {
        assert!(topics.contains(&topic), "{topic} missing from {topics:?}");
    }
    assert!(events.iter().all(|e| e.source == "kms"));
    for event in &events {
        for secret in [key.as_str(), key2.as_str(), key3.as_str(), PASSWORD] {
            assert!(!event.payload.contains(secret), "{secret} in event {}", event.topic);
        }
    }

    // Nothing secret at rest: not in the SQLite file (and its WAL), not in any PostgreSQL row.
    let tables = ["api_keys", "users", "audit_log", "refresh_tokens", "signing_keys", "events"];
    assert_not_at_rest(&app, &tables, &[key.as_str(), key2.as_str(), key3.as_str(), PASSWORD]);
    app.stop().await;
}
on_both_backends!(api_keys_lifecycle_and_nothing_in_plaintext_at_rest);

#[actix_web::test]
async fn signing_key_rotation_keeps_old_tokens_valid_and_publishes_both_keys() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let admin = admin_token(&app).await;
    let old_kid = jsonwebtoken::decode_header(&admin).unwrap().kid.unwrap();
    let (status, rotated) = app.call("POST", "kms", "/signing-keys/rotate", Some(&admin), None).await;
    assert_eq!(status, 200);
    let new_kid = rotated["kid"].as_str().unwrap();
    assert_ne!(new_kid, old_kid);
    let (_, jwks) = app.call("GET", "kms", "/.well-known/jwks.json", None, None).await;
    let kids: Vec<&str> =
        jwks["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap()).collect();
    assert!(kids.contains(&old_kid.as_str()) && kids.contains(&new_kid), "{kids:?}");
    let (status, _) = app.call("GET", "kms", "/users", Some(&admin), None).await;
    assert_eq!(status, 200, "tokens signed by the previous key still verify");
    let fresh = login(&app, "root", PASSWORD).await;
    let fresh_kid =
        jsonwebtoken::decode_header(fresh["access_token"].as_str().unwrap()).unwrap().kid.unwrap();
    assert_eq!(fresh_kid, new_kid);
    let user = {
        register(&app, None, "dave", None).await;
        login(&app, "dave", PASSWORD).await["access_token"].as_str().unwrap().to_string()
    };
    let (status, _) = app.call("POST", "kms", "/signing-keys/rotate", Some(&user), None).await;
    assert_eq!(status, 403);
    app.stop().await;
}

#[actix_web::test]
async fn an_independent_jose_library_verifies_tokens_against_the_jwks() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let admin = admin_token(&app).await;
    let (_, jwks) = app.call("GET", "kms", "/.well-known/jwks.json", None, None).await;
    let script = r#"
import json, sys, jwt
token, jwks = sys.argv[1], json.loads(sys.argv[2])
kid = jwt.get_unverified_header(token)["kid"]
key = next(k for k in jwt.PyJWKSet.from_dict(jwks).keys if k.key_id == kid)
claims = jwt.decode(token, key.key, algorithms=["EdDSA"], audience="fountain", issuer="fountain-kms")
print(json.dumps(claims))
"#;
    let output = std::process::Command::new("python3")
        .args(["-c", script, &admin, &jwks.to_string()])
        .output()
        .expect("python3 with PyJWT (see .ci/run)");
    assert!(output.status.success(), "PyJWT rejected the token: {}", String::from_utf8_lossy(&output.stderr));
    let claims: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(claims["sub"], "root");
    assert_eq!(claims["roles"], json!(["admin"]));
    for claim in ["exp", "iat", "nbf", "jti"] {
        assert!(claims.get(claim).is_some(), "{claim}");
    }
    app.stop().await;
}

#[actix_web::test]
async fn repeated_login_failures_are_limited_per_username_and_per_address() {
    let app = TestApp::spawn_with(
        Backend::Sqlite,
        |c| {
            c.set_role_setting("kms", "login_failures_per_username", 3);
            c.set_role_setting("kms", "login_failures_per_address", 6);
        },
        None,
    )
    .await;
    register(&app, None, "erin", None).await;
    let attempt = |user: &'static str, password: &'static str, from: &'static str| {
        app.client
            .post(app.url("kms", "/login"))
            .insert_header(("x-forwarded-for", from))
            .send_json(&json!({"username": user, "password": password}))
    };
    for _ in 0..3 {
        assert_eq!(attempt("erin", "wrong password!", "10.0.0.1").await.unwrap().status().as_u16(), 401);
    }
    let limited = attempt("erin", PASSWORD, "10.0.0.1").await.unwrap();
    assert_eq!(limited.status().as_u16(), 429, "even the right password waits");
    let retry_after: u64 = limited.headers().get("retry-after").unwrap().to_str().unwrap().parse().unwrap();
    assert!(retry_after >= 1);
    // Another user from another address is unaffected; one address trying many users is not.
    assert_eq!(attempt("erin2", "wrong password!", "10.0.0.2").await.unwrap().status().as_u16(), 401);
    for user in ["u1", "u2", "u3", "u4", "u5"] {
        let _ = attempt(user, "wrong password!", "10.0.0.3").await;
    }
    let _ = attempt("u6", "wrong password!", "10.0.0.3").await;
    assert_eq!(attempt("u7", "wrong password!", "10.0.0.3").await.unwrap().status().as_u16(), 429);
    let (_, _, metrics) = app.get("kms", "/metrics").await;
    let metrics = String::from_utf8_lossy(&metrics);
    assert!(metrics.contains(r#"kms_logins_total{outcome="failure"}"#), "{metrics}");
    assert!(metrics.contains(r#"kms_logins_total{outcome="limited"}"#));
    app.stop().await;
}

#[test]
fn admin_create_user_reads_the_password_from_a_file_or_stdin_never_argv() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let file = dir.path().join("pw");
    std::fs::write(&file, format!("{PASSWORD}\n")).unwrap();
    let output = crate::helpers::fountain_command(&data)
        .args(["admin", "create-user", "--username", "ops", "--role", "admin", "--password-file"])
        .arg(&file)
        .env("FOUNTAIN_ROLES__KMS__BCRYPT_COST", "4")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8_lossy(&output.stdout).contains("created user ops with roles admin"));

    let mut child = crate::helpers::fountain_command(&data)
        .args(["admin", "create-user", "--username", "ops2"])
        .env("FOUNTAIN_ROLES__KMS__BCRYPT_COST", "4")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"short\n").unwrap();
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("password"));

    let again = crate::helpers::fountain_command(&data)
        .args(["admin", "create-user", "--username", "ops", "--password-file"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
}

#[test]
fn no_log_line_carries_a_password_key_or_token() {
    use crate::helpers::{blocking_request, ServeProcess};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let file = dir.path().join("pw");
    std::fs::write(&file, PASSWORD).unwrap();
    let created = crate::helpers::fountain_command(&data)
        .args(["admin", "create-user", "--username", "ops", "--role", "admin", "--password-file"])
        .arg(&file)
        .env("FOUNTAIN_ROLES__KMS__BCRYPT_COST", "4")
        .output()
        .unwrap();
    assert!(created.status.success());
    let process = ServeProcess::start(
        &data,
        &["kms"],
        &[("FOUNTAIN_ROLES__KMS__BCRYPT_COST", "4"), ("FOUNTAIN_LOG__LEVEL", "debug")],
    );
    let kms = process.addr("kms");
    let post = |path: &str, token: Option<&str>, body: Value| {
        let auth = token.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
        let (status, _, body) = blocking_request(kms, "POST", path, &headers, Some(&body));
        (status, serde_json::from_str::<Value>(&body).unwrap_or(Value::Null))
    };
    let (status, session) = post("/login", None, json!({"username": "ops", "password": PASSWORD}));
    assert_eq!(status, 200);
    let token = session["access_token"].as_str().unwrap().to_string();
    let refresh = session["refresh_token"].as_str().unwrap().to_string();
    let (_, created) = post("/keys", Some(&token), json!({"service_name": "svc"}));
    let key = created["api_key"].as_str().unwrap().to_string();
    post("/keys/verify", None, json!({"api_key": key}));
    post("/login", None, json!({"username": "ops", "password": "wrong-but-long-password"}));
    post("/token", None, json!({"grant_type": "refresh_token", "refresh_token": refresh}));
    post("/token", None, json!({"grant_type": "refresh_token", "refresh_token": refresh}));
    post("/logout", Some(&token), json!({}));
    process.signal("TERM");
    let (code, lines) = process.wait(std::time::Duration::from_secs(30));
    assert_eq!(code, Some(0));
    assert!(lines.len() > 5, "debug logging produced lines: {lines:?}");
    let all = lines.join("\n");
    for secret in [PASSWORD, "wrong-but-long-password", &token, &refresh, &key] {
        assert!(!all.contains(secret), "a secret reached the logs");
    }
}
