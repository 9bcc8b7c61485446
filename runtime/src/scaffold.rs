//! `gatehouse new-policy NAME`: a ready-to-build custom policy crate.
//!
//! The crate is standalone (its own `[workspace]`), depends on the guest
//! SDK by path, builds to a component with
//! `cargo build --release --target wasm32-wasip2`, and has a unit test run
//! natively with the SDK's testkit.

use std::path::{Path, PathBuf};

/// The guest SDK of the source tree this binary was built from, if it is
/// still there.
pub fn default_sdk() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-sdk");
    p.join("Cargo.toml")
        .is_file()
        .then(|| p.canonicalize().unwrap_or(p))
}

/// Creates `dir/NAME/` with `Cargo.toml`, `src/lib.rs` and `README.md`.
///
/// # Errors
///
/// A name that is not lower-case kebab-case, a directory that exists, or
/// a file that cannot be written; the message says which.
pub fn new_policy(name: &str, dir: &Path, sdk: &Path) -> Result<PathBuf, String> {
    let valid = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && name.as_bytes()[0].is_ascii_lowercase()
        && !name.ends_with('-');
    if !valid {
        return Err(format!("`{name}` is not a policy name: use lower-case letters, digits and `-`, starting with a letter"));
    }
    if !sdk.join("Cargo.toml").is_file() {
        return Err(format!(
            "{} is not the gatehouse guest SDK (no Cargo.toml); pass --sdk PATH",
            sdk.display()
        ));
    }
    let root = dir.join(name);
    if root.exists() {
        return Err(format!("{} already exists", root.display()));
    }
    let sdk = sdk
        .canonicalize()
        .map_err(|e| format!("{}: {e}", sdk.display()))?;
    let crate_name = name.replace('-', "_");
    let type_name: String = name
        .split('-')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect();
    let cargo = format!(
        r#"[package]
name = "{name}"
description = "A Gatehouse policy"
version = "0.1.0"
edition = "2021"
publish = false

[lib]
crate-type = ["cdylib", "rlib"]

[dependencies]
gatehouse-sdk = {{ path = "{sdk}" }}
serde = {{ version = "1", features = ["derive"] }}

# Small components: a panic is a trap the gateway handles.
[profile.release]
opt-level = "s"
lto = true
codegen-units = 1
panic = "abort"
strip = true

# Standalone: not part of any enclosing workspace.
[workspace]
"#,
        sdk = sdk.display().to_string().replace('\\', "/"),
    );
    let lib = format!(
        r##"//! `{name}`: refuses requests without a required header.
//! Change `on_request` to make it yours.

use gatehouse_sdk::{{export_policy, Connection, Decision, Fault, Policy, Request}};
use serde::Deserialize;

/// The policy's config, as written under `{name}:` in the gateway's YAML.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {{
    /// The header every request must carry.
    header: String,
}}

/// The policy, built once per instance from its config.
pub struct {type_name} {{
    header: String,
}}

impl Policy for {type_name} {{
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {{
        if !gatehouse_sdk::is_valid_header_name(&config.header) {{
            return Err(format!("header: `{{}}` is not a valid header name", config.header));
        }}
        Ok({type_name} {{ header: config.header.to_ascii_lowercase() }})
    }}

    fn on_request(&self, req: &Request, _conn: &Connection) -> Decision {{
        match req.header(&self.header) {{
            Some(_) => Decision::proceed(),
            None => Decision::deny(Fault::new(
                400,
                "policy.{name}.missing",
                "Required header missing",
                format!("send the `{{}}` header", self.header),
            )),
        }}
    }}
}}

export_policy!({type_name});

#[cfg(test)]
mod tests {{
    use super::*;
    use gatehouse_sdk::testkit::{{self, TestRequest}};

    #[test]
    fn passes_with_the_header_and_refuses_without() {{
        let p: {type_name} = testkit::build(r#"{{"header":"X-Tenant"}}"#).unwrap();
        assert!(testkit::on_request(&p, &TestRequest::get("/").header("x-tenant", "a")).is_continue());
        match testkit::on_request(&p, &TestRequest::get("/")) {{
            Decision::Deny(f) => assert_eq!((f.status, f.code.as_str()), (400, "policy.{name}.missing")),
            other => panic!("expected a refusal, got {{other:?}}"),
        }}
        assert!(testkit::build::<{type_name}>(r#"{{"header":"bad header"}}"#).is_err());
    }}
}}
"##
    );
    let readme = format!(
        r#"# {name}

A Gatehouse policy. Test it natively, build it as a component, load it:

```sh
cargo test
cargo build --release --target wasm32-wasip2
```

```yaml
custom_policies:
  {name}: {{wasm: {dir}/target/wasm32-wasip2/release/{crate_name}.wasm}}
apis:
  - name: orders
    path: /orders
    upstream: orders
    policies:
      inbound:
        - base
        - {name}: {{header: X-Tenant}}
```

`gatehouse check -c gateway.yaml` constructs it with its config and reports
any problem with the file and key.
"#,
        dir = root.display(),
    );
    let write = |rel: &str, text: &str| -> Result<(), String> {
        let p = root.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        }
        std::fs::write(&p, text).map_err(|e| format!("cannot write {}: {e}", p.display()))
    };
    write("Cargo.toml", &cargo)?;
    write("src/lib.rs", &lib)?;
    write("README.md", &readme)?;
    Ok(root)
}
