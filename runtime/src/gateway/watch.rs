//! `reload.watch: true`: reload when the config file or any file it names
//! changes (certificates, keys, truststores, policy components,
//! named-value files).
//!
//! The watcher (`notify`: inotify on Linux) watches the directories that
//! hold those files, not the files themselves, so a file replaced by a
//! rename (what editors and certificate tools do) is seen too. Changes are
//! gathered for [`SETTLE`] before one reload, so a certificate and its key
//! written one after the other cause one reload. After each reload the
//! watched set follows the new config.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use notify::{RecursiveMode, Watcher as _};

use super::Inner;
use crate::proxy::snapshot::Snapshot;

/// How long changes are gathered before a reload.
pub const SETTLE: Duration = Duration::from_millis(250);

/// A running file watcher.
pub struct Watcher {
    watcher: Mutex<notify::RecommendedWatcher>,
    files: Arc<Mutex<BTreeSet<PathBuf>>>,
    dirs: Mutex<BTreeSet<PathBuf>>,
}

fn dirs_of(files: &BTreeSet<PathBuf>) -> BTreeSet<PathBuf> {
    files
        .iter()
        .filter_map(|f| f.parent().map(Path::to_path_buf))
        .map(|d| {
            if d.as_os_str().is_empty() {
                PathBuf::from(".")
            } else {
                d
            }
        })
        .collect()
}

impl Watcher {
    fn start(inner: Weak<Inner>, files: BTreeSet<PathBuf>) -> notify::Result<Watcher> {
        let (tx, rx) = mpsc::channel::<notify::Result<notify::Event>>();
        let watcher = notify::recommended_watcher(move |e| {
            let _ = tx.send(e);
        })?;
        let files = Arc::new(Mutex::new(files));
        let w = Watcher {
            watcher: Mutex::new(watcher),
            files: files.clone(),
            dirs: Mutex::new(BTreeSet::new()),
        };
        w.follow();
        std::thread::Builder::new()
            .name("gatehouse-watch".into())
            .spawn(move || run(inner, files, rx))?;
        Ok(w)
    }

    /// Watches the directories of the current file set.
    fn follow(&self) {
        let wanted = match self.files.lock() {
            Ok(f) => dirs_of(&f),
            Err(_) => return,
        };
        let (Ok(mut watcher), Ok(mut dirs)) = (self.watcher.lock(), self.dirs.lock()) else {
            return;
        };
        for d in dirs.difference(&wanted) {
            let _ = watcher.unwatch(d);
        }
        for d in wanted.difference(&dirs) {
            if let Err(e) = watcher.watch(d, RecursiveMode::NonRecursive) {
                tracing::warn!("cannot watch {} for changes: {e}", d.display());
            }
        }
        *dirs = wanted;
    }

    fn set_files(&self, files: BTreeSet<PathBuf>) {
        if let Ok(mut f) = self.files.lock() {
            *f = files;
        }
        self.follow();
    }
}

fn relevant(files: &Mutex<BTreeSet<PathBuf>>, e: &notify::Event) -> bool {
    if e.kind.is_access() {
        return false;
    }
    let Ok(files) = files.lock() else {
        return false;
    };
    e.paths.iter().any(|p| files.contains(p))
}

fn run(
    inner: Weak<Inner>,
    files: Arc<Mutex<BTreeSet<PathBuf>>>,
    rx: mpsc::Receiver<notify::Result<notify::Event>>,
) {
    while let Ok(event) = rx.recv() {
        let changed = match &event {
            Ok(e) => relevant(&files, e),
            Err(e) => {
                tracing::warn!("file watch: {e}");
                false
            }
        };
        if !changed {
            continue;
        }
        // Gather what follows (a key after its certificate) into one reload.
        let until = std::time::Instant::now() + SETTLE;
        loop {
            let left = until.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                break;
            }
            match rx.recv_timeout(left) {
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Timeout) => break,
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
        }
        let Some(inner) = inner.upgrade() else {
            return;
        };
        tracing::info!("a watched file changed; reloading");
        // A refused reload is logged by `reload`.
        let _ = super::reload(&inner);
    }
}

/// Starts, updates or stops the watcher to match `snapshot`.
pub(super) fn update(inner: &Arc<Inner>, snapshot: &Snapshot) {
    let Ok(mut slot) = inner.watcher.lock() else {
        return;
    };
    if !snapshot.watch {
        // Dropping the notify watcher ends its thread.
        slot.take();
        return;
    }
    let files: BTreeSet<PathBuf> = snapshot
        .files
        .iter()
        .map(|f| std::path::absolute(f).unwrap_or_else(|_| f.clone()))
        .collect();
    match slot.as_ref() {
        Some(w) => w.set_files(files),
        None => match Watcher::start(Arc::downgrade(inner), files) {
            Ok(w) => *slot = Some(w),
            Err(e) => tracing::error!("cannot watch the config's files: {e}"),
        },
    }
}
