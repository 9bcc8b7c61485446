//! Downstream TLS: each listener has a table of hosts, each with its own
//! rustls `ServerConfig`. The ClientHello is read first (rustls'
//! `Acceptor`), the host is chosen from the SNI (an exact name, then a
//! wildcard, then the listener's default host), and the handshake goes on
//! with that host's config: its certificate, its ALPN, and whether and how
//! it asks for a client certificate (see [`ClientAuth`]).

use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, WebPkiClientVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme};
use x509_parser::prelude::*;

use super::{name_matches, pem};
use crate::config::{
    ClientCertMode, ClientCertificate, ConfigError, ListenerTls, Source, StaleCrl,
};

/// A handshake refused because no TLS host serves its SNI.
#[derive(Debug, thiserror::Error)]
#[error("no TLS host of the listener serves the SNI {}, and it has no default_host", .0.as_deref().map_or_else(|| "(none sent)".to_string(), |s| format!("`{s}`")))]
pub struct UnrecognizedName(pub Option<String>);

/// One host of a TLS listener.
#[derive(Debug)]
pub struct TlsHost {
    /// Names, lower case (exact or `*.suffix`).
    pub names: Vec<String>,
    /// The host's server config.
    pub config: Arc<ServerConfig>,
    /// How the host asks for client certificates; `None`: it does not.
    pub client_auth: Option<Arc<ClientAuth>>,
}

/// The hosts of one TLS listener.
#[derive(Debug)]
pub struct TlsListener {
    /// In config order.
    pub hosts: Vec<TlsHost>,
    /// The entry that serves handshakes no name matches (`default_host`).
    pub default: Option<usize>,
}

/// A host's client-certificate settings and verifier.
#[derive(Debug)]
pub struct ClientAuth {
    /// `optional` or `required` (`off` builds none).
    pub mode: ClientCertMode,
    /// The truststore file, for messages.
    pub truststore: String,
    /// The verifier in force: rebuilt and swapped when CRLs fetched from
    /// URLs change.
    verifier: arc_swap::ArcSwap<VerifierHolder>,
    /// The CA names sent in the CertificateRequest (from the truststore).
    hints: Vec<DistinguishedName>,
    max_depth: usize,
    /// A floor stricter than webpki's own, checked after it; `None` for
    /// the default.
    floor: Option<super::floor::Floor>,
    algorithms: rustls::crypto::WebPkiSupportedAlgorithms,
    /// The truststore's certificates: trust anchor, DER and subject (full
    /// DER of the name), to name the CA at the top of a verified path.
    anchors: Vec<Anchor>,
    /// What a rebuild needs besides the CRLs from URLs.
    parts: VerifierParts,
}

/// A truststore certificate, kept to name the issuer of verified chains.
#[derive(Debug)]
struct Anchor {
    anchor: rustls::pki_types::TrustAnchor<'static>,
    der: CertificateDer<'static>,
    subject: Vec<u8>,
}

/// Thumbprints (lower-case hex) of the certificate that issued a client's
/// certificate on its verified path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuerPrints {
    /// SHA-1 of the issuer's DER.
    pub sha1: String,
    /// SHA-256 of the issuer's DER.
    pub sha256: String,
}

/// The verifier, behind the swap.
#[derive(Debug)]
struct VerifierHolder(Arc<dyn ClientCertVerifier>);

/// The inputs of a host's verifier that do not change while it runs.
#[derive(Debug)]
struct VerifierParts {
    roots: Arc<rustls::RootCertStore>,
    provider: Arc<rustls::crypto::CryptoProvider>,
    file_crls: Vec<CertificateRevocationListDer<'static>>,
    stale: StaleCrl,
    mode: ClientCertMode,
}

