//! PEM files: certificate chains, private keys, CA bundles. Every error
//! names the file and says what was expected.

use std::path::Path;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Reads a PEM certificate chain (leaf first).
///
/// # Errors
///
/// The file cannot be read, is not PEM, or holds no certificate.
pub fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let data = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(&data).collect();
    let certs = certs.map_err(|e| {
        format!(
            "{} is not a valid PEM certificate file: {e:?}",
            path.display()
        )
    })?;
    if certs.is_empty() {
        return Err(format!(
            "{} holds no PEM certificate (expected -----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    for (i, c) in certs.iter().enumerate() {
        if let Err(e) = x509_parser::parse_x509_certificate(c.as_ref()) {
            return Err(format!(
                "{}: certificate #{} cannot be parsed: {e}",
                path.display(),
                i + 1
            ));
        }
    }
    Ok(certs)
}

/// Reads a PEM private key (PKCS#8, PKCS#1 or SEC1).
///
/// # Errors
///
/// The file cannot be read or holds no private key.
pub fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let data = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    PrivateKeyDer::from_pem_slice(&data).map_err(|e| {
        format!(
            "{} holds no usable PEM private key (PKCS#8, PKCS#1 or SEC1): {e:?}",
            path.display()
        )
    })
}

/// Reads a PEM bundle of CA certificates into a root store.
///
/// # Errors
///
/// The file cannot be read, holds no certificate, or one is not a usable
/// trust anchor.
pub fn root_store(path: &Path) -> Result<rustls::RootCertStore, String> {
    let certs = certificates(path)?;
    let mut store = rustls::RootCertStore::empty();
    for (i, c) in certs.into_iter().enumerate() {
        store.add(c).map_err(|e| {
            format!(
                "{}: certificate #{} is not a usable CA: {e}",
                path.display(),
                i + 1
            )
        })?;
    }
    Ok(store)
}
