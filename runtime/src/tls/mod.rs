//! TLS: downstream listeners (a server config per host, chosen by SNI) and
//! upstream client configs. PEM loading reports the file and the cause.
//!
//! - [`pem`]: reading certificate chains, keys and CA bundles.
//! - [`server`]: per-listener host table and SNI selection.
//! - [`client`]: TLS client configs for upstreams.
//! - [`certinfo`]: client-certificate fields for policies and expressions.

pub mod certinfo;
pub mod client;
pub mod crl;
pub mod floor;
pub mod pem;
pub mod server;

/// The crypto provider used everywhere (ring).
pub fn provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::ring::default_provider())
}

/// A fixed, bounded name for why a client's TLS handshake failed (a
/// metrics label): `unrecognized_name` (no host for the SNI),
/// `no_shared_protocol`, `no_client_certificate`, `unknown_ca`, `expired`,
/// `not_yet_valid`, `revoked`, `stale_crl`, `chain_too_deep`, `algorithm`,
/// `v1_certificate`, `bad_client_certificate`, `alert_received`,
/// `protocol_error`, `connection_closed` or `other`.
pub fn failure_reason(e: &std::io::Error) -> &'static str {
    use rustls::Error;
    let inner = e.get_ref();
    if inner.is_some_and(|i| i.is::<server::UnrecognizedName>()) {
        return "unrecognized_name";
    }
    match inner.and_then(|i| i.downcast_ref::<rustls::Error>()) {
        Some(Error::PeerIncompatible(_)) => "no_shared_protocol",
        Some(Error::NoCertificatesPresented) => "no_client_certificate",
        Some(Error::InvalidCertificate(c)) => certificate_failure(c),
        Some(Error::AlertReceived(_)) => "alert_received",
        Some(Error::InvalidMessage(_))
        | Some(Error::PeerMisbehaved(_))
        | Some(Error::InappropriateMessage { .. })
        | Some(Error::InappropriateHandshakeMessage { .. }) => "protocol_error",
        Some(_) => "other",
        None => match e.kind() {
            std::io::ErrorKind::UnexpectedEof
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::BrokenPipe => "connection_closed",
            std::io::ErrorKind::InvalidData => "protocol_error",
            _ => "other",
        },
    }
}

/// A fixed word for why a client certificate was refused: `unknown_ca`,
/// `expired`, `not_yet_valid`, `revoked`, `stale_crl`, `algorithm`,
/// `chain_too_deep`, `v1_certificate` or `bad_client_certificate`.
pub fn certificate_failure(c: &rustls::CertificateError) -> &'static str {
    use rustls::CertificateError as C;
    {
        match c {
            C::UnknownIssuer => "unknown_ca",
            C::Expired | C::ExpiredContext { .. } => "expired",
            C::NotValidYet | C::NotValidYetContext { .. } => "not_yet_valid",
            C::Revoked => "revoked",
            C::ExpiredRevocationList | C::ExpiredRevocationListContext { .. } => "stale_crl",
            C::BadSignature
            | C::UnsupportedSignatureAlgorithmContext { .. }
            | C::UnsupportedSignatureAlgorithmForPublicKeyContext { .. } => "algorithm",
            C::Other(o) => {
                let inner: &(dyn std::error::Error + 'static) = &*o.0;
                if inner.is::<server::ChainTooDeep>() {
                    "chain_too_deep"
                } else if inner.is::<floor::BelowFloor>() {
                    "algorithm"
                } else if matches!(
                    inner.downcast_ref::<webpki::Error>(),
                    Some(webpki::Error::UnsupportedCertVersion)
                ) {
                    "v1_certificate"
                } else {
                    "bad_client_certificate"
                }
            }
            _ => "bad_client_certificate",
        }
    }
}

/// Whether `name` (lower case) matches `pattern`: exact, or `*.suffix`
/// matching exactly one more label.
pub fn name_matches(pattern: &str, name: &str) -> bool {
    if let Some(suffix) = pattern.strip_prefix("*.") {
        match name.split_once('.') {
            Some((label, rest)) => !label.is_empty() && rest.eq_ignore_ascii_case(suffix),
            None => false,
        }
    } else {
        pattern.eq_ignore_ascii_case(name)
    }
}

#[cfg(test)]
mod tests {
    use super::name_matches;

    #[test]
    fn wildcards_match_one_label() {
        assert!(name_matches("test.com", "TEST.com"));
        assert!(name_matches("*.test.com", "a.test.com"));
        assert!(!name_matches("*.test.com", "a.b.test.com"));
        assert!(!name_matches("*.test.com", "test.com"));
        assert!(!name_matches("*.test.com", ".test.com"));
    }
}
