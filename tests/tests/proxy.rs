//! The proxy core end to end: TLS, HTTP/1.1 and HTTP/2, routing, streaming,
//! headers, limits, upstream failures.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use gatehouse_tests::{upstream, Client, Gw, Pki, TempDir};
use http::{Request, Response};
use http_body_util::BodyExt;

/// A TLS listener for `test.com`/`*.test.com` and a second host entry for
/// `other.example`, forwarding `/` to `upstream_url`.
async fn tls_gateway(upstream_url: &str, extra: &str) -> (Gw, Pki) {
    let dir = TempDir::new("proxy");
    let pki = Pki::new("Test CA");
    pki.server(&dir, "server", &["test.com", "*.test.com", "127.0.0.1"]);
    pki.server(&dir, "other", &["other.example"]);
    let yaml = format!(
        r#"
listeners:
  - name: tls
    address: 127.0.0.1:0
    tls:
      default_host: test.com
      hosts:
        - names: [test.com, "*.test.com"]
          certificate: server.crt
          key: server.key
        - names: [other.example]
          certificate: other.crt
          key: other.key
upstreams:
  app:
    url: {upstream_url}
    request_timeout_ms: 1500
    connect_timeout_ms: 1000
apis:
  - name: app
    path: /
    upstream: app
{extra}
"#
    );
    (Gw::start(dir, &yaml).await, pki)
}

/// A plain listener that forwards everything to `up`, with `extra` YAML
/// (e.g. a `limits:` line) appended.
async fn plain_gateway(tag: &str, up: std::net::SocketAddr, extra: &str) -> Gw {
    let yaml = format!(
        "listeners: [{{name: plain, address: \"127.0.0.1:0\"}}]\nupstreams: {{app: {{url: \"http://{up}\"}}}}\napis: [{{name: app, path: /, upstream: app}}]\n{extra}\n"
    );
    Gw::start(TempDir::new(tag), &yaml).await
}

#[tokio::test]
async fn http1_over_tls_reaches_the_upstream_with_forwarding_headers() {
    let up = upstream::echo().await;
    let (gw, pki) = tls_gateway(&format!("http://{}", up.addr), "").await;
    let client = Client::tls(gw.addr("tls"), pki.roots(), "api.test.com", false);
    let r = client
        .get(
            "/orders/7?x=1",
            &[
                ("x-forwarded-for", "203.0.113.9"),
                ("connection", "x-drop"),
                ("x-drop", "1"),
                ("te", "trailers"),
            ],
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.version, http::Version::HTTP_11);
    let echo = r.json();
    assert_eq!(echo["path"], "/orders/7");
    assert_eq!(echo["query"], "x=1");
    assert_eq!(
        echo["target"], "/orders/7?x=1",
        "origin-form request target"
    );
    let h = &echo["headers"];
    assert_eq!(
        h["host"][0],
        up.addr.to_string(),
        "the upstream gets its own authority as Host"
    );
    assert_eq!(
        h["x-forwarded-for"][0], "127.0.0.1",
        "an untrusted client's X-Forwarded-For is replaced, not appended to"
    );
    assert_eq!(h["x-forwarded-proto"][0], "https");
    assert_eq!(
        h["x-forwarded-host"][0],
        format!("api.test.com:{}", gw.addr("tls").port())
    );
    assert!(
        h.get("x-drop").is_none(),
        "a header named in Connection must not be forwarded: {h}"
    );
    assert!(h.get("te").is_none());
    // The request id is sent upstream and back to the client.
    let rid = r.header("x-request-id").expect("x-request-id");
    assert_eq!(rid.len(), 16);
    assert_eq!(h["x-request-id"][0], rid);
    // Hop-by-hop headers of the upstream's response do not reach the client.
    assert!(r.header("x-hop").is_none());
    assert!(r.header("connection").is_none() || r.header("connection") == Some("keep-alive"));
    assert_eq!(r.header("server"), Some("test-upstream"));
}

