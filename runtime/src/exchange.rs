//! What the gateway knows about one request and the connection it came on:
//! the data the pipeline, the policy host and the completion phase share.
//!
//! - [`ConnInfo`]: the client connection (address, listener, TLS facts).
//! - [`Exchange`]: one request on its way through the chains — moved into
//!   a policy instance's store for a call and back out, so host functions
//!   read it without copies or locks.
//! - [`RequestId`], [`RouteInfo`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use rustls::pki_types::CertificateDer;

use crate::observe::trace::SharedTrace;
use crate::tls::certinfo::CertInfo;
use crate::tls::server::TlsListener;

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
    /// The listener's name.
    pub listener: Arc<str>,
    /// Whether the peer is a trusted proxy of the listener
    /// (`trust_forwarded_from`): its forwarding headers are kept.
    pub trusted_forwarder: bool,
    /// TLS details; `None` on plain HTTP.
    pub tls: Option<TlsInfo>,
    /// Set when a response goes out before the request body was all read:
    /// when the connection closes it first reads (and drops) what the
    /// client still sends, for a while, so the client gets to read the
    /// response instead of a reset.
    pub linger: Arc<std::sync::atomic::AtomicBool>,
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
    /// The listener's TLS host table as it was when the connection was
    /// accepted: a reload does not change the hosts of an open connection.
    pub table: Arc<TlsListener>,
    /// The index of the host entry chosen for the SNI in `table`.
    pub host_index: usize,
    /// How long the handshake took, in microseconds.
    pub handshake_us: u64,
    /// The chain the client presented (DER, leaf first).
    pub client_chain: Vec<CertificateDer<'static>>,
    /// The client certificate's fields, parsed (and, on an `optional` host,
    /// verified) the first time something reads them: a connection whose
    /// requests never look at the certificate pays nothing for it.
    pub client_cert_cache: std::sync::OnceLock<Option<CertInfo>>,
    /// The verified chain's issuer of the client certificate, found the
    /// first time something asks.
    pub issuer_cache: std::sync::OnceLock<Option<crate::tls::server::IssuerPrints>>,
    /// Issuers a policy asked about (`certificates.issuer`), by the
    /// SHA-256 of their DER: whether they issued the client certificate.
    /// Checked once per connection and issuer.
    pub issued_by_cache: std::sync::Mutex<Vec<([u8; 32], bool)>>,
}

impl TlsInfo {
    /// The client certificate's fields, if one was presented. `required`
    /// hosts verified the chain in the handshake; `optional` ones verify it
    /// here, once per connection.
    pub fn client_cert(&self) -> Option<&CertInfo> {
        self.client_cert_cache
            .get_or_init(|| {
                let leaf = self.client_chain.first()?;
                let auth = self
                    .table
                    .hosts
                    .get(self.host_index)
                    .and_then(|h| h.client_auth.as_deref());
                let failure = match auth {
                    Some(a) if a.mode == crate::config::ClientCertMode::Optional => {
                        a.check(&self.client_chain)
                    }
                    Some(_) => None,
                    None => Some((
                        "the host does not ask for client certificates".to_string(),
                        "not_asked",
                    )),
                };
                let (error, word) = failure.map_or((None, None), |(e, w)| (Some(e), Some(w)));
                let mut info = CertInfo::parse(leaf.as_ref(), error.is_none(), error).ok()?;
                info.verify_failure = word;
                Some(info)
            })
            .as_ref()
    }
}

impl TlsInfo {
    /// The host's client-certificate mode: `off`, `optional`, `required`.
    pub fn client_cert_mode(&self) -> &'static str {
        match self
            .table
            .hosts
            .get(self.host_index)
            .and_then(|h| h.client_auth.as_deref())
            .map(|a| a.mode)
        {
            Some(crate::config::ClientCertMode::Required) => "required",
            Some(crate::config::ClientCertMode::Optional) => "optional",
            _ => "off",
        }
    }

    /// Whether `issuer` (its DER and the SHA-256 of it) issued the client
    /// certificate: names chain and the signature verifies. Cached per
    /// connection.
    pub fn issued_by(&self, issuer_der: &[u8], key: [u8; 32]) -> bool {
        let Some(leaf) = self.client_chain.first() else {
            return false;
        };
        if let Ok(cache) = self.issued_by_cache.lock() {
            if let Some((_, v)) = cache.iter().find(|(k, _)| *k == key) {
                return *v;
            }
        }
        let v = crate::tls::certinfo::issued_by(leaf.as_ref(), issuer_der);
        if let Ok(mut cache) = self.issued_by_cache.lock() {
            if cache.len() < 16 {
                cache.push((key, v));
            }
        }
        v
    }

    /// The thumbprints of the certificate that issued the client's
    /// certificate on the path the host's truststore verified; `None`
    /// without a certificate or when it does not verify. Worked out once
    /// per connection, when first asked.
    pub fn verified_issuer(&self) -> Option<&crate::tls::server::IssuerPrints> {
        self.issuer_cache
            .get_or_init(|| {
                if !self.client_cert()?.verified {
                    return None;
                }
                self.table
                    .hosts
                    .get(self.host_index)?
                    .client_auth
                    .as_deref()?
                    .verified_issuer(&self.client_chain)
            })
            .as_ref()
    }
}

