//! The request pipeline: one function per stage, in the order a request
//! meets them.
//!
//! ```text
//! normalise (400/501) -> limits (431) -> SNI/Host binding (421)
//!   -> route (404/405)
//!   -> inbound chain -> upstream (502/504) -> outbound chain -> client
//! any fault ------> on-error chain -> problem+json fault
//! ```
//!
//! The request body is never read here: it streams from the client to the
//! upstream, and the upstream's body streams back, while policies see only
//! heads.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use http::header::{HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use hyper::body::Incoming;

use super::body::{boxed, full, Body};
use super::conn::ConnInfo;
use super::fault::Fault;
use super::headers;
use crate::gateway::{Chain, Shared};
use crate::policy::bindings::{Decision, HeaderEdit, ResponseSpec};
use crate::policy::{Exchange, PolicyPool, RequestId, RouteInfo};

static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Handles one request; never fails (every failure is a fault response).
pub async fn handle(
    shared: Arc<Shared>,
    conn: Arc<ConnInfo>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let started = Instant::now();
    let request_id = RequestId::new();
    // The access log line needs the method and path after the request is
    // consumed: keep them only when the line will be written.
    let access = tracing::enabled!(target: "gatehouse::access", tracing::Level::INFO)
        .then(|| (req.method().clone(), req.uri().path().to_string()));
    let mut resp = process(&shared, conn, req, request_id.clone(), started).await;
    resp.headers_mut()
        .insert(X_REQUEST_ID.clone(), request_id.header());
    if let Some((method, path)) = access {
        tracing::info!(
            target: "gatehouse::access",
            request_id = %request_id,
            method = %method,
            path = %path,
            status = resp.status().as_u16(),
            elapsed_us = started.elapsed().as_micros() as u64,
        );
    }
    Ok(resp)
}

/// What the inbound chain decided.
pub enum Inbound {
    /// Go to the upstream.
    Forward(Box<Exchange>),
    /// Answer now (return-response).
    Respond(Response<Body>),
    /// Refuse.
    Fail(Box<Exchange>, Fault),
}

async fn process(
    shared: &Shared,
    conn: Arc<ConnInfo>,
    req: Request<Incoming>,
    request_id: RequestId,
    started: Instant,
) -> Response<Body> {
    let (mut parts, body) = req.into_parts();
    // One path and one host for routing, policies and the upstream; HTTP/2
    // requests get a `host` header from `:authority`, so policies see the
    // same request whichever protocol the client spoke.
    let normalized = super::normalize::request(&mut parts);
    let authority = headers::authority(&parts);
    let host = headers::host_of(&authority);
    let mut ex = Box::new(Exchange {
        request: parts,
        response: None,
        conn,
        vars: Default::default(),
        route: RouteInfo::default(),
        request_id,
        started,
        trace: None,
    });
    let global = &shared.global;
    if let Err(f) = normalized {
        return fail(global, ex, f);
    }

    // Limits come before routing and policies: nothing else should look
    // at an oversized head.
    let limits = &shared.limits;
    let size = headers::head_size(&ex.request);
    if size > limits.max_request_header_bytes
        || ex.request.headers.len() > limits.max_request_headers
    {
        let f = if size > limits.max_request_header_bytes {
            Fault::headers_too_large(size, limits.max_request_header_bytes)
        } else {
            let mut f = Fault::headers_too_large(size, limits.max_request_header_bytes);
            f.detail = format!(
                "the request has {} header fields; the limit is {}",
                ex.request.headers.len(),
                limits.max_request_headers
            );
            f
        };
        return fail(global, ex, f);
    }

    // The authority must not belong to another TLS host of the listener
    // than the one the connection was made for: a client reusing an HTTP/2
    // connection for another host would otherwise bypass that host's TLS
    // settings (certificate, and client-certificate requirements).
    if let Some(tls) = &ex.conn.tls {
        if let Some(Some(listener)) = shared.tls.get(ex.conn.listener) {
            if !host.is_empty() && listener.misdirected(tls.host_index, &host) {
                let f = Fault::misdirected(&host, tls.sni.as_deref());
                return fail(global, ex, f);
            }
        }
    }

    let routed = shared
        .router
        .route(&host, &ex.request.method, ex.request.uri.path());
    let (api, op, params) = match routed {
        super::route::Routed::Found {
            api,
            operation,
            params,
        } => (api, operation, params),
        super::route::Routed::MethodNotAllowed { api, allow } => {
            ex.route.api = api.name.clone();
            let f = Fault::method_not_allowed(&ex.request.method, ex.request.uri.path(), &allow);
            return fail(&api.data.chain, ex, f);
        }
        super::route::Routed::NotFound => {
            let f = Fault::not_found(&ex.request.method, ex.request.uri.path(), &host);
            return fail(global, ex, f);
        }
    };
    ex.route = RouteInfo {
        api: api.name.clone(),
        operation: op.map(|o| o.name.clone()),
        params,
    };
    let chain: &Chain = match op {
        Some(o) => &o.data.chain,
        None => &api.data.chain,
    };

    let ex = match run_inbound(&chain.inbound, ex) {
        Inbound::Forward(ex) => ex,
        Inbound::Respond(r) => return r,
        Inbound::Fail(ex, f) => return fail(chain, ex, f),
    };

    // Build the upstream request. The exchange keeps the request head only
    // if a later chain can read it.
    let upstream = &api.data.upstream;
    let keep_head = !chain.outbound.is_empty() || !chain.on_error.is_empty();
    let mut ex = ex;
    let up_parts = if keep_head {
        clone_head(&ex.request)
    } else {
        std::mem::replace(&mut ex.request, Request::new(()).into_parts().0)
    };
    let strip = api.data.strip_prefix.then_some(api.prefix.as_str());
    let uri = match upstream.uri_for(&up_parts.uri, strip) {
        Ok(u) => u,
        Err(f) => return fail(chain, ex, f),
    };
    let mut up_req = Request::from_parts(up_parts, boxed(body));
    *up_req.uri_mut() = uri;
    *up_req.version_mut() = Version::HTTP_11;
    {
        let h = up_req.headers_mut();
        headers::remove_hop_by_hop(h);
        // The upstream gets its own Host (from the URI); the client's moves
        // to X-Forwarded-Host.
        let host = h.remove(http::header::HOST);
        headers::set_forwarded(h, &ex.conn.client_ip_header, ex.conn.scheme(), host);
        h.insert(X_REQUEST_ID.clone(), ex.request_id.header());
    }

    let resp = match upstream.send(up_req).await {
        Ok(r) => r,
        Err(f) => {
            tracing::warn!(request_id = %ex.request_id, upstream = %upstream.name, "{}", f.detail);
            return fail(chain, ex, f);
        }
    };
    let (mut rparts, rbody) = resp.into_parts();
    headers::remove_hop_by_hop(&mut rparts.headers);
    if chain.outbound.is_empty() {
        return Response::from_parts(rparts, rbody);
    }
    ex.response = Some(rparts);
    match run_response_chain(&chain.outbound, ex) {
        Outbound::Continue(mut ex) => match ex.response.take() {
            Some(mut p) => {
                // Policies may not add connection-level headers.
                headers::remove_hop_by_hop(&mut p.headers);
                Response::from_parts(p, rbody)
            }
            None => {
                Fault::invalid_decision("outbound", "response lost").into_response(&ex.request_id)
            }
        },
        Outbound::Respond(r) => r,
        Outbound::Deny(ex, f) | Outbound::Fail(ex, f) => fail(chain, ex, f),
    }
}

