//! Downstream TLS: each listener has a table of hosts, each with its own
//! rustls `ServerConfig`. The ClientHello is read first (rustls'
//! `Acceptor`), the host is chosen from the SNI, and the handshake goes on
//! with that host's config — so each host can later carry its own
//! client-certificate mode and truststore.

use std::sync::Arc;

use rustls::server::ClientHello;
use rustls::ServerConfig;

use super::{name_matches, pem};
use crate::config::{ConfigError, ListenerTls, Source};

/// One host of a TLS listener.
#[derive(Debug)]
pub struct TlsHost {
    /// Names, lower case (exact or `*.suffix`).
    pub names: Vec<String>,
    /// The host's server config.
    pub config: Arc<ServerConfig>,
}

/// The hosts of one TLS listener.
#[derive(Debug)]
pub struct TlsListener {
    /// In config order; the first is the default for clients without SNI.
    pub hosts: Vec<TlsHost>,
}

impl TlsListener {
    /// Builds the listener's host table; each problem is appended to
    /// `errors` with the key path under `path`.
    pub fn build(
        tls: &ListenerTls,
        source: &Source,
        path: &str,
        errors: &mut Vec<ConfigError>,
        warnings: &mut Vec<ConfigError>,
    ) -> Option<Self> {
        if tls.hosts.is_empty() {
            errors.push(ConfigError::new(
                source,
                format!("{path}.hosts"),
                "list at least one host",
            ));
            return None;
        }
        let mut hosts = Vec::new();
        for (i, h) in tls.hosts.iter().enumerate() {
            let hp = format!("{path}.hosts[{i}]");
            if h.names.is_empty() {
                errors.push(ConfigError::new(
                    source,
                    format!("{hp}.names"),
                    "list at least one host name",
                ));
            }
            let certs = match pem::certificates(&source.resolve(&h.certificate)) {
                Ok(c) => Some(c),
                Err(e) => {
                    errors.push(ConfigError::new(source, format!("{hp}.certificate"), e));
                    None
                }
            };
            let key = match pem::private_key(&source.resolve(&h.key)) {
                Ok(k) => Some(k),
                Err(e) => {
                    errors.push(ConfigError::new(source, format!("{hp}.key"), e));
                    None
                }
            };
            let (Some(certs), Some(key)) = (certs, key) else {
                continue;
            };
            check_validity(
                &certs,
                &source.resolve(&h.certificate),
                source,
                &format!("{hp}.certificate"),
                errors,
                warnings,
            );
            let builder = match ServerConfig::builder_with_provider(super::provider())
                .with_safe_default_protocol_versions()
            {
                Ok(b) => b,
                Err(e) => {
                    errors.push(ConfigError::new(
                        source,
                        hp.clone(),
                        format!("tls setup failed: {e}"),
                    ));
                    continue;
                }
            };
            let mut config = match builder.with_no_client_auth().with_single_cert(certs, key) {
                Ok(c) => c,
                Err(e) => {
                    errors.push(ConfigError::new(
                        source,
                        format!("{hp}.key"),
                        format!(
                            "the key does not fit the certificate {}: {e}",
                            source.resolve(&h.certificate).display()
                        ),
                    ));
                    continue;
                }
            };
            let alpn = h
                .alpn
                .clone()
                .unwrap_or_else(|| vec!["h2".into(), "http/1.1".into()]);
            for p in &alpn {
                if p != "h2" && p != "http/1.1" {
                    errors.push(ConfigError::new(
                        source,
                        format!("{hp}.alpn"),
                        format!("unsupported protocol `{p}` (use h2, http/1.1)"),
                    ));
                }
            }
            config.alpn_protocols = alpn.into_iter().map(String::into_bytes).collect();
            hosts.push(TlsHost {
                names: h.names.iter().map(|n| n.to_ascii_lowercase()).collect(),
                config: Arc::new(config),
            });
        }
        if hosts.len() != tls.hosts.len() {
            return None;
        }
        Some(TlsListener { hosts })
    }

    /// The host for a ClientHello: the first whose names match the SNI, or
    /// the first host when there is no SNI or no match.
    pub fn select(&self, hello: &ClientHello<'_>) -> (usize, &TlsHost) {
        if let Some(sni) = hello.server_name() {
            let sni = sni.to_ascii_lowercase();
            for (i, h) in self.hosts.iter().enumerate() {
                if h.names.iter().any(|p| name_matches(p, &sni)) {
                    return (i, h);
                }
            }
        }
        (0, &self.hosts[0])
    }

    /// Whether `host` (from the request's authority) belongs to host entry
    /// `index` of this listener.
    pub fn host_serves(&self, index: usize, host: &str) -> bool {
        self.hosts
            .get(index)
            .is_some_and(|h| h.names.iter().any(|p| name_matches(p, host)))
    }

    /// Whether a request for `host` on a connection made for host entry
    /// `index` is misdirected: another host entry of this listener serves
    /// `host`, with its own certificate and TLS settings, and this one does
    /// not. A host that no entry names is left to routing, so a client that
    /// connected by IP address (no SNI) is not refused for that alone.
    pub fn misdirected(&self, index: usize, host: &str) -> bool {
        !self.host_serves(index, host)
            && self
                .hosts
                .iter()
                .enumerate()
                .any(|(i, h)| i != index && h.names.iter().any(|p| name_matches(p, host)))
    }
}

/// A certificate this close to its end gets a warning at load.
const EXPIRY_WARNING_DAYS: i64 = 30;

/// Checks the validity period of every certificate of a served chain: one
/// that has expired, or is not valid yet, is an error (clients would refuse
/// every handshake); one that expires within [`EXPIRY_WARNING_DAYS`] days is
/// a warning.
fn check_validity(
    certs: &[rustls::pki_types::CertificateDer<'static>],
    file: &std::path::Path,
    source: &Source,
    path: &str,
    errors: &mut Vec<ConfigError>,
    warnings: &mut Vec<ConfigError>,
) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let day = |t: i64| {
        chrono::DateTime::from_timestamp(t, 0).map_or_else(
            || t.to_string(),
            |d| d.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        )
    };
    for (i, der) in certs.iter().enumerate() {
        // A chain that does not parse is reported when it is used.
        let Ok((_, cert)) = x509_parser::parse_x509_certificate(der.as_ref()) else {
            continue;
        };
        let which = if i == 0 {
            format!("the certificate ({})", cert.subject())
        } else {
            format!("certificate {} of the chain ({})", i + 1, cert.subject())
        };
        let v = cert.validity();
        let (from, until) = (v.not_before.timestamp(), v.not_after.timestamp());
        if until < now {
            errors.push(ConfigError::new(
                source,
                path,
                format!(
                    "{which} in {} expired on {}; clients refuse it: renew it",
                    file.display(),
                    day(until)
                ),
            ));
        } else if from > now {
            errors.push(ConfigError::new(
                source,
                path,
                format!(
                    "{which} in {} is not valid until {}; clients refuse it until then (is the clock right?)",
                    file.display(),
                    day(from)
                ),
            ));
        } else if until - now < EXPIRY_WARNING_DAYS * 86_400 {
            warnings.push(ConfigError::new(
                source,
                path,
                format!(
                    "{which} in {} expires on {} ({} days from now): renew it",
                    file.display(),
                    day(until),
                    (until - now) / 86_400
                ),
            ));
        }
    }
}
