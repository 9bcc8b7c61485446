//! `validate-client-certificate`: checks the client certificate the TLS
//! handshake received — trust, revocation, its validity dates — and
//! matches it against identities (thumbprint, serial number, names,
//! issuer), like Azure API Management's policy of the same name. The
//! chain itself is verified by the gateway's TLS host (its truststore and
//! CRLs); this policy reads the result, and checks issuer certificates
//! named in its config through the host's `certificates` interface. See
//! this crate's README for the config reference.

use gatehouse_sdk::certificates::Issuer;
use gatehouse_sdk::{
    declarations, export_policy, host, Connection, Decision, Fault, Policy, Request,
};
use serde::Deserialize;

fn yes() -> bool {
    true
}

/// One identity: every attribute it sets must match.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    /// SHA-1 (40 hex digits, Azure's) or SHA-256 (64) of the certificate.
    pub thumbprint: Option<String>,
    /// The serial number, hex.
    pub serial_number: Option<String>,
    /// The subject's common name.
    pub common_name: Option<String>,
    /// The subject, a distinguished name (either order of RDNs).
    pub subject: Option<String>,
    /// A DNS subject alternative name.
    pub dns_name: Option<String>,
    /// The issuer's distinguished name.
    pub issuer_subject: Option<String>,
    /// The thumbprint of the issuer on the verified path.
    pub issuer_thumbprint: Option<String>,
    /// The issuer certificate (PEM, usually a named value `{{name}}`):
    /// the client certificate's signature must verify with its key.
    pub issuer_certificate_id: Option<String>,
}

/// The config, as written under `validate-client-certificate:`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Refuse a certificate the host's CRLs revoke. Default true.
    #[serde(default = "yes")]
    pub validate_revocation: bool,
    /// Refuse a certificate that does not chain to the host's truststore.
    /// Default true.
    #[serde(default = "yes")]
    pub validate_trust: bool,
    /// Refuse a certificate before its `notBefore`. Default true.
    #[serde(default = "yes")]
    pub validate_not_before: bool,
    /// Refuse a certificate after its `notAfter`. Default true.
    #[serde(default = "yes")]
    pub validate_not_after: bool,
    /// On a failed validation, go on (the failure is traced) instead of
    /// refusing. Default false.
    #[serde(default)]
    pub ignore_error: bool,
    /// The identities the certificate may have; empty: any.
    #[serde(default)]
    pub identities: Vec<IdentityConfig>,
}

/// A distinguished name, normalised: RDNs of `(TYPE, value)` pairs, types
/// upper case (aliases resolved), values unescaped, trimmed, inner
/// whitespace collapsed and lower-cased.
type Dn = Vec<Vec<(String, String)>>;

fn attr_type(t: &str) -> String {
    match t.trim().to_ascii_uppercase().as_str() {
        "S" => "ST".into(),
        "E" | "EMAIL" | "EMAILADDRESS" | "1.2.840.113549.1.9.1" => "EMAILADDRESS".into(),
        "2.5.4.3" => "CN".into(),
        "2.5.4.10" => "O".into(),
        "2.5.4.11" => "OU".into(),
        "2.5.4.6" => "C".into(),
        "2.5.4.7" => "L".into(),
        "2.5.4.8" => "ST".into(),
        other => other.to_string(),
    }
}

fn norm_value(v: &str) -> String {
    v.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// Parses `CN=a, O=b` (RFC 4514 escapes: `\,` `\+` `\"` `\\` `\XX`).
fn parse_dn(s: &str) -> Result<Dn, String> {
    let mut rdns: Dn = Vec::new();
    let mut rdn: Vec<(String, String)> = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars().peekable();
    let push_atv = |cur: &mut String, rdn: &mut Vec<(String, String)>| -> Result<(), String> {
        let text = std::mem::take(cur);
        if text.trim().is_empty() {
            return Err(format!("`{s}` has an empty attribute"));
        }
        let (t, v) = text
            .split_once('=')
            .ok_or_else(|| format!("`{}` in `{s}` is not TYPE=value", text.trim()))?;
        if t.trim().is_empty() {
            return Err(format!("`{}` in `{s}` has no attribute type", text.trim()));
        }
        rdn.push((attr_type(t), norm_value(v)));
        Ok(())
    };
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(h1)
                    if h1.is_ascii_hexdigit()
                        && chars.peek().is_some_and(|h| h.is_ascii_hexdigit()) =>
                {
                    let h2 = chars.next().unwrap_or('0');
                    let byte = u8::from_str_radix(&format!("{h1}{h2}"), 16).unwrap_or(b'?');
                    cur.push(byte as char);
                }
                Some(other) => cur.push(other),
                None => return Err(format!("`{s}` ends with a lone `\\`")),
            },
            ',' | ';' => {
                push_atv(&mut cur, &mut rdn)?;
                rdn.sort();
                rdns.push(std::mem::take(&mut rdn));
            }
            '+' => push_atv(&mut cur, &mut rdn)?,
            c => cur.push(c),
        }
    }
    push_atv(&mut cur, &mut rdn)?;
    rdn.sort();
    rdns.push(rdn);
    Ok(rdns)
}

