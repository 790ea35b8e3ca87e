//! Publishing events: a row in `events`, written in the transaction of the change it reports
//! (a transactional outbox), so that an event exists exactly when its change committed and is
//! never lost to a crash or to the notify role being down. The notify role delivers them.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use serde::Serialize;
use utoipa::ToSchema;

use super::db::schema::events;
use super::db::{AnyConnection, DbError};

/// Wakes the tasks of this process that wait for new events (notify's delivery worker and event
/// streams) so a freshly committed event leaves at once instead of at the next poll.
static PUBLISHED: tokio::sync::Notify = tokio::sync::Notify::const_new();

/// Call after the transaction that published an event has committed.
pub fn wake_waiters() {
    PUBLISHED.notify_waiters();
}

/// Waits until `wake_waiters` is called or `timeout` passes, whichever comes first.
pub async fn wait_for_events(timeout: std::time::Duration) {
    let _ = tokio::time::timeout(timeout, PUBLISHED.notified()).await;
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

/// Appends an event; returns its id. Call inside the transaction of the change it reports.
/// `payload` must never carry a secret value.
pub fn publish(
    conn: &mut AnyConnection,
    source: &str,
    topic: &str,
    payload: &serde_json::Value,
) -> Result<i64, DbError> {
    debug_assert!(valid_topic(topic), "invalid topic {topic}");
    let id = diesel::insert_into(events::table)
        .values((
            events::topic.eq(topic),
            events::payload.eq(payload.to_string()),
            events::source.eq(source),
            events::created_at.eq(chrono::Utc::now().naive_utc()),
        ))
        .returning(events::id)
        .get_result(conn)?;
    if let AnyConnection::Postgres(pg) = conn {
        // Delivered to LISTENers when the transaction commits: notify replicas wake at once.
        use diesel::connection::SimpleConnection;
        pg.batch_execute(&format!("NOTIFY {CHANNEL}"))?;
    }
    Ok(id)
}

#[derive(Debug, Clone, Serialize, ToSchema, Queryable, Selectable)]
#[diesel(table_name = events)]
pub struct StoredEvent {
    pub id: i64,
    pub topic: String,
    /// The event's JSON payload, as published.
    pub payload: String,
    pub source: String,
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
