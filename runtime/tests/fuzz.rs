//! Property fuzzing of the parsers and renderers that take input from the
//! network, files and policies. (`cargo fuzz` needs a nightly toolchain,
//! which this project's machine does not have; these harnesses generate
//! inputs with `proptest` strategies and run under `cargo test` on stable.)
//!
//! Each target runs for `GATEHOUSE_FUZZ_SECONDS` (default 3; `.ci/run` runs
//! them for 60) and prints how many inputs it tried. A failure prints the
//! input; every failure found becomes a regression case in `regressions()`
//! of its target.
//!
//! Targets: config loading, path normalisation and routing, the authority
//! parser, certificate parsing into the policy's view, problem document
//! rendering, header edit application.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRunner};

fn budget() -> Duration {
    let secs = std::env::var("GATEHOUSE_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or(3.0);
    Duration::from_secs_f64(secs)
}

/// Runs `check` on inputs from `strategy` until the time budget is spent.
fn fuzz<S>(name: &str, strategy: S, check: impl Fn(&S::Value))
where
    S: Strategy,
    S::Value: std::fmt::Debug,
{
    let mut runner = TestRunner::new(Config {
        failure_persistence: None,
        ..Config::default()
    });
    let started = Instant::now();
    let mut runs = 0u64;
    while started.elapsed() < budget() {
        let value = match strategy.new_tree(&mut runner) {
            Ok(tree) => tree.current(),
            Err(e) => panic!("{name}: cannot generate an input: {e}"),
        };
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| check(&value))) {
            let why = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!("fuzz {name}: input {value:?} failed: {why}");
        }
        runs += 1;
    }
    println!(
        "fuzz {name}: {runs} inputs in {:.1} s, no failure",
        started.elapsed().as_secs_f64()
    );
}

/// Path-ish text: the characters that matter to normalisation, more often.
fn pathish() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            4 => Just("/".to_string()),
            2 => Just(".".to_string()),
            2 => Just("..".to_string()),
            2 => Just(";".to_string()),
            2 => Just("%".to_string()),
            1 => Just("%2e".to_string()),
            1 => Just("%2F".to_string()),
            1 => Just("%3B".to_string()),
            1 => Just("\\".to_string()),
            1 => Just("%ZZ".to_string()),
            4 => "[a-zA-Z0-9_~-]{1,6}",
            1 => any::<char>().prop_map(|c| c.to_string()),
        ],
        0..24,
    )
    .prop_map(|parts| format!("/{}", parts.concat()))
}

#[test]
fn path_normalisation_and_routing() {
    use gatehouse::proxy::normalize::path;
    use gatehouse::proxy::route::{ApiRoute, OperationRoute, Routed, Router, Template};
    let op = |name: &str, t: &str| OperationRoute {
        name: Arc::from(name),
        method: None,
        template: Template::parse(t).expect("template"),
        data: (),
    };
    let api = |name: &str, prefix: &str, ci: bool, ops: Vec<OperationRoute<()>>| ApiRoute {
        name: Arc::from(name),
        hosts: vec![],
        prefix: prefix.to_string(),
        case_insensitive: ci,
        operations: ops,
        data: (),
    };
    let router = Router::new(vec![
        api("root", "", false, vec![]),
        api(
            "admin",
            "/admin",
            false,
            vec![op("user", "/admin/{id}"), op("rest", "/admin/x/{*r}")],
        ),
        api("iis", "/IIS", true, vec![]),
    ]);
    fuzz("path normalisation + routing", pathish(), |p| {
        if let Ok((normal, _)) = path(p) {
            let n = normal.as_ref();
            // A normal path starts with `/`, has no empty, `.` or `..`
            // segment, no raw `\` and no `;` parameter left.
            assert!(n.starts_with('/'), "{n}");
            assert!(!n.contains("//"), "{n}");
            assert!(!n.contains('\\'), "{n}");
            assert!(!n.contains(';'), "{n}");
            for seg in n.split('/').skip(1) {
                assert!(seg != "." && seg != "..", "{n}");
            }
            // Normalising again changes nothing.
            let (again, had) = path(n).expect("a normal path normalises");
            assert_eq!(again.as_ref(), n);
            assert!(!had);
            // Routing takes it, whatever it is.
            match router.route("h", &http::Method::GET, n) {
                Routed::Found { .. } | Routed::MethodNotAllowed { .. } | Routed::NotFound => {}
            }
        }
    });
}

#[test]
fn authority_parsing() {
    use gatehouse::proxy::normalize::authority;
    let s = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..40),
        "[a-zA-Z0-9.:@\\[\\]%_-]{0,40}".prop_map(String::into_bytes),
    ];
    fuzz("authority", s, |raw| {
        if let Ok((canonical, host)) = authority(raw) {
            // The canonical form is ASCII, lower case, parses to itself.
            assert!(canonical.is_ascii());
            assert_eq!(canonical, canonical.to_ascii_lowercase());
            let (again, host_again) = authority(canonical.as_bytes()).expect("canonical parses");
            assert_eq!(again, canonical);
            assert_eq!(host_again, host);
            assert!(!host.contains('@'));
        }
    });
}

