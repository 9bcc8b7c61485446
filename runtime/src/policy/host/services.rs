//! [`HostServices`]: the one object every policy store can reach, for the
//! work that belongs to the host rather than to a policy instance.
//!
//! It outlives config generations: it is created with the process-wide
//! [`PolicyRuntime`](crate::policy::PolicyRuntime), and every store's
//! [`HostState`](super::HostState) holds an `Arc` to it. A host interface
//! that needs shared state (the counters of the traffic policies, key sets
//! fetched for JWT validation, imported crypto keys) adds a field here and
//! implements its WIT interface in its own file next to this one, reading
//! the field through `self.services`.
//!
//! How a host call that waits on the network runs without blocking a
//! worker thread is decided in docs/ARCHITECTURE.md ("Host calls that wait
//! on the network").

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::Counters;
use crate::counters::memory::MemoryStore;
use crate::observe::metrics::Metrics;

/// Process-wide services offered to policies.
pub struct HostServices {
    /// The gateway's metrics registry (policy call histograms are resolved
    /// from it once per pool).
    pub metrics: Arc<Metrics>,
    /// The counter store of the `counters` interface, with the settings it
    /// was made for; replaced when a config changes them.
    pub counters: ArcSwap<CounterStore>,
}

/// A counter store and its settings.
pub struct CounterStore {
    /// The config section it was made from, its path resolved.
    pub settings: Counters,
    /// The store every request counts in.
    pub store: Arc<MemoryStore>,
    /// The writer of a `durable` store.
    pub durable: Option<crate::counters::durable::Durable>,
}

impl CounterStore {
    fn memory(settings: Counters) -> Self {
        CounterStore {
            store: MemoryStore::new(settings.max_keys, settings.fail_mode),
            settings,
            durable: None,
        }
    }
}

impl HostServices {
    /// Services recording into `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(HostServices {
            metrics,
            counters: ArcSwap::from_pointee(CounterStore::memory(Counters::default())),
        })
    }

    /// Makes the store a config's `counters:` settings ask for (paths
    /// relative to `base_dir`), or `None` when they are those in force
    /// (a reload keeps the store and its counts).
    ///
    /// # Errors
    ///
    /// `key: message` (the key under `counters`): a `durable` store without
    /// a file, or whose file cannot be opened.
    pub fn prepare_counters(
        &self,
        settings: &Counters,
        base_dir: &std::path::Path,
    ) -> Result<Option<CounterStore>, String> {
        use crate::config::CounterBackend;
        let mut settings = settings.clone();
        if let Some(p) = &settings.path {
            settings.path = Some(base_dir.join(p));
        }
        let current = self.counters.load();
        if current.settings == settings {
            return Ok(None);
        }
        check_counters(&settings)?;
        match settings.backend {
            CounterBackend::Memory => Ok(Some(CounterStore::memory(settings))),
            CounterBackend::Durable => {
                let Some(path) = settings.path.clone() else {
                    return Err("path: the durable backend needs a file".into());
                };
                if current.settings.backend == CounterBackend::Durable
                    && current.settings.path.as_deref() == Some(path.as_path())
                {
                    return Err(format!(
                        "path: the durable store of {} is in use; its other settings change with a restart",
                        path.display()
                    ));
                }
                let (store, durable) = crate::counters::durable::open(
                    &path,
                    settings.max_keys,
                    settings.fail_mode,
                    std::time::Duration::from_millis(settings.flush_ms),
                )
                .map_err(|e| format!("path: {e}"))?;
                Ok(Some(CounterStore {
                    store,
                    settings,
                    durable: Some(durable),
                }))
            }
        }
    }

    /// Puts a store made by [`HostServices::prepare_counters`] in force;
    /// the one it replaces writes out its last changes once the last
    /// request using it is done.
    pub fn install_counters(&self, store: CounterStore) {
        tracing::info!(
            backend = ?store.settings.backend,
            max_keys = store.settings.max_keys,
            fail_mode = ?store.settings.fail_mode,
            "counter store changed: counting goes on from what it holds"
        );
        self.counters.store(Arc::new(store));
    }
}

/// The checks of a `counters:` section that need no file.
///
/// # Errors
///
/// `key: message`, the key under `counters`.
pub fn check_counters(settings: &Counters) -> Result<(), String> {
    use crate::config::CounterBackend;
    if !(10..=60_000).contains(&settings.flush_ms) {
        return Err(format!(
            "flush_ms: {} is outside 10..=60000",
            settings.flush_ms
        ));
    }
    match (settings.backend, &settings.path) {
        (CounterBackend::Memory, Some(_)) => {
            Err("path: only the durable backend has a file".into())
        }
        (CounterBackend::Durable, None) => {
            Err("path: the durable backend needs a file (e.g. `path: counters.redb`)".into())
        }
        _ => Ok(()),
    }
}
