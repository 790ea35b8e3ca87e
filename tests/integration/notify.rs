//! notify over real HTTP: publish, signed webhook deliveries to a real subscriber server,
//! retries, dead-lettering, replay, the SSE stream, and bad input.

use std::time::Duration;

use serde_json::{json, Value};

use crate::on_both_backends;
use crate::support::{assert_error_shape, eventually, Backend, Subscriber, TestApp, ANONYMOUS};

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
    let notify = app.notify();
    let (admin, service) = tokens(&app).await;
    let subscriber = Subscriber::start();
    let subscribed =
        notify.subscribe(&service, &["svc.*", "keys.created"], &subscriber.url, Some(SECRET)).await;
    let subscription = subscribed.ok();
    assert!(subscribed.body.get("secret").is_none(), "a secret the caller chose is not echoed");

    let event_id = notify.publish(&service, "svc.hello", json!({"n": 1})).await.ok().id;

    let got = subscriber.wait_for("svc.hello", 1).await;
    assert_eq!(got[0]["payload"], json!({"n": 1}));
    assert_eq!(got[0]["source"], "svc");
    let (headers, body) =
        subscriber.received.lock().unwrap().iter().find(|(_, b)| b.contains("svc.hello")).cloned().unwrap();
    assert_eq!(headers.get("x-fountain-event-id").unwrap(), &event_id.to_string());
    assert_eq!(headers.get("x-fountain-topic").unwrap(), "svc.hello");
    let timestamp: i64 = headers.get("x-fountain-timestamp").unwrap().to_str().unwrap().parse().unwrap();
    let expected = fountain::roles::notify::signature(SECRET.as_bytes(), timestamp, &body);
    assert_eq!(headers.get("x-fountain-signature").unwrap().to_str().unwrap(), expected);

    // Events other roles publish in their own transactions reach subscribers too.
    app.kms().create_key(&admin, "other").await.ok();
    let created = subscriber.wait_for("keys.created", 1).await;
    assert_eq!(created[0]["payload"]["serviceName"], "other");
    assert_eq!(created[0]["source"], "kms");

    // A failing subscriber is retried until it recovers; duplicates carry the same event id.
    subscriber.fail(true);
    notify.publish(&service, "svc.retry", json!({})).await.ok();
    subscriber.wait_for("svc.retry", 3).await;
    subscriber.fail(false);
    notify.deliveries(&admin, "pending").await.ok();
    eventually("the retried delivery to succeed", Duration::from_secs(20), async || {
        let delivered = notify.deliveries(&admin, "delivered").await.ok();
        delivered.deliveries.iter().any(|d| d.attempts >= 4).then_some(())
    })
    .await;
    // Every retry re-sends the very same event (same id, same body); only the signature's
    // timestamp changes between attempts.
    let attempts = subscriber.bodies_for("svc.retry");
    assert!(attempts.len() >= 4, "three failures and a success: {}", attempts.len());
    assert!(attempts.iter().all(|b| *b == attempts[0]), "retries differ: {attempts:?}");

    // Replay.
    let page = notify.replay(&service, "topic=svc.hello&since=0").await.ok();
    assert_eq!(page.events[0].id, event_id);
    assert_eq!(page.events[0].payload, json!({"n": 1}));

    // The owner reads and deletes its subscription; nobody else sees it.
    let view = notify.subscription(&service, &subscription.id).await;
    assert_eq!(view.ok().callback_url, subscriber.url);
    assert!(view.body.get("secret").is_none());
    notify.unsubscribe(&admin, &subscription.id).await.ok();
    assert_eq!(notify.subscription(&admin, &subscription.id).await.status, 404);
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
    let notify = app.notify();
    let (admin, service) = tokens(&app).await;
    let subscriber = Subscriber::start();
    subscriber.fail(true);
    let subscription = notify.subscribe(&admin, &["svc.dead"], &subscriber.url, None).await.ok();
    let secret = subscription.secret.expect("a generated secret is returned once");
    assert!(secret.len() >= 32);
    notify.publish(&service, "svc.dead", json!({"x": 1})).await.ok();
    let dead = eventually("the delivery to be dead-lettered", Duration::from_secs(20), async || {
        notify.deliveries(&admin, "dead").await.ok().deliveries.into_iter().next()
    })
    .await;
    assert!(dead.last_error.as_deref().is_some_and(|e| e.contains("503")), "{dead:?}");
    assert_eq!(notify.retry_delivery(&admin, 999999).await.status, 404);
    assert_eq!(
        notify.retry_delivery(&service, dead.id).await.status,
        403,
        "only an admin manages the dead-letter queue"
    );
    subscriber.fail(false);
    notify.retry_delivery(&admin, dead.id).await.ok();
    let before = subscriber.bodies_for("svc.dead").len();
    subscriber.wait_for("svc.dead", before + 1).await;
    eventually("the retried delivery to be delivered", Duration::from_secs(10), async || {
        let delivered = notify.deliveries(&admin, "delivered").await.ok();
        delivered.deliveries.iter().any(|d| d.id == dead.id).then_some(())
    })
    .await;
    subscriber.handle.stop(false).await;
    app.stop().await;
}

