//! notify persistence: subscriptions, fan-out of events into deliveries, and the delivery queue.

use std::collections::HashMap;

use chrono::{Duration, NaiveDateTime};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;

use super::schema::{deliveries, subscriptions};
use super::topics::topic_matches;
use crate::platform::db::schema::{events as event_rows, instance_meta};
use crate::platform::db::{AnyConnection, DbError};
use crate::platform::events::{self, StoredEvent};

pub const PENDING: &str = "pending";
pub const DELIVERED: &str = "delivered";
pub const DEAD: &str = "dead";

const FANOUT_CURSOR: &str = "notify.fanout_cursor";
/// Serialises fan-out across notify replicas on PostgreSQL.
const FANOUT_LOCK_KEY: i64 = 0x6e6f_7469_6679; // "notify"
/// An id gap younger than this may still be an uncommitted transaction: wait for it.
const GAP_GRACE_SECONDS: i64 = 5;

pub fn now() -> NaiveDateTime {
    chrono::Utc::now().naive_utc()
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = subscriptions)]
pub struct Subscription {
    pub id: String,
    pub owner: String,
    pub topics: String,
    pub callback_url: String,
    pub sealed_secret: String,
    pub after_event_id: i64,
    pub created_at: NaiveDateTime,
}

impl Subscription {
    pub fn topic_list(&self) -> Vec<String> {
        serde_json::from_str(&self.topics).unwrap_or_default()
    }
}

pub fn insert_subscription(conn: &mut AnyConnection, sub: &Subscription) -> Result<(), DbError> {
    diesel::insert_into(subscriptions::table)
        .values((
            subscriptions::id.eq(&sub.id),
            subscriptions::owner.eq(&sub.owner),
            subscriptions::topics.eq(&sub.topics),
            subscriptions::callback_url.eq(&sub.callback_url),
            subscriptions::sealed_secret.eq(&sub.sealed_secret),
            subscriptions::after_event_id.eq(sub.after_event_id),
            subscriptions::created_at.eq(sub.created_at),
        ))
        .execute(conn)?;
    Ok(())
}

/// The id of the newest event, 0 when there is none.
pub fn latest_event_id(conn: &mut AnyConnection) -> Result<i64, DbError> {
    let latest: Option<i64> = event_rows::table.select(diesel::dsl::max(event_rows::id)).first(conn)?;
    Ok(latest.unwrap_or(0))
}

pub fn find_subscription(conn: &mut AnyConnection, id: &str) -> Result<Option<Subscription>, DbError> {
    Ok(subscriptions::table
        .filter(subscriptions::id.eq(id))
        .select(Subscription::as_select())
        .first(conn)
        .optional()?)
}

/// Up to `limit` subscriptions in id order after the id `after`, only `owner`'s when given.
pub fn list_subscriptions(
    conn: &mut AnyConnection,
    owner: Option<&str>,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<Subscription>, DbError> {
    let mut query = subscriptions::table.select(Subscription::as_select()).into_boxed();
    if let Some(owner) = owner {
        query = query.filter(subscriptions::owner.eq(owner.to_string()));
    }
    if let Some(after) = after {
        query = query.filter(subscriptions::id.gt(after.to_string()));
    }
    Ok(query.order(subscriptions::id.asc()).limit(limit).load(conn)?)
}

/// Removes a subscription and its undelivered deliveries; returns whether it existed.
pub fn delete_subscription(conn: &mut AnyConnection, id: &str) -> Result<bool, DbError> {
    crate::platform::db::transaction(conn, |conn| {
        diesel::delete(
            deliveries::table
                .filter(deliveries::subscription_id.eq(id))
                .filter(deliveries::status.ne(DELIVERED)),
        )
        .execute(conn)?;
        Ok(diesel::delete(subscriptions::table.filter(subscriptions::id.eq(id))).execute(conn)? > 0)
    })
}

/// What one fan-out did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FanOut {
    /// Events fanned out (the cursor moved past them).
    pub events: usize,
    /// Deliveries created for them.
    pub deliveries: usize,
}

