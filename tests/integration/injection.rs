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
    let app = TestApp::spawn_with_injection(backend, |c| c.notify.poll_interval_ms = 50).await;
    for role in fountain::roles::ALL {
        assert_eq!(
            secrets_version(&app, role.name).await,
            Some(1),
            "{} loaded its secrets at start",
            role.name
        );
        let key = fountain::platform::injection::credential_path(&app.platform.config, role.name);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", key.display());
        }
    }

    let password = "correct horse battery";
    fountain::roles::kms::create_user_offline(&app.platform, "root", password, &["admin".to_string()])
        .unwrap();
    let (_, session) = app
        .call("POST", "kms", "/login", None, Some(json!({"username": "root", "password": password})))
        .await;
    let admin = session["access_token"].as_str().unwrap().to_string();

    // A steady load on every role while two roles' secrets rotate.
    let urls: Vec<String> = fountain::roles::ALL.iter().map(|r| app.url(r.name, "/health")).collect();
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
