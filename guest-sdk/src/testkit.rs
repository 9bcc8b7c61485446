//! Run a policy natively in `cargo test`, without a gateway.
//!
//! On native targets the SDK's views read the `Test*` values below and its
//! host services (logging, variables, clocks, expressions) are served from
//! thread-local state that a test can inspect.
//!
//! ```
//! use gatehouse_sdk::testkit::{self, TestRequest};
//! # use gatehouse_sdk::{Decision, Policy, Request, Connection};
//! # struct Allow;
//! # impl Policy for Allow { type Config = serde_json::Value;
//! #   fn new(_: serde_json::Value) -> Result<Self, String> { Ok(Allow) } }
//! let policy: Allow = testkit::build(r#"{}"#).unwrap();
//! let decision = testkit::on_request(&policy, &TestRequest::get("/orders").header("x-tenant", "a"));
//! assert!(decision.is_continue());
//! ```
//!
//! Expressions are evaluated by the gateway, not the SDK: in tests, give each
//! source text its value with [`set_expression_value`].

use std::cell::RefCell;
use std::collections::HashMap;

use crate::bindings::gatehouse::policy::expressions::Value;
use crate::{ClientCertificate, Connection, Decision, Header, Policy, Request, Response};

/// A request for tests. Build it with [`TestRequest::get`] or
/// [`TestRequest::new`] and the `header`/`query` builders.
#[derive(Clone, Debug)]
pub struct TestRequest {
    /// Method.
    pub method: String,
    /// `http` or `https`.
    pub scheme: String,
    /// Authority.
    pub authority: String,
    /// Path.
    pub path: String,
    /// Query.
    pub query: Option<String>,
    /// Headers in order (names lower case).
    pub headers: Vec<(String, String)>,
    /// Path template parameters.
    pub path_params: Vec<(String, String)>,
    /// API name.
    pub api: String,
    /// Operation name.
    pub operation: Option<String>,
}

impl TestRequest {
    /// A request with `method` and `path` on `https://example.test`.
    pub fn new(method: &str, path: &str) -> Self {
        TestRequest {
            method: method.to_string(),
            scheme: "https".into(),
            authority: "example.test".into(),
            path: path.to_string(),
            query: None,
            headers: Vec::new(),
            path_params: Vec::new(),
            api: "test".into(),
            operation: None,
        }
    }
    /// A `GET` request.
    pub fn get(path: &str) -> Self {
        Self::new("GET", path)
    }
    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers
            .push((name.to_ascii_lowercase(), value.to_string()));
        self
    }
    /// Sets the query.
    pub fn query(mut self, query: &str) -> Self {
        self.query = Some(query.to_string());
        self
    }
    /// Adds a path parameter.
    pub fn path_param(mut self, name: &str, value: &str) -> Self {
        self.path_params.push((name.to_string(), value.to_string()));
        self
    }

    pub(crate) fn method(&self) -> String {
        self.method.clone()
    }
    pub(crate) fn scheme(&self) -> String {
        self.scheme.clone()
    }
    pub(crate) fn authority(&self) -> String {
        self.authority.clone()
    }
    pub(crate) fn path(&self) -> String {
        self.path.clone()
    }
    pub(crate) fn query_(&self) -> Option<String> {
        self.query.clone()
    }
    pub(crate) fn header_(&self, name: &str) -> Option<String> {
        first(&self.headers, name)
    }
    pub(crate) fn header_all(&self, name: &str) -> Vec<String> {
        all(&self.headers, name)
    }
    pub(crate) fn headers(&self) -> Vec<Header> {
        to_headers(&self.headers)
    }
    pub(crate) fn path_param_(&self, name: &str) -> Option<String> {
        self.path_params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    }
    pub(crate) fn api(&self) -> String {
        self.api.clone()
    }
    pub(crate) fn operation(&self) -> Option<String> {
        self.operation.clone()
    }
}

/// A response for tests.
#[derive(Clone, Debug)]
pub struct TestResponse {
    /// Status.
    pub status: u16,
    /// Headers (names lower case).
    pub headers: Vec<(String, String)>,
}

