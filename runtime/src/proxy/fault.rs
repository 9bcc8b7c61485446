//! Faults: every refusal the gateway sends is an RFC 9457 problem document
//! (`application/problem+json`), built here and only here.
//!
//! ```json
//! {"code":"route.not-found","detail":"no API serves GET /nope on example.test",
//!  "request_id":"5f0c6a1e2b9d4c3a","status":404,"title":"No route",
//!  "type":"urn:gatehouse:fault:route.not-found"}
//! ```
//!
//! `code` is stable and documented (docs/FAULTS.md lists every code the
//! gateway itself emits; policies add `policy.<name>.<reason>`). The
//! request id is also the `x-request-id` response header.

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::StatusCode;

use super::body::{full, Body};
use crate::policy::PolicyError;

/// Who made a fault: the gateway, a policy that refused, or a policy that
/// failed. An on-error chain that refuses replaces the fault; one that
/// fails is logged and the original fault is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// The gateway refused (routing, limits, upstream).
    Gateway,
    /// A policy's `deny` decision.
    Denied,
    /// A policy call failed (trap, deadline, memory, no instance) or
    /// returned something the gateway cannot send.
    PolicyFailure,
}

/// A refusal, before it is rendered.
#[derive(Clone, Debug)]
pub struct Fault {
    /// Who made it.
    pub kind: FaultKind,
    /// HTTP status.
    pub status: StatusCode,
    /// Stable code, e.g. `route.not-found`.
    pub code: String,
    /// Fixed summary.
    pub title: String,
    /// What happened on this request.
    pub detail: String,
    /// Extra headers (e.g. `allow`, `retry-after`).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// What the client is not told: the full story for the log and the
    /// trace (addresses, CA names, the chain of causes).
    pub internal: Option<Box<Internal>>,
}

/// The part of a fault that stays inside the gateway.
#[derive(Clone, Debug)]
pub struct Internal {
    /// The detail for the log and the trace.
    pub detail: String,
    /// Extra trace fields (`null` for none).
    pub trace: serde_json::Value,
}

/// Every code the gateway itself emits, with its status and title.
pub mod codes {
    /// No API matches the host and path.
    pub const ROUTE_NOT_FOUND: &str = "route.not-found";
    /// The API has operations, none for this method.
    pub const ROUTE_METHOD_NOT_ALLOWED: &str = "route.method-not-allowed";
    /// The Host/:authority names a host the TLS connection was not made for.
    pub const ROUTE_MISDIRECTED: &str = "route.misdirected";
    /// The path has `;` parameters and the API does not strip them.
    pub const REQUEST_PATH_PARAMETERS: &str = "request.path-parameters";
    /// The path has a bad percent-encoding or an encoded `/` or `\`.
    pub const REQUEST_INVALID_PATH: &str = "request.invalid-path";
    /// Several `Host` headers, none on HTTP/1.1, or an invalid authority.
    pub const REQUEST_INVALID_HOST: &str = "request.invalid-host";
    /// `CONNECT` or `TRACE`, which the gateway does not serve.
    pub const REQUEST_METHOD_NOT_SUPPORTED: &str = "request.method-not-supported";
    /// The request head is larger than `limits.max_request_header_bytes`,
    /// or has more fields than `limits.max_request_headers`.
    pub const REQUEST_HEADERS_TOO_LARGE: &str = "request.headers-too-large";
    /// The request body is larger than `limits.max_request_body_bytes`.
    pub const REQUEST_BODY_TOO_LARGE: &str = "request.body-too-large";
    /// The request body stalled for `limits.request_body_timeout_ms`.
    pub const REQUEST_BODY_TIMEOUT: &str = "request.body-timeout";
    /// The client closed the connection (or broke the framing) before its
    /// request body was complete; logged, the client is gone.
    pub const REQUEST_ABORTED: &str = "request.aborted";
    /// The upstream could not be reached or broke the exchange.
    pub const UPSTREAM_UNREACHABLE: &str = "upstream.unreachable";
    /// The upstream did not send a response head in time.
    pub const UPSTREAM_TIMEOUT: &str = "upstream.timeout";
    /// 503: the upstream refused the TCP connection. (TLS handshake
    /// failures have codes of their own, `upstream.tls.*`, made by
    /// [`crate::tls::client::TlsCause::code`].)
    pub const UPSTREAM_REFUSED: &str = "upstream.refused";
    /// 503: the upstream's `max_connections` are all open and none came
    /// free within its connect timeout.
    pub const UPSTREAM_POOL_EXHAUSTED: &str = "upstream.pool-exhausted";
    /// 502: an upstream with `protocol: http2` did not agree to h2.
    pub const UPSTREAM_NO_HTTP2: &str = "upstream.no-http2";
    /// 504: no connection to the upstream within its connect timeout.
    pub const UPSTREAM_CONNECT_TIMEOUT: &str = "upstream.connect-timeout";
    /// A policy call ran past its deadline.
    pub const POLICY_TIMEOUT: &str = "policy.timeout";
    /// A policy instance exceeded its memory cap.
    pub const POLICY_MEMORY: &str = "policy.memory";
    /// A policy trapped (panic, unreachable, ...).
    pub const POLICY_TRAP: &str = "policy.trap";
    /// No policy instance could be created.
    pub const POLICY_UNAVAILABLE: &str = "policy.unavailable";
    /// A policy asked the host for more than a cap allows (edits, bodies,
    /// fault text, variables, expressions).
    pub const POLICY_LIMIT: &str = "policy.limit";
    /// A policy returned something the gateway cannot send (bad status or
    /// header).
    pub const POLICY_INVALID_DECISION: &str = "policy.invalid-decision";
}

