//! The `durable` counter store across a real `kill -9`: a gateway process
//! counts quota calls, is killed with SIGKILL, and a new process on the
//! same file goes on from the count. The gateway process is this test
//! binary run again as `durable_child` (it starts a gateway from the
//! config named in `GATEHOUSE_DURABLE_CHILD` and prints its address).

use std::time::Duration;

use gatehouse_tests::child::{self, GatewayProcess};
use gatehouse_tests::client::{burst, count};
use gatehouse_tests::{Client, Gw, TempDir};

/// Not a test of its own: the gateway process of
/// [`a_quota_survives_kill_9`]. Without the variable it does nothing.
#[tokio::test(flavor = "multi_thread")]
async fn durable_child() {
    child::serve_if_asked("GATEHOUSE_DURABLE_CHILD").await;
}

fn spawn_child(yaml: &str) -> (GatewayProcess, std::net::SocketAddr) {
    child::spawn("durable_child", "GATEHOUSE_DURABLE_CHILD", yaml)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_quota_survives_kill_9() {
    let dir = TempDir::new("durable");
    let file = dir.path().join("counters.redb");
    let yaml = format!(
        r#"
listeners: [{{name: main, address: "127.0.0.1:0"}}]
upstreams: {{echo: {{url: "builtin:echo"}}}}
counters: {{backend: durable, path: "{}", flush_ms: 50}}
apis:
  - name: q
    path: /q
    upstream: echo
    policies:
      inbound:
        - quota: {{calls: 5, renewal_period: 0}}
"#,
        file.display()
    );
    let (mut first, addr) = spawn_child(&yaml);
    for i in 0..3 {
        let r = Client::plain(addr).get("/q", &[]).await;
        assert_eq!(r.status, 200, "call {i}");
    }
    // Past flush_ms: the three calls are on disk. Then SIGKILL.
    tokio::time::sleep(Duration::from_millis(400)).await;
    first.kill();

    let (second, addr) = spawn_child(&yaml);
    for i in 3..5 {
        let r = Client::plain(addr).get("/q", &[]).await;
        assert_eq!(r.status, 200, "call {i}: the count went on from 3");
    }
    Client::plain(addr)
        .get("/q", &[])
        .await
        .assert_fault(403, "policy.quota.exceeded");
    drop(second);
}

#[tokio::test]
async fn durable_settings_are_checked() {
    let dir = TempDir::new("durable-errors");
    let errors = Gw::build_errors(
        &dir,
        r#"
listeners: [{name: main, address: "127.0.0.1:0"}]
counters: {backend: durable}
"#,
    );
    assert!(
        errors
            .iter()
            .any(|e| e.contains("counters.path: the durable backend needs a file")),
        "{errors:?}"
    );
    // `gatehouse check` opens no counter file (a running gateway holds it).
    let file = dir.path().join("c.redb");
    let errors = Gw::build_errors(
        &dir,
        &format!(
            r#"
listeners: [{{name: main, address: "127.0.0.1:0"}}]
counters: {{backend: durable, path: "{}"}}
"#,
            file.display()
        ),
    );
    assert!(errors.is_empty(), "{errors:?}");
    assert!(!file.exists(), "check must not create the counter file");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_concurrent_requests_against_fifty_admit_exactly_fifty_in_the_durable_store() {
    let dir = TempDir::new("durable-exact");
    let file = dir.path().join("counters.redb");
    let yaml = format!(
        r#"
listeners: [{{name: main, address: "127.0.0.1:0"}}]
upstreams: {{echo: {{url: "builtin:echo"}}}}
counters: {{backend: durable, path: "{}"}}
apis:
  - name: limited
    path: /limited
    upstream: echo
    policies:
      inbound:
        - rate-limit-by-key:
            calls: 50
            renewal_period: 300
            counter_key: "request.headers['x-client']"
"#,
        file.display()
    );
    let gw = Gw::start(dir, &yaml).await;
    let addr = gw.addr("main");
    let statuses = burst(&[addr], "/limited", 200, &[("x-client", "a")]).await;
    assert_eq!(count(&statuses, 200), 50);
    assert_eq!(count(&statuses, 429), 150);
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(gw);
}
