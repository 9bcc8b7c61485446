//! Attack suite: hostile policies. The fixture policy
//! (`tests/guests/misbehave`) tries every host-side cap; each attempt
//! costs its own request `500 policy.limit` (or `policy.timeout`), never a
//! panic of the gateway, and the next request is served.
//!
//! References: the review's findings 6 and 7 (unbounded CEL, expression
//! tables and variables; `HeaderMap` panics past about 24.5k names; edits
//! and bodies up to the guest's memory copied to the host); CWE-400 and
//! CWE-770 (resource consumption by a plugin); Envoy's proxy-wasm
//! sandboxing notes (host calls outside the VM's limits).

use std::time::{Duration, Instant};

use gatehouse_tests::{upstream, Client, Gw, TempDir};

async fn gateway(up: std::net::SocketAddr) -> Gw {
    let yaml = format!(
        r#"
listeners: [{{name: plain, address: "127.0.0.1:0"}}]
upstreams: {{app: {{url: "http://{up}"}}}}
custom_policies:
  misbehave: {{wasm: "{}"}}
# A cap must be what stops each attempt, not the deadline, even on a busy
# machine running many tests at once; slow-expr is far past this deadline.
policy_runtime: {{call_deadline_ms: 1000}}
apis:
  - name: app
    path: /
    upstream: app
    policies: {{inbound: [misbehave]}}
"#,
        gatehouse_tests::misbehave_wasm()
    );
    Gw::start(TempDir::new("hostile"), &yaml).await
}

#[tokio::test]
async fn every_cap_fails_only_its_own_request() {
    let up = upstream::echo().await;
    let gw = gateway(up.addr).await;
    let c = Client::plain(gw.addr("plain"));
    for mode in [
        "many-edits",
        "big-edit",
        "big-respond",
        "big-fault",
        "many-vars",
        "long-var-name",
        "many-exprs",
    ] {
        c.get("/", &[("x-misbehave", mode)])
            .await
            .assert_fault(500, "policy.limit");
        // The gateway is fine, and so is the instance.
        assert_eq!(
            c.get("/", &[("x-misbehave", "no")]).await.status,
            200,
            "after {mode}"
        );
    }
    assert!(up.seen().iter().all(|s| s == "GET /"), "{:?}", up.seen());
}

#[tokio::test]
async fn a_costly_expression_is_refused_or_cut_by_the_deadline() {
    let up = upstream::echo().await;
    let gw = gateway(up.addr).await;
    let c = Client::plain(gw.addr("plain"));
    // Too many comprehensions: refused when compiled; the policy gets the
    // error.
    let r = c.get("/", &[("x-misbehave", "many-comprehensions")]).await;
    assert_eq!(r.status, 200);
    let err = r.json()["headers"]["x-compile-error"][0]
        .as_str()
        .unwrap()
        .to_string();
    assert!(err.contains("comprehensions"), "{err}");
    // An evaluation that runs past the call's deadline ends the call as a
    // timeout, host time included.
    let started = Instant::now();
    c.get("/", &[("x-misbehave", "slow-expr")])
        .await
        .assert_fault(500, "policy.timeout");
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(c.get("/", &[("x-misbehave", "no")]).await.status, 200);
}

#[tokio::test]
async fn instances_that_keep_trapping_are_rebuilt_within_a_budget() {
    let up = upstream::echo().await;
    let gw = gateway(up.addr).await;
    let c = Client::plain(gw.addr("plain"));
    let mut traps = 0;
    let mut unavailable = 0;
    for _ in 0..80 {
        let r = c.get("/", &[("x-misbehave", "panic")]).await;
        let code = r.json()["code"].as_str().unwrap_or("").to_string();
        match (r.status.as_u16(), code.as_str()) {
            (500, "policy.trap") => traps += 1,
            (503, "policy.unavailable") => unavailable += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(traps >= 16, "{traps} traps");
    assert!(
        unavailable > 0,
        "80 trapping requests in a row were each given a new instance ({traps} traps)"
    );
    // The budget refills: good requests are served again shortly.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = c.get("/", &[("x-misbehave", "no")]).await;
        if r.status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "the policy never recovered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
