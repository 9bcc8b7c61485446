//! Attack suite: request smuggling and response desync.
//!
//! Each case sends a request whose framing is ambiguous, with a second
//! request (`GET /smuggled`) hidden where a parser that disagrees with the
//! gateway's would find it, and asserts that the upstream never sees it as a
//! request of its own. The gateway either refuses the request (`400`) or
//! frames it one way only, and re-frames it for the upstream itself.
//!
//! References: RFC 9112 §6.1 and §6.3 (message body length); PortSwigger,
//! "HTTP Desync Attacks" (J. Kettle, 2019): CL.TE, TE.CL, TE.TE;
//! CVE-2019-16785 and CVE-2019-16786 (Waitress: bare LF, TE variants);
//! CVE-2023-25725 (HAProxy: header parsing desync); CVE-2022-32215 (Node.js
//! llhttp: obs-fold / multi-line Transfer-Encoding).

use std::time::Duration;

use gatehouse_tests::{raw, upstream, Gw, TempDir};

async fn gateway(up: std::net::SocketAddr, extra: &str) -> Gw {
    let yaml = format!(
        "listeners: [{{name: plain, address: \"127.0.0.1:0\"}}]\nupstreams: {{app: {{url: \"http://{up}\"}}}}\napis:\n  - name: app\n    path: /\n    upstream: app\n{extra}\n"
    );
    Gw::start(TempDir::new("smuggling"), &yaml).await
}

const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n";

/// Sends `request`, then a follow-up on the same connection, and checks the
/// invariant: `/smuggled` never reaches the upstream. Returns the statuses.
async fn attempt(gw: &Gw, up: &upstream::Upstream, request: String) -> Vec<u16> {
    let follow = "GET /follow HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    let bytes = raw::exchange(
        gw.addr("plain"),
        format!("{request}{follow}").as_bytes(),
        Duration::from_millis(500),
    )
    .await;
    // Give a smuggled request time to arrive, if one were on its way.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let seen = up.seen();
    assert!(
        !seen.iter().any(|s| s.contains("/smuggled")),
        "a smuggled request reached the upstream: {seen:?}\nrequest: {request:?}"
    );
    let (responses, _) = raw::parse(&bytes);
    responses.iter().map(|r| r.status).collect()
}

#[tokio::test]
async fn content_length_with_transfer_encoding_is_framed_by_chunking_and_closes() {
    // CL.TE: a front end that believes Content-Length forwards the whole
    // thing; a back end that believes chunked sees `GET /smuggled`. The
    // gateway reads it as chunked only (RFC 9112 §6.3: Transfer-Encoding
    // overrides), re-frames it for the upstream, and closes the
    // connection after the response, so nothing that follows is read.
    let up = upstream::echo().await;
    let gw = gateway(up.addr, "").await;
    let body = format!("0\r\n\r\n{SMUGGLED}");
    let req = format!(
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n{body}",
        body.len()
    );
    let statuses = attempt(&gw, &up, req).await;
    assert!(
        statuses == [200] || statuses == [400],
        "one answer, then the connection closes: {statuses:?}"
    );
    assert!(up.seen().len() <= 1, "{:?}", up.seen());
}

#[tokio::test]
async fn duplicate_content_lengths_are_refused() {
    let up = upstream::echo().await;
    let gw = gateway(up.addr, "").await;
    let req = format!(
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nContent-Length: {}\r\n\r\n{SMUGGLED}",
        SMUGGLED.len()
    );
    let statuses = attempt(&gw, &up, req).await;
    assert_eq!(statuses.first(), Some(&400), "{statuses:?}");
}

#[tokio::test]
async fn transfer_encoding_variants_never_smuggle() {
    // TE.TE: variants one parser accepts as chunked and another ignores.
    let up = upstream::echo().await;
    let gw = gateway(up.addr, "").await;
    let chunked_body = format!("0\r\n\r\n{SMUGGLED}");
    for te in [
        "Transfer-Encoding: xchunked",
        "Transfer-Encoding: chunked, identity",
        "Transfer-Encoding: identity, chunked",
        "Transfer-Encoding: chunked\r\nTransfer-Encoding: x",
        "Transfer-Encoding:\tchunked",
        "Transfer-Encoding : chunked",
        "Transfer-Encoding: CHUNKED",
        " Transfer-Encoding: chunked",
        "Transfer-Encoding: gzip, chunked",
    ] {
        let req = format!(
            "POST / HTTP/1.1\r\nHost: a\r\n{te}\r\nContent-Length: 3\r\n\r\n{chunked_body}"
        );
        let statuses = attempt(&gw, &up, req).await;
        // Refused, or framed one way only: never a 2xx for the smuggled
        // part (checked in `attempt`), and never a hang.
        assert!(!statuses.is_empty(), "no answer to {te:?}");
    }
}