impl VerifierParts {
    fn build(
        &self,
        url_crls: &[CertificateRevocationListDer<'static>],
    ) -> Result<Arc<dyn ClientCertVerifier>, String> {
        let crls: Vec<_> = self.file_crls.iter().chain(url_crls).cloned().collect();
        let mut b =
            WebPkiClientVerifier::builder_with_provider(self.roots.clone(), self.provider.clone())
                .with_crls(crls)
                // A certificate whose issuer has no CRL here is not refused for
                // that: CRLs are given for the CAs that publish them.
                .allow_unknown_revocation_status();
        if self.stale == StaleCrl::Refuse {
            b = b.enforce_revocation_expiration();
        }
        if self.mode == ClientCertMode::Optional {
            b = b.allow_unauthenticated();
        }
        b.build()
            .map_err(|e| format!("cannot build the client-certificate verifier: {e}"))
    }
}

/// Whether rustls refused a certificate for being X.509 v1.
fn is_v1(e: &rustls::Error) -> bool {
    match e {
        rustls::Error::InvalidCertificate(rustls::CertificateError::Other(o)) => matches!(
            o.0.downcast_ref::<webpki::Error>(),
            Some(webpki::Error::UnsupportedCertVersion)
        ),
        _ => false,
    }
}

/// Why a client certificate chain is refused: rustls' error, or the chain
/// depth limit.
#[derive(Debug, thiserror::Error)]
#[error("the chain has {certs} certificates counting its root; this host accepts at most {max} (client_certificate.max_chain_depth)")]
pub struct ChainTooDeep {
    certs: usize,
    max: usize,
}

impl ClientAuth {
    /// Verifies a client's chain (leaf first) now: the truststore, the
    /// CRLs, validity, signatures, key usage, and the depth limit.
    ///
    /// # Errors
    ///
    /// The rustls error (the handshake alert is derived from it).
    pub fn verify(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        // The root is in the truststore, not in what the client sends
        // (unless it sends it too: a last certificate that issued itself).
        let sent = 1 + intermediates.len();
        let mut certs = sent + 1;
        if certs > self.max_depth {
            let last = intermediates.last().unwrap_or(end_entity);
            if let Ok((_, c)) = X509Certificate::from_der(last.as_ref()) {
                if c.subject().as_raw() == c.issuer().as_raw() {
                    certs = sent;
                }
            }
            if certs > self.max_depth {
                return Err(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::Other(rustls::OtherError(Arc::new(ChainTooDeep {
                        certs,
                        max: self.max_depth,
                    }))),
                ));
            }
        }
        let verified = self
            .verifier
            .load()
            .0
            .verify_client_cert(end_entity, intermediates, now)?;
        if let Some(floor) = &self.floor {
            let chain = std::iter::once(end_entity.as_ref())
                .chain(intermediates.iter().map(|c| c.as_ref()));
            floor.check_chain(chain).map_err(|e| {
                rustls::Error::InvalidCertificate(rustls::CertificateError::Other(
                    rustls::OtherError(Arc::new(e)),
                ))
            })?;
        }
        Ok(verified)
    }

    /// Swaps in a verifier with the CRLs just fetched from the host's URLs
    /// (and its file CRLs); a CRL that does not fit keeps the old one.
    fn update_url_crls(&self, url_crls: Vec<CertificateRevocationListDer<'static>>) {
        match self.parts.build(&url_crls) {
            Ok(v) => {
                self.verifier.store(Arc::new(VerifierHolder(v)));
                tracing::debug!(truststore = %self.truststore, "CRLs refreshed from their URLs");
            }
            Err(e) => {
                tracing::warn!("fetched CRLs not applied, the last good ones stay in force: {e}")
            }
        }
    }

