//! TLS to upstreams.

use std::sync::Arc;

use rustls::ClientConfig;

use super::pem;
use crate::config::{ConfigError, Source, UpstreamTls};

/// Builds the client config of an upstream: its truststore (or the system
/// roots).
pub fn build(
    tls: Option<&UpstreamTls>,
    source: &Source,
    path: &str,
    errors: &mut Vec<ConfigError>,
) -> Option<Arc<ClientConfig>> {
    let roots = match tls.and_then(|t| t.truststore.as_ref()) {
        Some(p) => match pem::root_store(&source.resolve(p)) {
            Ok(r) => r,
            Err(e) => {
                errors.push(ConfigError::new(
                    source,
                    format!("{path}.tls.truststore"),
                    e,
                ));
                return None;
            }
        },
        None => {
            let mut roots = rustls::RootCertStore::empty();
            let native = rustls_native_certs::load_native_certs();
            for c in native.certs {
                let _ = roots.add(c);
            }
            roots
        }
    };
    let builder = match ClientConfig::builder_with_provider(super::provider())
        .with_safe_default_protocol_versions()
    {
        Ok(b) => b,
        Err(e) => {
            errors.push(ConfigError::new(
                source,
                format!("{path}.tls"),
                format!("tls setup failed: {e}"),
            ));
            return None;
        }
    };
    // The gateway speaks HTTP/1.1 to upstreams.
    let mut config = builder.with_root_certificates(roots).with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Some(Arc::new(config))
}
