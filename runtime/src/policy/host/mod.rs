//! What the host gives a policy instance: the store's data ([`HostState`])
//! and one file per WIT host interface.
//!
//! - [`views`] — `types.request`, `types.response`, `types.connection`
//! - [`logging`] — `host` (log, trace, clocks, request id)
//! - [`variables`] — `variables`
//! - [`expressions`] — `expressions` (CEL)
//! - [`wasi`] — the WASI functions std reaches for (random, clocks, env)

pub mod expressions;
pub mod logging;
pub mod variables;
pub mod views;
pub mod wasi;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use crate::proxy::conn::ConnInfo;

/// Marker type for `types.request` handles.
pub struct RequestView;
/// Marker type for `types.response` handles.
pub struct ResponseView;
/// Marker type for `types.connection` handles.
pub struct ConnectionView;
/// Marker type for `expressions.expression` handles; the `rep` indexes
/// [`HostState::expressions`].
pub struct ExpressionHandle;

/// Everything the pipeline knows about one request, moved into the store of
/// the policy instance being called (and back out afterwards), so host
/// functions read it without copies or locks.
pub struct Exchange {
    /// The request head, with earlier policies' edits applied.
    pub request: http::request::Parts,
    /// The response head, during outbound and on-error chains.
    pub response: Option<http::response::Parts>,
    /// The downstream connection.
    pub conn: Arc<ConnInfo>,
    /// Context variables.
    pub vars: BTreeMap<String, String>,
    /// The route the request matched.
    pub route: RouteInfo,
    /// The request id (also the `x-request-id` response header).
    pub request_id: RequestId,
    /// When the request arrived.
    pub started: Instant,
    /// Trace entries, when the request is traced.
    pub trace: Option<Vec<TraceEntry>>,
}

/// A request id: 16 lower-case hex digits, kept as a header value so that
/// sending it (upstream, to the client) copies nothing.
#[derive(Clone, Debug)]
pub struct RequestId(http::HeaderValue);

impl RequestId {
    /// A fresh random id.
    pub fn new() -> Self {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let n = fastrand::u64(..);
        let mut buf = [0u8; 16];
        for (i, b) in buf.iter_mut().enumerate() {
            *b = HEX[((n >> (60 - 4 * i)) & 0xf) as usize];
        }
        RequestId(
            http::HeaderValue::from_bytes(&buf)
                .unwrap_or(http::HeaderValue::from_static("0000000000000000")),
        )
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        self.0.to_str().unwrap_or("")
    }

    /// The id as a header value (a cheap reference-counted clone).
    pub fn header(&self) -> http::HeaderValue {
        self.0.clone()
    }
}

impl Default for RequestId {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::ops::Deref for RequestId {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

/// The route a request matched.
#[derive(Clone, Debug, Default)]
pub struct RouteInfo {
    /// The API's name.
    pub api: Arc<str>,
    /// The operation's name, if one matched.
    pub operation: Option<Arc<str>>,
    /// Path template parameters.
    pub params: Vec<(Arc<str>, String)>,
}

/// One entry of a request trace.
#[derive(Clone, Debug)]
pub struct TraceEntry {
    /// Who wrote it: `gateway` or a policy's name.
    pub source: String,
    /// Microseconds since the request arrived.
    pub elapsed_us: u64,
    /// What happened.
    pub message: String,
}

impl Exchange {
    /// Adds a trace entry if the request is traced.
    pub fn trace(&mut self, source: &str, message: impl FnOnce() -> String) {
        if let Some(t) = self.trace.as_mut() {
            t.push(TraceEntry {
                source: source.to_string(),
                elapsed_us: self.started.elapsed().as_micros() as u64,
                message: message(),
            });
        }
    }
}

/// The data of one policy instance's store.
pub struct HostState {
    /// The policy's name, for logs and traces.
    pub policy: Arc<str>,
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
    pub fn new(policy: Arc<str>, memory_limit: usize, secrets: crate::config::Secrets) -> Self {
        HostState {
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
