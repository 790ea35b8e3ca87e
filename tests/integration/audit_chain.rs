//! The audit trail is tamper-evident and fail-closed: changes made over HTTP leave a hash chain
//! per role that the real `fountain audit verify` checks, naming the record an edit, a deletion,
//! an insertion or a truncated tail shows at; and a change whose audit record cannot be written
//! is refused with 503 `audit_unavailable` and not made.

use std::process::Output;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use fountain::platform::db::schema::{audit_chain_head, audit_log};

use crate::on_both_backends;
use crate::support::{fountain_command, test_config, Backend, TestApp, PASSWORD};

/// `fountain audit verify [args]` against the test's installation: its data directory (and so
/// its master key) and its database.
fn audit_verify(app: &TestApp, args: &[&str]) -> Output {
    audit_verify_with(app, args, &[])
}

fn audit_verify_with(app: &TestApp, args: &[&str], env: &[(&str, &std::path::Path)]) -> Output {
    let mut command = fountain_command(&app.database.dir.path().join("data"));
    command.args(["audit", "verify"]).args(args).env("FOUNTAIN_DATABASE__URL", &app.database.url);
    command.envs(env.iter().copied());
    command.output().expect("run fountain audit verify")
}

/// The report lines of verify's stdout (log lines are JSON objects beside them).
fn stdout(output: &Output) -> String {
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines().filter(|l| !l.starts_with('{')).map(|l| format!("{l}\n")).collect()
}

/// Verification passed: exit 0, and the `ok:` line of kms.
#[track_caller]
fn assert_verifies(app: &TestApp) -> String {
    let output = audit_verify(app, &[]);
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(0), "{text}{}", String::from_utf8_lossy(&output.stderr));
    assert!(!text.contains("FAILED"), "{text}");
    text.lines()
        .find(|l| l.starts_with("ok: kms "))
        .unwrap_or_else(|| panic!("no kms line: {text}"))
        .to_string()
}

/// Verification failed: exit 1, and kms's `FAILED:` line.
#[track_caller]
fn assert_fails(app: &TestApp) -> String {
    let output = audit_verify(app, &[]);
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(1), "{text}{}", String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8_lossy(&output.stderr).contains("does not verify"));
    text.lines()
        .find(|l| l.starts_with("FAILED: kms: "))
        .unwrap_or_else(|| panic!("no failure for kms: {text}"))
        .to_string()
}

/// Runs SQL on the test's database directly, as someone with database access would.
fn sql(app: &TestApp, statements: &str) {
    let mut conn = app.platform.db.conn().expect("database connection");
    conn.batch_execute(statements).unwrap_or_else(|e| panic!("{statements}: {e}"));
}

/// The ids of kms's audit records, oldest first, with their seqs.
fn kms_records(app: &TestApp) -> Vec<(i64, Option<i64>)> {
    let mut conn = app.platform.db.conn().expect("database connection");
    audit_log::table
        .filter(audit_log::role.eq("kms"))
        .order(audit_log::id.asc())
        .select((audit_log::id, audit_log::chain_seq))
        .load(&mut conn)
        .expect("audit records")
}

/// Keeps a copy of record `id`, so that a tampering can be undone exactly.
fn save(app: &TestApp, id: i64) {
    sql(app, &format!("CREATE TABLE audit_saved AS SELECT * FROM audit_log WHERE id = {id}"));
}

/// Puts the saved record back as it was.
fn restore(app: &TestApp) {
    sql(
        app,
        "DELETE FROM audit_log WHERE id IN (SELECT id FROM audit_saved); \
         INSERT INTO audit_log SELECT * FROM audit_saved; DROP TABLE audit_saved;",
    );
}

/// Audited changes of several roles over HTTP: root's second factor (twofa), users and a key
/// (kms), a secret set (secrets).
async fn audited_changes(app: &TestApp) -> String {
    let admin = app.admin_token().await;
    app.kms().register(&admin, "alice", &[]).await.ok();
    app.kms().register(&admin, "bob", &["admin"]).await.ok();
    app.kms().create_key(&admin, "billing").await.ok();
    app.secrets().create(&admin, "billing", None::<serde_json::Value>).await.ok();
    app.kms().login("alice").await;
    admin
}

