//! The 2FA service: codes from an independent TOTP implementation (Python's `pyotp`), each
//! accepted once within ±1 step; recovery codes once; the lockout; step-up tokens that kms signs
//! only for twofa, bound to the session they came from; the policy that confines members of
//! some roles to step-up; the gateway's mfa rules; nothing secret at rest or in the logs.

use std::process::Command;
use std::time::Duration;

use base64::Engine;
use serde_json::{json, Value};

use crate::on_both_backends;
use crate::support::clients::Enrollment;
use crate::support::{assert_not_at_rest, Backend, TestApp};

/// The TOTP code of `secret` (base32) `steps` time steps from now, as `pyotp` computes it.
pub fn pyotp_code(secret: &str, steps: i64) -> String {
    let script = "import pyotp, sys, time; print(pyotp.TOTP(sys.argv[1]).at(int(time.time()) + 30 * int(sys.argv[2])))";
    let output = Command::new("python3")
        .args(["-c", script, secret, &steps.to_string()])
        .output()
        .expect("python3 runs");
    assert!(output.status.success(), "pyotp: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).expect("utf-8").trim().to_string()
}

/// Waits out the last seconds of a 30-second step, so that a code computed now still names the
/// step the server sees when a sequence of calls relies on which step is current.
fn away_from_a_step_edge() {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let left = 30 - now % 30;
    if left < 5 {
        std::thread::sleep(Duration::from_secs(left + 1));
    }
}

/// The claims of a JWT, read without checking it.
fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("a JWT");
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap())
        .unwrap()
}

/// Enrols and activates the holder of `token` with the code of `activation_step`; returns the
/// enrolment and the recovery codes.
async fn activated(app: &TestApp, token: &str, activation_step: i64) -> (Enrollment, Vec<String>) {
    let enrollment = app.twofa().enroll(token, None).await.ok();
    let codes = app.twofa().activate(token, &pyotp_code(&enrollment.secret, activation_step)).await.ok();
    (enrollment, codes.recovery_codes)
}

async fn user(app: &TestApp, admin: &str, name: &str) -> String {
    app.kms().register(admin, name, &[]).await.ok();
    app.kms().login(name).await.access_token
}

async fn codes_from_pyotp_are_accepted_once_within_one_step_of_skew(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_token().await;
    let alice = user(&app, &admin, "alice").await;
    away_from_a_step_edge();

    let enrollment = app.twofa().enroll(&alice, None).await.ok();
    assert_eq!(
        enrollment.otpauth_uri,
        format!("otpauth://totp/FountainAI:alice?secret={}&issuer=FountainAI", enrollment.secret)
    );
    assert!(enrollment.qr_svg.starts_with("<?xml") && enrollment.qr_svg.contains("<svg"));
    assert!(app.twofa().status(&alice).await.ok().pending);
    // Not active yet: nothing to step up with.
    assert_eq!(
        app.twofa().verify(&alice, &pyotp_code(&enrollment.secret, 0)).await.refusal(),
        (409, "conflict")
    );

    // One step behind is accepted (clock skew)…
    let codes = app.twofa().activate(&alice, &pyotp_code(&enrollment.secret, -1)).await.ok();
    assert_eq!(codes.recovery_codes.len(), 10);
    let status = app.twofa().status(&alice).await.ok();
    assert!(status.enrolled && !status.pending);
    assert_eq!(status.recovery_codes_left, 10);
    // …the current step and one ahead too, each once.
    let now = pyotp_code(&enrollment.secret, 0);
    let step_up = app.twofa().verify(&alice, &now).await.ok();
    assert_eq!(app.twofa().verify(&alice, &now).await.refusal(), (401, "unauthorized"), "a replayed code");
    let ahead = app.twofa().verify(&alice, &pyotp_code(&enrollment.secret, 1)).await.ok();

    let (login, stepped) = (claims(&alice), claims(&step_up.access_token));
    assert_eq!(stepped["mfa"], true);
    assert_eq!(stepped["amr"], json!(["pwd", "otp"]));
    assert_eq!(stepped["sid"], login["sid"], "bound to the session it came from");
    assert_eq!(
        (stepped["sub"].clone(), stepped["uid"].clone()),
        (login["sub"].clone(), login["uid"].clone())
    );
    assert_eq!(stepped["exp"].as_i64().unwrap() - stepped["iat"].as_i64().unwrap(), 600);
    assert_eq!(step_up.expires_in, 600);
    assert!(login.get("mfa").is_none() && login.get("amr").is_none());
    assert_ne!(claims(&ahead.access_token)["jti"], stepped["jti"]);
    app.stop().await;
}
on_both_backends!(codes_from_pyotp_are_accepted_once_within_one_step_of_skew);

