//! Attack suite: HTTP/2 abuse.
//!
//! References: CVE-2023-44487 (HTTP/2 Rapid Reset); CVE-2024-27316 and
//! VU#421644 (HTTP/2 CONTINUATION flood, B. Nowotarski, 2024);
//! CVE-2019-9511..9518 (Netflix's HTTP/2 DoS set: too many streams,
//! settings and ping floods).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gatehouse_tests::{upstream, Client, Gw, TempDir};
use http::Response;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn gateway(up: std::net::SocketAddr, limits: &str) -> Gw {
    let yaml = format!(
        "listeners: [{{name: plain, address: \"127.0.0.1:0\"}}]\nupstreams: {{app: {{url: \"http://{up}\"}}}}\napis: [{{name: app, path: /, upstream: app}}]\nlimits: {{{limits}}}\n"
    );
    Gw::start(TempDir::new("h2"), &yaml).await
}

#[tokio::test]
async fn rapid_reset_is_cut_off() {
    let up = upstream::echo().await;
    let gw = gateway(up.addr, "").await;
    let tcp = tokio::net::TcpStream::connect(gw.addr("plain"))
        .await
        .unwrap();
    let (mut client, conn) = h2::client::handshake(tcp).await.expect("h2 handshake");
    let conn = tokio::spawn(conn);
    let started = Instant::now();
    let mut sent = 0usize;
    // Open and reset streams as fast as possible, bounded in count and
    // time.
    while sent < 20_000 && started.elapsed() < Duration::from_secs(20) {
        client = match client.ready().await {
            Ok(c) => c,
            Err(_) => break,
        };
        let req = http::Request::get("http://gw.test/reset").body(()).unwrap();
        let Ok((resp, mut stream)) = client.send_request(req, false) else {
            break;
        };
        stream.send_reset(h2::Reason::CANCEL);
        drop(resp);
        sent += 1;
    }
    // The gateway ends the connection (GOAWAY) rather than serve an
    // unbounded number of reset streams.
    let ended = tokio::time::timeout(Duration::from_secs(10), conn).await;
    let reached = up.requests();
    eprintln!("rapid reset: {sent} streams opened and reset, {reached} reached the upstream, connection: {ended:?}");
    assert!(
        sent < 20_000 || matches!(ended, Ok(Ok(Err(_)))),
        "20000 reset streams were accepted on one connection; {reached} reached the upstream"
    );
    assert!(
        reached < sent.max(1),
        "every reset stream reached the upstream ({reached} of {sent})"
    );
    // And the gateway still serves everyone else.
    assert_eq!(
        Client::plain(gw.addr("plain"))
            .get("/after", &[])
            .await
            .status,
        200
    );
}

/// One HTTP/2 frame: length, type, flags, stream id, payload.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

#[tokio::test]
async fn a_continuation_flood_is_cut_off() {
    let up = upstream::echo().await;
    let gw = gateway(up.addr, "").await;
    let tcp = tokio::net::TcpStream::connect(gw.addr("plain"))
        .await
        .unwrap();
    let (mut rd, mut wr) = tcp.into_split();
    let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    hello.extend(frame(0x4, 0, 0, &[])); // SETTINGS
                                         // HEADERS without END_HEADERS: GET http://a/ (HPACK static entries
                                         // and a literal authority).
    hello.extend(frame(0x1, 0x0, 1, &[0x82, 0x86, 0x84, 0x01, 0x01, b'a']));
    wr.write_all(&hello).await.unwrap();
    // Read whatever comes back until the gateway closes.
    let reader = tokio::spawn(async move {
        let mut got = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            match tokio::time::timeout(Duration::from_secs(20), rd.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return got,
                Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            }
        }
    });
    // CONTINUATION frames full of small literal headers, never ending the
    // header block: up to 64 MiB, or until the gateway stops reading.
    let mut block = Vec::new();
    while block.len() < 16_000 {
        // Literal header field without indexing, new name `x-f`, value
        // `0123456789`.
        block.extend_from_slice(&[0x00, 0x03, b'x', b'-', b'f', 0x0a]);
        block.extend_from_slice(b"0123456789");
    }
    let continuation = frame(0x9, 0x0, 1, &block);
    let mut written = 0usize;
    let started = Instant::now();
    while written < 64 * 1024 * 1024 && started.elapsed() < Duration::from_secs(20) {
        match tokio::time::timeout(Duration::from_secs(2), wr.write_all(&continuation)).await {
            Ok(Ok(())) => written += continuation.len(),
            _ => break,
        }
    }
    let got = reader.await.unwrap();
    assert!(
        written < 8 * 1024 * 1024,
        "the gateway kept reading an endless header block: {written} bytes"
    );
    // It said why: a GOAWAY frame (type 7) is among what it sent.
    let mut i = 0;
    let mut goaway = false;
    while i + 9 <= got.len() {
        let len = ((got[i] as usize) << 16) | ((got[i + 1] as usize) << 8) | got[i + 2] as usize;
        if got[i + 3] == 0x7 {
            goaway = true;
        }
        i += 9 + len;
    }
    assert!(goaway || got.is_empty(), "no GOAWAY: {got:?}");
    assert_eq!(up.requests(), 0);
}

#[tokio::test]
async fn streams_beyond_the_limit_wait_for_their_turn() {
    // The upstream holds every request until released, and counts how many
    // it holds at once.
    let holding = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let (h, m) = (holding.clone(), most.clone());
    let slow: upstream::Handler = Arc::new(move |_req| {
        let (h, m) = (h.clone(), m.clone());
        Box::pin(async move {
            let now = h.fetch_add(1, Ordering::SeqCst) + 1;
            m.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(200)).await;
            h.fetch_sub(1, Ordering::SeqCst);
            Response::new(upstream::full("ok"))
        })
    });
    let up = upstream::start(slow).await;
    let gw = gateway(up.addr, "http2_max_concurrent_streams: 5").await;
    let tcp = tokio::net::TcpStream::connect(gw.addr("plain"))
        .await
        .unwrap();
    let (client, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    let mut tasks = Vec::new();
    for i in 0..20 {
        let mut client = client.clone();
        tasks.push(tokio::spawn(async move {
            // Streams opened before the client has the gateway's SETTINGS
            // are refused past the limit (REFUSED_STREAM: never processed,
            // safe to retry); a retry waits for a free stream.
            for _ in 0..50 {
                client = client.ready().await.expect("ready");
                let req = http::Request::get(format!("http://gw.test/s/{i}"))
                    .body(())
                    .unwrap();
                let (resp, _) = client.send_request(req, true).expect("send");
                match resp.await {
                    Ok(r) => return r.status(),
                    Err(e) if e.reason() == Some(h2::Reason::REFUSED_STREAM) => {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Err(e) => panic!("stream {i}: {e}"),
                }
            }
            panic!("stream {i} was refused 50 times")
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    assert!(
        most.load(Ordering::SeqCst) <= 5,
        "{} streams of one connection were in flight at once",
        most.load(Ordering::SeqCst)
    );
    assert_eq!(up.requests(), 20);
}
