//! Upstream connections: HTTP/2 to upstreams (h2 over TLS, h2c) with
//! concurrent requests sharing a connection and bodies streaming both
//! ways; several addresses in turn, with passive ejection and recovery;
//! the pool's limits (`max_connections`, `max_connection_lifetime_ms`);
//! a retry only for idempotent requests that sent nothing. Real upstream
//! servers, started by the tests.

use std::sync::Arc;
use std::time::Duration;

use gatehouse_tests::{upstream, Client, Gw, Pki, TempDir, WORKERS};
use http::Response;

/// A handler that waits `ms` before answering with the echo.
fn slow_echo(ms: u64) -> upstream::Handler {
    let echo = upstream::echo_handler();
    Arc::new(move |req| {
        let echo = echo.clone();
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            echo(req).await
        })
    })
}

/// `protocol: http2`: h2 over TLS and h2c on `http://`. Sixteen requests
/// at once, each held 300 ms by the upstream, share one connection per
/// worker thread; a 1 MiB upload and a 1 MiB download stream through.
/// `auto` picks h2 by ALPN; `http2` against an HTTP/1.1-only TLS upstream
/// is refused with its own code.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn http2_upstreams_multiplex_and_stream() {
    let dir = TempDir::new("up-h2");
    let ca = Pki::new("H2 CA");
    let server = ca.server(&dir, "server", &["h2.internal"]);
    ca.write_ca(&dir, "ca.crt");
    let big: upstream::Handler = Arc::new(|req| {
        Box::pin(async move {
            if req.uri().path().ends_with("/big") {
                let chunks = futures_util::stream::iter((0..16).map(|_| {
                    Ok::<_, std::io::Error>(http_body::Frame::data(bytes::Bytes::from(vec![
                        b'x';
                        64 * 1024
                    ])))
                }));
                return Response::new(http_body_util::BodyExt::boxed(
                    http_body_util::StreamBody::new(chunks),
                ));
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
            upstream::echo_handler()(req).await
        })
    });
    let tls_up = upstream::start_h2(
        big.clone(),
        Some(upstream::tls_config(&server.cert, &server.key)),
    )
    .await;
    let h2c_up = upstream::start_h2(big, None).await;
    let h1_up = upstream::start_with(
        upstream::echo_handler(),
        Some(upstream::tls_config(&server.cert, &server.key)),
    )
    .await;
    let yaml = format!(
        r#"
listeners: [{{name: plain, address: "127.0.0.1:0"}}]
upstreams:
  h2: {{url: "https://{t}", protocol: http2, tls: {{server_name: h2.internal, truststore: ca.crt}}}}
  auto: {{url: "https://{t}", protocol: auto, tls: {{server_name: h2.internal, truststore: ca.crt}}}}
  h2c: {{url: "http://{c}", protocol: http2}}
  not-h2: {{url: "https://{h}", protocol: http2, tls: {{server_name: h2.internal, truststore: ca.crt}}}}
apis:
  - {{name: h2, path: /h2, upstream: h2}}
  - {{name: auto, path: /auto, upstream: auto}}
  - {{name: h2c, path: /h2c, upstream: h2c}}
  - {{name: not-h2, path: /not-h2, upstream: not-h2}}
"#,
        t = tls_up.addr,
        c = h2c_up.addr,
        h = h1_up.addr,
    );
    let gw = Arc::new(Gw::start(dir, &yaml).await);
    for (prefix, up) in [("/h2c", &h2c_up), ("/h2", &tls_up)] {
        let before = up.connections();
        let mut tasks = Vec::new();
        for i in 0..16 {
            let addr = gw.addr("plain");
            let path = format!("{prefix}/r{i}");
            tasks.push(tokio::spawn(async move {
                Client::plain(addr).get(&path, &[]).await
            }));
        }
        let started = std::time::Instant::now();
        for t in tasks {
            let r = t.await.unwrap();
            assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
            assert_eq!(r.json()["version"], "HTTP/2.0");
        }
        // Concurrent, not one after the other (16 x 300 ms).
        assert!(started.elapsed() < Duration::from_secs(4));
        let opened = up.connections() - before;
        assert!(
            (1..=WORKERS).contains(&opened),
            "{prefix}: 16 concurrent requests opened {opened} connections; one per worker at most"
        );
        // Streaming both ways.
        let body = vec![b'u'; 1 << 20];
        let r = Client::plain(gw.addr("plain"))
            .request("POST", &format!("{prefix}/up"), &[], &body)
            .await;
        assert_eq!(r.status, 200);
        assert_eq!(r.json()["body_bytes"], 1 << 20);
        let r = Client::plain(gw.addr("plain"))
            .get(&format!("{prefix}/big"), &[])
            .await;
        assert_eq!(r.status, 200);
        assert_eq!(r.body.len(), 1 << 20);
    }
    let r = Client::plain(gw.addr("plain")).get("/auto/x", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["version"], "HTTP/2.0", "ALPN chose h2");
    Client::plain(gw.addr("plain"))
        .get("/not-h2/x", &[])
        .await
        .assert_fault(502, "upstream.no-http2");
}

