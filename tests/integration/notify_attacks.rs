//! Attacks on notify over real HTTP, as they were made against the running product:
//!
//! - forging events under topics a service does not own (revocations that lock admins out,
//!   another service's topics) and oversized payloads;
//! - one subscriber that accepts connections and never answers, holding up every other
//!   subscriber's deliveries (head-of-line blocking);
//! - callbacks that make notify call itself under another name (`localhost.`, IPv4-mapped IPv6,
//!   …), link-local and cloud metadata addresses, and a callback that becomes notify itself
//!   after it was accepted (the delivery-time check).

use std::io::Write as _;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fountain::app::Application;
use fountain::roles;
use serde_json::{json, Value};

use crate::on_both_backends;
use crate::support::{
    assert_error_shape, eventually, test_config, Backend, Subscriber, TestApp, TestDatabase,
};

fn fast_notify(config: &mut fountain::config::Config) {
    config.set_role_setting("notify", "poll_interval_ms", 50);
    config.set_role_setting("notify", "initial_retry_delay_ms", 100);
    config.set_role_setting("notify", "max_retry_delay_seconds", 1);
}

/// `POST /events` as `token`, raw: status and answer.
async fn publish(app: &TestApp, token: &str, topic: &str, payload: Value) -> (u16, Value) {
    app.call("POST", "notify", "/events", Some(token), Some(json!({"topic": topic, "payload": payload})))
        .await
}

/// The deliveries of one subscription (any status), as notify's admin view lists them.
async fn deliveries_of(app: &TestApp, admin: &str, subscription: &str) -> Vec<Value> {
    let path = format!("/deliveries?subscription={subscription}&limit=500");
    let (status, answer) = app.call("GET", "notify", &path, Some(admin), None).await;
    assert_eq!(status, 200, "{answer}");
    answer["deliveries"].as_array().expect("deliveries").clone()
}

// ---- 2: topic ownership and payload size ----

