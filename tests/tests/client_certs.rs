//! Downstream TLS: hosts chosen by SNI (exact before wildcard, a default
//! host or the `unrecognized_name` alert), client certificates per host
//! (`off`, `optional`, `required`) verified against the host's truststore
//! and CRLs, no session resumption on hosts that ask for certificates,
//! 421 for a request that SNI selection would have sent to another host,
//! and the truststore lints. Every certificate is made here; the clients
//! are real rustls clients.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use gatehouse_tests::pki::{client_config, ClientSpec, Issued};
use gatehouse_tests::{Client, Gw, Pki, TempDir};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;

const ADMIN_KEY: &str = "certs-admin-key";

/// What one request over a fresh TLS connection gave.
#[derive(Debug)]
struct Got {
    status: u16,
    headers: http::HeaderMap,
    body: String,
    resumed: bool,
    server_cn: String,
}

/// Connects with `cfg` and `sni` (an IP sends none), sends `GET path` with
/// `host`, over HTTP/2 or HTTP/1.1 as ALPN decides. `Err`: the handshake
/// or the exchange failed (with TLS 1.3 a refused client certificate shows
/// up as an alert on the first read).
async fn get(
    addr: SocketAddr,
    cfg: Arc<rustls::ClientConfig>,
    sni: &str,
    host: &str,
    path: &str,
) -> Result<Got, String> {
    get_with(addr, cfg, sni, host, path, &[]).await
}

/// [`get`] with extra request headers.
async fn get_with(
    addr: SocketAddr,
    cfg: Arc<rustls::ClientConfig>,
    sni: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Got, String> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from(sni.to_string()).map_err(|e| e.to_string())?;
    let tls = tokio_rustls::TlsConnector::from(cfg)
        .connect(name, tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let (_, conn) = tls.get_ref();
    let resumed = conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
    let server_cn = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(|c| x509_cn(c.as_ref()))
        .unwrap_or_default();
    let h2 = conn.alpn_protocol() == Some(b"h2");
    let io = TokioIo::new(tls);
    let (parts, body, conn_task) = if h2 {
        let (mut send, c) =
            hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
                .await
                .map_err(|e| format!("h2: {e}"))?;
        let conn_task = tokio::spawn(c);
        let mut req = http::Request::get(format!("https://{host}{path}"));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req
            .body(Full::new(Bytes::new()))
            .map_err(|e| e.to_string())?;
        let resp = send
            .send_request(req)
            .await
            .map_err(|e| format!("h2 request: {e}"))?;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.map_err(|e| format!("body: {e}"))?;
        (parts, body.to_bytes(), conn_task)
    } else {
        let (mut send, c) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| format!("h1: {e}"))?;
        let conn_task = tokio::spawn(c);
        let mut req = http::Request::get(path).header("host", host);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req
            .body(Full::new(Bytes::new()))
            .map_err(|e| e.to_string())?;
        let resp = send
            .send_request(req)
            .await
            .map_err(|e| format!("h1 request: {e}"))?;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.map_err(|e| format!("body: {e}"))?;
        (parts, body.to_bytes(), conn_task)
    };
    // The senders are dropped: the connection closes. Wait for it, so no
    // test leaves one open (a stopping gateway waits for its connections).
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), conn_task).await;
    Ok(Got {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
        resumed,
        server_cn,
    })
}

fn x509_cn(der: &[u8]) -> Option<String> {
    // The CN is the last UTF8String/PrintableString after the CN OID
    // (2.5.4.3) in the subject; a small scan is enough for test certs.
    let oid = [0x06, 0x03, 0x55, 0x04, 0x03];
    let mut found = None;
    let mut i = 0;
    while i + oid.len() + 2 < der.len() {
        if der[i..i + oid.len()] == oid {
            let len = der[i + oid.len() + 1] as usize;
            let start = i + oid.len() + 2;
            if start + len <= der.len() {
                found = Some(String::from_utf8_lossy(&der[start..start + len]).into_owned());
            }
        }
        i += 1;
    }
    found
}

