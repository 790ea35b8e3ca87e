//! Start-up injection and live rotation: every role loads its secrets at start and swaps in a
//! rotated version without restart while requests keep succeeding.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::{Backend, TestApp};
use crate::on_both_backends;

fn metric(text: &str, name: &str) -> Option<i64> {
    text.lines().find(|l| l.starts_with(name) && !l.starts_with('#'))?.rsplit(' ').next()?.parse().ok()
}

async fn secrets_version(app: &TestApp, role: &str) -> Option<i64> {
    let (_, _, body) = app.get(role, "/metrics").await;
    metric(&String::from_utf8_lossy(&body), "fountain_secrets_version")
}

async fn rotation_reaches_every_role_without_failed_requests(backend: Backend) {
    let app =
        TestApp::spawn_with_injection(backend, |c| c.set_role_setting("notify", "poll_interval_ms", 50))
            .await;
    for role in fountain::roles::ALL {
        assert_eq!(
            secrets_version(&app, role.name()).await,
            Some(1),
            "{} loaded its secrets at start",
            role.name()
        );
        let key = fountain::platform::injection::credential_path(&app.platform.config, role.name());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", key.display());
        }
    }

    let admin = app.admin_token().await;

    // A steady load on every role while two roles' secrets rotate.
    let urls: Vec<String> = fountain::roles::ALL.iter().map(|r| app.url(r.name(), "/health")).collect();
    let load = actix_web::rt::spawn(async move {
        let client = awc::Client::default();
        let (mut ok, mut failed) = (0, 0);
        let until = Instant::now() + Duration::from_secs(3);
        while Instant::now() < until {
            for url in &urls {
                match client.get(url).send().await {
                    Ok(r) if r.status().is_success() => ok += 1,
                    _ => failed += 1,
                }
            }
        }
        (ok, failed)
    });
    for role in ["sequence", "gateway"] {
        let (status, rotated) =
            app.call("POST", "secrets", &format!("/secrets/{role}/rotate"), Some(&admin), None).await;
        assert_eq!((status, rotated["version"].as_i64()), (200, Some(2)), "{rotated}");
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    for role in ["sequence", "gateway"] {
        while secrets_version(&app, role).await != Some(2) {
            assert!(Instant::now() < deadline, "{role} never saw version 2");
            actix_web::rt::time::sleep(Duration::from_millis(50)).await;
        }
        let (_, _, body) = app.get(role, "/metrics").await;
        assert_eq!(
            metric(&String::from_utf8_lossy(&body), "fountain_secret_rotations_applied_total"),
            Some(1)
        );
    }
    assert_eq!(secrets_version(&app, "kms").await, Some(1), "other roles keep their version");
    let (ok, failed) = load.await.unwrap();
    assert_eq!(failed, 0, "no request failed during rotation ({ok} succeeded)");
    assert!(ok > 50);
    app.stop().await;
}
on_both_backends!(rotation_reaches_every_role_without_failed_requests);

#[actix_web::test]
async fn roles_register_with_the_gateway_and_are_found_by_lookup() {
    let app = TestApp::spawn_with_injection(Backend::Sqlite, |_| {}).await;
    let admin = app.admin_token().await;

    // Every role registered itself (dynamic entries), beside the static [peers] entries.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, registry) = app.call("GET", "gateway", "/registry", Some(&admin), None).await;
        let dynamic: Vec<&str> = registry["entries"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["static"] == false)
            .map(|e| e["service"].as_str().unwrap())
            .collect();
        if fountain::roles::ALL.iter().all(|r| dynamic.contains(&r.name())) {
            break;
        }
        assert!(Instant::now() < deadline, "not every role registered: {registry}");
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, found) = app.call("GET", "gateway", "/lookup/kms", Some(&admin), None).await;
    assert_eq!(status, 200);
    assert_eq!(found["url"].as_str(), Some(app.url("kms", "").as_str()));
    assert_eq!(found["healthy"], true);
    let (status, _) = app.call("GET", "gateway", "/lookup/nothing-here", Some(&admin), None).await;
    assert_eq!(status, 404);
    let (status, _) = app.call("GET", "gateway", "/lookup/kms", None, None).await;
    assert_eq!(status, 401);

    // Registration rules, and expiry of dynamic entries.
    let token = app.service_token(&admin, "svc").await;
    let svc = token.as_str();
    let register =
        |service: &str, url: &str, ttl: i64| json!({"service": service, "url": url, "ttlSeconds": ttl});
    let (status, _) = app
        .call("POST", "gateway", "/registry", Some(svc), Some(register("kms", "http://evil.test", 30)))
        .await;
    assert_eq!(status, 403, "a service registers only itself");
    for bad in [
        register("svc", "ftp://x.test", 30),
        // TLS ends at Caddy: the gateway reaches services over plain http only.
        register("svc", "https://x.test", 30),
        register("svc", "http://user:pw@x.test", 30),
        register("svc", "http://x.test", 1),
        register("Bad Name", "http://x.test", 30),
    ] {
        let (status, _) = app.call("POST", "gateway", "/registry", Some(svc), Some(bad.clone())).await;
        assert_eq!(status, 422, "{bad}");
    }
    let (status, _) = app
        .call("POST", "gateway", "/registry", Some(svc), Some(register("svc", "http://svc.test:9/", 5)))
        .await;
    assert_eq!(status, 204);
    let (_, found) = app.call("GET", "gateway", "/lookup/svc", Some(&admin), None).await;
    assert_eq!(found["url"], "http://svc.test:9");
    actix_web::rt::time::sleep(Duration::from_secs(6)).await;
    let (status, _) = app.call("GET", "gateway", "/lookup/svc", Some(&admin), None).await;
    assert_eq!(status, 404, "the entry expired without a heartbeat");
    app.stop().await;
}