#[tokio::test]
async fn http2_over_tls_with_alpn() {
    let up = upstream::echo().await;
    let (gw, pki) = tls_gateway(&format!("http://{}", up.addr), "").await;
    let client = Client::tls(gw.addr("tls"), pki.roots(), "test.com", true);
    let mut conn = client.connect().await;
    // Several streams on one connection.
    for i in 0..3 {
        let r = conn
            .request(
                "POST",
                &client.authority(),
                &format!("/h2/{i}"),
                &[],
                b"hello",
            )
            .await;
        assert_eq!(r.status, 200);
        assert_eq!(r.version, http::Version::HTTP_2);
        let echo = r.json();
        assert_eq!(echo["path"], format!("/h2/{i}"));
        assert_eq!(echo["body_bytes"], 5);
        assert_eq!(echo["method"], "POST");
    }
}

#[tokio::test]
async fn h2_connection_reuse_for_another_tls_host_is_misdirected() {
    let up = upstream::echo().await;
    let (gw, pki) = tls_gateway(&format!("http://{}", up.addr), "").await;
    let client = Client::tls(gw.addr("tls"), pki.roots(), "test.com", true);
    let mut conn = client.connect().await;
    let port = gw.addr("tls").port();
    let ok = conn
        .request("GET", &format!("a.test.com:{port}"), "/", &[], b"")
        .await;
    assert_eq!(ok.status, 200, "a name of the same TLS host is fine");
    let r = conn
        .request("GET", &format!("other.example:{port}"), "/", &[], b"")
        .await;
    let fault = r.assert_fault(421, "route.misdirected");
    assert!(
        fault["detail"].as_str().unwrap().contains("other.example"),
        "{fault}"
    );
}

#[tokio::test]
async fn sni_selects_the_host_certificate() {
    let up = upstream::echo().await;
    let (gw, pki) = tls_gateway(&format!("http://{}", up.addr), "").await;
    // The client verifies the certificate against the SNI it sends: this
    // only succeeds if the gateway chose the `other.example` certificate.
    let r = Client::tls(gw.addr("tls"), pki.roots(), "other.example", false)
        .get("/", &[])
        .await;
    assert_eq!(r.status, 200);
    // A client that connects by IP address sends no SNI: it gets the
    // default host, and a Host that no TLS host names is left to routing
    // (no 421).
    let r = Client::tls(gw.addr("tls"), pki.roots(), "127.0.0.1", false)
        .get("/", &[])
        .await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn https_upstream_with_its_own_truststore() {
    let dir = TempDir::new("up-tls");
    let up_pki = Pki::new("Upstream CA");
    let issued = up_pki.server(&dir, "orders", &["orders.internal"]);
    let up = upstream::start_with(
        upstream::echo_handler(),
        Some(upstream::tls_config(&issued.cert, &issued.key)),
    )
    .await;
    let ca = up_pki.write_ca(&dir, "orders-ca.crt");
    let yaml = format!(
        r#"
listeners: [{{name: plain, address: "127.0.0.1:0"}}]
upstreams:
  orders:
    url: https://{addr}/base
    tls: {{server_name: orders.internal, truststore: {ca}}}
  untrusted:
    url: https://{addr}
apis:
  - {{name: orders, path: /orders, upstream: orders}}
  - {{name: bad, path: /bad, upstream: untrusted}}
"#,
        addr = up.addr,
        ca = ca.display()
    );
    let gw = Gw::start(dir, &yaml).await;
    let client = Client::plain(gw.addr("plain"));
    let r = client.get("/orders/1", &[]).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["path"], "/base/orders/1");
    // Without the upstream's CA the handshake fails, and the fault says
    // so (the address and the story go to the log and trace only).
    let r = client.get("/bad", &[]).await;
    let fault = r.assert_fault(502, "upstream.tls.untrusted-certificate");
    assert_eq!(
        fault["detail"],
        "upstream `untrusted`: the upstream's certificate is not issued by a CA the gateway trusts for it",
        "{fault}"
    );
}

