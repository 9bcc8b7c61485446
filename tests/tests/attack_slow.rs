//! Attack suite: oversized and slow inputs, and connection limits.
//!
//! References: Slowloris (R. Hansen, 2009) and CVE-2007-6750 (slow
//! headers); slow POST / R-U-Dead-Yet (slow bodies, OWASP); slow read
//! (S. Shekyan, 2012, CVE-2018-1000846-class resource holding); unbounded
//! request bodies (CWE-400, CWE-770); connection exhaustion from one
//! address (CWE-770).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use gatehouse_tests::{raw, upstream, Client, Gw, TempDir};
use http::Response;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn gateway(up: std::net::SocketAddr, limits: &str, upstream_extra: &str) -> Gw {
    let yaml = format!(
        "listeners: [{{name: plain, address: \"127.0.0.1:0\"}}]\nupstreams: {{app: {{url: \"http://{up}\"{upstream_extra}}}}}\napis: [{{name: app, path: /, upstream: app}}]\nlimits: {{{limits}}}\n"
    );
    Gw::start(TempDir::new("slow"), &yaml).await
}

/// An upstream that reads the whole request body and says how long it was.
async fn counting() -> upstream::Upstream {
    let h: upstream::Handler = Arc::new(|req| {
        Box::pin(async move {
            use http_body_util::BodyExt;
            let n = match req.into_body().collect().await {
                Ok(b) => b.to_bytes().len().to_string(),
                Err(e) => format!("error {e}"),
            };
            Response::new(upstream::full(n))
        })
    });
    upstream::start(h).await
}

fn fault_code(r: &raw::RawResponse) -> String {
    serde_json::from_slice::<serde_json::Value>(&r.body)
        .map(|v| v["code"].as_str().unwrap_or("").to_string())
        .unwrap_or_default()
}

