//! Upstream TLS and mTLS: the gateway sends the client certificate whose
//! chain reaches a CA the upstream names, and every failed handshake gets a
//! fault whose code names the cause, with the detail (acceptable CA names,
//! our issuers, the alert) in the log and the trace. The upstreams are real
//! rustls servers that require client certificates and report the one they
//! received; every certificate is made here.

use std::net::SocketAddr;

use gatehouse_tests::pki::ClientSpec;
use gatehouse_tests::{upstream, Client, Gw, Pki, TempDir};

const ADMIN: &str = "admin: {address: \"127.0.0.1:0\", key: admin-key, trace_key: trace-key}\nnamed_values:\n  admin-key: {value: \"an-admin-key\", secret: true}\n  trace-key: {value: \"upstream-trace-key\", secret: true}\n";

fn sha256(der: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, der)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
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

/// A traced request: the fault (or body) and the request's trace.
async fn traced(gw: &Gw, path: &str) -> (gatehouse_tests::client::Reply, String) {
    let r = Client::plain(gw.addr("plain"))
        .get(path, &[("x-gatehouse-trace", "upstream-trace-key")])
        .await;
    let id = r
        .header("x-gatehouse-trace-id")
        .expect("traced")
        .to_string();
    let trace = admin_get(gw.admin(), &format!("/traces/{id}")).await;
    (r, trace)
}

