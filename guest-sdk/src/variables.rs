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

/// Removes a variable.
pub fn remove(name: &str) {
    backend::remove(name)
}