/// The metrics once every line of `want` is in them (a failed handshake
/// is counted just after the client sees the alert), or after 5 s.
async fn metrics_with(gw: &Gw, want: &[String]) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let r = Client::plain(gw.admin())
            .get(
                "/metrics",
                &[("authorization", &format!("Bearer {ADMIN_KEY}"))],
            )
            .await;
        assert_eq!(r.status, 200);
        let text = String::from_utf8_lossy(&r.body).into_owned();
        if want.iter().all(|w| text.contains(w.as_str())) || std::time::Instant::now() > deadline {
            return text;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

fn failures(reason: &str, n: u32) -> String {
    format!("gatehouse_downstream_tls_handshake_failures_total{{listener=\"tls\",reason=\"{reason}\"}} {n}")
}

fn admin_yaml() -> String {
    format!(
        "admin: {{address: \"127.0.0.1:0\", key: admin-key}}\nnamed_values:\n  admin-key: {{value: \"{ADMIN_KEY}\", secret: true}}\n"
    )
}

/// The API7 walkthrough: a CA, a server certificate for `test.com`, a
/// client certificate `CN=CLIENT`; over HTTP/2 with SNI `test.com` to
/// 127.0.0.1. `required`: with the certificate 200, without it the
/// handshake fails. `optional`: requests go on; the policies see whether a
/// certificate came and whether it verified.
#[tokio::test]
async fn the_api7_walkthrough_required_and_optional_over_http2() {
    let dir = TempDir::new("api7");
    let pki = Pki::new("ROOTCA");
    pki.server(&dir, "server", &["test.com", "opt.test.com"]);
    pki.write_ca(&dir, "ca.crt");
    let client = pki.client(&dir, "client", &ClientSpec::new("CLIENT", 1001), "");
    let stranger_ca = Pki::new("Stranger CA");
    let stranger = stranger_ca.client(&dir, "stranger", &ClientSpec::new("STRANGER", 7), "");
    let yaml = format!(
        r#"
listeners:
  - name: tls
    address: 127.0.0.1:0
    tls:
      hosts:
        - names: [test.com]
          certificate: server.crt
          key: server.key
          client_certificate: {{mode: required, truststore: ca.crt}}
        - names: [opt.test.com]
          certificate: server.crt
          key: server.key
          client_certificate: {{mode: optional, truststore: ca.crt}}
upstreams: {{echo: {{url: "builtin:echo"}}}}
{admin}
apis:
  - name: app
    path: /
    upstream: echo
    policies:
      inbound:
        - set-header: {{name: x-client-cn, expression: "client_cert == null ? 'none' : client_cert.common_name"}}
        - set-header: {{name: x-client-verified, expression: "client_cert == null ? 'none' : string(client_cert.verified)"}}
"#,
        admin = admin_yaml()
    );
    let gw = Gw::start(dir, &yaml).await;
    let addr = gw.addr("tls");
    let with = client_config(pki.roots(), Some(&client), &["h2"]);
    let without = client_config(pki.roots(), None, &["h2"]);

    let r = get(addr, with.clone(), "test.com", "test.com", "/orders")
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let echo: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(echo["headers"]["x-client-cn"], "CLIENT");
    assert_eq!(echo["headers"]["x-client-verified"], "true");

    let refused = get(addr, without.clone(), "test.com", "test.com", "/orders").await;
    assert!(
        refused.is_err(),
        "required mode without a certificate: {refused:?}"
    );
    let untrusted = client_config(pki.roots(), Some(&stranger), &["h2"]);
    let refused = get(addr, untrusted.clone(), "test.com", "test.com", "/orders").await;
    assert!(refused.is_err(), "required mode, untrusted CA: {refused:?}");

    // Optional: no certificate, an untrusted one, a good one.
    let r = get(addr, without, "opt.test.com", "opt.test.com", "/")
        .await
        .unwrap();
    let echo: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(echo["headers"]["x-client-cn"], "none");
    let r = get(addr, untrusted, "opt.test.com", "opt.test.com", "/")
        .await
        .unwrap();
    let echo: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(echo["headers"]["x-client-cn"], "STRANGER");
    assert_eq!(
        echo["headers"]["x-client-verified"], "false",
        "an untrusted certificate is not marked verified"
    );
    let r = get(addr, with, "opt.test.com", "opt.test.com", "/")
        .await
        .unwrap();
    let echo: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(echo["headers"]["x-client-verified"], "true");

    let want = [
        failures("no_client_certificate", 1),
        failures("unknown_ca", 1),
    ];
    let m = metrics_with(&gw, &want).await;
    for w in &want {
        assert!(m.contains(w.as_str()), "{w}:\n{m}");
    }
}

/// An exact name beats a wildcard whatever the order of the entries; an
/// SNI no entry names, or none, is refused with `unrecognized_name`
/// unless the listener names a default host.
#[tokio::test]
async fn exact_names_beat_wildcards_and_unknown_names_are_refused() {
    let dir = TempDir::new("sni");
    let pki = Pki::new("SNI CA");
    pki.server(&dir, "wild", &["*.test.com"]);
    pki.server(&dir, "exact", &["api.test.com", "127.0.0.1"]);
    let yaml = format!(
        r#"
listeners:
  - name: wild-first
    address: 127.0.0.1:0
    tls:
      hosts:
        - {{names: ["*.test.com"], certificate: wild.crt, key: wild.key}}
        - {{names: [api.test.com], certificate: exact.crt, key: exact.key}}
  - name: exact-first
    address: 127.0.0.1:0
    tls:
      hosts:
        - {{names: [api.test.com], certificate: exact.crt, key: exact.key}}
        - {{names: ["*.test.com"], certificate: wild.crt, key: wild.key}}
  - name: with-default
    address: 127.0.0.1:0
    tls:
      default_host: api.test.com
      hosts:
        - {{names: ["*.test.com"], certificate: wild.crt, key: wild.key}}
        - {{names: [api.test.com], certificate: exact.crt, key: exact.key}}
upstreams: {{echo: {{url: "builtin:echo"}}}}
{admin}
apis: [{{name: app, path: /, upstream: echo}}]
"#,
        admin = admin_yaml()
    );
    let gw = Gw::start(dir, &yaml).await;
    let cfg = client_config(pki.roots(), None, &["http/1.1"]);
    for l in ["wild-first", "exact-first", "with-default"] {
        let r = get(gw.addr(l), cfg.clone(), "api.test.com", "api.test.com", "/")
            .await
            .unwrap();
        assert_eq!(r.server_cn, "api.test.com", "{l}: the exact entry");
        let r = get(gw.addr(l), cfg.clone(), "x.test.com", "x.test.com", "/")
            .await
            .unwrap();
        assert_eq!(r.server_cn, "*.test.com", "{l}: the wildcard entry");
    }
    for l in ["wild-first", "exact-first"] {
        let e = get(gw.addr(l), cfg.clone(), "nope.example", "nope.example", "/")
            .await
            .unwrap_err();
        assert!(
            e.contains("UnrecognisedName")
                || e.contains("unrecognised")
                || e.contains("UnrecognizedName"),
            "{l}: {e}"
        );
        // No SNI (a client connecting by IP address).
        let e = get(gw.addr(l), cfg.clone(), "127.0.0.1", "127.0.0.1", "/")
            .await
            .unwrap_err();
        assert!(
            e.contains("UnrecognisedName") || e.contains("Unrecognised"),
            "{l}: {e}"
        );
    }
    let r = get(
        gw.addr("with-default"),
        cfg.clone(),
        "127.0.0.1",
        "127.0.0.1",
        "/",
    )
    .await
    .unwrap();
    assert_eq!(
        r.server_cn, "api.test.com",
        "the default host serves no SNI"
    );
    let m = metrics_with(&gw, &["reason=\"unrecognized_name\"} 2".to_string()]).await;
    assert!(m.contains("reason=\"unrecognized_name\"} 2"), "{m}");
}

fn verify_yaml(extra_host_settings: &str, admin: &str) -> String {
    format!(
        r#"
listeners:
  - name: tls
    address: 127.0.0.1:0
    tls:
      hosts:
        - names: [test.com]
          certificate: server.crt
          key: server.key
          client_certificate: {{mode: required, truststore: ca.crt{extra_host_settings}}}
        - names: [open.test.com]
          certificate: server.crt
          key: server.key
upstreams: {{echo: {{url: "builtin:echo"}}}}
{admin}
apis: [{{name: app, path: /, upstream: echo}}]
"#
    )
}

/// Required mode refuses every bad chain with its reason counted, accepts
/// a chain through an intermediate, and follows the CRL (file) in force,
/// also after the CRL is updated while the gateway runs. Hosts that ask
/// for certificates never resume sessions, so a revocation applies to the
/// next connection of a client that had a session.
#[tokio::test]
async fn client_certificates_are_verified_and_revocation_applies_at_once() {
    let dir = TempDir::new("verify");
    let pki = Pki::new("Verify Root");
    pki.server(&dir, "server", &["test.com", "open.test.com"]);
    pki.write_ca(&dir, "ca.crt");
    let inter = pki.intermediate("Verify Intermediate");
    let inter2 = inter.intermediate("Verify Intermediate 2");
    let good = pki.client(&dir, "good", &ClientSpec::new("good", 1), "");
    let via_inter = inter.client(
        &dir,
        "via",
        &ClientSpec::new("via-intermediate", 2),
        &inter.ca_pem,
    );
    let too_deep = inter2.client(
        &dir,
        "deep",
        &ClientSpec::new("too-deep", 3),
        &format!("{}{}", inter2.ca_pem, inter.ca_pem),
    );
    let mut spec = ClientSpec::new("expired", 4);
    spec.not_before = Some((2019, 1, 1));
    spec.not_after = Some((2021, 1, 1));
    let expired = pki.client(&dir, "expired", &spec, "");
    let mut spec = ClientSpec::new("future", 5);
    spec.not_before = Some((2099, 1, 1));
    spec.not_after = Some((2100, 1, 1));
    let future = pki.client(&dir, "future", &spec, "");
    let doomed = pki.client(&dir, "doomed", &ClientSpec::new("doomed", 6), "");
    pki.crl(&dir, "ca.crl", &[], (2099, 1, 1));
    let yaml = verify_yaml(", crls: [ca.crl], max_chain_depth: 3", &admin_yaml());
    let gw = Gw::start(dir, &yaml).await;
    let addr = gw.addr("tls");
    let cfg = |c: &Issued| client_config(pki.roots(), Some(c), &["h2", "http/1.1"]);

    for (c, what) in [
        (&good, "root-issued"),
        (&via_inter, "intermediate-issued"),
        (&doomed, "not revoked yet"),
    ] {
        let r = get(addr, cfg(c), "test.com", "test.com", "/").await;
        assert_eq!(
            r.as_ref().map(|g| g.status).ok(),
            Some(200),
            "{what}: {r:?}"
        );
    }
    for (c, what) in [
        (&expired, "expired"),
        (&future, "not yet valid"),
        (&too_deep, "deeper than 3"),
    ] {
        let r = get(addr, cfg(c), "test.com", "test.com", "/").await;
        assert!(r.is_err(), "{what} was accepted: {r:?}");
    }

    // Sessions: the host without client certificates resumes (so this
    // client does resume when it can); the one that asks never does.
    let doomed_cfg = cfg(&doomed);
    let first = get(
        addr,
        doomed_cfg.clone(),
        "open.test.com",
        "open.test.com",
        "/",
    )
    .await
    .unwrap();
    let second = get(
        addr,
        doomed_cfg.clone(),
        "open.test.com",
        "open.test.com",
        "/",
    )
    .await
    .unwrap();
    assert!(!first.resumed && second.resumed, "the control host resumes");
    let first = get(addr, doomed_cfg.clone(), "test.com", "test.com", "/")
        .await
        .unwrap();
    let second = get(addr, doomed_cfg.clone(), "test.com", "test.com", "/")
        .await
        .unwrap();
    assert!(
        !first.resumed && !second.resumed,
        "a host that asks for certificates never resumes"
    );

    // The CA revokes `doomed`; the new CRL is loaded by a reload.
    pki.crl(&gw.dir, "ca.crl", &[6], (2099, 1, 1));
    gw.gateway().reload().expect("reload");
    let r = get(addr, doomed_cfg.clone(), "test.com", "test.com", "/").await;
    assert!(
        r.is_err(),
        "revoked, with a client holding a session: {r:?}"
    );
    let r = get(addr, cfg(&good), "test.com", "test.com", "/").await;
    assert_eq!(r.map(|g| g.status).ok(), Some(200), "the others still pass");

    let want: Vec<String> = ["expired", "not_yet_valid", "chain_too_deep", "revoked"]
        .iter()
        .map(|r| failures(r, 1))
        .collect();
    let m = metrics_with(&gw, &want).await;
    for w in &want {
        assert!(m.contains(w.as_str()), "{w}:\n{m}");
    }
}

/// A request whose host SNI selection would have given another entry gets
/// 421, over HTTP/1.1 and on a reused HTTP/2 connection, including a
/// wildcard entry that also matches the name (`[admin.corp.test,
/// *.corp.test]`: a connection for `x.corp.test` must not reach
/// `admin.corp.test`, which requires client certificates).
#[tokio::test]
async fn a_request_for_another_tls_host_is_misdirected_even_under_a_wildcard() {
    let dir = TempDir::new("421");
    let pki = Pki::new("421 CA");
    pki.server(&dir, "admin", &["admin.corp.test"]);
    pki.server(&dir, "wild", &["*.corp.test"]);
    pki.write_ca(&dir, "ca.crt");
    let yaml = r#"
listeners:
  - name: tls
    address: 127.0.0.1:0
    tls:
      hosts:
        - names: [admin.corp.test]
          certificate: admin.crt
          key: admin.key
          client_certificate: {mode: required, truststore: ca.crt}
        - {names: ["*.corp.test"], certificate: wild.crt, key: wild.key}
upstreams: {echo: {url: "builtin:echo"}}
apis: [{name: app, path: /, upstream: echo}]
"#;
    let gw = Gw::start(dir, yaml).await;
    for alpn in ["http/1.1", "h2"] {
        let cfg = client_config(pki.roots(), None, &[alpn]);
        let r = get(
            gw.addr("tls"),
            cfg.clone(),
            "x.corp.test",
            "x.corp.test",
            "/",
        )
        .await
        .unwrap();
        assert_eq!(r.status, 200, "{alpn}");
        let r = get(gw.addr("tls"), cfg, "x.corp.test", "admin.corp.test", "/")
            .await
            .unwrap();
        assert_eq!(r.status, 421, "{alpn}: {}", r.body);
        assert!(r.body.contains("route.misdirected"), "{}", r.body);
    }
}

/// The truststore and host lints of `gatehouse check`.
#[tokio::test]
async fn truststore_and_host_problems_are_reported_at_load() {
    let dir = TempDir::new("lints");
    let pki = Pki::new("Lint Root");
    pki.server(&dir, "server", &["test.com"]);
    // A client certificate where a CA belongs.
    let leaf = pki.client(&dir, "leaf", &ClientSpec::new("not-a-ca", 9), "");
    // Two CAs with one subject and different issuers.
    let other_root = Pki::new("Other Root");
    let twin_a = pki.intermediate("Twin CA");
    let twin_b = other_root.intermediate("Twin CA");
    let bundle = format!(
        "{}{}{}{}",
        pki.ca_pem,
        std::fs::read_to_string(&leaf.cert).unwrap(),
        twin_a.ca_pem,
        twin_b.ca_pem
    );
    dir.write("bundle.crt", bundle);
    pki.write_ca(&dir, "root.crt");
    let yaml = r#"
listeners:
  - name: tls
    address: 127.0.0.1:0
    tls:
      default_host: tset.com
      cipher_suites: [TLS13_AES_128_GCM_SHA256, TLS_NULL_WITH_NULL_NULL]
      hosts:
        - names: [test.com, api.test.com]
          certificate: server.crt
          key: server.key
          client_certificate: {mode: required, truststore: bundle.crt}
        - names: [b.test.com]
          certificate: server.crt
          key: server.key
          client_certificate: {mode: optional}
        - names: [c.test.com]
          certificate: server.crt
          key: server.key
          client_certificate:
            mode: required
            truststore: root.crt
            algorithm_floor: {key_types: [ed25519]}
        - names: [d.test.com]
          certificate: server.crt
          key: server.key
          client_certificate:
            mode: required
            truststore: root.crt
            algorithm_floor: {min_rsa_bits: 1024}
upstreams: {echo: {url: "builtin:echo"}}
apis: [{name: app, path: /, upstream: echo}]
"#;
    let errors = Gw::build_errors(&dir, yaml).join("\n");
    for want in [
        "listeners[0].tls.cipher_suites[1]: unknown or unsupported cipher suite `TLS_NULL_WITH_NULL_NULL`",
        "listeners[0].tls.hosts[0].client_certificate.truststore:",
        "certificate #2 (CN=not-a-ca) is not a CA certificate",
        "certificates #3 and #4 share the subject CN=Twin CA but have different issuers (CN=Lint Root and CN=Other Root)",
        "listeners[0].tls.hosts[0].certificate: the certificate in",
        "does not cover `api.test.com` (its names: test.com)",
        "listeners[0].tls.hosts[1].client_certificate.truststore: mode `optional` needs a truststore",
        // A host's own, stricter floor applies to its truststore too.
        "root.crt: certificate #1 (CN=Lint Root) is below the algorithm floor: its key is ECDSA P-256; this host accepts ed25519",
        "listeners[0].tls.hosts[3].client_certificate.algorithm_floor.min_rsa_bits: 1024 is below 2048",
    ] {
        assert!(errors.contains(want), "missing `{want}` in:\n{errors}");
    }
    // Fix the cipher suite: the default host is checked too.
    let yaml = yaml.replace(", TLS_NULL_WITH_NULL_NULL", "");
    let errors = Gw::build_errors(&dir, &yaml).join("\n");
    assert!(
        errors.contains("listeners[0].tls.default_host: `tset.com` is not one of the hosts' names (did you mean `test.com`?)"),
        "{errors}"
    );
}

/// Certificates made by the API7 guide's very `openssl` commands are X.509
/// v1 (no extensions): the server certificate is refused at load with a
/// message that says so and how to make a v3 one; a v1 client certificate
/// is refused in the handshake (`required`, counted as `v1_certificate`)
/// or marked unverified with the same explanation (`optional`, in the
/// trace).
#[tokio::test]
async fn certificates_from_the_api7_openssl_commands_are_explained() {
    let dir = TempDir::new("api7-openssl");
    let script = r#"set -e
openssl genrsa -out ca.key 2048 2>/dev/null && \
openssl req -new -sha256 -key ca.key -out ca.csr -subj "/CN=ROOTCA" && \
openssl x509 -req -days 36500 -sha256 -extensions v3_ca -signkey ca.key -in ca.csr -out ca.crt 2>/dev/null
openssl genrsa -out server.key 2048 2>/dev/null && \
openssl req -new -sha256 -key server.key -out server.csr -subj "/CN=test.com" && \
openssl x509 -req -days 36500 -sha256 -extensions v3_req \
-CA ca.crt -CAkey ca.key -CAserial ca.srl -CAcreateserial \
-in server.csr -out server.crt 2>/dev/null
openssl genrsa -out client.key 2048 2>/dev/null && \
openssl req -new -sha256 -key client.key -out client.csr -subj "/CN=CLIENT" && \
openssl x509 -req -days 36500 -sha256 -extensions v3_req \
-CA ca.crt -CAkey ca.key -CAserial ca.srl -CAcreateserial \
-in client.csr -out client.crt 2>/dev/null
"#;
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(script)
        .current_dir(dir.path())
        .output()
        .expect("bash and openssl (the CI installs openssl)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The guide's server certificate.
    let yaml = r#"
listeners:
  - name: tls
    address: 127.0.0.1:0
    tls: {hosts: [{names: [test.com], certificate: server.crt, key: server.key}]}
upstreams: {echo: {url: "builtin:echo"}}
apis: [{name: app, path: /, upstream: echo}]
"#;
    let errors = Gw::build_errors(&dir, yaml).join("\n");
    assert!(
        errors.contains("is X.509 v1: it has no subjectAltName")
            && errors.contains("-extfile <(printf 'subjectAltName=DNS:test.com')"),
        "{errors}"
    );

    // Its CA as a truststore (a v1 root is a valid trust anchor), and its
    // client certificate, against a v3 server certificate.
    let pki = Pki::new("Server CA");
    pki.server(&dir, "v3", &["test.com", "opt.test.com"]);
    let yaml = format!(
        r#"
listeners:
  - name: tls
    address: 127.0.0.1:0
    tls:
      hosts:
        - names: [test.com]
          certificate: v3.crt
          key: v3.key
          client_certificate: {{mode: required, truststore: ca.crt}}
        - names: [opt.test.com]
          certificate: v3.crt
          key: v3.key
          client_certificate: {{mode: optional, truststore: ca.crt}}
upstreams: {{echo: {{url: "builtin:echo"}}}}
admin: {{address: "127.0.0.1:0", key: admin-key, trace_key: trace-key}}
named_values:
  admin-key: {{value: "{ADMIN_KEY}", secret: true}}
  trace-key: {{value: "api7-trace-key", secret: true}}
apis: [{{name: app, path: /, upstream: echo}}]
"#
    );
    let gw = Gw::start(dir, &yaml).await;
    let client = Issued {
        cert: gw.dir.path().join("client.crt"),
        key: gw.dir.path().join("client.key"),
        der: rustls::pki_types::CertificateDer::from(Vec::new()),
    };
    let cfg = client_config(pki.roots(), Some(&client), &["http/1.1"]);
    let r = get(gw.addr("tls"), cfg.clone(), "test.com", "test.com", "/").await;
    assert!(
        r.is_err(),
        "a v1 client certificate in required mode: {r:?}"
    );
    let m = metrics_with(&gw, &[failures("v1_certificate", 1)]).await;
    assert!(m.contains(&failures("v1_certificate", 1)), "{m}");

    // Optional: the request goes on, and the trace says why the
    // certificate is not verified.
    let resp = get_with(
        gw.addr("tls"),
        cfg,
        "opt.test.com",
        "opt.test.com",
        "/",
        &[("x-gatehouse-trace", "api7-trace-key")],
    )
    .await
    .unwrap();
    assert_eq!(resp.status, 200);
    let id = resp.headers["x-gatehouse-trace-id"]
        .to_str()
        .unwrap()
        .to_string();
    let trace = Client::plain(gw.admin())
        .get(
            &format!("/traces/{id}"),
            &[("authorization", &format!("Bearer {ADMIN_KEY}"))],
        )
        .await;
    let text = String::from_utf8_lossy(&trace.body);
    assert!(text.contains("\"verified\":false"), "{text}");
    assert!(text.contains("X.509 v1"), "{text}");
    assert!(
        text.contains("\"client_certificate_mode\":\"optional\""),
        "{text}"
    );
}

/// A verified client certificate is passed upstream in the API's chosen
/// format (RFC 9440 or `x-forwarded-client-cert` with chosen fields);
/// copies a client sends are always stripped, and an unverified
/// certificate is not passed on.
#[tokio::test]
async fn client_certificates_are_forwarded_as_configured_and_forgeries_stripped() {
    use base64::Engine as _;
    let up = gatehouse_tests::upstream::echo().await;
    let dir = TempDir::new("forward");
    let pki = Pki::new("Forward Root");
    pki.server(&dir, "server", &["test.com"]);
    pki.write_ca(&dir, "ca.crt");
    let inter = pki.intermediate("Forward Intermediate");
    let client = inter.client(&dir, "client", &ClientSpec::new("alice", 11), &inter.ca_pem);
    let stranger =
        Pki::new("Stranger").client(&dir, "stranger", &ClientSpec::new("mallory", 12), "");
    let yaml = format!(
        r#"
listeners:
  - name: tls
    address: 127.0.0.1:0
    tls:
      hosts:
        - names: [test.com]
          certificate: server.crt
          key: server.key
          client_certificate: {{mode: optional, truststore: ca.crt}}
upstreams: {{app: {{url: "http://{up}"}}}}
apis:
  - name: rfc
    path: /rfc
    upstream: app
    forward_client_certificate: {{format: rfc9440}}
  - name: xfcc
    path: /xfcc
    upstream: app
    forward_client_certificate: {{format: xfcc, fields: [hash, subject, cert]}}
  - name: none
    path: /none
    upstream: app
"#,
        up = up.addr
    );
    let gw = Gw::start(dir, &yaml).await;
    let addr = gw.addr("tls");
    let with = client_config(pki.roots(), Some(&client), &["http/1.1"]);

    // RFC 9440: the leaf and the chain without the leaf.
    let r = get(addr, with.clone(), "test.com", "test.com", "/rfc")
        .await
        .unwrap();
    let echo: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    let cert = echo["headers"]["client-cert"][0]
        .as_str()
        .unwrap()
        .to_string();
    let der = base64::engine::general_purpose::STANDARD
        .decode(cert.trim_matches(':'))
        .unwrap();
    assert_eq!(der, client.der.as_ref(), "Client-Cert is the leaf's DER");
    let chain = echo["headers"]["client-cert-chain"][0].as_str().unwrap();
    assert!(
        chain.starts_with(':') && chain.ends_with(':') && !chain.contains(", "),
        "{chain}"
    );
    // XFCC with the chosen fields only.
    let r = get(addr, with.clone(), "test.com", "test.com", "/xfcc")
        .await
        .unwrap();
    let echo: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    let xfcc = echo["headers"]["x-forwarded-client-cert"][0]
        .as_str()
        .unwrap();
    assert!(xfcc.starts_with("Hash="), "{xfcc}");
    assert!(
        xfcc.contains(";Subject=\"CN=alice\";Cert=\"-----BEGIN%20CERTIFICATE-----"),
        "{xfcc}"
    );
    assert!(!xfcc.contains("URI=") && !xfcc.contains("DNS="), "{xfcc}");
    // Not configured: nothing.
    let r = get(addr, with, "test.com", "test.com", "/none")
        .await
        .unwrap();
    let echo: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert!(echo["headers"].get("client-cert").is_none(), "{echo}");

    // Forgeries from a client without a certificate, and from one whose
    // certificate does not verify: stripped, and nothing is forwarded.
    for cfg in [
        client_config(pki.roots(), None, &["http/1.1"]),
        client_config(pki.roots(), Some(&stranger), &["http/1.1"]),
    ] {
        for path in ["/rfc", "/xfcc", "/none"] {
            let r = get_with(
                addr,
                cfg.clone(),
                "test.com",
                "test.com",
                path,
                &[
                    ("client-cert", ":Zm9yZ2Vk:"),
                    ("client-cert-chain", ":Zm9yZ2Vk:"),
                    (
                        "x-forwarded-client-cert",
                        "Hash=forged;Subject=\"CN=admin\"",
                    ),
                ],
            )
            .await
            .unwrap();
            let body = r.body;
            let echo: serde_json::Value = serde_json::from_str(&body).unwrap();
            for h in [
                "client-cert",
                "client-cert-chain",
                "x-forwarded-client-cert",
            ] {
                assert!(
                    echo["headers"].get(h).is_none(),
                    "{path}: {h} reached the upstream: {echo}"
                );
            }
        }
    }
}

/// A chain that reads the client certificate on hosts that never ask for
/// one is refused at load, naming the hosts and how to turn negotiation
/// on (the "No client certificate received" case); when only some hosts
/// ask, it is a warning naming the others.
#[tokio::test]
async fn a_chain_that_needs_a_certificate_on_a_host_that_never_asks_is_an_error() {
    let dir = TempDir::new("needs-cert");
    let pki = Pki::new("Needs Root");
    pki.server(&dir, "server", &["api.test.com", "partners.test.com"]);
    pki.write_ca(&dir, "ca.crt");
    let yaml = r#"
listeners:
  - name: tls
    address: 127.0.0.1:0
    tls:
      hosts:
        - {names: [api.test.com], certificate: server.crt, key: server.key}
        - names: [partners.test.com]
          certificate: server.crt
          key: server.key
          client_certificate: {mode: required, truststore: ca.crt}
upstreams: {echo: {url: "builtin:echo"}}
apis:
  - name: public
    hosts: [api.test.com]
    path: /
    upstream: echo
    policies:
      inbound:
        - set-header: {name: x-client, expression: "client_cert == null ? 'anonymous' : client_cert.common_name"}
  - name: partners
    hosts: [partners.test.com]
    path: /
    upstream: echo
    policies:
      inbound:
        - set-header: {name: x-client, expression: "client_cert.common_name"}
"#;
    let errors = Gw::build_errors(&dir, yaml).join("\n");
    assert!(
        errors.contains("apis[0]: `set-header` (API inbound) reads the client certificate, but no TLS host serving API `public` asks for one (listeners[0].tls.hosts[0] (api.test.com) never ask)"),
        "{errors}"
    );
    assert!(
        errors.contains("No client certificate received"),
        "{errors}"
    );
    assert!(
        errors.contains("client_certificate: {mode: optional, truststore: CA-BUNDLE.pem}"),
        "{errors}"
    );
    assert!(
        !errors.contains("apis[1]"),
        "the partners API is served by a host that asks: {errors}"
    );

    // Served by both kinds of host: a warning, and the gateway starts.
    let yaml = yaml.replace("    hosts: [api.test.com]\n", "");
    assert!(Gw::build_errors(&dir, &yaml).is_empty());
    let path = dir.write("both.yaml", &yaml);
    let snapshot = gatehouse::gateway::check(Some(&path)).unwrap();
    let warnings: Vec<String> = snapshot.warnings.iter().map(|w| w.to_string()).collect();
    assert!(
        warnings.iter().any(|w| w.contains("apis[0]: `set-header` (API inbound) reads the client certificate, and requests for API `public` through listeners[0].tls.hosts[0] (api.test.com) never carry one")),
        "{warnings:?}"
    );
}

/// Certificates, keys and truststores rotate with a reload: new
/// connections get the new material, an open connection keeps its own;
/// a broken new file refuses the reload, naming the file and why, and
/// the old material stays in service.
#[tokio::test]
async fn certificates_rotate_on_reload_and_a_broken_file_keeps_the_old_ones() {
    let dir = TempDir::new("rotate");
    let old_ca = Pki::new("Old Server CA");
    old_ca.server(&dir, "server", &["test.com"]);
    let client_ca = Pki::new("Client CA");
    client_ca.write_ca(&dir, "clients.crt");
    let client = client_ca.client(&dir, "client", &ClientSpec::new("rotating", 21), "");
    let yaml = r#"
listeners:
  - name: tls
    address: 127.0.0.1:0
    tls:
      hosts:
        - names: [test.com]
          certificate: server.crt
          key: server.key
          client_certificate: {mode: required, truststore: clients.crt}
upstreams: {echo: {url: "builtin:echo"}}
apis: [{name: app, path: /, upstream: echo}]
"#;
    let gw = Gw::start(dir, yaml).await;
    let addr = gw.addr("tls");
    let old_cfg = client_config(old_ca.roots(), Some(&client), &["http/1.1"]);
    assert_eq!(
        get(addr, old_cfg.clone(), "test.com", "test.com", "/")
            .await
            .unwrap()
            .status,
        200
    );

    // An open connection made before the rotation.
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(old_cfg.clone())
        .connect(ServerName::try_from("test.com").unwrap(), tcp)
        .await
        .unwrap();
    let (mut open, c) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    let open_task = tokio::spawn(c);

    // New server certificate from another CA, and a new client CA.
    let new_ca = Pki::new("New Server CA");
    new_ca.server(&gw.dir, "server", &["test.com"]);
    let new_client_ca = Pki::new("New Client CA");
    new_client_ca.write_ca(&gw.dir, "clients.crt");
    let new_client = new_client_ca.client(&gw.dir, "client2", &ClientSpec::new("rotated", 22), "");
    gw.gateway().reload().expect("reload");
    let r = get(addr, old_cfg.clone(), "test.com", "test.com", "/").await;
    assert!(
        r.is_err(),
        "the old server certificate is no longer served: {r:?}"
    );
    let new_cfg = client_config(new_ca.roots(), Some(&new_client), &["http/1.1"]);
    assert_eq!(
        get(addr, new_cfg.clone(), "test.com", "test.com", "/")
            .await
            .unwrap()
            .status,
        200
    );
    let old_client_new_server = client_config(new_ca.roots(), Some(&client), &["http/1.1"]);
    let r = get(addr, old_client_new_server, "test.com", "test.com", "/").await;
    assert!(r.is_err(), "the old client CA is no longer trusted: {r:?}");
    // The connection opened before still works, with what it was accepted with.
    let resp = open
        .send_request(
            http::Request::get("/")
                .header("host", "test.com")
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    drop(open);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), open_task).await;

    // A broken key: the reload is refused, naming the file; the served
    // material does not change.
    gw.dir.write(
        "server.key",
        "-----BEGIN PRIVATE KEY-----\nbroken\n-----END PRIVATE KEY-----\n",
    );
    let err = gw
        .gateway()
        .reload()
        .expect_err("a broken key refuses the reload")
        .to_string();
    assert!(
        err.contains("listeners[0].tls.hosts[0].key") && err.contains("server.key"),
        "{err}"
    );
    assert_eq!(
        get(addr, new_cfg, "test.com", "test.com", "/")
            .await
            .unwrap()
            .status,
        200
    );
}

/// CRLs from a URL (the CA's distribution point): fetched at load, then
/// refreshed while the gateway runs, so a revocation published by the CA
/// applies without a reload. An unreachable URL at load refuses the
/// config with `stale_crl: refuse` and is a warning with `accept`. (Two
/// runtime threads: loading the config waits for the CA's server, which
/// runs in this test.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crls_from_a_url_are_refreshed_while_the_gateway_runs() {
    let dir = TempDir::new("crl-url");
    let pki = Pki::new("CRL URL Root");
    pki.server(&dir, "server", &["test.com"]);
    pki.write_ca(&dir, "ca.crt");
    let keep = pki.client(&dir, "keep", &ClientSpec::new("keep", 31), "");
    let doomed = pki.client(&dir, "doomed", &ClientSpec::new("doomed", 32), "");
    let empty = std::fs::read(pki.crl(&dir, "empty.crl", &[], (2099, 1, 1))).unwrap();
    let revoking = std::fs::read(pki.crl(&dir, "revoking.crl", &[32], (2099, 1, 1))).unwrap();
    let served = Arc::new(std::sync::Mutex::new(empty));
    let serving = served.clone();
    let handler: gatehouse_tests::upstream::Handler = Arc::new(move |_req| {
        let body = serving.lock().unwrap().clone();
        Box::pin(async move { http::Response::new(gatehouse_tests::upstream::full(body)) })
    });
    let ca = gatehouse_tests::upstream::start(handler).await;
    let yaml = |url: &str, stale: &str| {
        format!(
            r#"
listeners:
  - name: tls
    address: 127.0.0.1:0
    tls:
      hosts:
        - names: [test.com]
          certificate: server.crt
          key: server.key
          client_certificate:
            mode: required
            truststore: ca.crt
            crl_urls: ["{url}"]
            crl_refresh_seconds: 1
            stale_crl: {stale}
upstreams: {{echo: {{url: "builtin:echo"}}}}
apis: [{{name: app, path: /, upstream: echo}}]
"#
        )
    };
    // Unreachable at load.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let nowhere = format!("http://{closed}/ca.crl");
    let errors = Gw::build_errors(&dir, &yaml(&nowhere, "refuse")).join("\n");
    assert!(
        errors.contains("client_certificate.crl_urls[0]: cannot fetch the CRL: cannot connect to"),
        "{errors}"
    );
    let path = dir.write("accept.yaml", yaml(&nowhere, "accept"));
    let snapshot = gatehouse::gateway::check(Some(&path)).expect("accept starts without it");
    assert!(
        snapshot
            .warnings
            .iter()
            .any(|w| w.to_string().contains("cannot fetch the CRL now")),
        "{:?}",
        snapshot.warnings
    );
    drop(snapshot);

    let url = format!("http://{}/ca.crl", ca.addr);
    let gw = Gw::start(dir, &yaml(&url, "refuse")).await;
    let addr = gw.addr("tls");
    let cfg = |c: &Issued| client_config(pki.roots(), Some(c), &["http/1.1"]);
    assert_eq!(
        get(addr, cfg(&doomed), "test.com", "test.com", "/")
            .await
            .unwrap()
            .status,
        200
    );

    // The CA publishes a CRL that revokes `doomed`; no reload.
    *served.lock().unwrap() = revoking;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let r = get(addr, cfg(&doomed), "test.com", "test.com", "/").await;
        if r.is_err() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the new CRL was never applied"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(
        get(addr, cfg(&keep), "test.com", "test.com", "/")
            .await
            .unwrap()
            .status,
        200
    );
    assert!(ca.requests() >= 2, "fetched at load and refreshed");
}