    /// The certificate that issued `chain`'s leaf on the path webpki
    /// verifies to this host's truststore — the path's first intermediate,
    /// or the truststore CA itself — as thumbprints. `None` when no path
    /// verifies. Revocation was checked when the chain was accepted; this
    /// only names the path.
    pub fn verified_issuer(&self, chain: &[CertificateDer<'static>]) -> Option<IssuerPrints> {
        let (leaf, rest) = chain.split_first()?;
        let prints = |der: &[u8]| IssuerPrints {
            sha1: super::certinfo::sha1_hex(der),
            sha256: super::certinfo::sha256_hex(der),
        };
        // Names chain: the issuer on any verified path has the subject the
        // leaf names as its issuer. When one certificate (sent or trusted)
        // has it, that is the issuer, and nothing needs verifying again.
        let (_, x) = X509Certificate::from_der(leaf.as_ref()).ok()?;
        let wanted = x.issuer().as_raw();
        let mut candidates: Vec<&[u8]> = Vec::new();
        for c in rest {
            if let Ok((_, p)) = X509Certificate::from_der(c.as_ref()) {
                if p.subject().as_raw() == wanted && !candidates.contains(&c.as_ref()) {
                    candidates.push(c.as_ref());
                }
            }
        }
        for a in &self.anchors {
            if a.subject == wanted && !candidates.contains(&a.der.as_ref()) {
                candidates.push(a.der.as_ref());
            }
        }
        match candidates.as_slice() {
            [] => return None,
            [one] => return Some(prints(one)),
            _ => {}
        }
        // Several CAs with that name (a cross-signed CA, a renewed one):
        // the path webpki verifies decides.
        let ee = webpki::EndEntityCert::try_from(leaf).ok()?;
        let anchors: Vec<_> = self.anchors.iter().map(|a| a.anchor.clone()).collect();
        let path = ee
            .verify_for_usage(
                self.algorithms.all,
                &anchors,
                rest,
                UnixTime::now(),
                webpki::KeyUsage::client_auth(),
                None,
                None,
            )
            .ok()?;
        if let Some(first) = path.intermediate_certificates().next() {
            return Some(prints(first.der().as_ref()));
        }
        let top = path.anchor();
        self.anchors
            .iter()
            .find(|a| {
                a.anchor.subject == top.subject
                    && a.anchor.subject_public_key_info == top.subject_public_key_info
            })
            .map(|a| prints(a.der.as_ref()))
    }

    /// Verifies a chain after the handshake (`optional` mode): `None` when
    /// it verifies, or why not, in words an operator searches for, and as
    /// a fixed word ([`super::certificate_failure`]).
    pub fn check(&self, chain: &[CertificateDer<'static>]) -> Option<(String, &'static str)> {
        let (leaf, rest) = chain.split_first()?;
        match self.verify(leaf, rest, UnixTime::now()) {
            Ok(_) => None,
            Err(e) => {
                let word = match &e {
                    rustls::Error::InvalidCertificate(c) => super::certificate_failure(c),
                    _ => "bad_certificate",
                };
                Some((explain_client_cert_error(&e, &self.truststore), word))
            }
        }
    }
}

/// Says why a client certificate was refused, for traces, policies and
/// logs.
pub fn explain_client_cert_error(e: &rustls::Error, truststore: &str) -> String {
    use rustls::CertificateError as C;
    match e {
        rustls::Error::InvalidCertificate(c) => match c {
            C::UnknownIssuer => format!(
                "the client certificate is not issued by a CA in the host's truststore ({truststore})"
            ),
            C::Expired | C::ExpiredContext { .. } => "the client certificate has expired".into(),
            C::NotValidYet | C::NotValidYetContext { .. } => {
                "the client certificate is not valid yet".into()
            }
            C::Revoked => "the client certificate is revoked (by the host's CRLs)".into(),
            C::ExpiredRevocationList | C::ExpiredRevocationListContext { .. } => {
                "a CRL of the host is past its next update (stale_crl: refuse)".into()
            }
            C::BadSignature
            | C::UnsupportedSignatureAlgorithmContext { .. }
            | C::UnsupportedSignatureAlgorithmForPublicKeyContext { .. } => {
                "the client certificate's signature or key is below the algorithm floor (SHA-256 or stronger; RSA of 2048 bits or more; ECDSA P-256 or P-384; Ed25519) or does not verify".into()
            }
            C::Other(o) => {
                let inner: &(dyn std::error::Error + 'static) = &*o.0;
                if let Some(d) = inner.downcast_ref::<ChainTooDeep>() {
                    d.to_string()
                } else if let Some(f) = inner.downcast_ref::<super::floor::BelowFloor>() {
                    f.to_string()
                } else if let Some(w) = inner.downcast_ref::<webpki::Error>() {
                    explain_webpki(w)
                } else {
                    format!("the client certificate is refused: {o}")
                }
            }
            other => format!("the client certificate is refused: {other:?}"),
        },
        other => format!("the client certificate is refused: {other}"),
    }
}

fn explain_webpki(w: &webpki::Error) -> String {
    use webpki::Error as W;
    match w {
        W::UnsupportedCertVersion => "the client certificate is X.509 v1 (it has no extensions, so no key usage or names); only v3 certificates are accepted: make it again with an extensions file, e.g. `openssl x509 -req ... -extfile <(printf 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth')`".into(),
        W::RequiredEkuNotFoundContext(_) => {
            "the client certificate's extended key usage does not allow client authentication (clientAuth)".into()
        }
        W::CaUsedAsEndEntity => "the client certificate is a CA certificate, not an end-entity one".into(),
        W::EndEntityUsedAsCa => "an intermediate of the client's chain is not a CA (basicConstraints)".into(),
        W::MaximumPathDepthExceeded | W::PathLenConstraintViolated => {
            "the client's chain is longer than its CAs allow".into()
        }
        other => format!("the client certificate is refused: {other}"),
    }
}

/// The verifier a host's rustls config uses. In `required` mode it
/// verifies during the handshake (a failure fails the handshake with the
/// matching alert). In `optional` mode it only asks: the chain is verified
/// after the handshake ([`ClientAuth::check`]) and requests go on, marked
/// verified or not. The handshake signature (proof of the key) is checked
/// in both.
#[derive(Debug)]
struct ModeVerifier(Arc<ClientAuth>);

impl ClientCertVerifier for ModeVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.0.mode == ClientCertMode::Required
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.0.hints
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        match self.0.mode {
            ClientCertMode::Required => self.0.verify(end_entity, intermediates, now),
            _ => Ok(ClientCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0
            .verifier
            .load()
            .0
            .verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let verifier = self.0.verifier.load();
        match verifier.0.verify_tls13_signature(message, cert, dss) {
            // webpki reads no X.509 v1 certificate, not even for its key.
            // In `optional` mode such a client still proves it holds the
            // key (checked by rustls against the certificate's public
            // key), and goes on marked unverified with the reason.
            Err(e) if self.0.mode == ClientCertMode::Optional && is_v1(&e) => {
                let (_, c) = X509Certificate::from_der(cert.as_ref()).map_err(|_| e.clone())?;
                let spki = rustls::pki_types::SubjectPublicKeyInfoDer::from(c.public_key().raw);
                rustls::crypto::verify_tls13_signature_with_raw_key(
                    message,
                    &spki,
                    dss,
                    &self.0.algorithms,
                )
            }
            r => r,
        }
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        let mut schemes = self.0.verifier.load().0.supported_verify_schemes();
        if let Some(floor) = &self.0.floor {
            schemes.retain(|s| floor.allows_scheme(*s));
        }
        schemes
    }
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
        let (provider, versions) = listener_provider(tls, source, path, errors)?;
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
            let cert_file = source.resolve(&h.certificate);
            let certs = match pem::certificates(&cert_file) {
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
            let client_auth = match &h.client_certificate {
                Some(cc) if cc.mode != ClientCertMode::Off => client_auth(
                    cc,
                    &provider,
                    source,
                    &format!("{hp}.client_certificate"),
                    errors,
                    warnings,
                ),
                _ => None,
            };
            let (Some(certs), Some(key)) = (certs, key) else {
                continue;
            };
            let key_file = source.resolve(&h.key);
            if let Err(e) = provider.key_provider.load_private_key(key.clone_key()) {
                errors.push(ConfigError::new(
                    source,
                    format!("{hp}.key"),
                    format!("the key in {} cannot be used: {e}", key_file.display()),
                ));
                continue;
            }
            let cert_path = format!("{hp}.certificate");
            check_validity(
                &certs, &cert_file, "clients", source, &cert_path, errors, warnings,
            );
            check_server_names(&certs[0], &h.names, &cert_file, source, &cert_path, errors);
            let builder = match ServerConfig::builder_with_provider(provider.clone())
                .with_protocol_versions(&versions)
            {
                Ok(b) => b,
                Err(e) => {
                    errors.push(ConfigError::new(
                        source,
                        path,
                        format!("the cipher suites and TLS versions do not fit together: {e}"),
                    ));
                    continue;
                }
            };
            let builder = match &client_auth {
                Some(ca) => builder.with_client_cert_verifier(Arc::new(ModeVerifier(ca.clone()))),
                None => builder.with_no_client_auth(),
            };
            let mut config = match builder.with_single_cert(certs, key) {
                Ok(c) => c,
                Err(e) => {
                    errors.push(ConfigError::new(
                        source,
                        format!("{hp}.key"),
                        format!(
                            "the key in {} does not fit the certificate {}: {e}",
                            key_file.display(),
                            cert_file.display()
                        ),
                    ));
                    continue;
                }
            };
            if client_auth.is_some() {
                // A resumed session would skip the certificate checks (the
                // chain, its validity, the CRLs in force now): hosts that
                // ask for client certificates do full handshakes only.
                config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
                config.send_tls13_tickets = 0;
            }
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
                client_auth,
            });
        }
        if hosts.len() != tls.hosts.len() {
            return None;
        }
        let default = match &tls.default_host {
            None => None,
            Some(d) => {
                let d = d.to_ascii_lowercase();
                match hosts.iter().position(|h| h.names.contains(&d)) {
                    Some(i) => Some(i),
                    None => {
                        let all: Vec<&str> = hosts
                            .iter()
                            .flat_map(|h| h.names.iter().map(String::as_str))
                            .collect();
                        errors.push(ConfigError::new(
                            source,
                            format!("{path}.default_host"),
                            format!(
                                "`{d}` is not one of the hosts' names{} (names: {})",
                                crate::config::did_you_mean(&d, all.iter().copied()),
                                all.join(", ")
                            ),
                        ));
                        return None;
                    }
                }
            }
        };
        Some(TlsListener { hosts, default })
    }

