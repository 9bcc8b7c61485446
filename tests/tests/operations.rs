//! Operations end to end: the admin listener, metrics after known traffic,
//! request traces, reloads (under load, by SIGHUP and POST /reload, by
//! file watch, with certificate rotation and listeners added), access logs
//! with exact byte counts, and compiled policies of older contracts.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gatehouse_tests::{upstream, Client, Gw, Pki, Reply, TempDir};
use http::Response;

const ADMIN_KEY: &str = "adm1n-k3y-0f-t3sts";
const TRACE_KEY: &str = "tr4ce-k3y-0f-t3sts";

/// The admin section and its named values.
fn admin_yaml() -> String {
    format!(
        r#"
admin: {{address: "127.0.0.1:0", key: admin-key, trace_key: trace-key}}
named_values:
  admin-key: {{value: "{ADMIN_KEY}", secret: true}}
  trace-key: {{value: "{TRACE_KEY}", secret: true}}
  tenant-secret: {{value: "t0p-s3cr3t-t3nant", secret: true}}
"#
    )
}

async fn admin(gw: &Gw, method: &str, path: &str) -> Reply {
    let auth = format!("Bearer {ADMIN_KEY}");
    Client::plain(gw.admin())
        .request(method, path, &[("authorization", &auth)], b"")
        .await
}

/// Scrapes `/metrics` until every line of `want` is in it (completion runs
/// when a response body has been sent, just after the client has it).
async fn metrics_with(gw: &Gw, want: &[&str]) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = admin(gw, "GET", "/metrics").await;
        assert_eq!(r.status, 200);
        let text = String::from_utf8_lossy(&r.body).into_owned();
        let missing: Vec<&&str> = want.iter().filter(|w| !text.contains(**w)).collect();
        if missing.is_empty() {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "metrics lack {missing:?}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn orders_yaml(up: std::net::SocketAddr, extra: &str) -> String {
    format!(
        r#"
listeners: [{{name: main, address: "127.0.0.1:0"}}]
upstreams: {{app: {{url: "http://{up}"}}}}
apis:
  - name: orders
    path: /orders
    upstream: app
    operations:
      - {{name: get-order, method: GET, path: "/orders/{{id}}"}}
      - name: create-order
        method: POST
        path: /orders
        policies:
          inbound:
            - check-header: {{name: x-tenant, values: ["acme"], failed_check_error_message: "tenant must be {{{{tenant-secret}}}}"}}
{}
{extra}
"#,
        admin_yaml()
    )
}

