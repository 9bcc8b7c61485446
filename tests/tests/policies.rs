//! Policy chains end to end: built-in and custom policies, chain order with
//! and without `base`, outbound edits, expressions, named values, and
//! misbehaving policies that must fail only their own request.

use gatehouse_tests::{api_key_wasm, misbehave_wasm, upstream, Client, Gw, TempDir};

async fn gateway(yaml_after_upstreams: &str) -> (Gw, upstream::Upstream) {
    let up = upstream::echo().await;
    let dir = TempDir::new("policies");
    // A file for the named-values test (`file:` sources are relative to
    // the config file).
    dir.write("greeting.txt", "hello\n");
    let yaml = format!(
        "listeners: [{{name: plain, address: \"127.0.0.1:0\"}}]\nupstreams: {{app: {{url: \"http://{}\"}}}}\n{yaml_after_upstreams}",
        up.addr
    );
    (Gw::start(dir, &yaml).await, up)
}

#[tokio::test]
async fn check_header_allows_and_denies_with_configured_status_and_message() {
    let (gw, _up) = gateway(
        r#"
apis:
  - name: app
    path: /
    upstream: app
    policies:
      inbound:
        - check-header: {name: X-Tenant, failed_check_httpcode: 401, failed_check_error_message: "X-Tenant is required"}
        - check-header: {name: X-Env, values: [Prod, Test], ignore_case: true, failed_check_httpcode: 403, failed_check_error_message: "unknown environment"}
"#,
    )
    .await;
    let c = Client::plain(gw.addr("plain"));
    let r = c.get("/", &[("x-tenant", "acme"), ("x-env", "PROD")]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["headers"]["x-tenant"][0], "acme");

    let f = c
        .get("/", &[("x-env", "prod")])
        .await
        .assert_fault(401, "policy.check-header.missing");
    assert_eq!(f["detail"], "X-Tenant is required");
    assert_eq!(f["title"], "Header check failed");

    let f = c
        .get("/", &[("x-tenant", "acme"), ("x-env", "dev")])
        .await
        .assert_fault(403, "policy.check-header.value");
    assert_eq!(f["detail"], "unknown environment");
}

/// Each scope appends its name to `x-order`; the upstream's echo shows the
/// order the policies ran in.
#[tokio::test]
async fn chain_order_with_and_without_base() {
    let tag =
        |v: &str| format!("- set-header: {{name: x-order, value: {v}, exists_action: append}}");
    let yaml = format!(
        r#"
policies:
  inbound:
    {g}
apis:
  - name: base-first
    path: /a
    upstream: app
    policies:
      inbound:
        - base
        {api}
    operations:
      - name: op-base-last
        path: /a/last
        policies:
          inbound:
            {op}
            - base
      - name: op-no-base
        path: /a/none
        policies:
          inbound:
            {op}
      - name: op-inherits
        path: /a/inherit
  - name: no-base
    path: /b
    upstream: app
    policies:
      inbound:
        {api}
  - name: inherits-global
    path: /c
    upstream: app
"#,
        g = tag("global"),
        api = tag("api"),
        op = tag("op"),
    );
    let (gw, _up) = gateway(&yaml).await;
    let c = Client::plain(gw.addr("plain"));
    let order = |r: gatehouse_tests::Reply| -> Vec<String> {
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        r.json()["headers"]["x-order"]
            .as_array()
            .map(|a| a.iter().map(|v| v.as_str().unwrap().to_string()).collect())
            .unwrap_or_default()
    };
    assert_eq!(order(c.get("/a/last", &[]).await), ["op", "global", "api"]);
    assert_eq!(
        order(c.get("/a/none", &[]).await),
        ["op"],
        "without base the outer chain does not run"
    );
    assert_eq!(
        order(c.get("/a/inherit", &[]).await),
        ["global", "api"],
        "no policies section = the API's chain"
    );
    assert_eq!(order(c.get("/b", &[]).await), ["api"]);
    assert_eq!(order(c.get("/c", &[]).await), ["global"]);
    // `gatehouse check` shows the same effective chains.
    let _ = gw;
}

