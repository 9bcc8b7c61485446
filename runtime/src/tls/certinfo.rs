//! The fields of a client certificate, parsed once per connection and
//! offered to policies (`connection.client-certificate`) and expressions
//! (`client_cert`).

use sha2::{Digest, Sha256};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::*;

/// Parsed client-certificate fields.
#[derive(Clone, Debug, Default)]
pub struct CertInfo {
    /// Subject DN (RFC 4514).
    pub subject: String,
    /// Issuer DN.
    pub issuer: String,
    /// First CN of the subject.
    pub common_name: Option<String>,
    /// Serial, lower-case hex.
    pub serial: String,
    /// SHA-1 of the DER, lower-case hex.
    pub thumbprint_sha1: String,
    /// SHA-256 of the DER, lower-case hex.
    pub thumbprint_sha256: String,
    /// Unix seconds.
    pub not_before: i64,
    /// Unix seconds.
    pub not_after: i64,
    /// DNS SANs.
    pub dns_names: Vec<String>,
    /// URI SANs.
    pub uris: Vec<String>,
    /// IP SANs.
    pub ip_addresses: Vec<String>,
    /// Email SANs.
    pub emails: Vec<String>,
    /// Whether the listener's truststore verified it.
    pub verified: bool,
    /// Why not, if not.
    pub verify_error: Option<String>,
    /// Why not, as a fixed word (`unknown_ca`, `revoked`, ...).
    pub verify_failure: Option<&'static str>,
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

impl CertInfo {
    /// Parses a DER certificate.
    ///
    /// # Errors
    ///
    /// The parser's message.
    pub fn parse(der: &[u8], verified: bool, verify_error: Option<String>) -> Result<Self, String> {
        let (_, cert) = X509Certificate::from_der(der)
            .map_err(|e| format!("cannot parse the certificate: {e}"))?;
        let mut info = CertInfo {
            subject: rfc4514(cert.subject()),
            issuer: rfc4514(cert.issuer()),
            common_name: cert
                .subject()
                .iter_common_name()
                .next()
                .and_then(|cn| cn.as_str().ok())
                .map(str::to_string),
            serial: hex(cert.raw_serial()).trim_start_matches('0').to_string(),
            thumbprint_sha1: hex(&sha1_digest(der)),
            thumbprint_sha256: hex(&Sha256::digest(der)),
            not_before: cert.validity().not_before.timestamp(),
            not_after: cert.validity().not_after.timestamp(),
            verified,
            verify_error,
            ..CertInfo::default()
        };
        if info.serial.is_empty() {
            info.serial = "0".into();
        }
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for n in &san.value.general_names {
                match n {
                    GeneralName::DNSName(d) => info.dns_names.push(d.to_string()),
                    GeneralName::URI(u) => info.uris.push(u.to_string()),
                    GeneralName::RFC822Name(e) => info.emails.push(e.to_string()),
                    GeneralName::IPAddress(ip) => {
                        if let Ok(a) = <[u8; 4]>::try_from(*ip) {
                            info.ip_addresses
                                .push(std::net::Ipv4Addr::from(a).to_string());
                        } else if let Ok(a) = <[u8; 16]>::try_from(*ip) {
                            info.ip_addresses
                                .push(std::net::Ipv6Addr::from(a).to_string());
                        }
                    }
                    _ => {}
                }
            }
        }
        Ok(info)
    }
}

