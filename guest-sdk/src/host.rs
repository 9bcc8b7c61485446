//! Logging, traces and clocks, served by the gateway.

#[cfg(target_arch = "wasm32")]
use crate::bindings::gatehouse::policy::host as backend;
#[cfg(not(target_arch = "wasm32"))]
use crate::testkit::host as backend;

pub use crate::bindings::gatehouse::policy::host::LogLevel;

/// Writes a log line tagged with the policy and request id.
pub fn log(level: LogLevel, message: &str) {
    backend::log(level, message)
}

/// Whether the current request is traced.
pub fn trace_enabled() -> bool {
    backend::trace_enabled()
}

/// Adds an entry to the current request's trace (no-op if not traced).
pub fn trace(message: &str) {
    backend::trace(message)
}

/// Milliseconds since the Unix epoch.
pub fn now_millis() -> u64 {
    backend::now_millis()
}

/// A monotonic clock in nanoseconds.
pub fn monotonic_nanos() -> u64 {
    backend::monotonic_nanos()
}

/// The current request's id (empty in the constructor).
pub fn request_id() -> String {
    backend::request_id()
}

/// Adds a header to the response the client will be sent, whichever it
/// is (contract 0.1.4). Framing and hop-by-hop headers are ignored.
pub fn add_response_header(name: &str, value: &str) {
    backend::add_response_header(name, value)
}