#[actix_web::test]
async fn services_publish_only_the_topics_they_own() {
    let app = TestApp::spawn_with(
        Backend::Sqlite,
        |c| {
            fast_notify(c);
            c.set_role_setting("notify", "publish_topics", json!({"svc": ["demo.*"], "bridge": ["*"]}));
            // The request body may be larger than an event payload: the payload bound is notify's.
            c.server.body_limit_bytes = 1 << 20;
        },
        None,
    )
    .await;
    let admin = app.admin_token().await;
    let svc = app.service_token(&admin, "svc").await;
    let other = app.service_token(&admin, "other").await;
    let bridge = app.service_token(&admin, "bridge").await;

    // The attack: a forged account change that would lock the admin out. Refused to every
    // caller, whatever it owns; the admin keeps working.
    let forged = json!({"username": "root", "uid": 1, "epoch": 99, "change": "deleted"});
    for token in [&svc, &bridge, &admin] {
        let (status, answer) = publish(&app, token, "users.changed", forged.clone()).await;
        assert_eq!((status, assert_error_shape(&answer).as_str()), (403, "forbidden"), "{answer}");
        assert_eq!(answer["details"]["rule"], "reserved_topic", "{answer}");
    }
    let (status, _) = app.call("GET", "notify", "/deliveries", Some(&admin), None).await;
    assert_eq!(status, 200, "the admin is not locked out");

    // Another service's topics, look-alike prefixes and bare names are not the caller's.
    for (token, topic) in [
        (&svc, "other.thing"),
        (&svc, "svcx.thing"),
        (&svc, "svc"),
        (&svc, "demo"),
        (&svc, "kms.thing"),
        (&other, "svc.thing"),
        (&other, "demo.thing"),
    ] {
        let (status, answer) = publish(&app, token, topic, json!({})).await;
        assert_eq!((status, assert_error_shape(&answer).as_str()), (403, "forbidden"), "{topic}: {answer}");
        assert_eq!(answer["details"]["rule"], "topic_ownership", "{topic}: {answer}");
        assert!(answer["message"].as_str().unwrap().contains("topic_ownership"), "{answer}");
    }
    let (_, answer) = publish(&app, &svc, "other.thing", json!({})).await;
    assert_eq!(answer["details"]["allowed"], json!(["svc.*", "demo.*"]), "the refusal names what svc owns");

    // What each caller owns is accepted.
    for (token, topic) in [
        (&svc, "svc.thing"),
        (&svc, "svc.deeper.thing"),
        (&svc, "demo.thing"),
        (&other, "other.thing"),
        (&bridge, "anything.goes"),
        (&admin, "anything.at.all"),
    ] {
        let (status, answer) = publish(&app, token, topic, json!({})).await;
        assert_eq!(status, 202, "{topic}: {answer}");
    }

    // Payloads: 64 KiB of serialized JSON pass, one byte more does not.
    let blob = |len: usize| json!({"blob": "x".repeat(len - r#"{"blob":""}"#.len())});
    assert_eq!(blob(65536).to_string().len(), 65536);
    let (status, answer) = publish(&app, &svc, "svc.big", blob(65536)).await;
    assert_eq!(status, 202, "{answer}");
    let (status, answer) = publish(&app, &svc, "svc.bigger", blob(65537)).await;
    assert_eq!((status, assert_error_shape(&answer).as_str()), (413, "payload_too_large"), "{answer}");
    assert_eq!(answer["details"]["limitBytes"], 65536);

    // Nothing refused was stored: every account event is kms's own, and no refused
    // (topic, publisher) pair exists; the accepted ones do.
    let (_, page) = app.call("GET", "notify", "/events?since=0&limit=1000", Some(&admin), None).await;
    let stored: Vec<(String, String)> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["topic"].as_str().unwrap().to_string(), e["source"].as_str().unwrap().to_string()))
        .collect();
    let has = |topic: &str, source: &str| stored.iter().any(|(t, s)| t == topic && s == source);
    assert!(stored.iter().filter(|(t, _)| t == "users.changed").all(|(_, s)| s == "kms"), "{stored:?}");
    for (topic, source) in [
        ("other.thing", "svc"),
        ("svcx.thing", "svc"),
        ("svc", "svc"),
        ("demo", "svc"),
        ("kms.thing", "svc"),
        ("svc.thing", "other"),
        ("demo.thing", "other"),
        ("svc.bigger", "svc"),
    ] {
        assert!(!has(topic, source), "{topic} from {source} was stored: {stored:?}");
    }
    for (topic, source) in
        [("svc.thing", "svc"), ("demo.thing", "svc"), ("other.thing", "other"), ("svc.big", "svc")]
    {
        assert!(has(topic, source), "{topic} from {source} is missing: {stored:?}");
    }
    app.stop().await;
}

// ---- 9: a silent subscriber delays only itself ----

/// A webhook endpoint that accepts every connection and never answers, holding it open.
struct SilentSubscriber {
    url: String,
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    held: Arc<Mutex<Vec<TcpStream>>>,
}

impl SilentSubscriber {
    fn start() -> SilentSubscriber {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let held: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (a, s, h) = (accepted.clone(), stop.clone(), Arc::clone(&held));
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(stream) = stream {
                    h.lock().unwrap().push(stream);
                    a.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
        SilentSubscriber { url: format!("http://{addr}/hook"), addr, accepted, stop, held }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for SilentSubscriber {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so that its thread ends.
        let _ = TcpStream::connect(self.addr).and_then(|mut s| s.write_all(b""));
        self.held.lock().unwrap().clear();
    }
}

const PER_SUBSCRIPTION: usize = 4;

async fn a_silent_subscriber_delays_only_itself(backend: Backend) {
    let app = TestApp::spawn_with(
        backend,
        |c| {
            fast_notify(c);
            // A call to the silent subscriber ends only after a minute: everything the healthy
            // subscriber receives before that happened while those calls were still hanging.
            c.set_role_setting("notify", "delivery_timeout_ms", 60_000);
            c.set_role_setting("notify", "max_deliveries_per_subscription", PER_SUBSCRIPTION);
        },
        None,
    )
    .await;
    let admin = app.admin_token().await;
    let svc = app.service_token(&admin, "svc").await;
    let silent = SilentSubscriber::start();
    let healthy = Subscriber::start();
    let mut ids = Vec::new();
    // The silent subscription first: its deliveries are due first.
    for url in [&silent.url, &healthy.url] {
        let body = json!({"topics": ["svc.load"], "callbackUrl": url});
        let (status, answer) = app.call("POST", "notify", "/subscriptions", Some(&admin), Some(body)).await;
        assert_eq!(status, 201, "{answer}");
        ids.push(answer["id"].as_str().unwrap().to_string());
    }
    for n in 0..300 {
        let (status, answer) = publish(&app, &svc, "svc.load", json!({"n": n})).await;
        assert_eq!(status, 202, "{answer}");
    }

    // The healthy subscriber gets all 300 events…
    healthy.wait_for("svc.load", 300).await;
    eventually("the silent subscriber to be called", Duration::from_secs(20), async || {
        (silent.accepted() > 0).then_some(())
    })
    .await;
    // …while every call to the silent one is still hanging: none has timed out (no attempt has
    // finished), and it holds no more than its own slots.
    let stuck = deliveries_of(&app, &admin, &ids[0]).await;
    assert_eq!(stuck.len(), 300);
    for delivery in &stuck {
        assert_eq!(delivery["status"], "pending", "{delivery}");
        assert_eq!(delivery["attempts"], 0, "a call to the silent subscriber timed out first: {delivery}");
    }
    assert!(silent.accepted() <= PER_SUBSCRIPTION, "{} calls to one subscription", silent.accepted());
    healthy.handle.stop(false).await;
    app.stop().await;
}
on_both_backends!(a_silent_subscriber_delays_only_itself);

// ---- 13: callbacks that reach notify itself, link-local or metadata addresses ----

#[actix_web::test]
async fn callbacks_to_notify_itself_link_local_or_metadata_addresses_are_refused() {
    let app = TestApp::spawn_with(Backend::Sqlite, fast_notify, None).await;
    let admin = app.admin_token().await;
    let svc = app.service_token(&admin, "svc").await;
    let port = app.addr("notify").port();
    let itself = "must not point at the notification service itself";
    let metadata = "must not point at a cloud metadata address";
    let link_local = "must not point at a link-local address";
    let unspecified = "must not point at an unspecified address";
    let refused = [
        // notify's own listener under other names.
        (format!("http://127.0.0.1:{port}/hook"), itself),
        (format!("http://localhost:{port}/hook"), itself),
        (format!("http://localhost.:{port}/hook"), itself),
        (format!("http://LOCALHOST.:{port}/hook"), itself),
        (format!("http://api.localhost:{port}/hook"), itself),
        (format!("http://[::ffff:127.0.0.1]:{port}/hook"), itself),
        (format!("http://[::ffff:7f00:1]:{port}/hook"), itself),
        (format!("http://[::1]:{port}/hook"), itself),
        (format!("http://127.0.0.2:{port}/hook"), itself),
        (format!("http://127.1:{port}/hook"), itself),
        (format!("http://2130706433:{port}/hook"), itself),
        (format!("http://0x7f.0.0.1:{port}/hook"), itself),
        (format!("http://0.0.0.0:{port}/hook"), unspecified),
        (format!("http://[::]:{port}/hook"), unspecified),
        // Cloud metadata, also as IPv4-mapped IPv6.
        ("http://169.254.169.254/latest/meta-data/".into(), metadata),
        ("http://[::ffff:169.254.169.254]/latest/meta-data/".into(), metadata),
        ("http://[::ffff:a9fe:a9fe]/latest/meta-data/".into(), metadata),
        ("http://[fd00:ec2::254]/latest/meta-data/".into(), metadata),
        ("http://100.100.100.200/latest/meta-data/".into(), metadata),
        // Link-local.
        ("http://169.254.10.10:8080/hook".into(), link_local),
        ("http://[fe80::1]/hook".into(), link_local),
        ("http://[::ffff:169.254.1.1]/hook".into(), link_local),
        // A name that never resolves (RFC 6761 `.invalid`).
        ("http://callback.invalid/hook".into(), "its host cannot be resolved"),
    ];
    for (url, reason) in refused {
        for token in [&svc, &admin] {
            let body = json!({"topics": ["svc.x"], "callbackUrl": url});
            let (status, answer) =
                app.call("POST", "notify", "/subscriptions", Some(token), Some(body)).await;
            assert_eq!(
                (status, assert_error_shape(&answer).as_str()),
                (422, "validation_failed"),
                "{url}: {answer}"
            );
            assert_eq!(answer["details"]["field"], "callbackUrl", "{url}: {answer}");
            assert_eq!(answer["details"]["reason"], reason, "{url}: {answer}");
        }
    }

    // Loopback at any other port stays allowed, under any of its names; deliveries go to it.
    let subscriber = Subscriber::start();
    let subscriber_port = subscriber.url.rsplit(':').next().unwrap().split('/').next().unwrap().to_string();
    for url in [subscriber.url.clone(), format!("http://localhost.:{subscriber_port}/hook")] {
        let body = json!({"topics": ["svc.allowed"], "callbackUrl": url});
        let (status, answer) = app.call("POST", "notify", "/subscriptions", Some(&svc), Some(body)).await;
        assert_eq!(status, 201, "{url}: {answer}");
    }
    let (status, _) = publish(&app, &svc, "svc.allowed", json!({})).await;
    assert_eq!(status, 202);
    subscriber.wait_for("svc.allowed", 2).await;
    subscriber.handle.stop(false).await;
    app.stop().await;
}

/// A subscription accepted while its callback was someone else's, whose address later became
/// notify's own (here: notify restarted on that port; in the wild: DNS rebinding). The check
/// before the delivery refuses it: notify never calls itself.
#[actix_web::test]
async fn a_callback_that_became_notify_itself_is_refused_at_delivery() {
    let database = TestDatabase::create(Backend::Sqlite);
    // A port that nothing listens on now: the callback, and the port notify takes later.
    let taken_later = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let start = |config: fountain::config::Config, database: TestDatabase| async move {
        let application = Application::build(config, roles::ALL, None).await.expect("roles start");
        TestApp::from_application(application, database)
    };

    let mut config = test_config(&database);
    fast_notify(&mut config);
    let mut first = start(config, database).await;
    assert_ne!(first.addr("notify").port(), taken_later);
    let admin = first.admin_token().await;
    let body =
        json!({"topics": ["demo.turn"], "callbackUrl": format!("http://127.0.0.1:{taken_later}/hook")});
    let (status, subscription) =
        first.call("POST", "notify", "/subscriptions", Some(&admin), Some(body)).await;
    assert_eq!(status, 201, "not notify's address when subscribed: {subscription}");
    let id = subscription["id"].as_str().unwrap().to_string();
    first.application.take().unwrap().stop(true).await;

    let database = first.database;
    let mut config = test_config(&database);
    fast_notify(&mut config);
    config.roles.entry("notify".into()).or_default().port = Some(taken_later);
    let second = start(config, database).await;
    assert_eq!(second.addr("notify").port(), taken_later);
    let admin = second.kms().login("root").await.access_token;
    let (status, _) = publish(&second, &admin, "demo.turn", json!({})).await;
    assert_eq!(status, 202);
    let attempted = eventually("a delivery attempt", Duration::from_secs(20), async || {
        let deliveries = deliveries_of(&second, &admin, &id).await;
        deliveries.into_iter().find(|d| d["attempts"].as_i64() >= Some(1))
    })
    .await;
    let error = attempted["lastError"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("callback refused:") && error.ends_with("is the notification service itself"),
        "notify called itself: {attempted}"
    );
    assert_ne!(attempted["status"], "delivered", "{attempted}");
    second.stop().await;
}
