//! The in-memory counter store: 64 shards, each a mutex over a map from
//! counter key to its window state. A request locks the one shard its key
//! hashes to, for a few hundred nanoseconds; nothing is shared by all
//! requests. The number of keys is capped (`counters.max_keys`): a new key
//! past the cap is not counted and the operation reports the store as
//! unavailable, so the operator's `fail_mode` decides. A sweeper thread
//! drops keys whose window has emptied, every few seconds.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use super::{FailMode, Op, Usage, Window};

const SHARDS: usize = 64;
/// Buckets of a sliding window.
const BUCKETS: usize = 61;

/// A counter's state.
#[derive(Debug)]
enum State {
    Sliding {
        /// The absolute index (`now_ms / bucket_ms`) of the newest bucket.
        head: u64,
        /// Counts by `index % BUCKETS`.
        counts: Box<[u64; BUCKETS]>,
    },
    Period {
        index: i64,
        count: u64,
    },
}

#[derive(Debug)]
struct Entry {
    state: State,
    /// When every unit will have been forgotten (ms); `u64::MAX`: never.
    expires_ms: u64,
    /// Changed since the durable store last wrote it.
    dirty: bool,
}

impl Entry {
    /// The entry as bytes: expiry, then `S` head and the non-zero
    /// buckets, or `P` index and count.
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32);
        out.extend_from_slice(&self.expires_ms.to_le_bytes());
        match &self.state {
            State::Sliding { head, counts } => {
                out.push(b'S');
                out.extend_from_slice(&head.to_le_bytes());
                for (i, c) in counts.iter().enumerate() {
                    if *c > 0 {
                        out.push(i as u8);
                        out.extend_from_slice(&c.to_le_bytes());
                    }
                }
            }
            State::Period { index, count } => {
                out.push(b'P');
                out.extend_from_slice(&index.to_le_bytes());
                out.extend_from_slice(&count.to_le_bytes());
            }
        }
        out
    }

    fn decode(b: &[u8]) -> Option<Entry> {
        let u64_at = |i: usize| -> Option<u64> {
            Some(u64::from_le_bytes(b.get(i..i + 8)?.try_into().ok()?))
        };
        let expires_ms = u64_at(0)?;
        let state = match b.get(8)? {
            b'S' => {
                let head = u64_at(9)?;
                let mut counts = Box::new([0u64; BUCKETS]);
                let mut i = 17;
                while i < b.len() {
                    let slot = *b.get(i)? as usize;
                    *counts.get_mut(slot)? = u64_at(i + 1)?;
                    i += 9;
                }
                State::Sliding { head, counts }
            }
            b'P' => State::Period {
                index: u64_at(9)? as i64,
                count: u64_at(17)?,
            },
            _ => return None,
        };
        Some(Entry {
            state,
            expires_ms,
            dirty: false,
        })
    }
}

/// The store.
pub struct MemoryStore {
    shards: Vec<Mutex<Shard>>,
    hasher: std::collections::hash_map::RandomState,
    keys: AtomicUsize,
    max_keys: usize,
    fail_mode: FailMode,
    /// Whether a durable store writes this one's changes out.
    track: bool,
}

/// One shard: its counters, and (for a durable store) the keys swept
/// since the last write.
#[derive(Default)]
struct Shard {
    map: HashMap<String, Entry>,
    swept: Vec<String>,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("keys", &self.keys.load(Ordering::Relaxed))
            .finish()
    }
}

/// Sliding windows: how many buckets the window spans (those overlapping
/// the last `seconds`), at most `BUCKETS - 1`.
fn span(seconds: u32, bucket_ms: u64) -> u64 {
    (u64::from(seconds) * 1000).div_ceil(bucket_ms)
}

impl MemoryStore {
    /// A store of at most `max_keys` keys, swept in the background while
    /// it lives.
    pub fn new(max_keys: usize, fail_mode: FailMode) -> Arc<Self> {
        Self::with_tracking(max_keys, fail_mode, false)
    }

    /// A store whose changes a durable store collects
    /// ([`MemoryStore::take_changes`]).
    pub fn with_tracking(max_keys: usize, fail_mode: FailMode, track: bool) -> Arc<Self> {
        let store = Arc::new(MemoryStore {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            hasher: Default::default(),
            keys: AtomicUsize::new(0),
            max_keys,
            fail_mode,
            track,
        });
        spawn_sweeper(Arc::downgrade(&store));
        store
    }

