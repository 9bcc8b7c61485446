//! Downstream TLS settings the review found documented but untested: a
//! host's `alpn` list, and the handshake timeout.

use std::sync::Arc;
use std::time::{Duration, Instant};

use gatehouse_tests::pki::client_config;
use gatehouse_tests::{Client, Gw, Pki, TempDir};
use rustls::pki_types::ServerName;
use tokio::io::AsyncReadExt;

const ADMIN_KEY: &str = "tls-admin-key";

/// `alpn: [http/1.1]` turns HTTP/2 off for that host: a client offering
/// only `h2` gets no protocol (rustls refuses: no common ALPN), one
/// offering both gets HTTP/1.1; the default host negotiates `h2`.
#[tokio::test]
async fn a_host_s_alpn_list_decides_the_protocol() {
    let dir = TempDir::new("alpn");
    let pki = Pki::new("ALPN CA");
    pki.server(&dir, "server", &["h1.test.com", "both.test.com"]);
    let yaml = r#"
listeners:
  - name: tls
    address: 127.0.0.1:0
    tls:
      hosts:
        - {names: [h1.test.com], certificate: server.crt, key: server.key, alpn: [http/1.1]}
        - {names: [both.test.com], certificate: server.crt, key: server.key}
upstreams: {echo: {url: "builtin:echo"}}
apis: [{name: app, path: /, upstream: echo}]
"#;
    let gw = Gw::start(dir, yaml).await;
    let alpn = |offer: &'static [&'static str], sni: &'static str| {
        let cfg = client_config(pki.roots(), None, offer);
        let addr = gw.addr("tls");
        async move {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let tls = tokio_rustls::TlsConnector::from(cfg)
                .connect(ServerName::try_from(sni).unwrap(), tcp)
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>(
                tls.get_ref()
                    .1
                    .alpn_protocol()
                    .map(|p| String::from_utf8_lossy(p).into_owned()),
            )
        }
    };
    assert_eq!(
        alpn(&["h2", "http/1.1"], "h1.test.com")
            .await
            .unwrap()
            .as_deref(),
        Some("http/1.1")
    );
    assert!(
        alpn(&["h2"], "h1.test.com").await.is_err(),
        "no common protocol"
    );
    assert_eq!(
        alpn(&["h2", "http/1.1"], "both.test.com")
            .await
            .unwrap()
            .as_deref(),
        Some("h2")
    );
}

/// A connection that sends nothing (or stops in the middle of its
/// handshake) is closed after `tls_handshake_timeout_ms`, and counted.
#[tokio::test]
async fn a_stalled_handshake_is_closed_after_the_timeout() {
    let dir = TempDir::new("hs-timeout");
    let pki = Pki::new("Timeout CA");
    pki.server(&dir, "server", &["test.com"]);
    let yaml = format!(
        r#"
listeners:
  - name: tls
    address: 127.0.0.1:0
    tls: {{default_host: test.com, hosts: [{{names: [test.com], certificate: server.crt, key: server.key}}]}}
limits: {{tls_handshake_timeout_ms: 300}}
upstreams: {{echo: {{url: "builtin:echo"}}}}
admin: {{address: "127.0.0.1:0", key: admin-key}}
named_values:
  admin-key: {{value: "{ADMIN_KEY}", secret: true}}
apis: [{{name: app, path: /, upstream: echo}}]
"#
    );
    let gw = Gw::start(dir, &yaml).await;
    let mut tcp = tokio::net::TcpStream::connect(gw.addr("tls"))
        .await
        .unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut buf))
        .await
        .expect("the gateway closes a silent connection")
        .unwrap_or(0);
    assert_eq!(n, 0, "closed without a byte");
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "not before the timeout"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = Client::plain(gw.admin())
            .get(
                "/metrics",
                &[("authorization", &format!("Bearer {ADMIN_KEY}"))],
            )
            .await;
        let m = String::from_utf8_lossy(&r.body).into_owned();
        if m.contains("gatehouse_downstream_tls_handshake_failures_total{listener=\"tls\",reason=\"timeout\"} 1") {
            break;
        }
        assert!(Instant::now() < deadline, "{m}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A normal client is unaffected.
    let cfg = client_config(pki.roots(), None, &["http/1.1"]);
    let tcp = tokio::net::TcpStream::connect(gw.addr("tls"))
        .await
        .unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::clone(&cfg))
        .connect(ServerName::try_from("test.com").unwrap(), tcp)
        .await;
    assert!(tls.is_ok());
}