impl Fault {
    /// A fault with no extra headers.
    pub fn new(status: StatusCode, code: &str, title: &str, detail: impl Into<String>) -> Self {
        Fault {
            kind: FaultKind::Gateway,
            status,
            code: code.to_string(),
            title: title.to_string(),
            detail: detail.into(),
            headers: Vec::new(),
            internal: None,
        }
    }

    /// The same fault with a detail for the log and trace only.
    pub fn with_internal(mut self, detail: String, trace: serde_json::Value) -> Self {
        self.internal = Some(Box::new(Internal { detail, trace }));
        self
    }

    /// The detail to log: the internal one when there is one.
    pub fn log_detail(&self) -> &str {
        self.internal.as_ref().map_or(&self.detail, |i| &i.detail)
    }

    /// 404: no route.
    pub fn not_found(method: &http::Method, path: &str, host: &str) -> Self {
        Fault::new(
            StatusCode::NOT_FOUND,
            codes::ROUTE_NOT_FOUND,
            "No route",
            format!("no API serves {method} {path} on {host}"),
        )
    }

    /// 405 with `Allow`.
    pub fn method_not_allowed(method: &http::Method, path: &str, allow: &[String]) -> Self {
        let mut f = Fault::new(
            StatusCode::METHOD_NOT_ALLOWED,
            codes::ROUTE_METHOD_NOT_ALLOWED,
            "Method not allowed",
            format!(
                "{path} does not accept {method}; allowed: {}",
                allow.join(", ")
            ),
        );
        if let Ok(v) = HeaderValue::from_str(&allow.join(", ")) {
            f.headers.push((header::ALLOW, v));
        }
        f
    }

    /// 421: the authority belongs to another TLS host.
    pub fn misdirected(host: &str, sni: Option<&str>) -> Self {
        Fault::new(
            StatusCode::MISDIRECTED_REQUEST,
            codes::ROUTE_MISDIRECTED,
            "Misdirected request",
            format!(
                "the request is for `{host}` but the TLS connection was made for `{}`; open a new connection for this host",
                sni.unwrap_or("(no SNI)")
            ),
        )
    }

