//! TLS to upstreams: each upstream's client config — its truststore or
//! the system roots, the name its certificate must carry, TLS versions and
//! ALPN — and its keystore, the client certificates it can present. Which
//! certificate goes out is decided per handshake from the CA names the
//! upstream lists in its CertificateRequest, and recorded, so that a failed
//! handshake says why in its first error ([`TlsFailure`]).

use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::ResolvesClientCert;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use x509_parser::prelude::*;

use super::pem;
use crate::config::{
    ConfigError, Source, UnmatchedClientCertificate, UpstreamProtocol, UpstreamTls,
};

/// An upstream's TLS settings, ready to connect.
#[derive(Debug)]
pub struct UpstreamTlsConfig {
    /// The config every connection starts from.
    base: Arc<ClientConfig>,
    /// The client certificates, and what to do when none fits.
    keystore: Arc<Keystore>,
    /// How the upstream's certificate is verified.
    verifier: Arc<dyn ServerCertVerifier>,
    /// The name sent as SNI.
    pub server_name: ServerName<'static>,
}

impl UpstreamTlsConfig {
    /// The config for one new connection, and the record its handshake
    /// fills in about client certificates.
    pub fn for_connection(&self) -> (Arc<ClientConfig>, Arc<Mutex<ClientAuthRecord>>) {
        let record = Arc::new(Mutex::new(ClientAuthRecord::default()));
        let mut cfg = (*self.base).clone();
        cfg.client_auth_cert_resolver = Arc::new(Recording {
            keystore: self.keystore.clone(),
            record: record.clone(),
        });
        (Arc::new(cfg), record)
    }

    /// The keystore's certificates, for messages.
    pub fn keystore(&self) -> &Keystore {
        &self.keystore
    }

    /// [`Self::for_connection`] that also keeps the chain the upstream
    /// presents, verified or not (`gatehouse probe` shows it).
    pub fn for_probe(&self) -> (Arc<ClientConfig>, Arc<Mutex<ClientAuthRecord>>, Seen) {
        let (cfg, record) = self.for_connection();
        let mut cfg = Arc::unwrap_or_clone(cfg);
        let seen: Seen = Arc::default();
        cfg.dangerous().set_certificate_verifier(Arc::new(Wrap {
            inner: self.verifier.clone(),
            name: None,
            seen: Some(seen.clone()),
        }));
        (Arc::new(cfg), record, seen)
    }
}

/// The chain an upstream presented, leaf first.
pub type Seen = Arc<Mutex<Vec<CertificateDer<'static>>>>;

/// Another verifier, with a fixed name to verify against instead of the
/// SNI (`tls.verify_name`), and/or keeping the presented chain for
/// `gatehouse probe`.
#[derive(Debug)]
struct Wrap {
    inner: Arc<dyn ServerCertVerifier>,
    name: Option<ServerName<'static>>,
    seen: Option<Seen>,
}

impl ServerCertVerifier for Wrap {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        sni: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(Ok(mut s)) = self.seen.as_ref().map(|s| s.lock()) {
            *s = std::iter::once(end_entity)
                .chain(intermediates)
                .map(|c| c.clone().into_owned())
                .collect();
        }
        let name = self.name.as_ref().unwrap_or(sni);
        self.inner
            .verify_server_cert(end_entity, intermediates, name, ocsp, now)
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// One client certificate of a keystore.
#[derive(Debug)]
struct KeyEntry {
    key: Arc<CertifiedKey>,
    /// The DER names of the CAs the chain reaches: every certificate's
    /// issuer and every CA certificate's own subject.
    reaches: Vec<Vec<u8>>,
    /// The leaf's subject (RFC 4514).
    subject: String,
    /// The leaf's issuer (RFC 4514).
    issuer: String,
}

/// An upstream's client certificates, in the configured order.
#[derive(Debug)]
pub struct Keystore {
    entries: Vec<KeyEntry>,
    unmatched: UnmatchedClientCertificate,
}

impl Keystore {
    /// `subject (issued by issuer)` of each certificate.
    pub fn describe(&self) -> Vec<String> {
        self.entries
            .iter()
            .map(|e| format!("{} (issued by {})", e.subject, e.issuer))
            .collect()
    }

