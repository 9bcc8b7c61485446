//! The `redis` counter store against a real `redis-server` started by the
//! tests on a loopback port: two gateway processes sharing one limit
//! exactly, one round trip per request, AUTH, the fail modes with Redis
//! killed and restarted, and no worker blocked while Redis is paused
//! (SIGSTOP). A gateway process is this test binary run again as
//! `redis_child` ([`gatehouse_tests::child`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use gatehouse_tests::child;
use gatehouse_tests::client::count;
use gatehouse_tests::pki::{ClientSpec, Pki};
use gatehouse_tests::redis::RedisServer;
use gatehouse_tests::upstream::{self, full};
use gatehouse_tests::{Client, Gw, TempDir};

/// Not a test of its own: the gateway process of the two-gateway test.
/// Without the variable it does nothing.
#[tokio::test(flavor = "multi_thread")]
async fn redis_child() {
    child::serve_if_asked("GATEHOUSE_REDIS_CHILD").await;
}

const ADMIN: &str = "admin-key-for-the-redis-tests";

async fn burst(addrs: &[SocketAddr], path: &str, n: usize, client: &str) -> Vec<u16> {
    gatehouse_tests::client::burst(addrs, path, n, &[("x-client", client)]).await
}

/// `/fail` answers 500, anything else 200.
async fn origin() -> upstream::Upstream {
    upstream::start(Arc::new(|req| {
        Box::pin(async move {
            let status = if req.uri().path().ends_with("/fail") {
                500
            } else {
                200
            };
            http::Response::builder()
                .status(status)
                .body(full(Bytes::from_static(b"ok")))
                .expect("response")
        })
    }))
    .await
}

/// A gateway config counting in Redis at `url`; `/ok-only` goes to
/// `origin`.
fn config(url: &str, extra: &str, fail_mode: &str, timeout_ms: u64) -> String {
    config_with(url, extra, fail_mode, timeout_ms, "127.0.0.1:9")
}

