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

/// Waits until something accepts on `port` (30 s at most).
fn wait_listening(port: u16, child: &mut std::process::Child) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the gateway exited: {status}");
        }
        assert!(Instant::now() < deadline, "the gateway did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Stops a child with SIGTERM and returns its stderr.
fn stop(mut child: std::process::Child) -> String {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().ok().flatten().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    err
}

/// `gatehouse check FILE` and `gatehouse run FILE` take the file without
/// `-c`; a config that does not load says `not started: N problems in the
/// config`, as CONFIG.md has it.
#[test]
fn the_config_file_may_be_given_without_c() {
    let dir = temp_dir("positional");
    let cfg = dir.join("gateway.yaml");
    std::fs::write(
        &cfg,
        "listeners: [{name: a, address: \"127.0.0.1:0\"}]\nupstreams: {app: {url: \"builtin:echo\"}}\napis: [{name: x, path: /, upstream: app}]\n",
    )
    .unwrap();
    let stdout = check_ok(&[cfg.as_os_str()]);
    assert!(
        stdout.contains(&format!("{}: ok", cfg.display())),
        "{stdout}"
    );
    let bad = dir.join("bad.yaml");
    std::fs::write(
        &bad,
        "listeners: [{name: a, address: \"127.0.0.1:0\"}]\napis: [{name: x, path: /, upstream: nope}]\n",
    )
    .unwrap();
    let out = gatehouse().arg("run").arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.lines().last(),
        Some("not started: 1 problem in the config"),
        "{stderr}"
    );
    assert!(
        stderr.contains("apis[0].upstream: unknown upstream `nope`"),
        "{stderr}"
    );
    // -c and a file together are refused.
    let both = gatehouse()
        .args(["check", "-c"])
        .arg(&cfg)
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(both.status.code(), Some(2));
}

/// A second gateway on the same address fails to start and says why; the
/// first keeps serving. With `share_address: true` (a zero-downtime
/// upgrade) the second one starts next to it.
#[test]
fn a_second_gateway_on_the_same_address_is_refused_unless_shared() {
    let dir = temp_dir("second");
    let port = free_port();
    let yaml = |share: bool| {
        format!(
            "listeners: [{{name: a, address: \"127.0.0.1:{port}\", share_address: {share}}}]\nupstreams: {{app: {{url: \"builtin:echo\"}}}}\napis: [{{name: x, path: /, upstream: app}}]\n"
        )
    };
    let first_cfg = dir.join("first.yaml");
    std::fs::write(&first_cfg, yaml(false)).unwrap();
    let mut first = gatehouse()
        .args(["run", "--workers", "2", "-c"])
        .arg(&first_cfg)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_listening(port, &mut first);

    let second = gatehouse()
        .args(["run", "-c"])
        .arg(&first_cfg)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "listener `a` cannot bind 127.0.0.1:{port}: another process is listening there"
        )),
        "{stderr}"
    );
    assert!(stderr.contains("share_address: true"), "{stderr}");

    // The first one still answers every request (nothing split off).
    for _ in 0..20 {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"GET /x HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n")
            .unwrap();
        let mut reply = String::new();
        s.read_to_string(&mut reply).unwrap();
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    }

    // Deliberately shared: the second starts too.
    let shared_cfg = dir.join("shared.yaml");
    std::fs::write(&shared_cfg, yaml(true)).unwrap();
    let mut shared = gatehouse()
        .env("GATEHOUSE_LOG", "info")
        .args(["run", "-c"])
        .arg(&shared_cfg)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut log = BufReader::new(shared.stderr.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        if log.read_line(&mut line).unwrap_or(0) == 0 || line.contains("listening") {
            break;
        }
        assert!(Instant::now() < deadline);
    }
    assert!(
        line.contains("listening"),
        "the shared gateway started: {line}"
    );
    assert!(shared.try_wait().unwrap().is_none(), "still running");
    let _ = shared.kill();
    let _ = shared.wait();
    stop(first);
}

/// A certificate that expires within 30 days loads with a warning; an
/// expired one is an error (the golden cases in tests/config-errors).
#[test]
fn a_certificate_about_to_expire_is_a_warning() {
    let dir = temp_dir("expiring");
    let soon = chrono::Utc::now() + chrono::Duration::days(10);
    let mut params = rcgen::CertificateParams::new(vec!["soon.test".to_string()]).unwrap();
    use chrono::Datelike;
    params.not_after = rcgen::date_time_ymd(soon.year(), soon.month() as u8, soon.day() as u8);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    std::fs::write(dir.join("soon.crt"), cert.pem()).unwrap();
    std::fs::write(dir.join("soon.key"), key.serialize_pem()).unwrap();
    let cfg = dir.join("gateway.yaml");
    std::fs::write(
        &cfg,
        "listeners:\n  - name: a\n    address: 127.0.0.1:0\n    tls: {hosts: [{names: [soon.test], certificate: soon.crt, key: soon.key}]}\nupstreams: {app: {url: \"builtin:echo\"}}\napis: [{name: x, path: /, upstream: app}]\n",
    )
    .unwrap();
    let out = gatehouse().arg("check").arg(&cfg).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("warning: ")
            && stderr.contains("listeners[0].tls.hosts[0].certificate: the certificate (CN=rcgen self signed cert)")
            && stderr.contains("days from now): renew it"),
        "{stderr}"
    );
}

