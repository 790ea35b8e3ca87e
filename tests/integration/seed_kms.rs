//! kms as the seed's clients call it (000 §7, 001 §5.2): the exact request shapes of the
//! original guide — comma-separated roles, short imported API keys, delete then create again —
//! over real HTTP, on SQLite and PostgreSQL.

use fountain::platform::contracts::VerifyCode;
use serde_json::{json, Value};

use crate::on_both_backends;
use crate::support::{assert_error_shape, Backend, TestApp};

/// The seed's password (000 §7): 14 characters, so within kms's rule.
const SEED_PASSWORD: &str = "securepassword";

/// RFC 3339 in UTC with a `Z`, as every timestamp of the API.
#[track_caller]
fn assert_utc(value: &Value) {
    let text = value.as_str().unwrap_or_else(|| panic!("not a timestamp: {value}"));
    assert!(text.ends_with('Z'), "{text}");
    chrono::DateTime::parse_from_rfc3339(text).unwrap_or_else(|e| panic!("{text}: {e}"));
}

async fn the_seed_registers_with_comma_separated_roles(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_token().await;
    let register = |token: Option<&str>, body: Value| {
        let app = &app;
        let token = token.map(str::to_string);
        async move { app.call("POST", "kms", "/register", token.as_deref(), Some(body)).await }
    };

    // 000 §7, step 2, as an admin: the string is the seed's UserCreate.roles.
    let (status, body) =
        register(Some(&admin), json!({"username": "admin", "password": SEED_PASSWORD, "roles": "admin"}))
            .await;
    assert_eq!((status, &body["roles"]), (201, &json!(["admin"])), "{body}");
    let (status, body) = register(
        Some(&admin),
        json!({"username": "editor", "password": SEED_PASSWORD, "roles": " admin, user ,,"}),
    )
    .await;
    assert_eq!((status, &body["roles"]), (201, &json!(["admin", "user"])), "trimmed, empty parts dropped");
    let (status, body) =
        register(Some(&admin), json!({"username": "arrays", "password": SEED_PASSWORD, "roles": ["user"]}))
            .await;
    assert_eq!((status, &body["roles"]), (201, &json!(["user"])), "arrays still work");

    // The same request without an admin token grants nothing.
    let (status, body) =
        register(None, json!({"username": "anon", "password": SEED_PASSWORD, "roles": "admin,user"})).await;
    assert_eq!((status, &body["roles"]), (201, &json!(["user"])), "{body}");

    // Names kms cannot grant, in either shape: one clear 422 naming the field.
    for roles in [json!("Admin"), json!("admin,service"), json!(["user", "has space"]), json!(5)] {
        let (status, body) =
            register(Some(&admin), json!({"username": "refused", "password": SEED_PASSWORD, "roles": roles}))
                .await;
        assert_eq!((status, assert_error_shape(&body).as_str()), (422, "validation_failed"), "{roles}");
        assert!(body["message"].as_str().unwrap().starts_with("roles"), "{body}");
    }

    // The seed then logs in with the same shape, and the token carries the granted roles.
    let session = app.kms().login_with("admin", SEED_PASSWORD).await.ok();
    assert_eq!(app.kms().users(&session.access_token).await.status, 200, "the seed's admin is an admin");
    let editor = app.kms().user(&admin, "editor").await.body;
    assert_eq!(editor["roles"], json!(["admin", "user"]));
    assert_utc(&editor["createdAt"]);
    assert_utc(&editor["updatedAt"]);

    // PATCH /users takes the same two shapes.
    let (status, body) =
        app.call("PATCH", "kms", "/users/editor", Some(&admin), Some(json!({"roles": "user"}))).await;
    assert_eq!((status, &body["roles"]), (200, &json!(["user"])), "{body}");
    app.stop().await;
}
on_both_backends!(the_seed_registers_with_comma_separated_roles);

