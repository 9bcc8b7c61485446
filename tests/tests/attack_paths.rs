//! Attack suite: path and host confusion.
//!
//! One table of request targets, each with the outcome the gateway must
//! give: the fault code, or the path the upstream receives. A request is
//! routed, checked by policies and forwarded as one and the same path.
//!
//! References: Orange Tsai, "Breaking Parser Logic" (Black Hat USA 2018):
//! `..;/` against Tomcat behind a proxy; CVE-2020-1957 (Apache Shiro, `;`
//! path bypass); CVE-2021-41773 (Apache httpd, `.%2e/` traversal);
//! CVE-2019-0230-style double encoding; Microsoft IIS case-insensitive
//! paths (OWASP WSTG-CONF-04); RFC 9110 §7.2 (Host) and §4.2.3
//! (authority normalisation).

use std::time::Duration;

use gatehouse_tests::{raw, upstream, Client, Gw, TempDir};

async fn gateway(up: std::net::SocketAddr) -> Gw {
    let yaml = format!(
        r#"
listeners: [{{name: plain, address: "127.0.0.1:0"}}]
upstreams: {{app: {{url: "http://{up}"}}}}
apis:
  - {{name: root, path: /, upstream: app}}
  - {{name: public, path: /public, upstream: app}}
  - name: admin
    path: /admin
    upstream: app
    policies: {{inbound: [{{check-header: {{name: x-admin-token}}}}]}}
  - name: legacy
    path: /legacy
    upstream: app
    path_parameters: strip
  - name: iis
    path: /IIS
    upstream: app
    case_insensitive_paths: true
    policies: {{inbound: [{{check-header: {{name: x-iis-token}}}}]}}
  - name: named
    hosts: [example.com]
    path: /named
    upstream: app
"#
    );
    Gw::start(TempDir::new("paths"), &yaml).await
}