#[actix_web::test]
async fn expired_skewed_and_wrong_codes_are_refused_and_five_failures_lock_the_factor() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let admin = app.admin_token().await;
    let bob = user(&app, &admin, "bob").await;
    away_from_a_step_edge();
    let (enrollment, _) = activated(&app, &bob, 0).await;
    let secret = &enrollment.secret;

    for (code, what) in [
        (pyotp_code(secret, -2), "expired: two steps old"),
        (pyotp_code(secret, 2), "skewed: two steps ahead"),
        (pyotp_code(secret, 0), "replayed: activation used it"),
        ("12345".to_string(), "five digits"),
    ] {
        let refused = app.twofa().verify(&bob, &code).await;
        if code.len() == 6 {
            assert_eq!(refused.refusal(), (401, "unauthorized"), "{what}");
        } else {
            assert_eq!(refused.refusal(), (422, "validation_failed"), "{what}: refused before any check");
        }
    }
    let wrong = format!("{:06}", (pyotp_code(secret, 1).parse::<u32>().unwrap() + 1) % 1_000_000);
    assert_eq!(app.twofa().verify(&bob, &wrong).await.refusal(), (401, "unauthorized"), "the fourth failure");
    assert_eq!(
        app.twofa().verify(&bob, &wrong).await.refusal(),
        (429, "rate_limited"),
        "the fifth failure locks"
    );
    // Locked: even the right code waits.
    assert_eq!(app.twofa().verify(&bob, &pyotp_code(secret, 1)).await.refusal(), (429, "rate_limited"));
    assert!(app.twofa().status(&bob).await.ok().locked_until.is_some());
    let audit = app.kms().audit(&admin, "role=twofa").await.ok();
    assert!(
        audit.entries.iter().any(|e| e.action == "2fa.locked" && e.target == "bob"),
        "the lockout is audited: {:?}",
        audit.entries
    );
    app.stop().await;
}

#[actix_web::test]
async fn recovery_codes_work_once_and_enrolling_again_needs_a_current_code() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let admin = app.admin_token().await;
    let carol = user(&app, &admin, "carol").await;
    away_from_a_step_edge();
    let (enrollment, codes) = activated(&app, &carol, 0).await;

    let stepped = app.twofa().verify_recovery(&carol, &codes[0]).await.ok();
    assert_eq!(claims(&stepped.access_token)["mfa"], true);
    assert_eq!(app.twofa().verify_recovery(&carol, &codes[0]).await.refusal(), (401, "unauthorized"));
    assert_eq!(app.twofa().status(&carol).await.ok().recovery_codes_left, 9);

    // A stolen token alone cannot replace the factor.
    assert_eq!(app.twofa().enroll(&carol, None).await.refusal(), (422, "validation_failed"));
    let again = app.twofa().enroll(&carol, Some(&pyotp_code(&enrollment.secret, 1))).await.ok();
    assert_ne!(again.secret, enrollment.secret);
    assert!(
        app.twofa().status(&carol).await.ok().enrolled,
        "the old factor holds until the new one is active"
    );

    // A recovery code typed back in capitals without its dash removes the factor.
    let typed = codes[1].replace('-', "").to_uppercase();
    app.twofa().disable(&carol, json!({ "recoveryCode": typed })).await.ok();
    let status = app.twofa().status(&carol).await.ok();
    assert!(!status.enrolled && !status.pending && status.recovery_codes_left == 0);
    app.stop().await;
}

