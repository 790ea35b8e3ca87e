//! Start-up injection and live rotation: every role loads its secrets at start and swaps in a
//! rotated version without restart while requests keep succeeding.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::on_both_backends;
use crate::support::{eventually, Backend, TestApp, ANONYMOUS};

fn metric(text: &str, name: &str) -> Option<i64> {
    text.lines().find(|l| l.starts_with(name) && !l.starts_with('#'))?.rsplit(' ').next()?.parse().ok()
}

async fn secrets_version(app: &TestApp, role: &str) -> Option<i64> {
    metric(&app.metrics(role).await, "fountain_secrets_version")
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
        assert_eq!(app.secrets().rotate(&admin, role, None).await.ok().version, 2);
    }
    for role in ["sequence", "gateway"] {
        eventually(format!("{role} to swap in version 2"), Duration::from_secs(15), async || {
            (secrets_version(&app, role).await == Some(2)).then_some(())
        })
        .await;
        assert_eq!(metric(&app.metrics(role).await, "fountain_secret_rotations_applied_total"), Some(1));
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
    let gateway = app.gateway();
    let admin = app.admin_token().await;

    // Every role registered itself (dynamic entries), beside the static [peers] entries.
    eventually("every role to register itself with the gateway", Duration::from_secs(10), async || {
        let registry = gateway.registry(&admin).await.ok();
        let dynamic: Vec<&str> =
            registry.entries.iter().filter(|e| !e.is_static).map(|e| e.service.as_str()).collect();
        fountain::roles::ALL.iter().all(|r| dynamic.contains(&r.name())).then_some(())
    })
    .await;
    let found = gateway.lookup(&admin, "kms").await.ok();
    assert_eq!(found.url, app.url("kms", ""));
    assert!(found.healthy);
    assert_eq!(gateway.lookup(&admin, "nothing-here").await.status, 404);
    assert_eq!(gateway.lookup(ANONYMOUS, "kms").await.status, 401);

    // Registration rules, and expiry of dynamic entries.
    let svc = app.service_token(&admin, "svc").await;
    assert_eq!(
        gateway.register_instance(&svc, "kms", "http://evil.test", 30).await.status,
        403,
        "a service registers only itself"
    );
    // Invalid registrations, sent raw.
    let register =
        |service: &str, url: &str, ttl: i64| json!({"service": service, "url": url, "ttlSeconds": ttl});
    for bad in [
        register("svc", "ftp://x.test", 30),
        // TLS ends at Caddy: the gateway reaches services over plain http only.
        register("svc", "https://x.test", 30),
        register("svc", "http://user:pw@x.test", 30),
        register("svc", "http://x.test", 1),
        register("Bad Name", "http://x.test", 30),
    ] {
        let (status, _) = app.call("POST", "gateway", "/registry", Some(&svc), Some(bad.clone())).await;
        assert_eq!(status, 422, "{bad}");
    }
    gateway.register_instance(&svc, "svc", "http://svc.test:9/", 5).await.ok();
    assert_eq!(gateway.lookup(&admin, "svc").await.ok().url, "http://svc.test:9");
    actix_web::rt::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(gateway.lookup(&admin, "svc").await.status, 404, "the entry expired without a heartbeat");
    app.stop().await;
}
