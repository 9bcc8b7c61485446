//! Request traces: every step of one request, recorded when the client asks
//! for it with the admin's trace key, and kept in a bounded store that the
//! admin listener serves at `GET /traces/{id}`.
//!
//! A trace is a list of records `{source, timestamp, elapsed_us, data}`:
//! `source` is `tls`, `routing`, `policy`, `upstream`, `fault` or
//! `completion`; `data` is a JSON object whose fields depend on the source
//! (documented in docs/OPERATIONS.md). Text a policy wrote passes through
//! the config's secret redaction before it is recorded.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use serde_json::{json, Value};

/// One step of a traced request.
#[derive(Clone, Debug)]
pub struct TraceRecord {
    /// Who recorded it: `tls`, `routing`, `policy`, `upstream`, `fault`,
    /// `completion`.
    pub source: &'static str,
    /// Wall-clock time of the step.
    pub timestamp: SystemTime,
    /// Microseconds since the request arrived.
    pub elapsed_us: u64,
    /// What happened.
    pub data: Value,
}

/// The trace of one request.
#[derive(Debug)]
pub struct Trace {
    /// The trace id (the request id).
    pub id: String,
    /// Secret values redacted from every record.
    secrets: crate::config::Secrets,
    started: Instant,
    started_wall: SystemTime,
    records: Vec<TraceRecord>,
}

impl Trace {
    /// A trace of the request `id` that arrived at `started`, redacting
    /// `secrets` from every record.
    pub fn new(id: String, started: Instant, secrets: crate::config::Secrets) -> Self {
        let started_wall = SystemTime::now()
            .checked_sub(started.elapsed())
            .unwrap_or_else(SystemTime::now);
        Trace {
            id,
            secrets,
            started,
            started_wall,
            records: Vec::with_capacity(16),
        }
    }

    /// Adds a record.
    pub fn record(&mut self, source: &'static str, data: Value) {
        // A policy could trace in a loop: bound what one request holds.
        if self.records.len() >= MAX_RECORDS {
            return;
        }
        let mut data = data;
        if !self.secrets.is_empty() {
            redact(&mut data, &self.secrets);
        }
        self.records.push(TraceRecord {
            source,
            timestamp: SystemTime::now(),
            elapsed_us: self.started.elapsed().as_micros() as u64,
            data,
        });
    }

    /// The records so far.
    pub fn records(&self) -> &[TraceRecord] {
        &self.records
    }

    /// The trace as JSON.
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "started": super::rfc3339(self.started_wall),
            "records": self.records.iter().map(|r| json!({
                "source": r.source,
                "timestamp": super::rfc3339(r.timestamp),
                "elapsed_us": r.elapsed_us,
                "data": r.data,
            })).collect::<Vec<_>>(),
        })
    }
}

fn redact(v: &mut Value, secrets: &crate::config::Secrets) {
    match v {
        Value::String(s) => *s = secrets.redact(s),
        Value::Array(items) => items.iter_mut().for_each(|i| redact(i, secrets)),
        Value::Object(map) => map.values_mut().for_each(|i| redact(i, secrets)),
        _ => {}
    }
}

/// Most records one trace keeps.
pub const MAX_RECORDS: usize = 512;

/// A trace shared between the request that writes it and the store that
/// serves it.
pub type SharedTrace = Arc<Mutex<Trace>>;

/// The most recent traces, bounded by count.
pub struct TraceStore {
    capacity: usize,
    inner: Mutex<StoreInner>,
}

#[derive(Default)]
struct StoreInner {
    order: VecDeque<String>,
    traces: HashMap<String, SharedTrace>,
}

impl TraceStore {
    /// A store keeping the last `capacity` traces.
    pub fn new(capacity: usize) -> Self {
        TraceStore {
            capacity: capacity.max(1),
            inner: Mutex::new(StoreInner::default()),
        }
    }

    /// Keeps `trace`, dropping the oldest one if the store is full. The
    /// request may go on adding records (its completion) afterwards.
    pub fn insert(&self, trace: SharedTrace) {
        let id = match trace.lock() {
            Ok(t) => t.id.clone(),
            Err(_) => return,
        };
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        if inner.traces.insert(id.clone(), trace).is_none() {
            inner.order.push_back(id);
        }
        while inner.order.len() > self.capacity {
            if let Some(old) = inner.order.pop_front() {
                inner.traces.remove(&old);
            }
        }
    }

    /// The trace with id `id`, as JSON.
    pub fn get(&self, id: &str) -> Option<Value> {
        let t = self.inner.lock().ok()?.traces.get(id).cloned()?;
        let t = t.lock().ok()?;
        Some(t.to_json())
    }

    /// How many traces are kept.
    pub fn len(&self) -> usize {
        self.inner.lock().map(|i| i.traces.len()).unwrap_or(0)
    }

    /// Whether no trace is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_store_keeps_the_most_recent_traces() {
        let store = TraceStore::new(2);
        for id in ["a", "b", "c"] {
            let mut t = Trace::new(id.into(), Instant::now(), Default::default());
            t.record("routing", json!({"api": id}));
            store.insert(Arc::new(Mutex::new(t)));
        }
        assert!(store.get("a").is_none());
        let c = store.get("c").unwrap();
        assert_eq!(c["records"][0]["source"], "routing");
        assert_eq!(c["records"][0]["data"]["api"], "c");
        assert_eq!(store.len(), 2);
    }
}
