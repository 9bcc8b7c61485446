//! `variables`: per-request context variables.

use super::HostState;
use crate::policy::bindings::gatehouse::policy::variables::Host;

use crate::policy::limits::{MAX_VARIABLES, MAX_VARIABLE_NAME, MAX_VARIABLE_VALUE};

impl Host for HostState {
    fn get(&mut self, name: String) -> Option<String> {
        self.exchange
            .as_deref()
            .and_then(|e| e.vars.get(&name).cloned())
    }

    fn set(&mut self, name: String, value: String) {
        let Some(e) = self.exchange.as_deref_mut() else {
            return;
        };
        // A call suspended at a remote counter question runs again.
        if e.suspended() {
            return;
        }
        // Variables live in host memory, outside the policy's memory cap:
        // bound them. Over a bound, the request fails with policy.limit.
        let why = if name.len() > MAX_VARIABLE_NAME {
            Some(format!(
                "a variable name of {} bytes (at most {MAX_VARIABLE_NAME})",
                name.len()
            ))
        } else if value.len() > MAX_VARIABLE_VALUE {
            Some(format!(
                "variable `{name}` of {} bytes (at most {MAX_VARIABLE_VALUE})",
                value.len()
            ))
        } else if e.vars.len() >= MAX_VARIABLES && !e.vars.contains_key(&name) {
            Some(format!("more than {MAX_VARIABLES} variables"))
        } else {
            None
        };
        match why {
            Some(why) => self.over(|| why),
            None => {
                e.vars.insert(name, value);
            }
        }
    }

    fn set_many(&mut self, entries: Vec<(String, String)>) {
        for (name, value) in entries {
            self.set(name, value);
        }
    }

    fn remove(&mut self, name: String) {
        if let Some(e) = self.exchange.as_deref_mut().filter(|e| !e.suspended()) {
            e.vars.remove(&name);
        }
    }
}
