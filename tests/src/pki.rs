//! Certificates for tests, made on the spot with rcgen, written as PEM.

use std::path::PathBuf;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::CertificateDer;

use crate::TempDir;

/// A date: year, month, day.
pub type Ymd = (i32, u8, u8);

/// A CA that signs server and client certificates.
pub struct Pki {
    ca_params: CertificateParams,
    ca_key: KeyPair,
    /// The CA certificate, PEM.
    pub ca_pem: String,
    /// The CA certificate, DER.
    pub ca_der: CertificateDer<'static>,
}

/// A certificate and its key, written to files.
pub struct Issued {
    /// PEM chain file.
    pub cert: PathBuf,
    /// PEM key file.
    pub key: PathBuf,
    /// The leaf, DER.
    pub der: CertificateDer<'static>,
}

impl Pki {
    /// A new CA named `name`.
    pub fn new(name: &str) -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("ca key");
        let cert = params.self_signed(&key).expect("ca cert");
        Pki {
            ca_pem: cert.pem(),
            ca_der: cert.der().clone(),
            ca_params: params,
            ca_key: key,
        }
    }

    /// Writes the CA certificate to `dir/<file>` and returns the path.
    pub fn write_ca(&self, dir: &TempDir, file: &str) -> PathBuf {
        dir.write(file, &self.ca_pem)
    }

    /// A server certificate for `names` (DNS names or IPs), written to
    /// `dir/<stem>.crt` and `dir/<stem>.key`.
    pub fn server(&self, dir: &TempDir, stem: &str, names: &[&str]) -> Issued {
        self.server_valid(dir, stem, names, None)
    }

    /// [`Pki::server`] valid from and until the given dates (year, month,
    /// day), e.g. an expired one.
    pub fn server_valid(
        &self,
        dir: &TempDir,
        stem: &str,
        names: &[&str],
        validity: Option<(Ymd, Ymd)>,
    ) -> Issued {
        let mut params =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .expect("server params");
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().copied().unwrap_or("server"),
        );
        if let Some(((y1, m1, d1), (y2, m2, d2))) = validity {
            params.not_before = rcgen::date_time_ymd(y1, m1, d1);
            params.not_after = rcgen::date_time_ymd(y2, m2, d2);
        }
        let key = KeyPair::generate().expect("server key");
        let issuer = Issuer::from_params(&self.ca_params, &self.ca_key);
        let cert = params.signed_by(&key, &issuer).expect("server cert");
        let chain = format!("{}{}", cert.pem(), self.ca_pem);
        Issued {
            cert: dir.write(&format!("{stem}.crt"), chain),
            key: dir.write(&format!("{stem}.key"), key.serialize_pem()),
            der: cert.der().clone(),
        }
    }

    /// A rustls root store holding this CA.
    pub fn roots(&self) -> rustls::RootCertStore {
        let mut r = rustls::RootCertStore::empty();
        r.add(self.ca_der.clone()).expect("ca is a usable root");
        r
    }
}

/// How to issue a client certificate.
pub struct ClientSpec<'a> {
    /// Its common name.
    pub cn: &'a str,
    /// Its serial number (for revocation).
    pub serial: u64,
    /// Not valid after (default: far in the future).
    pub not_after: Option<(i32, u8, u8)>,
    /// Not valid before (default: the past).
    pub not_before: Option<(i32, u8, u8)>,
    /// DNS subject alternative names (default: none).
    pub dns_names: Vec<String>,
}

impl<'a> ClientSpec<'a> {
    /// A client certificate for `cn` with serial `serial`.
    pub fn new(cn: &'a str, serial: u64) -> Self {
        ClientSpec {
            cn,
            serial,
            not_after: None,
            not_before: None,
            dns_names: Vec::new(),
        }
    }
}

