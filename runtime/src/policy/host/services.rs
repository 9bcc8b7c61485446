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
    /// The config section it was made from.
    pub settings: Counters,
    /// The store.
    pub store: Arc<MemoryStore>,
}

impl CounterStore {
    fn new(settings: Counters) -> Self {
        CounterStore {
            store: MemoryStore::new(settings.max_keys, settings.fail_mode),
            settings,
        }
    }
}

impl HostServices {
    /// Services recording into `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(HostServices {
            metrics,
            counters: ArcSwap::from_pointee(CounterStore::new(Counters::default())),
        })
    }

    /// Puts a config's `counters:` settings in force. Unchanged settings
    /// keep the store and its counts (a reload does not reset rate
    /// limits); changed ones start a new, empty store.
    pub fn configure_counters(&self, settings: &Counters) {
        if self.counters.load().settings == *settings {
            return;
        }
        tracing::info!(
            max_keys = settings.max_keys,
            fail_mode = ?settings.fail_mode,
            "counter settings changed: counting starts again"
        );
        self.counters
            .store(Arc::new(CounterStore::new(settings.clone())));
    }
}