#[tokio::test]
async fn obsolete_line_folding_is_refused() {
    let up = upstream::echo().await;
    let gw = gateway(up.addr, "").await;
    let req = format!(
        "POST / HTTP/1.1\r\nHost: a\r\nX-A: a\r\n Transfer-Encoding: chunked\r\nContent-Length: {}\r\n\r\n0\r\n\r\n{SMUGGLED}",
        5 + SMUGGLED.len()
    );
    let statuses = attempt(&gw, &up, req).await;
    assert_eq!(statuses.first(), Some(&400), "{statuses:?}");
}

#[tokio::test]
async fn bare_line_feeds_are_framed_once() {
    // A request written with bare LF is either refused or read as the one
    // request it is; what goes upstream is framed by the gateway (CRLF).
    let up = upstream::echo().await;
    let gw = gateway(up.addr, "").await;
    let req = format!(
        "POST / HTTP/1.1\nHost: a\nContent-Length: {}\n\n{SMUGGLED}",
        SMUGGLED.len()
    );
    let statuses = attempt(&gw, &up, req).await;
    assert!(
        matches!(statuses.first(), Some(200) | Some(400)),
        "{statuses:?}"
    );
    let seen = up.seen();
    assert!(seen.len() <= 2, "{seen:?}");
}

/// A policy that sets framing headers on the response must not desync the
/// client's connection: with `content-length: 1` kept, the client would
/// read one byte of the first body and take the rest for the second
/// response (the review's finding 4: `pipeline.rs` kept policy-set
/// `Content-Length`).
#[tokio::test]
async fn a_policy_cannot_desync_pipelined_responses() {
    let up = upstream::echo().await;
    let gw = gateway(
        up.addr,
        "    policies:\n      outbound:\n        - set-header: {name: content-length, value: \"1\"}\n        - set-header: {name: transfer-encoding, value: chunked}\n        - set-header: {name: connection, value: close}\n        - set-header: {name: x-policy, value: ran}\n",
    )
    .await;
    let two = "GET /one HTTP/1.1\r\nHost: a\r\n\r\nGET /two HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    let bytes = raw::exchange(gw.addr("plain"), two.as_bytes(), Duration::from_secs(2)).await;
    let (responses, rest) = raw::parse(&bytes);
    assert!(
        rest.is_empty(),
        "bytes left after the responses: {:?}",
        String::from_utf8_lossy(&rest)
    );
    assert_eq!(responses.len(), 2, "{:?}", String::from_utf8_lossy(&bytes));
    for (r, path) in responses.iter().zip(["/one", "/two"]) {
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-policy"), Some("ran"), "the policy ran");
        let echo: serde_json::Value = serde_json::from_slice(&r.body).expect("a whole JSON body");
        assert_eq!(echo["path"], path);
    }
}

/// The same through a policy's own response and its fault: their headers
/// cannot carry framing either.
#[tokio::test]
async fn policy_responses_and_faults_cannot_set_framing_headers() {
    let up = upstream::echo().await;
    let gw = gateway(
        up.addr,
        &format!(
            "    policies:\n      inbound: [misbehave]\ncustom_policies:\n  misbehave: {{wasm: \"{}\"}}\n",
            gatehouse_tests::misbehave_wasm()
        ),
    )
    .await;
    let two = "GET /one HTTP/1.1\r\nHost: a\r\nX-Misbehave: frame-respond\r\n\r\nGET /two HTTP/1.1\r\nHost: a\r\nX-Misbehave: frame-deny\r\n\r\nGET /three HTTP/1.1\r\nHost: a\r\nX-Misbehave: frame-respond\r\nConnection: close\r\n\r\n";
    let bytes = raw::exchange(gw.addr("plain"), two.as_bytes(), Duration::from_secs(2)).await;
    let (responses, rest) = raw::parse(&bytes);
    assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&bytes));
    assert_eq!(responses.len(), 3, "{:?}", String::from_utf8_lossy(&bytes));
    for r in [&responses[0], &responses[2]] {
        assert_eq!(r.status, 200);
        assert_eq!(r.body, b"whole body");
        assert_eq!(r.header("x-from"), Some("policy"));
    }
    let fault = &responses[1];
    assert_eq!(fault.status, 403);
    assert_eq!(fault.header("x-from"), Some("policy"));
    let doc: serde_json::Value =
        serde_json::from_slice(&fault.body).expect("a whole fault document");
    assert_eq!(doc["code"], "policy.misbehave.frame");
    assert!(up.seen().is_empty());
}