    /// The entry that serves `name` (an SNI, or a request's host): one
    /// that names it exactly, else one whose wildcard matches it, whatever
    /// their order in the file; else the default host; else none.
    pub fn select_name(&self, name: Option<&str>) -> Option<usize> {
        if let Some(n) = name {
            let n = n.trim_end_matches('.').to_ascii_lowercase();
            let exact = self
                .hosts
                .iter()
                .position(|h| h.names.iter().any(|p| !p.starts_with("*.") && *p == n));
            if exact.is_some() {
                return exact;
            }
            let wild = self.hosts.iter().position(|h| {
                h.names
                    .iter()
                    .any(|p| p.starts_with("*.") && name_matches(p, &n))
            });
            if wild.is_some() {
                return wild;
            }
        }
        self.default
    }

    /// The host for a ClientHello (see [`TlsListener::select_name`]);
    /// `None`: refuse the handshake (`unrecognized_name`).
    pub fn select(&self, hello: &ClientHello<'_>) -> Option<(usize, &TlsHost)> {
        let i = self.select_name(hello.server_name())?;
        self.hosts.get(i).map(|h| (i, h))
    }

    /// Whether a request for `host` on a connection made for host entry
    /// `index` is misdirected: SNI selection would have picked another
    /// entry for `host` (with its own certificate and client-certificate
    /// settings). A host no entry serves (and no default) is left to
    /// routing.
    pub fn misdirected(&self, index: usize, host: &str) -> bool {
        self.select_name(Some(host)).is_some_and(|i| i != index)
    }
}

