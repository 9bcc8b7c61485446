//! What operators read: Prometheus metrics ([`metrics`]), request traces
//! ([`trace`]) and the access-log sink ([`access_log`]).
//!
//! This module knows nothing about requests: the pipeline's completion
//! phase (`proxy::completion`) decides what to record and hands it here.

pub mod access_log;
pub mod metrics;
pub mod trace;

use std::time::SystemTime;

/// RFC 3339 UTC with microseconds, e.g. `2026-12-01T22:07:46.123456Z`.
pub fn rfc3339(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}
