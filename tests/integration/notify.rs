//! notify over real HTTP: publish, signed webhook deliveries to a real subscriber server,
//! retries, dead-lettering, replay, the SSE stream, and bad input.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{json, Value};

use crate::helpers::{assert_error_shape, Backend, Subscriber, TestApp};
use crate::on_both_backends;

const SECRET: &str = "subscriber-secret-0123456789";

fn fast_notify(config: &mut fountain::config::Config) {
    config.set_role_setting("notify", "poll_interval_ms", 50);
    config.set_role_setting("notify", "initial_retry_delay_ms", 100);
    config.set_role_setting("notify", "max_retry_delay_seconds", 1);
}

/// An admin token, and a service token for `svc` (client credentials).
async fn tokens(app: &TestApp) -> (String, String) {
    let admin = app.admin_token().await;
    let service = app.service_token(&admin, "svc").await;
    (admin, service)
}

async fn webhooks_are_signed_retried_and_replayable(backend: Backend) {
    let app = TestApp::spawn_with(backend, fast_notify, None).await;
    let (admin, service) = tokens(&app).await;
    let subscriber = Subscriber::start();
    let (status, sub) = app
        .call(
            "POST",
            "notify",
            "/subscriptions",
            Some(&service),
            Some(json!({"topics": ["demo.*", "keys.created"], "callbackUrl": subscriber.url, "secret": SECRET})),
        )
        .await;
    assert_eq!(status, 201, "{sub}");
    assert!(sub.get("secret").is_none(), "a secret the caller chose is not echoed");

    let (status, published) = app
        .call(
            "POST",
            "notify",
            "/events",
            Some(&service),
            Some(json!({"topic": "demo.hello", "payload": {"n": 1}})),
        )
        .await;
    assert_eq!(status, 202, "{published}");
    let event_id = published["id"].as_i64().unwrap();

    let got = subscriber.wait_for("demo.hello", 1).await;
    assert_eq!(got[0]["payload"], json!({"n": 1}));
    assert_eq!(got[0]["source"], "svc");
    let (headers, body) =
        subscriber.received.lock().unwrap().iter().find(|(_, b)| b.contains("demo.hello")).cloned().unwrap();
    assert_eq!(headers.get("x-fountain-event-id").unwrap(), &event_id.to_string());
    assert_eq!(headers.get("x-fountain-topic").unwrap(), "demo.hello");
    let timestamp: i64 = headers.get("x-fountain-timestamp").unwrap().to_str().unwrap().parse().unwrap();
    let expected = fountain::roles::notify::signature(SECRET.as_bytes(), timestamp, &body);
    assert_eq!(headers.get("x-fountain-signature").unwrap().to_str().unwrap(), expected);

    // Events other roles publish in their own transactions reach subscribers too.
    app.call("POST", "kms", "/keys", Some(&admin), Some(json!({"service_name": "other"}))).await;
    let created = subscriber.wait_for("keys.created", 1).await;
    assert_eq!(created[0]["payload"]["serviceName"], "other");
    assert_eq!(created[0]["source"], "kms");

    // A failing subscriber is retried until it recovers; duplicates carry the same event id.
    subscriber.failing.store(true, Ordering::SeqCst);
    app.call(
        "POST",
        "notify",
        "/events",
        Some(&service),
        Some(json!({"topic": "demo.retry", "payload": {}})),
    )
    .await;
    subscriber.wait_for("demo.retry", 3).await;
    subscriber.failing.store(false, Ordering::SeqCst);
    let (status, _) = app.call("GET", "notify", "/deliveries?status=pending", Some(&admin), None).await;
    assert_eq!(status, 200);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, delivered) =
            app.call("GET", "notify", "/deliveries?status=delivered", Some(&admin), None).await;
        let retried =
            delivered["deliveries"].as_array().unwrap().iter().find(|d| d["attempts"].as_i64() >= Some(4));
        if retried.is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "the retried delivery never succeeded: {delivered}");
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    }
    // Every retry re-sends the very same event (same id, same body); only the signature's
    // timestamp changes between attempts.
    let attempts = subscriber.bodies_for("demo.retry");
    assert!(attempts.len() >= 4, "three failures and a success: {}", attempts.len());
    assert!(attempts.iter().all(|b| *b == attempts[0]), "retries differ: {attempts:?}");

    // Replay.
    let (status, page) =
        app.call("GET", "notify", "/events?topic=demo.hello&since=0", Some(&service), None).await;
    assert_eq!(status, 200);
    assert_eq!(page["events"][0]["id"], event_id);
    assert_eq!(page["events"][0]["payload"], json!({"n": 1}));

    // The owner reads and deletes its subscription; nobody else sees it.
    let id = sub["id"].as_str().unwrap();
    let (status, view) =
        app.call("GET", "notify", &format!("/subscriptions/{id}"), Some(&service), None).await;
    assert_eq!((status, view["callbackUrl"].as_str()), (200, Some(subscriber.url.as_str())));
    assert!(view.get("secret").is_none());
    let (status, _) = app.call("DELETE", "notify", &format!("/subscriptions/{id}"), Some(&admin), None).await;
    assert_eq!(status, 204);
    let (status, _) = app.call("GET", "notify", &format!("/subscriptions/{id}"), Some(&admin), None).await;
    assert_eq!(status, 404);
    subscriber.handle.stop(false).await;
    app.stop().await;
}
on_both_backends!(webhooks_are_signed_retried_and_replayable);

