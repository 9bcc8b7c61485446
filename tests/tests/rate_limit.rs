//! `rate-limit` and `rate-limit-by-key` on a real gateway, counted by the
//! host's memory store: exactness under 200 concurrent requests, one
//! count per scope, per key, the 429 with its headers, the variables,
//! counts kept across a reload, and the store's key cap with both fail
//! modes.

use std::net::SocketAddr;

use gatehouse_tests::client::count;
use gatehouse_tests::{Client, Gw, Reply, TempDir};

async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Reply {
    Client::plain(addr).get(path, headers).await
}

async fn burst(addr: SocketAddr, path: &str, n: usize, headers: &[(&str, &str)]) -> Vec<u16> {
    gatehouse_tests::client::burst(&[addr], path, n, headers).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_concurrent_requests_against_fifty_admit_exactly_fifty() {
    let yaml = r#"
listeners: [{name: main, address: "127.0.0.1:0"}]
upstreams: {echo: {url: "builtin:echo"}}
apis:
  - name: limited
    path: /limited
    upstream: echo
    policies:
      inbound:
        - rate-limit: {calls: 50, renewal_period: 300}
  - name: by-key
    path: /by-key
    upstream: echo
    policies:
      inbound:
        - rate-limit-by-key:
            calls: 50
            renewal_period: 300
            counter_key: "request.headers['x-client']"
"#;
    let gw = Gw::start(TempDir::new("rate-exact"), yaml).await;
    let addr = gw.addr("main");
    let statuses = burst(addr, "/limited", 200, &[]).await;
    assert_eq!(count(&statuses, 200), 50, "exactly the limit is admitted");
    assert_eq!(count(&statuses, 429), 150, "the rest is refused");
    let statuses = burst(addr, "/by-key", 200, &[("x-client", "a")]).await;
    assert_eq!(count(&statuses, 200), 50, "exactly the limit for key a");
    assert_eq!(count(&statuses, 429), 150);
    // Key b has its own count.
    let statuses = burst(addr, "/by-key", 60, &[("x-client", "b")]).await;
    assert_eq!(count(&statuses, 200), 50);
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    drop(gw);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_refusal_headers_and_variables_are_as_configured() {
    let yaml = r#"
listeners: [{name: main, address: "127.0.0.1:0"}]
upstreams: {echo: {url: "builtin:echo"}}
apis:
  - name: a
    path: /a
    upstream: echo
    policies:
      inbound:
        - rate-limit:
            calls: 2
            renewal_period: 60
            retry_after_header_name: x-retry-in
            retry_after_variable_name: retry-in
            remaining_calls_header_name: x-remaining
            remaining_calls_variable_name: remaining
            total_calls_header_name: x-total
        - set-header: {name: x-remaining-calls, expression: "vars.remaining"}
      on_error:
        - set-header: {name: x-retry-var, expression: "vars['retry-in']"}
"#;
    let gw = Gw::start(TempDir::new("rate-headers"), yaml).await;
    let addr = gw.addr("main");
    let r = get(addr, "/a", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json()["headers"]["x-remaining-calls"],
        "1",
        "{}",
        r.json()
    );
    // On admitted responses too: the calls left and the total.
    assert_eq!(r.header("x-remaining"), Some("1"));
    assert_eq!(r.header("x-total"), Some("2"));
    assert!(r.header("x-retry-in").is_none());
    let r = get(addr, "/a", &[]).await;
    assert_eq!(r.json()["headers"]["x-remaining-calls"], "0");
    let r = get(addr, "/a", &[]).await;
    let f = r.assert_fault(429, "policy.rate-limit.exceeded");
    let retry: u32 = r
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .expect("seconds");
    assert!((1..=61).contains(&retry), "retry in {retry} s");
    assert_eq!(r.header("x-retry-in"), Some(retry.to_string().as_str()));
    assert_eq!(r.header("x-remaining"), Some("0"));
    assert_eq!(r.header("x-total"), Some("2"));
    assert_eq!(r.header("x-retry-var"), Some(retry.to_string().as_str()));
    assert_eq!(
        f["detail"],
        format!("more than 2 calls in 60 s in this scope; retry in {retry} s")
    );
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    drop(gw);
}

#[tokio::test(flavor = "multi_thread")]
async fn each_scope_counts_apart_and_a_reload_keeps_the_counts() {
    // One config, three scopes: two APIs and an operation of the second
    // with a chain of its own (`plain` runs the API's chain, in the API's
    // scope).
    let yaml = r#"
listeners: [{name: main, address: "127.0.0.1:0"}]
upstreams: {echo: {url: "builtin:echo"}}
apis:
  - name: one
    path: /one
    upstream: echo
    policies:
      inbound:
        - rate-limit: {calls: 2, renewal_period: 60}
  - name: two
    path: /two
    upstream: echo
    policies:
      inbound:
        - rate-limit: {calls: 2, renewal_period: 60}
    operations:
      - name: plain
        method: GET
        path: /two/plain
      - name: special
        method: GET
        path: /two/special
        policies:
          inbound:
            - rate-limit: {calls: 2, renewal_period: 60}
"#;
    let gw = Gw::start(TempDir::new("rate-scopes"), yaml).await;
    let addr = gw.addr("main");
    for path in ["/one", "/two/plain", "/two/special"] {
        assert_eq!(get(addr, path, &[]).await.status, 200, "{path} 1");
        assert_eq!(get(addr, path, &[]).await.status, 200, "{path} 2");
        get(addr, path, &[])
            .await
            .assert_fault(429, "policy.rate-limit.exceeded");
    }
    // A reload with the same counters settings keeps every count.
    gw.rewrite(&format!("{yaml}\n# reloaded\n"));
    gw.gateway().reload().expect("reload");
    get(addr, "/one", &[])
        .await
        .assert_fault(429, "policy.rate-limit.exceeded");
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    drop(gw);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_store_follows_the_fail_mode() {
    let config = |mode: &str| {
        format!(
            r#"
listeners: [{{name: main, address: "127.0.0.1:0"}}]
admin: {{address: "127.0.0.1:0", key: admin-key}}
named_values:
  admin-key: {{value: admin-key-for-the-rate-tests, secret: true}}
upstreams: {{echo: {{url: "builtin:echo"}}}}
counters: {{max_keys: 1, fail_mode: {mode}}}
apis:
  - name: k
    path: /k
    upstream: echo
    policies:
      inbound:
        - rate-limit-by-key:
            calls: 5
            renewal_period: 60
            counter_key: "request.headers['x-client']"
"#
        )
    };
    let gw = Gw::start(TempDir::new("rate-closed"), &config("closed")).await;
    let addr = gw.addr("main");
    assert_eq!(get(addr, "/k", &[("x-client", "first")]).await.status, 200);
    let r = get(addr, "/k", &[("x-client", "second")]).await;
    let f = r.assert_fault(503, "policy.rate-limit-by-key.counters-unavailable");
    let metrics = Client::plain(gw.admin())
        .get(
            "/metrics",
            &[("authorization", "Bearer admin-key-for-the-rate-tests")],
        )
        .await;
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(
        text.contains("gatehouse_counters_unavailable_total 1"),
        "counted in the metrics: {text}"
    );
    assert!(
        f["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("max_keys"),
        "{f}"
    );
    // Open: the second key is admitted, uncounted.
    gw.rewrite(&config("open"));
    gw.gateway().reload().expect("reload");
    assert_eq!(get(addr, "/k", &[("x-client", "first")]).await.status, 200);
    for _ in 0..8 {
        assert_eq!(get(addr, "/k", &[("x-client", "second")]).await.status, 200);
    }
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    drop(gw);
}
