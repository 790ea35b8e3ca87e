//! kms over real HTTP: users, sessions, tokens, API keys and their security requirements,
//! on SQLite and PostgreSQL.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use fountain::platform::contracts::{TokenResponse, VerifyCode};
use serde_json::{json, Value};

use crate::on_both_backends;
use crate::support::{
    assert_error_shape, assert_not_at_rest, forged_tokens, Answer, Backend, TestApp, ANONYMOUS, PASSWORD,
};

fn unauthorized<T>(answer: &Answer<T>) {
    assert_eq!(answer.refusal(), (401, "unauthorized"), "{}", answer.body);
}

async fn registration_login_and_exact_roles(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let kms = app.kms();
    let admin = app.admin_token().await;

    let alice = kms.register(ANONYMOUS, "Alice", &["admin"]).await.ok();
    assert_eq!(alice.roles, ["user"], "anonymous callers cannot grant themselves roles");
    assert_eq!(alice.username, "alice");
    assert_eq!(kms.register(ANONYMOUS, "alice", &[]).await.refusal(), (409, "already_exists"));

    // Malformed registrations, sent raw.
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

    kms.register(&admin, "mallory", &["superadmin", "admin2", "user"]).await.ok();
    let near_admin = kms.login("mallory").await;
    assert_eq!(near_admin.token_type, "bearer");
    assert!(near_admin.refresh_token.as_deref().is_some_and(|t| t.starts_with("frt_")));
    assert_eq!(
        kms.users(&near_admin.access_token).await.refusal(),
        (403, "forbidden"),
        "superadmin/admin2 are not admin"
    );

    let names: Vec<String> = kms.users(&admin).await.ok().users.into_iter().map(|u| u.username).collect();
    assert_eq!(names, ["root", "alice", "mallory"]);
    // Malformed paging parameters, sent raw.
    for bad in
        ["/users?limit=0", "/users?limit=201", "/users?limit=x", "/users?after=nope", "/audit?limit=501"]
    {
        let (status, body) = app.call("GET", "kms", bad, Some(&admin), None).await;
        assert_eq!((status, assert_error_shape(&body).as_str()), (400, "bad_request"), "{bad}");
    }
    let page = kms.users_page(&admin, 2, None).await.ok();
    assert_eq!(page.users.len(), 2);
    let after = page.next.as_deref().expect("a cursor to the next page");
    let rest = kms.users_page(&admin, 2, Some(after)).await.ok();
    assert_eq!(rest.users[0].username, "mallory");
    assert_eq!(kms.user(&admin, "mallory").await.ok().roles, ["superadmin", "admin2", "user"]);

    // Wrong password and unknown user: the same answer.
    let wrong = kms.login_with("alice", "wrong password!").await;
    let unknown = kms.login_with("nobody", "wrong password!").await;
    assert_eq!((wrong.status, &wrong.body), (unknown.status, &unknown.body));
    unauthorized(&wrong);
    app.stop().await;
}
on_both_backends!(registration_login_and_exact_roles);

/// Forged tokens (sent raw: they are the attack) and a revoked one get the same 401.
#[actix_web::test]
async fn forged_and_revoked_tokens_get_the_same_401() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let kms = app.kms();
    let admin = app.admin_token().await;
    let forged = forged_tokens(&app, &admin).await;
    let mut bodies = Vec::new();
    for token in &forged {
        let (status, body) = app.call("GET", "kms", "/users", Some(token), None).await;
        assert_eq!((status, assert_error_shape(&body).as_str()), (401, "unauthorized"));
        bodies.push(body);
    }
    assert!(bodies.windows(2).all(|w| w[0] == w[1]), "one uniform answer: {bodies:?}");

    // A real token works until logout revokes it.
    kms.users(&admin).await.ok();
    kms.logout(&admin).await.ok();
    let after_logout = kms.users(&admin).await;
    unauthorized(&after_logout);
    assert_eq!(after_logout.body, bodies[0]);
    app.stop().await;
}

