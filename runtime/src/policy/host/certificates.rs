//! `certificates`: issuer certificates a policy imports from its config,
//! held by the host; the client certificate's signature is checked here,
//! with ring (through x509-parser), once per connection and issuer.

use std::sync::Arc;

use wasmtime::component::Resource;

use super::markers::IssuerHandle;
use super::HostState;
use crate::policy::bindings::gatehouse::policy::certificates::{Host, HostIssuer};

/// The most issuers one instance may hold at once.
const MAX_ISSUERS: usize = 64;

/// An imported issuer certificate.
#[derive(Debug)]
pub struct Imported {
    der: Vec<u8>,
    key: [u8; 32],
    subject: String,
    sha1: String,
}

impl Host for HostState {}

impl HostIssuer for HostState {
    fn from_pem(&mut self, pem: String) -> Result<Resource<IssuerHandle>, String> {
        let live = self.issuers.iter().filter(|i| i.is_some()).count();
        if live >= MAX_ISSUERS {
            self.over(|| format!("more than {MAX_ISSUERS} imported certificates"));
            return Err(format!(
                "at most {MAX_ISSUERS} certificates may be imported"
            ));
        }
        let der = parse_pem(&pem)?;
        let (_, cert) = x509_parser::parse_x509_certificate(&der)
            .map_err(|e| format!("the certificate cannot be parsed: {e}"))?;
        let imported = Imported {
            subject: crate::tls::certinfo::rfc4514(cert.subject()),
            sha1: crate::tls::certinfo::sha1_hex(&der),
            key: {
                use sha2::Digest;
                sha2::Sha256::digest(&der).into()
            },
            der,
        };
        let slot = Some(Arc::new(imported));
        let index = match self.issuers.iter().position(Option::is_none) {
            Some(i) => {
                self.issuers[i] = slot;
                i
            }
            None => {
                self.issuers.push(slot);
                self.issuers.len() - 1
            }
        };
        Ok(Resource::new_own(index as u32))
    }

    fn subject(&mut self, this: Resource<IssuerHandle>) -> String {
        self.issuer(&this)
            .map(|i| i.subject.clone())
            .unwrap_or_default()
    }

    fn thumbprint_sha1(&mut self, this: Resource<IssuerHandle>) -> String {
        self.issuer(&this)
            .map(|i| i.sha1.clone())
            .unwrap_or_default()
    }

    fn issued_client_certificate(&mut self, this: Resource<IssuerHandle>) -> bool {
        let Some(issuer) = self.issuer(&this) else {
            return false;
        };
        let Some(tls) = self.exchange.as_deref().and_then(|e| e.conn.tls.as_ref()) else {
            return false;
        };
        tls.issued_by(&issuer.der, issuer.key)
    }

    fn drop(&mut self, this: Resource<IssuerHandle>) -> wasmtime::Result<()> {
        if let Some(slot) = self.issuers.get_mut(this.rep() as usize) {
            *slot = None;
        }
        Ok(())
    }
}

impl HostState {
    fn issuer(&self, h: &Resource<IssuerHandle>) -> Option<Arc<Imported>> {
        self.issuers.get(h.rep() as usize).cloned().flatten()
    }
}

/// One PEM certificate (or bare base64 DER) to DER.
fn parse_pem(text: &str) -> Result<Vec<u8>, String> {
    use rustls::pki_types::pem::PemObject;
    let text = text.trim();
    if text.starts_with("-----BEGIN") {
        let mut certs = rustls::pki_types::CertificateDer::pem_slice_iter(text.as_bytes());
        return match certs.next() {
            Some(Ok(c)) => Ok(c.to_vec()),
            Some(Err(e)) => Err(format!("not a PEM certificate: {e:?}")),
            None => Err("no -----BEGIN CERTIFICATE----- block".into()),
        };
    }
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(text.split_whitespace().collect::<String>())
        .map_err(|_| "neither a PEM certificate nor base64 DER".to_string())
}