/// Two partner CAs; the gateway holds a certificate from each (B's
/// first). An upstream that accepts only A's gets A's certificate,
/// whatever the order; one that accepts a CA we have nothing from gets a
/// mismatch fault naming its CAs and our issuers in the trace (with
/// `send_default` the first certificate goes anyway and is refused; with
/// `send_none` nothing is sent); an upstream asking for a certificate of
/// an upstream without a keystore gets its own code; and an upstream that
/// names A but refuses our A certificate (its A is another key with the
/// same name) gets `client-certificate-rejected` with the alert.
#[tokio::test]
async fn the_certificate_the_upstream_names_is_sent_and_failures_name_their_cause() {
    let dir = TempDir::new("up-mtls");
    let server_ca = Pki::new("Upstream Server CA");
    let server = server_ca.server(&dir, "server", &["orders.internal"]);
    server_ca.write_ca(&dir, "server-ca.crt");
    let ca_a = Pki::new("Partner CA A");
    let ca_b = Pki::new("Partner CA B");
    let ca_c = Pki::new("Partner CA C");
    let impostor_a = Pki::new("Partner CA A");
    let a_file = ca_a.write_ca(&dir, "ca-a.crt");
    let c_file = ca_c.write_ca(&dir, "ca-c.crt");
    let impostor_file = impostor_a.write_ca(&dir, "impostor-a.crt");
    let cert_a = ca_a.client(&dir, "gw-a", &ClientSpec::new("gateway-a", 1), "");
    let cert_b = ca_b.client(&dir, "gw-b", &ClientSpec::new("gateway-b", 2), "");
    let tls =
        |cas: &[&std::path::Path]| Some(upstream::mtls_config(&server.cert, &server.key, cas));
    let wants_a = upstream::start_with(upstream::echo_handler(), tls(&[&a_file])).await;
    let wants_c = upstream::start_with(upstream::echo_handler(), tls(&[&c_file])).await;
    let impostor = upstream::start_with(upstream::echo_handler(), tls(&[&impostor_file])).await;
    let yaml = format!(
        r#"
listeners: [{{name: plain, address: "127.0.0.1:0"}}]
upstreams:
  a:
    url: https://{a}
    tls: &both
      server_name: orders.internal
      truststore: server-ca.crt
      keystore:
        - {{certificate: gw-b.crt, key: gw-b.key}}
        - {{certificate: gw-a.crt, key: gw-a.key}}
  c:
    url: https://{c}
    tls: *both
  c-none:
    url: https://{c}
    tls:
      server_name: orders.internal
      truststore: server-ca.crt
      keystore: [{{certificate: gw-b.crt, key: gw-b.key}}]
      unmatched_client_certificate: send_none
  bare:
    url: https://{a}
    tls: {{server_name: orders.internal, truststore: server-ca.crt}}
  impostor:
    url: https://{i}
    tls:
      server_name: orders.internal
      truststore: server-ca.crt
      keystore: [{{certificate: gw-a.crt, key: gw-a.key}}]
{ADMIN}
apis:
  - {{name: a, path: /a, upstream: a}}
  - {{name: c, path: /c, upstream: c}}
  - {{name: c-none, path: /c-none, upstream: c-none}}
  - {{name: bare, path: /bare, upstream: bare}}
  - {{name: impostor, path: /impostor, upstream: impostor}}
"#,
        a = wants_a.addr,
        c = wants_c.addr,
        i = impostor.addr,
    );
    let gw = Gw::start(dir, &yaml).await;

    // A's certificate goes to the upstream that names A, though B's is
    // listed first; the trace says how it was chosen.
    let (r, trace) = traced(&gw, "/a/x").await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["client_cert_sha256"], sha256(cert_a.der.as_ref()));
    assert!(trace.contains("\"outcome\":\"matched\""), "{trace}");
    assert!(trace.contains("CN=Partner CA A"), "{trace}");
    let _ = cert_b;

    // Nothing of ours reaches C: the default (B's) goes, and is refused.
    let (r, trace) = traced(&gw, "/c/x").await;
    let f = r.assert_fault(502, "upstream.tls.client-certificate-mismatch");
    let detail = f["detail"].as_str().unwrap_or_default();
    assert!(
        !detail.contains("Partner CA") && !detail.contains("127.0.0.1"),
        "the client is not told CA names or addresses: {detail}"
    );
    for want in [
        "it accepts client certificates from CN=Partner CA C",
        "ours are CN=gateway-b (issued by CN=Partner CA B); CN=gateway-a (issued by CN=Partner CA A)",
        "CN=gateway-b was sent anyway (unmatched_client_certificate: send_default)",
        "mismatch_sent_default",
    ] {
        assert!(trace.contains(want), "missing `{want}` in the trace: {trace}");
    }
    // send_none: nothing goes; same code, and the trace says so.
    let (r, trace) = traced(&gw, "/c-none/x").await;
    r.assert_fault(502, "upstream.tls.client-certificate-mismatch");
    assert!(
        trace.contains("none was sent (unmatched_client_certificate: send_none)"),
        "{trace}"
    );

    // No keystore at all.
    let (r, trace) = traced(&gw, "/bare/x").await;
    r.assert_fault(502, "upstream.tls.no-client-certificate");
    assert!(
        trace.contains("upstreams.bare.tls.keystore is empty"),
        "{trace}"
    );
    assert!(
        trace.contains("CN=Partner CA A"),
        "the CAs it accepts: {trace}"
    );

    // It names "CN=Partner CA A" but trusts another key by that name: our
    // A certificate matches by name and is refused.
    let (r, trace) = traced(&gw, "/impostor/x").await;
    r.assert_fault(502, "upstream.tls.client-certificate-rejected");
    assert!(
        trace.contains("it refused our client certificate CN=gateway-a"),
        "{trace}"
    );
    assert!(trace.contains("(alert "), "the alert is named: {trace}");

    let m = admin_get(gw.admin(), "/metrics").await;
    for want in [
        "gatehouse_upstream_client_certificates_total{upstream=\"a\",reason=\"matched\"} 1",
        "gatehouse_upstream_tls_failures_total{upstream=\"c\",reason=\"client_certificate_mismatch\"} 1",
        "gatehouse_upstream_tls_failures_total{upstream=\"bare\",reason=\"no_client_certificate\"} 1",
        "gatehouse_upstream_tls_failures_total{upstream=\"impostor\",reason=\"client_certificate_rejected\"} 1",
    ] {
        assert!(m.contains(want), "missing `{want}` in:\n{m}");
    }
}

