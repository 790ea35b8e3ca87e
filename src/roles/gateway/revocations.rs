//! Revocations the gateway honours without asking kms on every request: revoked token ids
//! (logout), revoked sessions (refresh-token reuse), and disabled or deleted users. They are
//! read from the durable event stream (`tokens.revoked`, `sessions.revoked`, `users.changed`)
//! that kms writes in the transaction of each change; a reader task follows it.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;
use std::time::Duration;

use crate::platform::auth::Claims;
use crate::platform::db::Db;
use crate::platform::events;

const TOPICS: [&str; 3] = ["tokens.revoked", "sessions.revoked", "users.changed"];
const POLL: Duration = Duration::from_millis(200);

#[derive(Default)]
struct Lists {
    /// jti -> exp (unix seconds): kept until the token would have expired anyway.
    tokens: HashMap<String, i64>,
    sessions: HashSet<String>,
    users: HashSet<String>,
}

#[derive(Default)]
pub struct Revocations {
    lists: RwLock<Lists>,
    /// Bumped by every applied event: a check made under an older generation must be redone.
    generation: AtomicU64,
}

impl Revocations {
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Whether a verified token has been revoked since it was issued.
    pub fn is_revoked(&self, claims: &Claims) -> bool {
        let lists = self.lists.read().unwrap_or_else(|e| e.into_inner());
        lists.tokens.contains_key(&claims.jti)
            || claims.sid.as_ref().is_some_and(|sid| lists.sessions.contains(sid))
            || lists.users.contains(&claims.sub)
    }

    fn apply(&self, event: &events::StoredEvent) {
        let Ok(payload) = serde_json::from_str::<serde_json::Value>(&event.payload) else { return };
        let mut lists = self.lists.write().unwrap_or_else(|e| e.into_inner());
        match event.topic.as_str() {
            "tokens.revoked" => {
                if let (Some(jti), Some(exp)) = (payload["jti"].as_str(), payload["exp"].as_i64()) {
                    lists.tokens.insert(jti.to_string(), exp);
                }
            }
            "sessions.revoked" => {
                if let Some(sid) = payload["sid"].as_str() {
                    lists.sessions.insert(sid.to_string());
                }
            }
            "users.changed" => {
                let Some(user) = payload["username"].as_str() else { return };
                let blocked = payload["change"] == "deleted" || payload["disabled"] == true;
                if blocked {
                    lists.users.insert(user.to_string());
                } else if payload["disabled"] == false || payload["change"] == "created" {
                    lists.users.remove(user);
                }
            }
            _ => {}
        }
        let now = chrono::Utc::now().timestamp();
        if lists.tokens.len() > 100_000 {
            lists.tokens.retain(|_, exp| *exp > now);
        }
        // Under the write lock: a reader that sees the new generation sees the new lists.
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Follows the event stream until the host stops (catching up from the start first).
    pub async fn follow(
        self: std::sync::Arc<Self>,
        db: Db,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        let topics: Vec<String> = TOPICS.iter().map(|t| t.to_string()).collect();
        let mut after = 0;
        loop {
            let wanted = topics.clone();
            match db.run(move |conn| events::read_after(conn, after, Some(&wanted), 1000)).await {
                Ok(batch) => {
                    for event in &batch {
                        self.apply(event);
                        after = event.id;
                    }
                    if batch.len() == 1000 {
                        continue;
                    }
                }
                Err(err) => log::warn!(target: "fountain::gateway", "cannot read revocation events: {err}"),
            }
            tokio::select! {
                _ = events::wait_for_events(POLL) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}