impl TestResponse {
    /// A response with `status`.
    pub fn new(status: u16) -> Self {
        TestResponse {
            status,
            headers: Vec::new(),
        }
    }
    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers
            .push((name.to_ascii_lowercase(), value.to_string()));
        self
    }
    pub(crate) fn status(&self) -> u16 {
        self.status
    }
    pub(crate) fn header_(&self, name: &str) -> Option<String> {
        first(&self.headers, name)
    }
    pub(crate) fn header_all(&self, name: &str) -> Vec<String> {
        all(&self.headers, name)
    }
    pub(crate) fn headers(&self) -> Vec<Header> {
        to_headers(&self.headers)
    }
}

/// A connection for tests. Default: `203.0.113.7:50000`, TLS 1.3, `h2`,
/// SNI `example.test`, no client certificate.
#[derive(Clone, Debug)]
pub struct TestConnection {
    /// Client IP.
    pub client_ip: String,
    /// Client port.
    pub client_port: u16,
    /// SNI.
    pub sni: Option<String>,
    /// ALPN.
    pub alpn: Option<String>,
    /// TLS version.
    pub tls_version: Option<String>,
    /// Client certificate.
    pub client_certificate: Option<ClientCertificate>,
    /// Client certificate chain (DER).
    pub chain: Vec<Vec<u8>>,
    /// The verified chain's issuer thumbprints `(sha1, sha256)`, as the
    /// gateway reports them for a verified certificate.
    pub issuer_thumbprints: Option<(String, String)>,
    /// The host's client-certificate mode (`off`, `optional`,
    /// `required`); `None` for plain HTTP.
    pub client_cert_mode: Option<String>,
    /// The fixed word for why the certificate did not verify.
    pub verify_failure: Option<String>,
}

impl Default for TestConnection {
    fn default() -> Self {
        TestConnection {
            client_ip: "203.0.113.7".into(),
            client_port: 50000,
            sni: Some("example.test".into()),
            alpn: Some("h2".into()),
            tls_version: Some("TLSv1.3".into()),
            client_certificate: None,
            chain: Vec::new(),
            issuer_thumbprints: None,
            client_cert_mode: Some("optional".into()),
            verify_failure: None,
        }
    }
}