/// The upstream's own certificate: untrusted, expired and wrong-name
/// certificates each get their code; `verify_name` checks another name
/// than the SNI; `insecure_skip_verify` accepts anything and is warned
/// about. Refused connections are 503, connect timeouts 504.
#[tokio::test]
async fn upstream_certificate_failures_each_have_a_code() {
    let dir = TempDir::new("up-tls-causes");
    let ca = Pki::new("Upstream CA");
    let good = ca.server(&dir, "good", &["orders.internal"]);
    let expired = ca.server_valid(
        &dir,
        "expired",
        &["orders.internal"],
        Some(((2020, 1, 1), (2021, 1, 1))),
    );
    ca.write_ca(&dir, "ca.crt");
    let good_up = upstream::start_with(
        upstream::echo_handler(),
        Some(upstream::tls_config(&good.cert, &good.key)),
    )
    .await;
    let expired_up = upstream::start_with(
        upstream::echo_handler(),
        Some(upstream::tls_config(&expired.cert, &expired.key)),
    )
    .await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let yaml = format!(
        r#"
listeners: [{{name: plain, address: "127.0.0.1:0"}}]
upstreams:
  untrusted: {{url: "https://{g}", tls: {{server_name: orders.internal}}}}
  expired: {{url: "https://{e}", tls: {{server_name: orders.internal, truststore: ca.crt}}}}
  wrong-name: {{url: "https://{g}", tls: {{server_name: billing.internal, truststore: ca.crt}}}}
  verify-name: {{url: "https://{g}", tls: {{server_name: billing.internal, verify_name: orders.internal, truststore: ca.crt}}}}
  insecure: {{url: "https://{g}", tls: {{insecure_skip_verify: true}}}}
  refused: {{url: "http://{closed}"}}
{ADMIN}
apis:
  - {{name: untrusted, path: /untrusted, upstream: untrusted}}
  - {{name: expired, path: /expired, upstream: expired}}
  - {{name: wrong-name, path: /wrong-name, upstream: wrong-name}}
  - {{name: verify-name, path: /verify-name, upstream: verify-name}}
  - {{name: insecure, path: /insecure, upstream: insecure}}
  - {{name: refused, path: /refused, upstream: refused}}
"#,
        g = good_up.addr,
        e = expired_up.addr,
    );
    // `check` warns about the upstream that verifies nothing.
    let path = dir.write("gateway.yaml", &yaml);
    let snapshot = gatehouse::gateway::check(Some(&path)).expect("valid");
    let warnings: Vec<String> = snapshot.warnings.iter().map(|w| w.to_string()).collect();
    assert!(
        warnings.iter().any(
            |w| w.contains("upstreams.insecure.tls.insecure_skip_verify")
                && w.contains("NOT verified")
        ),
        "{warnings:?}"
    );
    let gw = Gw::start(dir, &yaml).await;
    let (r, trace) = traced(&gw, "/untrusted/x").await;
    r.assert_fault(502, "upstream.tls.untrusted-certificate");
    assert!(
        trace.contains("set upstreams.untrusted.tls.truststore"),
        "{trace}"
    );
    let (r, _) = traced(&gw, "/expired/x").await;
    r.assert_fault(502, "upstream.tls.expired-certificate");
    let (r, trace) = traced(&gw, "/wrong-name/x").await;
    r.assert_fault(502, "upstream.tls.wrong-name");
    assert!(trace.contains("verify_name"), "{trace}");
    let (r, _) = traced(&gw, "/verify-name/x").await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let (r, _) = traced(&gw, "/insecure/x").await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let (r, trace) = traced(&gw, "/refused/x").await;
    let f = r.assert_fault(503, "upstream.refused");
    assert!(
        !f["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("127.0.0.1"),
        "no address for the client: {f}"
    );
    assert!(
        trace.contains(&format!("cannot connect to upstream `refused` at {closed}")),
        "the address is in the trace: {trace}"
    );
}

/// `check` reports keystore problems: an expired certificate, a key that
/// is not the certificate's, a chain out of order; and a truststore in
/// which nothing can verify anything.
#[tokio::test]
async fn keystore_and_truststore_problems_are_reported_at_load() {
    let dir = TempDir::new("up-keystore-lints");
    let ca = Pki::new("Keystore CA");
    let inter = ca.intermediate("Keystore Intermediate");
    let mut spec = ClientSpec::new("old", 1);
    spec.not_before = Some((2019, 1, 1));
    spec.not_after = Some((2020, 1, 1));
    ca.client(&dir, "old", &spec, "");
    let a = ca.client(&dir, "a", &ClientSpec::new("a", 2), "");
    let b = ca.client(&dir, "b", &ClientSpec::new("b", 3), "");
    // The chain backwards: the intermediate before its leaf.
    let leaf = inter.client(&dir, "leaf", &ClientSpec::new("leaf", 4), "");
    let leaf_pem = std::fs::read_to_string(&leaf.cert).unwrap();
    dir.write("backwards.crt", format!("{}{leaf_pem}", inter.ca_pem));
    // A truststore holding only a leaf certificate that expired.
    std::fs::copy(dir.path().join("old.crt"), dir.path().join("stale-ca.crt")).unwrap();
    let yaml = format!(
        r#"
listeners: [{{name: plain, address: "127.0.0.1:0"}}]
upstreams:
  up:
    url: https://127.0.0.1:9
    tls:
      truststore: stale-ca.crt
      keystore:
        - {{certificate: old.crt, key: old.key}}
        - {{certificate: {a}, key: {b}}}
        - {{certificate: backwards.crt, key: leaf.key}}
apis: [{{name: up, path: /, upstream: up}}]
"#,
        a = a.cert.display(),
        b = b.key.display(),
    );
    let errors = Gw::build_errors(&dir, &yaml).join("\n");
    for want in [
        "upstreams.up.tls.keystore[0].certificate: the certificate (CN=old) in",
        "expired on 2020-01-01 00:00:00 UTC; upstreams refuse it: renew it",
        "upstreams.up.tls.keystore[1].key: the key in",
        "does not belong to the certificate in",
        "upstreams.up.tls.keystore[2].certificate:",
        "the chain is out of order or incomplete: CN=Keystore Intermediate is issued by CN=Keystore CA, but the next certificate is CN=leaf",
        "upstreams.up.tls.truststore:",
        "no certificate in it can verify anything",
    ] {
        assert!(errors.contains(want), "missing `{want}` in:\n{errors}");
    }
}

/// `gatehouse probe`, from a config's upstream and from a URL with
/// `--cert/--key/--ca`: the chain, the acceptable CA names, the keystore
/// judged against them with the one sent marked, and the verdict with its
/// code and fix — OK against an upstream whose CA we have a certificate
/// from, FAILED with the mismatch against one we have none for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_shows_the_chain_the_cas_the_choice_and_the_verdict() {
    let dir = TempDir::new("probe");
    let server_ca = Pki::new("Probe Server CA");
    let server = server_ca.server(&dir, "server", &["orders.internal"]);
    server_ca.write_ca(&dir, "server-ca.crt");
    let ca_a = Pki::new("Probe Partner A");
    let ca_c = Pki::new("Probe Partner C");
    let ca_b = Pki::new("Probe Partner B");
    let a_file = ca_a.write_ca(&dir, "ca-a.crt");
    let c_file = ca_c.write_ca(&dir, "ca-c.crt");
    ca_b.client(&dir, "gw-b", &ClientSpec::new("gateway-b", 1), "");
    ca_a.client(&dir, "gw-a", &ClientSpec::new("gateway-a", 2), "");
    let good = upstream::start_with(
        upstream::echo_handler(),
        Some(upstream::mtls_config(&server.cert, &server.key, &[&a_file])),
    )
    .await;
    let bad = upstream::start_with(
        upstream::echo_handler(),
        Some(upstream::mtls_config(&server.cert, &server.key, &[&c_file])),
    )
    .await;
    let yaml = format!(
        r#"
listeners: [{{name: plain, address: "127.0.0.1:0"}}]
upstreams:
  good:
    url: https://{g}/health
    tls: &tls
      server_name: orders.internal
      truststore: server-ca.crt
      keystore:
        - {{certificate: gw-b.crt, key: gw-b.key}}
        - {{certificate: gw-a.crt, key: gw-a.key}}
  bad:
    url: https://{b}/
    tls: *tls
apis: [{{name: a, path: /, upstream: good}}]
"#,
        g = good.addr,
        b = bad.addr
    );
    let file = dir.write("gateway.yaml", &yaml);

    let target = gatehouse::probe::Target::from_config(&file, "good").expect("target");
    let report = gatehouse::probe::probe(&target).await;
    let text = &report.text;
    assert!(report.ok, "{text}");
    for want in [
        "upstream certificate chain:\n  #0 subject CN=orders.internal\n     issuer  CN=Probe Server CA",
        "key     ECDSA P-256; signed with ECDSA with SHA-256",
        "TLS: TLSv1.3",
        "names   DNS:orders.internal",
        "ALPN (none)",
        "client certificate: asked for, from these CAs:\n  CN=Probe Partner A",
        "#0 CN=gateway-b (issued by CN=Probe Partner B): reaches none of them\n",
        "#1 CN=gateway-a (issued by CN=Probe Partner A): reaches a listed CA  <- sent",
        "sent: CN=gateway-a (its chain reaches a CA the upstream named",
        "verdict: OK GET /health answered 200",
    ] {
        assert!(text.contains(want), "missing `{want}` in:\n{text}");
    }

    let target = gatehouse::probe::Target::from_config(&file, "bad").expect("target");
    let report = gatehouse::probe::probe(&target).await;
    let text = &report.text;
    assert!(!report.ok, "{text}");
    for want in [
        "from these CAs:\n  CN=Probe Partner C",
        "verdict: FAILED upstream.tls.client-certificate-mismatch",
        "it accepts client certificates from CN=Probe Partner C but ours are",
        "add a certificate issued by one of its CAs to upstreams.bad.tls.keystore",
    ] {
        assert!(text.contains(want), "missing `{want}` in:\n{text}");
    }

    // From a URL, as `gatehouse probe URL --cert --key --ca` builds it.
    let d = |f: &str| Some(file.parent().unwrap().join(f));
    let target = gatehouse::probe::Target::url(
        &format!("https://{}/", good.addr),
        d("gw-a.crt"),
        d("gw-a.key"),
        d("server-ca.crt"),
        Some("orders.internal".into()),
    )
    .expect("target");
    let report = gatehouse::probe::probe(&target).await;
    assert!(report.ok, "{}", report.text);
    // Without the CA: the upstream's certificate is not trusted, and the
    // chain is still shown.
    let target = gatehouse::probe::Target::url(
        &format!("https://{}/", good.addr),
        None,
        None,
        None,
        Some("orders.internal".into()),
    )
    .expect("target");
    let report = gatehouse::probe::probe(&target).await;
    assert!(!report.ok);
    assert!(
        report.text.contains("#0 subject CN=orders.internal"),
        "{}",
        report.text
    );
    assert!(
        report
            .text
            .contains("verdict: FAILED upstream.tls.untrusted-certificate"),
        "{}",
        report.text
    );
}