#[tokio::test]
async fn bodies_over_the_limit_get_413_whether_or_not_their_length_is_known() {
    let up = counting().await;
    let gw = gateway(up.addr, "max_request_body_bytes: 1000", "").await;
    let addr = gw.addr("plain");
    // Declared too large: refused before anything is read or forwarded.
    let bytes = raw::exchange(
        addr,
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5000\r\nConnection: close\r\n\r\n",
        Duration::from_secs(2),
    )
    .await;
    let (rs, _) = raw::parse(&bytes);
    assert_eq!(rs[0].status, 413);
    assert_eq!(fault_code(&rs[0]), "request.body-too-large");
    assert!(up.seen().is_empty());
    // Chunked, no length: cut when it passes the limit.
    let mut chunked = b"POST /chunked HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
    for _ in 0..5 {
        chunked.extend_from_slice(b"1f4\r\n");
        chunked.extend_from_slice(&[b'x'; 500]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let bytes = raw::exchange(addr, &chunked, Duration::from_secs(2)).await;
    let (rs, _) = raw::parse(&bytes);
    assert_eq!(
        rs.first().map(|r| r.status),
        Some(413),
        "{:?}",
        String::from_utf8_lossy(&bytes)
    );
    assert_eq!(fault_code(&rs[0]), "request.body-too-large");
    // HTTP/2 without a length: the same.
    let h2 = Client {
        addr,
        tls: None,
        h2: true,
        source: None,
    };
    let mut conn = h2.connect().await;
    let r = conn
        .request("POST", &h2.authority(), "/h2", &[], &[b'y'; 4000])
        .await;
    r.assert_fault(413, "request.body-too-large");
    // At the limit: served whole.
    let r = Client::plain(addr)
        .request("POST", "/ok", &[], &[b'z'; 1000])
        .await;
    assert_eq!(&r.body[..], b"1000");
}

#[tokio::test]
async fn a_stalled_request_body_gets_408() {
    let up = counting().await;
    let gw = gateway(up.addr, "request_body_timeout_ms: 300", "").await;
    let mut tcp = tokio::net::TcpStream::connect(gw.addr("plain"))
        .await
        .unwrap();
    tcp.write_all(b"POST /slow HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n0123456789")
        .await
        .unwrap();
    let started = Instant::now();
    let bytes = raw::read_until_quiet(&mut tcp, Duration::from_secs(5)).await;
    let waited = started.elapsed();
    let (rs, _) = raw::parse(&bytes);
    assert_eq!(
        rs.first().map(|r| r.status),
        Some(408),
        "{:?}",
        String::from_utf8_lossy(&bytes)
    );
    assert_eq!(fault_code(&rs[0]), "request.body-timeout");
    assert!(waited >= Duration::from_millis(250), "{waited:?}");
    assert!(waited < Duration::from_secs(5), "{waited:?}");
}

#[tokio::test]
async fn a_slow_reader_is_disconnected() {
    // 64 MiB from the upstream; the client reads nothing for a while.
    let big: upstream::Handler = Arc::new(|_req| {
        Box::pin(async move {
            let chunks = (0..1024).map(|_| {
                Ok::<_, std::io::Error>(http_body::Frame::data(Bytes::from(vec![b'r'; 64 * 1024])))
            });
            let body = http_body_util::StreamBody::new(futures_util::stream::iter(chunks));
            Response::new(http_body_util::BodyExt::boxed(body))
        })
    });
    let up = upstream::start(big).await;
    let gw = gateway(up.addr, "response_write_timeout_ms: 300", "").await;
    let mut tcp = tokio::net::TcpStream::connect(gw.addr("plain"))
        .await
        .unwrap();
    tcp.write_all(b"GET /big HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Now read what is there: the gateway gave up and closed, well before
    // the whole 64 MiB.
    let mut got = 0usize;
    let mut buf = vec![0u8; 256 * 1024];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout(Duration::from_secs(2), tcp.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => got += n,
            Err(_) => {
                panic!("the connection is still open after the write timeout ({got} bytes read)")
            }
        }
        assert!(Instant::now() < deadline);
    }
    assert!(got < 64 * 1024 * 1024, "the whole response was sent: {got}");
}

#[tokio::test]
async fn a_stalled_upstream_body_is_cut_off() {
    let stall: upstream::Handler = Arc::new(|_req| {
        Box::pin(async move {
            let first = futures_util::stream::iter([Ok::<_, std::io::Error>(
                http_body::Frame::data(Bytes::from_static(b"first part")),
            )]);
            let never = futures_util::stream::pending();
            use futures_util::StreamExt;
            let body = http_body_util::StreamBody::new(first.chain(never));
            Response::new(http_body_util::BodyExt::boxed(body))
        })
    });
    let up = upstream::start(stall).await;
    let gw = gateway(up.addr, "", ", body_idle_timeout_ms: 300").await;
    let mut tcp = tokio::net::TcpStream::connect(gw.addr("plain"))
        .await
        .unwrap();
    tcp.write_all(b"GET /stall HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let bytes = raw::read_until_quiet(&mut tcp, Duration::from_secs(5)).await;
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.contains("first part"), "{text}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the response stayed open past the upstream body timeout"
    );
}

#[tokio::test]
async fn connections_over_the_limits_are_closed_at_accept() {
    let up = upstream::echo().await;
    let gw = gateway(up.addr, "max_connections_per_ip: 3", "").await;
    let addr = gw.addr("plain");
    let mut held = Vec::new();
    for _ in 0..3 {
        let c = Client::plain(addr);
        let mut conn = c.connect().await;
        assert_eq!(
            conn.request("GET", &c.authority(), "/", &[], b"")
                .await
                .status,
            200
        );
        held.push(conn);
    }
    // The fourth from the same address is closed without an answer.
    let bytes = raw::exchange(
        addr,
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        Duration::from_secs(2),
    )
    .await;
    assert!(bytes.is_empty(), "{:?}", String::from_utf8_lossy(&bytes));
    // One closes; a new one is served again.
    held.pop();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let bytes = raw::exchange(
            addr,
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            Duration::from_secs(2),
        )
        .await;
        if !bytes.is_empty() {
            assert_eq!(raw::parse(&bytes).0[0].status, 200);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the freed place was not given back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(held);
}

#[tokio::test]
async fn idle_http2_connections_and_old_connections_are_closed_gracefully() {
    let up = upstream::echo().await;
    let gw = gateway(up.addr, "http2_idle_timeout_ms: 300", "").await;
    let h2 = Client {
        addr: gw.addr("plain"),
        tls: None,
        h2: true,
        source: None,
    };
    let mut conn = h2.connect().await;
    assert_eq!(
        conn.request("GET", &h2.authority(), "/", &[], b"")
            .await
            .status,
        200
    );
    let started = Instant::now();
    assert!(
        conn.wait_closed_within(Duration::from_secs(5)).await,
        "an idle HTTP/2 connection stayed open"
    );
    assert!(started.elapsed() >= Duration::from_millis(200));

    let up = upstream::echo().await;
    let gw = gateway(up.addr, "max_connection_age_ms: 500", "").await;
    let c = Client::plain(gw.addr("plain"));
    let mut conn = c.connect().await;
    let started = Instant::now();
    let mut served = 0;
    while !conn.is_closed() && started.elapsed() < Duration::from_secs(5) {
        let r = conn.try_request("GET", &c.authority(), "/", &[], b"").await;
        match r {
            Some(r) => {
                assert_eq!(r.status, 200);
                served += 1;
            }
            None => break,
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let age = started.elapsed();
    assert!(served >= 3, "{served}");
    assert!(
        age >= Duration::from_millis(450) && age < Duration::from_secs(5),
        "{age:?}"
    );
}