/// Turns up to `batch` new events into one pending delivery per matching subscription and
/// advances the fan-out cursor, in one transaction.
pub fn fan_out(conn: &mut AnyConnection, batch: i64) -> Result<FanOut, DbError> {
    crate::platform::db::transaction(conn, |conn| {
        if let AnyConnection::Postgres(pg) = conn {
            pg.batch_execute(&format!("SELECT pg_advisory_xact_lock({FANOUT_LOCK_KEY})"))?;
        }
        let cursor: i64 = instance_meta::table
            .filter(instance_meta::name.eq(FANOUT_CURSOR))
            .select(instance_meta::value)
            .first::<String>(conn)
            .optional()?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let new_events = events::read_after(conn, cursor, None, batch)?;
        let ready = gapless_prefix(cursor, &new_events, now());
        if ready.is_empty() {
            return Ok(FanOut::default());
        }
        let subs: Vec<Subscription> = subscriptions::table.select(Subscription::as_select()).load(conn)?;
        let at = now();
        let rows: Vec<_> = ready
            .iter()
            .flat_map(|event| {
                subs.iter()
                    .filter(|s| {
                        event.id > s.after_event_id
                            && s.topic_list().iter().any(|p| topic_matches(p, &event.topic))
                    })
                    .map(move |sub| {
                        (
                            deliveries::subscription_id.eq(sub.id.clone()),
                            deliveries::event_id.eq(event.id),
                            deliveries::status.eq(PENDING),
                            deliveries::attempts.eq(0),
                            deliveries::next_attempt_at.eq(at),
                            deliveries::created_at.eq(at),
                        )
                    })
            })
            .collect();
        let mut created = 0;
        // Multi-row inserts, in chunks that stay under SQLite's bound-parameter limit.
        for chunk in rows.chunks(500) {
            // Batch inserts are backend-specific in diesel (MultiConnection has none).
            let insert = diesel::insert_into(deliveries::table).values(chunk.to_vec());
            created += match conn {
                AnyConnection::Postgres(pg) => insert.execute(pg)?,
                AnyConnection::Sqlite(sqlite) => insert.execute(sqlite)?,
            };
        }
        let last = ready.last().map_or(cursor, |e| e.id);
        save_cursor(conn, last)?;
        Ok(FanOut { events: ready.len(), deliveries: created })
    })
}

/// The events that can be fanned out now: in id order, stopping at a gap in the ids unless the
/// event after it is old enough that the missing id must belong to a rolled-back transaction.
fn gapless_prefix(cursor: i64, events: &[StoredEvent], now: NaiveDateTime) -> &[StoredEvent] {
    let mut expected = cursor + 1;
    for (index, event) in events.iter().enumerate() {
        let settled = now - event.created_at > Duration::seconds(GAP_GRACE_SECONDS);
        if event.id != expected && !settled {
            return &events[..index];
        }
        expected = event.id + 1;
    }
    events
}

fn save_cursor(conn: &mut AnyConnection, value: i64) -> Result<(), DbError> {
    let updated = diesel::update(instance_meta::table.filter(instance_meta::name.eq(FANOUT_CURSOR)))
        .set(instance_meta::value.eq(value.to_string()))
        .execute(conn)?;
    if updated == 0 {
        diesel::insert_into(instance_meta::table)
            .values((instance_meta::name.eq(FANOUT_CURSOR), instance_meta::value.eq(value.to_string())))
            .execute(conn)?;
    }
    Ok(())
}

/// A delivery leased for one attempt, with what is needed to make it.
#[derive(Debug, Clone)]
pub struct DueDelivery {
    pub id: i64,
    pub subscription_id: String,
    pub attempts: i32,
    pub callback_url: String,
    pub sealed_secret: String,
    pub event: StoredEvent,
}

/// How many due deliveries the worker can take now: `total` in all, and for each subscription
/// what its room allows (`per_subscription` minus what is already in flight to it).
#[derive(Debug, Clone)]
pub struct Capacity<'a> {
    pub total: usize,
    pub per_subscription: usize,
    /// Calls in flight per subscription id.
    pub in_flight: &'a HashMap<String, usize>,
}

impl Capacity<'_> {
    fn room(&self, subscription: &str) -> usize {
        self.per_subscription.saturating_sub(self.in_flight.get(subscription).copied().unwrap_or(0))
    }
}

/// Shares `total` slots among subscriptions, round-robin in the order given (oldest due first),
/// each getting at most its `(room, due)`: one slot each, then a second each, and so on, so a
/// subscription with a long backlog cannot take the slots of the others.
fn share(total: usize, wanted: &[(String, usize)]) -> Vec<(String, usize)> {
    let mut given: Vec<(String, usize)> = wanted.iter().map(|(s, _)| (s.clone(), 0)).collect();
    let mut left = total;
    while left > 0 {
        let mut progressed = false;
        for ((_, want), (_, got)) in wanted.iter().zip(given.iter_mut()) {
            if left > 0 && *got < *want {
                *got += 1;
                left -= 1;
                progressed = true;
            }
        }
        if !progressed {
            break;
        }
    }
    given.retain(|(_, got)| *got > 0);
    given
}