#[actix_web::test]
async fn login_enroll_activate_verify_then_privileged_calls_pass_the_gateway() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    app.create_admin();
    let gateway = app.gateway();
    let token = gateway.kms().login("root").await.access_token;
    away_from_a_step_edge();

    let refused = gateway.post(&token, "/kms/keys", json!({"service_name": "billing"})).await;
    assert_eq!(refused.refusal(), (403, "mfa_required"));
    assert_eq!(refused.body["details"]["stepUp"], "/twofa/2fa/verify", "where to step up");

    let enrollment = gateway.twofa().enroll(&token, None).await.ok();
    gateway.twofa().activate(&token, &pyotp_code(&enrollment.secret, 0)).await.ok();
    let step_up = gateway.twofa().verify(&token, &pyotp_code(&enrollment.secret, 1)).await.ok().access_token;

    let key = gateway.post(&step_up, "/kms/keys", json!({"service_name": "billing"})).await;
    assert_eq!(key.status, 201, "{}", key.body);
    assert_eq!(gateway.post(&step_up, "/secrets/secrets/billing", json!({})).await.status, 201);
    assert_eq!(gateway.post(&step_up, "/kms/signing-keys/rotate", json!({})).await.status, 200);
    assert_eq!(
        gateway.post(&token, "/kms/signing-keys/rotate", json!({})).await.refusal(),
        (403, "mfa_required")
    );
    // The 2FA admin reset needs a step-up token itself.
    let bob = user(&app, &step_up, "bob").await;
    let bob_factor = gateway.twofa().enroll(&bob, None).await.ok();
    gateway.twofa().activate(&bob, &pyotp_code(&bob_factor.secret, 0)).await.ok();
    assert_eq!(gateway.twofa().reset(&token, "bob").await.refusal(), (403, "mfa_required"));
    assert_eq!(
        app.twofa().reset(&token, "bob").await.refusal(),
        (403, "mfa_required"),
        "on twofa's own port too"
    );
    gateway.twofa().reset(&step_up, "bob").await.ok();
    assert!(!gateway.twofa().status_of(&step_up, "bob").await.ok().enrolled);
    let audit = app.kms().audit(&step_up, "role=twofa").await.ok();
    assert!(audit.entries.iter().any(|e| e.action == "2fa.reset" && e.target == "bob"));

    // Logging out with the password token ends the session's step-up token too.
    gateway.kms().logout(&token).await.ok();
    assert_eq!(
        gateway.post(&step_up, "/kms/keys", json!({"service_name": "other"})).await.refusal(),
        (401, "unauthorized")
    );
    app.stop().await;
}

#[actix_web::test]
async fn a_step_up_token_belongs_to_one_session_and_only_twofa_may_ask_kms_for_one() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    // root has stepped up to create ada, a second admin whose own factor this test enrols.
    let root = app.admin_token().await;
    app.kms().register(&root, "ada", &["admin"]).await.ok();
    let admin = app.kms().login("ada").await.access_token;
    let second_session = app.kms().login("ada").await.access_token;
    let dave = user(&app, &root, "dave").await;
    away_from_a_step_edge();
    let (ada_factor, _) = activated(&app, &admin, 0).await;
    let (dave_factor, _) = activated(&app, &dave, 0).await;

    // Another user's code does not step anyone up.
    assert_eq!(
        app.twofa().verify(&dave, &pyotp_code(&ada_factor.secret, 1)).await.refusal(),
        (401, "unauthorized")
    );
    let dave_step_up = app.twofa().verify(&dave, &pyotp_code(&dave_factor.secret, 1)).await.ok().access_token;
    assert_eq!(
        app.kms().create_key(&dave_step_up, "svc").await.refusal(),
        (403, "forbidden"),
        "mfa is not a role"
    );

    // Only twofa's own service identity gets step-up tokens from kms.
    let grant = json!({ "token": admin, "ttlSeconds": 600 });
    let (status, body) = app.call("POST", "kms", "/step-up", Some(&admin), Some(grant.clone())).await;
    assert_eq!((status, body["errorCode"].as_str()), (403, Some("forbidden")), "a user upgrading itself");
    let billing = app.service_token(&root, "billing").await;
    let (status, _) = app.call("POST", "kms", "/step-up", Some(&billing), Some(grant.clone())).await;
    assert_eq!(status, 403, "another service");
    let credential =
        std::fs::read_to_string(app.database.dir.path().join("data/credentials/twofa.key")).unwrap();
    let twofa = app.kms().exchange_key(credential.trim()).await.ok().access_token;
    let (status, issued) = app.call("POST", "kms", "/step-up", Some(&twofa), Some(grant)).await;
    assert_eq!(status, 200, "{issued}");
    let forged = json!({ "token": format!("{admin}x"), "ttlSeconds": 600 });
    assert_eq!(app.call("POST", "kms", "/step-up", Some(&twofa), Some(forged)).await.0, 401);

    // Ending the first session ends its step-up token; the second session is untouched.
    let step_up = app.twofa().verify(&admin, &pyotp_code(&ada_factor.secret, 1)).await.ok().access_token;
    app.kms().create_key(&step_up, "first").await.ok();
    app.kms().logout(&admin).await.ok();
    assert_eq!(app.kms().create_key(&step_up, "second").await.refusal(), (401, "unauthorized"));
    assert_eq!(app.kms().users(&second_session).await.status, 200);
    app.stop().await;
}