    /// Whether it holds no certificate.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The certificate a handshake would send, given the upstream's
    /// acceptable CA names (DER) and signature schemes.
    pub fn choose(&self, acceptable: &[&[u8]], schemes: &[SignatureScheme]) -> Choice {
        let usable: Vec<usize> = (0..self.entries.len())
            .filter(|&i| self.entries[i].key.key.choose_scheme(schemes).is_some())
            .collect();
        if self.entries.is_empty() {
            return Choice {
                index: None,
                outcome: Outcome::NoneConfigured,
            };
        }
        if usable.is_empty() {
            return Choice {
                index: None,
                outcome: Outcome::NoSupportedAlgorithm,
            };
        }
        if acceptable.is_empty() {
            return Choice {
                index: Some(usable[0]),
                outcome: Outcome::NoCaList,
            };
        }
        let matching = usable.iter().copied().find(|&i| {
            self.entries[i]
                .reaches
                .iter()
                .any(|n| acceptable.contains(&n.as_slice()))
        });
        match (matching, self.unmatched) {
            (Some(i), _) => Choice {
                index: Some(i),
                outcome: Outcome::Matched,
            },
            (None, UnmatchedClientCertificate::SendDefault) => Choice {
                index: Some(usable[0]),
                outcome: Outcome::MismatchSentDefault,
            },
            (None, UnmatchedClientCertificate::SendNone) => Choice {
                index: None,
                outcome: Outcome::MismatchSentNone,
            },
        }
    }

    /// The subject of entry `i`.
    fn subject(&self, i: usize) -> Option<&str> {
        self.entries.get(i).map(|e| e.subject.as_str())
    }

    /// For each certificate: its description, and whether its chain
    /// reaches one of `acceptable` (DER names).
    pub fn against(&self, acceptable: &[Vec<u8>]) -> Vec<(String, bool)> {
        self.entries
            .iter()
            .map(|e| {
                (
                    format!("{} (issued by {})", e.subject, e.issuer),
                    e.reaches.iter().any(|n| acceptable.contains(n)),
                )
            })
            .collect()
    }
}

/// Which certificate a handshake sends, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Choice {
    /// The entry sent, if any.
    pub index: Option<usize>,
    /// Why.
    pub outcome: Outcome,
}

/// How the client certificate of a handshake was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Outcome {
    /// The upstream did not ask for one.
    #[default]
    NotRequested,
    /// It asked; the keystore is empty.
    NoneConfigured,
    /// It asked; a certificate reaching one of its CAs was sent.
    Matched,
    /// It asked without naming CAs; the first certificate was sent.
    NoCaList,
    /// None reaches its CAs; the first was sent (`send_default`).
    MismatchSentDefault,
    /// None reaches its CAs; none was sent (`send_none`).
    MismatchSentNone,
    /// No certificate has a key for the signature schemes it offered.
    NoSupportedAlgorithm,
}

impl Outcome {
    /// A fixed name (a metrics label).
    pub fn name(self) -> &'static str {
        match self {
            Outcome::NotRequested => "not_requested",
            Outcome::NoneConfigured => "none_configured",
            Outcome::Matched => "matched",
            Outcome::NoCaList => "no_ca_list",
            Outcome::MismatchSentDefault => "mismatch_sent_default",
            Outcome::MismatchSentNone => "mismatch_sent_none",
            Outcome::NoSupportedAlgorithm => "no_supported_algorithm",
        }
    }

    /// Whether an operator should hear of it even when the request went
    /// through (the upstream took a certificate it did not list, or none).
    pub fn is_mismatch(self) -> bool {
        matches!(
            self,
            Outcome::NoneConfigured
                | Outcome::MismatchSentDefault
                | Outcome::MismatchSentNone
                | Outcome::NoSupportedAlgorithm
        )
    }
}

/// What a handshake did about client certificates.
#[derive(Debug, Clone, Default)]
pub struct ClientAuthRecord {
    /// The CA names the upstream listed (RFC 4514), in its order.
    pub acceptable: Vec<String>,
    /// The same names, DER.
    pub acceptable_der: Vec<Vec<u8>>,
    /// The subject of the certificate sent.
    pub sent: Option<String>,
    /// How it was chosen.
    pub outcome: Outcome,
}

impl ClientAuthRecord {
    /// The record as trace fields.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "requested": self.outcome != Outcome::NotRequested,
            "acceptable_cas": self.acceptable,
            "sent": self.sent,
            "outcome": self.outcome.name(),
        })
    }
}

/// The resolver of one connection: chooses from the keystore and records
/// the choice.
#[derive(Debug)]
struct Recording {
    keystore: Arc<Keystore>,
    record: Arc<Mutex<ClientAuthRecord>>,
}