/// The algorithm floor: client certificates with an RSA-1024 key, or
/// signed with SHA-1, are refused (`reason="algorithm"`), made with
/// `openssl` as an operator would; an RSA-2048 SHA-256 one from the same
/// CA passes. And `min_version: "1.3"` refuses a TLS 1.2-only client that
/// the default accepts.
#[tokio::test]
async fn weak_client_certificates_and_old_tls_versions_are_refused() {
    let dir = TempDir::new("floor");
    let script = r#"set -e
cat > ext.cnf <<'EOT'
[ca]
basicConstraints=critical,CA:TRUE
keyUsage=critical,keyCertSign,cRLSign
[client]
basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth
EOT
openssl genrsa -out ca.key 2048 2>/dev/null
openssl req -new -x509 -sha256 -days 3650 -key ca.key -subj "/CN=Floor CA" -config /dev/null -extensions ca -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" -out ca.crt 2>/dev/null || \
  openssl req -new -x509 -sha256 -days 3650 -key ca.key -subj "/CN=Floor CA" -out ca.crt
make() { # make NAME BITS DIGEST
  openssl genrsa -out "$1.key" "$2" 2>/dev/null
  openssl req -new -key "$1.key" -subj "/CN=$1" -out "$1.csr"
  openssl x509 -req -"$3" -days 365 -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial \
    -extfile ext.cnf -extensions client -out "$1.crt" 2>/dev/null
}
make good 2048 sha256
make small 1024 sha256
make sha1 2048 sha1
make strong 2048 sha384
"#;
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(script)
        .current_dir(dir.path())
        .output()
        .expect("bash and openssl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pki = Pki::new("Floor Server CA");
    pki.server(
        &dir,
        "server",
        &[
            "test.com",
            "modern.test.com",
            "strict.test.com",
            "ec.test.com",
        ],
    );
    let yaml = format!(
        r#"
listeners:
  - name: tls
    address: 127.0.0.1:0
    tls:
      hosts:
        - names: [test.com]
          certificate: server.crt
          key: server.key
          client_certificate: {{mode: required, truststore: ca.crt}}
        - names: [strict.test.com]
          certificate: server.crt
          key: server.key
          client_certificate:
            mode: required
            truststore: ca.crt
            algorithm_floor: {{min_signature_hash: sha384}}
  - name: modern
    address: 127.0.0.1:0
    tls:
      min_version: "1.3"
      hosts: [{{names: [modern.test.com], certificate: server.crt, key: server.key}}]
upstreams: {{echo: {{url: "builtin:echo"}}}}
{admin}
apis: [{{name: app, path: /, upstream: echo}}]
"#,
        admin = admin_yaml()
    );
    // The floor holds for the truststore too: an RSA-2048 CA on a host
    // that wants 3072 bits is a load error.
    let errors = Gw::build_errors(
        &dir,
        &yaml.replace("min_signature_hash: sha384", "min_rsa_bits: 3072"),
    )
    .join("\n");
    assert!(
        errors.contains("ca.crt: certificate #1 (CN=Floor CA) is below the algorithm floor: its RSA key has 2048 bits (at least 3072)"),
        "{errors}"
    );
    let gw = Gw::start(dir, &yaml).await;
    let addr = gw.addr("tls");
    let issued = |name: &str| Issued {
        cert: gw.dir.path().join(format!("{name}.crt")),
        key: gw.dir.path().join(format!("{name}.key")),
        der: rustls::pki_types::CertificateDer::from(Vec::new()),
    };
    let cfg = |name: &str| client_config(pki.roots(), Some(&issued(name)), &["http/1.1"]);
    let r = get(addr, cfg("good"), "test.com", "test.com", "/").await;
    assert_eq!(
        r.map(|g| g.status).ok(),
        Some(200),
        "RSA-2048 with SHA-256 passes"
    );
    let r = get(addr, cfg("sha1"), "test.com", "test.com", "/").await;
    assert!(r.is_err(), "a SHA-1-signed certificate was accepted: {r:?}");
    // A stricter floor of the host's own: the SHA-256-signed certificate
    // that test.com accepts is refused on strict.test.com.
    let r = get(addr, cfg("good"), "strict.test.com", "strict.test.com", "/").await;
    assert!(
        r.is_err(),
        "a SHA-256-signed certificate passed min_signature_hash: sha384: {r:?}"
    );
    let r = get(
        addr,
        cfg("strong"),
        "strict.test.com",
        "strict.test.com",
        "/",
    )
    .await;
    assert_eq!(
        r.map(|g| g.status).ok(),
        Some(200),
        "a SHA-384-signed one passes it"
    );
    // ring will not sign with an RSA-1024 key, so that client is openssl's.
    let dir_path = gw.dir.path().to_path_buf();
    let out = tokio::task::spawn_blocking(move || {
        use std::io::Write as _;
        let mut child = std::process::Command::new("openssl")
            .args([
                "s_client",
                "-connect",
                &addr.to_string(),
                "-servername",
                "test.com",
            ])
            .args(["-cert", "small.crt", "-key", "small.key", "-quiet"])
            // Debian's default security level would refuse the key on the
            // client side first.
            .args(["-cipher", "DEFAULT@SECLEVEL=0"])
            .current_dir(&dir_path)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("openssl s_client");
        if let Some(mut i) = child.stdin.take() {
            let _ = i.write_all(b"GET / HTTP/1.1\r\nhost: test.com\r\nconnection: close\r\n\r\n");
        }
        child.wait_with_output().expect("s_client output")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !stdout.contains("200 OK"),
        "an RSA-1024 certificate was accepted: {stdout}"
    );
    let m = metrics_with(&gw, &[failures("algorithm", 3)]).await;
    assert!(m.contains(&failures("algorithm", 3)), "{m}");

    // TLS versions.
    let tls12 = |roots: rustls::RootCertStore| {
        let mut c = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        c.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(c)
    };
    let r = get(
        gw.addr("modern"),
        tls12(pki.roots()),
        "modern.test.com",
        "modern.test.com",
        "/",
    )
    .await;
    assert!(r.is_err(), "TLS 1.2 on a 1.3-only listener: {r:?}");
    let r = get(
        gw.addr("modern"),
        client_config(pki.roots(), None, &["http/1.1"]),
        "modern.test.com",
        "modern.test.com",
        "/",
    )
    .await;
    assert_eq!(r.map(|g| g.status).ok(), Some(200), "TLS 1.3 is served");
    // The default accepts TLS 1.2 (the other listener, without a client
    // certificate it is refused for that, so use a host that asks none).
    let open = format!(
        "listeners:\n  - name: tls\n    address: 127.0.0.1:0\n    tls: {{hosts: [{{names: [test.com], certificate: {crt}, key: {key}}}]}}\nupstreams: {{echo: {{url: \"builtin:echo\"}}}}\napis: [{{name: app, path: /, upstream: echo}}]\n",
        crt = gw.dir.path().join("server.crt").display(),
        key = gw.dir.path().join("server.key").display(),
    );
    let gw2 = Gw::start(TempDir::new("floor-open"), &open).await;
    let r = get(
        gw2.addr("tls"),
        tls12(pki.roots()),
        "test.com",
        "test.com",
        "/",
    )
    .await;
    assert_eq!(
        r.map(|g| g.status).ok(),
        Some(200),
        "TLS 1.2 is accepted by default"
    );
}

fn hex_digest(alg: &'static ring::digest::Algorithm, der: &[u8]) -> String {
    ring::digest::digest(alg, der)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Contract 0.1.2: a policy reads the certificate field by field
/// (`tests/guests/cert-facts`), and each field is the certificate's own —
/// including the verified path's issuer: the intermediate for a chain
/// through one, the truststore's root for a certificate it issued, and
/// nothing for a chain that does not verify (`optional` mode lets it
/// through, marked unverified with the reason).
#[tokio::test]
async fn policies_read_the_certificate_field_by_field_with_the_verified_issuer() {
    let dir = TempDir::new("cert-facts");
    let pki = Pki::new("Facts Root");
    pki.server(&dir, "server", &["test.com"]);
    pki.write_ca(&dir, "ca.crt");
    let inter = pki.intermediate("Facts Intermediate");
    let direct = pki.client(
        &dir,
        "direct",
        &ClientSpec::new("direct, O=Forged", 0x2a),
        "",
    );
    let via = inter.client(&dir, "via", &ClientSpec::new("via", 7), &inter.ca_pem);
    let stranger =
        Pki::new("Stranger Root").client(&dir, "stranger", &ClientSpec::new("stranger", 9), "");
    let yaml = format!(
        r#"
listeners:
  - name: tls
    address: 127.0.0.1:0
    tls:
      hosts:
        - names: [test.com]
          certificate: server.crt
          key: server.key
          client_certificate: {{mode: optional, truststore: ca.crt}}
upstreams: {{echo: {{url: "builtin:echo"}}}}
custom_policies:
  cert-facts: {{wasm: "{wasm}"}}
apis:
  - name: app
    path: /
    upstream: echo
    policies: {{inbound: [cert-facts]}}
  - name: cel
    path: /cel
    upstream: echo
    policies:
      inbound:
        - set-header:
            name: x-issuer
            expression: "client_cert == null ? 'none' : client_cert.verified ? client_cert.issuer_thumbprint_sha256 : client_cert.verify_error"
"#,
        wasm = gatehouse_tests::cert_facts_wasm()
    );
    let gw = Gw::start(dir, &yaml).await;
    let addr = gw.addr("tls");
    let facts = |c: Option<&Issued>| {
        let cfg = client_config(pki.roots(), c, &["h2"]);
        async move {
            let r = get(addr, cfg, "test.com", "test.com", "/")
                .await
                .expect("request");
            assert_eq!(r.status, 200, "{}", r.body);
            serde_json::from_str::<serde_json::Value>(&r.body).expect("json")
        }
    };
    let sha1 = |der: &[u8]| hex_digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, der);
    let sha256 = |der: &[u8]| hex_digest(&ring::digest::SHA256, der);

    let f = facts(Some(&direct)).await;
    assert_eq!(f["present"], true, "{f}");
    assert_eq!(f["subject"], "CN=direct\\, O\\=Forged", "{f}");
    assert_eq!(f["issuer"], "CN=Facts Root", "{f}");
    assert_eq!(f["common_name"], "direct, O=Forged", "{f}");
    assert_eq!(f["serial"], "2a", "{f}");
    assert_eq!(f["thumbprint_sha1"], sha1(direct.der.as_ref()), "{f}");
    assert_eq!(f["thumbprint_sha256"], sha256(direct.der.as_ref()), "{f}");
    assert!(
        f["not_before"].as_i64().unwrap() < f["not_after"].as_i64().unwrap(),
        "{f}"
    );
    assert_eq!(f["verified"], true, "{f}");
    assert_eq!(f["verify_error"], serde_json::Value::Null, "{f}");
    assert_eq!(
        f["issuer_thumbprint_sha1"],
        sha1(pki.ca_der.as_ref()),
        "the root issued it: {f}"
    );
    assert_eq!(
        f["issuer_thumbprint_sha256"],
        sha256(pki.ca_der.as_ref()),
        "{f}"
    );

    let f = facts(Some(&via)).await;
    assert_eq!(f["issuer"], "CN=Facts Intermediate", "{f}");
    assert_eq!(f["verified"], true, "{f}");
    assert_eq!(
        f["issuer_thumbprint_sha256"],
        sha256(inter.ca_der.as_ref()),
        "the intermediate issued it, not the root: {f}"
    );
    assert_eq!(
        f["issuer_thumbprint_sha1"],
        sha1(inter.ca_der.as_ref()),
        "{f}"
    );

    let f = facts(Some(&stranger)).await;
    assert_eq!(f["present"], true, "{f}");
    assert_eq!(f["verified"], false, "{f}");
    assert!(
        f["verify_error"]
            .as_str()
            .unwrap_or("")
            .contains("not issued by a CA in the host's truststore"),
        "{f}"
    );
    assert_eq!(
        f["issuer_thumbprint_sha256"],
        serde_json::Value::Null,
        "unverified: {f}"
    );

    let f = facts(None).await;
    assert_eq!(f["present"], false, "{f}");
    for k in [
        "subject",
        "serial",
        "thumbprint_sha256",
        "verified",
        "issuer_thumbprint_sha1",
    ] {
        assert_eq!(f[k], serde_json::Value::Null, "{k}: {f}");
    }
    assert_eq!(f["dns_names"], serde_json::json!([]), "{f}");

    // Expressions see the same: `client_cert.issuer_thumbprint_sha256`.
    let cel = |c: Option<&Issued>| {
        let cfg = client_config(pki.roots(), c, &["h2"]);
        async move {
            let r = get(addr, cfg, "test.com", "test.com", "/cel")
                .await
                .expect("request");
            let echo: serde_json::Value = serde_json::from_str(&r.body).expect("echo json");
            echo["headers"]["x-issuer"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        }
    };
    assert_eq!(cel(Some(&via)).await, sha256(inter.ca_der.as_ref()));
    assert_eq!(cel(Some(&direct)).await, sha256(pki.ca_der.as_ref()));
    assert!(cel(Some(&stranger)).await.contains("not issued by a CA"));
    assert_eq!(cel(None).await, "none");
}

/// A policy that declares it reads the certificate
/// (`declarations.reads-client-certificate`, from its constructor) is
/// held to the same check as an expression reading `client_cert`: on a
/// host that never asks, the config is refused and the error names the
/// policy; the same policy not declaring it loads.
#[tokio::test]
async fn a_policy_that_declares_it_reads_the_certificate_needs_a_host_that_asks() {
    let dir = TempDir::new("declares");
    let pki = Pki::new("Declares Root");
    pki.server(&dir, "server", &["api.test.com"]);
    let yaml = |declare: bool| {
        format!(
            r#"
listeners:
  - name: tls
    address: 127.0.0.1:0
    tls:
      hosts:
        - {{names: [api.test.com], certificate: server.crt, key: server.key}}
upstreams: {{echo: {{url: "builtin:echo"}}}}
custom_policies:
  cert-facts: {{wasm: "{wasm}"}}
apis:
  - name: public
    path: /
    upstream: echo
    policies:
      inbound:
        - cert-facts: {{declare: {declare}}}
"#,
            wasm = gatehouse_tests::cert_facts_wasm()
        )
    };
    let errors = Gw::build_errors(&dir, &yaml(true)).join("\n");
    assert!(
        errors.contains("apis[0]: `cert-facts` (API inbound) reads the client certificate, but no TLS host serving API `public` asks for one"),
        "{errors}"
    );
    let errors = Gw::build_errors(&dir, &yaml(false));
    assert!(errors.is_empty(), "{errors:?}");
}

/// Two roots with one name (a CA renewed with a new key) in one
/// truststore: the issuer thumbprint is the one whose key verifies the
/// client's certificate — the path webpki verifies decides, not the name.
#[tokio::test]
async fn the_issuer_thumbprint_follows_the_verified_path_when_two_cas_share_a_name() {
    let dir = TempDir::new("renewed-ca");
    let old = Pki::new("Renewed Root");
    let new = Pki::new("Renewed Root");
    old.server(&dir, "server", &["test.com"]);
    dir.write("cas.crt", format!("{}{}", old.ca_pem, new.ca_pem));
    let by_new = new.client(&dir, "by-new", &ClientSpec::new("by-new", 1), "");
    let by_old = old.client(&dir, "by-old", &ClientSpec::new("by-old", 2), "");
    let yaml = format!(
        r#"
listeners:
  - name: tls
    address: 127.0.0.1:0
    tls:
      hosts:
        - names: [test.com]
          certificate: server.crt
          key: server.key
          client_certificate: {{mode: required, truststore: cas.crt}}
upstreams: {{echo: {{url: "builtin:echo"}}}}
custom_policies:
  cert-facts: {{wasm: "{wasm}"}}
apis: [{{name: app, path: /, upstream: echo, policies: {{inbound: [cert-facts]}}}}]
"#,
        wasm = gatehouse_tests::cert_facts_wasm()
    );
    let gw = Gw::start(dir, &yaml).await;
    let addr = gw.addr("tls");
    let sha256 = |der: &[u8]| hex_digest(&ring::digest::SHA256, der);
    for (client, ca) in [(&by_new, &new), (&by_old, &old)] {
        let r = get(
            addr,
            client_config(old.roots(), Some(client), &["http/1.1"]),
            "test.com",
            "test.com",
            "/",
        )
        .await
        .expect("request");
        let f: serde_json::Value = serde_json::from_str(&r.body).expect("json");
        assert_eq!(f["verified"], true, "{f}");
        assert_eq!(
            f["issuer_thumbprint_sha256"],
            sha256(ca.ca_der.as_ref()),
            "{f}"
        );
    }
}
