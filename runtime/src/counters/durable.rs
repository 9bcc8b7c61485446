//! The `durable` counter store: the memory store answers every request
//! (same speed, same exactness), and a writer thread puts what changed
//! into an embedded database file (redb) every `flush_ms`, in one
//! transaction committed with an fsync. At start, the file's counters
//! whose window has not ended are loaded back.
//!
//! The guarantee: a counter change is on disk at most `flush_ms` (default
//! 100 ms) after the request that made it; a `kill -9` or a power loss
//! loses at most the changes of that last interval, and a store that is
//! replaced or dropped (a reload that changes `counters:`) writes
//! everything first. A file is used by one gateway at a time (redb locks
//! it): share counters between gateways with the `redis` store.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redb::{ReadableDatabase, ReadableTable, TableDefinition};

use super::memory::MemoryStore;
use super::FailMode;

const TABLE: TableDefinition<&str, &[u8]> = TableDefinition::new("counters");

static WRITE_LOG: crate::observe::LogBudget = crate::observe::LogBudget::new();

/// The writer of a durable store; dropping it writes the last changes and
/// stops the thread.
pub struct Durable {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Durable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Durable").field("path", &self.path).finish()
    }
}

impl Drop for Durable {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

/// Opens (or creates) the file at `path`, loads its live counters into a
/// new memory store and starts the writer.
///
/// # Errors
///
/// Why the file cannot be used, naming it.
pub fn open(
    path: &Path,
    max_keys: usize,
    fail_mode: FailMode,
    flush: Duration,
) -> Result<(Arc<MemoryStore>, Durable), String> {
    let name = path.display();
    let db = redb::Database::create(path)
        .map_err(|e| format!("cannot open the counter file {name}: {e}"))?;
    let mem = MemoryStore::with_tracking(max_keys, fail_mode, true);
    let now = super::now_ms();
    let mut loaded = 0usize;
    {
        let read = db
            .begin_read()
            .map_err(|e| format!("cannot read the counter file {name}: {e}"))?;
        match read.open_table(TABLE) {
            Ok(table) => {
                let iter = table
                    .iter()
                    .map_err(|e| format!("cannot read the counter file {name}: {e}"))?;
                for row in iter {
                    let (k, v) =
                        row.map_err(|e| format!("cannot read the counter file {name}: {e}"))?;
                    if mem.load(k.value(), v.value(), now) {
                        loaded += 1;
                    }
                }
            }
            Err(redb::TableError::TableDoesNotExist(_)) => {}
            Err(e) => return Err(format!("cannot read the counter file {name}: {e}")),
        }
    }
    tracing::info!(file = %name, counters = loaded, "durable counters loaded");
    let stop = Arc::new(AtomicBool::new(false));
    let thread = {
        let (mem, stop) = (mem.clone(), stop.clone());
        let path = path.to_path_buf();
        std::thread::Builder::new()
            .name("gatehouse-counters-write".into())
            .spawn(move || writer(db, mem, stop, flush, path))
            .map_err(|e| format!("cannot start the counter writer: {e}"))?
    };
    Ok((
        mem,
        Durable {
            path: path.to_path_buf(),
            stop,
            thread: Some(thread),
        },
    ))
}

fn writer(
    db: redb::Database,
    mem: Arc<MemoryStore>,
    stop: Arc<AtomicBool>,
    flush: Duration,
    path: PathBuf,
) {
    // Changes whose write failed, retried with the next ones.
    let mut retry: Vec<(String, Vec<u8>)> = Vec::new();
    let mut retry_swept: Vec<String> = Vec::new();
    loop {
        std::thread::park_timeout(flush);
        let stopping = stop.load(Ordering::Acquire);
        let (changed, swept) = mem.take_changes();
        retry.extend(changed);
        retry_swept.extend(swept);
        if !retry.is_empty() || !retry_swept.is_empty() {
            match write(&db, &retry, &retry_swept) {
                Ok(()) => {
                    retry.clear();
                    retry_swept.clear();
                }
                Err(e) => {
                    if let Some(suppressed) = WRITE_LOG.allow(5) {
                        tracing::warn!(suppressed, file = %path.display(), "cannot write the counters (kept in memory, retried): {e}");
                    }
                }
            }
        }
        if stopping {
            return;
        }
    }
}

fn write(
    db: &redb::Database,
    changed: &[(String, Vec<u8>)],
    swept: &[String],
) -> Result<(), String> {
    let tx = db.begin_write().map_err(|e| e.to_string())?;
    {
        let mut t = tx.open_table(TABLE).map_err(|e| e.to_string())?;
        for k in swept {
            // A key swept and then used again is in `changed` too (after).
            t.remove(k.as_str()).map_err(|e| e.to_string())?;
        }
        for (k, v) in changed {
            t.insert(k.as_str(), v.as_slice())
                .map_err(|e| e.to_string())?;
        }
    }
    tx.commit().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::counters::{Op, Window};

    #[test]
    fn counts_come_back_after_the_store_is_dropped() {
        let dir = std::env::temp_dir().join(format!("gh-durable-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("c.redb");
        let _ = std::fs::remove_file(&path);
        let w = Window::Periods {
            seconds: 0,
            start: 0,
        };
        let now = crate::counters::now_ms();
        {
            let (mem, _writer) =
                open(&path, 100, FailMode::Open, Duration::from_millis(20)).unwrap();
            for _ in 0..3 {
                assert!(mem.apply("q", 5, w, Op::Acquire(1), now).admitted);
            }
        }
        let (mem, writer) = open(&path, 100, FailMode::Open, Duration::from_millis(20)).unwrap();
        assert_eq!(mem.apply("q", 5, w, Op::Peek, now).used, 3);
        // The file is locked while a store has it.
        let e = open(&path, 100, FailMode::Open, Duration::from_millis(20)).unwrap_err();
        assert!(e.contains("c.redb"), "{e}");
        drop(writer);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
