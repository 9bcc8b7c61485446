//! `ip-filter` with real source addresses: clients bound to 127.0.0.2,
//! 127.0.0.3 and ::1 against allow and forbid lists, and `X-Forwarded-For`
//! believed only from a trusted proxy — both the listener's
//! `trust_forwarded_from` and the policy's `trusted_proxies`.

use std::net::IpAddr;

use gatehouse_tests::{Client, Gw, TempDir};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[tokio::test]
async fn real_client_addresses_are_allowed_and_forbidden() {
    let yaml = r#"
listeners:
  - {name: v4, address: "127.0.0.1:0", trust_forwarded_from: [127.0.0.9/32]}
  - {name: v6, address: "[::1]:0"}
upstreams: {echo: {url: "builtin:echo"}}
apis:
  - name: allow
    path: /allow
    upstream: echo
    policies:
      inbound:
        - ip-filter:
            action: allow
            addresses: ["127.0.0.2", "::1"]
            address_ranges: [{from: 198.51.100.1, to: 198.51.100.9}]
            trusted_proxies: [127.0.0.9]
  - name: forbid
    path: /forbid
    upstream: echo
    policies:
      inbound:
        - ip-filter: {action: forbid, cidrs: [127.0.0.0/30]}
"#;
    let gw = Gw::start(TempDir::new("ip-filter"), yaml).await;
    let v4 = gw.addr("v4");
    let from = |src: &str| Client::plain(v4).from_ip(ip(src));
    assert_eq!(from("127.0.0.2").get("/allow", &[]).await.status, 200);
    let f = from("127.0.0.3")
        .get("/allow", &[])
        .await
        .assert_fault(403, "policy.ip-filter.forbidden");
    assert_eq!(
        f["detail"],
        "the client address 127.0.0.3 is not in the allowed list"
    );
    let r = Client::plain(gw.addr("v6"))
        .from_ip(ip("::1"))
        .get("/allow", &[])
        .await;
    assert_eq!(r.status, 200, "::1 is listed");
    // 127.0.0.0/30 holds .1-.3: .2 is forbidden, .5 is not.
    from("127.0.0.2")
        .get("/forbid", &[])
        .await
        .assert_fault(403, "policy.ip-filter.forbidden");
    assert_eq!(from("127.0.0.5").get("/forbid", &[]).await.status, 200);

    // X-Forwarded-For: from an untrusted peer it is removed on arrival
    // (the listener's trust_forwarded_from) and never believed.
    from("127.0.0.3")
        .get("/allow", &[("x-forwarded-for", "127.0.0.2")])
        .await
        .assert_fault(403, "policy.ip-filter.forbidden");
    // From the trusted proxy (127.0.0.9), the rightmost untrusted address
    // is the client.
    assert_eq!(
        from("127.0.0.9")
            .get(
                "/allow",
                &[("x-forwarded-for", "203.0.113.1, 198.51.100.5")]
            )
            .await
            .status,
        200
    );
    let f = from("127.0.0.9")
        .get(
            "/allow",
            &[("x-forwarded-for", "198.51.100.5, 203.0.113.1")],
        )
        .await
        .assert_fault(403, "policy.ip-filter.forbidden");
    assert_eq!(
        f["detail"],
        "the client address 203.0.113.1 is not in the allowed list"
    );
}

#[tokio::test]
async fn a_malformed_rule_is_a_config_error_naming_the_entry() {
    let yaml = r#"
listeners: [{name: v4, address: "127.0.0.1:0"}]
upstreams: {echo: {url: "builtin:echo"}}
apis:
  - name: a
    path: /
    upstream: echo
    policies:
      inbound:
        - ip-filter:
            action: allow
            address_ranges: [{from: 10.0.0.9, to: 10.0.0.1}]
"#;
    let errors = Gw::build_errors(&TempDir::new("ip-filter-bad"), yaml).join("\n");
    assert!(
        errors.contains("apis[0].policies.inbound[0].ip-filter: address_ranges[0]: from `10.0.0.9` is above to `10.0.0.1`"),
        "{errors}"
    );
}
