//! Builds the guest components the tests load from `.wasm` paths: the
//! example custom policy and the test fixtures of `tests/guests`.

use std::path::PathBuf;

fn main() {
    let manifest =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let workspace = manifest
        .parent()
        .expect("tests/ lives in the workspace")
        .to_path_buf();
    guest_build::rerun_if_changed(&[
        workspace.join("examples/custom-policy/src"),
        workspace.join("examples/custom-policy/Cargo.toml"),
        workspace.join("tests/guests/misbehave/src"),
        workspace.join("tests/guests/misbehave/Cargo.toml"),
        workspace.join("tests/guests/future-contract/src"),
        workspace.join("tests/guests/future-contract/wit"),
        workspace.join("tests/guests/future-contract/Cargo.toml"),
        workspace.join("tests/guests/cert-facts/src"),
        workspace.join("tests/guests/cert-facts/Cargo.toml"),
        workspace.join("guest-sdk/src"),
        workspace.join("wit"),
    ]);
    let target_dir = guest_build::default_target_dir(&workspace);
    let built = guest_build::build(
        &workspace,
        &target_dir,
        &[
            "policy-api-key",
            "policy-misbehave",
            "policy-future-contract",
            "policy-cert-facts",
        ],
    );
    println!(
        "cargo:rustc-env=GATEHOUSE_TEST_API_KEY_WASM={}",
        built[0].display()
    );
    println!(
        "cargo:rustc-env=GATEHOUSE_TEST_MISBEHAVE_WASM={}",
        built[1].display()
    );
    println!(
        "cargo:rustc-env=GATEHOUSE_TEST_FUTURE_CONTRACT_WASM={}",
        built[2].display()
    );
    println!(
        "cargo:rustc-env=GATEHOUSE_TEST_CERT_FACTS_WASM={}",
        built[3].display()
    );
}