async fn audit_verify_names_every_kind_of_tampering(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    audited_changes(&app).await;
    let untouched = assert_verifies(&app);
    let records = kms_records(&app);
    assert!(records.len() >= 5, "{records:?}");
    assert!(records.iter().enumerate().all(|(i, (_, seq))| *seq == Some(i as i64 + 1)), "{records:?}");
    assert!(
        untouched.starts_with(&format!("ok: kms {n} records, head seq {n} ", n = records.len())),
        "{untouched}"
    );
    let metrics = app.metrics("kms").await;
    let gauge = format!("audit_chain_seq{{role=\"kms\"}} {}\n", records.len());
    assert!(metrics.contains(&gauge), "{metrics}");
    let (middle, middle_seq) = (records[2].0, records[2].1.unwrap());
    let (next, next_seq) = (records[3].0, records[3].1.unwrap());
    let (last, last_seq) = (records[records.len() - 1].0, records[records.len() - 1].1.unwrap());
    let (before_last, before_last_seq) =
        (records[records.len() - 2].0, records[records.len() - 2].1.unwrap());

    // An edit of who did it, and of what was done.
    for edit in ["actor = 'mallory'", "details = '{\"roles\":[\"user\"]}'"] {
        save(&app, middle);
        sql(&app, &format!("UPDATE audit_log SET {edit} WHERE id = {middle}"));
        let failed = assert_fails(&app);
        assert!(
            failed.contains(&format!("record id {middle} (seq {middle_seq}) edited")),
            "{edit}: {failed}"
        );
        restore(&app);
        assert_eq!(assert_verifies(&app), untouched);
    }

    // A record deleted from the middle: a gap at the record after it.
    save(&app, middle);
    sql(&app, &format!("DELETE FROM audit_log WHERE id = {middle}"));
    let failed = assert_fails(&app);
    assert!(failed.contains(&format!("record id {next} (seq {next_seq}) deleted")), "{failed}");
    assert!(failed.contains(&format!("seq {middle_seq} missing")), "{failed}");
    restore(&app);
    assert_eq!(assert_verifies(&app), untouched);

    // The newest record deleted: the head is ahead of the last record left.
    save(&app, last);
    sql(&app, &format!("DELETE FROM audit_log WHERE id = {last}"));
    let failed = assert_fails(&app);
    assert!(failed.contains(&format!("record id {before_last} (seq {before_last_seq}) deleted")), "{failed}");
    assert!(failed.contains("tail truncated"), "{failed}");
    restore(&app);
    assert_eq!(assert_verifies(&app), untouched);

    // A record written around fountain, without chain fields.
    sql(
        &app,
        "INSERT INTO audit_log (occurred_at, role, actor, action, target, outcome) \
         VALUES ('2026-01-01 00:00:00', 'kms', 'root', 'users.delete', 'bob', 'success')",
    );
    let forged = kms_records(&app).last().unwrap().0;
    let failed = assert_fails(&app);
    assert!(failed.contains(&format!("record id {forged} (no seq) inserted")), "{failed}");
    sql(&app, &format!("DELETE FROM audit_log WHERE id = {forged}"));
    assert_eq!(assert_verifies(&app), untouched);

    // A record appended with the next seq and a link to the last one, but no valid MAC.
    let last_hash: String = {
        let mut conn = app.platform.db.conn().unwrap();
        audit_log::table
            .find(last)
            .select(audit_log::hash)
            .first::<Option<String>>(&mut conn)
            .unwrap()
            .unwrap()
    };
    sql(
        &app,
        &format!(
            "INSERT INTO audit_log (occurred_at, role, actor, action, target, outcome, chain_seq, prev_hash, hash) \
             VALUES ('2026-01-01 00:00:00', 'kms', 'root', 'users.delete', 'bob', 'success', {}, '{last_hash}', '{}')",
            last_seq + 1,
            "ab".repeat(32)
        ),
    );
    let forged = kms_records(&app).last().unwrap().0;
    let failed = assert_fails(&app);
    assert!(failed.contains(&format!("record id {forged} (seq {}) inserted", last_seq + 1)), "{failed}");
    sql(&app, &format!("DELETE FROM audit_log WHERE id = {forged}"));
    assert_eq!(assert_verifies(&app), untouched);

    // What only an anchor shows: the tail deleted AND the head moved back to the last record
    // left. The chain verifies, with a lower head seq than the one printed before.
    sql(
        &app,
        &format!(
            "DELETE FROM audit_log WHERE id = {last}; UPDATE audit_chain_head SET last_seq = {before_last_seq}, \
             last_hash = (SELECT hash FROM audit_log WHERE id = {before_last}) WHERE role = 'kms'"
        ),
    );
    let shortened = assert_verifies(&app);
    assert!(shortened.contains(&format!("head seq {before_last_seq} ")), "{shortened} after {untouched}");
}
on_both_backends!(audit_verify_names_every_kind_of_tampering);