/// How many due deliveries one claim round reads (in due order) to share out among `free`
/// slots: enough to see several subscriptions past one subscription's backlog.
fn claim_window(free: usize) -> i64 {
    i64::try_from(free.saturating_mul(4).clamp(64, 1024)).unwrap_or(1024)
}

/// Claim rounds at most: a round that fills a subscription's room may reveal, in the next round,
/// the deliveries its backlog hid from the window.
const CLAIM_ROUNDS: usize = 8;

/// Picks from `candidates` (due order): the slots `left` allows, shared round-robin among their
/// subscriptions in order of their oldest candidate, each within `room`.
fn pick(candidates: &[(i64, String)], left: usize, room: impl Fn(&str) -> usize) -> Vec<(i64, String)> {
    let mut order: Vec<(String, usize)> = Vec::new();
    for (_, sub) in candidates {
        match order.iter_mut().find(|(s, _)| s == sub) {
            Some((_, count)) => *count += 1,
            None => order.push((sub.clone(), 1)),
        }
    }
    let wanted: Vec<(String, usize)> = order
        .into_iter()
        .map(|(sub, count)| {
            let quota = room(&sub).min(count);
            (sub, quota)
        })
        .collect();
    let mut picked = Vec::new();
    for (sub, quota) in share(left, &wanted) {
        picked.extend(candidates.iter().filter(|(_, s)| *s == sub).take(quota).cloned());
    }
    picked
}

/// One turn of the delivery worker: fan new events out when `fan_out_batch` asks for it and
/// record the attempts that finished (one write transaction, only when there is something to
/// write), then claim due deliveries into the free slots ([`claim_due`]).
pub fn turn(
    conn: &mut AnyConnection,
    fan_out_batch: Option<i64>,
    outcomes: &[Outcome],
    capacity: &Capacity<'_>,
    lease: Duration,
) -> Result<(FanOut, Vec<DueDelivery>), DbError> {
    let fanned = if fan_out_batch.is_some() || !outcomes.is_empty() {
        crate::platform::db::transaction(conn, |conn| {
            let fanned = match fan_out_batch {
                Some(batch) => fan_out(conn, batch)?,
                None => FanOut::default(),
            };
            record_outcomes(conn, outcomes)?;
            Ok::<_, DbError>(fanned)
        })?
    } else {
        FanOut::default()
    };
    Ok((fanned, claim_due(conn, capacity, lease)?))
}

/// Leases due deliveries for `lease` (so a crashed worker's work comes back and other replicas
/// skip them), fairly: the slots `capacity` allows are shared round-robin among the
/// subscriptions that have due deliveries and room, oldest due first, so one subscriber's
/// backlog never takes another's turn. Subscriptions without room are left out of the read, so
/// their backlog does not hide the others' deliveries.
///
/// The due window is read without a lock; only the lease itself is a (short) write, which takes
/// just the picked deliveries that are still due and that no other replica is leasing.
pub fn claim_due(
    conn: &mut AnyConnection,
    capacity: &Capacity<'_>,
    lease: Duration,
) -> Result<Vec<DueDelivery>, DbError> {
    let at = now();
    // Claimed in this call, per subscription.
    let mut taken: HashMap<String, usize> = HashMap::new();
    let mut ids: Vec<i64> = Vec::new();
    for _ in 0..CLAIM_ROUNDS {
        let left = capacity.total.saturating_sub(ids.len());
        if left == 0 {
            break;
        }
        let window = claim_window(left);
        let room = |sub: &str| capacity.room(sub).saturating_sub(taken.get(sub).copied().unwrap_or(0));
        let full: Vec<String> =
            capacity.in_flight.keys().chain(taken.keys()).filter(|s| room(s) == 0).cloned().collect();
        let candidates: Vec<(i64, String)> = deliveries::table
            .filter(deliveries::status.eq(PENDING))
            .filter(deliveries::next_attempt_at.le(at))
            .filter(deliveries::subscription_id.ne_all(&full))
            .order(deliveries::next_attempt_at.asc())
            .limit(window)
            .select((deliveries::id, deliveries::subscription_id))
            .load(conn)?;
        let picked = pick(&candidates, left, room);
        if picked.is_empty() {
            break;
        }
        let picked_ids: Vec<i64> = picked.iter().map(|(id, _)| *id).collect();
        let leased = lease_still_due(conn, &picked_ids, at, lease)?;
        let mut filled_one = false;
        for (id, sub) in &picked {
            if leased.contains(id) {
                ids.push(*id);
                *taken.entry(sub.clone()).or_default() += 1;
                filled_one |= capacity.room(sub) <= taken[sub];
            }
        }
        // Another round only when this one filled a room and the window may have hidden more.
        if !(filled_one && candidates.len() as i64 == window) {
            break;
        }
    }
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    due_deliveries(conn, &ids)
}