impl TestConnection {
    pub(crate) fn client_ip(&self) -> String {
        self.client_ip.clone()
    }
    pub(crate) fn client_port(&self) -> u16 {
        self.client_port
    }
    pub(crate) fn sni(&self) -> Option<String> {
        self.sni.clone()
    }
    pub(crate) fn alpn(&self) -> Option<String> {
        self.alpn.clone()
    }
    pub(crate) fn tls_version(&self) -> Option<String> {
        self.tls_version.clone()
    }
    pub(crate) fn client_certificate(&self) -> Option<ClientCertificate> {
        self.client_certificate.clone()
    }
    pub(crate) fn client_certificate_chain(&self) -> Vec<Vec<u8>> {
        self.chain.clone()
    }
    pub(crate) fn has_client_certificate(&self) -> bool {
        self.client_certificate.is_some()
    }
    fn with_cert<T>(&self, f: impl FnOnce(&ClientCertificate) -> T) -> Option<T> {
        self.client_certificate.as_ref().map(f)
    }
    pub(crate) fn client_cert_subject(&self) -> Option<String> {
        self.with_cert(|c| c.subject.clone())
    }
    pub(crate) fn client_cert_issuer(&self) -> Option<String> {
        self.with_cert(|c| c.issuer.clone())
    }
    pub(crate) fn client_cert_common_name(&self) -> Option<String> {
        self.with_cert(|c| c.common_name.clone()).flatten()
    }
    pub(crate) fn client_cert_serial(&self) -> Option<String> {
        self.with_cert(|c| c.serial.clone())
    }
    pub(crate) fn client_cert_thumbprint_sha1(&self) -> Option<String> {
        self.with_cert(|c| c.thumbprint_sha1.clone())
    }
    pub(crate) fn client_cert_thumbprint_sha256(&self) -> Option<String> {
        self.with_cert(|c| c.thumbprint_sha256.clone())
    }
    pub(crate) fn client_cert_not_before(&self) -> Option<i64> {
        self.with_cert(|c| c.not_before)
    }
    pub(crate) fn client_cert_not_after(&self) -> Option<i64> {
        self.with_cert(|c| c.not_after)
    }
    pub(crate) fn client_cert_dns_names(&self) -> Vec<String> {
        self.with_cert(|c| c.dns_names.clone()).unwrap_or_default()
    }
    pub(crate) fn client_cert_uris(&self) -> Vec<String> {
        self.with_cert(|c| c.uris.clone()).unwrap_or_default()
    }
    pub(crate) fn client_cert_ip_addresses(&self) -> Vec<String> {
        self.with_cert(|c| c.ip_addresses.clone())
            .unwrap_or_default()
    }
    pub(crate) fn client_cert_emails(&self) -> Vec<String> {
        self.with_cert(|c| c.emails.clone()).unwrap_or_default()
    }
    pub(crate) fn client_cert_verified(&self) -> Option<bool> {
        self.with_cert(|c| c.verified)
    }
    pub(crate) fn client_cert_verify_error(&self) -> Option<String> {
        self.with_cert(|c| c.verify_error.clone()).flatten()
    }
    pub(crate) fn client_cert_issuer_thumbprint_sha1(&self) -> Option<String> {
        self.verified_issuer().map(|t| t.0.clone())
    }
    pub(crate) fn client_cert_issuer_thumbprint_sha256(&self) -> Option<String> {
        self.verified_issuer().map(|t| t.1.clone())
    }
    pub(crate) fn client_cert_mode(&self) -> Option<String> {
        self.client_cert_mode.clone()
    }
    pub(crate) fn client_cert_verify_failure(&self) -> Option<String> {
        self.client_certificate.as_ref()?;
        self.verify_failure.clone()
    }
    fn verified_issuer(&self) -> Option<&(String, String)> {
        if self.client_cert_verified() == Some(true) {
            self.issuer_thumbprints.as_ref()
        } else {
            None
        }
    }
}

// The views call `query`, `header` and `path_param` on the backend; the
// builder methods of the same names take `self`, so the accessors are
// reached through this trait.
#[doc(hidden)]
pub trait Accessors {
    fn query(&self) -> Option<String>;
    fn header(&self, name: &str) -> Option<String>;
    fn path_param(&self, name: &str) -> Option<String>;
}
impl Accessors for TestRequest {
    fn query(&self) -> Option<String> {
        self.query_()
    }
    fn header(&self, name: &str) -> Option<String> {
        self.header_(name)
    }
    fn path_param(&self, name: &str) -> Option<String> {
        self.path_param_(name)
    }
}
impl Accessors for TestResponse {
    fn query(&self) -> Option<String> {
        None
    }
    fn header(&self, name: &str) -> Option<String> {
        self.header_(name)
    }
    fn path_param(&self, _: &str) -> Option<String> {
        None
    }
}

fn first(headers: &[(String, String)], name: &str) -> Option<String> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.clone())
}
fn all(headers: &[(String, String)], name: &str) -> Vec<String> {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.clone())
        .collect()
}
fn to_headers(headers: &[(String, String)]) -> Vec<Header> {
    headers
        .iter()
        .map(|(n, v)| Header {
            name: n.clone(),
            value: v.clone(),
        })
        .collect()
}

#[derive(Default)]
struct State {
    vars: HashMap<String, String>,
    logs: Vec<(String, String)>,
    traces: Vec<String>,
    expressions: HashMap<String, Value>,
    now_millis: u64,
    reads_client_certificate: bool,
    issued_by: HashMap<String, bool>,
    response_headers: Vec<(String, String)>,
}

thread_local! {
    static STATE: RefCell<State> = RefCell::new(State { now_millis: 1_700_000_000_000, ..State::default() });
}

