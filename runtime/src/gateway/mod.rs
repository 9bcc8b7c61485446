//! The running gateway: one handle ([`Gateway`]) for start, reload and
//! stop, used alike by `gatehouse run` and by the end-to-end tests.
//!
//! - [`build`]: config -> [`Snapshot`], collecting every problem.
//! - [`chains`]: effective chains and their policy pools.
//! - [`workers`]: worker threads and the listeners they serve.
//! - [`watch`]: reloading when a file the config names changes.
//!
//! What lives for the whole process: the [`PolicyRuntime`] (engine,
//! compiled components, epoch ticker), the metrics, the trace store and the
//! worker threads. What a reload replaces: the [`Snapshot`], swapped
//! atomically in [`Live`]; listeners are bound or closed to match it, and
//! upstreams, pools and the access-log file are carried over when
//! unchanged.

pub mod build;
pub mod chains;
pub mod signals;
pub mod watch;
pub mod workers;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use serde_json::json;

use crate::admin::{AdminServer, Control};
use crate::config::{self, Config, ConfigError, ConfigErrors, Source};
use crate::observe::metrics::Metrics;
use crate::observe::trace::TraceStore;
use crate::policy::{EngineSettings, HostServices, PolicyRuntime};
use crate::proxy::snapshot::{Live, Snapshot};
use build::BuildContext;
use workers::{Listening, Workers};

/// How to run.
#[derive(Clone, Debug)]
pub struct Options {
    /// Worker threads (at least 1).
    pub workers: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            workers: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
        }
    }
}

/// Why the gateway did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The config has problems.
    #[error("{0}")]
    Config(ConfigErrors),
    /// Something could not be bound or started.
    #[error("{0}")]
    Io(String),
}

/// What a reload did.
#[derive(Debug, Clone)]
pub struct ReloadReport {
    /// The generation now in force.
    pub generation: u64,
    /// Listeners bound by this reload.
    pub listeners_added: Vec<String>,
    /// Listeners closed by this reload.
    pub listeners_removed: Vec<String>,
    /// Components compiled (new bytes) during this reload.
    pub components_compiled: u64,
    /// Components taken from memory (bytes unchanged).
    pub components_reused: u64,
    /// How long the reload took, in milliseconds.
    pub took_ms: u64,
}

/// A running gateway.
pub struct Gateway {
    inner: Arc<Inner>,
}

struct Inner {
    live: Arc<Live>,
    runtime: Arc<PolicyRuntime>,
    /// The config file to reload (`None`: the embedded quickstart).
    path: Option<PathBuf>,
    workers: Mutex<Option<Workers>>,
    worker_count: usize,
    listening: Mutex<Vec<Listening>>,
    admin: Mutex<Option<AdminServer>>,
    reloading: Mutex<()>,
    ready: AtomicBool,
    watcher: Mutex<Option<watch::Watcher>>,
    /// Stops the signal thread, when signals are handled.
    signals: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
}

/// Loads the config at `path` (or the quickstart).
///
/// # Errors
///
/// The file cannot be read or parsed.
pub fn read_config(path: Option<&Path>) -> Result<(Config, Source), ConfigErrors> {
    Ok(match path {
        Some(p) => config::load(p)?,
        None => config::quickstart()?,
    })
}

/// Builds a snapshot without serving it: the whole of `gatehouse check`.
///
/// # Errors
///
/// Every problem, with file and key path.
pub fn check(path: Option<&Path>) -> Result<Snapshot, ConfigErrors> {
    let (config, source) = read_config(path)?;
    let metrics = Arc::new(Metrics::new());
    let runtime = new_runtime(&config, &source, &metrics)?;
    build::build(
        &config,
        &source,
        BuildContext {
            runtime: &runtime,
            metrics: &metrics,
            workers: 1,
            previous: None,
            generation: 1,
            check_only: true,
        },
    )
}

fn new_runtime(
    config: &Config,
    source: &Source,
    metrics: &Arc<Metrics>,
) -> Result<Arc<PolicyRuntime>, ConfigErrors> {
    PolicyRuntime::new(
        EngineSettings::from_config(&config.policy_runtime, source),
        HostServices::new(metrics.clone()),
    )
    .map_err(|e| {
        ConfigErrors::from(ConfigError::new(
            source,
            "policy_runtime",
            format!("cannot start the policy runtime: {e}"),
        ))
    })
}

