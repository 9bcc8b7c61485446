//! Build-script helper: compiles Gatehouse policy crates to `wasm32-wasip2`
//! components with one nested `cargo build`.
//!
//! The nested build needs care (each of these was hit):
//! - its own target directory, or it deadlocks on the outer build's lock;
//! - none of the outer build's flags in its environment (host link flags
//!   break the wasm link);
//! - one invocation for every guest, so they share one lock file and one
//!   target directory without name collisions.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The target every guest is built for.
pub const TARGET: &str = "wasm32-wasip2";

/// The cargo profile guests are built with (defined in the workspace root).
pub const PROFILE: &str = "guest";

/// Variables of the outer build that must not reach the nested one.
const SCRUBBED_ENV: &[&str] = &[
    "CARGO_ENCODED_RUSTFLAGS",
    "RUSTFLAGS",
    "CARGO_BUILD_RUSTFLAGS",
    "RUSTC_WORKSPACE_WRAPPER",
    "RUSTC_WRAPPER",
    "CARGO_TARGET_DIR",
    "CARGO_BUILD_TARGET",
    "CARGO_BUILD_TARGET_DIR",
    "CARGO_MAKEFLAGS",
    "MAKEFLAGS",
    "MFLAGS",
    "CARGO_LLVM_COV",
    "RUSTDOCFLAGS",
];

/// Builds `packages` (cargo package names, each a `cdylib`) of the workspace
/// at `workspace` for `wasm32-wasip2`, in `target_dir`, and returns the path
/// of each `.wasm` in the order given.
///
/// Panics with an explanation when the target is missing or the build fails;
/// a build script has no better way to report.
pub fn build(workspace: &Path, target_dir: &Path, packages: &[&str]) -> Vec<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let mut cmd = Command::new(&cargo);
    cmd.current_dir(workspace)
        .arg("build")
        .arg("--locked")
        .arg("--target")
        .arg(TARGET)
        .arg("--profile")
        .arg(PROFILE)
        .arg("--target-dir")
        .arg(target_dir);
    for p in packages {
        cmd.arg("-p").arg(p);
    }
    for var in SCRUBBED_ENV {
        cmd.env_remove(var);
    }
    for (key, _) in std::env::vars_os() {
        if let Some(k) = key.to_str() {
            if k.starts_with("CARGO_PROFILE_")
                || k.starts_with("CARGO_CFG_")
                || k.starts_with("CARGO_FEATURE_")
            {
                cmd.env_remove(k);
            }
        }
    }
    let output = match cmd.output() {
        Ok(o) => o,
        Err(e) => panic!("gatehouse: cannot run `{cargo}` to build the policy components: {e}"),
    };
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let hint = if stderr.contains("E0463") || stderr.contains("target may not be installed") {
            "\n\nThe wasm32-wasip2 target is missing. Install it with:\n    rustup target add wasm32-wasip2\n"
        } else {
            ""
        };
        panic!(
            "gatehouse: building the policy components for {TARGET} failed{hint}\n--- nested cargo output ---\n{stderr}"
        );
    }
    packages
        .iter()
        .map(|p| {
            target_dir
                .join(TARGET)
                .join(PROFILE)
                .join(format!("{}.wasm", p.replace('-', "_")))
        })
        .collect()
}

/// Prints `cargo:rerun-if-changed` for each path (files or source folders;
/// never a folder holding a `target/`).
pub fn rerun_if_changed(paths: &[PathBuf]) {
    for p in paths {
        println!("cargo:rerun-if-changed={}", p.display());
    }
}

/// The directory holding every build's guests: `<workspace>/target/wasm-guests`.
pub fn default_target_dir(workspace: &Path) -> PathBuf {
    // Respect an outer CARGO_TARGET_DIR for placement, but keep a separate
    // directory so the nested build never waits on the outer build's lock.
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir).join("wasm-guests"),
        None => workspace.join("target").join("wasm-guests"),
    }
}
