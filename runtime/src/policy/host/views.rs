//! `types.request`, `types.response` and `types.connection`: accessors over
//! the [`Exchange`](super::Exchange) in the store. Only what a policy asks
//! for crosses into the component.

use http::HeaderMap;
use wasmtime::component::Resource;

use super::{ConnectionView, HostState, RequestView, ResponseView};
use crate::policy::bindings::gatehouse::policy::types::{
    ClientCertificate, Header, Host, HostConnection, HostRequest, HostResponse,
};

fn value_string(v: &http::HeaderValue) -> String {
    match v.to_str() {
        Ok(s) => s.to_string(),
        Err(_) => String::from_utf8_lossy(v.as_bytes()).into_owned(),
    }
}

fn first(map: &HeaderMap, name: &str) -> Option<String> {
    map.get(name).map(value_string)
}

fn all(map: &HeaderMap, name: &str) -> Vec<String> {
    map.get_all(name).iter().map(value_string).collect()
}

fn every(map: &HeaderMap) -> Vec<Header> {
    map.iter()
        .map(|(n, v)| Header {
            name: n.as_str().to_string(),
            value: value_string(v),
        })
        .collect()
}

impl Host for HostState {}

impl HostState {
    fn req(&self) -> Option<&http::request::Parts> {
        self.exchange.as_deref().map(|e| &e.request)
    }
    fn resp(&self) -> Option<&http::response::Parts> {
        self.exchange.as_deref().and_then(|e| e.response.as_ref())
    }
    fn conn(&self) -> Option<&crate::exchange::ConnInfo> {
        self.exchange.as_deref().map(|e| &*e.conn)
    }
    fn tls(&self) -> Option<&crate::exchange::TlsInfo> {
        self.conn()?.tls.as_ref()
    }
    fn cert(&self) -> Option<&crate::tls::certinfo::CertInfo> {
        self.tls()?.client_cert()
    }
}

impl HostRequest for HostState {
    fn method(&mut self, _: Resource<RequestView>) -> String {
        self.req()
            .map(|r| r.method.as_str().to_string())
            .unwrap_or_default()
    }
    fn scheme(&mut self, _: Resource<RequestView>) -> String {
        self.conn()
            .map(|c| c.scheme().to_string())
            .unwrap_or_default()
    }
    fn authority(&mut self, _: Resource<RequestView>) -> String {
        self.req()
            .map(crate::exchange::authority)
            .unwrap_or_default()
    }
    fn path(&mut self, _: Resource<RequestView>) -> String {
        self.req()
            .map(|r| r.uri.path().to_string())
            .unwrap_or_default()
    }
    fn query(&mut self, _: Resource<RequestView>) -> Option<String> {
        self.req().and_then(|r| r.uri.query().map(str::to_string))
    }
    fn header(&mut self, _: Resource<RequestView>, name: String) -> Option<String> {
        self.req()
            .and_then(|r| first(&r.headers, &name.to_ascii_lowercase()))
    }
    fn header_all(&mut self, _: Resource<RequestView>, name: String) -> Vec<String> {
        self.req()
            .map(|r| all(&r.headers, &name.to_ascii_lowercase()))
            .unwrap_or_default()
    }
    fn headers(&mut self, _: Resource<RequestView>) -> Vec<Header> {
        self.req().map(|r| every(&r.headers)).unwrap_or_default()
    }
    fn path_param(&mut self, _: Resource<RequestView>, name: String) -> Option<String> {
        let e = self.exchange.as_deref()?;
        e.route
            .params
            .iter()
            .find(|(n, _)| **n == *name)
            .map(|(_, v)| v.clone())
    }
    fn api(&mut self, _: Resource<RequestView>) -> String {
        self.exchange
            .as_deref()
            .map(|e| e.route.api.to_string())
            .unwrap_or_default()
    }
    fn operation(&mut self, _: Resource<RequestView>) -> Option<String> {
        self.exchange
            .as_deref()
            .and_then(|e| e.route.operation.as_deref().map(str::to_string))
    }
    fn drop(&mut self, _: Resource<RequestView>) -> wasmtime::Result<()> {
        Ok(())
    }
}

impl HostResponse for HostState {
    fn status(&mut self, _: Resource<ResponseView>) -> u16 {
        self.resp().map(|r| r.status.as_u16()).unwrap_or(0)
    }
    fn header(&mut self, _: Resource<ResponseView>, name: String) -> Option<String> {
        self.resp()
            .and_then(|r| first(&r.headers, &name.to_ascii_lowercase()))
    }
    fn header_all(&mut self, _: Resource<ResponseView>, name: String) -> Vec<String> {
        self.resp()
            .map(|r| all(&r.headers, &name.to_ascii_lowercase()))
            .unwrap_or_default()
    }
    fn headers(&mut self, _: Resource<ResponseView>) -> Vec<Header> {
        self.resp().map(|r| every(&r.headers)).unwrap_or_default()
    }
    fn drop(&mut self, _: Resource<ResponseView>) -> wasmtime::Result<()> {
        Ok(())
    }
}