#[actix_web::test]
async fn deliveries_that_keep_failing_are_dead_lettered_and_can_be_retried() {
    let app = TestApp::spawn_with(
        Backend::Sqlite,
        |c| {
            fast_notify(c);
            c.set_role_setting("notify", "max_delivery_age_seconds", 1);
        },
        None,
    )
    .await;
    let (admin, service) = tokens(&app).await;
    let subscriber = Subscriber::start();
    subscriber.failing.store(true, Ordering::SeqCst);
    let (status, sub) = app
        .call(
            "POST",
            "notify",
            "/subscriptions",
            Some(&admin),
            Some(json!({"topics": ["demo.dead"], "callbackUrl": subscriber.url})),
        )
        .await;
    assert_eq!(status, 201);
    let secret = sub["secret"].as_str().expect("a generated secret is returned once");
    assert!(secret.len() >= 32);
    app.call(
        "POST",
        "notify",
        "/events",
        Some(&service),
        Some(json!({"topic": "demo.dead", "payload": {"x": 1}})),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let dead_id = loop {
        let (_, dead) = app.call("GET", "notify", "/deliveries?status=dead", Some(&admin), None).await;
        if let Some(first) = dead["deliveries"].as_array().unwrap().first() {
            assert!(first["lastError"].as_str().unwrap().contains("503"));
            break first["id"].as_i64().unwrap();
        }
        assert!(Instant::now() < deadline, "never dead-lettered");
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    };
    let (status, _) = app.call("POST", "notify", "/deliveries/999999/retry", Some(&admin), None).await;
    assert_eq!(status, 404);
    let (status, _) =
        app.call("POST", "notify", &format!("/deliveries/{dead_id}/retry"), Some(&service), None).await;
    assert_eq!(status, 403, "only an admin manages the dead-letter queue");
    subscriber.failing.store(false, Ordering::SeqCst);
    let (status, _) =
        app.call("POST", "notify", &format!("/deliveries/{dead_id}/retry"), Some(&admin), None).await;
    assert_eq!(status, 202);
    let before = subscriber.bodies_for("demo.dead").len();
    subscriber.wait_for("demo.dead", before + 1).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, delivered) =
            app.call("GET", "notify", "/deliveries?status=delivered", Some(&admin), None).await;
        if delivered["deliveries"].as_array().unwrap().iter().any(|d| d["id"] == dead_id) {
            break;
        }
        assert!(Instant::now() < deadline);
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    subscriber.handle.stop(false).await;
    app.stop().await;
}

