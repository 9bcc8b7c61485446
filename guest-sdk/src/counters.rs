//! Counters kept by the gateway (contract 0.1.4): open one in
//! [`crate::Policy::new`], count per request. Every instance of a policy,
//! and with a shared store every gateway, sees one count; the same config
//! at two scopes (an API and an operation) counts apart.
//!
//! ```ignore
//! let calls = Counter::open("calls", 100, Window::Sliding(60))?;
//! let u = calls.acquire(&client_ip, 1);
//! if !u.admitted { /* 429, Retry-After: u.retry_after_seconds */ }
//! ```

#[cfg(target_arch = "wasm32")]
type Inner = crate::bindings::gatehouse::policy::counters::Counter;
#[cfg(not(target_arch = "wasm32"))]
type Inner = crate::testkit::TestCounter;

pub use crate::bindings::gatehouse::policy::counters::{Period, Usage, Window};

/// A counter.
pub struct Counter(Inner);

impl Counter {
    /// Opens the counter `name`: `limit` units per `window`.
    ///
    /// # Errors
    ///
    /// A zero limit or window.
    pub fn open(name: &str, limit: u64, window: Window) -> Result<Self, String> {
        Inner::open(name, limit, window).map(Counter)
    }
    /// Counts `amount` for `key` if it fits under the limit (atomically).
    pub fn acquire(&self, key: &str, amount: u64) -> Usage {
        self.0.acquire(key, amount)
    }
    /// Takes back units counted by [`Counter::acquire`].
    pub fn release(&self, key: &str, reservation: u64, amount: u64) {
        self.0.release(key, reservation, amount)
    }
    /// Counts `amount` whatever the limit.
    pub fn add(&self, key: &str, amount: u64) -> Usage {
        self.0.add(key, amount)
    }
    /// The count, counting nothing.
    pub fn peek(&self, key: &str) -> Usage {
        self.0.peek(key)
    }
}