impl ResolvesClientCert for Recording {
    fn resolve(
        &self,
        root_hint_subjects: &[&[u8]],
        sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        let choice = self.keystore.choose(root_hint_subjects, sigschemes);
        if let Ok(mut r) = self.record.lock() {
            r.acceptable = root_hint_subjects.iter().map(|n| dn_text(n)).collect();
            r.acceptable_der = root_hint_subjects.iter().map(|n| n.to_vec()).collect();
            r.sent = choice
                .index
                .and_then(|i| self.keystore.subject(i))
                .map(str::to_string);
            r.outcome = choice.outcome;
        }
        choice
            .index
            .and_then(|i| self.keystore.entries.get(i))
            .map(|e| e.key.clone())
    }

    // Always: so the handshake is recorded even with an empty keystore.
    fn has_certs(&self) -> bool {
        true
    }
}

/// A DER distinguished name as RFC 4514 text (or hex when it does not
/// parse).
fn dn_text(der: &[u8]) -> String {
    match X509Name::from_der(der) {
        Ok((_, n)) => super::certinfo::rfc4514(&n),
        Err(_) => format!("#{}", super::certinfo::sha256_hex(der)),
    }
}

/// Why a TLS handshake with an upstream failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsCause {
    /// It asked for a client certificate; none is configured.
    NoClientCertificate,
    /// It asked for one from CAs none of ours reaches.
    ClientCertificateMismatch,
    /// It refused the certificate sent (the alert it sent).
    ClientCertificateRejected,
    /// Its certificate is not issued by a CA the gateway trusts.
    UntrustedCertificate,
    /// Its certificate has expired or is not valid yet.
    ExpiredCertificate,
    /// Its certificate is for another name.
    WrongName,
    /// Anything else (versions, ciphers, protocol errors, a reset).
    HandshakeFailed,
}

impl TlsCause {
    /// The fault code.
    pub fn code(self) -> &'static str {
        match self {
            TlsCause::NoClientCertificate => "upstream.tls.no-client-certificate",
            TlsCause::ClientCertificateMismatch => "upstream.tls.client-certificate-mismatch",
            TlsCause::ClientCertificateRejected => "upstream.tls.client-certificate-rejected",
            TlsCause::UntrustedCertificate => "upstream.tls.untrusted-certificate",
            TlsCause::ExpiredCertificate => "upstream.tls.expired-certificate",
            TlsCause::WrongName => "upstream.tls.wrong-name",
            TlsCause::HandshakeFailed => "upstream.tls.handshake-failed",
        }
    }

    /// A fixed name (a metrics label).
    pub fn reason(self) -> &'static str {
        match self {
            TlsCause::NoClientCertificate => "no_client_certificate",
            TlsCause::ClientCertificateMismatch => "client_certificate_mismatch",
            TlsCause::ClientCertificateRejected => "client_certificate_rejected",
            TlsCause::UntrustedCertificate => "untrusted_certificate",
            TlsCause::ExpiredCertificate => "expired_certificate",
            TlsCause::WrongName => "wrong_name",
            TlsCause::HandshakeFailed => "handshake_failed",
        }
    }
}

/// A failed upstream handshake: the cause, rustls' error, and what the
/// handshake did about client certificates.
#[derive(Debug, Clone)]
pub struct TlsFailure {
    /// The cause.
    pub cause: TlsCause,
    /// The error as rustls (or the socket) reported it.
    pub error: String,
    /// The alert the upstream sent, as TLS names it (`bad_certificate`).
    pub alert: Option<String>,
    /// The client-certificate exchange.
    pub client_auth: ClientAuthRecord,
    /// Our certificates (`subject (issued by issuer)`).
    pub ours: Vec<String>,
}

impl TlsFailure {
    /// Classifies a handshake error. `err` is rustls' error when there is
    /// one; `io` the text otherwise.
    pub fn classify(
        err: Option<&rustls::Error>,
        io: &str,
        record: ClientAuthRecord,
        keystore: &Keystore,
    ) -> Self {
        use rustls::{CertificateError as C, Error as E};
        let mut alert = None;
        let cause = match err {
            Some(E::InvalidCertificate(c)) => match c {
                C::Expired
                | C::ExpiredContext { .. }
                | C::NotValidYet
                | C::NotValidYetContext { .. } => TlsCause::ExpiredCertificate,
                C::NotValidForName | C::NotValidForNameContext { .. } => TlsCause::WrongName,
                _ => TlsCause::UntrustedCertificate,
            },
            Some(E::AlertReceived(a)) => {
                alert = Some(alert_name(*a));
                match record.outcome {
                    Outcome::NoneConfigured => TlsCause::NoClientCertificate,
                    Outcome::MismatchSentDefault
                    | Outcome::MismatchSentNone
                    | Outcome::NoSupportedAlgorithm => TlsCause::ClientCertificateMismatch,
                    Outcome::Matched | Outcome::NoCaList => TlsCause::ClientCertificateRejected,
                    Outcome::NotRequested => match a {
                        rustls::AlertDescription::CertificateRequired => {
                            TlsCause::NoClientCertificate
                        }
                        _ => TlsCause::HandshakeFailed,
                    },
                }
            }
            _ => TlsCause::HandshakeFailed,
        };
        TlsFailure {
            cause,
            error: err.map_or_else(|| io.to_string(), |e| e.to_string()),
            alert,
            client_auth: record,
            ours: keystore.describe(),
        }
    }