/// Leases those of `ids` that are still due (on PostgreSQL: and not being leased by another
/// replica right now); returns them.
fn lease_still_due(
    conn: &mut AnyConnection,
    ids: &[i64],
    at: NaiveDateTime,
    lease: Duration,
) -> Result<Vec<i64>, DbError> {
    crate::platform::db::transaction(conn, |conn| {
        let still_due = deliveries::table
            .filter(deliveries::id.eq_any(ids))
            .filter(deliveries::status.eq(PENDING))
            .filter(deliveries::next_attempt_at.le(at))
            .select(deliveries::id);
        let leased: Vec<i64> = match conn {
            AnyConnection::Postgres(pg) => still_due.for_update().skip_locked().load(pg)?,
            // The transaction holds SQLite's write lock: nobody else leases meanwhile.
            AnyConnection::Sqlite(sqlite) => still_due.load(sqlite)?,
        };
        if !leased.is_empty() {
            diesel::update(deliveries::table.filter(deliveries::id.eq_any(&leased)))
                .set(deliveries::next_attempt_at.eq(at + lease))
                .execute(conn)?;
        }
        Ok(leased)
    })
}

/// The leased deliveries `ids` with what their calls need.
fn due_deliveries(conn: &mut AnyConnection, ids: &[i64]) -> Result<Vec<DueDelivery>, DbError> {
    // Three small lookups instead of a join: the tables belong to different modules.
    let leased: Vec<(i64, i32, String, i64)> = deliveries::table
        .filter(deliveries::id.eq_any(ids))
        .select((deliveries::id, deliveries::attempts, deliveries::subscription_id, deliveries::event_id))
        .load(conn)?;
    let sub_ids: Vec<&String> = leased.iter().map(|l| &l.2).collect();
    let subs: Vec<Subscription> = subscriptions::table
        .filter(subscriptions::id.eq_any(sub_ids))
        .select(Subscription::as_select())
        .load(conn)?;
    let event_ids: Vec<i64> = leased.iter().map(|l| l.3).collect();
    let found: Vec<StoredEvent> = event_rows::table
        .filter(event_rows::id.eq_any(event_ids))
        .select(StoredEvent::as_select())
        .load(conn)?;
    Ok(leased
        .into_iter()
        .filter_map(|(id, attempts, sub_id, event_id)| {
            let sub = subs.iter().find(|s| s.id == sub_id)?;
            let event = found.iter().find(|e| e.id == event_id)?.clone();
            Some(DueDelivery {
                id,
                subscription_id: sub.id.clone(),
                attempts,
                callback_url: sub.callback_url.clone(),
                sealed_secret: sub.sealed_secret.clone(),
                event,
            })
        })
        .collect())
}

/// The result of one delivery attempt, recorded together with the others that finished with it.
pub enum Outcome {
    Delivered { id: i64 },
    Failed { id: i64, attempts: i32, error: String, retry_at: Option<NaiveDateTime> },
}

/// Records finished attempts in one transaction.
pub fn record_outcomes(conn: &mut AnyConnection, outcomes: &[Outcome]) -> Result<(), DbError> {
    crate::platform::db::transaction(conn, |conn| {
        let delivered: Vec<i64> = outcomes
            .iter()
            .filter_map(|o| if let Outcome::Delivered { id } = o { Some(*id) } else { None })
            .collect();
        if !delivered.is_empty() {
            diesel::update(deliveries::table.filter(deliveries::id.eq_any(&delivered)))
                .set((
                    deliveries::status.eq(DELIVERED),
                    deliveries::attempts.eq(deliveries::attempts + 1),
                    deliveries::delivered_at.eq(now()),
                    deliveries::last_error.eq(None::<String>),
                ))
                .execute(conn)?;
        }
        for outcome in outcomes {
            if let Outcome::Failed { id, attempts, error, retry_at } = outcome {
                mark_failed(conn, *id, *attempts, error, *retry_at)?;
            }
        }
        Ok(())
    })
}

