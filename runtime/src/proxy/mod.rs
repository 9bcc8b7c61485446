//! The HTTP side: the snapshot of the config in force, listeners, the
//! request pipeline and its chain runner, routing, upstreams, faults and
//! the completion phase.

pub mod body;
pub mod chain;
pub mod completion;
pub mod echo;
pub mod fault;
pub mod headers;
pub mod limiter;
pub mod normalize;
pub mod pipeline;
pub mod pool;
pub mod route;
pub mod server;
pub mod snapshot;
pub mod upstream;
