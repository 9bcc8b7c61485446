//! Host bindings of the `gatehouse:policy` package, generated from `wit/`
//! for the `policy-with-completion` world (the `policy` world plus the
//! optional completion export).
//!
//! The exports are looked up per interface: `handler` is required,
//! `completion` optional, so a component built against 0.1.0 (which
//! exports only `handler`) loads as it did.
//!
//! The view resources are backed by marker types: a handle's `rep` is not
//! used, because a policy instance serves one request at a time and the
//! host keeps that request in the store's data ([`super::host::HostState`]).

#![allow(missing_docs, clippy::all)]

wasmtime::component::bindgen!({
    path: "../wit",
    world: "policy-with-completion",
    // An evaluation that runs the call past its deadline ends the call.
    imports: {
        "gatehouse:policy/expressions.[method]expression.evaluate": trappable,
    },
    with: {
        "gatehouse:policy/types.request": super::host::markers::RequestView,
        "gatehouse:policy/types.response": super::host::markers::ResponseView,
        "gatehouse:policy/types.connection": super::host::markers::ConnectionView,
        "gatehouse:policy/expressions.expression": super::host::markers::ExpressionHandle,
        "gatehouse:policy/certificates.issuer": super::host::markers::IssuerHandle,
        "gatehouse:policy/counters.counter": super::host::markers::CounterHandle,
        "gatehouse:policy/jose.key": super::host::markers::VerifyKeyHandle,
        "gatehouse:policy/jose.key-set": super::host::markers::KeySetHandle,
        "gatehouse:policy/jose.decryption-key": super::host::markers::DecryptionKeyHandle,
    },
});

pub use self::exports::gatehouse::policy::completion::{
    CompletionInfo, Guest as Completion, GuestIndices as CompletionIndices,
};
pub use self::exports::gatehouse::policy::handler::{
    Guest as Handler, GuestIndices as HandlerIndices, GuestPolicy,
};
pub use self::gatehouse::policy::types::{
    ClientCertificate, Decision, Fault, Header, HeaderEdit, Phases, ResponseSpec,
};

/// The world's bindings type, for `add_to_linker`.
pub type World = PolicyWithCompletion;
