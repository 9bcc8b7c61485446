//! HTTP semantics a newcomer meets on day one: HEAD over HTTP/2 for the
//! responses the gateway makes itself, the gateway's own HTTP version in
//! front of an HTTP/1.0 upstream, upstreams that answer a large upload
//! early, upstream connect errors that name the address, and access-log
//! lines that say what the client actually got.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use gatehouse_tests::{raw, upstream, Client, Gw, Pki, TempDir};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The access-log lines once `n` are written (5 s at most).
async fn access_lines(path: &std::path::Path, n: usize) -> Vec<serde_json::Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        if lines.len() >= n || std::time::Instant::now() > deadline {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `curl --http2 -I` on a response the gateway made (echo upstream,
/// return-response, a fault) got PROTOCOL_ERROR: a body went out on a HEAD
/// response. HTTP/2 with prior knowledge and over TLS, and HTTP/1.1: the
/// head of what GET gets, with its Content-Length, and no body; the access
/// log says the exchange completed.
#[tokio::test]
async fn head_gets_the_head_of_gateway_made_responses_on_every_protocol() {
    let dir = TempDir::new("head");
    let pki = Pki::new("Head CA");
    pki.server(&dir, "server", &["test.com"]);
    let yaml = r#"
listeners:
  - {name: plain, address: "127.0.0.1:0"}
  - name: tls
    address: "127.0.0.1:0"
    tls: {hosts: [{names: [test.com], certificate: server.crt, key: server.key}]}
upstreams: {echo: {url: "builtin:echo"}}
access_log: {path: access.log}
apis:
  - name: app
    path: /
    upstream: echo
    operations:
      - name: tea
        method: "*"
        path: /tea
        policies:
          inbound: [{return-response: {status_code: 418, body: "short and stout"}}]
      - {name: echo, method: "*", path: /echo}
"#;
    let gw = Gw::start(dir, yaml).await;
    let clients = [
        (
            "h2c",
            Client {
                h2: true,
                ..Client::plain(gw.addr("plain"))
            },
        ),
        (
            "h2",
            Client::tls(gw.addr("tls"), pki.roots(), "test.com", true),
        ),
        ("h1", Client::plain(gw.addr("plain"))),
    ];
    let mut heads = 0;
    for (proto, c) in &clients {
        let mut conn = c.connect().await;
        for (path, status) in [("/echo", 200u16), ("/tea", 418), ("/nowhere", 404)] {
            let get = conn.request("GET", &c.authority(), path, &[], b"").await;
            assert_eq!(get.status.as_u16(), status, "{proto} GET {path}");
            assert!(!get.body.is_empty());
            let head = conn
                .try_request("HEAD", &c.authority(), path, &[], b"")
                .await
                .unwrap_or_else(|| panic!("{proto} HEAD {path}: the exchange failed"));
            heads += 1;
            assert_eq!(head.status.as_u16(), status, "{proto} HEAD {path}");
            assert!(head.body.is_empty(), "{proto} HEAD {path}: a body was sent");
            assert_eq!(
                head.header("content-type"),
                get.header("content-type"),
                "{proto} HEAD {path}"
            );
            // The echo's JSON and the fault's detail name the method, so
            // HEAD's is one letter longer than GET's.
            let len: usize = head
                .header("content-length")
                .unwrap_or_else(|| panic!("{proto} HEAD {path}: no content-length"))
                .parse()
                .unwrap();
            let longer = usize::from(path != "/tea");
            assert_eq!(len, get.body.len() + longer, "{proto} HEAD {path}");
        }
    }
    let lines = access_lines(&gw.dir.path().join("access.log"), 2 * heads).await;
    let head_lines: Vec<_> = lines.iter().filter(|l| l["method"] == "HEAD").collect();
    assert_eq!(head_lines.len(), heads, "{lines:?}");
    for l in head_lines {
        assert_eq!(l["complete"], true, "{l}");
        assert_eq!(l["outcome"], "complete", "{l}");
        assert_eq!(l["response_bytes"], 0, "{l}");
    }
}

/// Python's `http.server` (HTTP/1.0): the client asked in HTTP/1.1 and
/// gets HTTP/1.1 back, on a connection that stays open.
#[tokio::test]
async fn an_http_1_0_upstream_does_not_make_the_client_connection_http_1_0() {
    let dir = TempDir::new("http10");
    let docs = dir.path().join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    std::fs::write(docs.join("hello.txt"), "hello from python\n").unwrap();
    let mut python = std::process::Command::new("python3")
        .args([
            "-u",
            "-m",
            "http.server",
            "0",
            "--bind",
            "127.0.0.1",
            "--directory",
        ])
        .arg(&docs)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("python3 (the CI installs it)");
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let stdout = python.stdout.take().expect("stdout");
    let _python = Kill(python);
    // "Serving HTTP on 127.0.0.1 port 40123 (http://127.0.0.1:40123/) ..."
    let line = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        let mut line = String::new();
        let _ = std::io::BufReader::new(stdout).read_line(&mut line);
        line
    })
    .await
    .unwrap();
    let port: u16 = line
        .split(" port ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("python said: {line}"));

    // And an upstream with a reason phrase of its own.
    let quirky = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let quirky_addr = quirky.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = quirky.accept().await {
            tokio::spawn(async move {
                let _ = read_head(&mut s).await;
                let _ = s
                    .write_all(
                        b"HTTP/1.0 200 Fine Thanks\r\ncontent-type: text/plain\r\n\r\nquirky",
                    )
                    .await;
            });
        }
    });

    let yaml = format!(
        r#"
listeners: [{{name: main, address: "127.0.0.1:0"}}]
upstreams:
  python: {{url: "http://127.0.0.1:{port}"}}
  quirky: {{url: "http://{quirky_addr}"}}
apis:
  - {{name: files, path: /files, upstream: python, strip_path: true}}
  - {{name: quirky, path: /quirky, upstream: quirky}}
"#
    );
    let gw = Gw::start(dir, &yaml).await;
    let c = Client::plain(gw.addr("main"));
    let mut conn = c.connect().await;
    for _ in 0..3 {
        let r = conn
            .request("GET", &c.authority(), "/files/hello.txt", &[], b"")
            .await;
        assert_eq!(r.status, 200);
        assert_eq!(r.version, http::Version::HTTP_11);
        assert_eq!(&r.body[..], b"hello from python\n");
        assert_ne!(r.header("connection"), Some("close"));
    }
    assert!(!conn.is_closed(), "the client connection stays open");

    // On the wire: the gateway's status line, not the upstream's.
    let mut tcp = TcpStream::connect(gw.addr("main")).await.unwrap();
    for _ in 0..2 {
        tcp.write_all(b"GET /quirky HTTP/1.1\r\nhost: a\r\n\r\n")
            .await
            .unwrap();
        let head = read_head(&mut tcp).await;
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(!head.contains("Fine Thanks"), "{head}");
        // A body without a length from the upstream goes out chunked.
        assert!(
            head.to_ascii_lowercase()
                .contains("transfer-encoding: chunked"),
            "{head}"
        );
        let mut rest = Vec::new();
        while !rest.ends_with(b"0\r\n\r\n") {
            let mut b = [0u8; 256];
            let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut b))
                .await
                .expect("the chunked body ends")
                .unwrap();
            assert!(n > 0, "the connection was closed");
            rest.extend_from_slice(&b[..n]);
        }
    }
}