/// A distinguished name as an RFC 4514 string: the most specific RDN
/// first, attributes of one RDN joined by `+`, and every special character
/// of a value escaped — so a CN of `evil, O=Bank` reads `CN=evil\, O=Bank`
/// and cannot pass for a second RDN. A value that is not a string is
/// written as `#` and the hex of its DER.
pub fn rfc4514(name: &X509Name<'_>) -> String {
    let rdns: Vec<String> = name
        .iter_rdn()
        .map(|rdn| {
            rdn.iter()
                .map(|atv| {
                    let oid = atv.attr_type().to_id_string();
                    let key = match oid.as_str() {
                        "2.5.4.3" => "CN",
                        "2.5.4.7" => "L",
                        "2.5.4.8" => "ST",
                        "2.5.4.10" => "O",
                        "2.5.4.11" => "OU",
                        "2.5.4.6" => "C",
                        "2.5.4.9" => "STREET",
                        "0.9.2342.19200300.100.1.25" => "DC",
                        "0.9.2342.19200300.100.1.1" => "UID",
                        other => other,
                    }
                    .to_string();
                    let value = match atv.as_str() {
                        Ok(v) => escape_value(v),
                        Err(_) => format!("#{}", hex(atv.attr_value().data)),
                    };
                    format!("{key}={value}")
                })
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect();
    rdns.into_iter().rev().collect::<Vec<_>>().join(",")
}

/// RFC 4514 §2.4 escaping of one attribute value.
fn escape_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len() + 4);
    let last = v.chars().count().saturating_sub(1);
    for (i, c) in v.chars().enumerate() {
        match c {
            '"' | '+' | ',' | ';' | '<' | '>' | '\\' | '=' => {
                out.push('\\');
                out.push(c);
            }
            '#' if i == 0 => out.push_str("\\#"),
            ' ' if i == 0 || i == last => out.push_str("\\ "),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out
}

/// Whether `issuer_der` issued `leaf_der`: the leaf names it as its
/// issuer and its signature verifies with the issuer's key (ring, through
/// x509-parser).
pub fn issued_by(leaf_der: &[u8], issuer_der: &[u8]) -> bool {
    let (Ok((_, leaf)), Ok((_, issuer))) = (
        X509Certificate::from_der(leaf_der),
        X509Certificate::from_der(issuer_der),
    ) else {
        return false;
    };
    leaf.issuer().as_raw() == issuer.subject().as_raw()
        && leaf.verify_signature(Some(issuer.public_key())).is_ok()
}

/// SHA-1 of `der`, lower-case hex.
pub fn sha1_hex(der: &[u8]) -> String {
    hex(&sha1_digest(der))
}

/// SHA-256 of `der`, lower-case hex.
pub fn sha256_hex(der: &[u8]) -> String {
    hex(&Sha256::digest(der))
}

/// SHA-1 through ring (the thumbprint Azure and others display).
fn sha1_digest(der: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, der)
        .as_ref()
        .to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name_of(cn: &str, o: &str) -> String {
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name
            .push(rcgen::DnType::OrganizationName, o);
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = p.self_signed(&key).unwrap();
        CertInfo::parse(cert.der(), false, None).unwrap().subject
    }

    /// Commas not escaped by a backslash: the RDN separators.
    fn separators(s: &str) -> usize {
        let b = s.as_bytes();
        (0..b.len())
            .filter(|&i| b[i] == b',' && (i == 0 || b[i - 1] != b'\\'))
            .count()
    }

    #[test]
    fn a_cn_that_looks_like_another_rdn_stays_one_value() {
        let s = name_of("evil, O=Bank", "Shop");
        assert!(s.contains("CN=evil\\, O\\=Bank"), "{s}");
        assert!(s.contains("O=Shop"), "{s}");
        assert_eq!(separators(&s), 1, "two RDNs, not three: {s}");
        let s = name_of(" x+y ", "a;b");
        assert!(s.contains("CN=\\ x\\+y\\ "), "{s}");
        assert!(s.contains("O=a\\;b"), "{s}");
        let s = name_of("#x", "o");
        assert!(s.contains("CN=\\#x"), "{s}");
    }

    #[test]
    fn the_most_specific_rdn_comes_first() {
        // DER order is most general first; RFC 4514 reverses it.
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(rcgen::DnType::CountryName, "NL");
        p.distinguished_name.push(rcgen::DnType::CommonName, "leaf");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = p.self_signed(&key).unwrap();
        let (_, x) = X509Certificate::from_der(cert.der()).unwrap();
        let der_order: Vec<String> = x
            .subject()
            .iter_rdn()
            .flat_map(|r| {
                r.iter()
                    .map(|a| a.as_str().unwrap().to_string())
                    .collect::<Vec<_>>()
            })
            .collect();
        let ours = rfc4514(x.subject());
        let values: Vec<&str> = ours
            .split(',')
            .map(|p| p.split_once('=').unwrap().1)
            .collect();
        let mut reversed = der_order.clone();
        reversed.reverse();
        assert_eq!(values, reversed, "{ours}");
    }
}
