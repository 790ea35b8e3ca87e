//! A small bounded cache whose entries are reused for a fixed time: the one shape behind every
//! "ask once, reuse briefly" in fountain (API-key lookups, registry reads, peer lookups).

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct TtlCache<K, V> {
    entries: Mutex<HashMap<K, (V, Instant)>>,
    /// Whether `entries` may hold anything, readable without the lock: a lookup in a cache that
    /// is usually empty (throttled addresses, say) then writes no shared cache line.
    maybe_filled: AtomicBool,
    ttl: Duration,
    capacity: usize,
}

impl<K: Eq + Hash, V: Clone> TtlCache<K, V> {
    /// Entries live `ttl` (zero: nothing is kept); at `capacity` stale entries are dropped, and
    /// if that is not enough, everything is.
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            maybe_filled: AtomicBool::new(false),
            ttl,
            capacity: capacity.max(1),
        }
    }

    /// The value stored for `key` if it is younger than the TTL.
    pub fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if !self.maybe_filled.load(Ordering::Acquire) {
            return None;
        }
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.get(key).filter(|(_, at)| at.elapsed() < self.ttl).map(|(value, _)| value.clone())
    }

    pub fn insert(&self, key: K, value: V) {
        if self.ttl.is_zero() {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= self.capacity {
            let ttl = self.ttl;
            entries.retain(|_, (_, at)| at.elapsed() < ttl);
            if entries.len() >= self.capacity {
                entries.clear();
            }
        }
        entries.insert(key, (value, Instant::now()));
        self.maybe_filled.store(true, Ordering::Release);
    }

    pub fn remove<Q>(&self, key: &Q)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.remove(key);
        self.maybe_filled.store(!entries.is_empty(), Ordering::Release);
    }

    pub fn clear(&self) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.clear();
        self.maybe_filled.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_are_bounded_and_zero_ttl_keeps_nothing() {
        let cache = TtlCache::new(Duration::from_millis(30), 2);
        cache.insert("a", 1);
        assert_eq!(cache.get(&"a"), Some(1));
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(cache.get(&"a"), None);
        for (k, v) in [("x", 1), ("y", 2), ("z", 3)] {
            cache.insert(k, v);
        }
        assert!(cache.entries.lock().unwrap().len() <= 2);
        cache.remove(&"z");
        assert_eq!(cache.get(&"z"), None);
        let off: TtlCache<&str, i32> = TtlCache::new(Duration::ZERO, 10);
        off.insert("a", 1);
        assert_eq!(off.get(&"a"), None);
    }
}