impl Gateway {
    /// Loads the config at `path` (or the embedded quickstart), builds it,
    /// binds every listener on `opts.workers` worker threads and serves.
    ///
    /// # Errors
    ///
    /// Every config problem, or a listener that cannot bind.
    pub fn start(path: Option<&Path>, opts: Options) -> Result<Gateway, StartError> {
        let (config, source) = read_config(path).map_err(StartError::Config)?;
        Self::start_with(&config, &source, opts)
    }

    /// Like [`Gateway::start`], with a config already parsed. Reloads read
    /// `source.path` again (the quickstart when there is none).
    ///
    /// # Errors
    ///
    /// Every config problem, or a listener that cannot bind.
    pub fn start_with(
        config: &Config,
        source: &Source,
        opts: Options,
    ) -> Result<Gateway, StartError> {
        let workers_n = opts.workers.max(1);
        let metrics = Arc::new(Metrics::new());
        let runtime = new_runtime(config, source, &metrics).map_err(StartError::Config)?;
        let snapshot = build::build(
            config,
            source,
            BuildContext {
                runtime: &runtime,
                metrics: &metrics,
                workers: workers_n,
                previous: None,
                generation: 1,
                check_only: false,
            },
        )
        .map_err(StartError::Config)?;
        for w in &snapshot.warnings {
            tracing::warn!("{w}");
        }
        let traces = TraceStore::new(config.admin.as_ref().map_or(256, |a| a.traces_kept));
        let live = Arc::new(Live::new(Arc::new(snapshot), metrics, traces));
        let workers = Workers::start(workers_n)
            .map_err(|e| StartError::Io(format!("cannot start the worker threads: {e}")))?;
        let inner = Arc::new(Inner {
            live: live.clone(),
            runtime,
            path: source.path.clone(),
            workers: Mutex::new(None),
            worker_count: workers.len(),
            listening: Mutex::new(Vec::new()),
            admin: Mutex::new(None),
            reloading: Mutex::new(()),
            ready: AtomicBool::new(false),
            watcher: Mutex::new(None),
            signals: Mutex::new(None),
        });
        let snap = live.load();
        let mut listening = Vec::new();
        for l in &snap.listeners {
            match workers.listen(&l.name, l.address, &live, !l.share_address) {
                Ok(b) => {
                    tracing::info!(listener = %l.name, address = %b.address, tls = l.tls.is_some(), workers = workers.len(), "listening");
                    listening.push(b);
                }
                Err(e) => {
                    for b in listening {
                        drop(b.stop());
                    }
                    workers.exit();
                    return Err(StartError::Io(e));
                }
            }
        }
        if let Ok(mut w) = inner.workers.lock() {
            *w = Some(workers);
        }
        if let Ok(mut l) = inner.listening.lock() {
            *l = listening;
        }
        let gw = Gateway { inner };
        if let Some(a) = &snap.admin {
            let server = AdminServer::start(a.address, gw.control()).map_err(|e| {
                gw.stop_now();
                StartError::Io(e)
            })?;
            if let Ok(mut slot) = gw.inner.admin.lock() {
                *slot = Some(server);
            }
        }
        watch::update(&gw.inner, &snap);
        gw.inner.ready.store(true, Ordering::Release);
        Ok(gw)
    }

    fn control(&self) -> Arc<dyn Control> {
        Arc::new(AdminControl(Arc::downgrade(&self.inner)))
    }

    /// The live state: the snapshot in force, metrics, traces.
    pub fn live(&self) -> &Arc<Live> {
        &self.inner.live
    }

    /// The bound addresses, by listener name, in config order.
    pub fn addresses(&self) -> Vec<(String, SocketAddr)> {
        self.inner
            .listening
            .lock()
            .map(|l| l.iter().map(|b| (b.name.to_string(), b.address)).collect())
            .unwrap_or_default()
    }

    /// The address of the listener called `name`.
    pub fn address(&self, name: &str) -> Option<SocketAddr> {
        self.inner
            .listening
            .lock()
            .ok()?
            .iter()
            .find(|b| &*b.name == name)
            .map(|b| b.address)
    }

    /// The admin listener's address.
    pub fn admin_address(&self) -> Option<SocketAddr> {
        self.inner
            .admin
            .lock()
            .ok()?
            .as_ref()
            .map(AdminServer::address)
    }

    /// Reloads the config from its file: builds a new snapshot (refused,
    /// with every problem, if the config fails `gatehouse check`), binds
    /// new listeners, swaps the snapshot in, and closes removed listeners.
    /// Requests in flight finish on the snapshot they started with.
    ///
    /// # Errors
    ///
    /// Every problem of the new config; the old one keeps serving.
    pub fn reload(&self) -> Result<ReloadReport, ConfigErrors> {
        reload(&self.inner)
    }

