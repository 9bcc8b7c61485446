//! # gatehouse-sdk
//!
//! Write a [Gatehouse](https://example.invalid/gatehouse) policy in plain
//! Rust: a config type, a constructor that validates it, and hooks that
//! return a [`Decision`]. The SDK builds the WebAssembly component glue
//! (`gatehouse:policy@0.1.4`) for you.
//!
//! ```no_run
//! use gatehouse_sdk::{export_policy, Connection, Decision, Fault, Policy, Request};
//! use serde::Deserialize;
//!
//! #[derive(Deserialize)]
//! #[serde(deny_unknown_fields)]
//! struct Config { header: String }
//!
//! struct RequireHeader { header: String }
//!
//! impl Policy for RequireHeader {
//!     type Config = Config;
//!     fn new(config: Config) -> Result<Self, String> {
//!         if config.header.is_empty() {
//!             return Err("header: must not be empty".into());
//!         }
//!         Ok(Self { header: config.header.to_ascii_lowercase() })
//!     }
//!     fn on_request(&self, req: &Request, _conn: &Connection) -> Decision {
//!         match req.header(&self.header) {
//!             Some(_) => Decision::proceed(),
//!             None => Decision::deny(Fault::new(400, "policy.require-header.missing",
//!                 "Required header missing", format!("{} is required", self.header))),
//!         }
//!     }
//! }
//!
//! export_policy!(RequireHeader);
//! ```
//!
//! # Layout
//!
//! - [`Policy`]: the trait a policy implements; hooks default to "continue".
//! - [`Request`], [`Response`], [`Connection`]: read-only views; each accessor
//!   copies only what it returns across the component boundary.
//! - [`Decision`], [`HeaderEdit`], [`Fault`], [`ResponseSpec`]: what a hook
//!   returns, with small constructors.
//! - [`host`], [`variables`], [`Expression`]: services of the gateway.
//! - [`testkit`] (native builds only): run a policy's hooks in `cargo test`
//!   without a gateway.
//! - [`export_policy!`]: exports a type as the component's policy.
//!
//! On `wasm32` the views and services call the gateway; on any other target
//! they are served by [`testkit`], so the same policy code is unit-tested
//! natively.

#![deny(missing_docs)]

// The generated bindings name this crate by its public path.
extern crate self as gatehouse_sdk;

#[doc(hidden)]
pub use wit_bindgen;

pub use serde;

/// The generated bindings of `gatehouse:policy@0.1.4` (the
/// `policy-with-completion` world). Not part of the SDK's
/// stable API: use the re-exports at the crate root.
#[doc(hidden)]
#[allow(missing_docs, clippy::all)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "policy-with-completion",
        pub_export_macro: true,
        export_macro_name: "__export_policy_world",
        default_bindings_module: "::gatehouse_sdk::bindings",
        runtime_path: "::gatehouse_sdk::wit_bindgen::rt",
        additional_derives: [PartialEq],
        generate_all,
    });
}

mod views;
pub use views::{Connection, Request, Response};

mod decision;

pub mod certificates;
pub mod counters;
pub mod declarations;
pub mod host;
pub mod jose;
pub mod variables;

mod expression;
pub use expression::{Expression, Value};

#[cfg(not(target_arch = "wasm32"))]
pub mod testkit;

pub use bindings::gatehouse::policy::types::{
    ClientCertificate, Decision, Fault, Header, HeaderEdit, Phases, ResponseSpec,
};

/// What one request transferred and how it ended, for
/// [`Policy::on_complete`].
pub use bindings::exports::gatehouse::policy::completion::CompletionInfo as Completion;

use serde::de::DeserializeOwned;

/// A policy: built once from its config, then called per request.
///
/// Each hook has a default that lets the message through unchanged, so a
/// policy implements only the phases it uses and declares them in
/// [`Policy::PHASES`]; the gateway never enters the component for the others.
pub trait Policy: Sized + 'static {
    /// The policy's config, deserialized from the JSON the gateway passes
    /// (the YAML mapping under the policy's name). Use
    /// `#[serde(deny_unknown_fields)]` so a misspelt key is an error.
    type Config: DeserializeOwned;

    /// The phases the gateway calls. Default: requests only.
    const PHASES: Phases = Phases::REQUEST;

    /// Builds the policy. Validate everything here and return a message
    /// naming the key (`"failed_check_httpcode: must be 400..=599"`): the
    /// gateway reports it at load time with the file and path of the policy.
    ///
    /// # Errors
    ///
    /// Any message: the gateway refuses to load the config.
    fn new(config: Self::Config) -> Result<Self, String>;

    /// Called for each request in an inbound chain. Default: continue.
    fn on_request(&self, req: &Request, conn: &Connection) -> Decision {
        let _ = (req, conn);
        Decision::proceed()
    }

    /// Called for each response in an outbound or on-error chain. Default:
    /// continue.
    fn on_response(&self, req: &Request, resp: &Response, conn: &Connection) -> Decision {
        let _ = (req, resp, conn);
        Decision::proceed()
    }

    /// Whether the gateway calls [`Policy::on_complete`] for this policy
    /// (as configured). Asked once, after construction. Default: false, and
    /// the gateway never enters the component after the response.
    fn wants_completion(&self) -> bool {
        false
    }

    /// Called once a request the policy took part in is over — the response
    /// body sent in full, or the exchange ended early — with the bytes
    /// actually transferred, the status and the durations. The client
    /// already has its response; this cannot change it. Called only when
    /// [`Policy::wants_completion`] is true. Default: nothing.
    fn on_complete(&self, req: &Request, conn: &Connection, info: &Completion) {
        let _ = (req, conn, info);
    }
}

