//! A database per test: a fresh SQLite file or a fresh PostgreSQL database, dropped after the
//! test; and the check that nothing secret is stored in plaintext in it.

use std::path::PathBuf;

use diesel::connection::SimpleConnection;
use diesel::{Connection, PgConnection};

use super::TestApp;

/// Where the test PostgreSQL server is; each test run creates its own databases in it.
pub fn pg_admin_url() -> String {
    std::env::var("FOUNTAIN_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A database created for one test and dropped after it.
pub struct TestDatabase {
    pub url: String,
    pg_name: Option<String>,
    pub dir: tempfile::TempDir,
}

impl TestDatabase {
    pub fn create(backend: Backend) -> TestDatabase {
        let dir = tempfile::tempdir().expect("temp dir");
        match backend {
            Backend::Sqlite => {
                let url = format!("sqlite://{}", dir.path().join("fountain.db").display());
                TestDatabase { url, pg_name: None, dir }
            }
            Backend::Postgres => {
                let name = format!("fountain_test_{}", uuid::Uuid::new_v4().simple());
                let mut admin = PgConnection::establish(&pg_admin_url())
                    .expect("PostgreSQL must be running for the PostgreSQL tests (see .ci/run)");
                admin.batch_execute(&format!("CREATE DATABASE {name}")).expect("create test database");
                let base = pg_admin_url();
                let url = format!("{}/{name}", base.rsplit_once('/').expect("admin url has a database").0);
                TestDatabase { url, pg_name: Some(name), dir }
            }
        }
    }

    /// The SQLite file, for tests that inspect what is stored at rest.
    pub fn sqlite_path(&self) -> Option<PathBuf> {
        self.url.strip_prefix("sqlite://").map(PathBuf::from)
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Some(name) = &self.pg_name {
            if let Ok(mut admin) = PgConnection::establish(&pg_admin_url()) {
                let _ = admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
            }
        }
    }
}

/// Asserts that none of `secrets` is stored in plaintext: not in the SQLite file or its WAL,
/// not in any row of `pg_tables` on PostgreSQL.
pub fn assert_not_at_rest(app: &TestApp, pg_tables: &[&str], secrets: &[&str]) {
    match app.database.sqlite_path() {
        Some(path) => {
            for file in [path.clone(), path.with_extension("db-wal")] {
                let bytes = std::fs::read(&file).unwrap_or_default();
                for secret in secrets {
                    let found = bytes.windows(secret.len()).any(|w| w == secret.as_bytes());
                    assert!(!found, "a secret is stored in plaintext in {}", file.display());
                }
            }
        }
        None => {
            use diesel::RunQueryDsl;
            #[derive(diesel::QueryableByName)]
            struct Dump {
                #[diesel(sql_type = diesel::sql_types::Text)]
                row: String,
            }
            let mut conn = PgConnection::establish(&app.database.url).expect("test database");
            for table in pg_tables {
                let rows: Vec<Dump> = diesel::sql_query(format!("SELECT t::text AS row FROM {table} t"))
                    .load(&mut conn)
                    .expect("table dump");
                for row in rows {
                    for secret in secrets {
                        assert!(!row.row.contains(secret), "a secret is stored in plaintext in {table}");
                    }
                }
            }
        }
    }
}
