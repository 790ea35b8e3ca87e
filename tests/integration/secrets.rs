//! The secrets role over real HTTP on both backends: create, read (admin or owner), versions,
//! rotation with its event, check-and-set, soft delete / restore / destroy, the factory, and
//! nothing in plaintext at rest.

use serde_json::{json, Value};

use crate::helpers::{assert_error_shape, assert_not_at_rest, Backend, TestApp};
use crate::on_both_backends;

const CUSTOM_VALUE: &str = "custom-api-token-value-7f3a9c";

/// An admin token and service tokens for `svc` and `other`.
async fn tokens(app: &TestApp) -> (String, String, String) {
    let admin = app.admin_token().await;
    let svc = app.service_token(&admin, "svc").await;
    let other = app.service_token(&admin, "other").await;
    (admin, svc, other)
}

async fn secrets_lifecycle(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| c.set_role_setting("secrets", "max_versions", 2), None).await;
    let (admin, svc, other) = tokens(&app).await;

    let (status, created) = app
        .call("POST", "secrets", "/secrets/svc", Some(&admin), Some(json!({"API_TOKEN": CUSTOM_VALUE})))
        .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["version"], 1);
    assert_eq!(created["service_name"], "svc");
    assert_eq!(created["secrets"]["API_TOKEN"], CUSTOM_VALUE);
    let jwt_secret_v1 = created["secrets"]["JWT_SECRET"].as_str().unwrap().to_string();
    assert!(jwt_secret_v1.len() >= 40 && created["secrets"]["DB_PASSWORD"].as_str().unwrap().len() >= 20);
    let (status, _) = app.call("POST", "secrets", "/secrets/svc", Some(&admin), None).await;
    assert_eq!(status, 409);
    let (status, _) = app.call("POST", "secrets", "/secrets/other", Some(&svc), None).await;
    assert_eq!(status, 403, "services do not write secrets");

    // Reading: an admin, or the service itself; nobody else.
    let (status, own) = app.call("GET", "secrets", "/secrets/svc", Some(&svc), None).await;
    assert_eq!((status, own["secrets"]["API_TOKEN"].as_str()), (200, Some(CUSTOM_VALUE)));
    let (status, body) = app.call("GET", "secrets", "/secrets/svc", Some(&other), None).await;
    assert_eq!((status, assert_error_shape(&body).as_str()), (403, "forbidden"));
    let (status, _) = app.call("GET", "secrets", "/secrets/svc", None, None).await;
    assert_eq!(status, 401);

    // Rotation keeps custom values, regenerates the defaults, and publishes its event.
    let (status, rotated) = app
        .call(
            "POST",
            "secrets",
            "/secrets/svc/rotate",
            Some(&admin),
            Some(json!({"newSecrets": {"EXTRA": "x"}})),
        )
        .await;
    assert_eq!(status, 200, "{rotated}");
    assert_eq!(rotated["version"], 2);
    assert_eq!(rotated["secrets"]["API_TOKEN"], CUSTOM_VALUE);
    assert_eq!(rotated["secrets"]["EXTRA"], "x");
    assert_ne!(rotated["secrets"]["JWT_SECRET"], jwt_secret_v1);
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
    assert!(payload["rotationTime"].as_str().is_some());
    assert!(!events.last().unwrap().payload.contains(CUSTOM_VALUE), "events never carry values");

    let (status, v1) = app.call("GET", "secrets", "/secrets/svc?version=1", Some(&svc), None).await;
    assert_eq!((status, v1["secrets"]["JWT_SECRET"].as_str()), (200, Some(jwt_secret_v1.as_str())));
    for bad in ["/secrets/svc?version=0", "/secrets/svc?version=abc", "/secrets/svc?version=-3"] {
        let (status, _) = app.call("GET", "secrets", bad, Some(&admin), None).await;
        assert_eq!(status, 400, "{bad}");
    }
    let (status, versions) = app.call("GET", "secrets", "/secrets/svc/versions", Some(&svc), None).await;
    assert_eq!(status, 200);
    assert_eq!(versions["current_version"], 2);
    assert_eq!(versions["versions"].as_array().unwrap().len(), 2);
    assert!(!versions.to_string().contains(CUSTOM_VALUE), "version lists show no values");

    // Check-and-set.
    let replace = |expected: i64| json!({"secrets": {"ONLY": "this"}, "expectedVersion": expected});
    let (status, conflict) = app.call("PUT", "secrets", "/secrets/svc", Some(&admin), Some(replace(1))).await;
    assert_eq!((status, conflict["details"]["currentVersion"].as_i64()), (409, Some(2)));
    let (status, replaced) = app.call("PUT", "secrets", "/secrets/svc", Some(&admin), Some(replace(2))).await;
    assert_eq!(status, 200);
    assert_eq!(replaced["secrets"], json!({"ONLY": "this"}));
    assert_eq!(replaced["version"], 3);
    let (status, _) = app.call("GET", "secrets", "/secrets/svc?version=1", Some(&admin), None).await;
    assert_eq!(status, 404, "only max_versions (2) are kept");

    // Soft delete, restore, destroy.
    let (status, _) = app.call("DELETE", "secrets", "/secrets/svc", Some(&admin), None).await;
    assert_eq!(status, 204);
    let (status, _) = app.call("GET", "secrets", "/secrets/svc", Some(&svc), None).await;
    assert_eq!(status, 404);
    let (status, _) = app.call("POST", "secrets", "/secrets/svc/rotate", Some(&admin), None).await;
    assert_eq!(status, 404, "a deleted set cannot be rotated");
    let (status, _) = app.call("POST", "secrets", "/secrets/svc/restore", Some(&admin), None).await;
    assert_eq!(status, 204);
    let (status, back) = app.call("GET", "secrets", "/secrets/svc", Some(&svc), None).await;
    assert_eq!((status, back["version"].as_i64()), (200, Some(3)));

    // Nothing in plaintext at rest.
    let values = [
        CUSTOM_VALUE.to_string(),
        jwt_secret_v1.clone(),
        rotated["secrets"]["JWT_SECRET"].as_str().unwrap().to_string(),
    ];
    let values: Vec<&str> = values.iter().map(String::as_str).collect();
    assert_not_at_rest(&app, &["secret_versions", "secret_sets", "events", "audit_log"], &values);

    let (status, _) = app.call("POST", "secrets", "/secrets/svc/destroy", Some(&svc), None).await;
    assert_eq!(status, 403);
    let (status, _) = app.call("POST", "secrets", "/secrets/svc/destroy", Some(&admin), None).await;
    assert_eq!(status, 204);
    let (status, _) = app.call("GET", "secrets", "/secrets/svc?version=3", Some(&admin), None).await;
    assert_eq!(status, 404);
    let (status, _) = app.call("POST", "secrets", "/secrets/svc/restore", Some(&admin), None).await;
    assert_eq!(status, 404, "destroy is irreversible");
    app.stop().await;
}
on_both_backends!(secrets_lifecycle);

