//! A real `redis-server` on a loopback port of its own, started by a test
//! and killed when dropped, with the few commands the tests read it by.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `redis-server` (no persistence).
pub struct RedisServer {
    child: Child,
    port: u16,
    password: Option<String>,
}

fn binary() -> String {
    for b in [
        "redis-server",
        "/usr/bin/redis-server",
        "/usr/local/bin/redis-server",
    ] {
        if Command::new(b)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
        {
            return b.to_string();
        }
    }
    panic!("redis-server is not installed (apt-get install redis-server; .ci/run does it)");
}

impl RedisServer {
    /// Starts a server on a free loopback port.
    pub fn start(password: Option<&str>) -> RedisServer {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        Self::start_on(port, password)
    }

    /// Starts a server on `port` (again, after [`RedisServer::kill`]).
    pub fn start_on(port: u16, password: Option<&str>) -> RedisServer {
        Self::start_with(port, password, &[])
    }

    /// Starts a server that also listens with TLS on a port of its own
    /// (the second value), requiring a client certificate signed by
    /// `ca_file`: `cert_file`/`key_file` are its own. The plain port stays
    /// for the test's commands.
    pub fn start_tls(
        ca_file: &std::path::Path,
        cert_file: &std::path::Path,
        key_file: &std::path::Path,
    ) -> (RedisServer, u16) {
        let free = || {
            TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port()
        };
        let (port, tls_port) = (free(), free());
        let p = |f: &std::path::Path| f.display().to_string();
        let s = Self::start_with(
            port,
            None,
            &[
                "--tls-port".into(),
                tls_port.to_string(),
                "--tls-cert-file".into(),
                p(cert_file),
                "--tls-key-file".into(),
                p(key_file),
                "--tls-ca-cert-file".into(),
                p(ca_file),
                "--tls-auth-clients".into(),
                "yes".into(),
            ],
        );
        (s, tls_port)
    }

    fn start_with(port: u16, password: Option<&str>, extra: &[String]) -> RedisServer {
        let mut args = vec![
            "--port".to_string(),
            port.to_string(),
            "--bind".into(),
            "127.0.0.1".into(),
            "--save".into(),
            String::new(),
            "--appendonly".into(),
            "no".into(),
            "--daemonize".into(),
            "no".into(),
        ];
        if let Some(p) = password {
            args.push("--requirepass".into());
            args.push(p.into());
        }
        args.extend_from_slice(extra);
        let child = Command::new(binary())
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        let s = RedisServer {
            child,
            port,
            password: password.map(str::to_string),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while s.try_command(&["PING"]).as_deref() != Some("+PONG") {
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer PING"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        s
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Sends a signal (`STOP`, `CONT`) to the server.
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([format!("-{sig}"), self.pid().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -{sig} redis-server");
    }

    /// Kills the server (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Runs a command; its reply as raw RESP text (a bulk reply's whole
    /// text, an array of bulk strings one per line), `None` when the
    /// server cannot be reached.
    pub fn try_command(&self, args: &[&str]) -> Option<String> {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        let mut r = BufReader::new(s.try_clone().ok()?);
        if let Some(p) = &self.password {
            s.write_all(&encode(&["AUTH", p])).ok()?;
            let mut line = String::new();
            r.read_line(&mut line).ok()?;
        }
        s.write_all(&encode(args)).ok()?;
        let mut line = String::new();
        r.read_line(&mut line).ok()?;
        let line = line.trim_end().to_string();
        if let Some(n) = line.strip_prefix('*') {
            // An array of bulk strings: the items, one per line.
            let n: usize = n.parse().ok()?;
            let mut items = Vec::with_capacity(n);
            for _ in 0..n {
                let mut head = String::new();
                r.read_line(&mut head).ok()?;
                let len: usize = head.trim_end().strip_prefix('$')?.parse().ok()?;
                let mut buf = vec![0; len + 2];
                r.read_exact(&mut buf).ok()?;
                buf.truncate(len);
                items.push(String::from_utf8(buf).ok()?);
            }
            return Some(items.join("\n"));
        }
        if let Some(n) = line.strip_prefix('$') {
            let n: i64 = n.parse().ok()?;
            if n < 0 {
                return Some(String::new());
            }
            let mut buf = vec![0; n as usize + 2];
            r.read_exact(&mut buf).ok()?;
            buf.truncate(n as usize);
            return String::from_utf8(buf).ok();
        }
        Some(line)
    }

    /// Runs a command that must succeed.
    pub fn command(&self, args: &[&str]) -> String {
        self.try_command(args)
            .unwrap_or_else(|| panic!("redis {args:?}: no answer"))
    }

    /// How many times each command ran since the last `CONFIG RESETSTAT`
    /// (`INFO commandstats`), e.g. `[("evalsha", 200)]`.
    pub fn command_calls(&self) -> Vec<(String, u64)> {
        let info = self.command(&["INFO", "commandstats"]);
        info.lines()
            .filter_map(|l| {
                let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
                let calls = rest
                    .strip_prefix("calls=")?
                    .split(',')
                    .next()?
                    .parse()
                    .ok()?;
                Some((name.to_string(), calls))
            })
            .collect()
    }
}

fn encode(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // SIGKILL ends a stopped (SIGSTOP) process too.
        self.kill();
    }
}