/// Builds a policy from JSON config, as the gateway does at load time.
///
/// # Errors
///
/// The config or constructor error, exactly as the gateway would report it.
pub fn build<P: Policy>(config_json: &str) -> Result<P, String> {
    let config = crate::parse_config::<P::Config>(config_json)?;
    P::new(config)
}

/// Calls `on_request` with a default [`TestConnection`].
pub fn on_request<P: Policy>(policy: &P, req: &TestRequest) -> Decision {
    on_request_with(policy, req, &TestConnection::default())
}

/// Calls `on_request` with the given connection.
pub fn on_request_with<P: Policy>(
    policy: &P,
    req: &TestRequest,
    conn: &TestConnection,
) -> Decision {
    policy.on_request(&Request::from_test(req), &Connection::from_test(conn))
}

/// Calls `on_response` with a default [`TestConnection`].
pub fn on_response<P: Policy>(policy: &P, req: &TestRequest, resp: &TestResponse) -> Decision {
    let conn = TestConnection::default();
    policy.on_response(
        &Request::from_test(req),
        &Response::from_test(resp),
        &Connection::from_test(&conn),
    )
}

/// Calls `on_response` with the given connection.
pub fn on_response_with<P: Policy>(
    policy: &P,
    req: &TestRequest,
    resp: &TestResponse,
    conn: &TestConnection,
) -> Decision {
    policy.on_response(
        &Request::from_test(req),
        &Response::from_test(resp),
        &Connection::from_test(conn),
    )
}

/// Calls `on_complete` with a default [`TestConnection`].
pub fn on_complete<P: Policy>(policy: &P, req: &TestRequest, info: &crate::Completion) {
    let conn = TestConnection::default();
    policy.on_complete(
        &Request::from_test(req),
        &Connection::from_test(&conn),
        info,
    );
}

/// A completion record for tests: status, request and response body bytes,
/// complete, 1 ms in all, no upstream timings.
pub fn completion(status: u16, request_bytes: u64, response_bytes: u64) -> crate::Completion {
    crate::Completion {
        status,
        fault_code: None,
        request_bytes,
        response_bytes,
        complete: true,
        duration_us: 1_000,
        upstream_connect_us: None,
        upstream_first_byte_us: None,
    }
}

/// The context variables set so far on this thread.
pub fn variables_snapshot() -> HashMap<String, String> {
    STATE.with(|s| s.borrow().vars.clone())
}

/// Sets a context variable, as an earlier policy would.
pub fn set_variable(name: &str, value: &str) {
    STATE.with(|s| s.borrow_mut().vars.insert(name.into(), value.into()));
}

/// The log lines written so far on this thread, as `(level, message)`.
pub fn logs() -> Vec<(String, String)> {
    STATE.with(|s| s.borrow().logs.clone())
}

/// The trace entries written so far on this thread.
pub fn traces() -> Vec<String> {
    STATE.with(|s| s.borrow().traces.clone())
}

/// Makes expressions with this exact source evaluate to `value`.
pub fn set_expression_value(source: &str, value: Value) {
    STATE.with(|s| s.borrow_mut().expressions.insert(source.into(), value));
}

/// Whether the policy built on this thread declared that it reads the
/// client certificate ([`crate::declarations::reads_client_certificate`]).
/// [`reset`] clears it.
pub fn declared_reads_client_certificate() -> bool {
    STATE.with(|s| s.borrow().reads_client_certificate)
}

/// Makes [`crate::certificates::Issuer::issued_client_certificate`] answer
/// `issued` for the issuer imported from `pem` (default: false).
pub fn set_issued_by(pem: &str, issued: bool) {
    STATE.with(|s| s.borrow_mut().issued_by.insert(pem.trim().into(), issued));
}

/// An imported issuer in native tests: its PEM text; whether it issued the
/// client certificate is what [`set_issued_by`] said.
pub struct TestIssuer(String);

