//! The secrets role over real HTTP on both backends: create, read (admin or owner), versions,
//! rotation with its event, check-and-set, soft delete / restore / destroy, the factory, and
//! nothing in plaintext at rest.

use std::collections::BTreeMap;

use fountain::platform::contracts::SecretSet;
use serde_json::{json, Value};

use crate::on_both_backends;
use crate::support::{assert_not_at_rest, Backend, TestApp, ANONYMOUS};

const CUSTOM_VALUE: &str = "custom-api-token-value-7f3a9c";

/// An admin token and service tokens for `svc` and `other`.
async fn tokens(app: &TestApp) -> (String, String, String) {
    let admin = app.admin_token().await;
    let svc = app.service_token(&admin, "svc").await;
    let other = app.service_token(&admin, "other").await;
    (admin, svc, other)
}

/// The API's one timestamp format: RFC 3339 in UTC with a `Z` and milliseconds.
fn is_utc_with_z(text: &str) -> bool {
    chrono::DateTime::parse_from_rfc3339(text).is_ok() && text.ends_with('Z') && text.len() == 24
}

/// One value of a secret set.
fn value<'s>(set: &'s SecretSet, name: &str) -> Option<&'s str> {
    set.secrets.get(name).map(String::as_str)
}

async fn secrets_lifecycle(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| c.set_role_setting("secrets", "max_versions", 2), None).await;
    let secrets = app.secrets();
    let (admin, svc, other) = tokens(&app).await;

    let created = secrets.create(&admin, "svc", json!({"API_TOKEN": CUSTOM_VALUE})).await.ok();
    assert_eq!(created.version, 1);
    assert_eq!(created.service_name, "svc");
    assert_eq!(value(&created, "API_TOKEN"), Some(CUSTOM_VALUE));
    let jwt_secret_v1 = value(&created, "JWT_SECRET").expect("a generated JWT_SECRET").to_string();
    assert!(jwt_secret_v1.len() >= 40 && value(&created, "DB_PASSWORD").unwrap().len() >= 20);
    assert_eq!(secrets.create(&admin, "svc", None).await.status, 409);
    assert_eq!(secrets.create(&svc, "other", None).await.status, 403, "services do not write secrets");

    // Reading: an admin, or the service itself; nobody else.
    assert_eq!(value(&secrets.get(&svc, "svc").await.ok(), "API_TOKEN"), Some(CUSTOM_VALUE));
    assert_eq!(secrets.get(&other, "svc").await.refusal(), (403, "forbidden"));
    assert_eq!(secrets.get(ANONYMOUS, "svc").await.status, 401);

    // Rotation keeps custom values, regenerates the defaults, and publishes its event.
    let rotated = secrets.rotate(&admin, "svc", json!({"newSecrets": {"EXTRA": "x"}})).await.ok();
    assert_eq!(rotated.version, 2);
    assert_eq!(value(&rotated, "API_TOKEN"), Some(CUSTOM_VALUE));
    assert_eq!(value(&rotated, "EXTRA"), Some("x"));
    assert_ne!(value(&rotated, "JWT_SECRET"), Some(jwt_secret_v1.as_str()));
    let events = app
        .platform
        .db
        .run(|conn| {
            fountain::platform::events::read_after(conn, 0, Some(&["secrets.rotated".to_string()]), 10)
        })
        .await
        .unwrap();
    let payload: Value = serde_json::from_str(&events.last().unwrap().payload).unwrap();
    assert_eq!((payload["serviceName"].as_str(), payload["version"].as_i64()), (Some("svc"), Some(2)));
    assert!(is_utc_with_z(payload["rotationTime"].as_str().unwrap()), "{payload}");
    assert!(!events.last().unwrap().payload.contains(CUSTOM_VALUE), "events never carry values");

    let v1 = secrets.get_version(&svc, "svc", 1).await.ok();
    assert_eq!(value(&v1, "JWT_SECRET"), Some(jwt_secret_v1.as_str()));
    // Malformed versions, sent raw.
    for bad in ["/secrets/svc?version=0", "/secrets/svc?version=abc", "/secrets/svc?version=-3"] {
        let (status, _) = app.call("GET", "secrets", bad, Some(&admin), None).await;
        assert_eq!(status, 400, "{bad}");
    }
    let versions = secrets.versions(&svc, "svc").await;
    let kept = versions.ok();
    assert_eq!(kept.current_version, 2);
    assert_eq!(kept.versions.len(), 2);
    assert!(
        kept.versions.iter().all(|v| is_utc_with_z(v["created_at"].as_str().unwrap())),
        "{:?}",
        kept.versions
    );
    assert!(!versions.body.to_string().contains(CUSTOM_VALUE), "version lists show no values");

    // Check-and-set.
    let conflict = secrets.replace(&admin, "svc", json!({"ONLY": "this"}), 1).await;
    assert_eq!((conflict.status, conflict.body["details"]["currentVersion"].as_i64()), (409, Some(2)));
    let replaced = secrets.replace(&admin, "svc", json!({"ONLY": "this"}), 2).await.ok();
    assert_eq!(replaced.secrets, BTreeMap::from([("ONLY".to_string(), "this".to_string())]));
    assert_eq!(replaced.version, 3);
    assert_eq!(secrets.get_version(&admin, "svc", 1).await.status, 404, "only max_versions (2) are kept");

    // Soft delete, restore, destroy.
    secrets.delete(&admin, "svc").await.ok();
    assert_eq!(secrets.get(&svc, "svc").await.status, 404);
    assert_eq!(secrets.rotate(&admin, "svc", None).await.status, 404, "a deleted set cannot be rotated");
    secrets.restore(&admin, "svc").await.ok();
    assert_eq!(secrets.get(&svc, "svc").await.ok().version, 3);

    // Nothing in plaintext at rest.
    let values =
        [CUSTOM_VALUE.to_string(), jwt_secret_v1.clone(), value(&rotated, "JWT_SECRET").unwrap().to_string()];
    let values: Vec<&str> = values.iter().map(String::as_str).collect();
    assert_not_at_rest(&app, &["secret_versions", "secret_sets", "events", "audit_log"], &values);

    assert_eq!(secrets.destroy(&svc, "svc").await.status, 403);
    secrets.destroy(&admin, "svc").await.ok();
    assert_eq!(secrets.get_version(&admin, "svc", 3).await.status, 404);
    assert_eq!(secrets.restore(&admin, "svc").await.status, 404, "destroy is irreversible");
    app.stop().await;
}
on_both_backends!(secrets_lifecycle);