impl HostConnection for HostState {
    fn client_ip(&mut self, _: Resource<ConnectionView>) -> String {
        // The text was made once, when the connection was accepted.
        self.conn()
            .map(|c| match c.client_ip_header.to_str() {
                Ok(s) => s.to_string(),
                Err(_) => c.client.ip().to_string(),
            })
            .unwrap_or_default()
    }
    fn client_port(&mut self, _: Resource<ConnectionView>) -> u16 {
        self.conn().map(|c| c.client.port()).unwrap_or(0)
    }
    fn sni(&mut self, _: Resource<ConnectionView>) -> Option<String> {
        self.conn().and_then(|c| c.tls.as_ref()?.sni.clone())
    }
    fn alpn(&mut self, _: Resource<ConnectionView>) -> Option<String> {
        self.conn().and_then(|c| c.tls.as_ref()?.alpn.clone())
    }
    fn tls_version(&mut self, _: Resource<ConnectionView>) -> Option<String> {
        self.conn()
            .and_then(|c| c.tls.as_ref().map(|t| t.version.to_string()))
    }
    fn client_certificate(&mut self, _: Resource<ConnectionView>) -> Option<ClientCertificate> {
        self.conn()
            .and_then(|c| c.tls.as_ref()?.client_cert().map(certificate))
    }
    fn client_certificate_chain(&mut self, _: Resource<ConnectionView>) -> Vec<Vec<u8>> {
        self.conn()
            .and_then(|c| {
                c.tls
                    .as_ref()
                    .map(|t| t.client_chain.iter().map(|d| d.to_vec()).collect())
            })
            .unwrap_or_default()
    }
    fn has_client_certificate(&mut self, _: Resource<ConnectionView>) -> bool {
        self.tls().is_some_and(|t| !t.client_chain.is_empty())
    }
    fn client_cert_subject(&mut self, _: Resource<ConnectionView>) -> Option<String> {
        self.cert().map(|c| c.subject.clone())
    }
    fn client_cert_issuer(&mut self, _: Resource<ConnectionView>) -> Option<String> {
        self.cert().map(|c| c.issuer.clone())
    }
    fn client_cert_common_name(&mut self, _: Resource<ConnectionView>) -> Option<String> {
        self.cert().and_then(|c| c.common_name.clone())
    }
    fn client_cert_serial(&mut self, _: Resource<ConnectionView>) -> Option<String> {
        self.cert().map(|c| c.serial.clone())
    }
    fn client_cert_thumbprint_sha1(&mut self, _: Resource<ConnectionView>) -> Option<String> {
        self.cert().map(|c| c.thumbprint_sha1.clone())
    }
    fn client_cert_thumbprint_sha256(&mut self, _: Resource<ConnectionView>) -> Option<String> {
        self.cert().map(|c| c.thumbprint_sha256.clone())
    }
    fn client_cert_not_before(&mut self, _: Resource<ConnectionView>) -> Option<i64> {
        self.cert().map(|c| c.not_before)
    }
    fn client_cert_not_after(&mut self, _: Resource<ConnectionView>) -> Option<i64> {
        self.cert().map(|c| c.not_after)
    }
    fn client_cert_dns_names(&mut self, _: Resource<ConnectionView>) -> Vec<String> {
        self.cert().map(|c| c.dns_names.clone()).unwrap_or_default()
    }
    fn client_cert_uris(&mut self, _: Resource<ConnectionView>) -> Vec<String> {
        self.cert().map(|c| c.uris.clone()).unwrap_or_default()
    }
    fn client_cert_ip_addresses(&mut self, _: Resource<ConnectionView>) -> Vec<String> {
        self.cert()
            .map(|c| c.ip_addresses.clone())
            .unwrap_or_default()
    }
    fn client_cert_emails(&mut self, _: Resource<ConnectionView>) -> Vec<String> {
        self.cert().map(|c| c.emails.clone()).unwrap_or_default()
    }
    fn client_cert_verified(&mut self, _: Resource<ConnectionView>) -> Option<bool> {
        self.cert().map(|c| c.verified)
    }
    fn client_cert_verify_error(&mut self, _: Resource<ConnectionView>) -> Option<String> {
        self.cert().and_then(|c| c.verify_error.clone())
    }
    fn client_cert_issuer_thumbprint_sha1(
        &mut self,
        _: Resource<ConnectionView>,
    ) -> Option<String> {
        self.tls()?.verified_issuer().map(|i| i.sha1.clone())
    }
    fn client_cert_issuer_thumbprint_sha256(
        &mut self,
        _: Resource<ConnectionView>,
    ) -> Option<String> {
        self.tls()?.verified_issuer().map(|i| i.sha256.clone())
    }
    fn client_cert_mode(&mut self, _: Resource<ConnectionView>) -> Option<String> {
        self.tls().map(|t| t.client_cert_mode().to_string())
    }
    fn client_cert_verify_failure(&mut self, _: Resource<ConnectionView>) -> Option<String> {
        self.cert()
            .and_then(|c| c.verify_failure)
            .map(str::to_string)
    }
    fn drop(&mut self, _: Resource<ConnectionView>) -> wasmtime::Result<()> {
        Ok(())
    }
}

/// The WIT record of a client certificate.
fn certificate(c: &crate::tls::certinfo::CertInfo) -> ClientCertificate {
    ClientCertificate {
        subject: c.subject.clone(),
        issuer: c.issuer.clone(),
        common_name: c.common_name.clone(),
        serial: c.serial.clone(),
        thumbprint_sha1: c.thumbprint_sha1.clone(),
        thumbprint_sha256: c.thumbprint_sha256.clone(),
        not_before: c.not_before,
        not_after: c.not_after,
        dns_names: c.dns_names.clone(),
        uris: c.uris.clone(),
        ip_addresses: c.ip_addresses.clone(),
        emails: c.emails.clone(),
        verified: c.verified,
        verify_error: c.verify_error.clone(),
    }
}