/// The crypto provider and TLS versions of a listener (`min_version`,
/// `cipher_suites`).
fn listener_provider(
    tls: &ListenerTls,
    source: &Source,
    path: &str,
    errors: &mut Vec<ConfigError>,
) -> Option<(
    Arc<rustls::crypto::CryptoProvider>,
    Vec<&'static rustls::SupportedProtocolVersion>,
)> {
    let versions: Vec<&'static rustls::SupportedProtocolVersion> = match tls.min_version.as_deref()
    {
        None | Some("1.2") => vec![&rustls::version::TLS13, &rustls::version::TLS12],
        Some("1.3") => vec![&rustls::version::TLS13],
        Some(other) => {
            errors.push(ConfigError::new(
                source,
                format!("{path}.min_version"),
                format!("`{other}`: use \"1.2\" or \"1.3\""),
            ));
            return None;
        }
    };
    let mut provider = rustls::crypto::ring::default_provider();
    if let Some(names) = &tls.cipher_suites {
        let known: Vec<String> = provider
            .cipher_suites
            .iter()
            .map(|c| format!("{:?}", c.suite()))
            .collect();
        let mut chosen = Vec::new();
        let mut ok = true;
        for (j, n) in names.iter().enumerate() {
            match provider
                .cipher_suites
                .iter()
                .find(|c| format!("{:?}", c.suite()).eq_ignore_ascii_case(n))
            {
                Some(c) => chosen.push(*c),
                None => {
                    ok = false;
                    errors.push(ConfigError::new(
                        source,
                        format!("{path}.cipher_suites[{j}]"),
                        format!(
                            "unknown or unsupported cipher suite `{n}`{}; supported: {}",
                            crate::config::did_you_mean(n, known.iter().map(String::as_str)),
                            known.join(", ")
                        ),
                    ));
                }
            }
        }
        if !ok {
            // Reported; the hosts are still checked, with the default suites.
            return Some((Arc::new(provider), versions));
        }
        if chosen.is_empty() {
            errors.push(ConfigError::new(
                source,
                format!("{path}.cipher_suites"),
                "list at least one cipher suite",
            ));
            return None;
        }
        provider.cipher_suites = chosen;
    }
    Some((Arc::new(provider), versions))
}

