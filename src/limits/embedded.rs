//! The embedded counter store: counters in memory, sharded by team, with
//! every change written through to sled (`limits.dir/counters`).
//!
//! All the counters of one request belong to one team, so one shard lock
//! makes a request's check-and-reserve atomic across its keys: under 64
//! concurrent requests for a limit of N, exactly N pass. sled makes its log
//! durable every [`FLUSH_EVERY_MS`]: a crash (power loss, `kill -9`) can
//! lose the counting of the last 200 ms; a clean shutdown loses nothing.
//! The same store without sled is the Redis store's local fallback.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::telemetry;

/// How often sled makes its log durable.
const FLUSH_EVERY_MS: u64 = 200;
const SHARDS: usize = 16;
const CACHE_CAPACITY_BYTES: u64 = 16 << 20;

pub(super) struct Embedded {
    shards: Box<[Mutex<HashMap<String, Slot>>]>,
    /// `None` for the memory-only fallback.
    db: Option<sled::Db>,
}

#[derive(Clone, Copy, Debug)]
struct Slot {
    value: u64,
    /// Unix seconds; the counter is gone from then on.
    expires: u64,
}

impl Slot {
    fn encode(&self) -> [u8; 16] {
        let mut out = [0u8; 16];
        out[..8].copy_from_slice(&self.value.to_be_bytes());
        out[8..].copy_from_slice(&self.expires.to_be_bytes());
        out
    }

    fn decode(bytes: &[u8]) -> Option<Slot> {
        let value = u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?);
        let expires = u64::from_be_bytes(bytes.get(8..16)?.try_into().ok()?);
        Some(Slot { value, expires })
    }
}

/// One counter a request is checked against.
#[derive(Clone, Debug)]
pub(super) struct Item {
    pub key: String,
    pub limit: u64,
    /// Add one now (requests); otherwise only checked (tokens, cost).
    pub reserve: bool,
    pub expires: u64,
}

/// The outcome of a check-and-reserve.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Admit {
    /// Every counter was below its limit; the values after reserving.
    Admitted(Vec<u64>),
    /// `items[index]` is at or past its limit; nothing was reserved.
    Over { index: usize, used: u64 },
}

impl Embedded {
    pub(super) fn memory() -> Embedded {
        Embedded { shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(), db: None }
    }

    /// Open (or create) the sled store in `dir` and load its live counters.
    pub(super) fn open(dir: &Path, now: u64) -> Result<Embedded, sled::Error> {
        let db = sled::Config::new()
            .path(dir)
            .flush_every_ms(Some(FLUSH_EVERY_MS))
            // A few counters per team and user: sled's 1 GiB default is
            // far more cache than they will ever need.
            .cache_capacity(CACHE_CAPACITY_BYTES)
            .open()?;
        let store = Embedded { db: None, ..Embedded::memory() };
        let mut stale = Vec::new();
        for entry in db.iter() {
            let (key, value) = entry?;
            match (std::str::from_utf8(&key), Slot::decode(&value)) {
                (Ok(k), Some(slot)) if slot.expires > now => {
                    let team = super::CounterKey::decode(k).map(|c| c.team).unwrap_or_default();
                    store.shard(&team).insert(k.to_string(), slot);
                }
                _ => stale.push(key),
            }
        }
        for key in stale {
            db.remove(key)?;
        }
        Ok(Embedded { db: Some(db), ..store })
    }

    fn shard(&self, team: &str) -> MutexGuard<'_, HashMap<String, Slot>> {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        team.hash(&mut hasher);
        let i = (hasher.finish() as usize) % self.shards.len();
        self.shards[i].lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Check every item against its limit and, only if all are below,
    /// reserve one of each `reserve` item: atomic for the team's counters.
    pub(super) fn admit(&self, team: &str, items: &[Item], now: u64) -> Admit {
        let mut shard = self.shard(team);
        let mut values = Vec::with_capacity(items.len());
        for (index, item) in items.iter().enumerate() {
            let used = live(&shard, &item.key, now);
            if used >= item.limit {
                return Admit::Over { index, used };
            }
            values.push(used);
        }
        for (item, value) in items.iter().zip(values.iter_mut()) {
            if item.reserve {
                *value += 1;
                self.put(&mut shard, &item.key, Slot { value: *value, expires: item.expires });
            }
        }
        Admit::Admitted(values)
    }

    /// Add `amount` to each counter (usage, once known); the new values.
    pub(super) fn add(&self, team: &str, items: &[(String, u64, u64)], now: u64) -> Vec<u64> {
        let mut shard = self.shard(team);
        let mut out = Vec::with_capacity(items.len());
        for (key, amount, expires) in items {
            let value = live(&shard, key, now).saturating_add(*amount);
            self.put(&mut shard, key, Slot { value, expires: *expires });
            out.push(value);
        }
        out
    }