fn config_with(url: &str, extra: &str, fail_mode: &str, timeout_ms: u64, origin: &str) -> String {
    format!(
        r#"
listeners: [{{name: main, address: "127.0.0.1:0"}}]
admin: {{address: "127.0.0.1:0", key: admin-key}}
named_values:
  admin-key: {{value: {ADMIN}, secret: true}}
  redis-password: {{value: "redis-pass-for-the-tests", secret: true}}
upstreams:
  echo: {{url: "builtin:echo"}}
  origin: {{url: "http://{origin}"}}
counters:
  backend: redis
  fail_mode: {fail_mode}
  redis: {{url: "{url}", timeout_ms: {timeout_ms}{extra}}}
apis:
  - name: free
    path: /free
    upstream: echo
  - name: limited
    path: /limited
    upstream: echo
    policies:
      inbound:
        - rate-limit-by-key:
            calls: 50
            renewal_period: 300
            counter_key: "request.headers['x-client']"
  - name: quota
    path: /quota
    upstream: echo
    policies:
      inbound:
        - quota-by-key:
            calls: 50
            renewal_period: 3600
            counter_key: "request.headers['x-client']"
  - name: ok-only
    path: /ok-only
    upstream: origin
    policies:
      inbound:
        - rate-limit-by-key:
            calls: 50
            renewal_period: 300
            counter_key: "request.headers['x-client']"
            increment_condition: "response.status == 200"
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_gateways_sharing_one_redis_admit_exactly_fifty_with_one_round_trip_each() {
    let redis = RedisServer::start(Some("redis-pass-for-the-tests"));
    let up = origin().await;
    let yaml = config_with(
        &redis.url(),
        ", password: \"{{ref:redis-password}}\"",
        "closed",
        2000,
        &up.addr.to_string(),
    );
    let (_a, a) = child::spawn("redis_child", "GATEHOUSE_REDIS_CHILD", &yaml);
    let (_b, b) = child::spawn("redis_child", "GATEHOUSE_REDIS_CHILD", &yaml);
    // Each gateway loads the script once (EVALSHA, NOSCRIPT, SCRIPT LOAD).
    for addr in [a, b] {
        let r = Client::plain(addr)
            .get("/limited", &[("x-client", "warm-up")])
            .await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    }
    redis.command(&["CONFIG", "RESETSTAT"]);

    let statuses = burst(&[a, b], "/limited", 200, "shared").await;
    assert_eq!(count(&statuses, 200), 50, "exactly the limit, across both");
    assert_eq!(count(&statuses, 429), 150, "{statuses:?}");
    // One round trip per request: 200 EVALSHA, no EVAL or SCRIPT LOAD
    // (the commands the script runs are counted apart, by their names).
    let calls = redis.command_calls();
    let of = |name: &str| calls.iter().find(|(c, _)| c == name).map_or(0, |(_, n)| *n);
    assert_eq!(of("evalsha"), 200, "one EVALSHA per request: {calls:?}");
    assert_eq!(of("eval") + of("script|load"), 0, "{calls:?}");

    // A refusal says when to come back: the sliding window's oldest units
    // leave within 300 s (5 s buckets).
    let r = Client::plain(a)
        .get("/limited", &[("x-client", "shared")])
        .await;
    r.assert_fault(429, "policy.rate-limit-by-key.exceeded");
    let retry: u32 = r
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After seconds");
    assert!((1..=305).contains(&retry), "retry after {retry} s");

    // A quota too: 50 of 200 between the two.
    let statuses = burst(&[a, b], "/quota", 200, "shared").await;
    assert_eq!(count(&statuses, 200), 50);
    assert_eq!(count(&statuses, 403), 150);

    // increment_condition: only 200s count (reserved at the request,
    // released at completion otherwise), exact across gateways.
    for addr in [a, b] {
        for _ in 0..5 {
            let r = Client::plain(addr)
                .get("/ok-only/fail", &[("x-client", "c")])
                .await;
            assert_eq!(r.status, 500);
        }
    }
    // The releases are sent at completion, without waiting: let them land.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let statuses = burst(&[a, b], "/ok-only/ok", 200, "c").await;
    assert_eq!(count(&statuses, 200), 50, "failures were not counted");
    assert_eq!(count(&statuses, 429), 150);
    drop(up);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_redis_gets_the_fail_mode_and_counting_resumes_when_it_returns() {
    let mut redis = RedisServer::start(None);
    let port = redis.port();
    let gw = Gw::start(
        TempDir::new("redis-closed"),
        &config(&redis.url(), "", "closed", 300),
    )
    .await;
    let addr = gw.addr("main");
    let get = |path: &'static str, client: &'static str| async move {
        Client::plain(addr).get(path, &[("x-client", client)]).await
    };
    for _ in 0..3 {
        assert_eq!(get("/limited", "k").await.status, 200);
    }
    redis.kill();
    let r = get("/limited", "k").await;
    let f = r.assert_fault(503, "policy.rate-limit-by-key.counters-unavailable");
    assert!(
        f["detail"].as_str().unwrap_or_default().contains("redis"),
        "the cause is named: {f}"
    );
    // A route without counters is not concerned.
    assert_eq!(get("/free", "k").await.status, 200);
    let metrics = Client::plain(gw.admin())
        .get("/metrics", &[("authorization", &format!("Bearer {ADMIN}"))])
        .await;
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(
        text.contains("gatehouse_counters_unavailable_total 1"),
        "counted in the metrics: {text}"
    );

    // Back (empty: no persistence): counting resumes on the same
    // gateway, without a reload.
    let redis = RedisServer::start_on(port, None);
    let mut back = None;
    for _ in 0..50 {
        let r = get("/limited", "k").await;
        if r.status == 200 {
            back = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        back.is_some(),
        "requests are counted again once Redis is back"
    );
    let keys = redis.command(&["DBSIZE"]);
    assert_eq!(keys, ":1", "the count is in the new server");
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(gw);

    // Fail open: admitted, uncounted, while Redis is down.
    drop(redis);
    let gw = Gw::start(
        TempDir::new("redis-open"),
        &config(&format!("redis://127.0.0.1:{port}"), "", "open", 300),
    )
    .await;
    let addr = gw.addr("main");
    for _ in 0..3 {
        let r = Client::plain(addr)
            .get("/limited", &[("x-client", "k")])
            .await;
        assert_eq!(r.status, 200, "fail open admits");
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(gw);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_paused_redis_blocks_no_worker() {
    let redis = RedisServer::start(None);
    let gw = Gw::start(
        TempDir::new("redis-paused"),
        &config(&redis.url(), "", "closed", 3000),
    )
    .await;
    let addr = gw.addr("main");
    assert_eq!(
        Client::plain(addr)
            .get("/limited", &[("x-client", "p")])
            .await
            .status,
        200
    );
    redis.signal("STOP");
    // More counter requests than the gateway has workers, all waiting on
    // the paused Redis.
    let waiting: Vec<_> = (0..8)
        .map(|_| {
            tokio::spawn(async move {
                Client::plain(addr)
                    .get("/limited", &[("x-client", "p")])
                    .await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Meanwhile every worker serves other routes: these are answered
    // while all of the counter requests are still waiting.
    for _ in 0..20 {
        assert_eq!(Client::plain(addr).get("/free", &[]).await.status, 200);
    }
    assert!(
        waiting.iter().all(|t| !t.is_finished()),
        "the counter requests wait for Redis (timeout 3000 ms)"
    );
    // Then each gets the fail-mode outcome at its timeout.
    for t in waiting {
        let r = t.await.expect("request task");
        let f = r.assert_fault(503, "policy.rate-limit-by-key.counters-unavailable");
        assert!(
            f["detail"]
                .as_str()
                .unwrap_or_default()
                .contains("no answer within 3000 ms"),
            "{f}"
        );
    }
    redis.signal("CONT");
    let mut ok = false;
    for _ in 0..50 {
        if Client::plain(addr)
            .get("/limited", &[("x-client", "q")])
            .await
            .status
            == 200
        {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "counting resumes once Redis runs again");
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(gw);
}

#[tokio::test(flavor = "multi_thread")]
async fn mutual_tls_to_redis_with_the_configured_ca_and_certificate() {
    let dir = TempDir::new("redis-tls");
    let pki = Pki::new("Redis Test CA");
    let ca = pki.write_ca(&dir, "ca.crt");
    let server = pki.server(&dir, "redis", &["127.0.0.1"]);
    let client = pki.client(&dir, "gateway", &ClientSpec::new("gateway", 7), "");
    let (redis, tls_port) = RedisServer::start_tls(&ca, &server.cert, &server.key);
    let url = format!("rediss://127.0.0.1:{tls_port}");
    let tls = format!(
        ", ca_file: \"{}\", cert_file: \"{}\", key_file: \"{}\"",
        ca.display(),
        client.cert.display(),
        client.key.display()
    );
    let gw = Gw::start(
        TempDir::new("redis-tls-gw"),
        &config(&url, &tls, "closed", 2000),
    )
    .await;
    let addr = gw.addr("main");
    for _ in 0..3 {
        let r = Client::plain(addr)
            .get("/limited", &[("x-client", "t")])
            .await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    }
    assert_eq!(
        redis.command(&["DBSIZE"]),
        ":1",
        "counted in Redis, over TLS"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(gw);

    // Without the client certificate the server refuses the handshake:
    // the fail mode answers, naming Redis.
    let no_cert = format!(", ca_file: \"{}\"", ca.display());
    let gw = Gw::start(
        TempDir::new("redis-tls-nocert"),
        &config(&url, &no_cert, "closed", 1000),
    )
    .await;
    let r = Client::plain(gw.addr("main"))
        .get("/limited", &[("x-client", "t")])
        .await;
    let f = r.assert_fault(503, "policy.rate-limit-by-key.counters-unavailable");
    assert!(
        f["detail"].as_str().unwrap_or_default().contains("redis"),
        "{f}"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(gw);

    // A CA file that cannot be read is a config error naming the key.
    let errors = Gw::build_errors(
        &dir,
        &config(&url, ", ca_file: missing-ca.pem", "closed", 1000),
    );
    assert!(
        errors
            .iter()
            .any(|e| e.contains("counters.redis.ca_file: cannot read")
                && e.contains("missing-ca.pem")),
        "{errors:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn windows_slide_and_periods_never_renew_in_redis() {
    let redis = RedisServer::start(None);
    let yaml = format!(
        r#"
listeners: [{{name: main, address: "127.0.0.1:0"}}]
upstreams: {{echo: {{url: "builtin:echo"}}}}
counters: {{backend: redis, redis: {{url: "{}"}}}}
apis:
  - name: short
    path: /short
    upstream: echo
    policies:
      inbound:
        - rate-limit: {{calls: 3, renewal_period: 2}}
  - name: forever
    path: /forever
    upstream: echo
    policies:
      inbound:
        - quota: {{calls: 2, renewal_period: 0}}
"#,
        redis.url()
    );
    let gw = Gw::start(TempDir::new("redis-windows"), &yaml).await;
    let addr = gw.addr("main");
    let get = |path: &'static str| async move { Client::plain(addr).get(path, &[]).await };
    for _ in 0..3 {
        assert_eq!(get("/short").await.status, 200);
    }
    let r = get("/short").await;
    r.assert_fault(429, "policy.rate-limit.exceeded");
    let retry: u64 = r
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After seconds");
    assert!((1..=3).contains(&retry), "retry after {retry} s");
    // Past the window (1 s buckets, forgotten at most one bucket late).
    tokio::time::sleep(Duration::from_millis(3100)).await;
    assert_eq!(get("/short").await.status, 200, "the window slid");

    for _ in 0..2 {
        assert_eq!(get("/forever").await.status, 200);
    }
    let r = get("/forever").await;
    r.assert_fault(403, "policy.quota.exceeded");
    assert!(
        r.header("retry-after").is_none(),
        "a quota that never renews"
    );
    // The period never ends: its key has no expiry; the sliding window's
    // expires with the window (at most 2 s and one bucket from now).
    let keys = redis.command(&["KEYS", "gatehouse:*"]);
    let keys: Vec<&str> = keys.lines().collect();
    assert_eq!(keys.len(), 2, "{keys:?}");
    for k in keys {
        let ttl: i64 = redis
            .command(&["PTTL", k])
            .trim_start_matches(':')
            .parse()
            .expect("PTTL");
        if k.contains("\u{1f}api:forever\u{1f}") {
            assert_eq!(ttl, -1, "{k:?} never expires");
        } else {
            assert!((1..=3000).contains(&ttl), "{k:?} expires in {ttl} ms");
        }
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(gw);
}

#[tokio::test]
async fn redis_settings_are_checked() {
    let dir = TempDir::new("redis-errors");
    let errors = |counters: &str| {
        Gw::build_errors(
            &dir,
            &format!(
                "listeners: [{{name: main, address: \"127.0.0.1:0\"}}]\ncounters: {counters}\n"
            ),
        )
    };
    let cases = [
        (
            "{backend: redis}",
            "counters.redis: the redis backend needs `redis: {url: redis://127.0.0.1:6379}`",
        ),
        (
            "{backend: memory, redis: {url: \"redis://127.0.0.1\"}}",
            "counters.redis: only the redis backend has a server",
        ),
        (
            "{backend: redis, redis: {url: \"http://:pw@127.0.0.1\"}}",
            "counters.redis.url: `http://:***@127.0.0.1` is not a redis:// or rediss:// URL",
        ),
        (
            "{backend: redis, redis: {url: \"redis://127.0.0.1\", timeout_ms: 0}}",
            "counters.redis.timeout_ms: 0 is outside 1..=10000",
        ),
        (
            "{backend: redis, redis: {url: \"redis://127.0.0.1\", cert_file: c.pem}}",
            "counters.redis.cert_file: cert_file and key_file go together",
        ),
    ];
    for (counters, want) in cases {
        let got = errors(counters);
        assert!(got.iter().any(|e| e.contains(want)), "{counters}: {got:?}");
    }
}