/// Reads an HTTP head (up to the blank line).
async fn read_head(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match tokio::time::timeout(Duration::from_secs(10), s.read(&mut b)).await {
            Ok(Ok(1)) => head.push(b[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// An upstream that reads the head and `read` bytes of the body, answers
/// 413, then closes (with unread data: a reset) or, with `hold`, keeps the
/// connection open without reading. `closed` is set when the gateway
/// closes a held connection.
async fn early_answerer(read: usize, hold: bool, closed: Arc<AtomicBool>) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let closed = closed.clone();
            tokio::spawn(async move {
                let _ = read_head(&mut s).await;
                let mut got = 0;
                let mut b = vec![0u8; 16 * 1024];
                while got < read {
                    match s.read(&mut b[..(read - got).min(16 * 1024)]).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got += n,
                    }
                }
                let _ = s
                    .write_all(
                        b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 8\r\n\r\ntoo big!",
                    )
                    .await;
                if hold {
                    // Not reading; wait for the gateway to give up on the
                    // connection (bounded).
                    let _ = tokio::time::timeout(Duration::from_secs(20), async {
                        s.readable().await.ok();
                        // Readable with nothing read yet means EOF or data;
                        // drain until EOF.
                        let mut sink = vec![0u8; 64 * 1024];
                        loop {
                            match s.read(&mut sink).await {
                                Ok(0) | Err(_) => break,
                                Ok(_) => {}
                            }
                        }
                    })
                    .await;
                    closed.store(true, Ordering::SeqCst);
                }
                // Dropped: closed with unread data, the client side resets.
            });
        }
    });
    addr
}

