//! Host bindings of the `gatehouse:policy` world, generated from `wit/`.
//!
//! The view resources are backed by marker types: a handle's `rep` is not
//! used, because a policy instance serves one request at a time and the
//! host keeps that request in the store's data ([`super::host::HostState`]).

#![allow(missing_docs, clippy::all)]

wasmtime::component::bindgen!({
    path: "../wit",
    world: "policy",
    with: {
        "gatehouse:policy/types.request": super::host::RequestView,
        "gatehouse:policy/types.response": super::host::ResponseView,
        "gatehouse:policy/types.connection": super::host::ConnectionView,
        "gatehouse:policy/expressions.expression": super::host::ExpressionHandle,
    },
});

pub use self::exports::gatehouse::policy::handler::GuestPolicy;
pub use self::gatehouse::policy::types::{
    ClientCertificate, Decision, Fault, Header, HeaderEdit, Phases, ResponseSpec,
};
