//! Attacks on what every role shares: client addresses behind proxies, slow bodies, the
//! database files' permissions.

use std::io::{Read, Write};
use std::time::Duration;

use serde_json::json;

use crate::support::{assert_error_shape, Backend, TestApp, PASSWORD};

/// Through Caddy (a trusted proxy: the test client plays it) and the gateway, kms sees each real
/// client, so failures of many clients never lock out another client's correct login.
#[actix_web::test]
async fn login_limits_behind_two_proxies_count_each_real_client() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    app.create_admin();
    for client in 1..=25 {
        let response = app
            .client
            .post(app.url("gateway", "/kms/login"))
            .insert_header(("x-forwarded-for", format!("203.0.113.{client}")))
            .send_json(&json!({"username": format!("nobody{client}"), "password": "wrong password 123"}))
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 401, "client {client}");
    }
    let mut response = app
        .client
        .post(app.url("gateway", "/kms/login"))
        .insert_header(("x-forwarded-for", "198.51.100.1"))
        .send_json(&json!({"username": "root", "password": PASSWORD}))
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200, "another client's correct login is not throttled");
    let session: serde_json::Value = response.json().await.unwrap();
    let admin = session["access_token"].as_str().unwrap();
    let (_, audit) = app.call("GET", "kms", "/audit?actor=root", Some(admin), None).await;
    let login = audit["entries"].as_array().unwrap().iter().find(|e| e["action"] == "login").unwrap();
    assert_eq!(login["sourceAddr"], "198.51.100.1", "the audit names the real client");
    // A client that claims an address itself is not believed: its own address is used.
    let response = app
        .client
        .post(app.url("kms", "/login"))
        .insert_header(("x-forwarded-for", "1.2.3.4"))
        .send_json(&json!({"username": "root", "password": PASSWORD}))
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let (_, audit) = app.call("GET", "kms", "/audit?actor=root", Some(admin), None).await;
    let latest = audit["entries"].as_array().unwrap().iter().find(|e| e["action"] == "login").unwrap();
    assert_eq!(latest["sourceAddr"], "1.2.3.4", "the test client is loopback, a trusted proxy");
    app.stop().await;
}

/// A client that sends its body a byte at a time gets 408 once the read timeout passes,
/// instead of holding the connection for as long as it likes.
#[actix_web::test]
async fn a_trickled_body_is_cut_off_with_408() {
    let app = TestApp::spawn_with(Backend::Sqlite, |c| c.server.body_read_timeout_seconds = 1, None).await;
    let addr = app.addr("kms");
    let answer = actix_web::rt::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let head = "POST /register HTTP/1.1\r\nHost: kms\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n";
        stream.write_all(head.as_bytes()).unwrap();
        stream.write_all(b"{\"username\"").unwrap();
        let mut answer = Vec::new();
        let mut buffer = [0u8; 4096];
        // Read the answer head and body (the server closes or the body ends).
        while let Ok(n) = stream.read(&mut buffer) {
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buffer[..n]);
            if String::from_utf8_lossy(&answer).contains("}") {
                break;
            }
        }
        String::from_utf8_lossy(&answer).into_owned()
    })
    .await
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    let body: serde_json::Value = serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(assert_error_shape(&body), "request_timeout");
    app.stop().await;
}

#[cfg(unix)]
#[actix_web::test]
async fn the_database_files_are_readable_by_their_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let app = TestApp::spawn(Backend::Sqlite).await;
    app.create_admin();
    let db = app.database.sqlite_path().unwrap();
    for suffix in ["", "-wal", "-shm"] {
        let file = format!("{}{suffix}", db.display());
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{file}");
    }
    app.stop().await;
}

/// A request with an unknown `kid` starts a JWKS fetch; the client answering 415 at once (no
/// Content-Type) used to cancel that fetch after its cool-down had been stamped, so valid tokens
/// were refused until the cool-down passed. The fetch now completes on its own.
#[actix_web::test]
async fn a_cancelled_request_cannot_starve_the_jwks_refresh() {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    let app = TestApp::spawn(Backend::Sqlite).await;
    let admin = app.admin_token().await;
    // notify in a process of its own (kms's process verifies with kms's own keys, not the
    // JWKS), over the same database and master key, reaching kms over HTTP.
    let (database, key_file, kms) = (
        app.database.url.clone(),
        app.database.dir.path().join("data/master.key"),
        format!("http://{}", app.addr("kms")),
    );
    let notify_only = [fountain::roles::find("notify").unwrap()];
    let apart = TestApp::spawn_roles(
        Backend::Sqlite,
        &notify_only,
        move |c| {
            c.database.url = database;
            c.security.master_key_file = key_file.display().to_string();
            c.peers.insert("kms".into(), kms);
        },
        None,
    )
    .await;
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"EdDSA","typ":"JWT","kid":"attacker-chosen-kid"}"#);
    let claims = URL_SAFE_NO_PAD.encode(r#"{"sub":"x"}"#);
    let forged = format!("{header}.{claims}.{}", URL_SAFE_NO_PAD.encode([7u8; 64]));
    // notify has not fetched kms's keys yet: this request makes it start, then is answered 415.
    let response = app
        .client
        .post(apart.url("notify", "/events"))
        .insert_header(("authorization", format!("Bearer {forged}")))
        .send_body("{}")
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 415);
    // A valid token right after is accepted: the keys arrived although the request went away.
    let (status, body) = apart.call("GET", "notify", "/events", Some(&admin), None).await;
    assert_eq!(status, 200, "{body}");
    apart.stop().await;
    app.stop().await;
}