    /// What the client is told: the cause, without names or addresses.
    pub fn client_message(&self, upstream: &str) -> String {
        let what = match self.cause {
            TlsCause::NoClientCertificate => {
                "the upstream requires a client certificate and the gateway has none configured for it"
            }
            TlsCause::ClientCertificateMismatch => {
                "the upstream requires a client certificate from a CA that none of the gateway's certificates for it is issued by"
            }
            TlsCause::ClientCertificateRejected => {
                "the upstream refused the gateway's client certificate"
            }
            TlsCause::UntrustedCertificate => {
                "the upstream's certificate is not issued by a CA the gateway trusts for it"
            }
            TlsCause::ExpiredCertificate => {
                "the upstream's certificate has expired or is not valid yet"
            }
            TlsCause::WrongName => "the upstream's certificate is for another name",
            TlsCause::HandshakeFailed => "the TLS handshake with the upstream failed",
        };
        format!("upstream `{upstream}`: {what}")
    }

    /// The whole story, for logs and traces: the cause, the CA names the
    /// upstream accepts, our certificates and their issuers, the alert,
    /// and the setting to change.
    pub fn detail(&self, upstream: &str, address: &str) -> String {
        let cas = || {
            if self.client_auth.acceptable.is_empty() {
                "(it named none)".to_string()
            } else {
                self.client_auth.acceptable.join("; ")
            }
        };
        let ours = || {
            if self.ours.is_empty() {
                "(none)".to_string()
            } else {
                self.ours.join("; ")
            }
        };
        let alert = self
            .alert
            .as_deref()
            .map(|a| format!(" (alert {a})"))
            .unwrap_or_default();
        let why = match self.cause {
            TlsCause::NoClientCertificate => format!(
                "it asked for a client certificate{alert} and upstreams.{upstream}.tls.keystore is empty; the CAs it accepts: {}; add a certificate issued by one of them",
                cas()
            ),
            TlsCause::ClientCertificateMismatch => format!(
                "it accepts client certificates from {} but ours are {}{}{alert}; add a certificate issued by one of its CAs to upstreams.{upstream}.tls.keystore",
                cas(),
                ours(),
                match (&self.client_auth.outcome, &self.client_auth.sent) {
                    (Outcome::MismatchSentDefault, Some(s)) => format!("; {s} was sent anyway (unmatched_client_certificate: send_default)"),
                    (Outcome::MismatchSentNone, _) => "; none was sent (unmatched_client_certificate: send_none)".to_string(),
                    (Outcome::NoSupportedAlgorithm, _) => "; none has a key for the signature algorithms it offered".to_string(),
                    _ => String::new(),
                }
            ),
            TlsCause::ClientCertificateRejected => format!(
                "it refused our client certificate {}{alert}; it accepts certificates from {}: check that it trusts the issuer, that the certificate is valid and not revoked, and its extended key usage allows clientAuth",
                self.client_auth.sent.as_deref().unwrap_or("(none)"),
                cas()
            ),
            TlsCause::UntrustedCertificate => format!(
                "its certificate is not trusted ({}); set upstreams.{upstream}.tls.truststore to the CA bundle that issued it",
                self.error
            ),
            TlsCause::ExpiredCertificate => format!(
                "its certificate is not valid now ({}); the upstream must renew it (or the clock is wrong)",
                self.error
            ),
            TlsCause::WrongName => format!(
                "its certificate does not name the host the gateway expects ({}); set upstreams.{upstream}.tls.verify_name (or server_name) to a name it carries",
                self.error
            ),
            TlsCause::HandshakeFailed => format!("{}{alert}", self.error),
        };
        format!("TLS handshake with upstream `{upstream}` at {address} failed: {why}")
    }

    /// Trace fields.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "cause": self.cause.reason(),
            "error": self.error,
            "alert": self.alert,
            "client_certificate": self.client_auth.to_json(),
            "keystore": self.ours,
        })
    }
}

