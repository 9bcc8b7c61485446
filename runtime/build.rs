//! Builds every built-in policy (`policies/*`) for wasm32-wasip2 and puts
//! the components in OUT_DIR, where `src/policy/builtin.rs` embeds them.

use std::path::PathBuf;

/// (policy name in config, cargo package).
const BUILTINS: &[(&str, &str)] = &[
    ("check-header", "policy-check-header"),
    ("set-header", "policy-set-header"),
    ("return-response", "policy-return-response"),
    ("ip-filter", "policy-ip-filter"),
    (
        "validate-client-certificate",
        "policy-validate-client-certificate",
    ),
    ("validate-jwt", "policy-validate-jwt"),
    ("rate-limit", "policy-rate-limit"),
    ("rate-limit-by-key", "policy-rate-limit-by-key"),
    ("quota", "policy-quota"),
    ("quota-by-key", "policy-quota-by-key"),
];

fn main() {
    let manifest =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let workspace = manifest
        .parent()
        .expect("runtime/ lives in the workspace")
        .to_path_buf();
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));

    let mut watched = vec![
        workspace.join("wit"),
        workspace.join("guest-sdk/src"),
        workspace.join("guest-sdk/Cargo.toml"),
        workspace.join("Cargo.lock"),
    ];
    for (_, pkg) in BUILTINS {
        let dir = workspace
            .join("policies")
            .join(pkg.trim_start_matches("policy-"));
        watched.push(dir.join("src"));
        watched.push(dir.join("Cargo.toml"));
    }
    // The library the traffic policies share.
    watched.push(workspace.join("policies").join("traffic").join("src"));
    watched.push(
        workspace
            .join("policies")
            .join("traffic")
            .join("Cargo.toml"),
    );
    guest_build::rerun_if_changed(&watched);

    let packages: Vec<&str> = BUILTINS.iter().map(|(_, p)| *p).collect();
    let target_dir = guest_build::default_target_dir(&workspace);
    let built = guest_build::build(&workspace, &target_dir, &packages);

    let mut index = String::from("/// Built-in policies: (name, component bytes).\npub static BUILTINS: &[(&str, &[u8])] = &[\n");
    for ((name, _), wasm) in BUILTINS.iter().zip(built) {
        let dest = out.join(format!("{name}.wasm"));
        std::fs::copy(&wasm, &dest)
            .unwrap_or_else(|e| panic!("cannot copy {}: {e}", wasm.display()));
        index.push_str(&format!(
            "    ({name:?}, include_bytes!(concat!(env!(\"OUT_DIR\"), \"/{name}.wasm\"))),\n"
        ));
    }
    index.push_str("];\n");
    std::fs::write(out.join("builtins.rs"), index).expect("cannot write builtins.rs");
}
