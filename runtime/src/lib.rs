//! # Gatehouse
//!
//! An API gateway whose policies are WebAssembly components. This crate is
//! the runtime: the `gatehouse` binary ([`cli`]) and everything it runs.
//!
//! # Layout
//!
//! - [`config`]: the YAML schema, loading with file/key-path errors, named
//!   values.
//! - [`gateway`]: turns a config into a validated [`gateway::Gateway`]
//!   (listeners, upstreams, routes, policy chains) and runs it.
//! - [`tls`]: PEM loading, per-SNI server configs, upstream client configs,
//!   client-certificate fields.
//! - [`proxy`]: accept loop and HTTP serving ([`proxy::server`]), the
//!   request pipeline ([`proxy::pipeline`]), routing ([`proxy::route`]),
//!   upstream clients ([`proxy::upstream`]) and faults ([`proxy::fault`]).
//! - [`policy`]: the wasmtime engine, compiled-component cache, instance
//!   pools and the host side of the `gatehouse:policy` WIT world.
//! - [`cli`]: `gatehouse run`, `check`, `new-policy`, `--help`, `--version`.
//! - [`scaffold`]: the crate `gatehouse new-policy` writes.
//!
//! How a request flows: see [`proxy::pipeline`].

pub mod cli;
pub mod config;
pub mod gateway;
pub mod policy;
pub mod proxy;
pub mod scaffold;
pub mod tls;

pub use gateway::{Gateway, Running};