impl TestIssuer {
    pub(crate) fn from_pem(pem: &str) -> Result<Self, String> {
        if !pem.trim().starts_with("-----BEGIN CERTIFICATE-----") {
            return Err("no -----BEGIN CERTIFICATE----- block".into());
        }
        Ok(TestIssuer(pem.trim().to_string()))
    }
    pub(crate) fn subject(&self) -> String {
        String::new()
    }
    pub(crate) fn thumbprint_sha1(&self) -> String {
        String::new()
    }
    pub(crate) fn issued_client_certificate(&self) -> bool {
        STATE.with(|s| s.borrow().issued_by.get(&self.0).copied().unwrap_or(false))
    }
}

/// Sets the wall clock seen by [`crate::host::now_millis`].
pub fn set_now_millis(ms: u64) {
    STATE.with(|s| s.borrow_mut().now_millis = ms);
}

/// Clears variables, logs, traces and expression values on this thread.
pub fn reset() {
    STATE.with(|s| {
        *s.borrow_mut() = State {
            now_millis: 1_700_000_000_000,
            ..State::default()
        }
    });
}

/// An expression in native tests: compiles anything that is not empty and
/// evaluates to the value given with [`set_expression_value`].
pub struct TestExpression(String);

impl TestExpression {
    pub(crate) fn compile(source: &str) -> Result<Self, String> {
        if source.trim().is_empty() {
            return Err("empty expression".into());
        }
        Ok(TestExpression(source.to_string()))
    }
    pub(crate) fn evaluate(&self) -> Result<Value, String> {
        STATE.with(|s| {
            s.borrow().expressions.get(&self.0).cloned().ok_or_else(|| {
                format!(
                    "testkit: no value set for expression `{}` (use testkit::set_expression_value)",
                    self.0
                )
            })
        })
    }
    pub(crate) fn source(&self) -> String {
        self.0.clone()
    }
}

#[doc(hidden)]
pub mod declarations {
    use super::STATE;
    pub fn reads_client_certificate() {
        STATE.with(|s| s.borrow_mut().reads_client_certificate = true);
    }
}

#[doc(hidden)]
pub mod host {
    use super::STATE;
    use crate::host::LogLevel;

    pub fn log(level: LogLevel, message: &str) {
        let level = match level {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        };
        STATE.with(|s| {
            s.borrow_mut()
                .logs
                .push((level.to_string(), message.into()))
        });
    }
    pub fn trace_enabled() -> bool {
        true
    }
    pub fn trace(message: &str) {
        STATE.with(|s| s.borrow_mut().traces.push(message.into()));
    }
    pub fn now_millis() -> u64 {
        STATE.with(|s| s.borrow().now_millis)
    }
    pub fn monotonic_nanos() -> u64 {
        STATE.with(|s| s.borrow().now_millis.saturating_mul(1_000_000))
    }
    pub fn request_id() -> String {
        "test-request".into()
    }
    pub fn add_response_header(name: &str, value: &str) {
        super::STATE.with(|s| {
            s.borrow_mut()
                .response_headers
                .push((name.to_ascii_lowercase(), value.to_string()))
        });
    }
}

/// The headers policies added to the response on this thread
/// ([`crate::host::add_response_header`]).
pub fn response_headers() -> Vec<(String, String)> {
    STATE.with(|s| s.borrow().response_headers.clone())
}

#[doc(hidden)]
pub mod variables {
    use super::STATE;
    pub fn get(name: &str) -> Option<String> {
        STATE.with(|s| s.borrow().vars.get(name).cloned())
    }
    pub fn set(name: &str, value: &str) {
        STATE.with(|s| s.borrow_mut().vars.insert(name.into(), value.into()));
    }
    pub fn remove(name: &str) {
        STATE.with(|s| s.borrow_mut().vars.remove(name));
    }
    pub fn set_many(entries: &[(String, String)]) {
        for (k, v) in entries {
            set(k, v);
        }
    }
}

/// The signature the test doubles of [`crate::jose`] accept for
/// `signing_input`: `sig:` followed by the input. (The gateway verifies
/// real signatures; native tests exercise a policy's logic.)
pub fn fake_signature(signing_input: &[u8]) -> Vec<u8> {
    let mut s = b"sig:".to_vec();
    s.extend_from_slice(signing_input);
    s
}