/// A client that uploads `size` bytes and, like curl, stops sending once
/// the response has come; returns everything it read until EOF.
async fn upload_until_answered(addr: SocketAddr, size: usize) -> Vec<u8> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut rd, mut wr) = tcp.into_split();
    let answered = Arc::new(AtomicBool::new(false));
    let seen = answered.clone();
    let writer = tokio::spawn(async move {
        let head = format!("POST /up HTTP/1.1\r\nhost: a\r\ncontent-length: {size}\r\n\r\n");
        if wr.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        let chunk = vec![b'x'; 64 * 1024];
        let mut sent = 0;
        while sent < size && !seen.load(Ordering::SeqCst) {
            if wr.write_all(&chunk).await.is_err() {
                return;
            }
            sent += chunk.len();
        }
        // Keep the write side open until the gateway closes: a client
        // that answered early must see EOF, not a reset.
        tokio::time::sleep(Duration::from_secs(10)).await;
        drop(wr);
    });
    let mut out = Vec::new();
    let mut b = vec![0u8; 16 * 1024];
    loop {
        match tokio::time::timeout(Duration::from_secs(15), rd.read(&mut b)).await {
            Ok(Ok(0)) => break,
            Ok(Ok(n)) => {
                out.extend_from_slice(&b[..n]);
                if out.windows(4).any(|w| w == b"\r\n\r\n") {
                    answered.store(true, Ordering::SeqCst);
                }
            }
            Ok(Err(e)) => {
                out.extend_from_slice(format!("\n<read error: {e}>").as_bytes());
                break;
            }
            Err(_) => {
                out.extend_from_slice(b"\n<no EOF within 15 s>");
                break;
            }
        }
    }
    writer.abort();
    out
}