/// Keystore formats as operators have them, made with `openssl`: an RSA
/// key in PKCS#1 (`BEGIN RSA PRIVATE KEY`), an ECDSA key in SEC1 (`BEGIN
/// EC PRIVATE KEY`), an Ed25519 key in PKCS#8; each presented to an
/// upstream that requires the CA that issued them, which reports the
/// certificate it got.
#[tokio::test]
async fn keystore_keys_in_pkcs1_sec1_and_pkcs8_are_presented() {
    let dir = TempDir::new("up-key-formats");
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
openssl ecparam -name prime256v1 -genkey -noout -out ca.key
openssl req -new -x509 -sha256 -days 30 -key ca.key -subj "/CN=Formats CA" -config /dev/null -extensions ca -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" -out ca.crt 2>/dev/null || \
  openssl req -new -x509 -sha256 -days 30 -key ca.key -subj "/CN=Formats CA" -out ca.crt
openssl genrsa -traditional -out rsa.key 2048 2>/dev/null
openssl ecparam -name prime256v1 -genkey -noout -out ec.key
openssl genpkey -algorithm ed25519 -out ed.key
for k in rsa ec ed; do
  openssl req -new -key $k.key -subj "/CN=gateway-$k" -out $k.csr
  openssl x509 -req -days 30 -in $k.csr -CA ca.crt -CAkey ca.key -CAcreateserial -extfile ext.cnf -extensions client -out $k.crt 2>/dev/null
done
head -1 rsa.key ec.key ed.key
"#;
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(script)
        .current_dir(dir.path())
        .output()
        .expect("bash and openssl");
    let heads = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        "BEGIN RSA PRIVATE KEY",
        "BEGIN EC PRIVATE KEY",
        "BEGIN PRIVATE KEY",
    ] {
        assert!(
            heads.contains(want),
            "the key formats are not the intended ones: {heads}"
        );
    }
    let server_ca = Pki::new("Formats Server CA");
    let server = server_ca.server(&dir, "server", &["orders.internal"]);
    server_ca.write_ca(&dir, "server-ca.crt");
    let up = upstream::start_with(
        upstream::echo_handler(),
        Some(upstream::mtls_config(
            &server.cert,
            &server.key,
            &[&dir.path().join("ca.crt")],
        )),
    )
    .await;
    let yaml = format!(
        r#"
listeners: [{{name: plain, address: "127.0.0.1:0"}}]
upstreams:
  rsa: {{url: "https://{a}", tls: {{server_name: orders.internal, truststore: server-ca.crt, keystore: [{{certificate: rsa.crt, key: rsa.key}}]}}}}
  ec: {{url: "https://{a}", tls: {{server_name: orders.internal, truststore: server-ca.crt, keystore: [{{certificate: ec.crt, key: ec.key}}]}}}}
  ed: {{url: "https://{a}", tls: {{server_name: orders.internal, truststore: server-ca.crt, keystore: [{{certificate: ed.crt, key: ed.key}}]}}}}
apis:
  - {{name: rsa, path: /rsa, upstream: rsa}}
  - {{name: ec, path: /ec, upstream: ec}}
  - {{name: ed, path: /ed, upstream: ed}}
"#,
        a = up.addr
    );
    let gw = Gw::start(dir, &yaml).await;
    for k in ["rsa", "ec", "ed"] {
        let r = Client::plain(gw.addr("plain"))
            .get(&format!("/{k}/x"), &[])
            .await;
        assert_eq!(r.status, 200, "{k}: {}", String::from_utf8_lossy(&r.body));
        let pem = std::fs::read(gw.dir.path().join(format!("{k}.crt"))).unwrap();
        let der = rustls::pki_types::pem::PemObject::from_pem_slice(&pem)
            .map(|c: rustls::pki_types::CertificateDer<'static>| c.to_vec())
            .unwrap();
        assert_eq!(
            r.json()["client_cert_sha256"],
            sha256(&der),
            "{k}: the upstream got our {k} certificate"
        );
    }
}

