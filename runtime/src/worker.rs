//! Which worker thread the code runs on.
//!
//! Each worker thread serves its connections start to finish; state that
//! is per worker (upstream connection pools, access-log buffers) is kept in
//! one slot per worker, indexed by [`index`], so a worker only ever touches
//! its own slot and never waits for another.

use std::cell::Cell;

thread_local! {
    static INDEX: Cell<usize> = const { Cell::new(0) };
}

/// Marks the current thread as worker `i` (slots are `i + 1`; slot 0 is
/// for every thread that is not a worker).
pub fn set_index(i: usize) {
    INDEX.with(|c| c.set(i + 1));
}

/// The slot of the current thread: `1..=workers` on worker threads, `0`
/// elsewhere.
pub fn index() -> usize {
    INDEX.with(Cell::get)
}