#[actix_web::test]
async fn the_event_stream_delivers_live_and_resumes_after_last_event_id() {
    let app = TestApp::spawn_with(Backend::Sqlite, fast_notify, None).await;
    let notify = app.notify();
    let (admin, service) = tokens(&app).await;
    let mut stream = notify.stream(&admin, "svc.sse", None).await;
    assert_eq!(stream.status, 200);
    assert_eq!(stream.content_type, "text/event-stream");
    notify.publish(&service, "svc.other", json!({})).await.ok();
    let first = notify.publish(&service, "svc.sse", json!({"k": "v"})).await.ok().id;
    let text = stream.next_events().await;
    assert!(text.contains(&format!("id: {first}\n")), "{text}");
    assert!(text.contains("event: svc.sse\n") && text.contains(r#""k":"v""#), "{text}");
    assert!(!text.contains("svc.other"), "topic filter: {text}");
    drop(stream);

    let second = notify.publish(&service, "svc.sse", json!({"k": 2})).await.ok().id;
    let mut resumed = notify.stream(&admin, "svc.sse", Some(first)).await;
    let text = resumed.next_events().await;
    assert!(text.contains(&format!("id: {second}\n")), "missed while away, delivered on resume: {text}");
    assert!(!text.contains(&format!("id: {first}\n")), "{text}");
    app.stop().await;
}

#[actix_web::test]
async fn bad_input_and_bad_callers_are_refused() {
    let app = TestApp::spawn_with(Backend::Sqlite, fast_notify, None).await;
    let notify = app.notify();
    let (admin, service) = tokens(&app).await;
    // Malformed subscriptions and events, sent raw.
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
    let huge = json!({"topic": "svc.big", "payload": {"blob": "x".repeat(200 * 1024)}});
    let (status, answer) = app.call("POST", "notify", "/events", Some(&service), Some(huge)).await;
    assert_eq!((status, assert_error_shape(&answer).as_str()), (413, "payload_too_large"));
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
    let (status, _) = app.call("GET", "notify", "/deliveries?status=bogus", Some(&admin), None).await;
    assert_eq!(status, 400);

    // Callers without the right to publish.
    assert_eq!(notify.publish(ANONYMOUS, "a.b", json!({})).await.status, 401);
    let plain = app.kms().register(ANONYMOUS, "plain", &[]).await.ok();
    assert_eq!(plain.roles, ["user"]);
    let session = app.kms().login("plain").await;
    assert_eq!(
        notify.publish(&session.access_token, "a.b", json!({})).await.status,
        403,
        "plain users may not publish"
    );
    let page = notify.replay(&admin, "since=0&limit=1000").await.ok();
    assert!(page.events.iter().all(|e| e.topic != "svc.big"), "nothing half-stored");
    app.stop().await;
}

/// notify killed with SIGKILL while deliveries are failing, then restarted on the same data:
/// every event still arrives, and any duplicate carries the same event id.
#[actix_web::test]
async fn a_killed_notify_loses_no_event() {
    use crate::support::{blocking_call, ServeProcess, PASSWORD};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    crate::support::process::install_with_admin(&data, "root", &[]);
    let env = [
        ("FOUNTAIN_ROLES__KMS__BCRYPT_COST", "4"),
        ("FOUNTAIN_ROLES__NOTIFY__POLL_INTERVAL_MS", "50"),
        ("FOUNTAIN_ROLES__NOTIFY__INITIAL_RETRY_DELAY_MS", "100"),
        ("FOUNTAIN_ROLES__NOTIFY__MAX_RETRY_DELAY_SECONDS", "1"),
    ];
    let roles = ["kms", "secrets", "notify"];
    let subscriber = Subscriber::start();
    subscriber.fail(true);

    let first = ServeProcess::start(&data, &roles, &env);
    let login = json!({"username": "root", "password": PASSWORD});
    let (_, session) = blocking_call(first.addr("kms"), "POST", "/login", None, Some(login));
    let admin = session["access_token"].as_str().unwrap().to_string();
    let subscription = json!({"topics": ["demo.*"], "callbackUrl": subscriber.url, "secret": SECRET});
    let (status, _) =
        blocking_call(first.addr("notify"), "POST", "/subscriptions", Some(&admin), Some(subscription));
    assert_eq!(status, 201);
    let mut published = Vec::new();
    for n in 0..20 {
        let event = json!({"topic": "demo.crash", "payload": {"n": n}});
        let (status, answer) =
            blocking_call(first.addr("notify"), "POST", "/events", Some(&admin), Some(event));
        assert_eq!(status, 202);
        published.push(answer["id"].as_i64().unwrap());
    }
    // Deliveries are being attempted (and failing) when notify dies.
    subscriber.wait_for("demo.crash", 10).await;
    first.signal("KILL");
    let _ = first.wait(Duration::from_secs(10));

    let healed_from = subscriber.received.lock().unwrap().len();
    subscriber.fail(false);
    let second = ServeProcess::start(&data, &roles, &env);
    let what = format!("every published event ({published:?}) to be delivered after the restart");
    eventually(what, Duration::from_secs(30), async || {
        let successful: std::collections::BTreeSet<i64> = {
            let received = subscriber.received.lock().unwrap();
            // Only what arrived after the subscriber healed was accepted.
            received[healed_from..]
                .iter()
                .filter_map(|(_, body)| serde_json::from_str::<Value>(body).ok()?["id"].as_i64())
                .collect()
        };
        published.iter().all(|id| successful.contains(id)).then_some(())
    })
    .await;
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

/// The API's one timestamp format: RFC 3339 in UTC with a `Z` and milliseconds.
#[track_caller]
fn assert_utc_with_z(what: &str, value: &Value) {
    let text = value.as_str().unwrap_or_else(|| panic!("{what}: not a string: {value}"));
    assert!(
        chrono::DateTime::parse_from_rfc3339(text).is_ok() && text.ends_with('Z') && text.len() == 24,
        "{what}: {text} is not RFC 3339 UTC with Z and milliseconds"
    );
}

/// Every timestamp notify writes — replay, the SSE stream, webhooks, subscriptions, deliveries,
/// and the payloads of the roles' own events — is RFC 3339 UTC with `Z`, and an event payload
/// keeps its fields' types (a version is a number).
#[actix_web::test]
async fn every_timestamp_is_rfc_3339_utc_with_z_in_bodies_streams_webhooks_and_payloads() {
    let app = TestApp::spawn_with(Backend::Sqlite, fast_notify, None).await;
    let notify = app.notify();
    let (admin, service) = tokens(&app).await;
    let subscriber = Subscriber::start();
    let subscription =
        notify.subscribe(&service, &["svc.*", "secrets.rotated"], &subscriber.url, Some(SECRET)).await;
    assert_utc_with_z("subscription createdAt", &subscription.body["createdAt"]);
    let mut stream = notify.stream(&admin, "secrets.rotated", None).await;

    app.secrets().create(&admin, "svc", None).await.ok();
    app.secrets().rotate(&admin, "svc", None).await.ok();
    notify.publish(&service, "svc.stamp", json!({})).await.ok();

    // The webhook body.
    let hooks = subscriber.wait_for("secrets.rotated", 1).await;
    assert_utc_with_z("webhook createdAt", &hooks[0]["createdAt"]);
    assert_utc_with_z("webhook payload rotationTime", &hooks[0]["payload"]["rotationTime"]);
    assert_eq!(hooks[0]["payload"]["version"], json!(2), "a version is a number: {}", hooks[0]);
    assert_utc_with_z("webhook createdAt", &subscriber.wait_for("svc.stamp", 1).await[0]["createdAt"]);

    // The event stream.
    let text = stream.next_events().await;
    let data = text.lines().find_map(|l| l.strip_prefix("data: ")).expect("a data line");
    let streamed: Value = serde_json::from_str(data).unwrap();
    assert_utc_with_z("SSE createdAt", &streamed["createdAt"]);
    assert_utc_with_z("SSE payload rotationTime", &streamed["payload"]["rotationTime"]);
    assert_eq!(streamed["payload"]["version"], json!(2));

    // Replay, subscriptions and deliveries.
    let page = notify.replay(&admin, "since=0&limit=1000").await;
    let events = page.body["events"].as_array().unwrap();
    assert!(!events.is_empty());
    for event in events {
        assert_utc_with_z("replayed createdAt", &event["createdAt"]);
    }
    let id = subscription.ok().id;
    let view = notify.subscription(&service, &id).await;
    assert_utc_with_z("subscription createdAt", &view.body["createdAt"]);
    let delivered = eventually("deliveries to be recorded", Duration::from_secs(20), async || {
        let (_, list) = app.call("GET", "notify", "/deliveries?status=delivered", Some(&admin), None).await;
        list["deliveries"].as_array().filter(|d| d.len() >= 2).cloned()
    })
    .await;
    for delivery in delivered {
        for field in ["createdAt", "nextAttemptAt", "deliveredAt"] {
            assert_utc_with_z(field, &delivery[field]);
        }
    }
    subscriber.handle.stop(false).await;
    app.stop().await;
}

/// `GET /subscriptions`: a service lists its own subscriptions, an admin every one, a page at a
/// time; secrets are never listed.
async fn subscriptions_are_listed_per_owner_and_paged(backend: Backend) {
    let app = TestApp::spawn_with(backend, fast_notify, None).await;
    let notify = app.notify();
    let (admin, service) = tokens(&app).await;
    let other = app.service_token(&admin, "other").await;
    let mut own = Vec::new();
    for n in 0..3 {
        let hook = format!("http://localhost:9/svc/{n}");
        own.push(notify.subscribe(&service, &["svc.*"], &hook, None).await.ok().id);
    }
    let theirs = notify.subscribe(&other, &["other.*"], "http://localhost:9/other", None).await.ok().id;
    let by_admin = notify.subscribe(&admin, &["*"], "http://localhost:9/admin", None).await.ok().id;
    own.sort();

    let listed = |token: String, query: &'static str| {
        let app = &app;
        async move {
            let (status, page) =
                app.call("GET", "notify", &format!("/subscriptions{query}"), Some(&token), None).await;
            assert_eq!(status, 200, "{page}");
            assert!(!page.to_string().contains("\"secret\""), "secrets are never listed: {page}");
            let ids: Vec<String> = page["subscriptions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["id"].as_str().unwrap().to_string())
                .collect();
            (ids, page["next"].as_str().map(str::to_string))
        }
    };
    assert_eq!(listed(service.clone(), "").await, (own.clone(), None), "a service sees its own");
    assert_eq!(listed(other.clone(), "").await, (vec![theirs.clone()], None));
    let mut everyone = own.clone();
    everyone.extend([theirs, by_admin]);
    everyone.sort();
    assert_eq!(listed(admin.clone(), "").await.0, everyone, "an admin sees every subscription");

    // Pages of two, in id order, until `next` is absent.
    let (first, next) = listed(service.clone(), "?limit=2").await;
    assert_eq!(first, own[..2]);
    let next = next.expect("a cursor to the next page");
    let rest = app
        .call("GET", "notify", &format!("/subscriptions?limit=2&after={next}"), Some(&service), None)
        .await;
    assert_eq!(rest.0, 200);
    assert_eq!(rest.1["subscriptions"].as_array().unwrap().len(), 1);
    assert_eq!(rest.1["subscriptions"][0]["id"], own[2].as_str());
    assert!(rest.1["next"].is_null());

    for bad in ["?limit=0", "?limit=201", "?limit=x"] {
        let (status, body) =
            app.call("GET", "notify", &format!("/subscriptions{bad}"), Some(&admin), None).await;
        assert_eq!((status, assert_error_shape(&body).as_str()), (400, "bad_request"), "{bad}");
    }
    assert_eq!(app.call("GET", "notify", "/subscriptions", None, None).await.0, 401);
    let plain = app.kms().register(ANONYMOUS, "plain", &[]).await.ok();
    assert_eq!(plain.roles, ["user"]);
    let session = app.kms().login("plain").await;
    let (status, _) = app.call("GET", "notify", "/subscriptions", Some(&session.access_token), None).await;
    assert_eq!(status, 403, "a plain user lists nothing");
    app.stop().await;
}
on_both_backends!(subscriptions_are_listed_per_owner_and_paged);
