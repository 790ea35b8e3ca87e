//! The one trust path: every role refuses what kms revoked, at once and by itself (not only at
//! the gateway); kms's signing-key rotation is one unit of work every role follows; events any
//! role commits wake stream subscribers at once.

use serde_json::json;

use crate::on_both_backends;
use crate::support::{assert_error_shape, Backend, TestApp};

/// One admin-only (or admin-or-service) endpoint per role that has endpoints, and what a valid
/// admin token gets there.
const ADMIN_PROBES: [(&str, &str, u16); 4] = [
    ("kms", "/users", 200),
    ("secrets", "/secrets/probe-service/versions", 404),
    ("notify", "/events", 200),
    ("gateway", "/registry", 200),
];

/// What each role answers `token` at its probe (a table of paths: sent through `call`).
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

async fn every_role_refuses_a_token_once_its_account_changed(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let kms = app.kms();
    let root = app.admin_token().await;
    kms.register(&root, "dana", &["admin"]).await.ok();
    let dana = kms.login("dana").await.access_token;
    assert_eq!(probe_every_role(&app, &dana).await, every_role_answers(None));

    // Demoted: the admin token is refused at once, and a new token carries the new roles.
    kms.set_roles(&root, "dana", &["user"]).await.ok();
    assert_eq!(probe_every_role(&app, &dana).await, every_role_answers(Some(401)));
    let demoted = kms.login("dana").await.access_token;
    assert_eq!(probe_every_role(&app, &demoted).await, every_role_answers(Some(403)));
    // Promoted again: the user-role token does not silently become an admin token either.
    kms.set_roles(&root, "dana", &["admin"]).await.ok();
    assert_eq!(probe_every_role(&app, &demoted).await, every_role_answers(Some(401)));

    // Logged out: that token and its session end everywhere.
    let session = kms.login("dana").await.access_token;
    kms.logout(&session).await.ok();
    assert_eq!(probe_every_role(&app, &session).await, every_role_answers(Some(401)));

    // Disabled, then enabled again: the token from before stays dead.
    let before = kms.login("dana").await.access_token;
    kms.set_disabled(&root, "dana", true).await.ok();
    assert_eq!(probe_every_role(&app, &before).await, every_role_answers(Some(401)));
    kms.set_disabled(&root, "dana", false).await.ok();
    assert_eq!(probe_every_role(&app, &before).await, every_role_answers(Some(401)));

    // Deleted, then the username registered again: the old account's token never comes back.
    let old = kms.login("dana").await.access_token;
    kms.delete_user(&root, "dana").await.ok();
    assert_eq!(probe_every_role(&app, &old).await, every_role_answers(Some(401)));
    kms.register(&root, "dana", &["admin"]).await.ok();
    assert_eq!(probe_every_role(&app, &old).await, every_role_answers(Some(401)));
    let fresh = kms.login("dana").await.access_token;
    assert_eq!(probe_every_role(&app, &fresh).await, every_role_answers(None));
    app.stop().await;
}
on_both_backends!(every_role_refuses_a_token_once_its_account_changed);

async fn a_service_token_ends_with_its_api_key(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let kms = app.kms();
    let root = app.admin_token().await;
    let service = app.service_token(&root, "probe-service").await;
    // One endpoint per role a service may call (a table of paths: sent through `call`).
    let probes = [
        ("notify", "/events", 200),
        ("gateway", "/registry", 200),
        ("secrets", "/secrets/probe-service/versions", 404),
    ];
    for (role, path, ok) in probes {
        let (status, body) = app.call("GET", role, path, Some(&service), None).await;
        assert_eq!(status, ok, "{role}{path}: {body}");
    }
    kms.set_key_disabled(&root, "probe-service", true).await.ok();
    for (role, path, _) in probes {
        let (status, _) = app.call("GET", role, path, Some(&service), None).await;
        assert_eq!(status, 401, "{role}{path}: a disabled key's service token");
    }
    kms.set_key_disabled(&root, "probe-service", false).await.ok();
    for (role, path, ok) in probes {
        let (status, _) = app.call("GET", role, path, Some(&service), None).await;
        assert_eq!(status, ok, "{role}{path}: enabled again");
    }
    kms.revoke_key(&root, "probe-service").await.ok();
    for (role, path, _) in probes {
        let (status, _) = app.call("GET", role, path, Some(&service), None).await;
        assert_eq!(status, 401, "{role}{path}: a revoked key's service token");
    }
    app.stop().await;
}
on_both_backends!(a_service_token_ends_with_its_api_key);

async fn signing_key_rotation_commits_with_its_event_and_audit_record(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let kms = app.kms();
    let root = app.admin_token().await;
    // Every other role has fetched kms's keys before the rotation.
    assert_eq!(probe_every_role(&app, &root).await, every_role_answers(None));
    let kid = kms.rotate_signing_key(&root).await.ok().kid;
    let events = app.notify().replay(&root, "topic=signingkeys.rotated").await.ok().events;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!((events[0].source.as_str(), events[0].payload["kid"].as_str()), ("kms", Some(kid.as_str())));
    let audit = kms.audit(&root, "actor=root").await.ok();
    let rotation: Vec<_> = audit.entries.iter().filter(|e| e.action == "signingkeys.rotate").collect();
    assert_eq!(rotation.len(), 1);
    assert_eq!(rotation[0].target, kid);
    let jwks = kms.jwks().await;
    assert!(jwks["keys"].as_array().unwrap().iter().any(|k| k["kid"] == kid.as_str()));
    // A token signed with the new key works on every role at once: the rotation event lifts
    // the verifiers' refetch cool-down.
    let after = kms.login("root").await.access_token;
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
    app.secrets().create(&root, "sse-probe", json!({})).await.ok();
    let mut stream = app.notify().stream(&root, "secrets.rotated,users.changed", None).await;
    assert_eq!(stream.status, 200);
    app.secrets().rotate(&root, "sse-probe", json!({})).await.ok();
    let frame = stream.next_events().await;
    assert!(frame.contains("event: secrets.rotated"), "{frame}");
    assert!(frame.contains("\"serviceName\":\"sse-probe\""), "{frame}");
    app.kms().set_roles(&root, "root", &["admin", "ops"]).await.ok();
    let frame = stream.next_events().await;
    assert!(frame.contains("event: users.changed"), "{frame}");
    app.stop().await;
}
on_both_backends!(an_event_any_role_commits_reaches_a_stream_without_a_poll);