/// Two addresses, one down. A GET that meets the dead one first goes on
/// to the live one (nothing was sent); a POST does not (503). After
/// `eject_after_connect_failures` failures in a row the dead address is
/// left out: every request succeeds. When it comes back, it is used again
/// once `eject_for_ms` has passed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_address_is_ejected_and_recovers() {
    let live = upstream::echo().await;
    let dead_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let yaml = format!(
        r#"
listeners: [{{name: plain, address: "127.0.0.1:0"}}]
upstreams:
  pair:
    url: "http://app.internal"
    addresses: ["127.0.0.1:{dead_port}", "{live}"]
    max_idle_connections: 0
    eject_after_connect_failures: 2
    eject_for_ms: 1500
apis: [{{name: pair, path: /, upstream: pair}}]
"#,
        live = live.addr
    );
    let gw = Gw::start(TempDir::new("up-eject"), &yaml).await;
    let c = Client::plain(gw.addr("plain"));
    // GETs all succeed: one that meets the dead address moves on.
    for _ in 0..4 {
        let r = c.get("/g", &[]).await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    }
    // The dead address has failed twice by now: it is left out, so POSTs
    // (never retried) all reach the live one.
    for _ in 0..6 {
        let r = c.request("POST", "/p", &[], b"x").await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    }
    // It comes back; after the cool-down it gets requests again.
    let back = upstream::start_on(
        std::net::SocketAddr::from(([127, 0, 0, 1], dead_port)),
        upstream::echo_handler(),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1700)).await;
    for _ in 0..6 {
        let r = c.request("POST", "/p", &[], b"x").await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    }
    assert!(
        back.requests() >= 2,
        "the recovered address serves again: {}",
        back.requests()
    );
}

/// A POST to an address that refuses is not sent elsewhere: it gets
/// `503 upstream.refused`.
#[tokio::test]
async fn a_post_is_not_retried_on_another_address() {
    let live = upstream::echo().await;
    let dead_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let yaml = format!(
        r#"
listeners: [{{name: plain, address: "127.0.0.1:0"}}]
upstreams:
  pair:
    url: "http://app.internal"
    addresses: ["127.0.0.1:{dead_port}", "{live}"]
    max_idle_connections: 0
    eject_after_connect_failures: 0
apis: [{{name: pair, path: /, upstream: pair}}]
"#,
        live = live.addr
    );
    let gw = Gw::start(TempDir::new("up-noretry"), &yaml).await;
    let c = Client::plain(gw.addr("plain"));
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let r = c.request("POST", "/p", &[], b"x").await;
        statuses.push(r.status);
    }
    // In turn: half go to the dead address and are refused, not retried.
    assert_eq!(
        statuses.iter().filter(|s| **s == 503).count(),
        2,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        2,
        "{statuses:?}"
    );
    assert_eq!(live.requests(), 2);
}

/// `max_connections: 1`: while one request holds the only connection, a
/// second waits up to the connect timeout and gets `503
/// upstream.pool-exhausted`. `max_connection_lifetime_ms`: an old pooled
/// connection is not reused; `idle_timeout_ms`: nor is one that idled
/// too long.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_limits_hold() {
    let slow = upstream::start(slow_echo(800)).await;
    let quick = upstream::echo().await;
    let idle = upstream::echo().await;
    let yaml = format!(
        r#"
listeners: [{{name: plain, address: "127.0.0.1:0"}}]
upstreams:
  one: {{url: "http://{slow}", max_connections: 1, connect_timeout_ms: 200}}
  aging: {{url: "http://{quick}", max_connection_lifetime_ms: 200, idle_timeout_ms: 60000}}
  idling: {{url: "http://{idle}", idle_timeout_ms: 200}}
apis:
  - {{name: one, path: /one, upstream: one}}
  - {{name: aging, path: /aging, upstream: aging}}
  - {{name: idling, path: /idling, upstream: idling}}
"#,
        slow = slow.addr,
        quick = quick.addr,
        idle = idle.addr
    );
    let gw = Gw::start(TempDir::new("up-limits"), &yaml).await;
    let addr = gw.addr("plain");
    let first = tokio::spawn(async move { Client::plain(addr).get("/one/a", &[]).await });
    slow.wait_for_requests(1).await;
    let r = Client::plain(addr).get("/one/b", &[]).await;
    let f = r.assert_fault(503, "upstream.pool-exhausted");
    assert_eq!(f["detail"], "upstream `one`: every connection is busy");
    assert_eq!(first.await.unwrap().status, 200);
    assert_eq!(slow.connections(), 1);

    // Lifetime: on one client connection (one worker), the pooled
    // upstream connection is reused while young, not after.
    let c = Client::plain(addr);
    let mut conn = c.connect().await;
    let authority = c.authority();
    for path in ["/aging/1", "/aging/2"] {
        let r = conn.request("GET", &authority, path, &[], b"").await;
        assert_eq!(r.status, 200);
    }
    assert_eq!(quick.connections(), 1, "a young connection is reused");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = conn.request("GET", &authority, "/aging/3", &[], b"").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        quick.connections(),
        2,
        "a connection older than max_connection_lifetime_ms was reused"
    );

    // Idle timeout: reused while busy, not after idling past it (the
    // lifetime is unlimited here).
    for path in ["/idling/1", "/idling/2"] {
        let r = conn.request("GET", &authority, path, &[], b"").await;
        assert_eq!(r.status, 200);
    }
    assert_eq!(idle.connections(), 1, "reused within idle_timeout_ms");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = conn.request("GET", &authority, "/idling/3", &[], b"").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        idle.connections(),
        2,
        "a connection idle past idle_timeout_ms was reused"
    );
    drop(conn);
}