fn clone_head(p: &http::request::Parts) -> http::request::Parts {
    let mut r = Request::new(());
    *r.method_mut() = p.method.clone();
    *r.uri_mut() = p.uri.clone();
    *r.version_mut() = p.version;
    *r.headers_mut() = p.headers.clone();
    r.into_parts().0
}

/// Runs `on-request` of each policy in order, applying header edits, until
/// one responds or refuses. Public for the benchmarks.
pub fn run_inbound(policies: &[Arc<PolicyPool>], mut ex: Box<Exchange>) -> Inbound {
    for pool in policies.iter().filter(|p| p.on_request_enabled()) {
        let (back, result) = pool.on_request(ex);
        ex = back;
        match result {
            Err(e) => return Inbound::Fail(ex, Fault::policy_failed(&e)),
            Ok(Decision::Continue(edits)) => {
                if let Err(f) = apply_edits(&mut ex.request.headers, edits, pool) {
                    return Inbound::Fail(ex, f);
                }
            }
            Ok(Decision::Respond(spec)) => {
                return match response_from_spec(spec, pool) {
                    Ok(r) => Inbound::Respond(r),
                    Err(f) => Inbound::Fail(ex, f),
                }
            }
            Ok(Decision::Deny(f)) => return Inbound::Fail(ex, denied(pool, f)),
        }
    }
    Inbound::Forward(ex)
}

enum Outbound {
    /// Every policy continued.
    Continue(Box<Exchange>),
    /// A policy answered with its own response.
    Respond(Response<Body>),
    /// A policy refused with its own fault.
    Deny(Box<Exchange>, Fault),
    /// A policy failed (trap, deadline, memory, no instance, invalid
    /// decision).
    Fail(Box<Exchange>, Fault),
}