/// Builds a host's client-certificate verifier from its truststore and
/// CRLs, after linting them.
fn client_auth(
    cc: &ClientCertificate,
    provider: &Arc<rustls::crypto::CryptoProvider>,
    source: &Source,
    path: &str,
    errors: &mut Vec<ConfigError>,
    warnings: &mut Vec<ConfigError>,
) -> Option<Arc<ClientAuth>> {
    let Some(ts) = &cc.truststore else {
        errors.push(ConfigError::new(
            source,
            format!("{path}.truststore"),
            format!(
                "mode `{}` needs a truststore: a PEM bundle of the CAs that issue client certificates",
                if cc.mode == ClientCertMode::Required { "required" } else { "optional" }
            ),
        ));
        return None;
    };
    if cc.max_chain_depth < 2 {
        errors.push(ConfigError::new(
            source,
            format!("{path}.max_chain_depth"),
            "at least 2 (a client certificate and the root that issued it)",
        ));
        return None;
    }
    let ts_file = source.resolve(ts);
    let ts_path = format!("{path}.truststore");
    let certs = match pem::certificates(&ts_file) {
        Ok(c) => c,
        Err(e) => {
            errors.push(ConfigError::new(source, ts_path, e));
            return None;
        }
    };
    let floor = match super::floor::Floor::from_config(&cc.algorithm_floor) {
        Ok(f) => f,
        Err((key, why)) => {
            errors.push(ConfigError::new(
                source,
                format!("{path}.algorithm_floor.{key}"),
                why,
            ));
            return None;
        }
    };
    let before = errors.len();
    lint_truststore(&certs, &ts_file, &floor, source, &ts_path, errors);
    if errors.len() > before {
        return None;
    }
    let mut roots = rustls::RootCertStore::empty();
    let mut anchors = Vec::with_capacity(certs.len());
    for c in &certs {
        let subject = X509Certificate::from_der(c.as_ref())
            .map(|(_, x)| x.subject().as_raw().to_vec())
            .unwrap_or_default();
        if let Ok(a) = webpki::anchor_from_trusted_cert(c) {
            anchors.push(Anchor {
                anchor: a.to_owned(),
                der: c.clone(),
                subject,
            });
        }
    }
    for (i, c) in certs.into_iter().enumerate() {
        if let Err(e) = roots.add(c) {
            errors.push(ConfigError::new(
                source,
                ts_path.clone(),
                format!(
                    "{}: certificate #{} is not a usable CA: {e}",
                    ts_file.display(),
                    i + 1
                ),
            ));
            return None;
        }
    }
    let mut crls = Vec::new();
    for (j, f) in cc.crls.iter().enumerate() {
        let file = source.resolve(f);
        let key = format!("{path}.crls[{j}]");
        match read_crls(&file) {
            Ok(list) => {
                for crl in list {
                    lint_crl(&crl, &file, cc.stale_crl, source, &key, warnings);
                    crls.push(crl);
                }
            }
            Err(e) => {
                errors.push(ConfigError::new(source, key, e));
                return None;
            }
        }
    }
    // CRLs from URLs: fetched now; refreshed while the gateway runs.
    let mut url_crls = Vec::new();
    for (j, url) in cc.crl_urls.iter().enumerate() {
        let key = format!("{path}.crl_urls[{j}]");
        match super::crl::fetch_blocking(url) {
            Ok(list) => {
                for crl in list {
                    lint_crl(&crl, std::path::Path::new(url), cc.stale_crl, source, &key, warnings);
                    url_crls.push(crl);
                }
            }
            Err(e) => match cc.stale_crl {
                StaleCrl::Refuse => {
                    errors.push(ConfigError::new(
                        source,
                        key,
                        format!("cannot fetch the CRL: {e} (with stale_crl: refuse the host does not go without it; with accept the gateway starts and keeps trying)"),
                    ));
                    return None;
                }
                StaleCrl::Accept => warnings.push(ConfigError::new(
                    source,
                    key,
                    format!("cannot fetch the CRL now: {e}; the host starts without it and keeps trying (stale_crl: accept)"),
                )),
            },
        }
    }
    if cc.crl_refresh_seconds == 0 && !cc.crl_urls.is_empty() {
        errors.push(ConfigError::new(
            source,
            format!("{path}.crl_refresh_seconds"),
            "at least 1",
        ));
        return None;
    }
    let parts = VerifierParts {
        roots: Arc::new(roots),
        provider: provider.clone(),
        file_crls: crls,
        stale: cc.stale_crl,
        mode: cc.mode,
    };
    let verifier = match parts.build(&url_crls) {
        Ok(v) => v,
        Err(e) => {
            errors.push(ConfigError::new(source, path, e));
            return None;
        }
    };
    let hints = verifier.root_hint_subjects().to_vec();
    let auth = Arc::new(ClientAuth {
        mode: cc.mode,
        truststore: ts_file.display().to_string(),
        verifier: arc_swap::ArcSwap::from_pointee(VerifierHolder(verifier)),
        hints,
        max_depth: cc.max_chain_depth,
        floor: (!floor.is_default()).then_some(floor),
        algorithms: provider.signature_verification_algorithms,
        anchors,
        parts,
    });
    if !cc.crl_urls.is_empty() {
        super::crl::spawn_refresher(
            Arc::downgrade(&auth),
            cc.crl_urls.clone(),
            std::time::Duration::from_secs(cc.crl_refresh_seconds),
            |a: &ClientAuth, crls| a.update_url_crls(crls),
        );
    }
    Some(auth)
}

