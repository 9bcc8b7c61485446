//! The HTTP side: listeners, the request pipeline, routing, upstreams and
//! faults.

pub mod body;
pub mod conn;
pub mod echo;
pub mod fault;
pub mod headers;
pub mod normalize;
pub mod pipeline;
pub mod pool;
pub mod route;
pub mod server;
pub mod upstream;