/// The default request log line tells refusals apart (fault code, API,
/// operation, host, client); `GATEHOUSE_LOG=debug` shows Gatehouse's debug
/// lines, not wasmtime's; failed TLS handshakes are logged at INFO with the
/// client and the reason, rate-limited.
#[test]
fn log_lines_explain_refusals_and_stay_readable_at_debug() {
    let dir = temp_dir("logs");
    let port = free_port();
    let tls_port = free_port();
    let mut params = rcgen::CertificateParams::new(vec!["logs.test".to_string()]).unwrap();
    params.not_after = rcgen::date_time_ymd(2090, 1, 1);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    std::fs::write(dir.join("logs.crt"), cert.pem()).unwrap();
    std::fs::write(dir.join("logs.key"), key.serialize_pem()).unwrap();
    let cfg = dir.join("gateway.yaml");
    std::fs::write(
        &cfg,
        format!(
            "listeners:\n  - {{name: plain, address: \"127.0.0.1:{port}\"}}\n  - name: tls\n    address: 127.0.0.1:{tls_port}\n    tls: {{hosts: [{{names: [logs.test], certificate: logs.crt, key: logs.key}}]}}\nupstreams: {{app: {{url: \"builtin:echo\"}}}}\napis:\n  - name: orders\n    path: /orders\n    upstream: app\n    operations:\n      - name: list\n        method: GET\n        path: /orders\n        policies: {{inbound: [{{check-header: {{name: x-tenant}}}}]}}\n"
        ),
    )
    .unwrap();
    let mut child = gatehouse()
        .env("GATEHOUSE_LOG", "debug")
        .args(["run", "--workers", "1"])
        .arg(&cfg)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_listening(port, &mut child);
    let get = |path: &str| {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nhost: shop.test\r\nconnection: close\r\n\r\n")
                .as_bytes(),
        )
        .unwrap();
        let mut reply = String::new();
        let _ = s.read_to_string(&mut reply);
        reply
    };
    assert!(get("/orders").starts_with("HTTP/1.1 400"));
    assert!(get("/elsewhere").starts_with("HTTP/1.1 404"));
    // Not TLS on the TLS port: failed handshakes, more than the log's
    // budget of lines for one second.
    for _ in 0..30 {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", tls_port)) {
            let _ = s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n");
            let mut sink = Vec::new();
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let _ = s.read_to_end(&mut sink);
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    let log = stop(child);
    let refused = log
        .lines()
        .find(|l| l.contains("path=\"/orders\""))
        .unwrap_or_else(|| panic!("no line for /orders:\n{log}"));
    for want in [
        "status=400",
        "fault=\"policy.check-header.missing\"",
        "api=\"orders\"",
        "operation=\"list\"",
        "host=\"shop.test\"",
        "client=127.0.0.1:",
    ] {
        assert!(refused.contains(want), "{want} in {refused}");
    }
    let not_found = log
        .lines()
        .find(|l| l.contains("path=\"/elsewhere\""))
        .unwrap_or_else(|| panic!("no line for /elsewhere:\n{log}"));
    for want in [
        "status=404",
        "fault=\"route.not-found\"",
        "api=\"-\"",
        "operation=\"-\"",
    ] {
        assert!(not_found.contains(want), "{want} in {not_found}");
    }
    // Gatehouse's own debug lines are there; wasmtime's and cranelift's
    // are not.
    assert!(log.contains(" DEBUG "), "{log}");
    assert!(!log.contains("ignoring section"), "{log}");
    assert!(!log.contains("cranelift"), "{log}");
    let handshakes: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("TLS handshake failed"))
        .collect();
    assert!(!handshakes.is_empty(), "{log}");
    assert!(
        handshakes.iter().all(|l| l.contains(" INFO ")
            && l.contains("client=127.0.0.1:")
            && l.contains("reason=")),
        "{handshakes:?}"
    );
    assert!(
        handshakes.len() <= 20,
        "at most 10 lines a second: {}",
        handshakes.len()
    );
}

/// `gatehouse probe` exits 1 with the cause when no request would succeed
/// (a refused port), and asks for a URL or a config's upstream.
#[test]
fn probe_exits_nonzero_with_the_cause() {
    let port = free_port();
    let out = gatehouse()
        .args(["probe", &format!("http://127.0.0.1:{port}/")])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "verdict: FAILED upstream.refused: 127.0.0.1:{port} refused the connection"
        )),
        "{stdout}"
    );
    let out = gatehouse().args(["probe"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "usage error");
    let out = gatehouse()
        .args(["probe", "https://127.0.0.1:1/", "--cert", "c.pem"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "--cert needs --key");
}