fn fake_verify(
    kty: &str,
    alg: crate::jose::Algorithm,
    input: &[u8],
    sig: &[u8],
) -> Result<(), crate::jose::VerifyError> {
    use crate::jose::{Algorithm as A, VerifyError};
    let fits = match kty {
        "oct" => alg.is_hmac(),
        "RSA" => matches!(
            alg,
            A::Rs256 | A::Rs384 | A::Rs512 | A::Ps256 | A::Ps384 | A::Ps512
        ),
        "EC" => matches!(alg, A::Es256 | A::Es384 | A::Es512),
        _ => alg == A::Eddsa,
    };
    if !fits {
        return Err(VerifyError::KeyForbidsAlgorithm);
    }
    if sig == fake_signature(input).as_slice() {
        Ok(())
    } else {
        Err(VerifyError::BadSignature)
    }
}

/// A verification key in native tests: its type (`oct` from base64, `RSA`
/// from components, the `kty` of a JWK, `RSA` from PEM unless the PEM
/// says `EC`) and `kid`; it accepts [`fake_signature`].
pub struct TestKey {
    kty: String,
    kid: Option<String>,
}

impl TestKey {
    pub(crate) fn from_jwk(jwk: &str) -> Result<Self, String> {
        let v: serde_json::Value = serde_json::from_str(jwk).map_err(|e| e.to_string())?;
        Ok(TestKey {
            kty: v["kty"].as_str().ok_or("the JWK has no `kty`")?.to_string(),
            kid: v["kid"].as_str().map(str::to_string),
        })
    }
    pub(crate) fn from_pem(pem: &str) -> Result<Self, String> {
        if !pem.trim().starts_with("-----BEGIN") {
            return Err("not PEM".into());
        }
        let kty = if pem.contains("EC") { "EC" } else { "RSA" };
        Ok(TestKey {
            kty: kty.into(),
            kid: None,
        })
    }
    pub(crate) fn from_base64(text: &str) -> Result<Self, String> {
        if text.trim().is_empty() {
            return Err("the key is not base64 text".into());
        }
        Ok(TestKey {
            kty: "oct".into(),
            kid: None,
        })
    }
    pub(crate) fn from_rsa_components(_n: &str, _e: &str) -> Result<Self, String> {
        Ok(TestKey {
            kty: "RSA".into(),
            kid: None,
        })
    }
    pub(crate) fn kid(&self) -> Option<String> {
        self.kid.clone()
    }
    pub(crate) fn verify(
        &self,
        alg: crate::jose::Algorithm,
        input: &[u8],
        sig: &[u8],
    ) -> Result<(), crate::jose::VerifyError> {
        fake_verify(&self.kty, alg, input, sig)
    }
}

/// A key set in native tests: the keys [`set_key_set`] gave its URL.
pub struct TestKeySet(String);

thread_local! {
    static KEY_SETS: RefCell<HashMap<String, Vec<(String, String)>>> = RefCell::new(HashMap::new());
    static DECRYPTED: RefCell<HashMap<String, Vec<u8>>> = RefCell::new(HashMap::new());
}

/// Gives the key set at `url` its keys, as `(kid, kty)` pairs.
pub fn set_key_set(url: &str, keys: &[(&str, &str)]) {
    KEY_SETS.with(|k| {
        k.borrow_mut().insert(
            url.to_string(),
            keys.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
        )
    });
}

/// Makes every test decryption key decrypt `token` to `plaintext`.
pub fn set_decryption(token: &str, plaintext: &[u8]) {
    DECRYPTED.with(|d| d.borrow_mut().insert(token.to_string(), plaintext.to_vec()));
}

