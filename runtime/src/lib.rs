//! # Gatehouse
//!
//! An API gateway whose policies are WebAssembly components. This crate is
//! the runtime: the `gatehouse` binary ([`cli`]) and everything it runs.
//!
//! # Layout
//!
//! Modules from the bottom up; each uses only those above it in this list.
//!
//! - [`config`]: the YAML schema, loading with file/key-path errors, named
//!   values.
//! - [`worker`]: which worker thread code runs on (per-worker slots).
//! - [`observe`]: metrics registry, trace store, access-log sink.
//! - [`tls`]: PEM loading, per-SNI server configs, upstream client configs,
//!   client-certificate fields.
//! - [`exchange`]: what is known about a connection and a request.
//! - [`policy`]: the process-wide wasmtime runtime, compiled components,
//!   instance pools and the host side of the `gatehouse:policy` WIT world.
//! - [`proxy`]: the snapshot of the config in force, the accept loop and
//!   HTTP serving, the request pipeline and its one chain runner, routing,
//!   upstreams, faults, and the completion phase.
//! - [`admin`]: the admin listener (health, metrics, config, reload,
//!   traces), behind a small [`admin::Control`] trait.
//! - [`gateway`]: config -> snapshot, worker threads, the one run handle
//!   ([`Gateway`]) with reload and stop, the file watcher.
//! - [`cli`]: `gatehouse run`, `check`, `new-policy`, signals.
//! - [`scaffold`]: the crate `gatehouse new-policy` writes.
//!
//! How a request flows: see [`proxy::pipeline`].

pub mod admin;
pub mod cli;
pub mod config;
pub mod counters;
pub mod exchange;
pub mod fetch;
pub mod gateway;
pub mod jose;
pub mod observe;
pub mod policy;
pub mod probe;
pub mod proxy;
pub mod scaffold;
pub mod tls;
pub mod worker;

pub use gateway::{Gateway, Options};
