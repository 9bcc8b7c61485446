//! A gateway in a process of its own: the test binary run again with
//! `--exact <child test>`, which starts a gateway from the config in an
//! environment variable and prints `ADDR <address>`. Used where a test
//! needs what only a process gives: a real `kill -9`, or two gateways that
//! share nothing but an external store.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{Gw, TempDir};

/// The body of a child test: with `var` set, starts a gateway from its
/// config, prints its `main` listener's address and never returns;
/// without it, returns at once (the child test passes as a no-op in a
/// normal run).
pub async fn serve_if_asked(var: &str) {
    let Ok(yaml) = std::env::var(var) else {
        return;
    };
    let gw = Gw::start(TempDir::new("child"), &yaml).await;
    println!("ADDR {}", gw.addr("main"));
    loop {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
}

/// A gateway process, killed (SIGKILL) when dropped: a failed assertion
/// leaves no process behind.
pub struct GatewayProcess(pub Child);

impl GatewayProcess {
    /// `kill -9`, and wait for the process to end.
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs the child test `test` of this test binary with `var` = `yaml`;
/// the process and its listener's address.
///
/// # Panics
///
/// When the process cannot start or ends before printing its address.
pub fn spawn(test: &str, var: &str, yaml: &str) -> (GatewayProcess, SocketAddr) {
    let exe = std::env::current_exe().expect("the test binary");
    let mut child = Command::new(exe)
        .args(["--exact", test, "--nocapture", "--test-threads", "1"])
        .env(var, yaml)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the gateway process");
    let out = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(out).lines();
    let addr = loop {
        match lines.next() {
            Some(Ok(l)) => {
                // libtest prints `test <name> ... ` first, on the same line.
                if let Some((_, a)) = l.split_once("ADDR ") {
                    break a.trim().parse().expect("an address");
                }
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the gateway process ended before printing its address");
            }
        }
    };
    (GatewayProcess(child), addr)
}