/// Runs `on-response` of each policy over `ex.response`.
fn run_response_chain(policies: &[Arc<PolicyPool>], mut ex: Box<Exchange>) -> Outbound {
    for pool in policies.iter().filter(|p| p.on_response_enabled()) {
        let (back, result) = pool.on_response(ex);
        ex = back;
        match result {
            Err(e) => return Outbound::Fail(ex, Fault::policy_failed(&e)),
            Ok(Decision::Continue(edits)) => {
                let Some(resp) = ex.response.as_mut() else {
                    break;
                };
                if let Err(f) = apply_edits(&mut resp.headers, edits, pool) {
                    return Outbound::Fail(ex, f);
                }
            }
            Ok(Decision::Respond(spec)) => {
                return match response_from_spec(spec, pool) {
                    Ok(r) => Outbound::Respond(r),
                    Err(f) => Outbound::Fail(ex, f),
                }
            }
            Ok(Decision::Deny(f)) => {
                let f = denied(pool, f);
                // A fault the gateway cannot send is the policy's failure.
                return if f.code == super::fault::codes::POLICY_INVALID_DECISION {
                    Outbound::Fail(ex, f)
                } else {
                    Outbound::Deny(ex, f)
                };
            }
        }
    }
    Outbound::Continue(ex)
}

/// Sends a fault through the scope's on-error chain. The chain sees the
/// fault as the response: it may edit its headers, or replace it (with a
/// response or another fault); a failure inside the on-error chain is
/// logged and the original fault is sent.
fn fail(chain: &Chain, mut ex: Box<Exchange>, fault: Fault) -> Response<Body> {
    let request_id = ex.request_id.clone();
    if chain.on_error.is_empty() {
        return fault.into_response(&request_id);
    }
    let (parts, body) = fault.clone().into_response(&request_id).into_parts();
    ex.response = Some(parts);
    ex.vars.insert("error.code".into(), fault.code.clone());
    ex.vars
        .insert("error.status".into(), fault.status.as_u16().to_string());
    match run_response_chain(&chain.on_error, ex) {
        Outbound::Continue(mut ex) => match ex.response.take() {
            Some(mut p) => {
                headers::remove_hop_by_hop(&mut p.headers);
                Response::from_parts(p, body)
            }
            None => fault.into_response(&request_id),
        },
        Outbound::Respond(r) => r,
        // A policy in the on-error chain chose another fault.
        Outbound::Deny(_, f) => f.into_response(&request_id),
        Outbound::Fail(_, f) => {
            tracing::warn!(request_id = %request_id, "on-error chain failed: {}", f.detail);
            fault.into_response(&request_id)
        }
    }
}

/// The fault a policy chose, with secret named values removed from its
/// text.
fn denied(pool: &PolicyPool, mut f: crate::policy::bindings::Fault) -> Fault {
    f.title = pool.redact(&f.title);
    f.detail = pool.redact(&f.detail);
    Fault::from_policy(pool.name(), f)
}

fn apply_edits(
    h: &mut http::HeaderMap,
    edits: Vec<HeaderEdit>,
    pool: &PolicyPool,
) -> Result<(), Fault> {
    for e in edits {
        match e {
            HeaderEdit::Set(hd) | HeaderEdit::Append(hd) if hd.name.is_empty() => {
                return Err(Fault::invalid_decision(pool.name(), "empty header name"))
            }
            HeaderEdit::Set(hd) => {
                let (n, v) = header_pair(&hd.name, &hd.value, pool)?;
                h.insert(n, v);
            }
            HeaderEdit::Append(hd) => {
                let (n, v) = header_pair(&hd.name, &hd.value, pool)?;
                h.append(n, v);
            }
            HeaderEdit::Remove(name) => {
                if let Ok(n) = HeaderName::from_bytes(name.as_bytes()) {
                    h.remove(n);
                }
            }
        }
    }
    Ok(())
}

fn header_pair(
    name: &str,
    value: &str,
    pool: &PolicyPool,
) -> Result<(HeaderName, HeaderValue), Fault> {
    let n = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
        Fault::invalid_decision(pool.name(), format!("`{name}` is not a valid header name"))
    })?;
    // UTF-8 is allowed (as obs-text); control characters are not.
    let v = HeaderValue::from_bytes(value.as_bytes()).map_err(|_| {
        Fault::invalid_decision(
            pool.name(),
            format!("the value of `{name}` is not a valid header value"),
        )
    })?;
    Ok((n, v))
}

fn response_from_spec(spec: ResponseSpec, pool: &PolicyPool) -> Result<Response<Body>, Fault> {
    let status = StatusCode::from_u16(spec.status)
        .ok()
        .filter(|s| (200..=599).contains(&s.as_u16()))
        .ok_or_else(|| {
            Fault::invalid_decision(
                pool.name(),
                format!("status {} cannot be sent", spec.status),
            )
        })?;
    let mut resp = Response::new(full(spec.body));
    *resp.status_mut() = status;
    for hd in spec.headers {
        let (n, v) = header_pair(&hd.name, &hd.value, pool)?;
        resp.headers_mut().append(n, v);
    }
    headers::remove_hop_by_hop(resp.headers_mut());
    resp.headers_mut().remove(http::header::CONTENT_LENGTH);
    Ok(resp)
}
