//! The unit of work: a change, its audit record and its events commit together or not at all,
//! and what waits for events (event streams, the delivery worker, the trust path) hears of them
//! as soon as the transaction has committed.
//!
//! ```ignore
//! let set = state.db.change(Who::admin(ROLE, &admin, origin), move |tx| {
//!     let set = store::rotate(tx.conn(), &service)?;
//!     tx.publish(&SecretsRotated { .. })?;
//!     tx.audit("secrets.rotate", &service, None)?;
//!     Ok(set)
//! }).await?;
//! ```

use std::sync::{Arc, RwLock};

use diesel::prelude::*;

use super::audit::{self, NewEntry, Outcome};
use super::contracts::Event;
use super::crypto::ChainKey;
use super::db::schema::events;
use super::db::{AnyConnection, Db, DbError};
use super::events::{self as event_log, StoredEvent};
use super::guards::Origin;

/// Who makes a change, from where, on behalf of which role (the events' source).
#[derive(Debug, Clone)]
pub struct Who {
    pub role: &'static str,
    pub actor: String,
    pub origin: Origin,
}

impl Who {
    pub fn new(role: &'static str, actor: impl Into<String>, origin: Origin) -> Self {
        Self { role, actor: actor.into(), origin }
    }
}

/// What a change can do besides its own writes: publish typed events and write audit records,
/// all inside its transaction.
pub struct Change<'c> {
    conn: &'c mut AnyConnection,
    who: &'c Who,
    published: Vec<StoredEvent>,
    /// Chains the audit records; `None` (a handle opened without the master key) makes every
    /// audit record, and so its change, fail.
    audit_key: Option<&'c ChainKey>,
}

impl Change<'_> {
    /// The transaction's connection, for the role's store functions.
    pub fn conn(&mut self) -> &mut AnyConnection {
        self.conn
    }

    pub fn who(&self) -> &Who {
        self.who
    }

    /// Appends an event under the change's role; it exists exactly when the change commits.
    /// A payload never carries a secret value.
    pub fn publish<E: Event>(&mut self, event: &E) -> Result<i64, DbError> {
        let payload = serde_json::to_string(event).map_err(|e| DbError::Data(e.to_string()))?;
        let stored = insert_event(self.conn, self.who.role, E::TOPIC, payload)?;
        let id = stored.id;
        self.published.push(stored);
        Ok(id)
    }

    /// Appends an event that a client published through notify's `POST /events`, under the
    /// client's name as its source; the caller has checked that `source` owns `topic`.
    pub fn publish_raw(
        &mut self,
        source: &str,
        topic: &str,
        payload: &serde_json::Value,
    ) -> Result<i64, DbError> {
        let stored = insert_event(self.conn, source, topic, payload.to_string())?;
        let id = stored.id;
        self.published.push(stored);
        Ok(id)
    }

    /// Records a successful action in the audit trail.
    pub fn audit(
        &mut self,
        action: &str,
        target: &str,
        details: Option<serde_json::Value>,
    ) -> Result<(), DbError> {
        self.audit_outcome(action, target, Outcome::Success, details)
    }

    /// Records an action with its outcome (a refusal that must be remembered, for example).
    /// When the record cannot be written this fails with `DbError::Audit`, and the change with
    /// it: nothing is done that the audit trail does not show.
    pub fn audit_outcome(
        &mut self,
        action: &str,
        target: &str,
        outcome: Outcome,
        details: Option<serde_json::Value>,
    ) -> Result<(), DbError> {
        let key = self
            .audit_key
            .ok_or_else(|| DbError::Audit("this database handle has no audit chain key".into()))?;
        audit::record(
            self.conn,
            key,
            NewEntry {
                role: self.who.role,
                actor: &self.who.actor,
                action,
                target,
                outcome,
                source_addr: Some(&self.who.origin.addr),
                request_id: self.who.origin.request_id.as_deref(),
                details,
            },
        )
    }
}