#[tokio::test]
async fn request_body_streams_to_the_upstream_before_it_is_complete() {
    // The upstream reports (through a channel) when the first bytes arrive.
    // The client sends its second half only after that: a gateway that
    // buffered the whole body would never forward the first half, and the
    // test would time out instead.
    let (first_tx, first_rx) = tokio::sync::mpsc::channel::<()>(1);
    let first_tx = Arc::new(tokio::sync::Mutex::new(Some(first_tx)));
    let handler: upstream::Handler = Arc::new(move |req: Request<hyper::body::Incoming>| {
        let first_tx = first_tx.clone();
        Box::pin(async move {
            let mut body = req.into_body();
            let mut n = 0usize;
            while let Some(Ok(frame)) = body.frame().await {
                if let Some(d) = frame.data_ref() {
                    n += d.len();
                    if let Some(tx) = first_tx.lock().await.take() {
                        let _ = tx.send(()).await;
                    }
                }
            }
            Response::new(upstream::full(format!("{n}")))
        })
    });
    let up = upstream::start(handler).await;
    // 32 MiB is past the default body limit (10 MiB).
    let gw = plain_gateway("stream", up.addr, "limits: {max_request_body_bytes: 0}").await;

    let tcp = tokio::net::TcpStream::connect(gw.addr("plain"))
        .await
        .unwrap();
    let (mut send, conn) =
        hyper::client::conn::http1::handshake::<_, http_body_util::StreamBody<_>>(
            hyper_util::rt::TokioIo::new(tcp),
        )
        .await
        .unwrap();
    tokio::spawn(conn);
    let (tx, rx) =
        tokio::sync::mpsc::channel::<Result<hyper::body::Frame<Bytes>, std::io::Error>>(4);
    let stream =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|f| (f, rx)) });
    let req = Request::post("/upload")
        .header("host", "gw")
        .body(http_body_util::StreamBody::new(stream))
        .unwrap();
    let chunk = Bytes::from(vec![7u8; 1 << 20]);
    let mut first_rx = first_rx;
    let sender = tokio::spawn(async move {
        for _ in 0..8 {
            tx.send(Ok(hyper::body::Frame::data(chunk.clone())))
                .await
                .unwrap();
        }
        // Wait until the upstream has seen bytes, then send 24 MiB more.
        tokio::time::timeout(Duration::from_secs(20), first_rx.recv())
            .await
            .expect("upstream saw the first bytes while the client was still sending")
            .unwrap();
        for _ in 0..24 {
            tx.send(Ok(hyper::body::Frame::data(chunk.clone())))
                .await
                .unwrap();
        }
    });
    let resp = tokio::time::timeout(Duration::from_secs(60), send.send_request(req))
        .await
        .expect("response in time")
        .unwrap();
    sender.await.unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, format!("{}", 32usize << 20));
}