/// Equal names, whichever order the RDNs are written in (RFC 4514 puts
/// the most specific first; Windows and Azure the most general).
fn same_dn(a: &Dn, b: &Dn) -> bool {
    a == b || a.iter().eq(b.iter().rev())
}

fn hex_norm(s: &str) -> String {
    s.chars()
        .filter(|c| !matches!(c, ':' | ' ' | '-'))
        .collect::<String>()
        .to_ascii_lowercase()
}

/// A constructed identity.
struct Identity {
    thumbprint: Option<String>,
    serial: Option<String>,
    common_name: Option<String>,
    subject: Option<Dn>,
    dns_name: Option<String>,
    issuer_subject: Option<Dn>,
    issuer_thumbprint: Option<String>,
    issuer: Option<Issuer>,
}

fn thumbprint(key: &str, v: &str) -> Result<String, String> {
    let h = hex_norm(v);
    if !h.chars().all(|c| c.is_ascii_hexdigit()) || !(h.len() == 40 || h.len() == 64) {
        return Err(format!(
            "{key}: `{v}` is not a SHA-1 (40 hex digits) or SHA-256 (64) thumbprint"
        ));
    }
    Ok(h)
}

impl Identity {
    fn build(i: usize, c: IdentityConfig) -> Result<Self, String> {
        let at = |k: &str| format!("identities[{i}].{k}");
        let serial = match c.serial_number {
            None => None,
            Some(s) => {
                let h = hex_norm(&s);
                if h.is_empty() || !h.chars().all(|c| c.is_ascii_hexdigit()) {
                    return Err(format!(
                        "{}: `{s}` is not a hex serial number",
                        at("serial_number")
                    ));
                }
                let t = h.trim_start_matches('0');
                Some(if t.is_empty() {
                    "0".into()
                } else {
                    t.to_string()
                })
            }
        };
        let dn = |k: &str, v: Option<String>| -> Result<Option<Dn>, String> {
            v.map(|v| parse_dn(&v).map_err(|e| format!("{}: {e}", at(k))))
                .transpose()
        };
        if c.issuer_certificate_id.is_some()
            && (c.issuer_subject.is_some() || c.issuer_thumbprint.is_some())
        {
            return Err(format!(
                "{}: excludes issuer_subject and issuer_thumbprint (the certificate says who the issuer is)",
                at("issuer_certificate_id")
            ));
        }
        let issuer = match c.issuer_certificate_id {
            None => None,
            Some(pem) => Some(Issuer::from_pem(&pem).map_err(|e| {
                format!(
                    "{}: {e} (give the certificate's PEM, e.g. a named value `{{{{partner-ca}}}}` whose file is the PEM)",
                    at("issuer_certificate_id")
                )
            })?),
        };
        let id = Identity {
            thumbprint: c
                .thumbprint
                .map(|t| thumbprint(&at("thumbprint"), &t))
                .transpose()?,
            serial,
            common_name: c.common_name.map(|v| norm_value(&v)),
            subject: dn("subject", c.subject)?,
            dns_name: c.dns_name.map(|d| d.trim().to_ascii_lowercase()),
            issuer_subject: dn("issuer_subject", c.issuer_subject)?,
            issuer_thumbprint: c
                .issuer_thumbprint
                .map(|t| thumbprint(&at("issuer_thumbprint"), &t))
                .transpose()?,
            issuer,
        };
        if id.thumbprint.is_none()
            && id.serial.is_none()
            && id.common_name.is_none()
            && id.subject.is_none()
            && id.dns_name.is_none()
            && id.issuer_subject.is_none()
            && id.issuer_thumbprint.is_none()
            && id.issuer.is_none()
        {
            return Err(format!(
                "identities[{i}]: set at least one of thumbprint, serial_number, common_name, subject, dns_name, issuer_subject, issuer_thumbprint, issuer_certificate_id"
            ));
        }
        Ok(id)
    }

