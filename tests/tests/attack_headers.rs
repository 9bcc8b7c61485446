//! Attack suite: header forgery.
//!
//! - Headers a client names in `Connection` are hop-by-hop: they are
//!   removed before routing and policies (so a policy never checks a header
//!   the upstream will not get), and never after (so one a policy set is
//!   not dropped because the client named it).
//! - Forwarding headers from a client that is not a trusted proxy are
//!   removed before policies see them; `X-Forwarded-For` is replaced, not
//!   appended to. From a peer in `trust_forwarded_from` they are kept.
//!
//! References: "Abusing HTTP hop-by-hop request headers" (N. Davis, 2019);
//! CVE-2022-1388 (F5 BIG-IP: `Connection: X-F5-Auth-Token` strips an auth
//! header after the check); CVE-2021-21975-style IP spoofing through
//! `X-Forwarded-For`; `X-Original-URL` / `X-Rewrite-URL` access-control
//! bypasses (OWASP WSTG-INPV-14, Symfony CVE-2018-14773).

use gatehouse_tests::{upstream, Client, Gw, TempDir};

async fn gateway(up: std::net::SocketAddr, trusted: &str) -> Gw {
    let yaml = format!(
        r#"
listeners:
  - name: plain
    address: "127.0.0.1:0"
  - name: behind-lb
    address: "127.0.0.1:0"
    trust_forwarded_from: [{trusted}]
upstreams: {{app: {{url: "http://{up}"}}}}
apis:
  - name: checked
    path: /checked
    upstream: app
    policies: {{inbound: [{{check-header: {{name: x-tenant}}}}]}}
  - name: stamped
    path: /stamped
    upstream: app
    policies: {{inbound: [{{set-header: {{name: x-verified, value: "yes"}}}}]}}
  - name: original-url
    path: /original
    upstream: app
    policies: {{inbound: [{{check-header: {{name: x-original-url}}}}]}}
"#
    );
    Gw::start(TempDir::new("headers"), &yaml).await
}

#[tokio::test]
async fn connection_named_headers_go_before_the_policies_not_after() {
    let up = upstream::echo().await;
    let gw = gateway(up.addr, "192.0.2.1").await;
    let c = Client::plain(gw.addr("plain"));

    // The client names the header it sends: the policy must not see it
    // (else the policy passes and the upstream gets nothing).
    c.get(
        "/checked",
        &[("x-tenant", "acme"), ("connection", "keep-alive, x-tenant")],
    )
    .await
    .assert_fault(400, "policy.check-header.missing");
    assert!(up.seen().is_empty());

    // A header the policy set stays, whatever the client named.
    let r = c
        .get(
            "/stamped",
            &[("connection", "x-verified"), ("x-verified", "forged")],
        )
        .await;
    assert_eq!(r.status, 200);
    let h = &r.json()["headers"];
    assert_eq!(h["x-verified"], serde_json::json!(["yes"]), "{h}");
    assert!(h.get("connection").is_none());
}

#[tokio::test]
async fn forwarding_headers_of_untrusted_clients_are_removed() {
    let up = upstream::echo().await;
    let gw = gateway(up.addr, "192.0.2.1").await;
    let c = Client::plain(gw.addr("plain"));
    let forged = [
        ("forwarded", "for=203.0.113.7;proto=https"),
        ("x-forwarded-for", "203.0.113.7"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "admin.internal"),
        ("x-forwarded-port", "443"),
        ("x-forwarded-prefix", "/admin"),
        ("x-real-ip", "203.0.113.7"),
        ("x-original-url", "/admin/delete"),
        ("x-rewrite-url", "/admin/delete"),
        ("x-http-method-override", "DELETE"),
    ];
    let r = c.get("/stamped", &forged).await;
    assert_eq!(r.status, 200);
    let h = &r.json()["headers"];
    for (name, value) in forged {
        let got = h.get(name);
        assert!(
            got.is_none_or(|v| !v.to_string().contains(value)),
            "{name}: {value} reached the upstream: {h}"
        );
    }
    assert_eq!(h["x-forwarded-for"], serde_json::json!(["127.0.0.1"]));
    assert_eq!(h["x-forwarded-proto"], serde_json::json!(["http"]));
    // Policies do not see them either.
    c.get("/original", &[("x-original-url", "/admin")])
        .await
        .assert_fault(400, "policy.check-header.missing");
}

#[tokio::test]
async fn forwarding_headers_of_trusted_proxies_are_kept_and_appended_to() {
    let up = upstream::echo().await;
    let gw = gateway(up.addr, "127.0.0.0/8").await;
    let lb = Client::plain(gw.addr("behind-lb"));
    let r = lb
        .get(
            "/stamped",
            &[
                ("x-forwarded-for", "203.0.113.7"),
                ("x-forwarded-proto", "https"),
                ("x-forwarded-host", "api.example.com"),
                ("x-real-ip", "203.0.113.7"),
                ("forwarded", "for=203.0.113.7"),
            ],
        )
        .await;
    let h = &r.json()["headers"];
    assert_eq!(
        h["x-forwarded-for"],
        serde_json::json!(["203.0.113.7, 127.0.0.1"])
    );
    assert_eq!(h["x-forwarded-proto"], serde_json::json!(["https"]));
    assert_eq!(
        h["x-forwarded-host"],
        serde_json::json!(["api.example.com"])
    );
    assert_eq!(h["x-real-ip"], serde_json::json!(["203.0.113.7"]));
    assert_eq!(h["forwarded"], serde_json::json!(["for=203.0.113.7"]));
    // The same client on the listener that trusts nobody: replaced.
    let r = Client::plain(gw.addr("plain"))
        .get("/stamped", &[("x-forwarded-for", "203.0.113.7")])
        .await;
    assert_eq!(
        r.json()["headers"]["x-forwarded-for"],
        serde_json::json!(["127.0.0.1"])
    );
}

#[tokio::test]
async fn a_bad_trusted_network_is_a_config_error() {
    let errors = Gw::build_errors(
        &TempDir::new("trust-errors"),
        "listeners: [{name: a, address: \"127.0.0.1:0\", trust_forwarded_from: [\"10.0.0.0/8\", \"not-a-net\", \"10.0.0.0/33\"]}]\nupstreams: {app: {url: \"builtin:echo\"}}\napis: [{name: x, path: /, upstream: app}]\n",
    );
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors[0].ends_with("listeners[0].trust_forwarded_from[1]: `not-a-net` is not an address or a network (e.g. 10.0.0.0/8, 192.0.2.7, ::1)"), "{errors:?}");
    assert!(
        errors[1].contains("listeners[0].trust_forwarded_from[2]"),
        "{errors:?}"
    );
}