async fn the_seeds_api_keys_are_imported_and_a_deleted_service_gets_a_new_key(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let kms = app.kms();
    let admin = app.admin_token().await;
    let create = |body: Value| app.call("POST", "kms", "/keys", Some(&admin), Some(body));

    // 000 §7, step 3: a 23-character key brought from the seed deployment.
    let seed_key = "new_service_api_key_456";
    let (status, created) = create(json!({"service_name": "service_a", "api_key": seed_key})).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(
        (created["service_name"].as_str(), created["api_key"].as_str()),
        (Some("service_a"), Some(seed_key))
    );
    let verdict = kms.verify_key(seed_key).await;
    assert_eq!((verdict.code, verdict.service_name.as_deref()), (VerifyCode::Valid, Some("service_a")));
    let generated = kms.create_key(&admin, "service_b").await.ok().api_key;
    assert!(generated.starts_with("fk_"));

    // GET /keys tells imported keys from generated ones.
    let keys = kms.keys(&admin).await.body;
    let entry = |service: &str| {
        keys["keys"].as_array().unwrap().iter().find(|k| k["service_name"] == service).cloned().unwrap()
    };
    assert_eq!(entry("service_a")["imported"], true);
    assert_eq!(entry("service_b")["imported"], false);
    assert_utc(&entry("service_a")["created_at"]);

    // Outside the bounds: 16–256 printable ASCII characters, no spaces or control characters.
    for bad in ["fifteen_chars_k", "with a space in the key", "tab\tinside_the_key", &"k".repeat(257)] {
        let (status, body) = create(json!({"service_name": "service_c", "api_key": bad})).await;
        assert_eq!((status, assert_error_shape(&body).as_str()), (422, "validation_failed"));
        assert_eq!(body["details"]["field"], "api_key");
        assert!(!body.to_string().contains(bad), "the key is never echoed");
    }
    let (status, _) = create(json!({"service_name": "service_c", "api_key": "sixteen_chars_ok"})).await;
    assert_eq!(status, 201, "16 characters is the minimum");

    // The seed deletes the service's key; the service can get a key again, the old one is dead.
    kms.revoke_key(&admin, "service_a").await.ok();
    assert_eq!(kms.verify_key(seed_key).await.code, VerifyCode::Revoked);
    let (status, body) = create(json!({"service_name": "service_a", "api_key": seed_key})).await;
    assert_eq!(
        (status, assert_error_shape(&body).as_str()),
        (409, "conflict"),
        "a revoked key never returns"
    );
    let (status, body) = create(json!({"service_name": "service_b", "api_key": "sixteen_chars_ok"})).await;
    assert_eq!((status, assert_error_shape(&body).as_str()), (409, "already_exists"), "{body}");
    let replacement = "api_gateway_api_key_789";
    let (status, body) = create(json!({"service_name": "service_a", "api_key": replacement})).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(kms.verify_key(replacement).await.code, VerifyCode::Valid);
    assert_eq!(kms.verify_key(seed_key).await.code, VerifyCode::Revoked, "still refused");
    assert_eq!(kms.key(&admin, "service_a").await.ok().api_key, replacement);
    app.stop().await;
}
on_both_backends!(the_seeds_api_keys_are_imported_and_a_deleted_service_gets_a_new_key);

/// Python's `datetime.utcnow().isoformat()` has no zone: kms reads it as UTC and answers with `Z`.
#[actix_web::test]
async fn key_expiry_without_a_zone_is_utc_and_every_kms_timestamp_has_a_z() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let admin = app.admin_token().await;
    let body = json!({"service_name": "expiring", "expires_at": "2031-05-04T03:02:01.250000"});
    let (status, created) = app.call("POST", "kms", "/keys", Some(&admin), Some(body)).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["expires_at"], "2031-05-04T03:02:01.250Z");
    let body = json!({"service_name": "offset", "expires_at": "2031-05-04T05:02:01+02:00"});
    let (_, created) = app.call("POST", "kms", "/keys", Some(&admin), Some(body)).await;
    assert_eq!(created["expires_at"], "2031-05-04T03:02:01.000Z");

    let key = app.kms().key(&admin, "expiring").await.body;
    assert_eq!(key["expires_at"], "2031-05-04T03:02:01.250Z");
    let rotated = app.call("POST", "kms", "/keys/expiring/rotate", Some(&admin), Some(json!({}))).await.1;
    assert_utc(&rotated["previous_valid_until"]);
    let listed = app.kms().keys(&admin).await.body;
    for key in listed["keys"].as_array().unwrap() {
        assert_utc(&key["created_at"]);
        if !key["valid_until"].is_null() {
            assert_utc(&key["valid_until"]);
        }
    }
    let users = app.kms().users(&admin).await.body;
    assert_utc(&users["users"][0]["createdAt"]);
    let audit = app.kms().audit(&admin, "limit=5").await.body;
    assert_utc(&audit["entries"][0]["occurredAt"]);
    app.stop().await;
}
