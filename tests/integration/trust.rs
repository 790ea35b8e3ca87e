//! The one trust path: every role refuses what kms revoked, at once and by itself (not only at
//! the gateway); kms's signing-key rotation is one unit of work every role follows; events any
//! role commits wake stream subscribers at once.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{json, Value};

use crate::helpers::{assert_error_shape, Backend, TestApp, PASSWORD};
use crate::on_both_backends;

/// One admin-only (or admin-or-service) endpoint per role that has endpoints, and what a valid
/// admin token gets there.
const ADMIN_PROBES: [(&str, &str, u16); 4] = [
    ("kms", "/users", 200),
    ("secrets", "/secrets/probe-service/versions", 404),
    ("notify", "/events", 200),
    ("gateway", "/registry", 200),
];

async fn probe_every_role(app: &TestApp, token: &str) -> Vec<(&'static str, u16)> {
    let mut answers = Vec::new();
    for (role, path, _) in ADMIN_PROBES {
        let (status, body) = app.call("GET", role, path, Some(token), None).await;
        if status >= 400 {
            assert_error_shape(&body);
        }
        answers.push((role, status));
    }
    answers
}

fn every_role_answers(status: Option<u16>) -> Vec<(&'static str, u16)> {
    ADMIN_PROBES.iter().map(|(role, _, ok)| (*role, status.unwrap_or(*ok))).collect()
}

async fn set_user(app: &TestApp, admin: &str, username: &str, change: Value) {
    let (status, body) =
        app.call("PATCH", "kms", &format!("/users/{username}"), Some(admin), Some(change)).await;
    assert_eq!(status, 200, "{body}");
}

async fn every_role_refuses_a_token_once_its_account_changed(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let root = app.admin_token().await;
    let register = json!({"username": "dana", "password": PASSWORD, "roles": ["admin"]});
    let (status, body) = app.call("POST", "kms", "/register", Some(&root), Some(register)).await;
    assert_eq!(status, 201, "{body}");
    let dana = app.login("kms", "/login", "dana").await;
    assert_eq!(probe_every_role(&app, &dana).await, every_role_answers(None));

    // Demoted: the admin token is refused at once, and a new token carries the new roles.
    set_user(&app, &root, "dana", json!({"roles": ["user"]})).await;
    assert_eq!(probe_every_role(&app, &dana).await, every_role_answers(Some(401)));
    let demoted = app.login("kms", "/login", "dana").await;
    assert_eq!(probe_every_role(&app, &demoted).await, every_role_answers(Some(403)));
    // Promoted again: the user-role token does not silently become an admin token either.
    set_user(&app, &root, "dana", json!({"roles": ["admin"]})).await;
    assert_eq!(probe_every_role(&app, &demoted).await, every_role_answers(Some(401)));

    // Logged out: that token and its session end everywhere.
    let session = app.login("kms", "/login", "dana").await;
    let (status, _) = app.call("POST", "kms", "/logout", Some(&session), None).await;
    assert_eq!(status, 204);
    assert_eq!(probe_every_role(&app, &session).await, every_role_answers(Some(401)));

    // Disabled, then enabled again: the token from before stays dead.
    let before = app.login("kms", "/login", "dana").await;
    set_user(&app, &root, "dana", json!({"disabled": true})).await;
    assert_eq!(probe_every_role(&app, &before).await, every_role_answers(Some(401)));
    set_user(&app, &root, "dana", json!({"disabled": false})).await;
    assert_eq!(probe_every_role(&app, &before).await, every_role_answers(Some(401)));

    // Deleted, then the username registered again: the old account's token never comes back.
    let old = app.login("kms", "/login", "dana").await;
    let (status, _) = app.call("DELETE", "kms", "/users/dana", Some(&root), None).await;
    assert_eq!(status, 204);
    assert_eq!(probe_every_role(&app, &old).await, every_role_answers(Some(401)));
    let again = json!({"username": "dana", "password": PASSWORD, "roles": ["admin"]});
    let (status, _) = app.call("POST", "kms", "/register", Some(&root), Some(again)).await;
    assert_eq!(status, 201);
    assert_eq!(probe_every_role(&app, &old).await, every_role_answers(Some(401)));
    let fresh = app.login("kms", "/login", "dana").await;
    assert_eq!(probe_every_role(&app, &fresh).await, every_role_answers(None));
    app.stop().await;
}
on_both_backends!(every_role_refuses_a_token_once_its_account_changed);

