//! Test support, by concern: the running roles of one test (`app`), its database (`db`), the
//! built binary as a child process (`process`), a webhook receiver (`subscriber`), tokens an
//! attacker can make (`tokens`), typed clients per role (`clients`) and the one bounded wait for
//! background work (`wait`).

pub mod app;
pub mod clients;
pub mod db;
pub mod process;
pub mod search_peer;
pub mod subscriber;
pub mod tokens;
pub mod totp;
pub mod typesense;
pub mod upstream;
pub mod wait;

pub use app::{test_config, TestApp, PASSWORD};
pub use clients::{assert_error_shape, Answer, ANONYMOUS};
pub use db::{assert_not_at_rest, pg_admin_url, Backend, TestDatabase};
pub use process::{blocking_call, blocking_get, fountain_bin, fountain_command, ServeProcess};
pub use search_peer::SearchPeer;
pub use subscriber::Subscriber;
pub use tokens::forged_tokens;
pub use typesense::TypesenseServer;
pub use wait::{eventually, eventually_blocking};

/// Runs an async test body once on SQLite and once on PostgreSQL, as two named tests.
#[macro_export]
macro_rules! on_both_backends {
    ($name:ident) => {
        mod $name {
            #[actix_web::test]
            async fn sqlite() {
                super::$name($crate::support::Backend::Sqlite).await
            }
            #[actix_web::test]
            async fn postgres() {
                super::$name($crate::support::Backend::Postgres).await
            }
        }
    };
}