#[actix_web::test]
async fn the_factory_and_bad_input() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let secrets = app.secrets();
    let (admin, svc, _) = tokens(&app).await;
    assert_eq!(secrets.generate(&svc, None).await.ok().secret.len(), 32);
    let secret = secrets.generate(&admin, json!({"length": 64, "alphabet": "ab"})).await.ok().secret;
    assert_eq!(secret.len(), 64);
    assert!(secret.chars().all(|c| c == 'a' || c == 'b') && secret.contains('a') && secret.contains('b'));
    // Out-of-bounds and mistyped requests, sent raw.
    for bad in [
        json!({"length": 15}),
        json!({"length": 1025}),
        json!({"length": -1}),
        json!({"alphabet": "aa"}),
        json!({"alphabet": "a"}),
        json!({"alphabet": "ab c"}),
        json!({"alphabet": "abé"}),
        json!({"length": "32"}),
    ] {
        let (status, body) =
            app.call("POST", "secrets", "/factory/generate", Some(&admin), Some(bad.clone())).await;
        assert_eq!(status, 422, "{bad} -> {body}");
    }
    assert_eq!(secrets.generate(ANONYMOUS, None).await.status, 401);

    for (path, body) in [
        ("/secrets/Bad%20Name", json!({})),
        ("/secrets/svc", json!({"A": 1})),
        ("/secrets/svc", json!({"bad name": "x"})),
        ("/secrets/svc", json!(["not", "a", "map"])),
    ] {
        let (status, answer) = app.call("POST", "secrets", path, Some(&admin), Some(body.clone())).await;
        assert_eq!(status, 422, "{path} {body} -> {answer}");
    }
    let huge = json!({"BIG": "x".repeat(200 * 1024)});
    let (status, _) = app.call("POST", "secrets", "/secrets/svc", Some(&admin), Some(huge)).await;
    assert_eq!(status, 413);
    assert_eq!(secrets.get(&admin, "svc").await.status, 404, "nothing was stored by the refused requests");
    let (status, _) =
        app.call("PUT", "secrets", "/secrets/svc", Some(&admin), Some(json!({"secrets": {}}))).await;
    assert_eq!(status, 422, "expectedVersion is required");

    let notice = json!({"serviceName": "svc", "rotationTime": "2026-11-23T10:00:00Z", "version": "7"});
    let (status, answer) = app.call("POST", "secrets", "/notifications", Some(&admin), Some(notice)).await;
    assert_eq!(status, 200, "{answer}");
    let events = app
        .platform
        .db
        .run(|conn| {
            fountain::platform::events::read_after(conn, 0, Some(&["secrets.rotated".to_string()]), 10)
        })
        .await
        .unwrap();
    assert!(events.iter().any(|e| e.payload.contains(r#""version":7"#)));
    let (status, _) = app
        .call(
            "POST",
            "secrets",
            "/notifications",
            Some(&admin),
            Some(json!({"serviceName": "svc", "version": "7"})),
        )
        .await;
    assert_eq!(status, 422);
    app.stop().await;
}

/// Concurrent read-modify-write transactions (rotations) all succeed, one after the other:
/// SQLite transactions take the write lock up front instead of failing with "database is locked".
async fn concurrent_rotations_serialise_without_errors(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let secrets = app.secrets();
    let (admin, _, _) = tokens(&app).await;
    secrets.create(&admin, "busy", None).await.ok();
    let rotations = (0..12).map(|_| secrets.rotate(&admin, "busy", None));
    let results = futures_util::future::join_all(rotations).await;
    let mut versions: Vec<i32> = results.iter().map(|answer| answer.ok().version).collect();
    versions.sort_unstable();
    assert_eq!(versions, (2..=13).collect::<Vec<_>>(), "every rotation got its own version");
    app.stop().await;
}
on_both_backends!(concurrent_rotations_serialise_without_errors);