/// The response body streams: the upstream sends its next 32 MiB only
/// after the client has received the first MiB, so a gateway that buffered
/// the body would never deliver it and the test would time out; over
/// HTTP/1.1 and HTTP/2 (TLS), 64 MiB in all.
#[tokio::test]
async fn large_response_body_streams_back() {
    let (got_first_tx, got_first_rx) = tokio::sync::mpsc::channel::<()>(1);
    let got_first_rx = Arc::new(tokio::sync::Mutex::new(got_first_rx));
    let handler: upstream::Handler = Arc::new(move |_req| {
        let gate = got_first_rx.clone();
        Box::pin(async move {
            let (tx, rx) =
                tokio::sync::mpsc::channel::<Result<hyper::body::Frame<Bytes>, std::io::Error>>(2);
            tokio::spawn(async move {
                let mb = Bytes::from(vec![1u8; 1 << 20]);
                let _ = tx.send(Ok(hyper::body::Frame::data(mb.clone()))).await;
                // Hold the rest until the client has the first MiB; if it
                // never gets it (a buffering gateway), the body ends short
                // and the length check fails.
                if tokio::time::timeout(Duration::from_secs(20), gate.lock().await.recv())
                    .await
                    .is_err()
                {
                    return;
                }
                for _ in 0..63 {
                    if tx
                        .send(Ok(hyper::body::Frame::data(mb.clone())))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
            let stream = futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|f| (f, rx))
            });
            Response::new(http_body_util::StreamBody::new(stream).boxed())
        })
    });
    let up = upstream::start(handler).await;
    let (gw, pki) = tls_gateway(&format!("http://{}", up.addr), "").await;
    for h2 in [false, true] {
        let client = Client::tls(gw.addr("tls"), pki.roots(), "test.com", h2);
        let resp = match client.connect().await {
            gatehouse_tests::client::Conn::H1(mut s) => s
                .send_request(
                    Request::get("/big")
                        .header("host", "test.com")
                        .body(http_body_util::Full::new(Bytes::new()))
                        .unwrap(),
                )
                .await
                .unwrap(),
            gatehouse_tests::client::Conn::H2(mut s) => s
                .send_request(
                    Request::get(format!("https://{}/big", client.authority()))
                        .body(http_body_util::Full::new(Bytes::new()))
                        .unwrap(),
                )
                .await
                .unwrap(),
        };
        assert_eq!(resp.status(), 200);
        let mut body = resp.into_body();
        let mut n = 0usize;
        let mut signalled = false;
        while let Some(frame) = tokio::time::timeout(Duration::from_secs(30), body.frame())
            .await
            .expect("the response kept coming")
        {
            if let Some(d) = frame.expect("frame").data_ref() {
                n += d.len();
            }
            if !signalled && n >= 1 << 20 {
                signalled = true;
                got_first_tx.send(()).await.unwrap();
            }
        }
        assert_eq!(n, 64 << 20, "h2: {h2}");
        // The client connection closes (its sender is gone) before the
        // gateway stops, which waits for open connections.
        drop(body);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn oversized_request_heads_get_431() {
    let up = upstream::echo().await;
    let gw = plain_gateway(
        "431",
        up.addr,
        "limits: {max_request_header_bytes: 4096, max_request_headers: 20}",
    )
    .await;
    let client = Client::plain(gw.addr("plain"));
    let big = "x".repeat(5000);
    let r = client.get("/", &[("x-big", &big)]).await;
    let f = r.assert_fault(431, "request.headers-too-large");
    assert!(
        f["detail"].as_str().unwrap().contains("limit is 4096"),
        "{f}"
    );
    let names: Vec<String> = (0..25).map(|i| format!("x-h{i}")).collect();
    let many: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "1")).collect();
    let r = client.get("/", &many).await;
    let f = r.assert_fault(431, "request.headers-too-large");
    assert!(
        f["detail"].as_str().unwrap().contains("the limit is 20"),
        "{f}"
    );
    assert_eq!(client.get("/", &[("x-small", "1")]).await.status, 200);
}

#[tokio::test]
async fn routing_404_405_templates_and_strip_path() {
    let up = upstream::echo().await;
    let dir = TempDir::new("route");
    let yaml = format!(
        r#"
listeners: [{{name: plain, address: "127.0.0.1:0"}}]
upstreams: {{app: {{url: "http://{addr}/v1"}}}}
apis:
  - name: orders
    path: /orders
    upstream: app
    strip_path: true
    operations:
      - {{name: get, method: GET, path: "/orders/{{id}}"}}
      - {{name: files, method: GET, path: "/orders/{{id}}/files/{{*rest}}"}}
  - name: hosted
    hosts: ["*.test.com"]
    path: /orders
    upstream: app
"#,
        addr = up.addr
    );
    let gw = Gw::start(dir, &yaml).await;
    let c = Client::plain(gw.addr("plain"));
    let r = c.get("/orders/42", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json()["path"],
        "/v1/42",
        "prefix stripped, upstream base path added"
    );
    assert_eq!(c.get("/orders/42/files/a/b.txt", &[]).await.status, 200);
    let r = c.request("DELETE", "/orders/42", &[], b"").await;
    r.assert_fault(405, "route.method-not-allowed");
    assert_eq!(r.header("allow"), Some("GET"));
    c.get("/orders/42/x", &[])
        .await
        .assert_fault(404, "route.not-found");
    c.get("/ordersx", &[])
        .await
        .assert_fault(404, "route.not-found");
    c.get("/", &[]).await.assert_fault(404, "route.not-found");
    // A host-specific API wins over the any-host one with the same prefix.
    let mut conn = c.connect().await;
    let r = conn
        .request("DELETE", "a.test.com", "/orders/42", &[], b"")
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json()["path"],
        "/v1/orders/42",
        "no strip on the hosted API"
    );
}

