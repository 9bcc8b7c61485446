//! Read-only views of the request, response and connection.
//!
//! On `wasm32` each accessor is one call into the gateway; natively the
//! views read a [`crate::testkit`] value.

use crate::ClientCertificate;

#[cfg(target_arch = "wasm32")]
use crate::bindings::gatehouse::policy::types as backend;
#[cfg(not(target_arch = "wasm32"))]
use crate::testkit as backend;
#[cfg(not(target_arch = "wasm32"))]
use crate::testkit::Accessors as _;

#[cfg(target_arch = "wasm32")]
type RequestImpl = backend::Request;
#[cfg(not(target_arch = "wasm32"))]
type RequestImpl = backend::TestRequest;
#[cfg(target_arch = "wasm32")]
type ResponseImpl = backend::Response;
#[cfg(not(target_arch = "wasm32"))]
type ResponseImpl = backend::TestResponse;
#[cfg(target_arch = "wasm32")]
type ConnectionImpl = backend::Connection;
#[cfg(not(target_arch = "wasm32"))]
type ConnectionImpl = backend::TestConnection;

/// The request being processed, with earlier policies' edits applied.
pub struct Request<'a>(&'a RequestImpl);

/// The response being processed (outbound and on-error chains).
pub struct Response<'a>(&'a ResponseImpl);

/// The downstream connection the request arrived on.
pub struct Connection<'a>(&'a ConnectionImpl);

#[cfg(target_arch = "wasm32")]
impl<'a> Request<'a> {
    pub(crate) fn wit(inner: &'a RequestImpl) -> Self {
        Request(inner)
    }
}
#[cfg(target_arch = "wasm32")]
impl<'a> Response<'a> {
    pub(crate) fn wit(inner: &'a ResponseImpl) -> Self {
        Response(inner)
    }
}
#[cfg(target_arch = "wasm32")]
impl<'a> Connection<'a> {
    pub(crate) fn wit(inner: &'a ConnectionImpl) -> Self {
        Connection(inner)
    }
}

#[cfg(not(target_arch = "wasm32"))]
impl<'a> Request<'a> {
    #[allow(dead_code)]
    pub(crate) fn wit(_: &'a crate::bindings::gatehouse::policy::types::Request) -> Self {
        unreachable!("component entry points are only called on wasm32")
    }
    /// Wraps a test request (native builds only).
    pub fn from_test(inner: &'a RequestImpl) -> Self {
        Request(inner)
    }
}
#[cfg(not(target_arch = "wasm32"))]
impl<'a> Response<'a> {
    #[allow(dead_code)]
    pub(crate) fn wit(_: &'a crate::bindings::gatehouse::policy::types::Response) -> Self {
        unreachable!("component entry points are only called on wasm32")
    }
    /// Wraps a test response (native builds only).
    pub fn from_test(inner: &'a ResponseImpl) -> Self {
        Response(inner)
    }
}
#[cfg(not(target_arch = "wasm32"))]
impl<'a> Connection<'a> {
    #[allow(dead_code)]
    pub(crate) fn wit(_: &'a crate::bindings::gatehouse::policy::types::Connection) -> Self {
        unreachable!("component entry points are only called on wasm32")
    }
    /// Wraps a test connection (native builds only).
    pub fn from_test(inner: &'a ConnectionImpl) -> Self {
        Connection(inner)
    }
}

impl Request<'_> {
    /// The method, e.g. `GET`.
    pub fn method(&self) -> String {
        self.0.method()
    }
    /// `http` or `https`.
    pub fn scheme(&self) -> String {
        self.0.scheme()
    }
    /// The authority (`:authority` or `Host`).
    pub fn authority(&self) -> String {
        self.0.authority()
    }
    /// The path without the query.
    pub fn path(&self) -> String {
        self.0.path()
    }
    /// The query string without `?`.
    pub fn query(&self) -> Option<String> {
        self.0.query()
    }
    /// The first value of a header (name matched case-insensitively).
    pub fn header(&self, name: &str) -> Option<String> {
        self.0.header(name)
    }
    /// Every value of a header, in order.
    pub fn header_all(&self, name: &str) -> Vec<String> {
        self.0.header_all(name)
    }
    /// Every header (copies all of them: prefer [`Request::header`]).
    pub fn headers(&self) -> Vec<crate::Header> {
        self.0.headers()
    }
    /// A path template parameter of the matched operation.
    pub fn path_param(&self, name: &str) -> Option<String> {
        self.0.path_param(name)
    }
    /// The API the request was routed to.
    pub fn api(&self) -> String {
        self.0.api()
    }
    /// The operation the request matched, if any.
    pub fn operation(&self) -> Option<String> {
        self.0.operation()
    }
}

