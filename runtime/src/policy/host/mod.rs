//! What the host gives a policy instance: the store's data ([`HostState`])
//! and one file per WIT host interface.
//!
//! - [`views`] — `types.request`, `types.response`, `types.connection`
//! - [`logging`] — `host` (log, trace, clocks, request id)
//! - [`variables`] — `variables`
//! - [`expressions`] — `expressions` (CEL)
//! - [`wasi`] — the WASI functions std reaches for (random, clocks, env)
//! - [`services`] — [`HostServices`], the process-wide services every
//!   store can reach

pub mod expressions;
pub mod logging;
pub mod variables;
pub mod views;
pub mod wasi;

pub mod markers;
pub mod services;

use std::sync::Arc;

pub use crate::exchange::{Exchange, RequestId, RouteInfo};
pub use services::HostServices;

pub use markers::{ConnectionView, ExpressionHandle, RequestView, ResponseView};

/// The data of one policy instance's store.
pub struct HostState {
    /// The policy's name, for logs and traces.
    pub policy: Arc<str>,
    /// The scope of the chain entry being called (`global`, `api:NAME`,
    /// `operation:API/NAME`), for traces.
    pub scope: Arc<str>,
    /// The process-wide services (metrics today; counters, key sets and
    /// crypto keys as later interfaces need them).
    pub services: Arc<HostServices>,
    /// The exchange being processed; `None` outside a hook.
    pub exchange: Option<Box<Exchange>>,
    /// Expressions compiled by this instance; a slot is `None` once dropped.
    pub expressions: Vec<Option<Arc<expressions::Compiled>>>,
    /// The memory cap, and whether the instance hit it.
    pub limiter: MemoryLimiter,
    /// Secret named values, removed from everything a policy logs or traces.
    pub secrets: crate::config::Secrets,
}

impl HostState {
    /// A fresh state for an instance of `policy`.
    pub fn new(
        policy: Arc<str>,
        memory_limit: usize,
        secrets: crate::config::Secrets,
        services: Arc<HostServices>,
    ) -> Self {
        HostState {
            scope: Arc::from(""),
            services,
            policy,
            exchange: None,
            expressions: Vec::new(),
            limiter: MemoryLimiter {
                limit: memory_limit,
                exhausted: false,
            },
            secrets,
        }
    }
}

/// Caps an instance's linear memory and remembers when a growth was
/// refused, so a resulting trap is reported as memory exhaustion.
pub struct MemoryLimiter {
    limit: usize,
    /// Set when the instance asked for more than its limit.
    pub exhausted: bool,
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limit {
            self.exhausted = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}
