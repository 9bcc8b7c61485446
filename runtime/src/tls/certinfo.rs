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
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
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

/// SHA-1 through ring (the thumbprint Azure and others display).
fn sha1_digest(der: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, der)
        .as_ref()
        .to_vec()
}