/// The TLS name of an alert (`bad_certificate`).
pub fn alert_name(a: rustls::AlertDescription) -> String {
    use rustls::AlertDescription as A;
    match a {
        A::BadCertificate => "bad_certificate".into(),
        A::UnsupportedCertificate => "unsupported_certificate".into(),
        A::CertificateRevoked => "certificate_revoked".into(),
        A::CertificateExpired => "certificate_expired".into(),
        A::CertificateUnknown => "certificate_unknown".into(),
        A::UnknownCA => "unknown_ca".into(),
        A::AccessDenied => "access_denied".into(),
        A::CertificateRequired => "certificate_required".into(),
        A::HandshakeFailure => "handshake_failure".into(),
        A::DecryptError => "decrypt_error".into(),
        A::ProtocolVersion => "protocol_version".into(),
        A::InsufficientSecurity => "insufficient_security".into(),
        A::NoApplicationProtocol => "no_application_protocol".into(),
        A::UnrecognisedName => "unrecognized_name".into(),
        A::IllegalParameter => "illegal_parameter".into(),
        A::InternalError => "internal_error".into(),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// Accepts any upstream certificate (`insecure_skip_verify: true`); the
/// handshake signature is still checked, so the peer holds the key of the
/// certificate it showed.
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _sni: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Builds an upstream's TLS settings; problems go to `errors` (under
/// `path`.tls), doubts to `warnings`.
pub fn build(
    tls: Option<&UpstreamTls>,
    protocol: UpstreamProtocol,
    host: &str,
    source: &Source,
    path: &str,
    errors: &mut Vec<ConfigError>,
    warnings: &mut Vec<ConfigError>,
) -> Option<UpstreamTlsConfig> {
    let provider = super::provider();
    let default_tls = UpstreamTls::default();
    let t = tls.unwrap_or(&default_tls);
    let key = |k: &str| format!("{path}.tls.{k}");
    let before = errors.len();

    let sni = t.server_name.clone().unwrap_or_else(|| host.to_string());
    let server_name = match ServerName::try_from(sni.clone()) {
        Ok(n) => Some(n),
        Err(e) => {
            errors.push(ConfigError::new(
                source,
                key("server_name"),
                format!("`{sni}` is not a valid TLS server name: {e}"),
            ));
            None
        }
    };
    let verify_name = match &t.verify_name {
        None => None,
        Some(v) => match ServerName::try_from(v.clone()) {
            Ok(n) => Some(n),
            Err(e) => {
                errors.push(ConfigError::new(
                    source,
                    key("verify_name"),
                    format!("`{v}` is not a valid name: {e}"),
                ));
                None
            }
        },
    };
    let versions: Vec<&'static rustls::SupportedProtocolVersion> = match t.min_version.as_deref() {
        None | Some("1.2") => vec![&rustls::version::TLS13, &rustls::version::TLS12],
        Some("1.3") => vec![&rustls::version::TLS13],
        Some(other) => {
            errors.push(ConfigError::new(
                source,
                key("min_version"),
                format!("`{other}`: use \"1.2\" or \"1.3\""),
            ));
            vec![]
        }
    };
    let alpn = t.alpn.clone().unwrap_or_else(|| match protocol {
        UpstreamProtocol::Http1 => vec!["http/1.1".into()],
        UpstreamProtocol::Http2 => vec!["h2".into()],
        UpstreamProtocol::Auto => vec!["h2".into(), "http/1.1".into()],
    });
    for (i, p) in alpn.iter().enumerate() {
        let fits = match protocol {
            UpstreamProtocol::Http1 => p == "http/1.1",
            UpstreamProtocol::Http2 => p == "h2",
            UpstreamProtocol::Auto => p == "h2" || p == "http/1.1",
        };
        if !fits {
            errors.push(ConfigError::new(
                source,
                format!("{}[{i}]", key("alpn")),
                format!(
                    "`{p}` does not fit protocol {}: use {}",
                    match protocol {
                        UpstreamProtocol::Http1 => "http1",
                        UpstreamProtocol::Http2 => "http2",
                        UpstreamProtocol::Auto => "auto",
                    },
                    match protocol {
                        UpstreamProtocol::Http1 => "http/1.1 (or set protocol: http2 or auto)",
                        UpstreamProtocol::Http2 => "h2",
                        UpstreamProtocol::Auto => "h2 and http/1.1",
                    }
                ),
            ));
        }
    }

    // The server certificate's verification.
    let verifier: Option<Arc<dyn ServerCertVerifier>> = if t.insecure_skip_verify {
        warnings.push(ConfigError::new(
            source,
            key("insecure_skip_verify"),
            "the upstream's certificate is NOT verified: anyone on the path can pose as it and read every request; use a truststore instead",
        ));
        if t.truststore.is_some() {
            errors.push(ConfigError::new(
                source,
                key("truststore"),
                "a truststore with insecure_skip_verify: true is never used; remove one of them",
            ));
        }
        Some(Arc::new(NoVerification(provider.clone())))
    } else {
        let roots = match &t.truststore {
            Some(p) => {
                let file = source.resolve(p);
                match pem::certificates(&file) {
                    Ok(certs) => {
                        let (roots, problems) = usable_roots(certs, &file);
                        for p in problems {
                            warnings.push(ConfigError::new(source, key("truststore"), p));
                        }
                        if roots.is_empty() {
                            errors.push(ConfigError::new(
                                source,
                                key("truststore"),
                                format!(
                                    "{}: no certificate in it can verify anything (see the warnings): the upstream could never be trusted",
                                    file.display()
                                ),
                            ));
                        }
                        roots
                    }
                    Err(e) => {
                        errors.push(ConfigError::new(source, key("truststore"), e));
                        rustls::RootCertStore::empty()
                    }
                }
            }
            None => {
                let mut roots = rustls::RootCertStore::empty();
                for c in rustls_native_certs::load_native_certs().certs {
                    let _ = roots.add(c);
                }
                roots
            }
        };
        if roots.is_empty() {
            None
        } else {
            match rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots),
                provider.clone(),
            )
            .build()
            {
                Ok(v) => Some(match verify_name {
                    Some(name) => Arc::new(Wrap {
                        inner: v,
                        name: Some(name),
                        seen: None,
                    }),
                    None => v,
                }),
                Err(e) => {
                    errors.push(ConfigError::new(
                        source,
                        key("truststore"),
                        format!("cannot build the verifier: {e}"),
                    ));
                    None
                }
            }
        }
    };
    let keystore = load_keystore(t, &provider, source, path, errors, warnings);
    if errors.len() > before {
        return None;
    }
    let (Some(server_name), Some(verifier)) = (server_name, verifier) else {
        // No system roots: nothing could be verified.
        errors.push(ConfigError::new(
            source,
            key("truststore"),
            "this machine has no system CA certificates: name a truststore for the upstream",
        ));
        return None;
    };
    let builder = match ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
    {
        Ok(b) => b,
        Err(e) => {
            errors.push(ConfigError::new(
                source,
                key("min_version"),
                format!("tls setup failed: {e}"),
            ));
            return None;
        }
    };
    let keystore = Arc::new(keystore);
    let mut config = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone())
        .with_client_cert_resolver(Arc::new(Recording {
            keystore: keystore.clone(),
            record: Arc::default(),
        }));
    config.alpn_protocols = alpn.into_iter().map(String::into_bytes).collect();
    Some(UpstreamTlsConfig {
        base: Arc::new(config),
        keystore,
        verifier,
        server_name,
    })
}