    /// Writes buffered access-log lines and opens the access-log file again
    /// (for log rotation).
    pub fn reopen_logs(&self) {
        signals::reopen(&self.inner);
    }

    /// Answers `SIGHUP` (reload) and `SIGUSR1` (reopen the access log) from
    /// now on, until the gateway stops.
    ///
    /// # Errors
    ///
    /// The signal handlers cannot be registered.
    pub fn handle_signals(&self) -> Result<(), String> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        signals::handle(Arc::downgrade(&self.inner), rx)?;
        if let Ok(mut s) = self.inner.signals.lock() {
            *s = Some(tx);
        }
        Ok(())
    }

    /// Stops accepting on every listener, lets requests in flight finish
    /// (for at most `limits.shutdown_grace_ms`), then stops the workers.
    /// Blocks the calling thread.
    pub fn stop(self) {
        self.stop_now();
    }

    /// [`Gateway::stop`] without blocking an async caller.
    pub async fn shutdown(self) {
        let _ = tokio::task::spawn_blocking(move || self.stop_now()).await;
    }

    fn stop_now(&self) {
        let inner = &self.inner;
        inner.ready.store(false, Ordering::Release);
        if let Ok(mut w) = inner.watcher.lock() {
            w.take();
        }
        if let Ok(mut s) = inner.signals.lock() {
            s.take();
        }
        if let Some(a) = inner.admin.lock().ok().and_then(|mut a| a.take()) {
            a.stop(true);
        }
        let listening = inner
            .listening
            .lock()
            .map(|mut l| std::mem::take(&mut *l))
            .unwrap_or_default();
        let drained: Vec<_> = listening.into_iter().map(Listening::stop).collect();
        for d in drained {
            d.wait();
        }
        if let Some(w) = inner.workers.lock().ok().and_then(|mut w| w.take()) {
            w.exit();
        }
        if let Some(log) = &inner.live.load().access_log {
            log.flush();
        }
    }
}

fn reload(inner: &Arc<Inner>) -> Result<ReloadReport, ConfigErrors> {
    let _one_at_a_time = inner.reloading.lock();
    let started = Instant::now();
    let metrics = &inner.live.metrics;
    let compiled_before = metrics.components_compiled.get();
    let reused_before = metrics.components_reused.get();
    let previous = inner.live.load();
    let result = (|| {
        let (config, source) = read_config(inner.path.as_deref())?;
        let next = build::build(
            &config,
            &source,
            BuildContext {
                runtime: &inner.runtime,
                metrics,
                workers: inner.worker_count,
                previous: Some(&previous),
                generation: previous.generation + 1,
                check_only: false,
            },
        )?;
        for w in &next.warnings {
            tracing::warn!("{w}");
        }
        Ok::<_, ConfigErrors>((next, source))
    })();
    let (next, source) = match result {
        Ok(n) => n,
        Err(e) => {
            metrics.reload(false, previous.generation);
            for p in &e.0 {
                tracing::error!("reload refused: {p}");
            }
            tracing::error!(
                "reload refused: {} problem(s); generation {} keeps serving",
                e.0.len(),
                previous.generation
            );
            return Err(e);
        }
    };

    // Bind the listeners that are new (by name and configured address)
    // before anything changes: a listener that cannot bind refuses the
    // reload.
    let mut listening = match inner.listening.lock() {
        Ok(l) => l,
        Err(p) => p.into_inner(),
    };
    let keep = |name: &str, addr: SocketAddr| {
        listening
            .iter()
            .any(|b| &*b.name == name && b.configured == addr)
    };
    let mut added = Vec::new();
    {
        let workers = inner.workers.lock();
        let Some(workers) = workers.as_ref().ok().and_then(|w| w.as_ref()) else {
            return Err(ConfigErrors::from(ConfigError::new(
                &source,
                "",
                "the gateway is stopping",
            )));
        };
        for (i, l) in next.listeners.iter().enumerate() {
            if keep(&l.name, l.address) {
                continue;
            }
            // An address this gateway already listens on (a listener
            // renamed by the reload) is shared with itself.
            let ours = listening
                .iter()
                .any(|b| b.address == l.address || b.configured == l.address);
            match workers.listen(&l.name, l.address, &inner.live, !l.share_address && !ours) {
                Ok(b) => added.push(b),
                Err(e) => {
                    for b in added {
                        drop(b.stop());
                    }
                    metrics.reload(false, previous.generation);
                    let err = ConfigError::new(&source, format!("listeners[{i}].address"), e);
                    tracing::error!("reload refused: {err}");
                    return Err(ConfigErrors::from(err));
                }
            }
        }
    }

    let next = Arc::new(next);
    let generation = next.generation;
    inner.live.swap(next.clone());
    drop(previous);

    // Close the listeners the new config does not have.
    let wanted: HashSet<(String, SocketAddr)> = next
        .listeners
        .iter()
        .map(|l| (l.name.to_string(), l.address))
        .collect();
    let mut removed = Vec::new();
    let mut kept = Vec::new();
    for b in listening.drain(..) {
        if wanted.contains(&(b.name.to_string(), b.configured)) {
            kept.push(b);
        } else {
            tracing::info!(listener = %b.name, address = %b.address, "listener closed by reload");
            removed.push(b.name.to_string());
            // Its connections drain on the workers; nothing waits here.
            drop(b.stop());
        }
    }
    let listeners_added: Vec<String> = added.iter().map(|b| b.name.to_string()).collect();
    for b in &added {
        tracing::info!(listener = %b.name, address = %b.address, "listener bound by reload");
    }
    kept.extend(added);
    // Config order.
    kept.sort_by_key(|b| next.listeners.iter().position(|l| l.name == b.name));
    *listening = kept;
    drop(listening);

    restart_admin(inner, &next);
    watch::update(inner, &next);
    inner.runtime.retain_components(&next.components);
    metrics.reload(true, generation);
    let report = ReloadReport {
        generation,
        listeners_added,
        listeners_removed: removed,
        components_compiled: metrics.components_compiled.get() - compiled_before,
        components_reused: metrics.components_reused.get() - reused_before,
        took_ms: started.elapsed().as_millis() as u64,
    };
    tracing::info!(
        generation,
        components_compiled = report.components_compiled,
        components_reused = report.components_reused,
        took_ms = report.took_ms,
        "config reloaded"
    );
    Ok(report)
}