/// Records a failed attempt: retried at `retry_at`, or dead-lettered when `retry_at` is None.
pub fn mark_failed(
    conn: &mut AnyConnection,
    id: i64,
    attempts: i32,
    error: &str,
    retry_at: Option<NaiveDateTime>,
) -> Result<(), DbError> {
    let status = if retry_at.is_some() { PENDING } else { DEAD };
    diesel::update(deliveries::table.filter(deliveries::id.eq(id)))
        .set((
            deliveries::status.eq(status),
            deliveries::attempts.eq(attempts),
            deliveries::next_attempt_at.eq(retry_at.unwrap_or_else(now)),
            deliveries::last_error.eq(Some(error)),
        ))
        .execute(conn)?;
    Ok(())
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = deliveries)]
pub struct Delivery {
    pub id: i64,
    pub subscription_id: String,
    pub event_id: i64,
    pub status: String,
    pub attempts: i32,
    pub next_attempt_at: NaiveDateTime,
    pub last_error: Option<String>,
    pub created_at: NaiveDateTime,
    pub delivered_at: Option<NaiveDateTime>,
}

pub fn list_deliveries(
    conn: &mut AnyConnection,
    status: Option<&str>,
    subscription: Option<&str>,
    limit: i64,
) -> Result<Vec<Delivery>, DbError> {
    let mut query = deliveries::table.select(Delivery::as_select()).into_boxed();
    if let Some(status) = status {
        query = query.filter(deliveries::status.eq(status.to_string()));
    }
    if let Some(subscription) = subscription {
        query = query.filter(deliveries::subscription_id.eq(subscription.to_string()));
    }
    Ok(query.order(deliveries::id.desc()).limit(limit).load(conn)?)
}

/// Puts a dead delivery back in the queue; returns false when there is no such dead delivery.
pub fn retry_dead(conn: &mut AnyConnection, id: i64) -> Result<bool, DbError> {
    Ok(diesel::update(deliveries::table.filter(deliveries::id.eq(id)).filter(deliveries::status.eq(DEAD)))
        .set((deliveries::status.eq(PENDING), deliveries::next_attempt_at.eq(now())))
        .execute(conn)?
        > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: i64, age_seconds: i64) -> StoredEvent {
        StoredEvent {
            id,
            topic: "t".into(),
            payload: "{}".into(),
            source: "s".into(),
            created_at: now() - Duration::seconds(age_seconds),
        }
    }

    #[test]
    fn fan_out_waits_at_young_gaps_and_passes_settled_ones() {
        let at = now();
        let fresh = [event(5, 0), event(6, 0), event(8, 0), event(9, 0)];
        assert_eq!(gapless_prefix(4, &fresh, at).len(), 2, "7 may still commit");
        let settled = [event(5, 60), event(6, 60), event(8, 60), event(9, 0)];
        assert_eq!(gapless_prefix(4, &settled, at).len(), 4, "an old gap is a rollback");
        assert_eq!(gapless_prefix(10, &fresh, at).len(), 0, "first event is past a young gap");
    }

    fn wanted(list: &[(&str, usize)]) -> Vec<(String, usize)> {
        list.iter().map(|(s, n)| (s.to_string(), *n)).collect()
    }

    #[test]
    fn a_backlog_in_the_window_does_not_take_the_others_turn() {
        let mut candidates: Vec<(i64, String)> = (1..=10).map(|id| (id, "slow".to_string())).collect();
        candidates.extend((11..=13).map(|id| (id, "fast".to_string())));
        let picked = pick(&candidates, 6, |sub| if sub == "slow" { 2 } else { 8 });
        let ids: Vec<i64> = picked.iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, vec![1, 2, 11, 12, 13], "slow within its room, fast gets all it has");
        assert!(pick(&candidates, 0, |_| 8).is_empty());
    }

    #[test]
    fn slots_are_shared_round_robin_within_each_room() {
        // A backlog of 300 cannot take the slots of the subscription behind it.
        assert_eq!(share(4, &wanted(&[("slow", 300), ("fast", 300)])), wanted(&[("slow", 2), ("fast", 2)]));
        assert_eq!(
            share(5, &wanted(&[("a", 1), ("b", 8), ("c", 2)])),
            wanted(&[("a", 1), ("b", 2), ("c", 2)])
        );
        assert_eq!(share(64, &wanted(&[("a", 3), ("b", 8)])), wanted(&[("a", 3), ("b", 8)]));
        assert_eq!(share(0, &wanted(&[("a", 3)])), wanted(&[]));
        assert_eq!(share(2, &wanted(&[("a", 1), ("b", 1), ("c", 1)])), wanted(&[("a", 1), ("b", 1)]));
    }
}