#[actix_web::test]
async fn members_of_required_roles_reach_only_twofa_and_logout_until_they_step_up() {
    let app = TestApp::spawn_with(
        Backend::Sqlite,
        |c| c.set_role_setting("twofa", "required_for_roles", ["admin"]),
        None,
    )
    .await;
    app.create_admin();
    let gateway = app.gateway();
    let pending = gateway.kms().login("root").await.access_token;
    assert_eq!(claims(&pending)["mfa_pending"], true);
    assert_eq!(gateway.kms().users(&pending).await.refusal(), (403, "mfa_required"));
    assert_eq!(app.kms().users(&pending).await.refusal(), (403, "mfa_required"), "at the role too");
    assert_eq!(app.secrets().get(&pending, "billing").await.refusal(), (403, "mfa_required"));
    away_from_a_step_edge();

    let enrollment = gateway.twofa().enroll(&pending, None).await.ok();
    gateway.twofa().activate(&pending, &pyotp_code(&enrollment.secret, 0)).await.ok();
    let step_up =
        gateway.twofa().verify(&pending, &pyotp_code(&enrollment.secret, 1)).await.ok().access_token;
    assert!(claims(&step_up).get("mfa_pending").is_none());
    assert_eq!(gateway.kms().users(&step_up).await.status, 200);
    // A plain user is not affected.
    let erin = user(&app, &step_up, "erin").await;
    assert!(claims(&erin).get("mfa_pending").is_none());
    assert_eq!(gateway.get(&erin, "/twofa/2fa/status").await.status, 200);
    gateway.kms().logout(&pending).await.ok();
    app.stop().await;
}

async fn no_totp_secret_or_recovery_code_is_stored_in_plaintext(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_token().await;
    let fay = user(&app, &admin, "fay").await;
    away_from_a_step_edge();
    let (enrollment, codes) = activated(&app, &fay, 0).await;
    app.twofa().verify_recovery(&fay, &codes[0]).await.ok();
    let mut secrets = vec![enrollment.secret.clone(), enrollment.secret.to_lowercase()];
    for code in &codes {
        secrets.push(code.clone());
        secrets.push(code.replace('-', ""));
    }
    let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
    assert_not_at_rest(&app, &["twofa_factors", "twofa_recovery_codes", "audit_log", "events"], &secrets);
    app.stop().await;
}
on_both_backends!(no_totp_secret_or_recovery_code_is_stored_in_plaintext);

/// `fountain admin …` in the data directory of a running server, the password on stdin.
fn admin_command(data: &std::path::Path, args: &[&str], stdin: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = crate::support::fountain_command(data)
        .arg("admin")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("fountain admin");
    child.stdin.take().expect("stdin").write_all(stdin.as_bytes()).expect("stdin written");
    child.wait_with_output().expect("fountain admin ends")
}