/// A large HTTP/1.1 upload to an upstream that answers before reading it
/// all: the client gets the upstream's answer every time (not a broken
/// pipe, not a 502), the connection then closes cleanly, and the rest of
/// the body is not sent on.
#[tokio::test]
async fn an_early_answer_to_a_large_upload_reaches_the_client_every_time() {
    let closed = Arc::new(AtomicBool::new(false));
    let resets = early_answerer(256 * 1024, false, closed.clone()).await;
    let holds = early_answerer(256 * 1024, true, closed.clone()).await;
    let dir = TempDir::new("early");
    let yaml = format!(
        r#"
listeners: [{{name: main, address: "127.0.0.1:0"}}]
upstreams:
  resets: {{url: "http://{resets}"}}
  holds: {{url: "http://{holds}"}}
access_log: {{path: access.log}}
limits: {{max_request_body_bytes: 0}}
apis:
  - {{name: resets, path: /, upstream: resets}}
  - {{name: holds, path: /, upstream: holds, hosts: [holds.test]}}
"#
    );
    let gw = Gw::start(dir, &yaml).await;
    let addr = gw.addr("main");
    const ROUNDS: usize = 12;
    for round in 0..ROUNDS {
        let got = upload_until_answered(addr, 64 << 20).await;
        let (responses, rest) = raw::parse(&got);
        assert_eq!(
            responses.len(),
            1,
            "round {round}: {}",
            String::from_utf8_lossy(&got)
        );
        let r = &responses[0];
        assert_eq!(
            r.status,
            413,
            "round {round}: {}",
            String::from_utf8_lossy(&got)
        );
        assert_eq!(&r.body[..], b"too big!");
        assert_eq!(r.header("connection"), Some("close"), "round {round}");
        assert!(
            rest.is_empty(),
            "round {round}: then {}",
            String::from_utf8_lossy(&rest)
        );
    }

    // An upstream that answers and then just stops reading: the answer
    // still comes, and the gateway closes that upstream connection once it
    // has delivered it.
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut rd, mut wr) = tcp.into_split();
    wr.write_all(b"POST /up HTTP/1.1\r\nhost: holds.test\r\ncontent-length: 67108864\r\n\r\n")
        .await
        .unwrap();
    let pump = tokio::spawn(async move {
        let chunk = vec![b'y'; 64 * 1024];
        for _ in 0..64 {
            if wr.write_all(&chunk).await.is_err() {
                break;
            }
        }
        tokio::time::sleep(Duration::from_secs(10)).await;
    });
    let mut got = Vec::new();
    let mut b = vec![0u8; 4096];
    while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(10), rd.read(&mut b)).await {
        if n == 0 {
            break;
        }
        got.extend_from_slice(&b[..n]);
    }
    pump.abort();
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.ends_with("too big!"), "{text}");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !closed.load(Ordering::SeqCst) && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        closed.load(Ordering::SeqCst),
        "the gateway closes the upstream connection it abandoned"
    );

    let lines = access_lines(&gw.dir.path().join("access.log"), ROUNDS + 1).await;
    assert_eq!(lines.len(), ROUNDS + 1, "{lines:?}");
    for l in &lines {
        assert_eq!(l["status"], 413, "{l}");
        assert!(
            l.get("fault_code").is_none(),
            "the upstream's answer, not a fault: {l}"
        );
        let read = l["request_bytes"].as_u64().unwrap();
        assert!(read < 64 << 20, "the body was not all read: {l}");
    }
}

/// The gateway refuses a POST itself (no route) without reading its large
/// body: the client reads the 404 instead of a reset.
#[tokio::test]
async fn a_fault_before_a_large_body_is_read_reaches_the_client() {
    let dir = TempDir::new("early-fault");
    let yaml = r#"
listeners: [{name: main, address: "127.0.0.1:0"}]
upstreams: {app: {url: "builtin:echo"}}
limits: {max_request_body_bytes: 0}
apis: [{name: app, path: /api, upstream: app}]
"#;
    let gw = Gw::start(dir, yaml).await;
    for round in 0..8 {
        let got = upload_until_answered(gw.addr("main"), 64 << 20).await;
        let (responses, _) = raw::parse(&got);
        assert_eq!(
            responses.len(),
            1,
            "round {round}: {}",
            String::from_utf8_lossy(&got)
        );
        assert_eq!(responses[0].status, 404);
        assert_eq!(responses[0].header("connection"), Some("close"));
    }
    // A small body is drained instead: the connection stays usable.
    let c = Client::plain(gw.addr("main"));
    let mut conn = c.connect().await;
    for _ in 0..3 {
        let r = conn
            .request("POST", &c.authority(), "/nowhere", &[], b"small")
            .await;
        assert_eq!(r.status, 404);
    }
    let r = conn
        .request("POST", &c.authority(), "/api", &[], b"small")
        .await;
    assert_eq!(r.status, 200);
}