    /// 431.
    pub fn headers_too_large(size: usize, limit: usize) -> Self {
        Fault::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            codes::REQUEST_HEADERS_TOO_LARGE,
            "Request header fields too large",
            format!("the request head is {size} bytes; the limit is {limit}"),
        )
    }

    /// 400: `;` parameters in a path no API accepts them for.
    pub fn path_parameters() -> Self {
        Fault::new(
            StatusCode::BAD_REQUEST,
            codes::REQUEST_PATH_PARAMETERS,
            "Path parameters not accepted",
            "the path has `;` parameters, which this API does not accept (upstreams disagree on what they mean)",
        )
    }

    /// 413: the request body is larger than the limit (`declared` when its
    /// length said so).
    pub fn body_too_large(declared: Option<u64>, limit: u64) -> Self {
        Fault::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            codes::REQUEST_BODY_TOO_LARGE,
            "Request body too large",
            match declared {
                Some(n) => format!("the request body is {n} bytes; the limit is {limit}"),
                None => format!("the request body passed the limit of {limit} bytes"),
            },
        )
    }

    /// 408: the request body stalled.
    pub fn body_timeout(ms: u64) -> Self {
        Fault::new(
            StatusCode::REQUEST_TIMEOUT,
            codes::REQUEST_BODY_TIMEOUT,
            "Request body timeout",
            format!("no part of the request body came for {ms} ms"),
        )
    }

    /// 400: the client stopped sending its request body.
    pub fn request_aborted() -> Self {
        Fault::new(
            StatusCode::BAD_REQUEST,
            codes::REQUEST_ABORTED,
            "Request aborted",
            "the client closed the connection before its request body was complete",
        )
    }

    /// 502.
    pub fn bad_gateway(code: &str, detail: impl Into<String>) -> Self {
        Fault::new(StatusCode::BAD_GATEWAY, code, "Bad gateway", detail)
    }

    /// 504.
    pub fn gateway_timeout(upstream: &str, ms: u64) -> Self {
        Fault::new(
            StatusCode::GATEWAY_TIMEOUT,
            codes::UPSTREAM_TIMEOUT,
            "Gateway timeout",
            format!("upstream `{upstream}` sent no response within {ms} ms"),
        )
    }

    /// 500 (or 503) for a failed policy call.
    pub fn policy_failed(e: &PolicyError) -> Self {
        let (status, code, title) = match e {
            PolicyError::Timeout { .. } => (
                StatusCode::INTERNAL_SERVER_ERROR,
                codes::POLICY_TIMEOUT,
                "Policy timed out",
            ),
            PolicyError::Memory { .. } => (
                StatusCode::INTERNAL_SERVER_ERROR,
                codes::POLICY_MEMORY,
                "Policy ran out of memory",
            ),
            PolicyError::Trap { .. } => (
                StatusCode::INTERNAL_SERVER_ERROR,
                codes::POLICY_TRAP,
                "Policy failed",
            ),
            PolicyError::Unavailable { .. } => (
                StatusCode::SERVICE_UNAVAILABLE,
                codes::POLICY_UNAVAILABLE,
                "Policy unavailable",
            ),
            PolicyError::Limit { .. } => (
                StatusCode::INTERNAL_SERVER_ERROR,
                codes::POLICY_LIMIT,
                "Policy over a limit",
            ),
        };
        // The detail names the policy, not the trap's internals.
        let policy = match e {
            PolicyError::Timeout { policy, .. }
            | PolicyError::Memory { policy, .. }
            | PolicyError::Trap { policy, .. }
            | PolicyError::Unavailable { policy, .. }
            | PolicyError::Limit { policy, .. } => policy.clone(),
        };
        let mut f = Fault::new(
            status,
            code,
            title,
            format!(
                "policy `{policy}` failed on this request; see the gateway log for the request id"
            ),
        );
        f.kind = FaultKind::PolicyFailure;
        f
    }

    /// 500: a policy's decision went over a host-side cap.
    pub fn policy_limit(policy: &str, what: impl std::fmt::Display) -> Self {
        let mut f = Fault::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            codes::POLICY_LIMIT,
            "Policy over a limit",
            format!(
                "policy `{policy}` failed on this request; see the gateway log for the request id"
            ),
        );
        tracing::warn!(policy, "{what}");
        f.kind = FaultKind::PolicyFailure;
        f
    }

    /// 500: a policy returned something unusable.
    pub fn invalid_decision(policy: &str, why: impl std::fmt::Display) -> Self {
        let mut f = Fault::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            codes::POLICY_INVALID_DECISION,
            "Policy returned an invalid decision",
            format!("policy `{policy}`: {why}"),
        );
        f.kind = FaultKind::PolicyFailure;
        f
    }

    /// From a policy's `deny` decision. An out-of-range status or a bad
    /// header becomes an invalid-decision fault.
    pub fn from_policy(policy: &str, f: crate::policy::bindings::Fault) -> Self {
        let status = match StatusCode::from_u16(f.status) {
            Ok(s) if s.is_client_error() || s.is_server_error() => s,
            _ => {
                return Fault::invalid_decision(
                    policy,
                    format!("fault status {} is not 400..=599", f.status),
                )
            }
        };
        let mut headers = Vec::with_capacity(f.headers.len());
        for h in f.headers {
            match (
                HeaderName::from_bytes(h.name.as_bytes()),
                HeaderValue::from_bytes(h.value.as_bytes()),
            ) {
                // The gateway frames the fault itself.
                (Ok(n), Ok(_)) if super::headers::is_reserved_for_framing(&n) => {}
                (Ok(n), Ok(v)) => headers.push((n, v)),
                _ => {
                    return Fault::invalid_decision(
                        policy,
                        format!("fault header `{}` is not valid", h.name),
                    )
                }
            }
        }
        Fault {
            kind: FaultKind::Denied,
            status,
            code: f.code,
            title: f.title,
            detail: f.detail,
            headers,
            internal: None,
        }
    }

    /// The problem document.
    pub fn body(&self, request_id: &str) -> Bytes {
        let doc = serde_json::json!({
            "type": format!("urn:gatehouse:fault:{}", self.code),
            "title": self.title,
            "status": self.status.as_u16(),
            "detail": self.detail,
            "code": self.code,
            "request_id": request_id,
        });
        Bytes::from(doc.to_string())
    }

    /// The complete response.
    pub fn into_response(self, request_id: &str) -> http::Response<Body> {
        let body = self.body(request_id);
        let mut resp = http::Response::new(full(body));
        *resp.status_mut() = self.status;
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        for (n, v) in self.headers {
            if !super::headers::is_reserved_for_framing(&n) {
                // A fault's headers are capped when the policy decides; a
                // full map drops the rest rather than panic.
                let _ = h.try_append(n, v);
            }
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problem_document_shape() {
        let f = Fault::not_found(&http::Method::GET, "/x", "a.test");
        let v: serde_json::Value = serde_json::from_slice(&f.body("rid")).unwrap();
        assert_eq!(v["status"], 404);
        assert_eq!(v["code"], "route.not-found");
        assert_eq!(v["type"], "urn:gatehouse:fault:route.not-found");
        assert_eq!(v["request_id"], "rid");
        assert_eq!(v["detail"], "no API serves GET /x on a.test");
    }

    #[test]
    fn policy_fault_with_bad_status_is_invalid_decision() {
        let f = Fault::from_policy(
            "p",
            crate::policy::bindings::Fault {
                status: 200,
                code: "x".into(),
                title: "t".into(),
                detail: "d".into(),
                headers: vec![],
            },
        );
        assert_eq!(f.code, codes::POLICY_INVALID_DECISION);
        assert_eq!(f.status, StatusCode::INTERNAL_SERVER_ERROR);
    }
}