impl Response<'_> {
    /// The status code.
    pub fn status(&self) -> u16 {
        self.0.status()
    }
    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<String> {
        self.0.header(name)
    }
    /// Every value of a header.
    pub fn header_all(&self, name: &str) -> Vec<String> {
        self.0.header_all(name)
    }
    /// Every header.
    pub fn headers(&self) -> Vec<crate::Header> {
        self.0.headers()
    }
}

impl Connection<'_> {
    /// The client's IP address in text form.
    pub fn client_ip(&self) -> String {
        self.0.client_ip()
    }
    /// The client's source port.
    pub fn client_port(&self) -> u16 {
        self.0.client_port()
    }
    /// The SNI server name, if TLS and sent.
    pub fn sni(&self) -> Option<String> {
        self.0.sni()
    }
    /// The negotiated ALPN protocol.
    pub fn alpn(&self) -> Option<String> {
        self.0.alpn()
    }
    /// `TLSv1.2` / `TLSv1.3`, none on plain HTTP.
    pub fn tls_version(&self) -> Option<String> {
        self.0.tls_version()
    }
    /// The client certificate, if one was presented.
    pub fn client_certificate(&self) -> Option<ClientCertificate> {
        self.0.client_certificate()
    }
    /// The presented chain, DER, leaf first.
    pub fn client_certificate_chain(&self) -> Vec<Vec<u8>> {
        self.0.client_certificate_chain()
    }

    // Field by field (contract 0.1.2): each call copies one field.

    /// Whether the client presented a certificate (nothing is parsed).
    pub fn has_client_certificate(&self) -> bool {
        self.0.has_client_certificate()
    }
    /// The subject DN, RFC 4514.
    pub fn client_cert_subject(&self) -> Option<String> {
        self.0.client_cert_subject()
    }
    /// The issuer DN, RFC 4514.
    pub fn client_cert_issuer(&self) -> Option<String> {
        self.0.client_cert_issuer()
    }
    /// The subject's first common name.
    pub fn client_cert_common_name(&self) -> Option<String> {
        self.0.client_cert_common_name()
    }
    /// The serial number, lower-case hex.
    pub fn client_cert_serial(&self) -> Option<String> {
        self.0.client_cert_serial()
    }
    /// SHA-1 of the DER certificate, lower-case hex.
    pub fn client_cert_thumbprint_sha1(&self) -> Option<String> {
        self.0.client_cert_thumbprint_sha1()
    }
    /// SHA-256 of the DER certificate, lower-case hex.
    pub fn client_cert_thumbprint_sha256(&self) -> Option<String> {
        self.0.client_cert_thumbprint_sha256()
    }
    /// Start of validity, Unix seconds.
    pub fn client_cert_not_before(&self) -> Option<i64> {
        self.0.client_cert_not_before()
    }
    /// End of validity, Unix seconds.
    pub fn client_cert_not_after(&self) -> Option<i64> {
        self.0.client_cert_not_after()
    }
    /// DNS subject alternative names.
    pub fn client_cert_dns_names(&self) -> Vec<String> {
        self.0.client_cert_dns_names()
    }
    /// URI subject alternative names.
    pub fn client_cert_uris(&self) -> Vec<String> {
        self.0.client_cert_uris()
    }
    /// IP address subject alternative names, in text form.
    pub fn client_cert_ip_addresses(&self) -> Vec<String> {
        self.0.client_cert_ip_addresses()
    }
    /// Email subject alternative names.
    pub fn client_cert_emails(&self) -> Vec<String> {
        self.0.client_cert_emails()
    }
    /// Whether the host's truststore verified the chain; none without a
    /// certificate.
    pub fn client_cert_verified(&self) -> Option<bool> {
        self.0.client_cert_verified()
    }
    /// Why the chain did not verify.
    pub fn client_cert_verify_error(&self) -> Option<String> {
        self.0.client_cert_verify_error()
    }
    /// SHA-1 of the certificate that issued the client's on the verified
    /// path (an intermediate, or the truststore CA); none unless verified.
    pub fn client_cert_issuer_thumbprint_sha1(&self) -> Option<String> {
        self.0.client_cert_issuer_thumbprint_sha1()
    }
    /// SHA-256 of that issuing certificate.
    pub fn client_cert_issuer_thumbprint_sha256(&self) -> Option<String> {
        self.0.client_cert_issuer_thumbprint_sha256()
    }
    /// The TLS host's client-certificate mode (`off`, `optional`,
    /// `required`); none on plain HTTP.
    pub fn client_cert_mode(&self) -> Option<String> {
        self.0.client_cert_mode()
    }
    /// Why the chain did not verify, as a fixed word (`unknown_ca`,
    /// `expired`, `not_yet_valid`, `revoked`, `stale_crl`, ...).
    pub fn client_cert_verify_failure(&self) -> Option<String> {
        self.0.client_cert_verify_failure()
    }
}
