//! `ip-filter`: allow or forbid a request by its client's IP address:
//! single addresses, `from`/`to` ranges and CIDR blocks, IPv4 and IPv6
//! (an IPv4-mapped IPv6 address counts as its IPv4 address). The client is
//! the connection's peer, or — only when the peer is a trusted proxy — the
//! rightmost address of `X-Forwarded-For` (or `Forwarded: for=`) that is
//! not a trusted proxy. See this crate's README for the config reference.

use std::net::IpAddr;

use gatehouse_sdk::{export_policy, Connection, Decision, Fault, Policy, Request};
use ipnet::IpNet;
use serde::Deserialize;

/// `allow`: only the listed addresses pass. `forbid`: they are refused.
#[derive(Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Only listed addresses pass.
    Allow,
    /// Listed addresses are refused.
    Forbid,
}

/// An inclusive range of addresses.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Range {
    /// The first address.
    pub from: String,
    /// The last address.
    pub to: String,
}

/// The config, as written under `ip-filter:` in the gateway's YAML.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `allow` or `forbid`.
    pub action: Action,
    /// Single addresses.
    #[serde(default)]
    pub addresses: Vec<String>,
    /// Inclusive ranges.
    #[serde(default)]
    pub address_ranges: Vec<Range>,
    /// CIDR blocks (`10.0.0.0/8`, `2001:db8::/32`).
    #[serde(default)]
    pub cidrs: Vec<String>,
    /// Proxies whose `X-Forwarded-For` / `Forwarded` is believed (addresses
    /// or CIDR blocks). Default: none, the peer is the client.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
}

/// A parsed rule: addresses are kept as (family, number) so a range is two
/// comparisons.
#[derive(Debug, Clone, Copy)]
enum Rule {
    V4(u32, u32),
    V6(u128, u128),
}

impl Rule {
    fn contains(&self, ip: IpAddr) -> bool {
        match (self, ip) {
            (Rule::V4(a, b), IpAddr::V4(x)) => (*a..=*b).contains(&u32::from(x)),
            (Rule::V6(a, b), IpAddr::V6(x)) => (*a..=*b).contains(&u128::from(x)),
            _ => false,
        }
    }

    fn from_net(n: IpNet) -> Rule {
        match n {
            IpNet::V4(n) => Rule::V4(u32::from(n.network()), u32::from(n.broadcast())),
            IpNet::V6(n) => Rule::V6(u128::from(n.network()), u128::from(n.broadcast())),
        }
    }
}

/// An IPv4-mapped IPv6 address (`::ffff:192.0.2.1`) as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

fn parse_ip(s: &str) -> Option<IpAddr> {
    let s = s.trim();
    // `[v6]` and `[v6]:port`, `v4:port` as proxies write them.
    let s = match s.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(rest),
        None if s.matches(':').count() == 1 => s.split(':').next().unwrap_or(s),
        None => s,
    };
    s.parse::<IpAddr>().ok().map(canonical)
}

fn parse_rules(c: &Config) -> Result<Vec<Rule>, String> {
    let mut rules = Vec::new();
    for (i, a) in c.addresses.iter().enumerate() {
        let ip = a
            .trim()
            .parse::<IpAddr>()
            .map_err(|_| format!("addresses[{i}]: `{a}` is not an IP address"))?;
        rules.push(Rule::from_net(IpNet::from(canonical(ip))));
    }
    for (i, r) in c.address_ranges.iter().enumerate() {
        let from = r
            .from
            .trim()
            .parse::<IpAddr>()
            .map(canonical)
            .map_err(|_| {
                format!(
                    "address_ranges[{i}].from: `{}` is not an IP address",
                    r.from
                )
            })?;
        let to =
            r.to.trim()
                .parse::<IpAddr>()
                .map(canonical)
                .map_err(|_| format!("address_ranges[{i}].to: `{}` is not an IP address", r.to))?;
        let rule = match (from, to) {
            (IpAddr::V4(a), IpAddr::V4(b)) => Rule::V4(u32::from(a), u32::from(b)),
            (IpAddr::V6(a), IpAddr::V6(b)) => Rule::V6(u128::from(a), u128::from(b)),
            _ => {
                return Err(format!(
                    "address_ranges[{i}]: `{}` and `{}` are not of one family (IPv4 and IPv6)",
                    r.from, r.to
                ))
            }
        };
        let above = match rule {
            Rule::V4(a, b) => a > b,
            Rule::V6(a, b) => a > b,
        };
        if above {
            return Err(format!(
                "address_ranges[{i}]: from `{}` is above to `{}`",
                r.from, r.to
            ));
        }
        rules.push(rule);
    }
    for (i, n) in c.cidrs.iter().enumerate() {
        let net = n.trim().parse::<IpNet>().map_err(|_| {
            format!("cidrs[{i}]: `{n}` is not a CIDR block (e.g. 10.0.0.0/8, 2001:db8::/32)")
        })?;
        if net.trunc() != net {
            return Err(format!(
                "cidrs[{i}]: `{n}` has host bits set; did you mean `{}`?",
                net.trunc()
            ));
        }
        rules.push(Rule::from_net(net));
    }
    Ok(rules)
}