/// A listener that never accepts, with its accept queue filled: a connect
/// to it hangs. Returns its address and what must stay alive.
fn full_backlog_listener() -> (
    std::net::SocketAddr,
    socket2::Socket,
    Vec<std::net::TcpStream>,
) {
    use socket2::{Domain, Socket, Type};
    let l = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    l.bind(
        &"127.0.0.1:0"
            .parse::<std::net::SocketAddr>()
            .unwrap()
            .into(),
    )
    .unwrap();
    // Backlog 0: the queue holds one connection; SYNs past it are dropped.
    l.listen(0).unwrap();
    let addr = l.local_addr().unwrap().as_socket().unwrap();
    let mut held = Vec::new();
    for _ in 0..8 {
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Ok(s) => held.push(s),
            Err(_) => break,
        }
    }
    (addr, l, held)
}

/// A refused connection is 503, a connect that never completes 504 with its
/// own code (not the request timeout), a slow response head 504.
#[tokio::test]
async fn upstream_failures_are_503_and_504_with_their_codes() {
    // A port with nothing listening.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let slow: upstream::Handler = Arc::new(|_req| {
        Box::pin(async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Response::new(upstream::full("late"))
        })
    });
    let slow = upstream::start(slow).await;
    // A listener whose accept queue is full: the kernel drops further
    // SYNs, so a connect neither succeeds nor is refused (a blackhole on
    // loopback).
    let (blackhole, _listener, _held) = full_backlog_listener();
    let dir = TempDir::new("502");
    let yaml = format!(
        r#"
listeners: [{{name: plain, address: "127.0.0.1:0"}}]
upstreams:
  down: {{url: "http://{closed}", connect_timeout_ms: 500}}
  slow: {{url: "http://{slow}", request_timeout_ms: 300}}
  hole: {{url: "http://{blackhole}", connect_timeout_ms: 300, request_timeout_ms: 5000}}
apis:
  - {{name: down, path: /down, upstream: down}}
  - {{name: slow, path: /slow, upstream: slow}}
  - {{name: hole, path: /hole, upstream: hole}}
"#,
        slow = slow.addr
    );
    let gw = Gw::start(dir, &yaml).await;
    let c = Client::plain(gw.addr("plain"));
    // A refused connection is 503: the upstream is there but not serving.
    let f = c
        .get("/down", &[])
        .await
        .assert_fault(503, "upstream.refused");
    assert_eq!(f["detail"], "upstream `down` refused the connection", "{f}");
    let _ = closed;
    let started = std::time::Instant::now();
    let f = c
        .get("/hole", &[])
        .await
        .assert_fault(504, "upstream.connect-timeout");
    assert_eq!(
        f["detail"], "upstream `hole`: no connection within 300 ms",
        "{f}"
    );
    let _ = blackhole;
    // The connect timeout fired, not the 5 s request timeout.
    assert!(started.elapsed() < Duration::from_secs(4), "{f}");
    let f = c
        .get("/slow", &[])
        .await
        .assert_fault(504, "upstream.timeout");
    assert!(
        f["detail"].as_str().unwrap().contains("within 300 ms"),
        "{f}"
    );
}

#[tokio::test]
async fn plain_listener_speaks_h2c_prior_knowledge() {
    let up = upstream::echo().await;
    let gw = plain_gateway("h2c", up.addr, "").await;
    let c = gatehouse_tests::Client {
        addr: gw.addr("plain"),
        tls: None,
        h2: true,
        source: None,
    };
    let r = c.get("/x", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.version, http::Version::HTTP_2);
}

#[tokio::test]
async fn a_slow_request_head_is_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = upstream::echo().await;
    let gw = plain_gateway(
        "slowloris",
        up.addr,
        "limits: {header_read_timeout_ms: 200}",
    )
    .await;
    let mut tcp = tokio::net::TcpStream::connect(gw.addr("plain"))
        .await
        .unwrap();
    // Half a request head, then nothing.
    tcp.write_all(b"GET / HTTP/1.1\r\nhost: gw\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    // The gateway closes the connection: within a bound well below the
    // 10 s default, so an ignored 200 ms setting fails here.
    let read = tokio::time::timeout(Duration::from_secs(3), tcp.read_to_end(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(_))),
        "the connection stayed open past the header read timeout: {read:?}"
    );
    // A connection that sends nothing at all is closed too.
    let mut silent = tokio::net::TcpStream::connect(gw.addr("plain"))
        .await
        .unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(3), silent.read_to_end(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(_))),
        "a silent connection stayed open past the header read timeout: {read:?}"
    );
    // A complete request on a new connection is still served.
    assert_eq!(
        Client::plain(gw.addr("plain")).get("/", &[]).await.status,
        200
    );
}

