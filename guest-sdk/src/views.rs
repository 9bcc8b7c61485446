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
}
