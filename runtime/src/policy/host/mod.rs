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

pub mod certificates;
pub mod counters;
pub mod declarations;
pub mod expressions;
pub mod jose;
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
    /// Set when the current call asked for more than a host-side cap allows
    /// (see [`crate::policy::limits`]): the call fails with `policy.limit`.
    pub over_limit: Option<String>,
    /// When the current call started and how long it may take: host work
    /// (an expression's evaluation) counts against it too.
    pub call_deadline: Option<(std::time::Instant, std::time::Duration)>,
    /// Set when the constructor declared that the policy reads the client
    /// certificate (`declarations.reads-client-certificate`).
    pub declared_reads_client_cert: bool,
    /// Issuer certificates imported by this instance; a slot is `None`
    /// once dropped.
    pub issuers: Vec<Option<std::sync::Arc<certificates::Imported>>>,
    /// JWT keys and key sets imported by this instance (`jose`).
    pub jose: jose::JoseHandles,
    /// Counters opened by this instance (`counters`).
    pub counters: jose::Slots<counters::Counter>,
    /// Which hook is being called: a remote counter store answers a
    /// request-phase call by suspending it (see [`counters`]).
    pub phase: CallPhase,
}

/// The hook a call is in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CallPhase {
    /// `on-request`, or the constructor.
    #[default]
    Request,
    /// `on-response` (outbound and on-error chains).
    Response,
    /// `on-complete`.
    Completion,
}

/// A host function found the call past its deadline: the call is reported
/// as a timeout, like an interrupted guest.
#[derive(Debug)]
pub struct HostDeadline;

impl std::fmt::Display for HostDeadline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the call ran past its deadline in a host function")
    }
}

impl std::error::Error for HostDeadline {}

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
            over_limit: None,
            call_deadline: None,
            declared_reads_client_cert: false,
            phase: CallPhase::Request,
            issuers: Vec::new(),
            jose: jose::JoseHandles::default(),
            counters: jose::Slots::default(),
        }
    }

    /// Records that the current call went over a cap (the first reason
    /// wins).
    pub fn over(&mut self, why: impl FnOnce() -> String) {
        if self.over_limit.is_none() {
            self.over_limit = Some(why());
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