#[tokio::test]
async fn the_embedded_quickstart_passes_and_refuses() {
    let (mut config, source) =
        gatehouse::config::quickstart().expect("the embedded quickstart parses");
    // Same config, on a free port.
    config.listeners[0].address = "127.0.0.1:0".into();
    config.admin = None;
    let gw = gatehouse::Gateway::start_with(&config, &source, gatehouse::Options { workers: 2 })
        .expect("the quickstart starts");
    let addr = gw.addresses()[0].1;
    let c = Client::plain(addr);
    let ok = c.get("/hello", &[("x-tenant", "acme")]).await;
    assert_eq!(ok.status, 200);
    assert_eq!(ok.header("x-powered-by"), Some("gatehouse"));
    assert_eq!(ok.json()["headers"]["x-gateway-route"], "hello");
    let f = c
        .get("/hello", &[])
        .await
        .assert_fault(400, "policy.check-header.missing");
    assert_eq!(f["detail"], "X-Tenant is required");
    assert_eq!(c.get("/teapot", &[]).await.status, 418);
    gw.shutdown().await;
}

#[tokio::test]
async fn shutdown_lets_requests_in_flight_finish() {
    let slow: upstream::Handler = Arc::new(|req| {
        Box::pin(async move {
            if req.uri().path() != "/idle" {
                tokio::time::sleep(Duration::from_millis(400)).await;
            }
            Response::new(upstream::full("finished"))
        })
    });
    let up = upstream::start(slow).await;
    let mut gw = plain_gateway("drain", up.addr, "").await;
    let addr = gw.addr("plain");
    // An idle keep-alive connection: closed at once by the shutdown.
    let idle_client = Client::plain(addr);
    let mut idle = idle_client.connect().await;
    let r = idle
        .request("GET", &idle_client.authority(), "/idle", &[], b"")
        .await;
    assert_eq!(r.status, 200);
    // An idle HTTP/2 (h2c) connection: told GOAWAY and closed.
    let h2_client = Client {
        addr,
        tls: None,
        h2: true,
        source: None,
    };
    let mut idle_h2 = h2_client.connect().await;
    let r = idle_h2
        .request("GET", &h2_client.authority(), "/idle", &[], b"")
        .await;
    assert_eq!(r.status, 200);
    let in_flight = tokio::spawn(async move { Client::plain(addr).get("/", &[]).await });
    // Shut down once the request waits for the upstream (the upstream saw
    // it: three requests so far, the idle ones and this one).
    up.wait_for_requests(3).await;
    let stopped = std::time::Instant::now();
    gw.shutdown().await;
    let r = in_flight.await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(&r.body[..], b"finished");
    assert!(
        idle.wait_closed().await,
        "an idle keep-alive connection is closed by shutdown"
    );
    assert!(
        idle_h2.wait_closed().await,
        "an idle HTTP/2 connection is closed by shutdown"
    );
    assert!(
        stopped.elapsed() < Duration::from_secs(5),
        "the drain did not wait for the idle connections"
    );
    // And nothing accepts any more.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn shutdown_closes_what_is_still_open_when_the_grace_period_ends() {
    // The upstream never answers /stuck.
    let stuck: upstream::Handler = Arc::new(|_req| {
        Box::pin(async move {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Response::new(upstream::full("never"))
        })
    });
    let up = upstream::start(stuck).await;
    let mut gw = plain_gateway("grace", up.addr, "limits: {shutdown_grace_ms: 300}").await;
    let addr = gw.addr("plain");
    let in_flight = tokio::spawn(async move {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut send, conn) = hyper::client::conn::http1::handshake::<
            _,
            http_body_util::Empty<Bytes>,
        >(hyper_util::rt::TokioIo::new(tcp))
        .await
        .unwrap();
        tokio::spawn(conn);
        let req = http::Request::get("/stuck")
            .header("host", "a")
            .body(http_body_util::Empty::new())
            .unwrap();
        send.send_request(req).await
    });
    up.wait_for_requests(1).await;
    let stopped = std::time::Instant::now();
    gw.shutdown().await;
    let took = stopped.elapsed();
    assert!(
        took >= Duration::from_millis(300),
        "the request in flight was not given its grace period ({took:?})"
    );
    assert!(
        took < Duration::from_secs(10),
        "the shutdown waited past the grace period ({took:?})"
    );
    // The client's connection was closed without a response.
    let r = tokio::time::timeout(Duration::from_secs(10), in_flight)
        .await
        .expect("the client was left hanging")
        .unwrap();
    assert!(r.is_err(), "a response came after all: {r:?}");
}

