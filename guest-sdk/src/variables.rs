//! Context variables: per-request values shared with later policies and
//! with expressions (`vars.<name>`).

#[cfg(target_arch = "wasm32")]
use crate::bindings::gatehouse::policy::variables as backend;
#[cfg(not(target_arch = "wasm32"))]
use crate::testkit::variables as backend;

/// The value of a variable set earlier on this request.
pub fn get(name: &str) -> Option<String> {
    backend::get(name)
}

/// Sets a variable for the rest of the request.
pub fn set(name: &str, value: &str) {
    backend::set(name, value)
}

/// Sets several variables in one call to the gateway (contract 0.1.3).
pub fn set_many(entries: &[(String, String)]) {
    backend::set_many(entries)
}

/// Removes a variable.
pub fn remove(name: &str) {
    backend::remove(name)
}