    /// A counter's value now (0 when absent or expired).
    pub(super) fn get(&self, team: &str, key: &str, now: u64) -> u64 {
        live(&self.shard(team), key, now)
    }

    /// Every live counter.
    pub(super) fn entries(&self, now: u64) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            let shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            out.extend(shard.iter().filter(|(_, s)| s.expires > now).map(|(k, s)| (k.clone(), s.value)));
        }
        out
    }

    /// Forget counters whose window has ended, here and in sled.
    pub(super) fn prune(&self, now: u64) {
        for shard in self.shards.iter() {
            let mut shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            let gone: Vec<String> = shard.iter().filter(|(_, s)| s.expires <= now).map(|(k, _)| k.clone()).collect();
            for key in gone {
                shard.remove(&key);
                if let Some(db) = &self.db {
                    if let Err(e) = db.remove(key.as_bytes()) {
                        store_error(&e);
                    }
                }
            }
        }
    }

    pub(super) fn flush(&self) -> Result<(), sled::Error> {
        match &self.db {
            Some(db) => db.flush().map(|_| ()),
            None => Ok(()),
        }
    }

    /// Set a counter, in memory and (written through) in sled, under the
    /// shard's lock so sled sees the changes of a key in order.
    fn put(&self, shard: &mut HashMap<String, Slot>, key: &str, slot: Slot) {
        if let Some(db) = &self.db {
            // Memory stays authoritative: a write sled refuses costs the
            // count's durability, never the limit.
            if let Err(e) = db.insert(key.as_bytes(), &slot.encode()) {
                store_error(&e);
            }
        }
        match shard.get_mut(key) {
            Some(existing) => *existing = slot,
            None => {
                shard.insert(key.to_string(), slot);
            }
        }
    }
}

fn live(shard: &HashMap<String, Slot>, key: &str, now: u64) -> u64 {
    shard.get(key).filter(|s| s.expires > now).map_or(0, |s| s.value)
}

fn store_error(e: &sled::Error) {
    metrics::counter!(telemetry::LIMITS_STORE_ERRORS, "store" => "embedded").increment(1);
    tracing::warn!(error = %e, "limits: cannot write a counter to sled; it is kept in memory");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(key: &str, limit: u64, reserve: bool) -> Item {
        Item { key: key.into(), limit, reserve, expires: 1_000 }
    }

    #[test]
    fn reserves_all_or_nothing() {
        let s = Embedded::memory();
        let items = [item("rpm:1:t:a", 2, true), item("rpm:1:u:a:x", 1, true)];
        assert_eq!(s.admit("a", &items, 10), Admit::Admitted(vec![1, 1]));
        // The user's limit is reached: the team's counter is left alone.
        assert_eq!(s.admit("a", &items, 10), Admit::Over { index: 1, used: 1 });
        assert_eq!(s.get("a", "rpm:1:t:a", 10), 1);
        // Checked, not reserved.
        assert_eq!(s.admit("a", &[item("tpd:1:t:a", 5, false)], 10), Admit::Admitted(vec![0]));
        assert_eq!(s.add("a", &[("tpd:1:t:a".into(), 7, 1_000)], 10), vec![7]);
        assert_eq!(s.admit("a", &[item("tpd:1:t:a", 5, false)], 10), Admit::Over { index: 0, used: 7 });
        // Expired counters count as zero and are pruned.
        assert_eq!(s.get("a", "tpd:1:t:a", 1_000), 0);
        s.prune(1_000);
        assert!(s.entries(0).is_empty());
    }

    #[test]
    fn exact_under_threads() {
        let s = std::sync::Arc::new(Embedded::memory());
        let passed = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (s, passed) = (s.clone(), passed.clone());
                std::thread::spawn(move || {
                    for _ in 0..100 {
                        if let Admit::Admitted(_) = s.admit("a", &[item("rpm:1:t:a", 250, true)], 10) {
                            passed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(passed.load(std::sync::atomic::Ordering::Relaxed), 250);
    }

    #[test]
    fn survives_reopening_and_drops_expired_counters() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Embedded::open(dir.path(), 10).unwrap();
            s.add("a", &[("tpd:1:t:a".into(), 42, 1_000), ("rpm:1:t:a".into(), 3, 60)], 10);
            s.flush().unwrap();
        }
        let s = Embedded::open(dir.path(), 100).unwrap();
        assert_eq!(s.get("a", "tpd:1:t:a", 100), 42);
        assert_eq!(s.entries(100), vec![("tpd:1:t:a".to_string(), 42)]);
    }
}