#[tokio::test]
async fn upstream_connections_are_kept_alive_and_reused() {
    let up = upstream::echo().await;
    let (gw, pki) = tls_gateway(&format!("http://{}", up.addr), "").await;
    let client = Client::tls(gw.addr("tls"), pki.roots(), "test.com", false);
    let mut conn = client.connect().await;
    for i in 0..20 {
        let r = conn
            .request("GET", &client.authority(), &format!("/n/{i}"), &[], b"")
            .await;
        assert_eq!(r.status, 200);
    }
    // Sequential requests from one client connection are served by one
    // worker thread and ride its one pooled upstream connection.
    assert_eq!(
        up.connections(),
        1,
        "upstream connections for 20 sequential requests"
    );
}

/// A request must be routed, checked and forwarded as one and the same
/// path: `/public/../admin` may not skip the admin API's policies.
#[tokio::test]
async fn paths_are_normalised_before_routing_and_forwarding() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = upstream::echo().await;
    let dir = TempDir::new("normalise");
    let yaml = format!(
        r#"
listeners: [{{name: plain, address: "127.0.0.1:0"}}]
upstreams: {{app: {{url: "http://{}"}}}}
apis:
  - {{name: public, path: /public, upstream: app}}
  - name: admin
    path: /admin
    upstream: app
    policies:
      inbound:
        - check-header: {{name: x-admin-token}}
"#,
        up.addr
    );
    let gw = Gw::start(dir, &yaml).await;
    let c = Client::plain(gw.addr("plain"));
    for sneaky in [
        "/public/../admin/users",
        "/%61dmin/users",
        "//admin/users",
        "/public/%2e%2e/admin/users",
        "/public/./../admin/users",
    ] {
        c.get(sneaky, &[])
            .await
            .assert_fault(400, "policy.check-header.missing");
    }
    let r = c.get("/admin/./users", &[("x-admin-token", "t")]).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json()["path"],
        "/admin/users",
        "the upstream gets the normalised path"
    );
    let r = c.get("/public/a/../b?q=1", &[]).await;
    assert_eq!(r.json()["target"], "/public/b?q=1");
    c.get("/public/a%2Fb", &[])
        .await
        .assert_fault(400, "request.invalid-path");
    c.request("TRACE", "/public", &[], b"")
        .await
        .assert_fault(501, "request.method-not-supported");

    // HTTP/1.1 without Host is refused; with two Host headers too.
    for head in [
        "GET /public HTTP/1.1\r\nconnection: close\r\n\r\n",
        "GET /public HTTP/1.1\r\nhost: a\r\nhost: b\r\nconnection: close\r\n\r\n",
    ] {
        let mut tcp = tokio::net::TcpStream::connect(gw.addr("plain"))
            .await
            .unwrap();
        tcp.write_all(head.as_bytes()).await.unwrap();
        let mut reply = String::new();
        tokio::time::timeout(Duration::from_secs(10), tcp.read_to_string(&mut reply))
            .await
            .unwrap()
            .unwrap();
        assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
        assert!(reply.contains("request.invalid-host"), "{reply}");
    }
}

#[tokio::test]
async fn a_clients_own_forwarded_host_claim_is_not_passed_on() {
    let up = upstream::echo().await;
    let gw = plain_gateway("xfh", up.addr, "").await;
    let r = Client::plain(gw.addr("plain"))
        .get("/", &[("x-forwarded-host", "evil.example")])
        .await;
    let h = &r.json()["headers"];
    assert_eq!(h["x-forwarded-host"][0], gw.addr("plain").to_string());
    assert_eq!(h["x-forwarded-host"].as_array().unwrap().len(), 1);
}
