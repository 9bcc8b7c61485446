//! Which imports a policy component may have.
//!
//! - `gatehouse:policy/*`: the interfaces of this gateway's contract
//!   (`types`, `host`, `variables`, `expressions`, `declarations`,
//!   `certificates`, `jose`, `counters`), at a 0.1.x version no
//!   newer than the host's. Anything else under `gatehouse:` — an interface
//!   a newer contract added, or a newer minor version — is a load error
//!   naming the policy and the import: the policy was built for a gateway
//!   this one is not.
//! - `wasi:*`: what std pulls in. The few functions the host serves
//!   (randomness, clocks, environment) work; the rest are defined as traps,
//!   so a policy that prints to stdout fails its request, not its load.
//! - Anything else is a load error.

use wasmtime::component::Component;
use wasmtime::Engine;

/// The contract version this host implements.
pub const CONTRACT: (u64, u64, u64) = (0, 1, 4);

/// The interfaces of the contract a component may import.
const INTERFACES: [&str; 8] = [
    "types",
    "host",
    "variables",
    "expressions",
    "declarations",
    "certificates",
    "jose",
    "counters",
];

/// Checks every import of `component`.
///
/// # Errors
///
/// A message naming `policy` and the first import the host cannot provide.
pub fn check(policy: &str, component: &Component, engine: &Engine) -> Result<(), String> {
    for (name, _) in component.component_type().imports(engine) {
        if name.starts_with("wasi:") {
            continue;
        }
        if let Some(rest) = name.strip_prefix("gatehouse:policy/") {
            let (iface, version) = rest.split_once('@').unwrap_or((rest, ""));
            if !INTERFACES.contains(&iface) {
                return Err(format!(
                    "policy `{policy}` imports `{name}`, which this gateway does not provide (it implements gatehouse:policy@{}); build the policy against this gateway's contract or upgrade the gateway",
                    contract()
                ));
            }
            match parse(version) {
                Some((0, 1, patch)) if patch <= CONTRACT.2 => {}
                _ => {
                    return Err(format!(
                        "policy `{policy}` imports `{name}`: it was built for a gatehouse:policy contract this gateway does not implement (this gateway implements {})",
                        contract()
                    ))
                }
            }
            continue;
        }
        return Err(format!(
            "policy `{policy}` imports `{name}`, which this gateway does not provide (a policy may import gatehouse:policy/* and wasi:*)"
        ));
    }
    Ok(())
}

fn contract() -> String {
    format!("{}.{}.{}", CONTRACT.0, CONTRACT.1, CONTRACT.2)
}

fn parse(v: &str) -> Option<(u64, u64, u64)> {
    let mut it = v.split('.').map(|p| p.parse::<u64>().ok());
    let out = (it.next()??, it.next()??, it.next()??);
    it.next().is_none().then_some(out)
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn versions() {
        assert_eq!(parse("0.1.0"), Some((0, 1, 0)));
        assert_eq!(parse("0.1"), None);
        assert_eq!(parse("0.1.0-rc1"), None);
        assert_eq!(parse(""), None);
    }
}
