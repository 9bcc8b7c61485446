//! What operators read: Prometheus metrics ([`metrics`]), request traces
//! ([`trace`]) and the access-log sink ([`access_log`]).
//!
//! This module knows nothing about requests: the pipeline's completion
//! phase (`proxy::completion`) decides what to record and hands it here.

pub mod access_log;
pub mod metrics;
pub mod trace;

use std::cell::RefCell;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A rate limit for one kind of log line (a failed TLS handshake, say): a
/// client that keeps failing must not flood the log, and the lines that are
/// left out are counted into the next one written.
pub struct LogBudget {
    second: AtomicU64,
    used: AtomicU32,
    suppressed: AtomicU64,
}

impl LogBudget {
    /// A budget with nothing used.
    pub const fn new() -> Self {
        LogBudget {
            second: AtomicU64::new(0),
            used: AtomicU32::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(n)` when a line may be written now (`n`: lines left out since
    /// the last one written), `None` when this second's `per_second` lines
    /// are used up.
    pub fn allow(&self, per_second: u32) -> Option<u64> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if self.second.swap(now, Ordering::AcqRel) != now {
            self.used.store(0, Ordering::Release);
        }
        if self.used.fetch_add(1, Ordering::AcqRel) < per_second {
            Some(self.suppressed.swap(0, Ordering::AcqRel))
        } else {
            self.suppressed.fetch_add(1, Ordering::AcqRel);
            None
        }
    }
}

impl Default for LogBudget {
    fn default() -> Self {
        Self::new()
    }
}

/// RFC 3339 UTC with microseconds, e.g. `2026-12-01T22:07:46.123456Z`.
pub fn rfc3339(t: SystemTime) -> String {
    Stamp::of(t).as_str().to_string()
}

/// An RFC 3339 UTC timestamp with microseconds, formatted without
/// allocating: the date and time of day are formatted once per second per
/// thread, the microseconds every time.
pub struct Stamp([u8; 27]);

thread_local! {
    /// The last second formatted on this thread, and its text.
    static SECOND: RefCell<(u64, [u8; 19])> = const { RefCell::new((u64::MAX, [0; 19])) };
}

impl Stamp {
    /// The timestamp of `t` (times before 1970 show as 1970).
    pub fn of(t: SystemTime) -> Stamp {
        let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
        let secs = d.as_secs();
        let mut out = [0u8; 27];
        SECOND.with(|c| {
            let mut c = c.borrow_mut();
            if c.0 != secs {
                let dt = chrono::DateTime::<chrono::Utc>::from(
                    UNIX_EPOCH + std::time::Duration::from_secs(secs),
                );
                let text = dt.format("%Y-%m-%dT%H:%M:%S").to_string();
                let n = text.len().min(19);
                c.1[..n].copy_from_slice(&text.as_bytes()[..n]);
                c.0 = secs;
            }
            out[..19].copy_from_slice(&c.1);
        });
        out[19] = b'.';
        let mut micros = d.subsec_micros();
        for i in (20..26).rev() {
            out[i] = b'0' + (micros % 10) as u8;
            micros /= 10;
        }
        out[26] = b'Z';
        Stamp(out)
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("1970-01-01T00:00:00.000000Z")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_match_chrono() {
        for t in [
            UNIX_EPOCH + std::time::Duration::from_micros(1_764_626_866_123_456),
            UNIX_EPOCH + std::time::Duration::from_micros(1_764_626_866_000_007),
            UNIX_EPOCH + std::time::Duration::from_micros(1_764_626_867_999_999),
        ] {
            let want = chrono::DateTime::<chrono::Utc>::from(t)
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
            assert_eq!(Stamp::of(t).as_str(), want);
        }
    }
}