#[tokio::test]
async fn outbound_policies_edit_the_response() {
    let (gw, _up) = gateway(
        r#"
policies:
  outbound:
    - set-header: {name: X-Gateway, value: gatehouse}
apis:
  - name: app
    path: /
    upstream: app
    policies:
      outbound:
        - base
        - set-header: {name: server, exists_action: delete}
        - set-header: {name: x-status, expression: "string(response.status)"}
        - set-header: {name: x-gateway, value: ignored, exists_action: skip}
"#,
    )
    .await;
    let r = Client::plain(gw.addr("plain")).get("/", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-gateway"), Some("gatehouse"));
    assert_eq!(r.header("server"), None, "deleted by the outbound chain");
    assert_eq!(r.header("x-status"), Some("200"));
}

#[tokio::test]
async fn return_response_answers_without_the_upstream() {
    let (gw, up) = gateway(
        r#"
apis:
  - name: app
    path: /
    upstream: app
    policies:
      inbound:
        - return-response: {status_code: 503, headers: {retry-after: "30", content-type: text/plain}, body: "down for maintenance"}
"#,
    )
    .await;
    let r = Client::plain(gw.addr("plain")).get("/", &[]).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.header("retry-after"), Some("30"));
    assert_eq!(&r.body[..], b"down for maintenance");
    assert!(r.header("x-request-id").is_some());
    // Answered by the policy: the upstream never saw a connection.
    assert_eq!(up.connections(), 0, "no connection to the upstream");
    assert_eq!(up.requests(), 0);
}

#[tokio::test]
async fn expressions_read_request_fields_and_variables() {
    let yaml = format!(
        r#"
custom_policies:
  api-key: {{wasm: "{wasm}"}}
apis:
  - name: app
    path: /orders
    upstream: app
    operations:
      - name: get
        method: GET
        path: /orders/{{id}}
        policies:
          inbound:
            - api-key: {{keys: [k-one, k-two]}}
            - set-header: {{name: x-summary, expression: "request.method + ' ' + request.path + ' id=' + route.params.id + ' key#' + vars['api_key.index'] + ' tenant=' + request.headers['x-tenant']"}}
            - set-header: {{name: x-tls, expression: "connection.tls_version == null ? 'plain' : 'tls'"}}
"#,
        wasm = api_key_wasm()
    );
    let (gw, _up) = gateway(&yaml).await;
    let c = Client::plain(gw.addr("plain"));
    let r = c
        .get("/orders/9", &[("x-api-key", "k-two"), ("x-tenant", "acme")])
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let h = &r.json()["headers"];
    assert_eq!(h["x-summary"][0], "GET /orders/9 id=9 key#1 tenant=acme");
    assert_eq!(h["x-tls"][0], "plain");
    // The custom policy (loaded from its .wasm path) refuses a bad key.
    c.get("/orders/9", &[("x-api-key", "nope")])
        .await
        .assert_fault(401, "policy.api-key.invalid");
    // An expression that fails at request time is a fault, not a crash.
    let f = c
        .get("/orders/9", &[("x-api-key", "k-one")])
        .await
        .assert_fault(500, "policy.set-header.expression");
    assert!(f["detail"].as_str().unwrap().contains("x-tenant"), "{f}");
}

#[tokio::test]
async fn named_values_from_config_environment_and_files() {
    std::env::set_var("GATEHOUSE_TEST_TENANT", "from-env");
    let (gw, _up) = gateway(
        r#"
named_values:
  greeting: {file: greeting.txt}
  tenant: {env: GATEHOUSE_TEST_TENANT}
apis:
  - name: app
    path: /
    upstream: app
    policies:
      inbound:
        - set-header: {name: x-greeting, value: "{{greeting}}, {{ tenant }}!"}
        - check-header: {name: x-tenant, values: ["{{tenant}}"]}
"#,
    )
    .await;
    let c = Client::plain(gw.addr("plain"));
    let r = c.get("/", &[("x-tenant", "from-env")]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["headers"]["x-greeting"][0], "hello, from-env!");
    c.get("/", &[("x-tenant", "other")])
        .await
        .assert_fault(400, "policy.check-header.value");
}

