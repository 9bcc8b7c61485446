//! `quota`, `quota-by-key` and counting by the response
//! (`increment_condition`) on a real gateway with a real upstream: calls
//! that never renew, periods aligned to `first_period_start`, bandwidth
//! counted from a 1 MiB download and a 1 MiB upload as transferred, and
//! `increment_condition` exact under 200 concurrent requests.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use gatehouse_tests::upstream::{self, full};
use gatehouse_tests::{Client, Gw, Reply, TempDir};
use http_body_util::BodyExt;

/// `/fail` answers 500, `/big` 1 MiB, anything else 200 after reading the
/// request body in full.
async fn origin() -> upstream::Upstream {
    upstream::start(Arc::new(|req| {
        Box::pin(async move {
            let path = req.uri().path().to_string();
            let _ = req.into_body().collect().await;
            let (status, body) = match path.as_str() {
                p if p.ends_with("/fail") => (500, Bytes::from_static(b"failed")),
                p if p.ends_with("/big") => (200, Bytes::from(vec![b'x'; 1 << 20])),
                _ => (200, Bytes::from_static(b"ok")),
            };
            http::Response::builder()
                .status(status)
                .body(full(body))
                .expect("response")
        })
    }))
    .await
}

async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Reply {
    Client::plain(addr).get(path, headers).await
}

/// The completion hook runs once the response is sent; give it a moment
/// before the next request depends on it.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(150)).await;
}

fn config(up: SocketAddr, policies: &str) -> String {
    format!(
        r#"
listeners: [{{name: main, address: "127.0.0.1:0"}}]
upstreams: {{origin: {{url: "http://{up}"}}}}
apis:
  - name: api
    path: /api
    upstream: origin
    policies:
      inbound:
{policies}
"#
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_quota_that_never_renews_runs_out() {
    let up = origin().await;
    let gw = Gw::start(
        TempDir::new("quota-calls"),
        &config(up.addr, "        - quota: {calls: 3, renewal_period: 0}"),
    )
    .await;
    let addr = gw.addr("main");
    for i in 0..3 {
        assert_eq!(get(addr, "/api/x", &[]).await.status, 200, "call {i}");
    }
    let r = get(addr, "/api/x", &[]).await;
    let f = r.assert_fault(403, "policy.quota.exceeded");
    assert_eq!(f["detail"], "the quota of 3 calls never renews is used up");
    assert!(r.header("retry-after").is_none(), "it never renews");
    settle().await;
    drop(gw);
}

#[tokio::test(flavor = "multi_thread")]
async fn periods_align_to_first_period_start() {
    let up = origin().await;
    // Hour-long periods, the current one ending about 3 s from now.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let start = now + 3 - 3600;
    let start_text = chrono::DateTime::from_timestamp(start, 0)
        .expect("a date")
        .to_rfc3339();
    let policies = format!(
        "        - quota-by-key: {{calls: 2, renewal_period: 3600, counter_key: \"request.headers['x-client']\", first_period_start: \"{start_text}\"}}"
    );
    let gw = Gw::start(TempDir::new("quota-align"), &config(up.addr, &policies)).await;
    let addr = gw.addr("main");
    let a = [("x-client", "a")];
    assert_eq!(get(addr, "/api/x", &a).await.status, 200);
    assert_eq!(get(addr, "/api/x", &a).await.status, 200);
    let r = get(addr, "/api/x", &a).await;
    r.assert_fault(403, "policy.quota-by-key.exceeded");
    let retry: u64 = r
        .header("retry-after")
        .expect("Retry-After: the period's end")
        .parse()
        .expect("seconds");
    assert!(retry <= 4, "the period ends at start + 3600 ({retry} s)");
    // Another key has its own quota.
    assert_eq!(get(addr, "/api/x", &[("x-client", "b")]).await.status, 200);
    // The next period (aligned to first_period_start, not to the first call).
    tokio::time::sleep(Duration::from_secs(retry + 1)).await;
    assert_eq!(get(addr, "/api/x", &a).await.status, 200, "a new period");
    settle().await;
    drop(gw);
}

#[tokio::test(flavor = "multi_thread")]
async fn bandwidth_counts_the_bytes_transferred() {
    let up = origin().await;
    // 1536 KB: a 1 MiB download fits, a 1 MiB upload after it fits too
    // (the quota is checked before a request, counted after), then it is
    // used up.
    let gw = Gw::start(
        TempDir::new("quota-bandwidth"),
        &config(
            up.addr,
            "        - quota: {bandwidth: 1536, renewal_period: 300}",
        ),
    )
    .await;
    let addr = gw.addr("main");
    let r = get(addr, "/api/big", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), 1 << 20);
    settle().await;
    let r = Client::plain(addr)
        .request("POST", "/api/upload", &[], &vec![b'u'; 1 << 20])
        .await;
    assert_eq!(r.status, 200, "1 MiB counted, under 1536 KB");
    settle().await;
    let r = get(addr, "/api/small", &[]).await;
    let f = r.assert_fault(403, "policy.quota.exceeded");
    assert_eq!(
        f["detail"],
        "the bandwidth quota of 1536 KB per 300 s is used up"
    );
    settle().await;
    drop(gw);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn increment_condition_counts_only_matching_responses_exactly() {
    let up = origin().await;
    let policies = r#"        - rate-limit-by-key:
            calls: 50
            renewal_period: 300
            counter_key: "'all'"
            increment_condition: "response.status == 200"
        - quota-by-key:
            calls: 1000
            renewal_period: 300
            counter_key: "'all'"
            increment_condition: "response.status < 400""#;
    let gw = Gw::start(TempDir::new("rate-condition"), &config(up.addr, policies)).await;
    let addr = gw.addr("main");
    // Failures do not count.
    for _ in 0..10 {
        assert_eq!(get(addr, "/api/fail", &[]).await.status, 500);
    }
    settle().await;
    // 200 at once: each is counted when it arrives, so exactly 50 pass
    // although no response is back when the last ones arrive.
    let tasks: Vec<_> = (0..200)
        .map(|_| tokio::spawn(async move { get(addr, "/api/ok", &[]).await.status.as_u16() }))
        .collect();
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.expect("task"));
    }
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 50);
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 150);
    settle().await;
    get(addr, "/api/ok", &[])
        .await
        .assert_fault(429, "policy.rate-limit-by-key.exceeded");
    settle().await;
    drop(gw);
}
