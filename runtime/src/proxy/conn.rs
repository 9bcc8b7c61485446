//! What the gateway knows about a downstream connection.

use std::net::SocketAddr;

use rustls::pki_types::CertificateDer;

use crate::tls::certinfo::CertInfo;

/// A downstream connection, shared by the requests on it.
#[derive(Debug)]
pub struct ConnInfo {
    /// The client's address.
    pub client: SocketAddr,
    /// The client's IP as a header value, made once per connection for
    /// `X-Forwarded-For`.
    pub client_ip_header: http::HeaderValue,
    /// The listener's address.
    pub local: SocketAddr,
    /// The listener's index in the config.
    pub listener: usize,
    /// TLS details; `None` on plain HTTP.
    pub tls: Option<TlsInfo>,
}

/// The TLS side of a connection.
#[derive(Debug)]
pub struct TlsInfo {
    /// The SNI the client sent.
    pub sni: Option<String>,
    /// The negotiated ALPN protocol.
    pub alpn: Option<String>,
    /// `TLSv1.2` / `TLSv1.3`.
    pub version: &'static str,
    /// The index of the listener host entry chosen for the SNI.
    pub host_index: usize,
    /// The chain the client presented (DER, leaf first).
    pub client_chain: Vec<CertificateDer<'static>>,
    /// The client certificate's fields.
    pub client_cert: Option<CertInfo>,
}

impl ConnInfo {
    /// A connection from `client` accepted on `local`.
    pub fn new(
        client: SocketAddr,
        local: SocketAddr,
        listener: usize,
        tls: Option<TlsInfo>,
    ) -> Self {
        let client_ip_header = http::HeaderValue::from_str(&client.ip().to_string())
            .unwrap_or(http::HeaderValue::from_static("unknown"));
        ConnInfo {
            client,
            client_ip_header,
            local,
            listener,
            tls,
        }
    }

    /// `https` on TLS, `http` otherwise.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }
}
