//! `variables`: per-request context variables.

use super::HostState;
use crate::policy::bindings::gatehouse::policy::variables::Host;

/// Most context variables one request may hold.
pub const MAX_VARIABLES: usize = 256;
/// Largest value of one context variable, in bytes.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;

impl Host for HostState {
    fn get(&mut self, name: String) -> Option<String> {
        self.exchange
            .as_deref()
            .and_then(|e| e.vars.get(&name).cloned())
    }

    fn set(&mut self, name: String, value: String) {
        if let Some(e) = self.exchange.as_deref_mut() {
            // Variables live in host memory, outside the policy's memory cap:
            // bound them.
            if value.len() > MAX_VALUE_BYTES
                || (e.vars.len() >= MAX_VARIABLES && !e.vars.contains_key(&name))
            {
                tracing::warn!(
                    policy = %self.policy,
                    request_id = %e.request_id,
                    "variable `{name}` not set: at most {MAX_VARIABLES} variables of {MAX_VALUE_BYTES} bytes per request"
                );
                return;
            }
            e.vars.insert(name, value);
        }
    }

    fn remove(&mut self, name: String) {
        if let Some(e) = self.exchange.as_deref_mut() {
            e.vars.remove(&name);
        }
    }
}