async fn verify_checks_one_role_and_refuses_unknown_roles(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    audited_changes(&app).await;
    let output = audit_verify(&app, &["--role", "secrets"]);
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(0), "{text}");
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.starts_with("ok: secrets ") && text.contains(" head seq "), "{text}");

    let unknown = audit_verify(&app, &["--role", "vault"]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("not a role name"));

    // Another master key cannot check the MACs: refused before any record is looked at.
    let other_key = app.database.dir.path().join("other.key");
    use base64::Engine;
    std::fs::write(&other_key, base64::engine::general_purpose::STANDARD.encode([9u8; 32])).unwrap();
    let wrong = audit_verify_with(&app, &[], &[("FOUNTAIN_SECURITY__MASTER_KEY_FILE", other_key.as_path())]);
    assert_eq!(wrong.status.code(), Some(1));
    let error = String::from_utf8_lossy(&wrong.stderr);
    assert!(error.contains("master key does not match"), "{error}");
    assert!(!stdout(&wrong).contains("ok:"), "{}", stdout(&wrong));

    // The head row removed: its chained records are left without an anchor in the database.
    sql(&app, "DELETE FROM audit_chain_head WHERE role = 'secrets'");
    let output = audit_verify(&app, &["--role", "secrets"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stdout(&output).contains("the head row was deleted"), "{}", stdout(&output));
}
on_both_backends!(verify_checks_one_role_and_refuses_unknown_roles);

/// Makes the database refuse every new audit record, as a full disk or a broken table would.
fn refuse_audit_writes(app: &TestApp, backend: Backend) {
    match backend {
        Backend::Sqlite => sql(
            app,
            "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_log BEGIN SELECT RAISE(ABORT, 'audit refused'); END;",
        ),
        Backend::Postgres => sql(
            app,
            "CREATE FUNCTION refuse_audit() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'audit refused'; END $$ \
             LANGUAGE plpgsql; \
             CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_log FOR EACH ROW EXECUTE FUNCTION refuse_audit();",
        ),
    }
}

fn allow_audit_writes(app: &TestApp, backend: Backend) {
    match backend {
        Backend::Sqlite => sql(app, "DROP TRIGGER refuse_audit"),
        Backend::Postgres => sql(app, "DROP TRIGGER refuse_audit ON audit_log"),
    }
}