impl ConnInfo {
    /// A connection from `client` accepted on `local` by `listener`.
    pub fn new(
        client: SocketAddr,
        local: SocketAddr,
        listener: Arc<str>,
        tls: Option<TlsInfo>,
    ) -> Self {
        let client_ip_header = http::HeaderValue::from_str(&client.ip().to_string())
            .unwrap_or(http::HeaderValue::from_static("unknown"));
        ConnInfo {
            client,
            client_ip_header,
            local,
            listener,
            trusted_forwarder: false,
            tls,
            linger: Arc::default(),
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

/// The request's authority: from the URI (HTTP/2 `:authority`, absolute
/// form) or the `Host` header.
pub fn authority(r: &http::request::Parts) -> String {
    if let Some(a) = r.uri.authority() {
        return a.as_str().to_string();
    }
    r.headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
        .to_string()
}

/// Everything the pipeline knows about one request, moved into the store of
/// the policy instance being called (and back out afterwards).
pub struct Exchange {
    /// The request head, with earlier policies' edits applied.
    pub request: http::request::Parts,
    /// The response head, during outbound and on-error chains.
    pub response: Option<http::response::Parts>,
    /// The downstream connection.
    pub conn: Arc<ConnInfo>,
    /// Context variables.
    pub vars: BTreeMap<String, String>,
    /// The route the request matched.
    pub route: RouteInfo,
    /// The request id (also the `x-request-id` response header).
    pub request_id: RequestId,
    /// When the request arrived.
    pub started: Instant,
    /// The request's trace, when the client asked for one with the trace
    /// key.
    pub trace: Option<SharedTrace>,
    /// Set by a key set that met an unknown `kid` and asked for a refetch
    /// the request may wait for (see [`crate::jose::keyset`]).
    pub refetch: Option<Box<crate::jose::keyset::PendingRefetch>>,
    /// Counter questions for a remote store, and their answers (see
    /// [`crate::counters::redis::RemoteCounts`]).
    pub remote_counts: Option<Box<crate::counters::redis::RemoteCounts>>,
    /// Headers policies asked to add to the response the client is sent
    /// (`host.add-response-header`), appended at the end.
    pub response_headers: Vec<(http::HeaderName, http::HeaderValue)>,
}

impl Exchange {
    /// Whether the current call stopped at a counter question for a remote
    /// store: its later writes are ignored, since it is called again.
    pub fn suspended(&self) -> bool {
        self.remote_counts
            .as_ref()
            .is_some_and(|r| r.pending.is_some())
    }

    /// A fresh exchange for a request head.
    pub fn new(
        request: http::request::Parts,
        conn: Arc<ConnInfo>,
        request_id: RequestId,
        started: Instant,
    ) -> Self {
        Exchange {
            request,
            response: None,
            conn,
            vars: BTreeMap::new(),
            route: RouteInfo::default(),
            request_id,
            started,
            trace: None,
            refetch: None,
            remote_counts: None,
            response_headers: Vec::new(),
        }
    }

    /// Adds a record to the trace, if the request is traced; `data` is only
    /// built then.
    pub fn trace(&self, source: &'static str, data: impl FnOnce() -> serde_json::Value) {
        if let Some(t) = &self.trace {
            if let Ok(mut t) = t.lock() {
                t.record(source, data());
            }
        }
    }
}

/// A request id: 16 lower-case hex digits, kept as a header value so that
/// sending it (upstream, to the client) copies nothing.
#[derive(Clone, Debug)]
pub struct RequestId(http::HeaderValue);

impl RequestId {
    /// A fresh random id.
    pub fn new() -> Self {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let n = fastrand::u64(..);
        let mut buf = [0u8; 16];
        for (i, b) in buf.iter_mut().enumerate() {
            *b = HEX[((n >> (60 - 4 * i)) & 0xf) as usize];
        }
        RequestId(
            http::HeaderValue::from_bytes(&buf)
                .unwrap_or(http::HeaderValue::from_static("0000000000000000")),
        )
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        self.0.to_str().unwrap_or("")
    }

    /// The id as a header value (a cheap reference-counted clone).
    pub fn header(&self) -> http::HeaderValue {
        self.0.clone()
    }
}

impl Default for RequestId {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::ops::Deref for RequestId {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

/// The route a request matched.
#[derive(Clone, Debug, Default)]
pub struct RouteInfo {
    /// The API's name (empty when none matched).
    pub api: Arc<str>,
    /// The operation's name, if one matched.
    pub operation: Option<Arc<str>>,
    /// Path template parameters.
    pub params: Vec<(Arc<str>, String)>,
}