#[tokio::test]
async fn misbehaving_policies_fail_only_their_own_request() {
    let yaml = format!(
        r#"
policy_runtime: {{call_deadline_ms: 50, memory_limit_mib: 16, instances_per_policy: 2}}
custom_policies:
  misbehave: {{wasm: "{wasm}"}}
apis:
  - name: app
    path: /
    upstream: app
    policies:
      inbound:
        - misbehave: {{}}
"#,
        wasm = misbehave_wasm()
    );
    let (gw, _up) = gateway(&yaml).await;
    let c = Client::plain(gw.addr("plain"));
    for (mode, code) in [
        ("panic", "policy.trap"),
        ("loop", "policy.timeout"),
        ("alloc", "policy.memory"),
    ] {
        // A well-behaved request in flight at the same time succeeds.
        let good = tokio::spawn({
            let c = Client::plain(gw.addr("plain"));
            async move { c.get("/", &[("x-misbehave", "no")]).await }
        });
        let f = c
            .get("/", &[("x-misbehave", mode)])
            .await
            .assert_fault(500, code);
        assert!(
            f["detail"].as_str().unwrap().contains("policy `misbehave`"),
            "{f}"
        );
        assert_eq!(
            good.await.unwrap().status,
            200,
            "{mode}: other requests are served"
        );
        // The failed instance was replaced: the same policy serves the next request.
        for _ in 0..3 {
            assert_eq!(c.get("/", &[]).await.status, 200, "after {mode}");
        }
    }
}

#[tokio::test]
async fn context_variables_flow_between_policies() {
    let yaml = format!(
        r#"
custom_policies:
  api-key: {{wasm: "{k}"}}
  misbehave: {{wasm: "{m}"}}
apis:
  - name: app
    path: /
    upstream: app
    policies:
      inbound:
        - api-key: {{keys: [a, b, c]}}
        - set-header: {{name: x-probe-in, expression: "vars['api_key.index']"}}
"#,
        k = api_key_wasm(),
        m = misbehave_wasm()
    );
    let (gw, _up) = gateway(&yaml).await;
    let r = Client::plain(gw.addr("plain"))
        .get("/", &[("x-api-key", "c")])
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["headers"]["x-probe-in"][0], "2");
}

#[tokio::test]
async fn on_error_chain_edits_every_fault() {
    let (gw, _up) = gateway(
        r#"
policies:
  on_error:
    - set-header: {name: x-error-code, expression: "vars['error.code']"}
apis:
  - name: app
    path: /
    upstream: app
    policies:
      inbound:
        - check-header: {name: x-tenant}
"#,
    )
    .await;
    let c = Client::plain(gw.addr("plain"));
    let r = c.get("/", &[]).await;
    r.assert_fault(400, "policy.check-header.missing");
    assert_eq!(
        r.header("x-error-code"),
        Some("policy.check-header.missing")
    );
    assert_eq!(c.get("/", &[("x-tenant", "a")]).await.status, 200);
}

#[tokio::test]
async fn policies_can_use_std_collections_and_clocks_but_not_stdout() {
    let yaml = format!(
        r#"
custom_policies:
  misbehave: {{wasm: "{wasm}"}}
apis:
  - name: app
    path: /
    upstream: app
    policies:
      inbound: [misbehave]
"#,
        wasm = misbehave_wasm()
    );
    let (gw, _up) = gateway(&yaml).await;
    let c = Client::plain(gw.addr("plain"));
    let r = c.get("/", &[("x-misbehave", "std")]).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        r.json()["headers"]["x-std"][0],
        "map=1 wall>2020=true mono=true env=0"
    );
    // WASI beyond randomness, clocks and the environment traps.
    c.get("/", &[("x-misbehave", "stdout")])
        .await
        .assert_fault(500, "policy.trap");
    assert_eq!(c.get("/", &[]).await.status, 200);
}

#[tokio::test]
async fn secret_named_values_never_reach_a_fault() {
    let (gw, _up) = gateway(
        r#"
named_values:
  token: {value: "tok-3f9a1c", secret: true}
apis:
  - name: app
    path: /
    upstream: app
    policies:
      inbound:
        - set-header: {name: authorization, expression: "'Bearer {{token}} ' + request.headers['x-missing']"}
"#,
    )
    .await;
    let r = Client::plain(gw.addr("plain")).get("/", &[]).await;
    let f = r.assert_fault(500, "policy.set-header.expression");
    let detail = f["detail"].as_str().unwrap();
    assert!(
        !String::from_utf8_lossy(&r.body).contains("tok-3f9a1c"),
        "{detail}"
    );
    assert!(detail.contains("***"), "{detail}");
}