async fn refresh_tokens_rotate_and_reuse_revokes_the_session(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let kms = app.kms();
    let admin = app.admin_token().await;
    kms.register(ANONYMOUS, "carol", &[]).await.ok();
    let refresh1 = kms.login("carol").await.refresh_token.expect("a refresh token");

    // The form-encoded grant (the OAuth 2 default), sent as such.
    let form = |token: &str| format!("grant_type=refresh_token&refresh_token={token}");
    let post_form = |body: String| {
        app.client
            .post(app.url("kms", "/token"))
            .insert_header(("content-type", "application/x-www-form-urlencoded"))
            .send_body(body)
    };
    let mut response = post_form(form(&refresh1)).await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let second: TokenResponse = response.json().await.unwrap();
    let refresh2 = second.refresh_token.expect("a new refresh token");
    assert_ne!(refresh1, refresh2);
    assert_eq!(kms.logout(&second.access_token).await.status, 204, "the refreshed access token is valid");

    // A fresh session: reuse of a spent refresh token ends the whole family.
    let r1 = kms.login("carol").await.refresh_token.expect("a refresh token");
    let rotated = kms.refresh(&r1).await;
    assert_eq!(rotated.status, 200, "JSON bodies work too: {}", rotated.body);
    let r2 = rotated.ok().refresh_token.expect("a new refresh token");
    unauthorized(&kms.refresh(&r1).await);
    assert_eq!(kms.refresh(&r2).await.status, 401, "the newer token of a reused family is revoked too");

    // Disabling a user ends their sessions and their tokens.
    let session = kms.login("carol").await;
    assert!(kms.set_disabled(&admin, "carol", true).await.ok().disabled);
    assert_eq!(kms.refresh(session.refresh_token.as_deref().unwrap()).await.status, 401);
    assert_eq!(
        kms.logout(&session.access_token).await.status,
        401,
        "a disabled user's access token is refused"
    );
    assert_eq!(kms.login_with("carol", PASSWORD).await.status, 401);

    // Bad grants, sent raw.
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
    assert_eq!(kms.set_roles(&admin, "root", &["user"]).await.refusal(), (409, "last_admin"));
    assert_eq!(kms.delete_user(&admin, "root").await.refusal(), (409, "last_admin"));
    kms.delete_user(&admin, "carol").await.ok();
    assert_eq!(kms.user(&admin, "carol").await.status, 404);
    app.stop().await;
}
on_both_backends!(refresh_tokens_rotate_and_reuse_revokes_the_session);