async fn a_change_that_cannot_be_audited_is_refused_and_not_made(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = audited_changes(&app).await;
    let chain_before = kms_records(&app);
    refuse_audit_writes(&app, backend);

    let created = app.kms().register(&admin, "carol", &[]).await;
    assert_eq!(created.refusal(), (503, "audit_unavailable"), "{}", created.body);
    assert_eq!(
        app.kms().user(&admin, "carol").await.refusal(),
        (404, "not_found"),
        "no user without a record"
    );

    let secrets = app.secrets().create(&admin, "payroll", None::<serde_json::Value>).await;
    assert_eq!(secrets.refusal(), (503, "audit_unavailable"));
    assert_eq!(app.secrets().get(&admin, "payroll").await.refusal(), (404, "not_found"));

    let revoked = app.kms().revoke_key(&admin, "billing").await;
    assert_eq!(revoked.refusal(), (503, "audit_unavailable"));
    app.kms().key(&admin, "billing").await.ok();

    // A refusal that must be recorded is still a refusal, with the audit failure's error.
    let denied = app.kms().login_with("alice", "not the password at all").await;
    assert_eq!(denied.refusal(), (503, "audit_unavailable"));
    // And a login is a session the trail must show: none is opened.
    let login = app.kms().login_with("alice", PASSWORD).await;
    assert_eq!(login.refusal(), (503, "audit_unavailable"));
    assert!(login.body.get("access_token").is_none());

    allow_audit_writes(&app, backend);
    assert_eq!(kms_records(&app), chain_before, "nothing was half-written");
    app.kms().register(&admin, "carol", &[]).await.ok();
    app.kms().login("carol").await;
    assert_verifies(&app);
}
on_both_backends!(a_change_that_cannot_be_audited_is_refused_and_not_made);

/// `POST /register` by an admin at the kms listening on `addr`: the status.
async fn register_at(client: &awc::Client, addr: std::net::SocketAddr, admin: &str, username: &str) -> u16 {
    let body = serde_json::json!({ "username": username, "password": PASSWORD });
    let response = client
        .post(format!("http://{addr}/register"))
        .insert_header(("authorization", format!("Bearer {admin}")))
        .send_json(&body)
        .await
        .expect("request sent");
    response.status().as_u16()
}

/// 20 registrations at once, half through a second kms instance with its own connection pool
/// over the same PostgreSQL database (replicas of one role): each appends to kms's chain. An
/// operator verifying meanwhile sees a consistent chain (one snapshot, heads included).
#[actix_web::test]
async fn concurrent_audited_changes_on_postgresql_chain_one_after_another() {
    let app = TestApp::spawn(Backend::Postgres).await;
    let admin = app.admin_token().await;
    let kms = fountain::roles::find("kms").expect("kms is built in");
    let replica = fountain::app::Application::build(test_config(&app.database), &[kms], None)
        .await
        .expect("a second kms starts over the same database");
    let addrs = [app.addr("kms"), replica.addr("kms").expect("replica listens")];
    let registrations = (0..20).map(|i| {
        let (client, admin, addr) = (&app.client, &admin, addrs[i % 2]);
        async move { register_at(client, addr, admin, &format!("user{i:02}")).await }
    });
    let (data_dir, url) = (app.database.dir.path().join("data"), app.database.url.clone());
    let verifying =
        std::thread::spawn(move || (0..3).map(|_| verify_at(&data_dir, &url)).collect::<Vec<_>>());
    let statuses = futures_util::future::join_all(registrations).await;
    assert_eq!(statuses, vec![201; 20]);
    for (code, report) in verifying.join().expect("verify runs") {
        assert_eq!(code, Some(0), "verified while writers append: {report}");
    }
    replica.stop(true).await;

    let records = kms_records(&app);
    let seqs: Vec<i64> = records.iter().map(|(_, seq)| seq.expect("chained")).collect();
    assert_eq!(seqs, (1..=records.len() as i64).collect::<Vec<_>>(), "contiguous, in id order, no fork");
    let head: i64 = {
        let mut conn = app.platform.db.conn().unwrap();
        audit_chain_head::table
            .filter(audit_chain_head::role.eq("kms"))
            .select(audit_chain_head::last_seq)
            .first(&mut conn)
            .unwrap()
    };
    assert_eq!(head, records.len() as i64);
    let line = assert_verifies(&app);
    assert!(line.starts_with(&format!("ok: kms {head} records, head seq {head} ")), "{line}");
}

