//! Counters for rate limits and quotas, kept by the host (the `counters`
//! interface, contract 0.1.4).
//!
//! The store is chosen by the config's `counters:` section: `memory`
//! ([`memory`]: sharded maps, no lock shared by all requests, a cap on
//! keys, expired windows swept in the background), `durable` ([`durable`]:
//! the same, written to a redb file every `flush_ms`), or `redis`
//! ([`redis`]: one Lua script round trip per question, shared by every
//! gateway on the server).
//!
//! Windows: a sliding window of `S` seconds keeps its count in 60 buckets
//! (of `ceil(S/60)` seconds, at least 1) and counts every bucket that
//! overlaps the last `S` seconds — a unit is forgotten up to one bucket
//! late, never early, so no `S`-second window ever admits more than the
//! limit. Fixed periods keep one count per period.

pub mod durable;
pub mod memory;
pub mod redis;

use std::time::{SystemTime, UNIX_EPOCH};

/// How a counter forgets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Window {
    /// The last `seconds`, sliding.
    Sliding(u32),
    /// Periods of `seconds` (0: one that never ends) aligned to `start`.
    Periods {
        /// Period length.
        seconds: u32,
        /// A boundary, Unix seconds.
        start: i64,
    },
}

impl Window {
    /// The sliding window's bucket length in milliseconds.
    fn bucket_ms(seconds: u32) -> u64 {
        u64::from(seconds.div_ceil(60).max(1)) * 1000
    }

    /// Checks the window.
    ///
    /// # Errors
    ///
    /// A zero sliding window.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            Window::Sliding(0) => Err("a sliding window must be at least 1 second".into()),
            _ => Ok(()),
        }
    }
}

/// What an operation found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Counted (acquire) or within the limit (add).
    pub admitted: bool,
    /// The count in the window now.
    pub used: u64,
    /// The limit.
    pub limit: u64,
    /// Seconds until the request would fit; 0 when admitted.
    pub retry_after_seconds: u32,
    /// The bucket or period the units went to.
    pub reservation: u64,
    /// The store could not be consulted.
    pub unavailable: Option<String>,
}

/// What to do when the store cannot count: admit (`open`) or refuse
/// (`closed`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailMode {
    /// Admit, uncounted.
    #[default]
    Open,
    /// Refuse (the policy answers 503).
    Closed,
}

/// An operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Count if it fits.
    Acquire(u64),
    /// Count whatever the limit.
    Add(u64),
    /// Count nothing.
    Peek,
    /// Take back units of a reservation.
    Release {
        /// The bucket or period.
        reservation: u64,
        /// How many.
        amount: u64,
    },
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