/// Whether `name` is a valid HTTP header name (an RFC 9110 token).
pub fn is_valid_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Whether `value` can be sent as an HTTP header value: no control
/// characters other than tab (UTF-8 text is allowed).
pub fn is_valid_header_value(value: &str) -> bool {
    value
        .bytes()
        .all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

/// Parses a policy's JSON config into `C`; errors name the key path, e.g.
/// `failed_check_httpcode: invalid type: string "x", expected u16`.
///
/// # Errors
///
/// The message for the first problem found.
pub fn parse_config<C: DeserializeOwned>(json: &str) -> Result<C, String> {
    let de = &mut serde_json::Deserializer::from_str(json);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        // serde_json ends with " at line L column C" of the JSON the gateway
        // made from YAML: a position the author never saw.
        let mut inner = e.into_inner().to_string();
        if let Some(i) = inner.rfind(" at line ") {
            inner.truncate(i);
        }
        if path == "." || path.is_empty() {
            inner
        } else {
            format!("{path}: {inner}")
        }
    })
}

/// Glue between [`Policy`] and the generated bindings. Used by
/// [`export_policy!`]; not for direct use.
#[doc(hidden)]
pub mod __private {
    use super::*;
    use crate::bindings::exports::gatehouse::policy::completion::CompletionInfo;
    use crate::bindings::exports::gatehouse::policy::handler::{GuestPolicy, PolicyBorrow};
    use crate::bindings::gatehouse::policy::types as wit;

    /// `completion-enabled` for the adapter of `P`.
    pub fn completion_enabled<P: Policy>(this: PolicyBorrow<'_>) -> bool {
        this.get::<Adapter<P>>().0.wants_completion()
    }

    /// `on-complete` for the adapter of `P`.
    pub fn on_complete<P: Policy>(
        this: PolicyBorrow<'_>,
        req: &wit::Request,
        conn: &wit::Connection,
        info: CompletionInfo,
    ) {
        this.get::<Adapter<P>>()
            .0
            .on_complete(&Request::wit(req), &Connection::wit(conn), &info);
    }

    /// Wraps a user's policy as the exported `policy` resource.
    pub struct Adapter<P: Policy>(pub P);

    impl<P: Policy> GuestPolicy for Adapter<P> {
        fn new(config: String) -> Result<Self, String> {
            let config = parse_config::<P::Config>(&config)?;
            P::new(config).map(Adapter)
        }

        fn phases(&self) -> Phases {
            P::PHASES
        }

        fn on_request(&self, req: &wit::Request, conn: &wit::Connection) -> Decision {
            self.0
                .on_request(&Request::wit(req), &Connection::wit(conn))
        }

        fn on_response(
            &self,
            req: &wit::Request,
            resp: &wit::Response,
            conn: &wit::Connection,
        ) -> Decision {
            self.0.on_response(
                &Request::wit(req),
                &Response::wit(resp),
                &Connection::wit(conn),
            )
        }
    }
}

/// Exports a [`Policy`] type as this component's policy. Use it once, in the
/// crate's `lib.rs`, for a `cdylib` built for `wasm32-wasip2`.
#[macro_export]
macro_rules! export_policy {
    ($policy:ty) => {
        // The component exports exist only in the WebAssembly build; a
        // native build (unit tests with the testkit) has no component ABI.
        #[cfg(target_arch = "wasm32")]
        #[doc(hidden)]
        pub struct __GatehousePolicyExport;

        #[cfg(target_arch = "wasm32")]
        impl $crate::bindings::exports::gatehouse::policy::handler::Guest
            for __GatehousePolicyExport
        {
            type Policy = $crate::__private::Adapter<$policy>;
        }

        #[cfg(target_arch = "wasm32")]
        impl $crate::bindings::exports::gatehouse::policy::completion::Guest
            for __GatehousePolicyExport
        {
            fn completion_enabled(
                this: $crate::bindings::exports::gatehouse::policy::handler::PolicyBorrow<'_>,
            ) -> bool {
                $crate::__private::completion_enabled::<$policy>(this)
            }
            fn on_complete(
                this: $crate::bindings::exports::gatehouse::policy::handler::PolicyBorrow<'_>,
                req: &$crate::bindings::gatehouse::policy::types::Request,
                conn: &$crate::bindings::gatehouse::policy::types::Connection,
                info: $crate::bindings::exports::gatehouse::policy::completion::CompletionInfo,
            ) {
                $crate::__private::on_complete::<$policy>(this, req, conn, info)
            }
        }

        #[cfg(target_arch = "wasm32")]
        $crate::bindings::__export_policy_world!(
            __GatehousePolicyExport with_types_in $crate::bindings
        );

        // Type-check the adapter natively too.
        #[cfg(not(target_arch = "wasm32"))]
        const _: fn() = || {
            fn assert_policy<P: $crate::Policy>() {}
            assert_policy::<$policy>();
        };
    };
}
