//! `declarations`: what a policy says about itself from its constructor,
//! read once by the pool after the first instance is built.

use super::HostState;
use crate::policy::bindings::gatehouse::policy::declarations::Host;

impl Host for HostState {
    fn reads_client_certificate(&mut self) {
        // Only the constructor declares: a hook (an exchange in the store)
        // cannot change what the config was checked against.
        if self.exchange.is_none() {
            self.declared_reads_client_cert = true;
        }
    }
}
