//! Secret named values: a policy that only passes one on (`{{ref:name}}`)
//! never holds it, and a secret a policy does hold never reaches the
//! client, a trace or the access log — nor its base64 and percent-encoded
//! forms.

use std::time::Duration;

use gatehouse_tests::{upstream, Client, Gw, TempDir};

const SECRET: &str = "s3cr3t/t0ken+value";
const TRACE_KEY: &str = "trace-key-of-the-secret-test";

async fn gateway(up: std::net::SocketAddr, note: &str) -> Gw {
    let yaml = format!(
        r#"
listeners: [{{name: plain, address: "127.0.0.1:0"}}]
named_values:
  token: {{value: "{SECRET}", secret: true}}
  trace-key: {{value: "{TRACE_KEY}", secret: true}}
admin: {{address: "127.0.0.1:0", trace_key: trace-key}}
access_log: {{path: access.log, include_query: true}}
upstreams: {{app: {{url: "http://{up}"}}}}
custom_policies:
  misbehave: {{wasm: "{}"}}
apis:
  - name: app
    path: /
    upstream: app
    policies:
      inbound:
        - misbehave: {{note: "{note}"}}
        - set-header: {{name: authorization, value: "Bearer {{{{ref:token}}}}"}}
"#,
        gatehouse_tests::misbehave_wasm()
    );
    Gw::start(TempDir::new("secrets"), &yaml).await
}

#[tokio::test]
async fn a_reference_reaches_the_upstream_but_never_the_policy() {
    let up = upstream::echo().await;
    let gw = gateway(up.addr, "{{ref:token}}").await;
    let c = Client::plain(gw.addr("plain"));
    // Passed on in a request header: the upstream gets the value.
    let r = c.get("/", &[("x-misbehave", "set-note")]).await;
    let h = &r.json()["headers"];
    assert_eq!(h["x-note"], serde_json::json!([SECRET]));
    assert_eq!(
        h["authorization"],
        serde_json::json!([format!("Bearer {SECRET}")])
    );
    // What the policy holds is the reference, not the value: sent back to
    // the client, it is the reference.
    let r = c.get("/", &[("x-misbehave", "respond-note")]).await;
    let note = r.header("x-note").unwrap();
    assert!(note.starts_with("gatehouse-secret-ref-"), "{note}");
    assert!(!format!("{:?}", r.headers).contains("s3cr3t"));
}

#[tokio::test]
async fn a_held_secret_is_redacted_in_every_form_on_the_way_to_the_client() {
    let up = upstream::echo().await;
    let gw = gateway(up.addr, "{{token}}").await;
    let c = Client::plain(gw.addr("plain"));
    let r = c
        .get(
            "/",
            &[
                ("x-misbehave", "respond-note"),
                ("x-gatehouse-trace", TRACE_KEY),
            ],
        )
        .await;
    assert_eq!(r.status, 200);
    for h in ["x-note", "x-note-b64", "x-note-pct"] {
        assert_eq!(r.header(h), Some("***"), "{h}: {:?}", r.header(h));
    }
    // A secret in the request (here, in the query) is not in the access
    // log or the trace, whichever form it came in.
    let encoded = "s3cr3t%2Ft0ken%2Bvalue";
    let r = c
        .get(
            &format!("/q?a={encoded}&b={SECRET}"),
            &[("x-gatehouse-trace", TRACE_KEY)],
        )
        .await;
    let id = r.header("x-gatehouse-trace-id").unwrap().to_string();
    let log = gw.dir.path().join("access.log");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let text = loop {
        let t = std::fs::read_to_string(&log).unwrap_or_default();
        if t.lines().count() >= 2 {
            break t;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no access log lines: {t}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(text.contains("/q?a=***&b=***"), "{text}");
    assert!(!text.contains("s3cr3t"), "{text}");
    let trace = Client::plain(gw.admin())
        .get(&format!("/traces/{id}"), &[])
        .await;
    assert_eq!(trace.status, 200);
    let t = String::from_utf8_lossy(&trace.body);
    assert!(!t.contains("s3cr3t"), "{t}");
}
