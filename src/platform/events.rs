//! Publishing events: a row in `events`, written in the transaction of the change it reports
//! (a transactional outbox), so that an event exists exactly when its change committed and is
//! never lost to a crash or to the notify role being down. The notify role delivers them.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use serde::Serialize;
use utoipa::ToSchema;

use super::db::schema::events;
use super::db::{AnyConnection, DbError};

/// Counts the commits of this process (and announcements from others) that carried events.
/// A watch rather than a bare notification: a waiter that was busy reading when a commit
/// happened still sees that it happened, so no event waits for the next poll.
static PUBLISHED: std::sync::LazyLock<tokio::sync::watch::Sender<u64>> =
    std::sync::LazyLock::new(|| tokio::sync::watch::channel(0).0);

/// Call after a transaction that published events has committed.
pub fn wake_waiters() {
    PUBLISHED.send_modify(|count| *count = count.wrapping_add(1));
}

/// Waits for events committed after it was created (or after its last wait).
pub struct EventWaiter(tokio::sync::watch::Receiver<u64>);

/// A waiter for what is committed from now on: create it before reading, then wait.
pub fn waiter() -> EventWaiter {
    EventWaiter(PUBLISHED.subscribe())
}

impl EventWaiter {
    /// Returns when events were committed since the last call, or after `timeout`.
    pub async fn wait(&mut self, timeout: std::time::Duration) {
        let _ = tokio::time::timeout(timeout, self.0.changed()).await;
        self.0.borrow_and_update();
    }
}

/// The PostgreSQL channel on which committed events are announced across processes.
pub const CHANNEL: &str = "fountain_events";

/// On PostgreSQL, relays `NOTIFY fountain_events` from any process to this process's waiters,
/// on a dedicated thread with its own connection, until `shutdown` turns true.
pub fn listen_across_processes(db: super::db::Db, shutdown: tokio::sync::watch::Receiver<bool>) {
    if db.backend() != super::db::Backend::Postgres {
        return;
    }
    let spawned = std::thread::Builder::new().name("fountain-events-listen".into()).spawn(move || {
        use diesel::connection::SimpleConnection;
        while !*shutdown.borrow() {
            let Ok(mut conn) = db.conn() else {
                std::thread::sleep(std::time::Duration::from_secs(1));
                continue;
            };
            let AnyConnection::Postgres(pg) = &mut *conn else { return };
            if pg.batch_execute(&format!("LISTEN {CHANNEL}")).is_err() {
                std::thread::sleep(std::time::Duration::from_secs(1));
                continue;
            }
            while !*shutdown.borrow() {
                let mut broken = false;
                let mut woke = false;
                for notification in pg.notifications_iter() {
                    match notification {
                        Ok(_) => woke = true,
                        Err(_) => broken = true,
                    }
                }
                if woke {
                    wake_waiters();
                }
                if broken {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            let _ = pg.batch_execute(&format!("UNLISTEN {CHANNEL}"));
        }
    });
    if let Err(err) = spawned {
        log::warn!(target: "fountain::events", "cannot start the event listener: {err}");
    }
}

/// Longest accepted topic name.
pub const MAX_TOPIC_LEN: usize = 128;

/// Topic names: dot-separated lower-case words, e.g. `secrets.rotated`.
pub fn valid_topic(topic: &str) -> bool {
    !topic.is_empty()
        && topic.len() <= MAX_TOPIC_LEN
        && topic.split('.').all(|part| {
            !part.is_empty()
                && part.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
        })
}

#[derive(Debug, Clone, Serialize, ToSchema, Queryable, Selectable)]
#[diesel(table_name = events)]
pub struct StoredEvent {
    pub id: i64,
    pub topic: String,
    /// The event's JSON payload, as published.
    pub payload: String,
    pub source: String,
    /// RFC 3339, UTC, with `Z`.
    #[serde(with = "crate::platform::time::utc")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: NaiveDateTime,
}

/// Events after `after_id` in id order, optionally restricted to `topics`.
pub fn read_after(
    conn: &mut AnyConnection,
    after_id: i64,
    topics: Option<&[String]>,
    limit: i64,
) -> Result<Vec<StoredEvent>, DbError> {
    let mut query =
        events::table.filter(events::id.gt(after_id)).select(StoredEvent::as_select()).into_boxed();
    if let Some(topics) = topics {
        query = query.filter(events::topic.eq_any(topics.to_vec()));
    }
    Ok(query.order(events::id.asc()).limit(limit).load(conn)?)
}

#[cfg(test)]
mod tests {
    use super::valid_topic;

    #[test]
    fn topics_are_dotted_lowercase_words() {
        for ok in ["secrets.rotated", "keys.revoked", "a", "users.changed.v2", "service_a.elements-moved"] {
            assert!(valid_topic(ok), "{ok}");
        }
        for bad in ["", ".", "a..b", "Keys.rotated", "a b", "a/b", "ä", &"x".repeat(129)] {
            assert!(!valid_topic(bad), "{bad}");
        }
    }
}
