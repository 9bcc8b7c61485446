//! The `gatehouse` binary: --help, --version, check and run.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn gatehouse() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_gatehouse"));
    c.env("GATEHOUSE_LOG", "warn");
    c
}

/// Runs `gatehouse check ARGS`, asserts it succeeds, returns its stdout.
fn check_ok(args: &[&std::ffi::OsStr]) -> String {
    let out = gatehouse().arg("check").args(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn temp_dir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("gatehouse-cli-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn version_and_help() {
    let out = gatehouse().arg("--version").output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("gatehouse {}", env!("CARGO_PKG_VERSION"))
    );
    let out = gatehouse().arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(help.contains("run") && help.contains("check"), "{help}");
}

#[test]
fn check_the_embedded_quickstart_shows_effective_chains() {
    let stdout = check_ok(&[]);
    assert!(stdout.contains("<embedded quickstart>: ok"), "{stdout}");
    assert!(
        stdout.contains("inbound:  check-header -> set-header"),
        "{stdout}"
    );
}

#[test]
fn check_reports_every_problem_and_exits_1() {
    let dir = temp_dir("check");
    let cfg = dir.join("bad.yaml");
    std::fs::write(
        &cfg,
        "listeners: [{name: a, address: \"127.0.0.1:0\"}]\nupstreams: {app: {url: \"http://127.0.0.1:9\"}}\napis:\n  - name: x\n    path: /\n    upstream: nope\n    policies:\n      inbound: [{check-header: {}}]\n",
    )
    .unwrap();
    let out = gatehouse()
        .args(["check", "-c"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let file = cfg.display().to_string();
    assert!(
        stderr.contains(&format!(
            "error: {file}: apis[0].upstream: unknown upstream `nope` (defined: app)"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "error: {file}: apis[0].policies.inbound[0].check-header: missing field `name`"
        )),
        "{stderr}"
    );
    assert!(stderr.contains("2 problems found"), "{stderr}");
}

#[test]
fn run_with_a_bad_config_starts_nothing() {
    let dir = temp_dir("run-bad");
    let port = free_port();
    let cfg = dir.join("bad.yaml");
    std::fs::write(
        &cfg,
        format!("listeners: [{{name: a, address: \"127.0.0.1:{port}\"}}]\nupstreams: {{app: {{url: \"builtin:echo\"}}}}\napis: [{{name: x, path: /, upstream: app, policies: {{inbound: [nosuch-policy]}}}}]\n"),
    )
    .unwrap();
    let out = gatehouse().args(["run", "-c"]).arg(&cfg).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("unknown policy `nosuch-policy`"),
        "{stderr}"
    );
    assert!(stderr.contains("not started"), "{stderr}");
    // Nothing was left listening.
    std::net::TcpListener::bind(("127.0.0.1", port)).expect("the port is still free");
}

#[test]
fn run_serves_until_stopped() {
    let dir = temp_dir("run-ok");
    let port = free_port();
    let cfg = dir.join("ok.yaml");
    std::fs::write(
        &cfg,
        format!(
            "listeners: [{{name: a, address: \"127.0.0.1:{port}\"}}]\nupstreams: {{app: {{url: \"builtin:echo\"}}}}\napis: [{{name: x, path: /, upstream: app, policies: {{inbound: [{{check-header: {{name: x-tenant}}}}]}}}}]\n"
        ),
    )
    .unwrap();
    let mut child = gatehouse()
        .env("GATEHOUSE_LOG", "info")
        .args(["run", "-c"])
        .arg(&cfg)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut stream = loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => break s,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => {
                let _ = child.kill();
                panic!("gateway did not start: {e}");
            }
        }
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(b"GET /hello HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
        .unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    assert!(reply.contains("application/problem+json"), "{reply}");
    // SIGTERM stops it cleanly: exit status 0, the port released.
    let term = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the gateway did not stop on SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "exit status after SIGTERM: {status}");
    std::net::TcpListener::bind(("127.0.0.1", port)).expect("the port was released");
    // The log line of the refused request carries its request id.
    let rid = reply
        .lines()
        .find_map(|l| l.strip_prefix("x-request-id: "))
        .expect("x-request-id")
        .trim()
        .to_string();
    let mut log = String::new();
    if let Some(stderr) = child.stderr.take() {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            log.push_str(&line);
            log.push('\n');
        }
    }
    assert!(
        log.contains(&rid),
        "the access log names the request id {rid}:\n{log}"
    );
    assert!(log.contains("status=400"), "{log}");
    assert!(log.contains("shutting down"), "{log}");
}

/// `gatehouse new-policy` writes a crate that passes its own test, builds
/// to a component, and loads in the gateway.
#[test]
fn new_policy_scaffold_tests_builds_and_loads() {
    let dir = temp_dir("scaffold");
    let _ = std::fs::remove_dir_all(dir.join("tenant-guard"));
    let out = gatehouse()
        .args(["new-policy", "tenant-guard", "--dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let root = dir.join("tenant-guard");
    for f in ["Cargo.toml", "src/lib.rs", "README.md"] {
        assert!(root.join(f).is_file(), "{f} was not written");
    }
    // Refuses to overwrite, and refuses bad names.
    let again = gatehouse()
        .args(["new-policy", "tenant-guard", "--dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
    let bad = gatehouse()
        .args(["new-policy", "Bad_Name", "--dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&bad.stderr).contains("is not a policy name"));

    // A target directory shared between runs keeps this quick after the first.
    let target = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/scaffold-test");
    let cargo = |args: &[&str]| {
        let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        c.current_dir(&root)
            .args(args)
            .env("CARGO_TARGET_DIR", &target);
        for v in [
            "RUSTFLAGS",
            "CARGO_ENCODED_RUSTFLAGS",
            "CARGO_BUILD_TARGET",
            "RUSTC_WRAPPER",
            "RUSTC_WORKSPACE_WRAPPER",
        ] {
            c.env_remove(v);
        }
        let out = c.output().unwrap();
        assert!(
            out.status.success(),
            "cargo {args:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let tested = cargo(&["test", "--offline", "--release"]);
    assert!(
        tested.contains("test tests::passes_with_the_header_and_refuses_without ... ok"),
        "{tested}"
    );
    cargo(&[
        "build",
        "--offline",
        "--release",
        "--target",
        "wasm32-wasip2",
    ]);
    let wasm = target.join("wasm32-wasip2/release/tenant_guard.wasm");
    assert!(wasm.is_file());

    let cfg = dir.join("scaffold.yaml");
    std::fs::write(
        &cfg,
        format!(
            "listeners: [{{name: a, address: \"127.0.0.1:0\"}}]\nupstreams: {{app: {{url: \"builtin:echo\"}}}}\ncustom_policies:\n  tenant-guard: {{wasm: \"{}\"}}\napis: [{{name: x, path: /, upstream: app, policies: {{inbound: [{{tenant-guard: {{header: X-Tenant}}}}]}}}}]\n",
            wasm.display()
        ),
    )
    .unwrap();
    let stdout = check_ok(&["-c".as_ref(), cfg.as_os_str()]);
    assert!(stdout.contains("inbound:  tenant-guard"), "{stdout}");
    let _ = std::fs::remove_dir_all(&root);
}
