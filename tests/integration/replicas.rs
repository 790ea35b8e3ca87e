//! Several processes over one PostgreSQL database, as replicas run in production: notify
//! replicas share the delivery work without delivering an event twice, and a secret rotation
//! reaches the role in every replica.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::json;

use crate::support::{
    blocking_call as call, blocking_get, eventually, Backend, ServeProcess, Subscriber, TestDatabase,
    PASSWORD,
};

/// Generous: start-up retries back off up to 5 s while the whole suite loads two cores.
const REPLICAS_BOUND: Duration = Duration::from_secs(60);

fn secrets_version(addr: std::net::SocketAddr) -> Option<i64> {
    let (_, _, text) = blocking_get(addr, "/metrics", &[]);
    text.lines().find(|l| l.starts_with("fountain_secrets_version "))?.rsplit(' ').next()?.parse().ok()
}

#[actix_web::test]
async fn replicas_share_deliveries_once_and_all_see_a_rotation() {
    let database = TestDatabase::create(Backend::Postgres);
    let data = database.dir.path().join("data");
    let base_env = [
        ("FOUNTAIN_DATABASE__URL", database.url.as_str()),
        ("FOUNTAIN_ROLES__KMS__BCRYPT_COST", "4"),
        ("FOUNTAIN_ROLES__NOTIFY__POLL_INTERVAL_MS", "100"),
    ];
    crate::support::process::install_with_admin(&data, "root", &base_env);

    // The identity process bootstraps credentials for its roles, then two replicas join.
    let primary = ServeProcess::start(&data, &["kms", "secrets", "notify", "twofa", "sequence"], &base_env);
    let kms_url = format!("http://{}", primary.addr("kms"));
    let secrets_url = format!("http://{}", primary.addr("secrets"));
    let mut replica_env = base_env.to_vec();
    replica_env.push(("FOUNTAIN_PEERS__KMS", kms_url.as_str()));
    replica_env.push(("FOUNTAIN_PEERS__SECRETS", secrets_url.as_str()));
    let replicas: Vec<ServeProcess> =
        (0..2).map(|_| ServeProcess::start(&data, &["notify", "sequence"], &replica_env)).collect();
    let sequences: Vec<_> = std::iter::once(primary.addr("sequence"))
        .chain(replicas.iter().map(|r| r.addr("sequence")))
        .collect();
    eventually("every replica to load its secrets", REPLICAS_BOUND, async || {
        sequences.iter().all(|a| secrets_version(*a) == Some(1)).then_some(())
    })
    .await;

    let (_, session) = call(
        primary.addr("kms"),
        "POST",
        "/login",
        None,
        Some(json!({"username": "root", "password": PASSWORD})),
    );
    let password_token = session["access_token"].as_str().unwrap().to_string();
    // Rotating another service's secrets is a privileged change: the admin steps up first.
    let admin = crate::support::totp::step_up_blocking(primary.addr("twofa"), &password_token).token;
    let subscriber = Subscriber::start();
    let (status, _) = call(
        primary.addr("notify"),
        "POST",
        "/subscriptions",
        Some(&admin),
        Some(json!({"topics": ["demo.*"], "callbackUrl": subscriber.url})),
    );
    assert_eq!(status, 201);

    // Events published through every replica; each delivered exactly once overall.
    let notifies: Vec<_> =
        std::iter::once(primary.addr("notify")).chain(replicas.iter().map(|r| r.addr("notify"))).collect();
    let mut published = Vec::new();
    for n in 0..90 {
        let target = notifies[n % notifies.len()];
        let (status, answer) = call(
            target,
            "POST",
            "/events",
            Some(&admin),
            Some(json!({"topic": "demo.shared", "payload": {"n": n}})),
        );
        assert_eq!(status, 202);
        published.push(answer["id"].as_i64().unwrap());
    }
    subscriber.wait_for("demo.shared", published.len()).await;
    actix_web::rt::time::sleep(Duration::from_millis(500)).await;
    let mut counts: BTreeMap<i64, usize> = BTreeMap::new();
    for body in subscriber.bodies_for("demo.shared") {
        *counts.entry(body["id"].as_i64().unwrap()).or_default() += 1;
    }
    assert_eq!(counts.keys().copied().collect::<Vec<_>>(), published, "every event delivered");
    assert!(counts.values().all(|c| *c == 1), "no event delivered twice: {counts:?}");
    assert!(!subscriber.failing.load(Ordering::SeqCst));

    // A rotation reaches the sequence role in every process.
    let (status, rotated) =
        call(primary.addr("secrets"), "POST", "/secrets/sequence/rotate", Some(&admin), None);
    assert_eq!((status, rotated["version"].as_i64()), (200, Some(2)));
    eventually("every replica to swap in version 2", REPLICAS_BOUND, async || {
        sequences.iter().all(|a| secrets_version(*a) == Some(2)).then_some(())
    })
    .await;

    for process in replicas.into_iter().chain(std::iter::once(primary)) {
        process.signal("TERM");
        assert_eq!(process.wait(Duration::from_secs(30)).0, Some(0));
    }
    subscriber.handle.stop(false).await;
}