#[actix_web::test]
async fn the_event_stream_delivers_live_and_resumes_after_last_event_id() {
    let app = TestApp::spawn_with(Backend::Sqlite, fast_notify, None).await;
    let (admin, service) = tokens(&app).await;
    let mut stream = app
        .client
        .get(app.url("notify", "/events/stream?topics=demo.sse"))
        .insert_header(("authorization", format!("Bearer {admin}")))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status().as_u16(), 200);
    assert_eq!(stream.headers().get("content-type").unwrap(), "text/event-stream");
    app.call(
        "POST",
        "notify",
        "/events",
        Some(&service),
        Some(json!({"topic": "demo.other", "payload": {}})),
    )
    .await;
    let (_, first) = app
        .call(
            "POST",
            "notify",
            "/events",
            Some(&service),
            Some(json!({"topic": "demo.sse", "payload": {"k": "v"}})),
        )
        .await;
    let chunk =
        actix_web::rt::time::timeout(Duration::from_secs(10), stream.next()).await.unwrap().unwrap().unwrap();
    let text = String::from_utf8(chunk.to_vec()).unwrap();
    assert!(text.contains(&format!("id: {}\n", first["id"])), "{text}");
    assert!(text.contains("event: demo.sse\n") && text.contains(r#""k":"v""#), "{text}");
    assert!(!text.contains("demo.other"), "topic filter: {text}");
    drop(stream);

    let (_, second) = app
        .call(
            "POST",
            "notify",
            "/events",
            Some(&service),
            Some(json!({"topic": "demo.sse", "payload": {"k": 2}})),
        )
        .await;
    let mut resumed = app
        .client
        .get(app.url("notify", "/events/stream?topics=demo.sse"))
        .insert_header(("authorization", format!("Bearer {admin}")))
        .insert_header(("last-event-id", first["id"].to_string()))
        .send()
        .await
        .unwrap();
    let chunk = actix_web::rt::time::timeout(Duration::from_secs(10), resumed.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let text = String::from_utf8(chunk.to_vec()).unwrap();
    assert!(
        text.contains(&format!("id: {}\n", second["id"])),
        "missed while away, delivered on resume: {text}"
    );
    assert!(!text.contains(&format!("id: {}\n", first["id"])), "{text}");
    app.stop().await;
}

#[actix_web::test]
async fn bad_input_and_bad_callers_are_refused() {
    let app = TestApp::spawn_with(Backend::Sqlite, fast_notify, None).await;
    let (admin, service) = tokens(&app).await;
    let notify_self = app.url("notify", "/hook");
    let localhost_self = notify_self.replace("127.0.0.1", "localhost");
    let bad_subscriptions = [
        json!({"topics": ["a.b"], "callbackUrl": "ftp://example.test/hook"}),
        json!({"topics": ["a.b"], "callbackUrl": "not a url"}),
        json!({"topics": ["a.b"], "callbackUrl": notify_self}),
        json!({"topics": ["a.b"], "callbackUrl": localhost_self}),
        json!({"topics": ["a.b"], "callbackUrl": "http://user:pw@example.test/hook"}),
        json!({"topics": [], "callbackUrl": "http://example.test/hook"}),
        json!({"topics": ["Not A Topic"], "callbackUrl": "http://example.test/hook"}),
        json!({"topics": ["a.b"], "callbackUrl": "http://example.test/hook", "secret": "short"}),
        json!({"topics": "a.b", "callbackUrl": "http://example.test/hook"}),
    ];
    for body in bad_subscriptions {
        let (status, answer) =
            app.call("POST", "notify", "/subscriptions", Some(&admin), Some(body.clone())).await;
        assert_eq!(status, 422, "{body} -> {answer}");
        assert_eq!(assert_error_shape(&answer), "validation_failed");
    }
    for topic in ["", "Upper.case", "a..b", "with space"] {
        let (status, _) = app
            .call("POST", "notify", "/events", Some(&service), Some(json!({"topic": topic, "payload": {}})))
            .await;
        assert_eq!(status, 422, "{topic:?}");
    }
    let huge = json!({"topic": "demo.big", "payload": {"blob": "x".repeat(200 * 1024)}});
    let (status, answer) = app.call("POST", "notify", "/events", Some(&service), Some(huge)).await;
    assert_eq!((status, assert_error_shape(&answer).as_str()), (413, "payload_too_large"));
    let (status, _) =
        app.call("POST", "notify", "/events", None, Some(json!({"topic": "a.b", "payload": {}}))).await;
    assert_eq!(status, 401);
    let (status, _) = app
        .call(
            "POST",
            "notify",
            "/events",
            Some("forged.token.here"),
            Some(json!({"topic": "a.b", "payload": {}})),
        )
        .await;
    assert_eq!(status, 401);
    let (_, user) = app
        .call(
            "POST",
            "kms",
            "/register",
            None,
            Some(json!({"username": "plain", "password": "correct horse battery"})),
        )
        .await;
    assert_eq!(user["roles"], json!(["user"]));
    let (_, session) = app
        .call(
            "POST",
            "kms",
            "/login",
            None,
            Some(json!({"username": "plain", "password": "correct horse battery"})),
        )
        .await;
    let (status, _) = app
        .call(
            "POST",
            "notify",
            "/events",
            session["access_token"].as_str(),
            Some(json!({"topic": "a.b", "payload": {}})),
        )
        .await;
    assert_eq!(status, 403, "plain users may not publish");
    let (status, _) = app.call("GET", "notify", "/deliveries?status=bogus", Some(&admin), None).await;
    assert_eq!(status, 400);
    let (_, page) = app.call("GET", "notify", "/events?since=0&limit=1000", Some(&admin), None).await;
    assert!(
        page["events"].as_array().unwrap().iter().all(|e| e["topic"] != "demo.big"),
        "nothing half-stored"
    );
    app.stop().await;
}

/// notify killed with SIGKILL while deliveries are failing, then restarted on the same data:
/// every event still arrives, and any duplicate carries the same event id.
#[actix_web::test]
async fn a_killed_notify_loses_no_event() {
    use crate::helpers::{blocking_request, fountain_command, ServeProcess};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let password_file = dir.path().join("pw");
    std::fs::write(&password_file, "correct horse battery").unwrap();
    let created = fountain_command(&data)
        .args(["admin", "create-user", "--username", "root", "--role", "admin", "--password-file"])
        .arg(&password_file)
        .env("FOUNTAIN_ROLES__KMS__BCRYPT_COST", "4")
        .output()
        .unwrap();
    assert!(created.status.success());
    let env = [
        ("FOUNTAIN_ROLES__KMS__BCRYPT_COST", "4"),
        ("FOUNTAIN_ROLES__NOTIFY__POLL_INTERVAL_MS", "50"),
        ("FOUNTAIN_ROLES__NOTIFY__INITIAL_RETRY_DELAY_MS", "100"),
        ("FOUNTAIN_ROLES__NOTIFY__MAX_RETRY_DELAY_SECONDS", "1"),
    ];
    let roles = ["kms", "secrets", "notify"];
    let subscriber = Subscriber::start();
    subscriber.failing.store(true, Ordering::SeqCst);

    let first = ServeProcess::start(&data, &roles, &env);
    let call =
        |process: &ServeProcess, role: &str, method: &str, path: &str, token: Option<&str>, body: Value| {
            let auth = token.map(|t| format!("Bearer {t}"));
            let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
            let (status, _, text) = blocking_request(process.addr(role), method, path, &headers, Some(&body));
            (status, serde_json::from_str::<Value>(&text).unwrap_or(Value::Null))
        };
    let (_, session) = call(
        &first,
        "kms",
        "POST",
        "/login",
        None,
        json!({"username": "root", "password": "correct horse battery"}),
    );
    let admin = session["access_token"].as_str().unwrap().to_string();
    let (status, _) = call(
        &first,
        "notify",
        "POST",
        "/subscriptions",
        Some(&admin),
        json!({"topics": ["demo.*"], "callbackUrl": subscriber.url, "secret": SECRET}),
    );
    assert_eq!(status, 201);
    let mut published = Vec::new();
    for n in 0..20 {
        let (status, answer) = call(
            &first,
            "notify",
            "POST",
            "/events",
            Some(&admin),
            json!({"topic": "demo.crash", "payload": {"n": n}}),
        );
        assert_eq!(status, 202);
        published.push(answer["id"].as_i64().unwrap());
    }
    // Deliveries are being attempted (and failing) when notify dies.
    subscriber.wait_for("demo.crash", 10).await;
    first.signal("KILL");
    let _ = first.wait(Duration::from_secs(10));

    let healed_from = subscriber.received.lock().unwrap().len();
    subscriber.failing.store(false, Ordering::SeqCst);
    let second = ServeProcess::start(&data, &roles, &env);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let successful: std::collections::BTreeSet<i64> = {
            let received = subscriber.received.lock().unwrap();
            // Only what arrived after the subscriber healed was accepted.
            received[healed_from..]
                .iter()
                .filter_map(|(_, body)| serde_json::from_str::<Value>(body).ok()?["id"].as_i64())
                .collect()
        };
        if published.iter().all(|id| successful.contains(id)) {
            break;
        }
        assert!(Instant::now() < deadline, "events lost after the crash: {published:?} vs {successful:?}");
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    }
    // Duplicates are allowed (at least once) but always carry the same id and body.
    let bodies = subscriber.bodies_for("demo.crash");
    for body in &bodies {
        let same_id: Vec<&Value> = bodies.iter().filter(|b| b["id"] == body["id"]).collect();
        assert!(same_id.iter().all(|b| b["payload"] == body["payload"]));
    }
    second.signal("TERM");
    assert_eq!(second.wait(Duration::from_secs(30)).0, Some(0));
    subscriber.handle.stop(false).await;
}