#[tokio::test]
async fn metrics_count_requests_by_api_operation_and_status() {
    let up = upstream::echo().await;
    let gw = Gw::start(TempDir::new("metrics"), &orders_yaml(up.addr, "")).await;
    let c = Client::plain(gw.addr("main"));
    for _ in 0..3 {
        assert_eq!(c.get("/orders/1", &[]).await.status, 200);
    }
    for _ in 0..2 {
        c.request("POST", "/orders", &[], b"{}")
            .await
            .assert_fault(400, "policy.check-header.missing");
    }
    let ok = c
        .request("POST", "/orders", &[("x-tenant", "acme")], b"{}")
        .await;
    assert_eq!(ok.status, 200);
    c.get("/nope", &[])
        .await
        .assert_fault(404, "route.not-found");
    c.request("DELETE", "/orders/1", &[], b"")
        .await
        .assert_fault(405, "route.method-not-allowed");

    let text = metrics_with(
        &gw,
        &[
            r#"gatehouse_requests_total{listener="main",api="orders",operation="get-order",status="200"} 3"#,
            r#"gatehouse_requests_total{listener="main",api="orders",operation="create-order",status="400"} 2"#,
            r#"gatehouse_requests_total{listener="main",api="orders",operation="create-order",status="200"} 1"#,
            r#"gatehouse_requests_total{listener="main",api="",operation="",status="404"} 1"#,
            r#"gatehouse_requests_total{listener="main",api="orders",operation="",status="405"} 1"#,
            r#"gatehouse_request_duration_seconds_count{listener="main",api="orders"} 7"#,
            r#"gatehouse_request_duration_seconds_count{listener="main",api=""} 1"#,
        ],
    )
    .await;
    for line in [
        r#"gatehouse_policy_call_duration_seconds_count{policy="check-header",outcome="deny"} 2"#,
        r#"gatehouse_policy_call_duration_seconds_count{policy="check-header",outcome="continue"} 1"#,
        r#"gatehouse_policy_call_duration_seconds_count{policy="check-header",outcome="trap"} 0"#,
        "gatehouse_config_generation 1\n",
        "gatehouse_config_last_reload_success 1\n",
        r#"gatehouse_upstream_first_byte_seconds_count{upstream="app"} 4"#,
        r#"gatehouse_upstream_connect_duration_seconds_count{upstream="app"}"#,
        r#"gatehouse_open_connections{listener="main"}"#,
        "# EOF",
    ] {
        assert!(text.contains(line), "metrics lack {line}:\n{text}");
    }
    // No label takes a value the client chose.
    assert!(!text.contains("/nope"), "{text}");

    // Health and readiness need no key; the rest does.
    let anon = Client::plain(gw.admin());
    assert_eq!(anon.get("/healthz", &[]).await.status, 200);
    assert_eq!(anon.get("/readyz", &[]).await.status, 200);
    let r = anon.get("/metrics", &[]).await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("www-authenticate"),
        Some("Bearer realm=\"gatehouse-admin\"")
    );
    let r = anon
        .get("/metrics", &[("authorization", "Bearer wrong")])
        .await;
    assert_eq!(r.status, 401);
}

