//! The data layer on both backends: migrations, transactions, and the shared audit store.

use fountain::platform::audit::{self, NewEntry, Outcome, Query};
use fountain::platform::crypto::{ChainKey, MasterKey};
use fountain::platform::db::{self, Db, DbError};

use crate::on_both_backends;
use crate::support::{test_config, Backend, TestDatabase};

fn chain_key() -> ChainKey {
    MasterKey::from_bytes(&[7; 32]).audit_chain_key()
}

fn entry<'a>(role: &'a str, actor: &'a str, action: &'a str) -> NewEntry<'a> {
    NewEntry {
        role,
        actor,
        action,
        target: "service:alpha",
        outcome: Outcome::Success,
        source_addr: Some("127.0.0.1"),
        request_id: Some("req-1"),
        details: Some(serde_json::json!({ "graceSeconds": 60 })),
    }
}

async fn audit_entries_page_newest_first_and_filter(backend: Backend) {
    let database = TestDatabase::create(backend);
    let config = test_config(&database);
    let db = Db::connect(&config).expect("connects and migrates");
    db.run(|conn| {
        let key = chain_key();
        for i in 0..5 {
            let actor = if i % 2 == 0 { "admin" } else { "svc-a" };
            audit::record(conn, &key, entry("kms", actor, &format!("keys.action{i}")))?;
        }
        audit::record(conn, &key, entry("secrets", "admin", "secrets.rotate"))
    })
    .await
    .unwrap();

    let all = db.run(|conn| audit::list(conn, &Query { limit: 100, ..Default::default() })).await.unwrap();
    assert_eq!(all.len(), 6);
    assert!(all.windows(2).all(|w| w[0].id > w[1].id), "newest first");
    assert_eq!(all[0].action, "secrets.rotate");
    assert_eq!(all[0].details.as_deref(), Some(r#"{"graceSeconds":60}"#));
    assert_eq!(all[0].outcome, "success");
    assert_eq!(all[0].chain_seq, Some(1), "secrets' chain has one record");
    assert_eq!(all[1].chain_seq, Some(5), "kms' chain has five");

    let kms_admin = db
        .run(|conn| {
            audit::list(
                conn,
                &Query {
                    role: Some("kms".into()),
                    actor: Some("admin".into()),
                    limit: 100,
                    ..Default::default()
                },
            )
        })
        .await
        .unwrap();
    assert_eq!(
        kms_admin.iter().map(|e| e.action.as_str()).collect::<Vec<_>>(),
        ["keys.action4", "keys.action2", "keys.action0"]
    );

    let first_page =
        db.run(|conn| audit::list(conn, &Query { limit: 2, ..Default::default() })).await.unwrap();
    let before = first_page.last().unwrap().id;
    let second_page = db
        .run(move |conn| {
            audit::list(conn, &Query { limit: 2, before_id: Some(before), ..Default::default() })
        })
        .await
        .unwrap();
    assert_eq!(second_page.len(), 2);
    assert!(second_page[0].id < before);
    let clamped = db.run(|conn| audit::list(conn, &Query { limit: 0, ..Default::default() })).await.unwrap();
    assert_eq!(clamped.len(), 1, "limits are clamped to at least one");
}
on_both_backends!(audit_entries_page_newest_first_and_filter);

async fn a_failed_transaction_leaves_nothing_behind(backend: Backend) {
    let database = TestDatabase::create(backend);
    let db = Db::connect(&test_config(&database)).unwrap();
    let result: Result<(), DbError> = db
        .run(|conn| {
            fountain::platform::db::transaction(conn, |conn| {
                audit::record(conn, &chain_key(), entry("kms", "admin", "users.create"))?;
                Err(DbError::Query(diesel::result::Error::RollbackTransaction))
            })
        })
        .await;
    assert!(result.is_err());
    let all = db.run(|conn| audit::list(conn, &Query { limit: 10, ..Default::default() })).await.unwrap();
    assert!(all.is_empty(), "nothing half-written: {all:?}");
}
on_both_backends!(a_failed_transaction_leaves_nothing_behind);

async fn migrations_are_idempotent_and_concurrent_starts_are_safe(backend: Backend) {
    let database = TestDatabase::create(backend);
    let config = test_config(&database);
    // Two instances starting against one database at once (replicas on PostgreSQL).
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| db::migrate_only(&config));
        let b = s.spawn(|| db::migrate_only(&config));
        (a.join().unwrap(), b.join().unwrap())
    });
    let applied = a.unwrap().len() + b.unwrap().len();
    assert!(applied >= 1, "the first start applies the migrations");
    assert!(db::migrate_only(&config).unwrap().is_empty(), "a later start has nothing to apply");
    let db = Db::connect(&config).unwrap();
    db.ping().await.unwrap();
    assert_eq!(db.backend().name(), if backend == Backend::Sqlite { "sqlite" } else { "postgres" });
}
on_both_backends!(migrations_are_idempotent_and_concurrent_starts_are_safe);

#[actix_web::test]
async fn sqlite_runs_in_wal_mode_with_a_busy_timeout() {
    use diesel::sql_types::{BigInt, Text};
    use diesel::RunQueryDsl;
    #[derive(diesel::QueryableByName)]
    struct Mode {
        #[diesel(sql_type = Text)]
        journal_mode: String,
    }
    #[derive(diesel::QueryableByName)]
    struct Timeout {
        #[diesel(sql_type = BigInt)]
        timeout: i64,
    }
    let database = TestDatabase::create(Backend::Sqlite);
    let db = Db::connect(&test_config(&database)).unwrap();
    let mut conn = db.conn().unwrap();
    let db::AnyConnection::Sqlite(sqlite) = &mut *conn else { panic!("expected SQLite") };
    let mode: Mode = diesel::sql_query("PRAGMA journal_mode").get_result(sqlite).unwrap();
    assert_eq!(mode.journal_mode, "wal");
    let timeout: Timeout = diesel::sql_query("PRAGMA busy_timeout").get_result(sqlite).unwrap();
    assert_eq!(timeout.timeout, 5000);
    assert!(database.sqlite_path().unwrap().exists());
}

#[test]
fn an_unreachable_postgres_is_retried_then_reported_in_one_line() {
    let database = TestDatabase::create(Backend::Sqlite);
    let mut config = test_config(&database);
    config.database.url = "postgres://postgres@127.0.0.1:1/nowhere".into();
    config.database.connect_attempts = 2;
    let err = match Db::connect(&config) {
        Err(err) => err.to_string(),
        Ok(_) => panic!("connected to a closed port"),
    };
    assert!(
        err.starts_with(
            "cannot connect to database postgres://postgres@127.0.0.1:1/nowhere after 2 attempt(s): "
        ),
        "{err}"
    );
    assert!(!err.contains('\n'), "{err}");
    // The backend is decided by the URL's scheme, never by falling back to SQLite: nothing was
    // created in the data directory.
    assert_eq!(
        config.database_target().unwrap(),
        fountain::config::DatabaseTarget::Postgres("postgres://postgres@127.0.0.1:1/nowhere".into())
    );
    let created: Vec<_> = std::fs::read_dir(database.dir.path()).unwrap().collect();
    assert!(created.is_empty(), "nothing is created for an unreachable PostgreSQL: {created:?}");
}