/// Connect errors name the upstream, the address and the port.
#[tokio::test]
async fn upstream_connect_errors_name_the_address_they_tried() {
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = TempDir::new("connect-errors");
    let yaml = format!(
        r#"
listeners: [{{name: main, address: "127.0.0.1:0"}}]
upstreams:
  refused: {{url: "http://127.0.0.1:{closed_port}"}}
  nowhere: {{url: "http://no-such-host.invalid:8080"}}
admin: {{address: "127.0.0.1:0", key: admin-key, trace_key: trace-key}}
named_values:
  admin-key: {{value: "an-admin-key", secret: true}}
  trace-key: {{value: "k", secret: true}}
apis:
  - {{name: refused, path: /refused, upstream: refused}}
  - {{name: nowhere, path: /nowhere, upstream: nowhere}}
"#
    );
    let gw = Gw::start(dir, &yaml).await;
    let c = Client::plain(gw.addr("main"));
    let trace_of = |r: &gatehouse_tests::client::Reply| {
        r.header("x-gatehouse-trace-id")
            .expect("traced")
            .to_string()
    };
    let r = c.get("/refused", &[("x-gatehouse-trace", "k")]).await;
    r.assert_fault(503, "upstream.refused");
    let trace = admin_get(gw.admin(), &format!("/traces/{}", trace_of(&r))).await;
    assert!(
        trace.contains(&format!(
            "cannot connect to upstream `refused` at 127.0.0.1:{closed_port}"
        )),
        "{trace}"
    );
    let r = c.get("/nowhere", &[("x-gatehouse-trace", "k")]).await;
    r.assert_fault(502, "upstream.unreachable");
    let trace = admin_get(gw.admin(), &format!("/traces/{}", trace_of(&r))).await;
    assert!(
        trace.contains("cannot resolve the host `no-such-host.invalid` of upstream `nowhere`"),
        "{trace}"
    );
}

async fn admin_get(addr: SocketAddr, path: &str) -> String {
    let r = Client::plain(addr)
        .get(path, &[("authorization", "Bearer an-admin-key")])
        .await;
    assert_eq!(
        r.status,
        200,
        "{path}: {}",
        String::from_utf8_lossy(&r.body)
    );
    String::from_utf8_lossy(&r.body).into_owned()
}

/// A client that leaves in the middle of a response is logged as such,
/// with the bytes it was sent.
#[tokio::test]
async fn an_aborted_response_is_logged_as_aborted() {
    let handler: upstream::Handler = Arc::new(|_req| {
        Box::pin(async move {
            // 64 MiB, streamed: the client leaves long before the end.
            let chunks = futures_util::stream::iter((0..1024).map(|_| {
                Ok::<_, std::io::Error>(http_body::Frame::data(bytes::Bytes::from(vec![
                    b'z';
                    64 * 1024
                ])))
            }));
            http::Response::new(http_body_util::BodyExt::boxed(
                http_body_util::StreamBody::new(chunks),
            ))
        })
    });
    let up = upstream::start(handler).await;
    let dir = TempDir::new("aborted");
    let yaml = format!(
        r#"
listeners: [{{name: main, address: "127.0.0.1:0"}}]
upstreams: {{app: {{url: "http://{}"}}}}
access_log: {{path: access.log}}
apis: [{{name: big, path: /, upstream: app}}]
"#,
        up.addr
    );
    let gw = Gw::start(dir, &yaml).await;
    let mut tcp = TcpStream::connect(gw.addr("main")).await.unwrap();
    tcp.write_all(b"GET /big HTTP/1.1\r\nhost: a\r\n\r\n")
        .await
        .unwrap();
    let mut b = vec![0u8; 256 * 1024];
    let _ = tcp.read(&mut b).await.unwrap();
    drop(tcp);
    let lines = access_lines(&gw.dir.path().join("access.log"), 1).await;
    let l = lines.first().expect("a line");
    assert_eq!(l["status"], 200, "{l}");
    assert_eq!(l["complete"], false, "{l}");
    assert_eq!(l["outcome"], "client_aborted", "{l}");
    assert!(l["response_bytes"].as_u64().unwrap() < 64 << 20, "{l}");
}