#[tokio::test]
async fn traces_of_allowed_and_denied_requests_are_kept_and_never_hold_secrets() {
    let up = upstream::echo().await;
    let gw = Gw::start(TempDir::new("traces"), &orders_yaml(up.addr, "")).await;
    let c = Client::plain(gw.addr("main"));

    let ok = c
        .get("/orders/7", &[("x-gatehouse-trace", TRACE_KEY)])
        .await;
    assert_eq!(ok.status, 200);
    let id = ok
        .header("x-gatehouse-trace-id")
        .expect("a trace id")
        .to_string();
    assert_eq!(Some(id.as_str()), ok.header("x-request-id"));
    assert!(
        ok.json()["headers"].get("x-gatehouse-trace").is_none(),
        "the trace key must not reach the upstream"
    );
    let trace = trace_with(&gw, &id, "completion").await;
    let sources: Vec<&str> = trace["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["source"].as_str().unwrap())
        .collect();
    assert_eq!(
        sources,
        ["request", "routing", "upstream", "completion"],
        "{trace}"
    );
    let rec = |s: &str| {
        trace["records"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["source"] == s)
            .unwrap()
            .clone()
    };
    assert_eq!(rec("routing")["data"]["api"], "orders");
    assert_eq!(rec("routing")["data"]["operation"], "get-order");
    assert_eq!(rec("upstream")["data"]["status"], 200);
    assert_eq!(rec("upstream")["data"]["address"], up.addr.to_string());
    assert_eq!(rec("completion")["data"]["status"], 200);
    assert!(
        rec("completion")["data"]["response_bytes"]
            .as_u64()
            .unwrap()
            > 0
    );
    for r in trace["records"].as_array().unwrap() {
        assert!(r["timestamp"].as_str().unwrap().ends_with('Z'), "{r}");
        assert!(r["elapsed_us"].is_u64(), "{r}");
    }

    // A denied request: the policy's decision, the fault, no upstream.
    let denied = c
        .request(
            "POST",
            "/orders",
            &[("x-gatehouse-trace", TRACE_KEY), ("x-tenant", "other")],
            b"",
        )
        .await;
    let fault = denied.assert_fault(400, "policy.check-header.value");
    assert_eq!(fault["detail"], "tenant must be ***");
    let id = denied.header("x-gatehouse-trace-id").unwrap().to_string();
    let trace = trace_with(&gw, &id, "completion").await;
    let text = trace.to_string();
    let policy = trace["records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["source"] == "policy")
        .expect("a policy record")
        .clone();
    assert_eq!(policy["data"]["policy"], "check-header");
    assert_eq!(policy["data"]["scope"], "operation:orders/create-order");
    assert_eq!(policy["data"]["section"], "inbound");
    assert_eq!(policy["data"]["decision"], "deny");
    assert_eq!(policy["data"]["code"], "policy.check-header.value");
    assert!(text.contains(r#""source":"fault""#), "{text}");
    assert!(!text.contains(r#""source":"upstream""#), "{text}");
    for secret in ["t0p-s3cr3t-t3nant", TRACE_KEY, ADMIN_KEY] {
        assert!(!text.contains(secret), "a trace holds a secret: {text}");
    }

    // A wrong key is ignored, not refused: the request is served untraced
    // and the key does not reach the upstream either.
    let r = c.get("/orders/8", &[("x-gatehouse-trace", "wrong")]).await;
    assert_eq!(r.status, 200);
    assert!(r.header("x-gatehouse-trace-id").is_none());
    assert!(r.json()["headers"].get("x-gatehouse-trace").is_none());
    let rid = r.header("x-request-id").unwrap();
    let missing = admin(&gw, "GET", &format!("/traces/{rid}")).await;
    missing.assert_fault_admin(404, "admin.trace-not-found");
}

/// Reads a trace until it has a record from `source`.
async fn trace_with(gw: &Gw, id: &str, source: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = admin(gw, "GET", &format!("/traces/{id}")).await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let t = r.json();
        if t["records"]
            .as_array()
            .is_some_and(|rs| rs.iter().any(|r| r["source"] == source))
        {
            return t;
        }
        assert!(Instant::now() < deadline, "no `{source}` record: {t}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

trait AdminFault {
    fn assert_fault_admin(&self, status: u16, code: &str) -> serde_json::Value;
}

impl AdminFault for Reply {
    fn assert_fault_admin(&self, status: u16, code: &str) -> serde_json::Value {
        assert_eq!(
            self.status.as_u16(),
            status,
            "{}",
            String::from_utf8_lossy(&self.body)
        );
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json")
        );
        let v = self.json();
        assert_eq!(v["code"], code, "{v}");
        v
    }
}

/// A config whose one API sets `x-generation: GEN` on the request (the
/// echo upstream shows it), on a plain listener that speaks HTTP/1.1 and
/// h2c; `broken` adds an unknown policy.
fn generation_yaml(up: std::net::SocketAddr, generation: usize, broken: bool) -> String {
    format!(
        r#"
listeners: [{{name: main, address: "127.0.0.1:0"}}]
upstreams: {{app: {{url: "http://{up}"}}}}
apis:
  - name: app
    path: /
    upstream: app
    policies:
      inbound:
        - set-header: {{name: x-generation, value: "{generation}"}}
        {}
{}
"#,
        if broken { "- no-such-policy: {}" } else { "" },
        admin_yaml()
    )
}

fn generation_of(r: &Reply) -> usize {
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    r.json()["headers"]["x-generation"][0]
        .as_str()
        .expect("x-generation reached the upstream")
        .parse()
        .expect("a number")
}

async fn wait_for_generation(gw: &Gw, generation: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let c = admin(gw, "GET", "/config").await;
        if c.json()["generation"] == generation {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "generation {generation} never came: {}",
            c.json()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn sighup() {
    let pid = std::process::id().to_string();
    let s = std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .expect("kill runs");
    assert!(s.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reload_under_load_drops_nothing_and_refuses_a_broken_config() {
    let up = upstream::echo().await;
    let gw = Gw::start(
        TempDir::new("reload-load"),
        &generation_yaml(up.addr, 0, false),
    )
    .await;
    gw.gateway().handle_signals().expect("signal handlers");
    let addr = gw.addr("main");
    let done = Arc::new(AtomicBool::new(false));

    // Four keep-alive clients, two HTTP/1.1 and two h2c, each on one
    // connection, in a loop bounded in count and time.
    let mut clients = Vec::new();
    for i in 0..4 {
        let done = done.clone();
        clients.push(tokio::spawn(async move {
            let client = Client {
                addr,
                tls: None,
                h2: i % 2 == 1,
                source: None,
            };
            let mut conn = client.connect().await;
            let started = Instant::now();
            let mut seen = Vec::new();
            while !done.load(Ordering::Relaxed)
                && seen.len() < 50_000
                && started.elapsed() < Duration::from_secs(120)
            {
                let r = conn
                    .request("GET", &client.authority(), "/r", &[], b"")
                    .await;
                seen.push(generation_of(&r));
            }
            seen
        }));
    }

    for generation in 1..=20usize {
        gw.rewrite(&generation_yaml(up.addr, generation, false));
        if generation % 2 == 1 {
            sighup();
        } else {
            let r = admin(&gw, "POST", "/reload").await;
            assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
            assert_eq!(r.json()["generation"], generation as u64 + 1);
            // Nothing was recompiled: the same built-in components.
            assert_eq!(r.json()["components_compiled"], 0, "{}", r.json());
        }
        wait_for_generation(&gw, generation as u64 + 1).await;
        // A request that starts now runs the new chain.
        let fresh = Client::plain(addr).get("/fresh", &[]).await;
        assert_eq!(generation_of(&fresh), generation);
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    done.store(true, Ordering::Relaxed);
    let mut total = 0;
    for c in clients {
        let seen = c.await.expect("a client request failed during the reloads");
        assert!(!seen.is_empty());
        // Each client saw the generations in order (a request never ran
        // an older chain than one before it on the same connection), and
        // ended on the last one.
        assert!(seen.windows(2).all(|w| w[0] <= w[1]), "{seen:?}");
        assert_eq!(*seen.last().unwrap(), 20);
        total += seen.len();
    }
    assert!(total > 40, "only {total} requests during 20 reloads");

    // A broken config is refused, by either route, and the old chain
    // keeps serving.
    gw.rewrite(&generation_yaml(up.addr, 99, true));
    let r = admin(&gw, "POST", "/reload").await;
    let problem = r.assert_fault_admin(422, "admin.reload-refused");
    let problems = problem["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{problem}");
    assert!(
        problems[0].as_str().unwrap().contains(
            "apis[0].policies.inbound[1].no-such-policy: unknown policy `no-such-policy`"
        ),
        "{problem}"
    );
    sighup();
    metrics_with(
        &gw,
        &[r#"gatehouse_config_reloads_total{result="refused"} 2"#],
    )
    .await;
    let text = metrics_with(&gw, &["gatehouse_config_generation 21\n"]).await;
    assert!(
        text.contains("gatehouse_config_last_reload_success 0\n"),
        "{text}"
    );
    assert_eq!(
        generation_of(&Client::plain(addr).get("/after", &[]).await),
        20
    );
}

#[tokio::test]
async fn a_reload_rotates_certificates_and_adds_and_removes_listeners() {
    let up = upstream::echo().await;
    let dir = TempDir::new("rotate");
    let old_ca = Pki::new("Old CA");
    old_ca.server(&dir, "server", &["test.com"]);
    let yaml = |second: bool| {
        format!(
            r#"
listeners:
  - name: tls
    address: "127.0.0.1:0"
    tls:
      hosts:
        - {{names: [test.com], certificate: server.crt, key: server.key}}
{}
upstreams: {{app: {{url: "http://{}"}}}}
apis: [{{name: app, path: /, upstream: app}}]
{}
"#,
            if second {
                "  - {name: second, address: \"127.0.0.1:0\"}"
            } else {
                ""
            },
            up.addr,
            admin_yaml()
        )
    };
    let gw = Gw::start(dir, &yaml(false)).await;
    let addr = gw.addr("tls");
    let old_client = Client::tls(addr, old_ca.roots(), "test.com", false);
    let mut kept = old_client.connect().await;
    assert_eq!(
        kept.request("GET", &old_client.authority(), "/", &[], b"")
            .await
            .status,
        200
    );

    // New certificate files from another CA, and a second listener.
    let new_ca = Pki::new("New CA");
    new_ca.server(&gw.dir, "server", &["test.com"]);
    gw.rewrite(&yaml(true));
    let r = admin(&gw, "POST", "/reload").await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["listeners_added"], serde_json::json!(["second"]));

    // New connections get the new certificate...
    let new_client = Client::tls(addr, new_ca.roots(), "test.com", false);
    assert_eq!(new_client.get("/", &[]).await.status, 200);
    assert!(
        handshake_fails(addr, old_ca.roots()).await,
        "a new connection still got the old certificate"
    );
    // The refused handshake (the client sent an alert) is counted.
    metrics_with(
        &gw,
        &[r#"gatehouse_downstream_tls_handshake_failures_total{listener="tls",reason="alert_received"} 1"#],
    )
    .await;
    // ...while the connection made before keeps its own.
    assert_eq!(
        kept.request("GET", &old_client.authority(), "/", &[], b"")
            .await
            .status,
        200
    );
    // The added listener serves.
    let second = gw.addr("second");
    assert_eq!(Client::plain(second).get("/", &[]).await.status, 200);

    // Removing it closes it.
    gw.rewrite(&yaml(false));
    let r = admin(&gw, "POST", "/reload").await;
    assert_eq!(r.json()["listeners_removed"], serde_json::json!(["second"]));
    assert!(gw.gateway().address("second").is_none());
    let deadline = Instant::now() + Duration::from_secs(5);
    while tokio::net::TcpStream::connect(second).await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "the removed listener still accepts"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether a TLS handshake trusting only `roots` fails.
async fn handshake_fails(addr: std::net::SocketAddr, roots: rustls::RootCertStore) -> bool {
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("test.com").unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
        .is_err()
}

#[tokio::test]
async fn a_watched_config_reloads_when_its_file_changes() {
    let up = upstream::echo().await;
    let yaml = |generation: usize| {
        format!(
            "{}\nreload: {{watch: true}}\n",
            generation_yaml(up.addr, generation, false)
        )
    };
    let gw = Gw::start(TempDir::new("watch"), &yaml(1)).await;
    let c = Client::plain(gw.addr("main"));
    assert_eq!(generation_of(&c.get("/", &[]).await), 1);
    gw.rewrite(&yaml(2));
    wait_for_generation(&gw, 2).await;
    assert_eq!(generation_of(&c.get("/", &[]).await), 2);
    // A broken write is refused and the last good config keeps serving.
    gw.dir.write("gateway.yaml", "listeners: [oops");
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(generation_of(&c.get("/", &[]).await), 2);
    gw.rewrite(&yaml(3));
    wait_for_generation(&gw, 3).await;
    assert_eq!(generation_of(&c.get("/", &[]).await), 3);
}

/// Reads the access log until it has `n` lines.
async fn access_lines(path: &std::path::Path, n: usize) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect();
        if lines.len() >= n {
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "{} access-log lines, not {n}:\n{text}",
            lines.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn access_log_lines_carry_exact_byte_counts() {
    use tokio::io::AsyncWriteExt;
    const MIB: usize = 1 << 20;
    // The upstream counts what it reads, and answers /download with 1 MiB.
    let handler: upstream::Handler = Arc::new(|req| {
        Box::pin(async move {
            use http_body_util::BodyExt;
            if req.uri().path() == "/download" {
                return Response::new(upstream::full(vec![b'd'; MIB]));
            }
            let n = match req.into_body().collect().await {
                Ok(b) => b.to_bytes().len(),
                Err(_) => 0,
            };
            Response::new(upstream::full(format!("read {n}")))
        })
    });
    let up = upstream::start(handler).await;
    let dir = TempDir::new("access");
    let yaml = format!(
        r#"
listeners: [{{name: main, address: "127.0.0.1:0"}}]
upstreams: {{app: {{url: "http://{}"}}}}
apis: [{{name: files, path: /, upstream: app}}]
access_log: {{path: access.log, include_query: false}}
"#,
        up.addr
    );
    let gw = Gw::start(dir, &yaml).await;
    let log = gw.dir.path().join("access.log");
    let c = Client::plain(gw.addr("main"));
    let r = c
        .request("POST", "/upload?token=abc", &[], &vec![b'u'; MIB])
        .await;
    assert_eq!(&r.body[..], format!("read {MIB}").as_bytes());
    let r = c.get("/download", &[]).await;
    assert_eq!(r.body.len(), MIB);

    // A client that leaves in the middle of its upload.
    let mut tcp = tokio::net::TcpStream::connect(gw.addr("main"))
        .await
        .unwrap();
    tcp.write_all(
        format!("POST /partial HTTP/1.1\r\nhost: a\r\ncontent-length: {MIB}\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    tcp.write_all(&vec![b'p'; 64 * 1024]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(tcp);

    let lines = access_lines(&log, 3).await;
    let by_path = |p: &str| {
        lines
            .iter()
            .find(|l| l["path"] == p)
            .unwrap_or_else(|| panic!("no line for {p}: {lines:?}"))
            .clone()
    };
    let upload = by_path("/upload");
    assert_eq!(upload["request_bytes"], MIB as u64);
    assert_eq!(upload["status"], 200);
    assert_eq!(upload["method"], "POST");
    assert_eq!(upload["api"], "files");
    assert_eq!(upload["complete"], true);
    assert_eq!(upload["listener"], "main");
    assert_eq!(upload["upstream"], "app");
    assert_eq!(upload["upstream_address"], up.addr.to_string());
    assert!(upload["client_port"].as_u64().unwrap() > 0);
    assert_eq!(upload["client_ip"], "127.0.0.1");
    assert!(upload["time"].as_str().unwrap().ends_with('Z'));
    assert!(upload["duration_us"].as_u64().unwrap() > 0);
    assert!(upload["request_id"].as_str().unwrap().len() == 16);
    assert!(
        !upload.to_string().contains("token=abc"),
        "the query is not logged: {upload}"
    );
    let download = by_path("/download");
    assert_eq!(download["response_bytes"], MIB as u64);
    assert_eq!(download["request_bytes"], 0);
    assert_eq!(download["complete"], true);
    let partial = by_path("/partial");
    assert_eq!(partial["complete"], false, "{partial}");
    assert_eq!(partial["fault_code"], "request.aborted", "{partial}");
    let got = partial["request_bytes"].as_u64().unwrap();
    assert!(got > 0 && got <= 64 * 1024, "{partial}");
}

#[tokio::test]
async fn a_policy_built_for_the_0_1_0_contract_loads_and_runs() {
    let up = upstream::echo().await;
    let wasm = gatehouse_tests::api_key_contract_0_1_0_wasm();
    let yaml = format!(
        r#"
listeners: [{{name: main, address: "127.0.0.1:0"}}]
upstreams: {{app: {{url: "http://{}"}}}}
custom_policies:
  old-api-key: {{wasm: "{}"}}
apis:
  - name: app
    path: /
    upstream: app
    policies:
      inbound:
        - old-api-key: {{keys: [k1, k2]}}
"#,
        up.addr,
        wasm.display()
    );
    let gw = Gw::start(TempDir::new("contract-0-1-0"), &yaml).await;
    let c = Client::plain(gw.addr("main"));
    c.get("/", &[])
        .await
        .assert_fault(401, "policy.api-key.invalid");
    assert_eq!(c.get("/", &[("x-api-key", "k2")]).await.status, 200);
}

#[tokio::test]
async fn a_policy_importing_an_interface_this_gateway_lacks_is_refused_at_load() {
    let yaml = format!(
        r#"
listeners: [{{name: main, address: "127.0.0.1:0"}}]
upstreams: {{app: {{url: "builtin:echo"}}}}
custom_policies:
  counting: {{wasm: "{}"}}
apis:
  - name: app
    path: /
    upstream: app
    policies: {{inbound: [counting]}}
"#,
        gatehouse_tests::future_contract_wasm()
    );
    let errors = Gw::build_errors(&TempDir::new("future-contract"), &yaml);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].ends_with(
            "apis[0].policies.inbound[0].counting: policy `counting` imports `gatehouse:policy/telemetry@0.1.9`, which this gateway does not provide (it implements gatehouse:policy@0.1.4); build the policy against this gateway's contract or upgrade the gateway"
        ),
        "{errors:?}"
    );
}

#[tokio::test]
async fn policies_that_ask_for_it_are_called_at_completion_with_what_was_transferred() {
    let up = upstream::echo().await;
    let yaml = format!(
        r#"
listeners: [{{name: main, address: "127.0.0.1:0"}}]
upstreams: {{app: {{url: "http://{}"}}}}
custom_policies:
  misbehave: {{wasm: "{}"}}
apis:
  - name: app
    path: /
    upstream: app
    policies:
      inbound:
        - misbehave: {{record_completion: true}}
        - check-header: {{name: x-tenant}}
{}
"#,
        up.addr,
        gatehouse_tests::misbehave_wasm(),
        admin_yaml()
    );
    let gw = Gw::start(TempDir::new("completion-hook"), &yaml).await;
    let c = Client::plain(gw.addr("main"));
    let traced = [("x-gatehouse-trace", TRACE_KEY), ("x-tenant", "acme")];
    let r = c.request("POST", "/upload", &traced, &[b'x'; 1000]).await;
    assert_eq!(r.status, 200);
    let id = r.header("x-gatehouse-trace-id").unwrap().to_string();
    assert_eq!(
        completion_message(&gw, &id).await,
        format!(
            "completion POST /upload status=200 request_bytes=1000 response_bytes={} complete=true fault=none upstream_first_byte=true",
            r.body.len()
        )
    );

    // A refused request completes too, with its fault; the policy that ran
    // before the refusal is called.
    let r = c
        .request("GET", "/denied", &[("x-gatehouse-trace", TRACE_KEY)], b"")
        .await;
    r.assert_fault(400, "policy.check-header.missing");
    let id = r.header("x-gatehouse-trace-id").unwrap().to_string();
    assert_eq!(
        completion_message(&gw, &id).await,
        format!(
            "completion GET /denied status=400 request_bytes=0 response_bytes={} complete=true fault=policy.check-header.missing upstream_first_byte=false",
            r.body.len()
        )
    );
}

#[tokio::test]
async fn sigusr1_reopens_the_access_log_after_rotation() {
    let up = upstream::echo().await;
    let yaml = format!(
        r#"
listeners: [{{name: main, address: "127.0.0.1:0"}}]
upstreams: {{app: {{url: "http://{}"}}}}
apis: [{{name: app, path: /, upstream: app}}]
access_log: {{path: access.log}}
"#,
        up.addr
    );
    let gw = Gw::start(TempDir::new("rotate-log"), &yaml).await;
    gw.gateway().handle_signals().expect("signal handlers");
    let log = gw.dir.path().join("access.log");
    let rotated = gw.dir.path().join("access.log.1");
    let c = Client::plain(gw.addr("main"));
    assert_eq!(c.get("/before", &[]).await.status, 200);
    access_lines(&log, 1).await;
    std::fs::rename(&log, &rotated).unwrap();
    let pid = std::process::id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-USR1", &pid])
        .status()
        .unwrap()
        .success());
    // Lines go to a new file at the old path once the signal is handled.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut n = 0;
    while !std::fs::read_to_string(&log).is_ok_and(|t| t.contains("/after")) {
        assert!(Instant::now() < deadline, "no new access.log after SIGUSR1");
        assert_eq!(c.get(&format!("/after/{n}"), &[]).await.status, 200);
        n += 1;
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let old = std::fs::read_to_string(&rotated).unwrap();
    assert!(old.contains(r#""path":"/before""#), "{old}");
    assert!(
        !std::fs::read_to_string(&log).unwrap().contains("/before"),
        "the new file holds only lines written after the rotation"
    );
}

/// The message the misbehave policy traced from its completion hook (the
/// hook runs after the trace's own completion record: read until it is in).
async fn completion_message(gw: &Gw, id: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let trace = trace_with(gw, id, "completion").await;
        let found = trace["records"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|r| r["data"]["message"].as_str())
            .find(|m| m.starts_with("completion"))
            .map(str::to_string);
        if let Some(m) = found {
            return m;
        }
        assert!(Instant::now() < deadline, "the hook never ran: {trace}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn requests_in_flight_finish_on_the_config_they_started_with() {
    // The upstream holds /slow until told; the outbound chain stamps the
    // response with the generation of the config.
    let release = Arc::new(tokio::sync::Notify::new());
    let gate = release.clone();
    let handler: upstream::Handler = Arc::new(move |req| {
        let gate = gate.clone();
        Box::pin(async move {
            if req.uri().path() == "/slow" {
                gate.notified().await;
            }
            Response::new(upstream::full("done"))
        })
    });
    let up = upstream::start(handler).await;
    let yaml = |generation: u32| {
        format!(
            r#"
listeners: [{{name: main, address: "127.0.0.1:0"}}]
upstreams: {{app: {{url: "http://{}"}}}}
apis:
  - name: app
    path: /
    upstream: app
    policies:
      outbound:
        - set-header: {{name: x-generation, value: "{generation}"}}
{}
"#,
            up.addr,
            admin_yaml()
        )
    };
    let gw = Gw::start(TempDir::new("in-flight"), &yaml(1)).await;
    let addr = gw.addr("main");
    let slow = tokio::spawn(async move { Client::plain(addr).get("/slow", &[]).await });
    up.wait_for_requests(1).await;
    gw.rewrite(&yaml(2));
    assert_eq!(admin(&gw, "POST", "/reload").await.status, 200);
    let fresh = Client::plain(addr).get("/fresh", &[]).await;
    assert_eq!(fresh.header("x-generation"), Some("2"));
    release.notify_one();
    let slow = slow.await.unwrap();
    assert_eq!(slow.status, 200);
    assert_eq!(
        slow.header("x-generation"),
        Some("1"),
        "a request in flight finishes on the config it started with"
    );
}

#[tokio::test]
async fn upstream_connections_survive_a_reload_unless_the_upstream_changes() {
    let up = upstream::echo().await;
    let other = upstream::echo().await;
    let yaml = |target: std::net::SocketAddr, value: &str| {
        format!(
            r#"
listeners: [{{name: main, address: "127.0.0.1:0"}}]
upstreams: {{app: {{url: "http://{target}"}}}}
apis:
  - name: app
    path: /
    upstream: app
    policies: {{inbound: [{{set-header: {{name: x-v, value: "{value}"}}}}]}}
{}
"#,
            admin_yaml()
        )
    };
    let gw = Gw::start(TempDir::new("pools"), &yaml(up.addr, "a")).await;
    let client = Client::plain(gw.addr("main"));
    let mut conn = client.connect().await;
    let r = conn
        .request("GET", &client.authority(), "/", &[], b"")
        .await;
    assert_eq!(r.json()["headers"]["x-v"][0], "a");
    assert_eq!(up.connections(), 1);

    // A reload that changes a policy but not the upstream: the pooled
    // connection is reused.
    gw.rewrite(&yaml(up.addr, "b"));
    assert_eq!(admin(&gw, "POST", "/reload").await.status, 200);
    let r = conn
        .request("GET", &client.authority(), "/", &[], b"")
        .await;
    assert_eq!(r.json()["headers"]["x-v"][0], "b");
    assert_eq!(
        up.connections(),
        1,
        "the reload opened a new upstream connection"
    );
    up.wait_for_open_connections(1).await;

    // A reload that points the upstream elsewhere: the old upstream's
    // idle connection is closed.
    gw.rewrite(&yaml(other.addr, "c"));
    assert_eq!(admin(&gw, "POST", "/reload").await.status, 200);
    let r = conn
        .request("GET", &client.authority(), "/", &[], b"")
        .await;
    assert_eq!(r.json()["headers"]["x-v"][0], "c");
    assert_eq!(other.connections(), 1);
    up.wait_for_open_connections(0).await;
}