/// What a request must lead to.
enum Want {
    /// This fault code (with its status).
    Fault(u16, &'static str),
    /// The upstream receives this request target.
    Upstream(&'static str),
}

/// Sends `METHOD target` with `Host: host` on a raw connection (the target
/// exactly as written, no client-side normalisation).
async fn send(gw: &Gw, method: &str, target: &str, host: &str) -> raw::RawResponse {
    let req = format!("{method} {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    let bytes = raw::exchange(gw.addr("plain"), req.as_bytes(), Duration::from_secs(2)).await;
    let (mut rs, _) = raw::parse(&bytes);
    assert_eq!(
        rs.len(),
        1,
        "{method} {target}: {:?}",
        String::from_utf8_lossy(&bytes)
    );
    rs.remove(0)
}

fn check(method: &str, target: &str, r: &raw::RawResponse, want: &Want) {
    match want {
        Want::Fault(status, code) => {
            assert_eq!(
                r.status,
                *status,
                "{method} {target}: {:?}",
                String::from_utf8_lossy(&r.body)
            );
            let doc: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            assert_eq!(doc["code"], *code, "{method} {target}: {doc}");
        }
        Want::Upstream(path) => {
            assert_eq!(
                r.status,
                200,
                "{method} {target}: {:?}",
                String::from_utf8_lossy(&r.body)
            );
            let echo: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            assert_eq!(echo["target"], *path, "{method} {target}");
        }
    }
}

#[tokio::test]
async fn every_path_form_routes_and_forwards_one_way() {
    use Want::*;
    let up = upstream::echo().await;
    let gw = gateway(up.addr).await;
    let table: &[(&str, &str, Want)] = &[
        // `;` parameters: cut before dot segments, so `..;` is `..`; refused
        // unless the API strips them.
        (
            "GET",
            "/public/..;/admin/users",
            Fault(400, "request.path-parameters"),
        ),
        (
            "GET",
            "/public;x=1/..;/admin/users",
            Fault(400, "request.path-parameters"),
        ),
        (
            "GET",
            "/admin;jsessionid=1/users",
            Fault(400, "request.path-parameters"),
        ),
        ("GET", "/public/a;b", Fault(400, "request.path-parameters")),
        (
            "GET",
            "/legacy;jsessionid=abc/items;v=2",
            Upstream("/legacy/items"),
        ),
        (
            "GET",
            "/legacy/..;/admin/users",
            Fault(400, "request.path-parameters"),
        ),
        (
            "GET",
            "/legacy/x/..;/items?q=1",
            Upstream("/legacy/items?q=1"),
        ),
        // An encoded `;` is data, not a parameter.
        ("GET", "/public/%3B/x", Upstream("/public/%3B/x")),
        ("GET", "/public/a%3bb", Upstream("/public/a%3Bb")),
        // Dot segments, encoded or not, resolve before routing.
        (
            "GET",
            "/public/../admin/users",
            Fault(400, "policy.check-header.missing"),
        ),
        (
            "GET",
            "/public/%2e%2e/admin/users",
            Fault(400, "policy.check-header.missing"),
        ),
        (
            "GET",
            "/public/.%2e/admin/users",
            Fault(400, "policy.check-header.missing"),
        ),
        (
            "GET",
            "/public/%2E%2E/admin/users",
            Fault(400, "policy.check-header.missing"),
        ),
        (
            "GET",
            "//admin/users",
            Fault(400, "policy.check-header.missing"),
        ),
        (
            "GET",
            "/%61dmin/users",
            Fault(400, "policy.check-header.missing"),
        ),
        ("GET", "/public/./x/../y", Upstream("/public/y")),
        // Double encoding stays encoded (one decode only).
        (
            "GET",
            "/public/%252e%252e/admin",
            Upstream("/public/%252e%252e/admin"),
        ),
        // Encoded separators and backslashes are refused.
        (
            "GET",
            "/public/..%2fadmin",
            Fault(400, "request.invalid-path"),
        ),
        (
            "GET",
            "/public/..%2Fadmin",
            Fault(400, "request.invalid-path"),
        ),
        (
            "GET",
            "/public/..%5cadmin",
            Fault(400, "request.invalid-path"),
        ),
        (
            "GET",
            "/public\\..\\admin",
            Fault(400, "request.invalid-path"),
        ),
        ("GET", "/public/%zz", Fault(400, "request.invalid-path")),
        // Case: the admin API is case-sensitive (its upstream is); the IIS
        // API is not, and its policy runs whatever the case.
        ("GET", "/ADMIN/users", Upstream("/ADMIN/users")),
        (
            "GET",
            "/iis/secret",
            Fault(400, "policy.check-header.missing"),
        ),
        (
            "GET",
            "/iIs/secret",
            Fault(400, "policy.check-header.missing"),
        ),
        ("GET", "/IIS", Fault(400, "policy.check-header.missing")),
        ("GET", "/IISX", Upstream("/IISX")),
        // `*` is the target of OPTIONS only.
        ("OPTIONS", "*", Upstream("*")),
        ("GET", "*", Fault(400, "request.invalid-path")),
        ("DELETE", "*", Fault(400, "request.invalid-path")),
    ];
    for (method, target, want) in table {
        let r = send(&gw, method, target, "gw.test").await;
        check(method, target, &r, want);
    }
    // Nothing refused above reached the upstream under the admin or IIS
    // APIs' paths.
    for s in up.seen() {
        assert!(
            !s.contains("/admin/users") && !s.to_lowercase().contains("/iis/"),
            "{s}"
        );
    }
}

#[tokio::test]
async fn the_host_is_parsed_as_an_authority_and_forwarded_canonical() {
    let up = upstream::echo().await;
    let gw = gateway(up.addr).await;
    // Canonical forms route to the API named for `example.com`, and the
    // upstream sees the canonical authority.
    for (host, forwarded) in [
        ("Example.COM", "example.com"),
        ("example.com.", "example.com"),
        ("EXAMPLE.com.:0080", "example.com:80"),
        ("example.com:", "example.com"),
    ] {
        let r = send(&gw, "GET", "/named/x", host).await;
        assert_eq!(
            r.status,
            200,
            "Host: {host}: {:?}",
            String::from_utf8_lossy(&r.body)
        );
        let echo: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(
            echo["headers"]["x-forwarded-host"][0], forwarded,
            "Host: {host}"
        );
    }
    for host in [
        "user@example.com",
        "user:pass@example.com",
        "example.com:80x",
        "example.com:99999",
        "example.com:-1",
        "exa_mple.com:1:2",
        "[::1",
        "[zz]",
        "example.com%00",
        "a..b",
    ] {
        let r = send(&gw, "GET", "/named/x", host).await;
        assert_eq!(r.status, 400, "Host: {host}");
        let doc: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(doc["code"], "request.invalid-host", "Host: {host}");
    }
    // Not ASCII (an IDNA name must come in its xn-- form; raw UTF-8 or
    // Latin-1 bytes are refused).
    for raw_host in [&b"b\xc3\xbccher.example"[..], &b"b\xfccher.example"[..]] {
        let mut req = b"GET /named/x HTTP/1.1\r\nHost: ".to_vec();
        req.extend_from_slice(raw_host);
        req.extend_from_slice(b"\r\nConnection: close\r\n\r\n");
        let bytes = raw::exchange(gw.addr("plain"), &req, Duration::from_secs(2)).await;
        let (rs, _) = raw::parse(&bytes);
        assert_eq!(
            rs.first().map(|r| r.status),
            Some(400),
            "{:?}",
            String::from_utf8_lossy(&bytes)
        );
    }
    // HTTP/2 `:authority` goes through the same parsing.
    let h2 = Client {
        addr: gw.addr("plain"),
        tls: None,
        h2: true,
        source: None,
    };
    let mut conn = h2.connect().await;
    let r = conn
        .request("GET", "EXAMPLE.com.", "/named/y", &[], b"")
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["headers"]["x-forwarded-host"][0], "example.com");
}
