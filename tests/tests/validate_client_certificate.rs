//! `validate-client-certificate` with real certificates over real TLS: an
//! identity per attribute (thumbprints, serial, common name, subject in
//! Azure's order, DNS name, issuer subject, issuer thumbprint, and an
//! intermediate-issued certificate matched by `issuer_certificate_id`), no
//! certificate (the message names the host's mode), untrusted, revoked
//! and expired certificates with their switches, and the load-time check
//! on a host that never asks.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use gatehouse_tests::pki::{client_config, ClientSpec, Issued};
use gatehouse_tests::{Gw, Pki, TempDir};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;

fn hex(alg: &'static ring::digest::Algorithm, der: &[u8]) -> String {
    ring::digest::digest(alg, der)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// One HTTP/1.1 GET over a new TLS connection with SNI `test.com`,
/// presenting `cert` when given: status and body.
async fn get(
    addr: SocketAddr,
    roots: rustls::RootCertStore,
    cert: Option<&Issued>,
    path: &str,
) -> (u16, String) {
    let cfg: Arc<rustls::ClientConfig> = client_config(roots, cert, &["http/1.1"]);
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(cfg)
        .connect(ServerName::try_from("test.com").unwrap(), tcp)
        .await
        .expect("handshake");
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    let task = tokio::spawn(conn);
    let req = http::Request::get(path)
        .header("host", "test.com")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = send.send_request(req).await.expect("response");
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    drop(send);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), task).await;
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn identities_trust_revocation_and_dates() {
    let dir = TempDir::new("vcc");
    let pki = Pki::new("VCC Root");
    pki.server(&dir, "server", &["test.com"]);
    pki.write_ca(&dir, "ca.crt");
    let inter = pki.intermediate("VCC Intermediate");
    dir.write("inter.crt", &inter.ca_pem);
    let mut spec = ClientSpec::new("alice", 0x1f2e);
    spec.dns_names = vec!["alice.partner.test".into()];
    let alice = pki.client(&dir, "alice", &spec, "");
    let bob = pki.client(&dir, "bob", &ClientSpec::new("bob", 2), "");
    let via = inter.client(&dir, "via", &ClientSpec::new("via", 3), &inter.ca_pem);
    let revoked = pki.client(&dir, "revoked", &ClientSpec::new("revoked", 4), "");
    let mut spec = ClientSpec::new("old", 5);
    spec.not_before = Some((2019, 1, 1));
    spec.not_after = Some((2020, 1, 1));
    let old = pki.client(&dir, "old", &spec, "");
    let stranger_ca = Pki::new("Stranger CA");
    stranger_ca.write_ca(&dir, "stranger-ca.crt");
    let stranger = stranger_ca.client(&dir, "stranger", &ClientSpec::new("stranger", 6), "");
    pki.crl(&dir, "ca.crl", &[4], (2099, 1, 1));

    let sha1 =
        |i: &Issued| hex(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, i.der.as_ref()).to_uppercase();
    let sha256 = |i: &Issued| hex(&ring::digest::SHA256, i.der.as_ref());
    let root_sha1 = hex(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, pki.ca_der.as_ref());
    let api = |name: &str, options: &str| {
        format!(
            "  - name: {name}\n    path: /{name}\n    upstream: echo\n    policies:\n      inbound:\n        - validate-client-certificate: {options}\n"
        )
    };
    let mut apis = String::new();
    for (name, options) in [
        ("any", "{}".to_string()),
        (
            "sha1",
            format!("{{identities: [{{thumbprint: \"{}\"}}]}}", sha1(&alice)),
        ),
        (
            "sha256",
            format!("{{identities: [{{thumbprint: \"{}\"}}]}}", sha256(&alice)),
        ),
        (
            "serial",
            "{identities: [{serial_number: \"00:1F:2E\"}]}".to_string(),
        ),
        ("cn", "{identities: [{common_name: ALICE}]}".to_string()),
        (
            "subject",
            "{identities: [{subject: \"CN=alice\"}]}".to_string(),
        ),
        (
            "dns",
            "{identities: [{dns_name: alice.partner.test}]}".to_string(),
        ),
        (
            "issuer-subject",
            "{identities: [{issuer_subject: \"CN=VCC Intermediate\"}]}".to_string(),
        ),
        (
            "issuer-thumbprint",
            format!("{{identities: [{{issuer_thumbprint: \"{root_sha1}\", common_name: bob}}]}}"),
        ),
        (
            "issuer-cert",
            "{identities: [{issuer_certificate_id: \"{{intermediate}}\"}]}".to_string(),
        ),
        (
            "two",
            "{identities: [{common_name: nobody}, {common_name: bob}]}".to_string(),
        ),
        ("no-revocation", "{validate_revocation: false}".to_string()),
        ("no-dates", "{validate_not_after: false}".to_string()),
        (
            "stranger-by-signature",
            "{validate_trust: false, identities: [{issuer_certificate_id: \"{{stranger-ca}}\"}]}"
                .to_string(),
        ),
        (
            "ignore",
            "{ignore_error: true, identities: [{common_name: nobody}]}".to_string(),
        ),
    ] {
        apis.push_str(&api(name, &options));
    }
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
          client_certificate: {{mode: optional, truststore: ca.crt, crls: [ca.crl]}}
upstreams: {{echo: {{url: "builtin:echo"}}}}
named_values:
  intermediate: {{file: inter.crt}}
  stranger-ca: {{file: stranger-ca.crt}}
apis:
{apis}"#
    );
    let gw = Gw::start(dir, &yaml).await;
    let addr = gw.addr("tls");
    let call = |c: Option<&Issued>, path: &str| {
        let roots = pki.roots();
        let path = path.to_string();
        let c = c.map(|i| Issued {
            cert: i.cert.clone(),
            key: i.key.clone(),
            der: i.der.clone(),
        });
        async move { get(addr, roots, c.as_ref(), &path).await }
    };
    let ok = |r: (u16, String), what: &str| assert_eq!(r.0, 200, "{what}: {}", r.1);
    let refused = |r: (u16, String), code: &str, what: &str| {
        assert_eq!(r.0, 403, "{what}: {}", r.1);
        assert!(
            r.1.contains(&format!("\"policy.validate-client-certificate.{code}\"")),
            "{what}: {}",
            r.1
        );
        r.1
    };

    ok(
        call(Some(&alice), "/any").await,
        "a trusted certificate, no identities",
    );
    let body = refused(call(None, "/any").await, "missing", "no certificate");
    assert!(body.contains("the TLS host asks for one (client_certificate.mode `optional`), and the client sent none"), "{body}");
    for (path, good, bad) in [
        ("/sha1", &alice, &bob),
        ("/sha256", &alice, &bob),
        ("/serial", &alice, &bob),
        ("/cn", &alice, &bob),
        ("/subject", &alice, &bob),
        ("/dns", &alice, &bob),
        ("/issuer-subject", &via, &alice),
        ("/issuer-thumbprint", &bob, &via),
        ("/issuer-cert", &via, &alice),
        ("/two", &bob, &alice),
    ] {
        ok(call(Some(good), path).await, path);
        refused(call(Some(bad), path).await, "identity", path);
    }
    refused(
        call(Some(&stranger), "/any").await,
        "untrusted",
        "a certificate of another CA",
    );
    refused(
        call(Some(&revoked), "/any").await,
        "revoked",
        "revoked by the CRL",
    );
    ok(
        call(Some(&revoked), "/no-revocation").await,
        "validate_revocation: false",
    );
    refused(call(Some(&old), "/any").await, "expired", "expired");
    ok(
        call(Some(&old), "/no-dates").await,
        "validate_not_after: false",
    );
    // Trust by signature instead of the truststore.
    ok(
        call(Some(&stranger), "/stranger-by-signature").await,
        "issuer_certificate_id",
    );
    refused(
        call(Some(&alice), "/stranger-by-signature").await,
        "identity",
        "signed by another CA",
    );
    ok(call(Some(&bob), "/ignore").await, "ignore_error");
}

#[tokio::test]
async fn on_a_host_that_never_asks_the_config_is_refused() {
    let dir = TempDir::new("vcc-off");
    let pki = Pki::new("VCC Off Root");
    pki.server(&dir, "server", &["api.test.com"]);
    let yaml = r#"
listeners:
  - name: tls
    address: 127.0.0.1:0
    tls: {hosts: [{names: [api.test.com], certificate: server.crt, key: server.key}]}
upstreams: {echo: {url: "builtin:echo"}}
apis:
  - name: partners
    path: /
    upstream: echo
    policies: {inbound: [validate-client-certificate]}
"#;
    let errors = Gw::build_errors(&dir, yaml).join("\n");
    assert!(
        errors.contains("apis[0]: `validate-client-certificate` (API inbound) reads the client certificate, but no TLS host serving API `partners` asks for one"),
        "{errors}"
    );
}