    /// Whether every attribute it sets matches. Each field is asked of the
    /// host only when this identity needs it; names are parsed once per
    /// distinct text (`names`).
    fn matches(&self, conn: &Connection, names: &Names) -> bool {
        if let Some(t) = &self.thumbprint {
            let got = if t.len() == 40 {
                conn.client_cert_thumbprint_sha1()
            } else {
                conn.client_cert_thumbprint_sha256()
            };
            if got.as_deref() != Some(t.as_str()) {
                return false;
            }
        }
        if let Some(s) = &self.serial {
            if conn.client_cert_serial().as_deref() != Some(s.as_str()) {
                return false;
            }
        }
        if let Some(cn) = &self.common_name {
            if conn
                .client_cert_common_name()
                .map(|v| norm_value(&v))
                .as_deref()
                != Some(cn.as_str())
            {
                return false;
            }
        }
        if let Some(want) = &self.subject {
            match conn.client_cert_subject() {
                Some(s) if names.same(&s, want) => {}
                _ => return false,
            }
        }
        if let Some(d) = &self.dns_name {
            if !conn
                .client_cert_dns_names()
                .iter()
                .any(|n| n.eq_ignore_ascii_case(d))
            {
                return false;
            }
        }
        if let Some(want) = &self.issuer_subject {
            match conn.client_cert_issuer() {
                Some(s) if names.same(&s, want) => {}
                _ => return false,
            }
        }
        if let Some(t) = &self.issuer_thumbprint {
            let got = if t.len() == 40 {
                conn.client_cert_issuer_thumbprint_sha1()
            } else {
                conn.client_cert_issuer_thumbprint_sha256()
            };
            if got.as_deref() != Some(t.as_str()) {
                return false;
            }
        }
        if let Some(issuer) = &self.issuer {
            if !issuer.issued_client_certificate() {
                return false;
            }
        }
        true
    }
}

/// The names this instance parsed lately: a keep-alive connection sends
/// one certificate, so its subject and issuer are parsed once, not per
/// request. Bounded.
#[derive(Default)]
struct Names(std::cell::RefCell<Vec<(String, Option<Dn>)>>);

impl Names {
    const MAX: usize = 8;

    /// Whether the name `text` (from the host) equals `want`.
    fn same(&self, text: &str, want: &Dn) -> bool {
        let mut memo = self.0.borrow_mut();
        let i = match memo.iter().position(|(t, _)| t == text) {
            Some(i) => i,
            None => {
                if memo.len() >= Self::MAX {
                    memo.remove(0);
                }
                memo.push((text.to_string(), parse_dn(text).ok()));
                memo.len() - 1
            }
        };
        memo[i].1.as_ref().is_some_and(|got| same_dn(want, got))
    }
}

/// The constructed policy.
pub struct ValidateClientCertificate {
    revocation: bool,
    trust: bool,
    not_before: bool,
    not_after: bool,
    ignore_error: bool,
    identities: Vec<Identity>,
    names: Names,
}

impl Policy for ValidateClientCertificate {
    type Config = Config;

    fn new(c: Config) -> Result<Self, String> {
        // Whatever its options, this policy needs a certificate: the
        // gateway refuses a chain with it on a host that never asks.
        declarations::reads_client_certificate();
        let identities = c
            .identities
            .into_iter()
            .enumerate()
            .map(|(i, id)| Identity::build(i, id))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ValidateClientCertificate {
            revocation: c.validate_revocation,
            trust: c.validate_trust,
            not_before: c.validate_not_before,
            not_after: c.validate_not_after,
            ignore_error: c.ignore_error,
            identities,
            names: Names::default(),
        })
    }

    fn on_request(&self, _req: &Request, conn: &Connection) -> Decision {
        match self.check(conn) {
            Ok(()) => Decision::proceed(),
            Err((reason, detail)) if self.ignore_error => {
                host::trace(&format!(
                    "client certificate not valid ({reason}: {detail}); going on (ignore_error)"
                ));
                Decision::proceed()
            }
            Err((reason, detail)) => Decision::Deny(Fault {
                status: 403,
                code: format!("policy.validate-client-certificate.{reason}"),
                title: "Client certificate not accepted".into(),
                detail,
                headers: Vec::new(),
            }),
        }
    }
}