/// The real binary with every role, logging at debug: the whole flow, then the host's
/// `fountain admin reset-2fa` for a locked-out admin; no TOTP secret, recovery code or step-up
/// token appears in any log line or in the SQLite files.
#[test]
fn the_host_resets_a_second_factor_and_nothing_secret_reaches_the_logs_or_the_database_files() {
    use crate::support::{blocking_call, ServeProcess};
    let folder = tempfile::tempdir().unwrap();
    let data = folder.path().join("data");
    let roles = ["gateway", "kms", "secrets", "notify", "search", "sequence", "twofa"];
    let mut process = ServeProcess::start(
        &data,
        &roles,
        &[("FOUNTAIN_ROLES__KMS__BCRYPT_COST", "4"), ("FOUNTAIN_LOG__LEVEL", "debug")],
    );
    process.wait_for_message("fountain is up: ", Duration::from_secs(60));
    let password = crate::support::PASSWORD;
    let created = admin_command(
        &data,
        &["create-user", "--username", "ops", "--role", "admin"],
        &format!("{password}\n"),
    );
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    let (kms, twofa) = (process.addr("kms"), process.addr("twofa"));
    let (status, login) =
        blocking_call(kms, "POST", "/login", None, Some(json!({"username": "ops", "password": password})));
    assert_eq!(status, 200, "{login}");
    let token = login["access_token"].as_str().unwrap().to_string();
    away_from_a_step_edge();

    let (status, enrollment) = blocking_call(twofa, "POST", "/2fa/enroll", Some(&token), None);
    assert_eq!(status, 200, "{enrollment}");
    let secret = enrollment["secret"].as_str().unwrap().to_string();
    let code = json!({ "code": pyotp_code(&secret, 0) });
    let (status, activated) = blocking_call(twofa, "POST", "/2fa/activate", Some(&token), Some(code));
    assert_eq!(status, 200, "{activated}");
    let codes: Vec<String> = activated["recoveryCodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    let recovery = json!({ "recoveryCode": codes[0] });
    let (status, stepped) = blocking_call(twofa, "POST", "/2fa/verify", Some(&token), Some(recovery));
    assert_eq!(status, 200, "{stepped}");
    let step_up = stepped["access_token"].as_str().unwrap().to_string();

    // The admin lost the authenticator: the host removes the factor (audited), once.
    let reset = admin_command(&data, &["reset-2fa", "--username", "ops"], "");
    assert!(String::from_utf8_lossy(&reset.stdout).contains("removed the second factor of ops"), "{reset:?}");
    let again = admin_command(&data, &["reset-2fa", "--username", "ops"], "");
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("ops has no second factor"));
    let (_, status_now) = blocking_call(twofa, "GET", "/2fa/status", Some(&token), None);
    assert_eq!(status_now["enrolled"], false);
    let (_, audit) = blocking_call(kms, "GET", "/audit?role=twofa", Some(&step_up), None);
    let reset_entry =
        audit["entries"].as_array().unwrap().iter().find(|e| e["action"] == "2fa.reset").cloned();
    assert!(reset_entry.is_some_and(|e| e["actor"].as_str().unwrap().starts_with("cli:")), "{audit}");

    process.signal("TERM");
    let (_, lines) = process.wait(Duration::from_secs(30));
    let mut secrets = vec![secret.clone(), step_up.clone()];
    for code in &codes {
        secrets.push(code.clone());
        secrets.push(code.replace('-', ""));
    }
    for line in &lines {
        for value in &secrets {
            assert!(!line.contains(value.as_str()), "a secret in the log: {line}");
        }
    }
    for file in ["fountain.db", "fountain.db-wal"] {
        let bytes = std::fs::read(data.join(file)).unwrap_or_default();
        for value in &secrets {
            assert!(
                !bytes.windows(value.len()).any(|w| w == value.as_bytes()),
                "{file} holds a secret in plaintext"
            );
        }
    }
}

