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

use crate::observe::metrics::Metrics;

/// Process-wide services offered to policies.
pub struct HostServices {
    /// The gateway's metrics registry (policy call histograms are resolved
    /// from it once per pool).
    pub metrics: Arc<Metrics>,
}

impl HostServices {
    /// Services recording into `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(HostServices { metrics })
    }
}