impl TestKeySet {
    pub(crate) fn open(url: &str, _options: &crate::jose::KeySetOptions) -> Result<Self, String> {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(format!("`{url}` is not an http:// or https:// URL"));
        }
        Ok(TestKeySet(url.to_string()))
    }
    pub(crate) fn issuer(&self) -> Option<String> {
        None
    }
    pub(crate) fn status(&self) -> Option<String> {
        None
    }
    pub(crate) fn generation(&self) -> u64 {
        1
    }
    pub(crate) fn verify(
        &self,
        kid: Option<&str>,
        alg: crate::jose::Algorithm,
        input: &[u8],
        sig: &[u8],
    ) -> Result<(), crate::jose::VerifyError> {
        use crate::jose::VerifyError;
        let keys = KEY_SETS.with(|k| k.borrow().get(&self.0).cloned());
        let Some(keys) = keys else {
            return Err(VerifyError::KeysUnavailable);
        };
        let mut out = Err(VerifyError::UnknownKid);
        for (k, kty) in keys.iter().filter(|(k, _)| kid.is_none_or(|w| w == k)) {
            let _ = k;
            match fake_verify(kty, alg, input, sig) {
                Ok(()) => return Ok(()),
                Err(e) => out = Err(e),
            }
        }
        out
    }
}

/// A decryption key in native tests: decrypts what [`set_decryption`] said.
pub struct TestDecryptionKey;

impl TestDecryptionKey {
    pub(crate) fn from_pem(_pem: &str) -> Result<Self, String> {
        Ok(TestDecryptionKey)
    }
    pub(crate) fn from_base64(_text: &str) -> Result<Self, String> {
        Ok(TestDecryptionKey)
    }
    pub(crate) fn from_jwk(_jwk: &str) -> Result<Self, String> {
        Ok(TestDecryptionKey)
    }
    pub(crate) fn decrypt(&self, token: &str) -> Result<Vec<u8>, String> {
        DECRYPTED
            .with(|d| d.borrow().get(token).cloned())
            .ok_or_else(|| "the token cannot be decrypted with this key".to_string())
    }
}

/// A counter in native tests: a plain count per key on this thread,
/// without windows (the gateway keeps the real ones).
pub struct TestCounter {
    name: String,
    limit: u64,
}

thread_local! {
    static COUNTS: RefCell<HashMap<String, u64>> = RefCell::new(HashMap::new());
}

/// Forgets every test counter's count on this thread.
pub fn reset_counters() {
    COUNTS.with(|c| c.borrow_mut().clear());
}

impl TestCounter {
    pub(crate) fn open(
        name: &str,
        limit: u64,
        _window: crate::counters::Window,
    ) -> Result<Self, String> {
        if limit == 0 {
            return Err("a counter's limit must be at least 1".into());
        }
        Ok(TestCounter {
            name: name.to_string(),
            limit,
        })
    }
    fn usage(&self, used: u64, admitted: bool) -> crate::counters::Usage {
        crate::counters::Usage {
            admitted,
            used,
            limit: self.limit,
            retry_after_seconds: if admitted { 0 } else { 1 },
            reservation: 0,
            unavailable: None,
        }
    }
    pub(crate) fn acquire(&self, key: &str, amount: u64) -> crate::counters::Usage {
        let k = format!("{}/{key}", self.name);
        COUNTS.with(|c| {
            let mut c = c.borrow_mut();
            let n = c.entry(k).or_insert(0);
            if *n + amount <= self.limit {
                *n += amount;
                self.usage(*n, true)
            } else {
                self.usage(*n, false)
            }
        })
    }
    pub(crate) fn release(&self, key: &str, _reservation: u64, amount: u64) {
        let k = format!("{}/{key}", self.name);
        COUNTS.with(|c| {
            if let Some(n) = c.borrow_mut().get_mut(&k) {
                *n = n.saturating_sub(amount);
            }
        });
    }
    pub(crate) fn add(&self, key: &str, amount: u64) -> crate::counters::Usage {
        let k = format!("{}/{key}", self.name);
        COUNTS.with(|c| {
            let mut c = c.borrow_mut();
            let n = c.entry(k).or_insert(0);
            *n += amount;
            self.usage(*n, *n <= self.limit)
        })
    }
    pub(crate) fn peek(&self, key: &str) -> crate::counters::Usage {
        let k = format!("{}/{key}", self.name);
        let n = COUNTS.with(|c| c.borrow().get(&k).copied().unwrap_or(0));
        self.usage(n, n <= self.limit)
    }
}
