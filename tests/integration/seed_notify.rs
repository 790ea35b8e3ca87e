//! The seed's Secrets Manager tests (its `test_main.py`), sent as its Python client sends them:
//! a rotation notice whose `rotationTime` is `datetime.utcnow().isoformat()` (no zone) and whose
//! `version` is `"v2"`, the factory with and without a length, and create → read → rotate.

use serde_json::{json, Value};

use crate::support::{Backend, TestApp};

/// The answer the seed's `POST /notifications` gives, which its test looks for.
const SEED_MESSAGE: &str = "Notification received; dependent services should update their secrets.";

/// The `secrets.rotated` events stored so far, as JSON payloads.
async fn rotation_events(app: &TestApp) -> Vec<Value> {
    let topics = ["secrets.rotated".to_string()];
    let stored = app
        .platform
        .db
        .run(move |conn| fountain::platform::events::read_after(conn, 0, Some(&topics), 100))
        .await
        .unwrap();
    stored.iter().map(|e| serde_json::from_str(&e.payload).unwrap()).collect()
}

#[actix_web::test]
async fn the_seeds_rotation_notice_with_a_zone_less_time_is_received_and_published_as_utc() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let admin = app.admin_token().await;
    // `datetime.utcnow().isoformat()`: microseconds, no zone (and none when they are zero).
    for (sent, published) in [
        ("2026-11-30T11:36:26.123456", "2026-11-30T11:36:26.123Z"),
        ("2026-11-30T11:36:27", "2026-11-30T11:36:27.000Z"),
    ] {
        let answer = app.secrets().announce_rotation(&admin, "test-service", sent, "v2").await;
        let (status, body) = (answer.status, answer.body);
        assert_eq!(status, 200, "{body}");
        assert_eq!(body, json!({"message": SEED_MESSAGE}));
        assert!(body["message"].as_str().unwrap().contains("Notification received"));
        let events = rotation_events(&app).await;
        let event = events.iter().find(|e| e["rotationTime"] == published).unwrap_or_else(|| {
            panic!("no secrets.rotated event at {published}: {events:?}");
        });
        assert_eq!(event["serviceName"], "test-service");
        assert_eq!(event["version"], json!(2), "the event's version is a number");
    }
    // The same instant with an offset is the same UTC time.
    let offset =
        json!({"serviceName": "test-service", "rotationTime": "2026-11-30T12:36:28+01:00", "version": 3});
    let (status, _) = app.call("POST", "secrets", "/notifications", Some(&admin), Some(offset)).await;
    assert_eq!(status, 200);
    assert!(rotation_events(&app)
        .await
        .iter()
        .any(|e| e["rotationTime"] == "2026-11-30T11:36:28.000Z" && e["version"] == json!(3)));
    app.stop().await;
}

#[actix_web::test]
async fn rotation_notices_that_do_not_name_a_time_or_a_version_are_refused_by_field() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let admin = app.admin_token().await;
    for (notice, field) in [
        (json!({"serviceName": "svc", "rotationTime": "yesterday", "version": "v2"}), "rotationTime"),
        (json!({"serviceName": "svc", "rotationTime": "2026-11-30T11:36:26", "version": "two"}), "version"),
        (json!({"serviceName": "svc", "rotationTime": "2026-11-30T11:36:26", "version": "v0"}), "version"),
        (json!({"serviceName": "svc", "rotationTime": "2026-11-30T11:36:26", "version": "v"}), "version"),
        (json!({"serviceName": "svc", "rotationTime": "2026-11-30T11:36:26", "version": -1}), "version"),
        (
            json!({"serviceName": "Bad Name", "rotationTime": "2026-11-30T11:36:26", "version": "1"}),
            "serviceName",
        ),
        (json!({"serviceName": "svc", "version": "7"}), "rotationTime"),
    ] {
        let (status, body) =
            app.call("POST", "secrets", "/notifications", Some(&admin), Some(notice.clone())).await;
        assert_eq!(status, 422, "{notice} -> {body}");
        assert_eq!(body["errorCode"], "validation_failed", "{body}");
        assert!(body.to_string().contains(field), "{notice}: the error names {field}: {body}");
    }
    assert!(rotation_events(&app).await.is_empty(), "nothing was published by refused notices");
    app.stop().await;
}

#[actix_web::test]
async fn the_seeds_factory_and_create_retrieve_rotate_tests_pass() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let admin = app.admin_token().await;
    let secrets = app.secrets();

    // test_generate_secret: `{}` and `{"length": 64}`.
    assert!(!secrets.generate(&admin, json!({})).await.ok().secret.is_empty());
    assert_eq!(secrets.generate(&admin, json!({"length": 64})).await.ok().secret.len(), 64);

    // test_create_retrieve_rotate_secrets.
    let created = secrets.create(&admin, "test-service", json!({})).await.ok();
    assert_eq!(created.service_name, "test-service");
    assert!(created.secrets.contains_key("JWT_SECRET"));
    let read = secrets.get(&admin, "test-service").await.ok();
    assert_eq!(read.secrets, created.secrets);
    let rotated = secrets.rotate(&admin, "test-service", json!({})).await.ok();
    assert_eq!(rotated.service_name, "test-service");
    assert_ne!(rotated.secrets, read.secrets);
    let custom =
        json!({"newSecrets": {"JWT_SECRET": "custom_secret_value", "DB_PASSWORD": "custom_db_pass"}});
    let customised = secrets.rotate(&admin, "test-service", custom).await.ok();
    assert_eq!(customised.secrets["JWT_SECRET"], "custom_secret_value");
    assert_eq!(customised.secrets["DB_PASSWORD"], "custom_db_pass");
    app.stop().await;
}