/// Reads the CRLs of a file, PEM (`-----BEGIN X509 CRL-----`) or DER.
fn read_crls(file: &std::path::Path) -> Result<Vec<CertificateRevocationListDer<'static>>, String> {
    let data = std::fs::read(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    super::crl::parse_crls(&data, &file.display().to_string())
}

/// A stale CRL is a warning at load: with `stale_crl: refuse` every
/// certificate it covers is refused until it is renewed.
fn lint_crl(
    crl: &CertificateRevocationListDer<'_>,
    file: &std::path::Path,
    policy: StaleCrl,
    source: &Source,
    path: &str,
    warnings: &mut Vec<ConfigError>,
) {
    let Ok((_, c)) =
        x509_parser::revocation_list::CertificateRevocationList::from_der(crl.as_ref())
    else {
        return;
    };
    let now = now_secs();
    if let Some(next) = c.next_update() {
        if next.timestamp() < now {
            let what = match policy {
                StaleCrl::Refuse => "every client certificate its issuer signed is refused until it is renewed (stale_crl: refuse)",
                StaleCrl::Accept => "it is used anyway (stale_crl: accept)",
            };
            warnings.push(ConfigError::new(
                source,
                path,
                format!(
                    "the CRL of {} in {} was due for renewal on {}: {what}",
                    c.issuer(),
                    file.display(),
                    day(next.timestamp())
                ),
            ));
        }
    }
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn day(t: i64) -> String {
    chrono::DateTime::from_timestamp(t, 0).map_or_else(
        || t.to_string(),
        |d| d.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
    )
}

/// The truststore lints: every certificate valid now, a CA, at or above
/// the algorithm floor, and no two with one subject and different issuers
/// (which makes the chain a client gets ambiguous).
fn lint_truststore(
    certs: &[CertificateDer<'static>],
    file: &std::path::Path,
    floor: &super::floor::Floor,
    source: &Source,
    path: &str,
    errors: &mut Vec<ConfigError>,
) {
    let now = now_secs();
    let parsed: Vec<_> = certs
        .iter()
        .filter_map(|c| X509Certificate::from_der(c.as_ref()).ok().map(|(_, x)| x))
        .collect();
    for (i, c) in parsed.iter().enumerate() {
        let which = format!(
            "{}: certificate #{} ({})",
            file.display(),
            i + 1,
            c.subject()
        );
        let v = c.validity();
        if v.not_after.timestamp() < now {
            errors.push(ConfigError::new(
                source,
                path,
                format!(
                    "{which} expired on {}; remove or renew it",
                    day(v.not_after.timestamp())
                ),
            ));
        } else if v.not_before.timestamp() > now {
            errors.push(ConfigError::new(
                source,
                path,
                format!(
                    "{which} is not valid until {}",
                    day(v.not_before.timestamp())
                ),
            ));
        }
        // A v1 certificate cannot say it is a CA; webpki takes it as a root
        // (the API7 guide's `openssl x509 -req -signkey` makes such roots).
        if c.version() != X509Version::V1 {
            let is_ca = c
                .basic_constraints()
                .ok()
                .flatten()
                .is_some_and(|b| b.value.ca);
            if !is_ca {
                errors.push(ConfigError::new(
                    source,
                    path,
                    format!("{which} is not a CA certificate (no basicConstraints CA:TRUE): a truststore holds the CAs that issue client certificates, not the client certificates themselves"),
                ));
            }
        }
        if let Some(why) = floor.judge(c) {
            errors.push(ConfigError::new(
                source,
                path,
                format!("{which} is below the algorithm floor: {why}"),
            ));
        }
        for (j, d) in parsed.iter().enumerate().skip(i + 1) {
            if c.subject().as_raw() == d.subject().as_raw()
                && c.issuer().as_raw() != d.issuer().as_raw()
            {
                errors.push(ConfigError::new(
                    source,
                    path,
                    format!(
                        "{}: certificates #{} and #{} share the subject {} but have different issuers ({} and {}): a chain through either is ambiguous; keep one",
                        file.display(),
                        i + 1,
                        j + 1,
                        c.subject(),
                        c.issuer(),
                        d.issuer()
                    ),
                ));
            }
        }
    }
}

/// The server certificate must be v3 and name every host name of its
/// entry (a wildcard entry needs the same wildcard): clients check names
/// against its subjectAltName.
fn check_server_names(
    leaf: &CertificateDer<'_>,
    names: &[String],
    file: &std::path::Path,
    source: &Source,
    path: &str,
    errors: &mut Vec<ConfigError>,
) {
    use x509_parser::extensions::GeneralName;
    let Ok((_, c)) = X509Certificate::from_der(leaf.as_ref()) else {
        return;
    };
    if c.version() == X509Version::V1 {
        let first = names.first().map_or("test.com", String::as_str);
        errors.push(ConfigError::new(
            source,
            path,
            format!(
                "the certificate in {} is X.509 v1: it has no subjectAltName, and clients that check names against it (browsers, curl with rustls, Go, Java) refuse it. Make a v3 certificate: add `-extfile <(printf 'subjectAltName=DNS:{first}')` to the `openssl x509 -req` command",
                file.display()
            ),
        ));
        return;
    }
    let mut dns = Vec::new();
    let mut ips = Vec::new();
    if let Ok(Some(san)) = c.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                GeneralName::DNSName(d) => dns.push(d.to_ascii_lowercase()),
                GeneralName::IPAddress(b) => {
                    if let Ok(a) = <[u8; 4]>::try_from(*b) {
                        ips.push(std::net::IpAddr::from(a));
                    } else if let Ok(a) = <[u8; 16]>::try_from(*b) {
                        ips.push(std::net::IpAddr::from(a));
                    }
                }
                _ => {}
            }
        }
    }
    for name in names {
        let name = name.to_ascii_lowercase();
        let covered = match name.parse::<std::net::IpAddr>() {
            Ok(ip) => ips.contains(&ip),
            Err(_) if name.starts_with("*.") => dns.contains(&name),
            Err(_) => dns
                .iter()
                .any(|d| *d == name || (d.starts_with("*.") && name_matches(d, &name))),
        };
        if !covered {
            let mut have: Vec<String> = dns.clone();
            have.extend(ips.iter().map(|i| i.to_string()));
            errors.push(ConfigError::new(
                source,
                path,
                format!(
                    "the certificate in {} does not cover `{name}` (its names: {}); clients connecting to `{name}` would refuse it",
                    file.display(),
                    if have.is_empty() { "none".to_string() } else { have.join(", ") }
                ),
            ));
        }
    }
}

/// A certificate this close to its end gets a warning at load.
const EXPIRY_WARNING_DAYS: i64 = 30;

/// Checks the validity period of every certificate of a served chain: one
/// that has expired, or is not valid yet, is an error (clients would refuse
/// every handshake); one that expires within [`EXPIRY_WARNING_DAYS`] days is
/// a warning.
/// Checks that every certificate of a chain is valid now (an error) and
/// not about to expire (a warning). `peers` names who would refuse it
/// (`clients`, `upstreams`).
pub(super) fn check_validity(
    certs: &[rustls::pki_types::CertificateDer<'static>],
    file: &std::path::Path,
    peers: &str,
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
                    "{which} in {} expired on {}; {peers} refuse it: renew it",
                    file.display(),
                    day(until)
                ),
            ));
        } else if from > now {
            errors.push(ConfigError::new(
                source,
                path,
                format!(
                    "{which} in {} is not valid until {}; {peers} refuse it until then (is the clock right?)",
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