impl ValidateClientCertificate {
    fn check(&self, conn: &Connection) -> Result<(), (&'static str, String)> {
        if !conn.has_client_certificate() {
            let why = match conn.client_cert_mode().as_deref() {
                None => "the request came over plain HTTP, which carries no client certificate".to_string(),
                Some("off") => "no client certificate was received: this TLS host's client_certificate.mode is `off`, so it never asks for one (set it to `optional` or `required`)".to_string(),
                Some(mode) => format!("no client certificate was received: the TLS host asks for one (client_certificate.mode `{mode}`), and the client sent none"),
            };
            return Err(("missing", why));
        }
        if let Some(failure) = conn.client_cert_verify_failure() {
            let revocation = matches!(failure.as_str(), "revoked" | "stale_crl");
            let dates = matches!(failure.as_str(), "expired" | "not_yet_valid");
            let why = || {
                conn.client_cert_verify_error()
                    .unwrap_or_else(|| failure.clone())
            };
            if revocation && self.revocation {
                return Err(("revoked", why()));
            }
            if !revocation && !dates && self.trust {
                return Err(("untrusted", why()));
            }
        }
        if self.not_before || self.not_after {
            let now = (host::now_millis() / 1000) as i64;
            if self.not_before && conn.client_cert_not_before().is_some_and(|t| now < t) {
                return Err((
                    "not-yet-valid",
                    "the client certificate is not valid yet".into(),
                ));
            }
            if self.not_after && conn.client_cert_not_after().is_some_and(|t| now > t) {
                return Err(("expired", "the client certificate has expired".into()));
            }
        }
        if !self.identities.is_empty()
            && !self.identities.iter().any(|i| i.matches(conn, &self.names))
        {
            return Err((
                "identity",
                format!(
                    "the client certificate ({}) matches none of the {} allowed identities",
                    conn.client_cert_subject().unwrap_or_default(),
                    self.identities.len()
                ),
            ));
        }
        Ok(())
    }
}

export_policy!(ValidateClientCertificate);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_compare_in_either_order_and_normalised() {
        let rfc = parse_dn("CN=*.contoso.com,O=Contoso Corp.,L=Chicago,ST=Illinois,C=US").unwrap();
        let azure =
            parse_dn("C=US, ST=Illinois, L=Chicago, O=Contoso  Corp., CN=*.Contoso.com").unwrap();
        assert!(same_dn(&rfc, &azure));
        let other = parse_dn("CN=*.contoso.com,O=Contoso Corp.,C=US").unwrap();
        assert!(!same_dn(&rfc, &other));
        // An escaped comma is part of the value, not a separator.
        let a = parse_dn("CN=evil\\, O=Bank,O=Shop").unwrap();
        assert_eq!(a.len(), 2);
        assert_eq!(a[0], vec![("CN".to_string(), "evil, o=bank".to_string())]);
        // Aliases and OIDs.
        assert!(same_dn(
            &parse_dn("S=Illinois").unwrap(),
            &parse_dn("2.5.4.8=illinois").unwrap()
        ));
        assert!(parse_dn("CN").is_err());
        assert!(parse_dn("=x").is_err());
    }

    #[test]
    fn identities_are_checked_when_built() {
        let e = Identity::build(0, IdentityConfig::default()).err().unwrap();
        assert!(e.contains("set at least one"), "{e}");
        let e = Identity::build(
            1,
            IdentityConfig {
                thumbprint: Some("abc".into()),
                ..IdentityConfig::default()
            },
        )
        .err()
        .unwrap();
        assert!(e.starts_with("identities[1].thumbprint"), "{e}");
        let id = Identity::build(
            0,
            IdentityConfig {
                thumbprint: Some("ab".repeat(30)),
                serial_number: Some("00:0A".into()),
                ..IdentityConfig::default()
            },
        );
        assert!(id.is_err(), "60 hex digits is neither SHA-1 nor SHA-256");
        let id = Identity::build(
            0,
            IdentityConfig {
                serial_number: Some("00:0A".into()),
                ..IdentityConfig::default()
            },
        )
        .unwrap();
        assert_eq!(id.serial.as_deref(), Some("a"));
    }
}
