//! What one policy call may hand the host. The guest's own memory is capped
//! by `policy_runtime.memory_limit_mib`; these cap what the host keeps or
//! sends on its behalf. Over a cap, the request fails with
//! `500 policy.limit` (and the instance goes back to its pool: it did
//! nothing wrong by the sandbox's rules, only asked for too much).

/// Header edits in one decision.
pub const MAX_EDITS: usize = 100;
/// Bytes of names and values of one decision's header edits (or of a
/// response's or fault's headers).
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
/// Headers of a policy's own response or fault.
pub const MAX_RESPONSE_HEADERS: usize = 100;
/// Body of a policy's own response.
pub const MAX_RESPONSE_BODY: usize = 1024 * 1024;
/// Each of a fault's `code`, `title` and `detail`.
pub const MAX_FAULT_TEXT: usize = 4096;
/// Context variables one request may hold.
pub const MAX_VARIABLES: usize = 256;
/// Bytes of a context variable's name.
pub const MAX_VARIABLE_NAME: usize = 256;
/// Bytes of a context variable's value.
pub const MAX_VARIABLE_VALUE: usize = 64 * 1024;
/// Expressions one instance may hold compiled at once.
pub const MAX_EXPRESSIONS: usize = 64;
/// Bytes of an expression's source.
pub const MAX_EXPRESSION_SOURCE: usize = 4096;
/// Comprehension macros (`all`, `exists`, `exists_one`, `map`, `filter`)
/// in one expression: each may multiply the work of those inside it.
pub const MAX_COMPREHENSIONS: usize = 3;
/// Bytes of an expression's result as text (strings, bytes, JSON of lists
/// and maps).
pub const MAX_EXPRESSION_RESULT: usize = 64 * 1024;
/// Instances of one pool rebuilt after failures (traps, timeouts, memory)
/// in a burst, and per second after it. Past that, a request that finds no
/// idle instance gets `503 policy.unavailable` at once instead of building
/// one on the request path: a stream of requests that make a policy trap
/// cannot turn into a stream of instantiations.
pub const REBUILD_BURST: f64 = 16.0;
/// See [`REBUILD_BURST`].
pub const REBUILDS_PER_SECOND: f64 = 8.0;

/// Bytes of one log or trace message (longer ones are cut, not refused).
pub const MAX_LOG_MESSAGE: usize = 8192;

/// Cuts `s` to at most `max` bytes on a character boundary, marking the cut.
pub fn truncate(mut s: String, max: usize) -> String {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s.push_str("…[cut]");
    s
}