#[test]
fn config_loading() {
    use gatehouse::config::{parse, Source};
    let source = Source {
        file: "fuzz.yaml".into(),
        base_dir: ".".into(),
        path: None,
        text: Arc::from(""),
    };
    let valid = gatehouse::config::QUICKSTART_YAML;
    let s = prop_oneof![
        // Arbitrary text.
        "\\PC{0,200}",
        // The quickstart with a slice cut out and something else put in.
        (0..valid.len(), 0..40usize, "\\PC{0,20}").prop_map(move |(at, cut, put)| {
            let at = (0..=at)
                .rev()
                .find(|i| valid.is_char_boundary(*i))
                .unwrap_or(0);
            let end = (at + cut..=valid.len())
                .find(|i| valid.is_char_boundary(*i))
                .unwrap_or(valid.len());
            format!("{}{}{}", &valid[..at], put, &valid[end..])
        }),
    ];
    fuzz("config loading", s, |text| {
        if let Err(e) = parse(text, &source) {
            // Every error names the file.
            assert!(e.to_string().starts_with("fuzz.yaml"), "{e}");
        }
    });
}

#[test]
fn certificate_parsing_into_the_policy_view() {
    use gatehouse::tls::certinfo::CertInfo;
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params =
        rcgen::CertificateParams::new(vec!["a.test".into(), "127.0.0.1".into()]).expect("params");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "client, O=Trusted");
    let der = params.self_signed(&key).expect("cert").der().to_vec();
    assert!(CertInfo::parse(&der, true, None).is_ok());
    let len = der.len();
    let s = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..600),
        // The real certificate with bytes flipped, cut or inserted.
        prop::collection::vec((0..len, any::<u8>()), 1..8).prop_map({
            let der = der.clone();
            move |flips| {
                let mut d = der.clone();
                for (i, b) in flips {
                    d[i] ^= b;
                }
                d
            }
        }),
        (0..len).prop_map({
            let der = der.clone();
            move |cut| der[..cut].to_vec()
        }),
    ];
    fuzz("certificate parsing", s, |bytes| {
        if let Ok(info) = CertInfo::parse(bytes, false, Some("fuzz".into())) {
            assert_eq!(info.thumbprint_sha256.len(), 64);
            assert!(!info.serial.is_empty());
        }
    });
}

#[test]
fn problem_document_rendering() {
    use gatehouse::policy::bindings::{Fault as WitFault, Header};
    use gatehouse::proxy::fault::Fault;
    let text = "\\PC{0,60}|[\\x00-\\x1f\"\\\\]{0,10}";
    let header = (text, text).prop_map(|(name, value)| Header { name, value });
    let s = (
        any::<u16>(),
        text,
        text,
        text,
        prop::collection::vec(header, 0..5),
    );
    fuzz(
        "problem document",
        s,
        |(status, code, title, detail, headers)| {
            let f = Fault::from_policy(
                "fuzz",
                WitFault {
                    status: *status,
                    code: code.clone(),
                    title: title.clone(),
                    detail: detail.clone(),
                    headers: headers.clone(),
                },
            );
            let body = f.body("rid");
            let doc: serde_json::Value =
                serde_json::from_slice(&body).expect("the document is JSON");
            assert_eq!(doc["status"], f.status.as_u16());
            assert_eq!(doc["request_id"], "rid");
            if f.code == *code {
                assert_eq!(doc["detail"], detail.as_str());
            }
            let resp = f.into_response("rid");
            assert!(resp.headers().get("content-length").is_none());
            assert!(resp.headers().get("transfer-encoding").is_none());
        },
    );
}

#[test]
fn header_edit_application() {
    use gatehouse::policy::bindings::{Header, HeaderEdit};
    use gatehouse::proxy::chain::{apply_edits, Issuer, Section};
    let name = prop_oneof![
        Just("content-length".to_string()),
        Just("transfer-encoding".to_string()),
        Just("connection".to_string()),
        Just("x-a".to_string()),
        "[a-zA-Z0-9!#$%&'*+.^_`|~-]{0,12}",
        "\\PC{0,8}",
    ];
    let value = prop_oneof!["[ -~]{0,20}", "\\PC{0,20}", "[\\x00-\\x1f]{0,3}"];
    let edit = prop_oneof![
        (name.clone(), value.clone())
            .prop_map(|(name, value)| HeaderEdit::Set(Header { name, value })),
        (name.clone(), value).prop_map(|(name, value)| HeaderEdit::Append(Header { name, value })),
        name.prop_map(HeaderEdit::Remove),
    ];
    let sections = prop_oneof![
        Just(Section::Inbound),
        Just(Section::Outbound),
        Just(Section::OnError)
    ];
    let s = (prop::collection::vec(edit, 0..40), sections);
    let secrets = gatehouse::config::Secrets::default();
    fuzz("header edits", s, |(edits, section)| {
        let mut h = http::HeaderMap::new();
        h.insert("content-length", http::HeaderValue::from_static("5"));
        let by = Issuer {
            name: "fuzz",
            secrets: &secrets,
        };
        let _ = apply_edits(&mut h, edits.clone(), &by, *section);
        // Framing and hop-by-hop headers are the gateway's alone.
        assert_eq!(
            h.get("content-length").map(|v| v.as_bytes()),
            Some(&b"5"[..])
        );
        for n in [
            "transfer-encoding",
            "connection",
            "keep-alive",
            "te",
            "upgrade",
        ] {
            assert!(!h.contains_key(n), "{n}");
        }
    });
}
