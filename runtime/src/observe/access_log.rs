//! The access log sink: JSON lines to stdout or a file, buffered per worker
//! thread so that writing a line costs no system call and takes no lock
//! another worker waits on.
//!
//! Each worker appends its lines to its own buffer; a buffer is written out
//! when it passes [`FLUSH_BYTES`], and a flusher thread writes every buffer
//! every [`FLUSH_EVERY`] (so at a few thousand requests a second every
//! line is written by the flusher, off the request path). Every write is whole lines to a file opened in
//! append mode, so lines of different workers never interleave.
//! [`AccessLog::reopen`] (on `SIGUSR1`) opens the file again by path, for
//! log rotation: lines written after it go to the new file.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

/// A buffer is written out when it holds this many bytes: large writes,
/// because each write to a file costs its system call and an inode update
/// whatever its size.
pub const FLUSH_BYTES: usize = 1024 * 1024;
/// Every buffer is written out at least this often.
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);

enum Target {
    Stdout,
    File(File),
}

impl Target {
    fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Target::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(bytes)?;
                out.flush()
            }
            Target::File(f) => f.write_all(bytes),
        }
    }
}

/// Where access-log lines go.
pub struct AccessLog {
    path: Option<PathBuf>,
    /// Whether `path` lines carry the query string.
    pub include_query: bool,
    target: Mutex<Target>,
    buffers: Box<[Mutex<Vec<u8>>]>,
}

fn open(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

impl AccessLog {
    /// A sink writing to `path` (or stdout), with one buffer per worker
    /// thread (`workers`, plus one for any other thread), and its flusher
    /// thread, which ends when the sink is dropped.
    ///
    /// # Errors
    ///
    /// The file cannot be opened for appending (the message names it).
    pub fn open(
        path: Option<&Path>,
        include_query: bool,
        workers: usize,
    ) -> Result<Arc<AccessLog>, String> {
        let target = match path {
            Some(p) => Target::File(
                open(p).map_err(|e| format!("cannot open {} for appending: {e}", p.display()))?,
            ),
            None => Target::Stdout,
        };
        let log = Arc::new(AccessLog {
            path: path.map(Path::to_path_buf),
            include_query,
            target: Mutex::new(target),
            buffers: (0..workers.max(1) + 1)
                .map(|_| Mutex::new(Vec::with_capacity(FLUSH_BYTES + 1024)))
                .collect(),
        });
        spawn_flusher(Arc::downgrade(&log))
            .map_err(|e| format!("cannot start the access log thread: {e}"))?;
        Ok(log)
    }

    /// The file written to, or `None` for stdout.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Appends one line (without its newline) to this thread's buffer.
    pub fn write_line(&self, line: &[u8]) {
        self.write_with(|buf| {
            buf.extend_from_slice(line);
            Ok::<(), ()>(())
        });
    }

    /// Appends one line that `write` writes straight into this thread's
    /// buffer (no intermediate copy); the newline is added here. What
    /// `write` appended is removed again if it returns an error.
    pub fn write_with<E>(&self, write: impl FnOnce(&mut Vec<u8>) -> Result<(), E>) {
        let slot = crate::worker::index() % self.buffers.len();
        let Ok(mut buf) = self.buffers[slot].lock() else {
            return;
        };
        let mark = buf.len();
        if write(&mut buf).is_err() {
            buf.truncate(mark);
            return;
        }
        buf.push(b'\n');
        if buf.len() >= FLUSH_BYTES {
            let out = std::mem::take(&mut *buf);
            drop(buf);
            self.write_out(&out);
            if let Ok(mut b) = self.buffers[slot].lock() {
                if b.is_empty() {
                    // Keep the allocation.
                    let mut out = out;
                    out.clear();
                    *b = out;
                }
            }
        }
    }

    fn write_out(&self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        if let Ok(mut t) = self.target.lock() {
            if let Err(e) = t.write_all(bytes) {
                tracing::warn!("cannot write the access log: {e}");
            }
        }
    }

    /// Writes every buffered line now.
    pub fn flush(&self) {
        for b in self.buffers.iter() {
            let out = match b.lock() {
                Ok(mut b) if !b.is_empty() => std::mem::take(&mut *b),
                _ => continue,
            };
            self.write_out(&out);
        }
    }

    /// Writes what is buffered, then opens the file again by its path (a
    /// rotated-away file is closed, a new one created). Nothing happens for
    /// stdout.
    ///
    /// # Errors
    ///
    /// The file cannot be opened; lines keep going to the old file.
    pub fn reopen(&self) -> Result<(), String> {
        self.flush();
        let Some(path) = &self.path else {
            return Ok(());
        };
        let f = open(path).map_err(|e| format!("cannot reopen {}: {e}", path.display()))?;
        if let Ok(mut t) = self.target.lock() {
            *t = Target::File(f);
        }
        Ok(())
    }
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        self.flush();
    }
}

fn spawn_flusher(log: Weak<AccessLog>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("gatehouse-access-log".into())
        .spawn(move || loop {
            std::thread::sleep(FLUSH_EVERY);
            match log.upgrade() {
                Some(l) => l.flush(),
                None => break,
            }
        })
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_reach_the_file_and_reopen_follows_rotation() {
        let dir = std::env::temp_dir().join(format!("gh-al-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("access.log");
        let log = AccessLog::open(Some(&path), false, 2).unwrap();
        log.write_line(br#"{"n":1}"#);
        log.flush();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"n\":1}\n");
        std::fs::rename(&path, dir.join("access.log.1")).unwrap();
        log.reopen().unwrap();
        log.write_line(br#"{"n":2}"#);
        drop(log);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"n\":2}\n");
        assert_eq!(
            std::fs::read_to_string(dir.join("access.log.1")).unwrap(),
            "{\"n\":1}\n"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