/// Takes a migrated database back to the version before the audit chain, as a database written
/// by that version is: the chain migration's own `down.sql`, and its row in diesel's ledger.
fn back_to_before_the_chain(db: &fountain::platform::db::Db, backend: Backend) {
    let folder = match backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    };
    let down = std::fs::read_to_string(format!(
        "{}/migrations/{folder}/2026-12-03-000011_audit_chain/down.sql",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("the chain migration's down.sql");
    let mut conn = db.conn().unwrap();
    conn.batch_execute(&down).expect("down.sql runs");
    conn.batch_execute("DELETE FROM __diesel_schema_migrations WHERE version = '20261203000011'").unwrap();
}

/// A record as the version before the chain wrote it.
fn legacy_insert(role: &str, target: &str) -> String {
    format!(
        "INSERT INTO audit_log (occurred_at, role, actor, action, target, outcome, details) \
         VALUES ('2026-11-01 10:00:00.123456', '{role}', 'root', 'users.create', '{target}', 'success', '{{}}');"
    )
}

fn audit_one(platform: &fountain::platform::server::Platform, role: &'static str, target: &str) {
    use fountain::platform::guards::Origin;
    use fountain::platform::unit::Who;
    let target = target.to_string();
    platform
        .db
        .change_blocking(Who::new(role, "root", Origin::local("test")), move |tx| {
            tx.audit("users.create", &target, None)
        })
        .expect("audited");
}

/// `fountain audit verify` over `database`: its exit code and report lines.
fn verify_offline(database: &crate::support::TestDatabase) -> (Option<i32>, String) {
    verify_at(&database.dir.path().join("data"), &database.url)
}

fn verify_at(data_dir: &std::path::Path, url: &str) -> (Option<i32>, String) {
    let mut command = fountain_command(data_dir);
    command.args(["audit", "verify"]).env("FOUNTAIN_DATABASE__URL", url);
    let output = command.output().expect("run fountain audit verify");
    (output.status.code(), stdout(&output))
}

async fn records_from_before_the_upgrade_are_chained_once_and_later_strays_never(backend: Backend) {
    let database = crate::support::TestDatabase::create(backend);
    let config = test_config(&database);
    let old = fountain::platform::db::Db::connect(&config).expect("migrates");
    back_to_before_the_chain(&old, backend);
    let mut conn = old.conn().unwrap();
    let legacy = [legacy_insert("kms", "a"), legacy_insert("secrets", "b"), legacy_insert("kms", "c")];
    conn.batch_execute(&legacy.concat()).unwrap();
    drop((conn, old));

    // The upgrade: the chain migration runs at start; nothing is chained until a role appends.
    let platform = fountain::platform::server::Platform::open(std::sync::Arc::new(config)).expect("opens");
    let (code, report) = verify_offline(&database);
    assert_eq!(code, Some(0), "{report}");
    assert!(
        report.contains("ok: kms 0 records, not chained yet: 2 records from before chaining"),
        "{report}"
    );

    // kms appends: its two old records are chained first, in id order, then the new one.
    audit_one(&platform, "kms", "d");
    let (code, report) = verify_offline(&database);
    assert_eq!(code, Some(0), "{report}");
    assert!(report.contains("ok: kms 3 records, head seq 3 "), "{report}");
    assert!(report.contains("ok: secrets 0 records, not chained yet: 1 records"), "{report}");
    let mut conn = platform.db.conn().unwrap();
    let kms: Vec<(String, Option<i64>)> = audit_log::table
        .filter(audit_log::role.eq("kms"))
        .order(audit_log::id.asc())
        .select((audit_log::target, audit_log::chain_seq))
        .load(&mut conn)
        .unwrap();
    assert_eq!(kms, [("a".into(), Some(1)), ("c".into(), Some(2)), ("d".into(), Some(3))]);

    // A record without chain fields written after the upgrade is never sealed, even by the
    // role's first append: it stays a finding.
    conn.batch_execute(&legacy_insert("secrets", "stray")).unwrap();
    let stray: i64 = audit_log::table
        .filter(audit_log::target.eq("stray"))
        .select(audit_log::id)
        .first(&mut conn)
        .unwrap();
    audit_one(&platform, "secrets", "e");
    let (code, report) = verify_offline(&database);
    assert_eq!(code, Some(1), "{report}");
    assert!(report.contains("ok: kms 3 records"), "{report}");
    assert!(report.contains(&format!("FAILED: secrets: record id {stray} (no seq) inserted")), "{report}");
}
on_both_backends!(records_from_before_the_upgrade_are_chained_once_and_later_strays_never);