/// The constructed policy.
pub struct IpFilter {
    action: Action,
    rules: Vec<Rule>,
    trusted: Vec<Rule>,
}

impl IpFilter {
    fn listed(&self, ip: IpAddr) -> bool {
        self.rules.iter().any(|r| r.contains(ip))
    }

    fn trusted(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|r| r.contains(ip))
    }

    /// The client: the peer, or behind trusted proxies the rightmost
    /// forwarded address that is not one of them.
    fn client(&self, req: &Request, peer: IpAddr) -> Result<IpAddr, String> {
        if self.trusted.is_empty() || !self.trusted(peer) {
            return Ok(peer);
        }
        let mut hops: Vec<String> = Vec::new();
        for v in req.header_all("forwarded") {
            for element in v.split(',') {
                for pair in element.split(';') {
                    if let Some((k, val)) = pair.trim().split_once('=') {
                        if k.trim().eq_ignore_ascii_case("for") {
                            hops.push(val.trim().trim_matches('"').to_string());
                        }
                    }
                }
            }
        }
        if hops.is_empty() {
            for v in req.header_all("x-forwarded-for") {
                hops.extend(v.split(',').map(|s| s.trim().to_string()));
            }
        }
        let mut client = peer;
        for hop in hops.iter().rev() {
            let Some(ip) = parse_ip(hop) else {
                return Err(format!(
                    "a trusted proxy forwarded `{hop}`, which is not an IP address"
                ));
            };
            client = ip;
            if !self.trusted(ip) {
                break;
            }
        }
        Ok(client)
    }
}

impl Policy for IpFilter {
    type Config = Config;

    fn new(c: Config) -> Result<Self, String> {
        let rules = parse_rules(&c)?;
        if rules.is_empty() {
            return Err(
                "list at least one of addresses, address_ranges, cidrs (an empty allow list refuses everyone)"
                    .into(),
            );
        }
        let mut trusted = Vec::new();
        for (i, t) in c.trusted_proxies.iter().enumerate() {
            let net = match t.trim().parse::<IpNet>() {
                Ok(n) => n.trunc(),
                Err(_) => match t.trim().parse::<IpAddr>() {
                    Ok(ip) => IpNet::from(canonical(ip)),
                    Err(_) => {
                        return Err(format!(
                            "trusted_proxies[{i}]: `{t}` is not an IP address or CIDR block"
                        ))
                    }
                },
            };
            trusted.push(Rule::from_net(net));
        }
        Ok(IpFilter {
            action: c.action,
            rules,
            trusted,
        })
    }

    fn on_request(&self, req: &Request, conn: &Connection) -> Decision {
        let peer_text = conn.client_ip();
        let Some(peer) = parse_ip(&peer_text) else {
            return refuse(
                "unknown-client",
                format!("the client address `{peer_text}` cannot be read"),
            );
        };
        let client = match self.client(req, peer) {
            Ok(ip) => ip,
            Err(why) => return refuse("bad-forwarded", why),
        };
        let listed = self.listed(client);
        match (self.action, listed) {
            (Action::Allow, true) | (Action::Forbid, false) => Decision::proceed(),
            (Action::Allow, false) => refuse(
                "forbidden",
                format!("the client address {client} is not in the allowed list"),
            ),
            (Action::Forbid, true) => refuse(
                "forbidden",
                format!("the client address {client} is forbidden"),
            ),
        }
    }
}

fn refuse(reason: &str, detail: String) -> Decision {
    Decision::Deny(Fault {
        status: 403,
        code: format!("policy.ip-filter.{reason}"),
        title: "Forbidden".into(),
        detail,
        headers: Vec::new(),
    })
}