/// The step-up is checked by the roles themselves, not only by the gateway's rules: a stolen
/// admin password token reaches none of the privileged changes or plaintext reads on the roles'
/// own ports, cannot create admins through the public `/register`, and cannot read the step-up
/// service's key to mint step-ups of its own.
#[actix_web::test]
async fn privileged_changes_need_a_step_up_at_the_roles_themselves() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let stepped_up = app.admin_token().await;
    let password = app.admin_password_token().await;
    app.kms().create_key(&stepped_up, "svc").await.ok();
    app.secrets().create(&stepped_up, "svc", None).await.ok();

    let step_up_first = (403, "mfa_required");
    assert_eq!(app.kms().create_key(&password, "other").await.refusal(), step_up_first);
    assert_eq!(app.call("GET", "kms", "/keys/svc", Some(&password), None).await.0, 403);
    assert_eq!(app.secrets().create(&password, "other", None).await.refusal(), step_up_first);
    assert_eq!(app.secrets().get(&password, "svc").await.refusal(), step_up_first);
    let grant_admin = json!({"username": "mallory", "password": crate::support::PASSWORD, "roles": "admin"});
    let (status, body) =
        app.call("POST", "kms", "/register", Some(&password), Some(grant_admin.clone())).await;
    assert_eq!((status, body["errorCode"].as_str()), (403, Some("mfa_required")), "{body}");
    // Reads of metadata stay open to a password token; the stepped-up admin does the rest.
    assert_eq!(app.kms().keys(&password).await.status, 200);
    let (status, _) = app.call("POST", "kms", "/register", Some(&stepped_up), Some(grant_admin)).await;
    assert_eq!(status, 201);

    // twofa's key is twofa's alone: with it anyone could have kms sign step-up tokens.
    let (status, body) = app.call("GET", "kms", "/keys/twofa", Some(&stepped_up), None).await;
    assert_eq!((status, body["errorCode"].as_str()), (403, Some("forbidden")), "{body}");
    assert!(!body.to_string().contains("fk_"), "{body}");
    app.stop().await;
}

/// A step-up token cannot be stepped up again (no renewal of a second factor without the
/// password session), and a session whose refresh tokens were revoked gets no step-up.
#[actix_web::test]
async fn step_ups_come_only_from_live_password_sessions() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let admin = app.admin_token().await;
    app.kms().register(&admin, "gus", &[]).await.ok();
    let session = app.kms().login("gus").await;
    away_from_a_step_edge();
    let (enrollment, codes) = activated(&app, &session.access_token, -1).await;
    let step_up = app.twofa().verify(&session.access_token, &pyotp_code(&enrollment.secret, 0)).await.ok();
    assert_eq!(
        app.twofa().verify_recovery(&step_up.access_token, &codes[0]).await.refusal(),
        (401, "unauthorized"),
        "a step-up token renewing itself"
    );
    // Reusing a spent refresh token revokes the whole session: no step-up for it any more.
    let refresh = session.refresh_token.clone().expect("a refresh token");
    app.kms().refresh(&refresh).await.ok();
    assert_eq!(app.kms().refresh(&refresh).await.status, 401);
    assert_eq!(
        app.twofa().verify_recovery(&session.access_token, &codes[1]).await.refusal(),
        (401, "unauthorized"),
        "a revoked session"
    );
    app.stop().await;
}

/// Wrong codes sent at once are checked one after another: exactly four are refused as wrong, the
/// fifth locks the factor, and every other is refused by the lockout without being checked — on
/// PostgreSQL too, where the factor row is locked for each check.
async fn concurrent_wrong_codes_get_no_more_tries_than_the_limit(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_token().await;
    let hal = user(&app, &admin, "hal").await;
    away_from_a_step_edge();
    let (enrollment, _) = activated(&app, &hal, 0).await;
    let right = pyotp_code(&enrollment.secret, 1).parse::<u32>().unwrap();
    let wrong = format!("{:06}", (right + 1) % 1_000_000);
    let twofa = app.twofa();
    let attempts = (0..20).map(|_| twofa.verify(&hal, &wrong));
    let statuses: Vec<u16> =
        futures_util::future::join_all(attempts).await.iter().map(|a| a.status).collect();
    let refused_as_wrong = statuses.iter().filter(|s| **s == 401).count();
    let locked_out = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!((refused_as_wrong, locked_out), (4, 16), "{statuses:?}");
    app.stop().await;
}

on_both_backends!(concurrent_wrong_codes_get_no_more_tries_than_the_limit);
