//! The end-to-end test harness: a real gateway on loopback ports, real
//! upstream servers, real TLS clients, certificates made on the spot.
//!
//! - [`Pki`]: a CA and certificates (rcgen), written as PEM files.
//! - [`Gw`]: a gateway started from YAML text (listeners on port 0).
//! - [`upstream`]: HTTP and HTTPS upstream servers with pluggable handlers,
//!   including a JSON echo.
//! - [`Client`]: HTTP/1.1 and HTTP/2 clients (plain or TLS).

pub mod bench;
pub mod child;
pub mod client;
pub mod jwt;
pub mod pki;
pub mod raw;
pub mod redis;
pub mod upstream;

pub use client::{Client, Reply};
pub use pki::Pki;

use std::path::{Path, PathBuf};

/// The example custom policy (`examples/custom-policy`), built for tests.
pub fn api_key_wasm() -> &'static str {
    env!("GATEHOUSE_TEST_API_KEY_WASM")
}

/// The misbehaving fixture policy (`tests/guests/misbehave`).
pub fn misbehave_wasm() -> &'static str {
    env!("GATEHOUSE_TEST_MISBEHAVE_WASM")
}

/// A policy built for a newer contract (`tests/guests/future-contract`).
pub fn future_contract_wasm() -> &'static str {
    env!("GATEHOUSE_TEST_FUTURE_CONTRACT_WASM")
}

/// The fixture that reads the client certificate field by field
/// (`tests/guests/cert-facts`, contract 0.1.2).
pub fn cert_facts_wasm() -> &'static str {
    env!("GATEHOUSE_TEST_CERT_FACTS_WASM")
}

/// The example custom policy as built against the 0.1.0 contract of the
/// foundation, checked in: a compiled policy must keep loading.
pub fn api_key_contract_0_1_0_wasm() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/api-key-contract-0.1.0.wasm")
}

/// A temporary directory, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    /// A fresh directory under the system temp dir.
    pub fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!(
            "gatehouse-test-{tag}-{}-{:x}",
            std::process::id(),
            rand_u64()
        ));
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }
    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }
    /// Writes a file in it and returns the path.
    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, contents).expect("write temp file");
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0),
    );
    h.finish()
}

/// A running gateway and the directory its config lives in. The gateway
/// runs the way `gatehouse run` runs it: its own worker threads, each with
/// its own sockets (`SO_REUSEPORT`) and event loop. Dropping it stops it.
pub struct Gw {
    /// The running gateway (taken by [`Gw::shutdown`]).
    pub gateway: Option<gatehouse::Gateway>,
    /// Its config directory (certificates, yaml).
    pub dir: TempDir,
}

/// Worker threads of test gateways: more than one, as in production.
pub const WORKERS: usize = 2;

impl Gw {
    /// Writes `yaml` to `dir/gateway.yaml`, builds and starts the gateway.
    /// Panics with every config problem if the config is refused.
    pub async fn start(dir: TempDir, yaml: &str) -> Gw {
        let path = dir.write("gateway.yaml", yaml);
        let opts = gatehouse::Options { workers: WORKERS };
        match gatehouse::Gateway::start(Some(&path), opts) {
            Ok(g) => Gw {
                gateway: Some(g),
                dir,
            },
            Err(e) => panic!("gateway refused to start:\n{e}"),
        }
    }

    /// Like [`Gw::start`], but returns the problems instead of panicking.
    pub fn build_errors(dir: &TempDir, yaml: &str) -> Vec<String> {
        let path = dir.write("gateway.yaml", yaml);
        match gatehouse::gateway::check(Some(&path)) {
            Ok(_) => Vec::new(),
            Err(e) => e.0.iter().map(|e| e.to_string()).collect(),
        }
    }

    /// The gateway.
    pub fn gateway(&self) -> &gatehouse::Gateway {
        self.gateway.as_ref().expect("the gateway is running")
    }

    /// The bound address of the listener called `name`.
    pub fn addr(&self, name: &str) -> std::net::SocketAddr {
        self.gateway()
            .address(name)
            .unwrap_or_else(|| panic!("no listener `{name}`"))
    }

    /// The admin listener's address.
    pub fn admin(&self) -> std::net::SocketAddr {
        self.gateway()
            .admin_address()
            .expect("the config has an admin listener")
    }

    /// Rewrites the config file (for a reload to read).
    pub fn rewrite(&self, yaml: &str) {
        self.dir.write("gateway.yaml", yaml);
    }

    /// Stops the gateway: stop accepting, drain, stop the workers.
    pub async fn shutdown(&mut self) {
        if let Some(g) = self.gateway.take() {
            g.shutdown().await;
        }
    }
}

impl Drop for Gw {
    fn drop(&mut self) {
        if let Some(g) = self.gateway.take() {
            g.stop();
        }
    }
}