/// The certificates of a truststore that can anchor a chain, and a
/// warning for each that cannot (expired, not valid yet, not a CA, not
/// parsable as a trust anchor).
fn usable_roots(
    certs: Vec<CertificateDer<'static>>,
    file: &std::path::Path,
) -> (rustls::RootCertStore, Vec<String>) {
    let now = now_secs();
    let mut roots = rustls::RootCertStore::empty();
    let mut problems = Vec::new();
    for (i, c) in certs.into_iter().enumerate() {
        let which = match X509Certificate::from_der(c.as_ref()) {
            Ok((_, x)) => {
                let which = format!(
                    "{}: certificate #{} ({})",
                    file.display(),
                    i + 1,
                    x.subject()
                );
                let v = x.validity();
                if v.not_after.timestamp() < now {
                    problems.push(format!(
                        "{which} expired on {}; it verifies nothing",
                        v.not_after
                    ));
                    continue;
                }
                if v.not_before.timestamp() > now {
                    problems.push(format!("{which} is not valid until {}", v.not_before));
                    continue;
                }
                let ca = x.version() == X509Version::V1
                    || x.basic_constraints()
                        .ok()
                        .flatten()
                        .is_some_and(|b| b.value.ca);
                if !ca {
                    problems.push(format!("{which} is not a CA certificate; a truststore holds the CAs that issue the upstream's certificate"));
                }
                which
            }
            Err(e) => format!("{}: certificate #{} ({e})", file.display(), i + 1),
        };
        if let Err(e) = roots.add(c) {
            problems.push(format!("{which} is not a usable CA: {e}"));
        }
    }
    (roots, problems)
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Reads the keystore: each chain and key, checked (the key fits the
/// certificate, every certificate is valid now, the chain links up).
fn load_keystore(
    t: &UpstreamTls,
    provider: &Arc<rustls::crypto::CryptoProvider>,
    source: &Source,
    path: &str,
    errors: &mut Vec<ConfigError>,
    warnings: &mut Vec<ConfigError>,
) -> Keystore {
    let mut entries = Vec::new();
    for (i, k) in t.keystore.iter().enumerate() {
        let at = format!("{path}.tls.keystore[{i}]");
        let cert_file = source.resolve(&k.certificate);
        let key_file = source.resolve(&k.key);
        let certs = match pem::certificates(&cert_file) {
            Ok(c) => c,
            Err(e) => {
                errors.push(ConfigError::new(source, format!("{at}.certificate"), e));
                continue;
            }
        };
        let key = match pem::private_key(&key_file) {
            Ok(k) => k,
            Err(e) => {
                errors.push(ConfigError::new(source, format!("{at}.key"), e));
                continue;
            }
        };
        let signing = match provider.key_provider.load_private_key(key) {
            Ok(s) => s,
            Err(e) => {
                errors.push(ConfigError::new(
                    source,
                    format!("{at}.key"),
                    format!("the key in {} cannot be used: {e}", key_file.display()),
                ));
                continue;
            }
        };
        let parsed: Vec<X509Certificate<'_>> = certs
            .iter()
            .filter_map(|c| X509Certificate::from_der(c.as_ref()).ok().map(|(_, x)| x))
            .collect();
        // The chain must link up, leaf first: each certificate issued by
        // the next (the upstream must trust the issuer of the last one).
        let mut linked = true;
        for w in parsed.windows(2) {
            if w[0].issuer().as_raw() != w[1].subject().as_raw() {
                linked = false;
                errors.push(ConfigError::new(
                    source,
                    format!("{at}.certificate"),
                    format!(
                        "{}: the chain is out of order or incomplete: {} is issued by {}, but the next certificate is {}; list the leaf first, then each issuer",
                        cert_file.display(),
                        w[0].subject(),
                        w[0].issuer(),
                        w[1].subject()
                    ),
                ));
            }
        }
        // A chain out of order is reported as that, not as a key that does
        // not fit its first certificate.
        let Some(leaf) = parsed.first().filter(|_| linked) else {
            continue;
        };
        let certified = CertifiedKey::new(certs.clone(), signing);
        if let Err(e) = certified.keys_match() {
            errors.push(ConfigError::new(
                source,
                format!("{at}.key"),
                format!(
                    "the key in {} does not belong to the certificate in {}: {e}",
                    key_file.display(),
                    cert_file.display()
                ),
            ));
            continue;
        }
        super::server::check_validity(
            &certs,
            &cert_file,
            "upstreams",
            source,
            &format!("{at}.certificate"),
            errors,
            warnings,
        );
        let mut reaches: Vec<Vec<u8>> = Vec::new();
        for (j, c) in parsed.iter().enumerate() {
            reaches.push(c.issuer().as_raw().to_vec());
            if j > 0 {
                reaches.push(c.subject().as_raw().to_vec());
            }
        }
        entries.push(KeyEntry {
            key: Arc::new(certified),
            reaches,
            subject: super::certinfo::rfc4514(leaf.subject()),
            issuer: super::certinfo::rfc4514(leaf.issuer()),
        });
    }
    Keystore {
        entries,
        unmatched: t.unmatched_client_certificate,
    }
}

/// Finds a rustls error in an error or its causes, looking inside
/// `io::Error`s (which hide their inner error from `source()`).
pub fn find_rustls_error<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> Option<&'a rustls::Error> {
    let mut cur = Some(e);
    while let Some(x) = cur {
        if let Some(r) = x.downcast_ref::<rustls::Error>() {
            return Some(r);
        }
        if let Some(inner) = x
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            let inner: &(dyn std::error::Error + 'static) = inner;
            if let Some(r) = find_rustls_error(inner) {
                return Some(r);
            }
        }
        cur = x.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A keystore entry for a fresh P-256 certificate issued by a CA named
    /// `ca`, whose chain carries an intermediate named `via` when given.
    fn entry(cn: &str, ca: &str, via: Option<&str>) -> (KeyEntry, Vec<u8>) {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, ca);
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let (issuer_params, issuer_key, mut chain_tail) = match via {
            Some(name) => {
                let k = rcgen::KeyPair::generate().unwrap();
                let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
                p.distinguished_name.push(rcgen::DnType::CommonName, name);
                p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
                let c = p
                    .signed_by(&k, &rcgen::Issuer::from_params(&ca_params, &ca_key))
                    .unwrap();
                (p, k, vec![c.der().clone()])
            }
            None => (ca_params, ca_key, Vec::new()),
        };
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        let leaf = p
            .signed_by(
                &key,
                &rcgen::Issuer::from_params(&issuer_params, &issuer_key),
            )
            .unwrap();
        let mut chain = vec![leaf.der().clone()];
        chain.append(&mut chain_tail);
        let signing = super::super::provider()
            .key_provider
            .load_private_key(rustls::pki_types::PrivateKeyDer::Pkcs8(
                key.serialize_der().into(),
            ))
            .unwrap();
        let parsed: Vec<_> = chain
            .iter()
            .map(|c| X509Certificate::from_der(c.as_ref()).unwrap().1)
            .collect();
        let mut reaches = Vec::new();
        for (j, c) in parsed.iter().enumerate() {
            reaches.push(c.issuer().as_raw().to_vec());
            if j > 0 {
                reaches.push(c.subject().as_raw().to_vec());
            }
        }
        let e = KeyEntry {
            key: Arc::new(CertifiedKey::new(chain, signing)),
            reaches,
            subject: format!("CN={cn}"),
            issuer: String::new(),
        };
        let ca_name = X509Certificate::from_der(ca_cert.der().as_ref())
            .unwrap()
            .1
            .subject()
            .as_raw()
            .to_vec();
        (e, ca_name)
    }

    const P256: &[SignatureScheme] = &[SignatureScheme::ECDSA_NISTP256_SHA256];

    #[test]
    fn the_first_certificate_reaching_a_named_ca_is_chosen() {
        let (b, b_ca) = entry("b", "CA B", None);
        let (a, a_ca) = entry("a", "CA A", Some("Intermediate A"));
        let ks = Keystore {
            entries: vec![b, a],
            unmatched: UnmatchedClientCertificate::SendDefault,
        };
        // By the root's name (the chain's last issuer) ...
        let c = ks.choose(&[a_ca.as_slice()], P256);
        assert_eq!((c.index, c.outcome), (Some(1), Outcome::Matched));
        // ... or the configured order when both match.
        let c = ks.choose(&[a_ca.as_slice(), b_ca.as_slice()], P256);
        assert_eq!((c.index, c.outcome), (Some(0), Outcome::Matched));
        // No CA list: the first.
        let c = ks.choose(&[], P256);
        assert_eq!((c.index, c.outcome), (Some(0), Outcome::NoCaList));
        // None reaches: send_default sends the first, send_none nothing.
        let other = b"\x30\x00".to_vec();
        let c = ks.choose(&[other.as_slice()], P256);
        assert_eq!(
            (c.index, c.outcome),
            (Some(0), Outcome::MismatchSentDefault)
        );
        let none = Keystore {
            unmatched: UnmatchedClientCertificate::SendNone,
            ..ks
        };
        let c = none.choose(&[other.as_slice()], P256);
        assert_eq!((c.index, c.outcome), (None, Outcome::MismatchSentNone));
    }

    #[test]
    fn an_intermediate_named_by_the_upstream_counts() {
        let (a, _) = entry("a", "Root A", Some("Issuing A"));
        let inter = a.reaches[0].clone(); // the leaf's issuer: Issuing A
        let ks = Keystore {
            entries: vec![a],
            unmatched: UnmatchedClientCertificate::SendNone,
        };
        let c = ks.choose(&[inter.as_slice()], P256);
        assert_eq!(c.outcome, Outcome::Matched);
    }

    #[test]
    fn no_certificate_goes_with_an_algorithm_the_upstream_did_not_offer() {
        let (a, a_ca) = entry("a", "CA A", None);
        let ks = Keystore {
            entries: vec![a],
            unmatched: UnmatchedClientCertificate::SendDefault,
        };
        let c = ks.choose(&[a_ca.as_slice()], &[SignatureScheme::ED25519]);
        assert_eq!((c.index, c.outcome), (None, Outcome::NoSupportedAlgorithm));
        let empty = Keystore {
            entries: Vec::new(),
            unmatched: UnmatchedClientCertificate::SendDefault,
        };
        assert_eq!(empty.choose(&[], P256).outcome, Outcome::NoneConfigured);
    }
}
