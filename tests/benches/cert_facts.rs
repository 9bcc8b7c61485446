//! The cost per request of a policy reading client-certificate facts, on
//! a connection whose client presented a certificate (a `required` host,
//! a real chain made here, the gateway's own TLS host table):
//!
//! - on a keep-alive connection (the facts were parsed by an earlier
//!   request): a policy call that reads nothing, the same call reading
//!   the SHA-256 thumbprint through the 0.1.2 accessor
//!   (`tests/guests/cert-facts`, `only: thumbprint`), and `set-header`
//!   reading it through a CEL expression;
//! - `validate-client-certificate` with its default checks and two
//!   identities (the second matches: subject and issuer subject);
//! - on the first request of a connection, which parses the certificate
//!   (and, for the issuer thumbprint, finds the verified path) once.
//!
//! `cargo bench -p gatehouse-tests --bench cert_facts`

use std::net::SocketAddr;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use gatehouse::exchange::{ConnInfo, Exchange, TlsInfo};
use gatehouse::policy::{builtin, PolicyRuntime};
use gatehouse::proxy::chain::{self, Outcome, Section};
use gatehouse::proxy::snapshot::ChainStep;
use gatehouse::tls::server::TlsListener;
use gatehouse_tests::bench::runtime;
use gatehouse_tests::pki::ClientSpec;
use gatehouse_tests::{Pki, TempDir};

// The allocator the gatehouse binary runs with (runtime/src/main.rs).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn step(rt: &Arc<PolicyRuntime>, name: &str, wasm: &[u8], config: &str) -> Vec<ChainStep> {
    gatehouse_tests::bench::step(rt, name, wasm, config, 4)
}

/// The TLS side of a connection from a client that presented `chain` to
/// `table`'s only host.
fn tls_conn(table: &Arc<TlsListener>, chain: &[Vec<u8>]) -> Arc<ConnInfo> {
    let addr: SocketAddr = "127.0.0.1:50000".parse().expect("addr");
    let tls = TlsInfo {
        sni: Some("test.com".into()),
        alpn: Some("h2".into()),
        version: "TLSv1.3",
        table: table.clone(),
        host_index: 0,
        handshake_us: 0,
        client_chain: chain
            .iter()
            .map(|d| rustls::pki_types::CertificateDer::from(d.clone()))
            .collect(),
        client_cert_cache: Default::default(),
        issuer_cache: Default::default(),
        issued_by_cache: Default::default(),
    };
    Arc::new(ConnInfo::new(addr, addr, Arc::from("bench"), Some(tls)))
}

fn exchange(conn: &Arc<ConnInfo>) -> Box<Exchange> {
    gatehouse_tests::bench::exchange(conn, "test.com", &[])
}

fn bench(c: &mut Criterion) {
    // A CA, an intermediate, a client certificate issued by the
    // intermediate, and a host that requires certificates from the CA.
    let dir = TempDir::new("bench-cert-facts");
    let pki = Pki::new("Bench Root");
    pki.server(&dir, "server", &["test.com"]);
    pki.write_ca(&dir, "ca.crt");
    let inter = pki.intermediate("Bench Intermediate");
    let client = inter.client(&dir, "client", &ClientSpec::new("client", 7), &inter.ca_pem);
    let chain = vec![client.der.to_vec(), inter.ca_der.to_vec()];
    let yaml = format!(
        "hosts:\n  - names: [test.com]\n    certificate: {d}/server.crt\n    key: {d}/server.key\n    client_certificate: {{mode: required, truststore: {d}/ca.crt}}\n",
        d = dir.path().display()
    );
    let tls_config: gatehouse::config::ListenerTls =
        serde_yaml_ng::from_str(&yaml).expect("listener tls");
    let source = gatehouse::config::Source {
        file: "bench.yaml".into(),
        base_dir: dir.path().to_path_buf(),
        path: None,
        text: Arc::from(yaml.as_str()),
    };
    let (mut errors, mut warnings) = (Vec::new(), Vec::new());
    let table = Arc::new(
        TlsListener::build(&tls_config, &source, "tls", &mut errors, &mut warnings)
            .unwrap_or_else(|| panic!("tls host table: {errors:?}")),
    );

    let rt = runtime();
    let facts_wasm = std::fs::read(gatehouse_tests::cert_facts_wasm()).expect("cert-facts wasm");
    let set = builtin::get("set-header").expect("set-header");
    let fixed = step(
        &rt,
        "set-header",
        set,
        r#"{"name":"x-client","value":"fixed"}"#,
    );
    let accessor = step(&rt, "cert-facts", &facts_wasm, r#"{"only":"thumbprint"}"#);
    let cel = step(
        &rt,
        "set-header",
        set,
        r#"{"name":"x-client","expression":"client_cert.thumbprint_sha256"}"#,
    );
    let cel_issuer = step(
        &rt,
        "set-header",
        set,
        r#"{"name":"x-client","expression":"client_cert.issuer_thumbprint_sha256"}"#,
    );
    let vcc = builtin::get("validate-client-certificate").expect("validate-client-certificate");
    let validate = step(
        &rt,
        "validate-client-certificate",
        vcc,
        r#"{"identities":[{"common_name":"nobody"},{"subject":"CN=client","issuer_subject":"CN=Bench Intermediate"}]}"#,
    );
    let mut ran = Vec::new();
    let mut run = |steps: &[ChainStep], ex: Box<Exchange>, want: Option<&str>| match chain::run(
        Section::Inbound,
        steps,
        ex,
        &mut ran,
    ) {
        Outcome::Continue(ex) => {
            if let Some(want) = want {
                let got = ex
                    .request
                    .headers
                    .get(want)
                    .expect("the policy set its header");
                assert_eq!(got.len(), 64, "a SHA-256 in hex");
            }
            ex
        }
        _ => panic!("the policy must let the request through"),
    };

    // Keep-alive: one connection, facts parsed by the first request.
    let conn = tls_conn(&table, &chain);
    for (name, steps, header) in [
        ("keep-alive: set-header, reads nothing", &fixed, None),
        (
            "keep-alive: cert-facts, thumbprint via accessor",
            &accessor,
            Some("x-client-thumbprint"),
        ),
        (
            "keep-alive: set-header, thumbprint via CEL",
            &cel,
            Some("x-client"),
        ),
        (
            "keep-alive: validate-client-certificate, checks and two identities",
            &validate,
            None,
        ),
    ] {
        let _ = run(steps, exchange(&conn), header);
        c.bench_function(name, |b| {
            b.iter_batched(
                || exchange(&conn),
                |ex| run(steps, ex, header),
                BatchSize::SmallInput,
            )
        });
    }

    // The first request on a connection: the facts are parsed then.
    for (name, steps, header) in [
        ("new connection: set-header, reads nothing", &fixed, None),
        (
            "new connection: cert-facts, thumbprint via accessor",
            &accessor,
            Some("x-client-thumbprint"),
        ),
        (
            "new connection: set-header, issuer thumbprint via CEL",
            &cel_issuer,
            Some("x-client"),
        ),
    ] {
        c.bench_function(name, |b| {
            b.iter_batched(
                || exchange(&tls_conn(&table, &chain)),
                |ex| run(steps, ex, header),
                BatchSize::SmallInput,
            )
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