async fn a_service_token_ends_with_its_api_key(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let root = app.admin_token().await;
    let service = app.service_token(&root, "probe-service").await;
    let probes = [
        ("notify", "/events", 200),
        ("gateway", "/registry", 200),
        ("secrets", "/secrets/probe-service/versions", 404),
    ];
    for (role, path, ok) in probes {
        let (status, body) = app.call("GET", role, path, Some(&service), None).await;
        assert_eq!(status, ok, "{role}{path}: {body}");
    }
    let (status, _) =
        app.call("PATCH", "kms", "/keys/probe-service", Some(&root), Some(json!({"disabled": true}))).await;
    assert_eq!(status, 200);
    for (role, path, _) in probes {
        let (status, _) = app.call("GET", role, path, Some(&service), None).await;
        assert_eq!(status, 401, "{role}{path}: a disabled key's service token");
    }
    let (status, _) =
        app.call("PATCH", "kms", "/keys/probe-service", Some(&root), Some(json!({"disabled": false}))).await;
    assert_eq!(status, 200);
    for (role, path, ok) in probes {
        let (status, _) = app.call("GET", role, path, Some(&service), None).await;
        assert_eq!(status, ok, "{role}{path}: enabled again");
    }
    let (status, _) = app.call("DELETE", "kms", "/keys/probe-service", Some(&root), None).await;
    assert_eq!(status, 204);
    for (role, path, _) in probes {
        let (status, _) = app.call("GET", role, path, Some(&service), None).await;
        assert_eq!(status, 401, "{role}{path}: a revoked key's service token");
    }
    app.stop().await;
}
on_both_backends!(a_service_token_ends_with_its_api_key);

async fn signing_key_rotation_commits_with_its_event_and_audit_record(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let root = app.admin_token().await;
    // Every other role has fetched kms's keys before the rotation.
    assert_eq!(probe_every_role(&app, &root).await, every_role_answers(None));
    let (status, rotated) = app.call("POST", "kms", "/signing-keys/rotate", Some(&root), None).await;
    assert_eq!(status, 200, "{rotated}");
    let kid = rotated["kid"].as_str().unwrap().to_string();
    let (_, events) = app.call("GET", "notify", "/events?topic=signingkeys.rotated", Some(&root), None).await;
    let events = events["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(
        (events[0]["source"].as_str(), events[0]["payload"]["kid"].as_str()),
        (Some("kms"), Some(kid.as_str()))
    );
    let (_, audit) = app.call("GET", "kms", "/audit?actor=root", Some(&root), None).await;
    let rotation: Vec<&Value> =
        audit["entries"].as_array().unwrap().iter().filter(|e| e["action"] == "signingkeys.rotate").collect();
    assert_eq!(rotation.len(), 1);
    assert_eq!(rotation[0]["target"], kid.as_str());
    let (_, jwks) = app.call("GET", "kms", "/.well-known/jwks.json", None, None).await;
    assert!(jwks["keys"].as_array().unwrap().iter().any(|k| k["kid"] == kid.as_str()));
    // A token signed with the new key works on every role at once: the rotation event lifts
    // the verifiers' refetch cool-down.
    let after = app.login("kms", "/login", "root").await;
    let header = jsonwebtoken::decode_header(&after).unwrap();
    assert_eq!(header.kid.as_deref(), Some(kid.as_str()));
    assert_eq!(probe_every_role(&app, &after).await, every_role_answers(None));
    assert_eq!(probe_every_role(&app, &root).await, every_role_answers(None), "the old key still verifies");
    app.stop().await;
}
on_both_backends!(signing_key_rotation_commits_with_its_event_and_audit_record);

/// With polling effectively off, an event that another role commits reaches a stream at all
/// only because the commit wakes the stream.
async fn an_event_any_role_commits_reaches_a_stream_without_a_poll(backend: Backend) {
    let hour = |c: &mut fountain::config::Config| {
        c.set_role_setting("notify", "poll_interval_ms", 3_600_000);
        c.set_role_setting("notify", "stream_keepalive_seconds", 3_600);
    };
    let app = TestApp::spawn_with(backend, hour, None).await;
    let root = app.admin_token().await;
    let (status, _) = app.call("POST", "secrets", "/secrets/sse-probe", Some(&root), Some(json!({}))).await;
    assert_eq!(status, 201);
    let mut stream = app
        .client
        .get(app.url("notify", "/events/stream?topics=secrets.rotated,users.changed"))
        .insert_header(("authorization", format!("Bearer {root}")))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status().as_u16(), 200);
    let (status, _) =
        app.call("POST", "secrets", "/secrets/sse-probe/rotate", Some(&root), Some(json!({}))).await;
    assert_eq!(status, 200);
    let frame = next_frame(&mut stream).await;
    assert!(frame.contains("event: secrets.rotated"), "{frame}");
    assert!(frame.contains("\"serviceName\":\"sse-probe\""), "{frame}");
    let (status, _) =
        app.call("PATCH", "kms", "/users/root", Some(&root), Some(json!({"roles": ["admin", "ops"]}))).await;
    assert_eq!(status, 200);
    let frame = next_frame(&mut stream).await;
    assert!(frame.contains("event: users.changed"), "{frame}");
    app.stop().await;
}
on_both_backends!(an_event_any_role_commits_reaches_a_stream_without_a_poll);

/// The next event frame of a stream, skipping keep-alive comments.
async fn next_frame(
    stream: &mut awc::ClientResponse<
        impl futures_util::Stream<Item = Result<actix_web::web::Bytes, awc::error::PayloadError>> + Unpin,
    >,
) -> String {
    loop {
        let chunk = actix_web::rt::time::timeout(Duration::from_secs(20), stream.next())
            .await
            .expect("an event within the test's bound")
            .expect("stream open")
            .expect("chunk");
        let text = String::from_utf8(chunk.to_vec()).unwrap();
        if text.contains("event: ") {
            return text;
        }
    }
}