export_policy!(IpFilter);

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_sdk::testkit::{self, TestConnection, TestRequest};

    fn build(json: &str) -> Result<IpFilter, String> {
        testkit::build(json)
    }

    fn from(p: &IpFilter, ip: &str, xff: Option<&str>) -> Decision {
        let mut req = TestRequest::get("/");
        if let Some(x) = xff {
            req = req.header("x-forwarded-for", x);
        }
        let conn = TestConnection {
            client_ip: ip.into(),
            ..TestConnection::default()
        };
        testkit::on_request_with(p, &req, &conn)
    }

    fn code(d: &Decision) -> Option<String> {
        match d {
            Decision::Deny(f) => Some(f.code.clone()),
            _ => None,
        }
    }

    #[test]
    fn addresses_ranges_and_blocks_in_both_families() {
        let p = build(
            r#"{"action":"allow","addresses":["192.0.2.7","2001:db8::1"],
                "address_ranges":[{"from":"10.0.0.10","to":"10.0.0.20"}],
                "cidrs":["172.16.0.0/12","2001:db8:1::/48"]}"#,
        )
        .unwrap();
        for ok in [
            "192.0.2.7",
            "2001:db8::1",
            "10.0.0.10",
            "10.0.0.20",
            "172.31.255.255",
            "2001:db8:1:ffff::9",
            "::ffff:192.0.2.7",
        ] {
            assert_eq!(code(&from(&p, ok, None)), None, "{ok}");
        }
        for no in [
            "192.0.2.8",
            "10.0.0.21",
            "10.0.0.9",
            "172.32.0.0",
            "2001:db8::2",
            "::1",
        ] {
            assert_eq!(
                code(&from(&p, no, None)).as_deref(),
                Some("policy.ip-filter.forbidden"),
                "{no}"
            );
        }
        let f = build(r#"{"action":"forbid","cidrs":["10.0.0.0/8"]}"#).unwrap();
        assert!(code(&from(&f, "10.1.2.3", None)).is_some());
        assert!(code(&from(&f, "11.1.2.3", None)).is_none());
    }

    #[test]
    fn forwarded_addresses_count_only_from_trusted_proxies() {
        let p = build(
            r#"{"action":"allow","addresses":["198.51.100.9"],"trusted_proxies":["127.0.0.0/8","10.0.0.5"]}"#,
        )
        .unwrap();
        // Through two trusted proxies: the rightmost untrusted one wins.
        assert!(code(&from(
            &p,
            "127.0.0.1",
            Some("203.0.113.1, 198.51.100.9, 10.0.0.5")
        ))
        .is_none());
        // A client that writes its own header in front cannot pass as
        // someone else: the rightmost untrusted address is the real one.
        assert!(code(&from(&p, "127.0.0.1", Some("198.51.100.9, 203.0.113.1"))).is_some());
        // From an untrusted peer the header is ignored.
        assert!(code(&from(&p, "203.0.113.50", Some("198.51.100.9"))).is_some());
        // Garbage from a trusted proxy is refused with its own code.
        assert_eq!(
            code(&from(&p, "127.0.0.1", Some("not-an-ip"))).as_deref(),
            Some("policy.ip-filter.bad-forwarded")
        );
    }

    #[test]
    fn bad_config_names_the_entry() {
        let e = build(r#"{"action":"allow","addresses":["300.1.1.1"]}"#)
            .err()
            .unwrap();
        assert!(e.starts_with("addresses[0]:"), "{e}");
        let e =
            build(r#"{"action":"allow","address_ranges":[{"from":"10.0.0.9","to":"10.0.0.1"}]}"#)
                .err()
                .unwrap();
        assert!(
            e.contains("address_ranges[0]: from `10.0.0.9` is above to `10.0.0.1`"),
            "{e}"
        );
        let e = build(r#"{"action":"allow","address_ranges":[{"from":"10.0.0.1","to":"::1"}]}"#)
            .err()
            .unwrap();
        assert!(e.contains("not of one family"), "{e}");
        let e = build(r#"{"action":"allow","cidrs":["10.0.0.1/8"]}"#)
            .err()
            .unwrap();
        assert!(e.contains("did you mean `10.0.0.0/8`"), "{e}");
        let e = build(r#"{"action":"allow"}"#).err().unwrap();
        assert!(e.contains("list at least one"), "{e}");
        let e = build(r#"{"action":"allow","cidrs":["10.0.0.0/8"],"trusted_proxies":["proxy"]}"#)
            .err()
            .unwrap();
        assert!(e.starts_with("trusted_proxies[0]"), "{e}");
    }
}