    /// Keys held now.
    pub fn len(&self) -> usize {
        self.keys.load(Ordering::Relaxed)
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn shard(&self, key: &str) -> &Mutex<Shard> {
        &self.shards[(self.hasher.hash_one(key) as usize) % SHARDS]
    }

    /// Runs `op` on the counter `key` (`limit` units per `window`) at
    /// `now_ms`.
    pub fn apply(&self, key: &str, limit: u64, window: Window, op: Op, now_ms: u64) -> Usage {
        let mut guard = self.shard(key).lock().unwrap_or_else(|p| p.into_inner());
        let shard = &mut guard.map;
        let entry = match shard.get_mut(key) {
            Some(e) => e,
            None => {
                if matches!(op, Op::Peek | Op::Release { .. }) {
                    return Usage {
                        admitted: true,
                        limit,
                        ..Usage::default()
                    };
                }
                if self.keys.load(Ordering::Relaxed) >= self.max_keys {
                    return Usage {
                        admitted: self.fail_mode == FailMode::Open,
                        limit,
                        unavailable: Some(format!(
                            "the counter store holds its maximum of {} keys (counters.max_keys)",
                            self.max_keys
                        )),
                        ..Usage::default()
                    };
                }
                self.keys.fetch_add(1, Ordering::Relaxed);
                shard.entry(key.to_string()).or_insert(Entry {
                    state: match window {
                        Window::Sliding(_) => State::Sliding {
                            head: 0,
                            counts: Box::new([0; BUCKETS]),
                        },
                        Window::Periods { .. } => State::Period {
                            index: i64::MIN,
                            count: 0,
                        },
                    },
                    expires_ms: 0,
                    dirty: false,
                })
            }
        };
        let usage = apply_to(entry, limit, window, op, now_ms);
        if self.track && !matches!(op, Op::Peek) {
            entry.dirty = true;
        }
        usage
    }

    /// Puts a counter read back from a durable store (if it is not past
    /// its window at `now_ms`).
    pub fn load(&self, key: &str, bytes: &[u8], now_ms: u64) -> bool {
        let Some(e) = Entry::decode(bytes) else {
            return false;
        };
        if e.expires_ms <= now_ms {
            return false;
        }
        let mut shard = self.shard(key).lock().unwrap_or_else(|p| p.into_inner());
        if shard.map.insert(key.to_string(), e).is_none() {
            self.keys.fetch_add(1, Ordering::Relaxed);
        }
        true
    }

    /// The counters changed since the last call, encoded, and the keys
    /// swept since: what a durable store writes out.
    pub fn take_changes(&self) -> (Vec<(String, Vec<u8>)>, Vec<String>) {
        let mut changed = Vec::new();
        let mut swept = Vec::new();
        for shard in &self.shards {
            let mut s = shard.lock().unwrap_or_else(|p| p.into_inner());
            swept.append(&mut s.swept);
            for (k, e) in s.map.iter_mut() {
                if e.dirty {
                    e.dirty = false;
                    changed.push((k.clone(), e.encode()));
                }
            }
        }
        (changed, swept)
    }

    /// Drops keys whose window is empty at `now_ms`.
    pub fn sweep(&self, now_ms: u64) {
        for shard in &self.shards {
            let mut guard = shard.lock().unwrap_or_else(|p| p.into_inner());
            let Shard { map: m, swept } = &mut *guard;
            let before = m.len();
            if self.track {
                m.retain(|k, e| {
                    let keep = e.expires_ms > now_ms;
                    if !keep {
                        swept.push(k.clone());
                    }
                    keep
                });
            } else {
                m.retain(|_, e| e.expires_ms > now_ms);
            }
            let dropped = before - m.len();
            if dropped > 0 {
                self.keys.fetch_sub(dropped, Ordering::Relaxed);
            }
        }
    }
}

fn apply_to(e: &mut Entry, limit: u64, window: Window, op: Op, now_ms: u64) -> Usage {
    match (window, &mut e.state) {
        (Window::Sliding(seconds), State::Sliding { head, counts }) => {
            let bucket_ms = Window::bucket_ms(seconds);
            let span = span(seconds, bucket_ms).min(BUCKETS as u64 - 1);
            let now = now_ms / bucket_ms;
            // Move the head forward, clearing the buckets it passes.
            if now > *head {
                let steps = (now - *head).min(BUCKETS as u64);
                for i in 1..=steps {
                    counts[((*head + i) % BUCKETS as u64) as usize] = 0;
                }
                *head = now;
            }
            // The buckets overlapping the window: now-span ..= now.
            let oldest = now.saturating_sub(span);
            let used: u64 = (oldest..=now)
                .map(|i| counts[(i % BUCKETS as u64) as usize])
                .sum();
            let mut usage = Usage {
                used,
                limit,
                reservation: now,
                admitted: true,
                ..Usage::default()
            };
            match op {
                Op::Peek => usage.admitted = used <= limit,
                Op::Add(n) => {
                    counts[(now % BUCKETS as u64) as usize] += n;
                    usage.used = used + n;
                    usage.admitted = usage.used <= limit;
                }
                Op::Acquire(n) => {
                    if used.saturating_add(n) <= limit {
                        counts[(now % BUCKETS as u64) as usize] += n;
                        usage.used = used + n;
                    } else {
                        usage.admitted = false;
                        // When do enough of the oldest units leave?
                        let need = used + n - limit;
                        let mut freed = 0;
                        let mut at = now + 1;
                        for i in oldest..=now {
                            freed += counts[(i % BUCKETS as u64) as usize];
                            if freed >= need {
                                // Bucket i leaves the window when the
                                // newest bucket is i + span + 1.
                                at = i + span + 1;
                                break;
                            }
                        }
                        let wait_ms = (at * bucket_ms).saturating_sub(now_ms);
                        usage.retry_after_seconds = wait_ms.div_ceil(1000).max(1) as u32;
                    }
                }
                Op::Release {
                    reservation,
                    amount,
                } => {
                    if reservation >= oldest && reservation <= now {
                        let c = &mut counts[(reservation % BUCKETS as u64) as usize];
                        *c = c.saturating_sub(amount);
                        usage.used = used.saturating_sub(amount);
                    }
                }
            }
            e.expires_ms = (now + span + 1) * bucket_ms;
            usage
        }
        (Window::Periods { seconds, start }, State::Period { index, count }) => {
            let now_s = (now_ms / 1000) as i64;
            let (cur, end_ms) = if seconds == 0 {
                (0, u64::MAX)
            } else {
                let len = i64::from(seconds);
                let i = (now_s - start).div_euclid(len);
                (i, ((start + (i + 1) * len).max(0) as u64) * 1000)
            };
            if *index != cur {
                *index = cur;
                *count = 0;
            }
            let mut usage = Usage {
                used: *count,
                limit,
                reservation: cur as u64,
                admitted: true,
                ..Usage::default()
            };
            match op {
                Op::Peek => usage.admitted = *count <= limit,
                Op::Add(n) => {
                    *count += n;
                    usage.used = *count;
                    usage.admitted = *count <= limit;
                }
                Op::Acquire(n) => {
                    if count.saturating_add(n) <= limit {
                        *count += n;
                        usage.used = *count;
                    } else {
                        usage.admitted = false;
                        usage.retry_after_seconds = if end_ms == u64::MAX {
                            u32::MAX
                        } else {
                            end_ms.saturating_sub(now_ms).div_ceil(1000).max(1) as u32
                        };
                    }
                }
                Op::Release {
                    reservation,
                    amount,
                } => {
                    if reservation == cur as u64 {
                        *count = count.saturating_sub(amount);
                        usage.used = *count;
                    }
                }
            }
            e.expires_ms = end_ms;
            usage
        }
        // The key's window changed shape (a config change): start again.
        (w, state) => {
            *state = match w {
                Window::Sliding(_) => State::Sliding {
                    head: 0,
                    counts: Box::new([0; BUCKETS]),
                },
                Window::Periods { .. } => State::Period {
                    index: i64::MIN,
                    count: 0,
                },
            };
            apply_to(e, limit, window, op, now_ms)
        }
    }
}

fn spawn_sweeper(store: Weak<MemoryStore>) {
    let spawned = std::thread::Builder::new()
        .name("gatehouse-counters-sweep".into())
        .spawn(move || loop {
            std::thread::sleep(Duration::from_secs(5));
            let Some(s) = store.upgrade() else {
                return;
            };
            s.sweep(super::now_ms());
        });
    if let Err(e) = spawned {
        tracing::error!(
            "cannot start the counter sweeper: {e}; expired counters stay until restart"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_700_000_000_000;

    #[test]
    fn a_sliding_window_never_admits_more_than_the_limit() {
        let s = MemoryStore::new(100, FailMode::Open);
        let w = Window::Sliding(10);
        for i in 0..5 {
            assert!(s.apply("k", 5, w, Op::Acquire(1), T0 + i * 100).admitted);
        }
        let u = s.apply("k", 5, w, Op::Acquire(1), T0 + 600);
        assert!(!u.admitted);
        assert!(u.retry_after_seconds >= 9, "{u:?}");
        // 10 s later the first units are forgotten (one bucket late at most).
        assert!(!s.apply("k", 5, w, Op::Acquire(1), T0 + 9_999).admitted);
        assert!(s.apply("k", 5, w, Op::Acquire(1), T0 + 11_001).admitted);
        // Another key is counted apart.
        assert!(s.apply("other", 5, w, Op::Acquire(5), T0).admitted);
    }

    #[test]
    fn release_takes_back_a_reservation_once() {
        let s = MemoryStore::new(100, FailMode::Open);
        let w = Window::Sliding(60);
        let u = s.apply("k", 2, w, Op::Acquire(2), T0);
        assert!(u.admitted);
        assert!(!s.apply("k", 2, w, Op::Acquire(1), T0 + 10).admitted);
        let r = Op::Release {
            reservation: u.reservation,
            amount: 1,
        };
        s.apply("k", 2, w, r, T0 + 20);
        assert!(s.apply("k", 2, w, Op::Acquire(1), T0 + 30).admitted);
        assert!(!s.apply("k", 2, w, Op::Acquire(1), T0 + 40).admitted);
    }

    #[test]
    fn periods_align_to_their_start_and_zero_never_renews() {
        let s = MemoryStore::new(100, FailMode::Open);
        // Periods of 100 s starting at T0/1000 + 30.
        let start = (T0 / 1000) as i64 + 30;
        let w = Window::Periods {
            seconds: 100,
            start,
        };
        assert!(s.apply("q", 1, w, Op::Acquire(1), T0).admitted);
        let u = s.apply("q", 1, w, Op::Acquire(1), T0 + 1_000);
        assert!(!u.admitted);
        assert_eq!(u.retry_after_seconds, 29, "the period ends at start");
        assert!(s.apply("q", 1, w, Op::Acquire(1), T0 + 30_000).admitted);
        let never = Window::Periods {
            seconds: 0,
            start: 0,
        };
        assert!(s.apply("n", 1, never, Op::Acquire(1), T0).admitted);
        assert!(
            !s.apply("n", 1, never, Op::Acquire(1), T0 + 86_400_000 * 400)
                .admitted
        );
    }

    #[test]
    fn the_key_cap_reports_unavailable_and_follows_the_fail_mode() {
        let open = MemoryStore::new(1, FailMode::Open);
        assert!(
            open.apply("a", 1, Window::Sliding(1), Op::Acquire(1), T0)
                .admitted
        );
        let u = open.apply("b", 1, Window::Sliding(1), Op::Acquire(1), T0);
        assert!(u.admitted && u.unavailable.is_some());
        let closed = MemoryStore::new(1, FailMode::Closed);
        closed.apply("a", 1, Window::Sliding(1), Op::Acquire(1), T0);
        assert!(
            !closed
                .apply("b", 1, Window::Sliding(1), Op::Acquire(1), T0)
                .admitted
        );
        // Swept once the window has emptied: room again.
        closed.sweep(T0 + 3_000);
        assert!(closed.is_empty());
        assert!(
            closed
                .apply("b", 1, Window::Sliding(1), Op::Acquire(1), T0 + 3_000)
                .admitted
        );
    }

    #[test]
    fn entries_survive_encoding_and_changes_are_collected() {
        let s = MemoryStore::with_tracking(100, FailMode::Open, true);
        let w = Window::Sliding(120);
        s.apply("k", 3, w, Op::Acquire(2), T0);
        s.apply(
            "p",
            3,
            Window::Periods {
                seconds: 60,
                start: 0,
            },
            Op::Acquire(1),
            T0,
        );
        let (changed, swept) = s.take_changes();
        assert_eq!(changed.len(), 2);
        assert!(swept.is_empty());
        assert!(s.take_changes().0.is_empty(), "written once");
        let back = MemoryStore::new(100, FailMode::Open);
        for (k, b) in &changed {
            assert!(back.load(k, b, T0 + 1));
        }
        assert!(back.apply("k", 3, w, Op::Acquire(1), T0 + 2).admitted);
        assert!(
            !back.apply("k", 3, w, Op::Acquire(1), T0 + 3).admitted,
            "2 + 1 = 3"
        );
        let p = Window::Periods {
            seconds: 60,
            start: 0,
        };
        assert_eq!(back.apply("p", 3, p, Op::Peek, T0 + 4).used, 1);
        // Past its window, an entry is not loaded; a sweep reports it.
        let late = MemoryStore::new(100, FailMode::Open);
        assert!(!late.load(
            "k",
            &changed.iter().find(|c| c.0 == "k").unwrap().1,
            T0 + 300_000
        ));
        s.sweep(T0 + 300_000);
        assert_eq!(s.take_changes().1.len(), 2);
    }

    #[test]
    fn concurrent_acquires_admit_exactly_the_limit() {
        let s = MemoryStore::new(100, FailMode::Open);
        let admitted = AtomicUsize::new(0);
        std::thread::scope(|sc| {
            for _ in 0..8 {
                sc.spawn(|| {
                    for _ in 0..25 {
                        if s.apply("k", 50, Window::Sliding(60), Op::Acquire(1), T0)
                            .admitted
                        {
                            admitted.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        assert_eq!(admitted.load(Ordering::Relaxed), 50);
    }
}
