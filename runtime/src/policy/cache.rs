//! Compiled components on disk, keyed by the SHA-256 of the component and
//! the engine's compatibility hash, so a restart (or a second gateway on
//! the same machine) does not recompile.
//!
//! The cache directory must be trusted like the binary itself: a compiled
//! artifact is native code.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::Engine;

/// `$XDG_CACHE_HOME/gatehouse`, or `$HOME/.cache/gatehouse`.
pub fn default_dir() -> Option<PathBuf> {
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(x).join("gatehouse"));
    }
    std::env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .map(|h| PathBuf::from(h).join(".cache").join("gatehouse"))
}

/// The cache key of `wasm` for `engine`.
pub fn key(engine: &Engine, wasm: &[u8]) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut h);
    let digest = Sha256::digest(wasm);
    let mut out = String::with_capacity(64 + 17);
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out.push('-');
    out.push_str(&format!("{:016x}", h.finish()));
    out
}

/// Loads `wasm` as a component, through the cache when `dir` is set. A
/// cache that cannot be read or written is logged and bypassed.
///
/// # Errors
///
/// When the bytes are not a valid component.
pub fn load(engine: &Engine, wasm: &[u8], dir: Option<&Path>) -> anyhow::Result<Component> {
    let Some(dir) = dir else {
        return Component::new(engine, wasm).map_err(|e| anyhow::anyhow!("{e:#}"));
    };
    if !trusted(dir) {
        tracing::warn!(
            "not using the component cache {}: it is writable by every user (compiled components are native code)",
            dir.display()
        );
        return Component::new(engine, wasm).map_err(|e| anyhow::anyhow!("{e:#}"));
    }
    let path = dir.join(format!("{}.cwasm", key(engine, wasm)));
    // The file is read into memory rather than mapped: a cache file that is
    // replaced or truncated while the gateway runs must not take it down.
    if let Ok(bytes) = std::fs::read(&path) {
        // SAFETY: the bytes were written by `precompile_component` of an
        // engine with the same compatibility hash (it is in the file name),
        // in a directory the operator trusts like the binary; wasmtime still
        // checks the header and refuses a mismatched or truncated artifact.
        match unsafe { Component::deserialize(engine, &bytes) } {
            Ok(c) => return Ok(c),
            Err(e) => tracing::warn!(
                "ignoring unreadable compiled component {}: {e:#}",
                path.display()
            ),
        }
    }
    let compiled = engine
        .precompile_component(wasm)
        .map_err(|e| anyhow::anyhow!("{e:#}"))?;
    if let Err(e) = write_atomically(dir, &path, &compiled) {
        tracing::warn!("cannot write the component cache {}: {e}", path.display());
    }
    // SAFETY: `compiled` was just produced by this engine.
    unsafe { Component::deserialize(engine, &compiled) }.map_err(|e| anyhow::anyhow!("{e:#}"))
}

fn write_atomically(dir: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".{}.{}.tmp", std::process::id(), fastrand::u64(..)));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// A cache directory anyone may write to could be made to hold native code
/// of an attacker's choosing (even with the sticky bit: they could create a
/// file under a name the gateway will look for).
#[cfg(unix)]
fn trusted(dir: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::metadata(dir) {
        Ok(m) => {
            let mode = m.permissions().mode();
            mode & 0o002 == 0
        }
        // Not there yet: it will be created with the default mode.
        Err(_) => true,
    }
}

#[cfg(not(unix))]
fn trusted(_: &Path) -> bool {
    true
}
