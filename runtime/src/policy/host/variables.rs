//! `variables`: per-request context variables.

use super::HostState;
use crate::policy::bindings::gatehouse::policy::variables::Host;

impl Host for HostState {
    fn get(&mut self, name: String) -> Option<String> {
        self.exchange
            .as_deref()
            .and_then(|e| e.vars.get(&name).cloned())
    }

    fn set(&mut self, name: String, value: String) {
        if let Some(e) = self.exchange.as_deref_mut() {
            e.vars.insert(name, value);
        }
    }

    fn remove(&mut self, name: String) {
        if let Some(e) = self.exchange.as_deref_mut() {
            e.vars.remove(&name);
        }
    }
}