/// Stops an nginx started by a test.
struct Nginx(std::path::PathBuf);

impl Drop for Nginx {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.0.join("nginx.pid")) {
            let _ = std::process::Command::new("kill")
                .args(["-QUIT", pid.trim()])
                .status();
        }
    }
}

/// nginx as the upstream, with `ssl_verify_client on` (nginx is installed
/// by `.ci/run`): it lists the CA of its `ssl_client_certificate` in its
/// CertificateRequest, the gateway sends the certificate issued by it —
/// second in the keystore — and nginx reports the subject it verified.
#[tokio::test]
async fn nginx_with_ssl_verify_client_gets_the_certificate_it_names() {
    let dir = TempDir::new("up-nginx");
    let server_ca = Pki::new("Nginx Server CA");
    server_ca.server(&dir, "server", &["orders.internal"]);
    server_ca.write_ca(&dir, "server-ca.crt");
    let ca_a = Pki::new("Nginx Partner A");
    let ca_b = Pki::new("Nginx Partner B");
    ca_a.write_ca(&dir, "ca-a.crt");
    ca_b.client(&dir, "gw-b", &ClientSpec::new("gateway-b", 1), "");
    ca_a.client(&dir, "gw-a", &ClientSpec::new("gateway-a", 2), "");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let d = dir.path().display().to_string();
    dir.write(
        "nginx.conf",
        format!(
            r#"worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 64; }}
http {{
  access_log off;
  client_body_temp_path {d}/body; proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fcgi; uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
  server {{
    listen 127.0.0.1:{port} ssl;
    ssl_certificate {d}/server.crt;
    ssl_certificate_key {d}/server.key;
    ssl_client_certificate {d}/ca-a.crt;
    ssl_verify_client on;
    location / {{ return 200 "$ssl_client_verify $ssl_client_s_dn"; }}
  }}
}}
"#
        ),
    );
    let started = std::process::Command::new("nginx")
        .args([
            "-p",
            &d,
            "-e",
            &format!("{d}/error.log"),
            "-c",
            &format!("{d}/nginx.conf"),
        ])
        .output()
        .expect("nginx (installed by .ci/run)");
    assert!(
        started.status.success(),
        "nginx did not start: {}",
        String::from_utf8_lossy(&started.stderr)
    );
    let _nginx = Nginx(dir.path().to_path_buf());
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let yaml = format!(
        r#"
listeners: [{{name: plain, address: "127.0.0.1:0"}}]
upstreams:
  nginx:
    url: https://127.0.0.1:{port}
    tls:
      server_name: orders.internal
      truststore: server-ca.crt
      keystore:
        - {{certificate: gw-b.crt, key: gw-b.key}}
        - {{certificate: gw-a.crt, key: gw-a.key}}
apis: [{{name: nginx, path: /, upstream: nginx}}]
"#
    );
    let gw = Gw::start(
        TempDir::new("up-nginx-gw"),
        &yaml
            .replace("server-ca.crt", &format!("{d}/server-ca.crt"))
            .replace("gw-", &format!("{d}/gw-")),
    )
    .await;
    let r = Client::plain(gw.addr("plain")).get("/", &[]).await;
    let body = String::from_utf8_lossy(&r.body).into_owned();
    assert_eq!(r.status, 200, "{body}");
    assert_eq!(
        body, "SUCCESS CN=gateway-a",
        "nginx verified our Partner A certificate"
    );
}
