//! The built-in policies, compiled from `policies/*` by the build script
//! and embedded in the binary.

include!(concat!(env!("OUT_DIR"), "/builtins.rs"));

/// The component of a built-in policy.
pub fn get(name: &str) -> Option<&'static [u8]> {
    BUILTINS.iter().find(|(n, _)| *n == name).map(|(_, b)| *b)
}

/// The names of the built-in policies.
pub fn names() -> impl Iterator<Item = &'static str> {
    BUILTINS.iter().map(|(n, _)| *n)
}