#[actix_web::test]
async fn the_factory_and_bad_input() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let (admin, svc, _) = tokens(&app).await;
    let (status, generated) = app.call("POST", "secrets", "/factory/generate", Some(&svc), None).await;
    assert_eq!(status, 200);
    assert_eq!(generated["secret"].as_str().unwrap().len(), 32);
    let (status, generated) = app
        .call(
            "POST",
            "secrets",
            "/factory/generate",
            Some(&admin),
            Some(json!({"length": 64, "alphabet": "ab"})),
        )
        .await;
    assert_eq!(status, 200);
    let secret = generated["secret"].as_str().unwrap();
    assert_eq!(secret.len(), 64);
    assert!(secret.chars().all(|c| c == 'a' || c == 'b') && secret.contains('a') && secret.contains('b'));
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
    let (status, _) = app.call("POST", "secrets", "/factory/generate", None, None).await;
    assert_eq!(status, 401);

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
    let (status, _) = app.call("GET", "secrets", "/secrets/svc", Some(&admin), None).await;
    assert_eq!(status, 404, "nothing was stored by the refused requests");
    let (status, _) =
        app.call("PUT", "secrets", "/secrets/svc", Some(&admin), Some(json!({"secrets": {}}))).await;
    assert_eq!(status, 422, "expectedVersion is required");

    let (status, body) = app
        .call(
            "POST",
            "secrets",
            "/notifications",
            Some(&admin),
            Some(json!({"serviceName": "svc", "rotationTime": "2026-11-23T10:00:00Z", "version": "7"})),
        )
        .await;
    assert_eq!(status, 202, "{body}");
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
    let (admin, _, _) = tokens(&app).await;
    let (status, _) = app.call("POST", "secrets", "/secrets/busy", Some(&admin), None).await;
    assert_eq!(status, 201);
    let rotations = (0..12).map(|_| app.call("POST", "secrets", "/secrets/busy/rotate", Some(&admin), None));
    let results = futures_util::future::join_all(rotations).await;
    let mut versions: Vec<i64> = results
        .iter()
        .map(|(status, body)| {
            assert_eq!(*status, 200, "{body}");
            body["version"].as_i64().unwrap()
        })
        .collect();
    versions.sort_unstable();
    assert_eq!(versions, (2..=13).collect::<Vec<_>>(), "every rotation got its own version");
    app.stop().await;
}
on_both_backends!(concurrent_rotations_serialise_without_errors);