impl Pki {
    /// A CA issued by this one (an intermediate).
    pub fn intermediate(&self, name: &str) -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("key");
        let issuer = Issuer::from_params(&self.ca_params, &self.ca_key);
        let cert = params.signed_by(&key, &issuer).expect("intermediate");
        Pki {
            ca_pem: cert.pem(),
            ca_der: cert.der().clone(),
            ca_params: params,
            ca_key: key,
        }
    }

    /// A client certificate (extended key usage clientAuth), written to
    /// `dir/<stem>.crt` (the leaf, then `extra_chain` PEM) and
    /// `dir/<stem>.key`.
    pub fn client(
        &self,
        dir: &TempDir,
        stem: &str,
        spec: &ClientSpec<'_>,
        extra_chain: &str,
    ) -> Issued {
        let mut params = CertificateParams::new(spec.dns_names.clone()).expect("params");
        params.distinguished_name.push(DnType::CommonName, spec.cn);
        params.serial_number = Some(rcgen::SerialNumber::from(spec.serial));
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        if let Some((y, m, d)) = spec.not_after {
            params.not_after = rcgen::date_time_ymd(y, m, d);
        }
        if let Some((y, m, d)) = spec.not_before {
            params.not_before = rcgen::date_time_ymd(y, m, d);
        }
        let key = KeyPair::generate().expect("client key");
        let issuer = Issuer::from_params(&self.ca_params, &self.ca_key);
        let cert = params.signed_by(&key, &issuer).expect("client cert");
        Issued {
            cert: dir.write(
                &format!("{stem}.crt"),
                format!("{}{extra_chain}", cert.pem()),
            ),
            key: dir.write(&format!("{stem}.key"), key.serialize_pem()),
            der: cert.der().clone(),
        }
    }

    /// A CRL of this CA revoking `serials`, valid until `next_update`
    /// (year, month, day), written to `dir/<file>` as PEM.
    pub fn crl(
        &self,
        dir: &TempDir,
        file: &str,
        serials: &[u64],
        next_update: (i32, u8, u8),
    ) -> PathBuf {
        let params = rcgen::CertificateRevocationListParams {
            this_update: rcgen::date_time_ymd(2020, 1, 1),
            next_update: rcgen::date_time_ymd(next_update.0, next_update.1, next_update.2),
            crl_number: rcgen::SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: serials
                .iter()
                .map(|s| rcgen::RevokedCertParams {
                    serial_number: rcgen::SerialNumber::from(*s),
                    revocation_time: rcgen::date_time_ymd(2021, 1, 1),
                    reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        };
        let issuer = Issuer::from_params(&self.ca_params, &self.ca_key);
        let crl = params.signed_by(&issuer).expect("crl");
        dir.write(file, crl.pem().expect("crl pem"))
    }
}

/// A rustls client config trusting `roots`, presenting `client` (a PEM
/// chain and key) when given, offering `alpn`, with session resumption on
/// (rustls' default in-memory cache).
pub fn client_config(
    roots: rustls::RootCertStore,
    client: Option<&Issued>,
    alpn: &[&str],
) -> std::sync::Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    let b = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots);
    let mut cfg = match client {
        Some(c) => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&c.cert)
                .expect("chain")
                .collect::<Result<_, _>>()
                .expect("chain");
            let key = rustls::pki_types::PrivateKeyDer::from_pem_file(&c.key).expect("key");
            // Presented as it is, unparsed: a client may send what rustls
            // itself would refuse to configure (an X.509 v1 certificate).
            let signer = rustls::crypto::ring::default_provider()
                .key_provider
                .load_private_key(key)
                .expect("signing key");
            let certified = std::sync::Arc::new(rustls::sign::CertifiedKey::new(chain, signer));
            b.with_client_cert_resolver(std::sync::Arc::new(FixedClientCert(certified)))
        }
        None => b.with_no_client_auth(),
    };
    cfg.alpn_protocols = alpn.iter().map(|a| a.as_bytes().to_vec()).collect();
    std::sync::Arc::new(cfg)
}

/// Always presents one certificate chain.
#[derive(Debug)]
struct FixedClientCert(std::sync::Arc<rustls::sign::CertifiedKey>);

impl rustls::client::ResolvesClientCert for FixedClientCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<std::sync::Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}