/// Appends one event row (and announces it to other processes on PostgreSQL at commit).
pub(crate) fn insert_event(
    conn: &mut AnyConnection,
    source: &str,
    topic: &str,
    payload: String,
) -> Result<StoredEvent, DbError> {
    debug_assert!(event_log::valid_topic(topic), "invalid topic {topic}");
    let created_at = chrono::Utc::now().naive_utc();
    let id = diesel::insert_into(events::table)
        .values((
            events::topic.eq(topic),
            events::payload.eq(&payload),
            events::source.eq(source),
            events::created_at.eq(created_at),
        ))
        .returning(events::id)
        .get_result(conn)?;
    let stored =
        StoredEvent { id, topic: topic.to_string(), payload, source: source.to_string(), created_at };
    if let AnyConnection::Postgres(pg) = conn {
        // Delivered to LISTENers when the transaction commits: other processes wake at once.
        use diesel::connection::SimpleConnection;
        pg.batch_execute(&format!("NOTIFY {}", event_log::CHANNEL))?;
    }
    Ok(stored)
}

/// A failed change: the role's own error, or the database's (both roll back).
enum Failed<E> {
    Domain(E),
    Db(DbError),
}

impl<E> From<diesel::result::Error> for Failed<E> {
    fn from(err: diesel::result::Error) -> Self {
        Failed::Db(err.into())
    }
}

/// Told about the events of a committed change.
pub type CommitListener = Arc<dyn Fn(&[StoredEvent]) + Send + Sync>;

/// Listeners told about the events of every change this process commits.
#[derive(Default)]
pub struct CommitListeners {
    listeners: RwLock<Vec<CommitListener>>,
}

impl CommitListeners {
    fn notify(&self, published: &[StoredEvent]) {
        for listener in self.listeners.read().unwrap_or_else(|e| e.into_inner()).iter() {
            listener(published);
        }
    }
}

impl Db {
    /// Runs `work` as one unit of work: its writes, events and audit records commit together
    /// (rolled back together when `work` fails); after the commit, this process's listeners
    /// and event waiters are told at once.
    pub async fn change<T, E, F>(&self, who: Who, work: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<DbError> + Send + 'static,
        F: FnOnce(&mut Change<'_>) -> Result<T, E> + Send + 'static,
    {
        let db = self.clone();
        let audit_key = self.audit_key.clone();
        let outcome = self
            .run(move |conn| {
                let mut published = Vec::new();
                let result = super::db::transaction(conn, |conn| {
                    let mut change =
                        Change { conn, who: &who, published: Vec::new(), audit_key: audit_key.as_deref() };
                    let value = work(&mut change).map_err(Failed::Domain)?;
                    published = change.published;
                    Ok::<_, Failed<E>>(value)
                });
                Ok((result, published))
            })
            .await;
        let (result, published) = outcome.map_err(E::from)?;
        let value = match result {
            Ok(value) => value,
            Err(Failed::Domain(err)) => return Err(err),
            Err(Failed::Db(err)) => return Err(E::from(err)),
        };
        db.announce(&published);
        Ok(value)
    }

    /// Blocking form of [`Db::change`] for the command line and start-up provisioning.
    pub fn change_blocking<T, E, F>(&self, who: Who, work: F) -> Result<T, E>
    where
        E: From<DbError>,
        F: FnOnce(&mut Change<'_>) -> Result<T, E>,
    {
        let mut conn = self.conn().map_err(E::from)?;
        let mut published = Vec::new();
        let audit_key = self.audit_key.as_deref();
        let result = super::db::transaction(&mut conn, |conn| {
            let mut change = Change { conn, who: &who, published: Vec::new(), audit_key };
            let value = work(&mut change).map_err(Failed::Domain)?;
            published = change.published;
            Ok::<_, Failed<E>>(value)
        });
        match result {
            Ok(value) => {
                self.announce(&published);
                Ok(value)
            }
            Err(Failed::Domain(err)) => Err(err),
            Err(Failed::Db(err)) => Err(E::from(err)),
        }
    }

    /// Tells this process about committed events.
    fn announce(&self, published: &[StoredEvent]) {
        if published.is_empty() {
            return;
        }
        self.committed.notify(published);
        event_log::wake_waiters();
    }

    /// Calls `listener` with the events of every change this process commits from now on.
    pub fn on_commit(&self, listener: CommitListener) {
        self.committed.listeners.write().unwrap_or_else(|e| e.into_inner()).push(listener);
    }
}