async fn api_keys_lifecycle_and_nothing_in_plaintext_at_rest(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let kms = app.kms();
    let admin = app.admin_token().await;
    let key = kms.create_key(&admin, "service_a").await.ok().api_key;
    assert!(key.starts_with("fk_") && URL_SAFE_NO_PAD.decode(&key[3..]).unwrap().len() == 32, "256-bit key");
    assert_eq!(kms.create_key(&admin, "service_a").await.status, 409);
    // Malformed key requests, sent raw.
    for bad in [
        json!({"service_name": "Service A"}),
        json!({"service_name": "x", "api_key": "short"}),
        json!({"service_name": ""}),
    ] {
        let (status, _) = app.call("POST", "kms", "/keys", Some(&admin), Some(bad)).await;
        assert_eq!(status, 422);
    }
    assert_eq!(kms.create_key(ANONYMOUS, "b").await.status, 401);

    let verdict = kms.verify_key(&key).await;
    assert_eq!((verdict.valid, verdict.code), (true, VerifyCode::Valid));
    assert_eq!(verdict.service_name.as_deref(), Some("service_a"));
    assert_eq!(kms.verify_key("fk_unknown").await.code, VerifyCode::NotFound);

    // The service exchanges its key for a service token and may read its own key only.
    let service = kms.exchange_key(&key).await;
    assert!(service.body.get("refresh_token").is_none());
    let service_token = service.ok().access_token;
    assert_eq!(kms.key(&service_token, "service_a").await.ok().api_key, key);
    kms.create_key(&admin, "other").await.ok();
    assert_eq!(kms.key(&service_token, "other").await.status, 403);
    assert_eq!(kms.users(&service_token).await.status, 403);
    assert_eq!(kms.exchange_key("fk_nope").await.status, 401);

    let list = kms.keys(&admin).await;
    // Besides the service credentials this all-in-one process provisioned for its own roles.
    let created: Vec<String> = list
        .ok()
        .keys
        .into_iter()
        .map(|k| k.service_name)
        .filter(|name| fountain::roles::find(name).is_none())
        .collect();
    assert_eq!(created.len(), 2, "{}", list.body);
    assert!(!list.body.to_string().contains(&key[7..]), "listing never shows keys");

    // Rotation with grace: both keys verify; without grace the old one is expired at once.
    let key2 = kms.rotate_key(&admin, "service_a", Some(60)).await.ok().api_key;
    assert_eq!(kms.verify_key(&key).await.code, VerifyCode::Valid);
    assert_eq!(kms.verify_key(&key2).await.code, VerifyCode::Valid);
    assert!(kms.set_key_disabled(&admin, "service_a", true).await.ok().disabled);
    let verdict = kms.verify_key(&key2).await;
    assert_eq!((verdict.code, verdict.valid), (VerifyCode::Disabled, false));
    assert!(!kms.set_key_disabled(&admin, "service_a", false).await.ok().disabled);
    assert_eq!(kms.verify_key(&key2).await.code, VerifyCode::Valid);
    assert_eq!(kms.set_key_disabled(&admin, "nobody", true).await.status, 404);
    let key3 = kms.rotate_key(&admin, "service_a", Some(0)).await.ok().api_key;
    assert_eq!(kms.verify_key(&key2).await.code, VerifyCode::Expired);
    assert_eq!(kms.rotate_key(&admin, "service_a", Some(-1)).await.status, 422);
    kms.revoke_key(&admin, "service_a").await.ok();
    assert_eq!(kms.verify_key(&key3).await.code, VerifyCode::Revoked);
    assert_eq!(kms.verify_key(&key).await.code, VerifyCode::Revoked);
    assert_eq!(kms.revoke_key(&admin, "service_a").await.status, 404);

    // Audit: every mutation recorded, no secret in it.
    let audit = kms.audit(&admin, "limit=500").await;
    let actions: Vec<String> = audit.ok().entries.into_iter().map(|e| e.action).collect();
    for action in ["users.create", "login", "keys.create", "keys.rotate", "keys.revoke", "keys.disable"] {
        assert!(actions.iter().any(|a| a == action), "{action} missing from {actions:?}");
    }
    let audit_text = audit.body.to_string();
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
    let kms = app.kms();
    let admin = app.admin_token().await;
    let old_kid = jsonwebtoken::decode_header(&admin).unwrap().kid.unwrap();
    let new_kid = kms.rotate_signing_key(&admin).await.ok().kid;
    assert_ne!(new_kid, old_kid);
    let jwks = kms.jwks().await;
    let kids: Vec<&str> =
        jwks["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap()).collect();
    assert!(kids.contains(&old_kid.as_str()) && kids.contains(&new_kid.as_str()), "{kids:?}");
    assert_eq!(kms.users(&admin).await.status, 200, "tokens signed by the previous key still verify");
    let fresh = kms.login("root").await;
    let fresh_kid = jsonwebtoken::decode_header(&fresh.access_token).unwrap().kid.unwrap();
    assert_eq!(fresh_kid, new_kid);
    kms.register(ANONYMOUS, "dave", &[]).await.ok();
    let user = kms.login("dave").await.access_token;
    assert_eq!(kms.rotate_signing_key(&user).await.status, 403);
    app.stop().await;
}

#[actix_web::test]
async fn an_independent_jose_library_verifies_tokens_against_the_jwks() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let admin = app.admin_token().await;
    let jwks = app.kms().jwks().await;
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
    app.kms().register(ANONYMOUS, "erin", &[]).await.ok();
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
    // (Usernames an account could have: kms answers 422 to impossible ones before counting.)
    for user in ["user1", "user2", "user3", "user4", "user5"] {
        let _ = attempt(user, "wrong password!", "10.0.0.3").await;
    }
    let _ = attempt("user6", "wrong password!", "10.0.0.3").await;
    assert_eq!(attempt("user7", "wrong password!", "10.0.0.3").await.unwrap().status().as_u16(), 429);
    let metrics = app.metrics("kms").await;
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
    let output = crate::support::fountain_command(&data)
        .args(["admin", "create-user", "--init", "--username", "ops", "--role", "admin", "--password-file"])
        .arg(&file)
        .env("FOUNTAIN_ROLES__KMS__BCRYPT_COST", "4")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8_lossy(&output.stdout).contains("created user ops with roles admin"));

    let mut child = crate::support::fountain_command(&data)
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

    let again = crate::support::fountain_command(&data)
        .args(["admin", "create-user", "--username", "ops", "--password-file"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
}

#[test]
fn no_log_line_carries_a_password_key_or_token() {
    use crate::support::{blocking_call, ServeProcess};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    crate::support::process::install_with_admin(&data, "ops", &[]);
    let process = ServeProcess::start(
        &data,
        &["kms", "secrets", "twofa"],
        &[("FOUNTAIN_ROLES__KMS__BCRYPT_COST", "4"), ("FOUNTAIN_LOG__LEVEL", "debug")],
    );
    let kms = process.addr("kms");
    let post =
        |path: &str, token: Option<&str>, body: Value| blocking_call(kms, "POST", path, token, Some(body));
    let (status, session) = post("/login", None, json!({"username": "ops", "password": PASSWORD}));
    assert_eq!(status, 200);
    let token = session["access_token"].as_str().unwrap().to_string();
    let refresh = session["refresh_token"].as_str().unwrap().to_string();
    // Creating a key takes a step-up: a TOTP factor enrolled, activated and verified at twofa.
    let stepped = crate::support::totp::step_up_blocking(process.addr("twofa"), &token);
    let stepped_up = stepped.token.clone();
    let (_, created) = post("/keys", Some(&stepped_up), json!({"service_name": "svc"}));
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
    let mut secrets = vec![PASSWORD.to_string(), "wrong-but-long-password".into(), token, refresh, key];
    secrets.extend([stepped.token, stepped.secret]);
    secrets.extend(stepped.recovery_codes);
    for secret in &secrets {
        assert!(!all.contains(secret), "a secret reached the logs");
    }
}

/// The audit trail is shared by every role: kms's `GET /audit` lists all of it, each record
/// naming its role, and filters by exact role name.
async fn the_audit_lists_every_roles_records_and_filters_by_role(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let kms = app.kms();
    let admin = app.admin_token().await;
    app.secrets().create(&admin, "audited", json!({"token": "s3cret-value-123"})).await.ok();
    kms.create_key(&admin, "audited").await.ok();

    let roles_of = |page: &Value| -> Vec<String> {
        page["entries"].as_array().unwrap().iter().map(|e| e["role"].as_str().unwrap().to_string()).collect()
    };
    let everything = kms.audit(&admin, "limit=500").await;
    assert_eq!(everything.status, 200, "{}", everything.body);
    let roles = roles_of(&everything.body);
    assert!(roles.iter().any(|r| r == "kms") && roles.iter().any(|r| r == "secrets"), "{roles:?}");
    assert!(!everything.body.to_string().contains("s3cret-value-123"), "no secret in the trail");

    let secrets_only = kms.audit(&admin, "role=secrets").await.body;
    let roles = roles_of(&secrets_only);
    assert!(!roles.is_empty() && roles.iter().all(|r| r == "secrets"), "{roles:?}");
    assert!(secrets_only["entries"].as_array().unwrap().iter().any(|e| e["target"] == "audited"));
    let kms_only = roles_of(&kms.audit(&admin, "role=kms").await.body);
    assert!(!kms_only.is_empty() && kms_only.iter().all(|r| r == "kms"), "{kms_only:?}");
    assert!(
        roles_of(&kms.audit(&admin, "role=search").await.body).is_empty(),
        "a known role without records"
    );

    // Exact names only: a prefix, another case or an unknown role is a bad request naming the roles.
    for bad in ["role=secret", "role=KMS", "role=teapot"] {
        let answer = kms.audit(&admin, bad).await;
        assert_eq!(answer.refusal(), (400, "bad_request"), "{bad}");
        assert!(answer.body["message"].as_str().unwrap().contains("kms, secrets"), "{}", answer.body);
    }
    kms.register(ANONYMOUS, "auditee", &[]).await.ok();
    let user = kms.login("auditee").await.access_token;
    assert_eq!(kms.audit(&user, "role=kms").await.refusal(), (403, "forbidden"));
    app.stop().await;
}
on_both_backends!(the_audit_lists_every_roles_records_and_filters_by_role);
