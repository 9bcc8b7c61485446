//! What a policy declares about itself, from its constructor ([`crate::Policy::new`]),
//! so that the gateway checks the configuration around it at load time
//! (contract 0.1.2).

#[cfg(target_arch = "wasm32")]
use crate::bindings::gatehouse::policy::declarations as backend;
#[cfg(not(target_arch = "wasm32"))]
use crate::testkit::declarations as backend;

/// Declares that this policy, as configured, reads the client
/// certificate. The gateway then refuses a config in which no TLS host
/// serving the policy's chain asks clients for a certificate — every
/// request would arrive without one — naming the policy and the hosts.
/// Call it from the constructor, only when the configured behaviour
/// depends on the certificate; calls from hooks are ignored.
pub fn reads_client_certificate() {
    backend::reads_client_certificate()
}