/// Moves the admin listener when a reload changed its address (or adds or
/// removes it). The old one stops accepting without being waited for: the
/// reload may be running on its thread.
fn restart_admin(inner: &Arc<Inner>, next: &Snapshot) {
    let Ok(mut slot) = inner.admin.lock() else {
        return;
    };
    let current = slot.as_ref().map(AdminServer::address);
    let wanted = next.admin.as_ref().map(|a| a.address);
    let same = match (current, wanted) {
        (Some(c), Some(w)) => c == w || (w.port() == 0 && c.ip() == w.ip()),
        (None, None) => true,
        _ => false,
    };
    if same {
        return;
    }
    if let Some(old) = slot.take() {
        old.stop(false);
    }
    if let Some(w) = wanted {
        let control: Arc<dyn Control> = Arc::new(AdminControl(Arc::downgrade(inner)));
        match AdminServer::start(w, control) {
            Ok(s) => *slot = Some(s),
            Err(e) => tracing::error!("{e}"),
        }
    }
}

/// The gateway as the admin listener sees it.
struct AdminControl(Weak<Inner>);

impl Control for AdminControl {
    fn ready(&self) -> bool {
        self.0
            .upgrade()
            .is_some_and(|i| i.ready.load(Ordering::Acquire))
    }

    fn metrics(&self) -> String {
        self.0
            .upgrade()
            .map(|i| i.live.metrics.encode())
            .unwrap_or_default()
    }

    fn config(&self) -> serde_json::Value {
        let Some(i) = self.0.upgrade() else {
            return serde_json::Value::Null;
        };
        let s = i.live.load();
        json!({
            "generation": s.generation,
            "file": s.source.file,
            "config": s.config_view,
        })
    }

    fn reload(&self) -> Result<serde_json::Value, Vec<String>> {
        let Some(i) = self.0.upgrade() else {
            return Err(vec!["the gateway is stopping".into()]);
        };
        match reload(&i) {
            Ok(r) => Ok(json!({
                "generation": r.generation,
                "listeners_added": r.listeners_added,
                "listeners_removed": r.listeners_removed,
                "components_compiled": r.components_compiled,
                "components_reused": r.components_reused,
                "took_ms": r.took_ms,
            })),
            Err(e) => Err(e.0.iter().map(ToString::to_string).collect()),
        }
    }

    fn trace(&self, id: &str) -> Option<serde_json::Value> {
        self.0.upgrade()?.live.traces.get(id)
    }

    fn key(&self) -> Option<String> {
        let i = self.0.upgrade()?;
        let s = i.live.load();
        s.admin.as_ref().and_then(|a| a.key.clone())
    }
}
