//! The request pipeline: one function per stage, in the order a request
//! meets them.
//!
//! ```text
//! snapshot (the config in force when the request arrived)
//!   -> normalise (400/501) -> limits (431) -> SNI/Host binding (421)
//!   -> route (404/405)
//!   -> inbound chain -> upstream (502/504) -> outbound chain -> client
//! any fault ------> on-error chain -> problem+json fault
//! ...body sent or exchange ended -> completion (metrics, trace, access log,
//!                                   on-complete hooks)
//! ```
//!
//! The request body is never read here: it streams from the client to the
//! upstream, and the upstream's body streams back, while policies see only
//! heads. Both bodies are counted on the way ([`super::completion`]).

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use http::header::HeaderName;
use http::{Request, Response, Version};
use hyper::body::Incoming;
use serde_json::json;
use subtle::ConstantTimeEq;

use super::body::{boxed, Body, BodyCut};
use super::chain::{self, Outcome, Section};
use super::completion::{AccessFields, Flight};
use super::fault::{Fault, FaultKind};
use super::headers;
use super::route::Routed;
use super::snapshot::{Chain, Live, Snapshot};
use crate::config::PathParameters;
use crate::exchange::{self, ConnInfo, Exchange, RequestId, RouteInfo};
use crate::observe::trace::Trace;

static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// The request header that asks for a trace; its value is the trace key.
pub static X_TRACE: HeaderName = HeaderName::from_static("x-gatehouse-trace");
/// The response header that names the trace.
pub static X_TRACE_ID: HeaderName = HeaderName::from_static("x-gatehouse-trace-id");

/// A response, the fault code when it is a fault, and the exchange.
type Handled = (Box<Exchange>, Response<Body>, Option<String>);

/// Handles one request; never fails (every failure is a fault response).
pub async fn handle(
    live: Arc<Live>,
    conn: Arc<ConnInfo>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let started = Instant::now();
    let snapshot = live.load();
    let mut flight = Flight::new(live.clone(), started);
    let (mut parts, body) = req.into_parts();
    let head = parts.method == http::Method::HEAD;
    flight.had_body = !http_body::Body::is_end_stream(&body);
    // A body this small (with its length declared) is most likely in the
    // connection's buffer already: hyper drains it when the gateway answers
    // without reading it, and the connection stays open.
    let small_body = flight.had_body
        && parts
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|n| n <= 16 * 1024);
    flight.client_h1 = parts.version < Version::HTTP_2;
    let conn_linger = conn.linger.clone();
    let limits = &snapshot.limits;
    let body = boxed(flight.count_request(
        body,
        limits.max_request_body_bytes,
        std::time::Duration::from_millis(limits.request_body_timeout_ms.max(1)),
    ));
    let traced = wants_trace(&snapshot, &mut parts.headers);
    // Headers that belong to the client's connection (and those its
    // `Connection` names) go before anything reads the request: a policy
    // must never check or set a header the gateway later drops. So do the
    // forwarding headers of a client that is not a trusted proxy.
    headers::remove_on_arrival(&mut parts.headers, !conn.trusted_forwarder);
    // One path and one host for routing, policies and the upstream; HTTP/2
    // requests get a `host` header from `:authority`, so policies see the
    // same request whichever protocol the client spoke.
    let normalized = super::normalize::request(&mut parts);
    let host = match &normalized {
        Ok(n) => n.host.clone(),
        Err(_) => headers::host_of(&exchange::authority(&parts)),
    };
    let log = snapshot.access_log.as_deref();
    if log.is_some() || tracing::enabled!(target: "gatehouse::access", tracing::Level::INFO) {
        let include_query = log.is_some_and(|l| l.include_query);
        let path = match parts.uri.query() {
            Some(q) if include_query => format!("{}?{q}", parts.uri.path()),
            _ => parts.uri.path().to_string(),
        };
        flight.access = Some(AccessFields {
            method: parts.method.clone(),
            host: host.clone(),
            path,
        });
    }
    let mut ex = Box::new(Exchange::new(parts, conn, RequestId::new(), started));
    if traced {
        start_trace(&live, &mut ex, &host, &snapshot.secrets);
    }
    flight.snapshot = Some(snapshot.clone());

    let (ex, mut resp, fault_code) = match normalized {
        Err(f) => fail(&snapshot.global, ex, f, &mut flight),
        Ok(n) => {
            process(
                &snapshot,
                ex,
                body,
                &host,
                n.had_path_parameters,
                &mut flight,
            )
            .await
        }
    };
    resp.headers_mut()
        .insert(X_REQUEST_ID.clone(), ex.request_id.header());
    if ex.trace.is_some() {
        resp.headers_mut()
            .insert(X_TRACE_ID.clone(), ex.request_id.header());
    }
    if head {
        resp = without_body(resp);
    }
    // The answer goes out before the client's body was all read (a fault,
    // a policy's response, or an upstream that answered early): an
    // HTTP/1.x connection then closes after it, and lingers first, reading
    // and dropping what the client still sends, so that closing does not
    // reset the connection under a response the client has not read yet.
    if flight.had_body && flight.client_h1 && !flight.request_body_done() {
        conn_linger.store(true, std::sync::atomic::Ordering::Relaxed);
        if flight.answered_early() || !small_body {
            resp.headers_mut().insert(
                http::header::CONNECTION,
                http::HeaderValue::from_static("close"),
            );
        }
    }
    Ok(flight.finish(ex, resp, fault_code))
}

/// A response to `HEAD`: the head of what `GET` would get, no body. A
/// response the gateway made (the echo upstream, a policy's response, a
/// fault) keeps the length of the body it would have had; an upstream's
/// response to `HEAD` has no body already and keeps its own headers.
fn without_body(resp: Response<Body>) -> Response<Body> {
    use http_body::Body as _;
    let (mut parts, body) = resp.into_parts();
    let status = parts.status;
    if let Some(n) = body.size_hint().exact().filter(|n| *n > 0) {
        if !parts.headers.contains_key(http::header::CONTENT_LENGTH)
            && status != http::StatusCode::NO_CONTENT
            && status != http::StatusCode::NOT_MODIFIED
            && !status.is_informational()
        {
            parts
                .headers
                .insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(n));
        }
    }
    Response::from_parts(parts, super::body::empty())
}

/// Whether the request asks for a trace with the right key. The header is
/// removed either way: neither policies nor the upstream see it, and a
/// wrong key is ignored, not refused.
fn wants_trace(snapshot: &Snapshot, h: &mut http::HeaderMap) -> bool {
    let Some(given) = h.remove(&X_TRACE) else {
        return false;
    };
    match &snapshot.trace_key {
        Some(key) => bool::from(given.as_bytes().ct_eq(key.as_bytes())),
        None => false,
    }
}

fn start_trace(live: &Live, ex: &mut Exchange, host: &str, secrets: &crate::config::Secrets) {
    let trace = Arc::new(Mutex::new(Trace::new(
        ex.request_id.to_string(),
        ex.started,
        secrets.clone(),
    )));
    live.traces.insert(trace.clone());
    ex.trace = Some(trace);
    let c = &ex.conn;
    if let Some(t) = &c.tls {
        let entry = t.table.hosts.get(t.host_index);
        let auth = entry.and_then(|e| e.client_auth.as_deref());
        ex.trace("tls", || {
            // In the words an operator searches for: was a certificate
            // asked for (and why not), was one received, did it verify.
            let (mode, requested) = match auth.map(|a| a.mode) {
                Some(crate::config::ClientCertMode::Required) => ("required", true),
                Some(crate::config::ClientCertMode::Optional) => ("optional", true),
                _ => ("off", false),
            };
            let client_certificate = match t.client_cert() {
                None if !requested => json!({
                    "requested": false,
                    "why": "the host's client_certificate mode is off: the handshake did not ask for a certificate, so no client sends one",
                }),
                None => json!({
                    "requested": true,
                    "received": false,
                    "why": "the client sent no certificate",
                }),
                Some(c) => json!({
                    "requested": requested,
                    "received": true,
                    "subject": c.subject,
                    "issuer": c.issuer,
                    "sha256": c.thumbprint_sha256,
                    "verified": c.verified,
                    "verify_error": c.verify_error,
                    "truststore": auth.map(|a| a.truststore.as_str()),
                }),
            };
            json!({
                "sni": t.sni,
                "version": t.version,
                "alpn": t.alpn,
                "host_entry": t.host_index,
                "host_names": entry.map(|e| e.names.clone()),
                "handshake_us": t.handshake_us,
                "client_certificate_mode": mode,
                "client_certificate": client_certificate,
            })
        });
    }
    let r = &ex.request;
    ex.trace("request", || {
        json!({
            "listener": &*c.listener,
            "client": c.client.to_string(),
            "version": format!("{:?}", r.version),
            "method": r.method.as_str(),
            "host": host,
            "path": r.uri.path(),
        })
    });
}

async fn process(
    snapshot: &Snapshot,
    mut ex: Box<Exchange>,
    body: Body,
    host: &str,
    had_path_parameters: bool,
    flight: &mut Flight,
) -> Handled {
    let global = &snapshot.global;

    // Limits come before routing and policies: nothing else should look
    // at an oversized head.
    let limits = &snapshot.limits;
    let size = headers::head_size(&ex.request);
    if size > limits.max_request_header_bytes
        || ex.request.headers.len() > limits.max_request_headers
    {
        let mut f = Fault::headers_too_large(size, limits.max_request_header_bytes);
        if size <= limits.max_request_header_bytes {
            f.detail = format!(
                "the request has {} header fields; the limit is {}",
                ex.request.headers.len(),
                limits.max_request_headers
            );
        }
        return fail(global, ex, f, flight);
    }

    // A body its length says is too large is refused before anything else
    // reads it (a body without a length is counted as it streams).
    let max_body = limits.max_request_body_bytes;
    if max_body > 0 {
        let declared = ex
            .request
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if let Some(n) = declared.filter(|n| *n > max_body) {
            return fail(global, ex, Fault::body_too_large(Some(n), max_body), flight);
        }
    }

    // The authority must not belong to another TLS host of the listener
    // than the one the connection was made for: a client reusing an HTTP/2
    // connection for another host would otherwise bypass that host's TLS
    // settings (certificate, and client-certificate requirements).
    if let Some(tls) = &ex.conn.tls {
        if !host.is_empty() && tls.table.misdirected(tls.host_index, host) {
            let f = Fault::misdirected(host, tls.sni.as_deref());
            return fail(global, ex, f, flight);
        }
    }

    let routed = snapshot
        .router
        .route(host, &ex.request.method, ex.request.uri.path());
    let (api, op, params) = match routed {
        Routed::Found {
            api,
            operation,
            params,
        } => (api, operation, params),
        Routed::MethodNotAllowed { api, allow } => {
            ex.route.api = api.name.clone();
            ex.trace(
                "routing",
                || json!({"api": &*api.name, "error": "method not allowed", "allow": allow}),
            );
            let f = Fault::method_not_allowed(&ex.request.method, ex.request.uri.path(), &allow);
            return fail(&api.data.chain, ex, f, flight);
        }
        Routed::NotFound => {
            ex.trace(
                "routing",
                || json!({"error": "no API serves this host and path"}),
            );
            let f = if had_path_parameters {
                Fault::path_parameters()
            } else {
                Fault::not_found(&ex.request.method, ex.request.uri.path(), host)
            };
            return fail(global, ex, f, flight);
        }
    };
    if had_path_parameters && api.data.path_parameters != PathParameters::Strip {
        ex.route.api = api.name.clone();
        return fail(&api.data.chain, ex, Fault::path_parameters(), flight);
    }
    ex.route = RouteInfo {
        api: api.name.clone(),
        operation: op.map(|o| o.name.clone()),
        params,
    };
    ex.trace("routing", || {
        json!({
            "api": &*api.name,
            "operation": op.map(|o| &*o.name),
            "upstream": &*api.data.upstream.name,
        })
    });
    let chain: &Chain = match op {
        Some(o) => &o.data.chain,
        None => &api.data.chain,
    };

    // A policy that met an unknown `kid` may have asked for a key set
    // refetch: the request waits for it here (bounded by the key set's
    // `unknown-kid-wait-ms`), outside any policy call, and that policy
    // runs once more if the keys changed.
    let mut from = 0;
    let mut retried = false;
    let mut ex = ex;
    let mut ex = loop {
        match chain::run_from(
            Section::Inbound,
            &chain.inbound,
            from,
            ex,
            &mut flight.completion_steps,
        ) {
            Outcome::Continue(ex) => break ex,
            Outcome::Respond(ex, r) => return (ex, r, None),
            Outcome::Fault(mut back, f) => {
                // A policy asked a remote counter store: send the
                // question, await the answer here (bounded by the store's
                // timeout), and call that step again.
                if let Some(p) = back.remote_counts.as_mut().and_then(|r| r.pending.take()) {
                    flight.parked = Some(back);
                    let waited = Instant::now();
                    let u = p.store.call(&p.key, p.limit, p.window, p.op).await;
                    let Some(mut back) = flight.parked.take() else {
                        return unreachable_parked(flight);
                    };
                    back.trace("counters", || {
                        json!({
                            "store": "redis",
                            "waited_us": waited.elapsed().as_micros() as u64,
                            "admitted": u.admitted,
                            "unavailable": &u.unavailable,
                        })
                    });
                    if let Some(rc) = back.remote_counts.as_mut() {
                        rc.round_trips += 1;
                        rc.answers.push((p.key, p.op, u));
                    }
                    flight.completion_steps.truncate(p.completion_len);
                    from = p.step;
                    ex = back;
                    continue;
                }
                let pending = back.refetch.take();
                let Some(p) = pending.filter(|p| !retried && p.step != usize::MAX) else {
                    return fail(chain, back, f, flight);
                };
                retried = true;
                let waited = Instant::now();
                flight.parked = Some(back);
                let changed = p.wait().await;
                let Some(back) = flight.parked.take() else {
                    return unreachable_parked(flight);
                };
                back.trace("key-set", || {
                    json!({
                        "refetched": p.url(),
                        "waited_ms": waited.elapsed().as_millis() as u64,
                        "keys_changed": changed,
                    })
                });
                if !changed {
                    return fail(chain, back, f, flight);
                }
                flight.completion_steps.truncate(p.completion_len);
                from = p.step;
                ex = back;
            }
        }
    };

    // Build the upstream request. The exchange keeps the request head only
    // if a later chain (or the completion hook) can read it.
    let upstream = &api.data.upstream;
    let keep_head = !chain.outbound.is_empty()
        || !chain.on_error.is_empty()
        || !flight.completion_steps.is_empty();
    let up_parts = if keep_head {
        clone_head(&ex.request)
    } else {
        std::mem::replace(&mut ex.request, Request::new(()).into_parts().0)
    };
    let strip = api.data.strip_prefix.then_some(api.prefix.as_str());
    let uri = match upstream.uri_for(&up_parts.uri, strip) {
        Ok(u) => u,
        Err(f) => return fail(chain, ex, f, flight),
    };
    let mut up_req = Request::from_parts(up_parts, body);
    *up_req.uri_mut() = uri;
    *up_req.version_mut() = Version::HTTP_11;
    {
        let h = up_req.headers_mut();
        // The client's hop-by-hop headers went on arrival; a `Connection` a
        // policy set names nothing of the client's.
        headers::remove_fixed_hop_by_hop(h);
        // The upstream gets its own Host (from the URI); the client's moves
        // to X-Forwarded-Host.
        let host = h.remove(http::header::HOST);
        headers::set_forwarded(
            h,
            &ex.conn.client_ip_header,
            ex.conn.scheme(),
            host,
            ex.conn.trusted_forwarder,
        );
        h.insert(X_REQUEST_ID.clone(), ex.request_id.header());
        // Only a certificate the host verified is passed on: the upstream
        // takes these headers as the gateway's word.
        if let (Some(forward), Some(tls)) = (&api.data.forward_cert, &ex.conn.tls) {
            if let Some(info) = tls.client_cert().filter(|c| c.verified) {
                headers::forward_client_cert(h, forward, &tls.client_chain, info);
            }
        }
    }

    // The one wait of the pipeline: the exchange is parked in the flight,
    // so a client that leaves now still completes with its route and trace.
    flight.parked = Some(ex);
    let sent = upstream.send(up_req, &mut flight.upstream).await;
    let Some(ex) = flight.parked.take() else {
        // Unreachable: nothing else takes the parked exchange.
        return unreachable_parked(flight);
    };
    let facts = &flight.upstream;
    let resp = match sent {
        Ok(r) => {
            ex.trace("upstream", || {
                json!({
                    "upstream": facts.name.as_deref(),
                    "address": facts.address.as_deref(),
                    "new_connection": facts.connect.is_some(),
                    "connect_us": facts.connect.map(|d| d.as_micros() as u64),
                    "tls_us": facts.tls.map(|d| d.as_micros() as u64),
                    "first_byte_us": facts.first_byte.map(|d| d.as_micros() as u64),
                    "client_certificate": facts.client_auth.as_ref().map(|c| c.to_json()),
                    "status": r.status().as_u16(),
                })
            });
            r
        }
        Err(f) => {
            // The upstream exchange broke because the client stopped
            // sending its body: say so, rather than blame the upstream.
            let f = match flight.request_body_cut() {
                Some(BodyCut::TooLarge(_)) => {
                    Fault::body_too_large(None, limits.max_request_body_bytes)
                }
                Some(BodyCut::Idle(_)) => Fault::body_timeout(limits.request_body_timeout_ms),
                None if flight.request_body_failed() => Fault::request_aborted(),
                None => f,
            };
            tracing::warn!(request_id = %ex.request_id, upstream = %upstream.name, code = %f.code, "{}", f.log_detail());
            ex.trace("upstream", || {
                json!({
                    "upstream": facts.name.as_deref(),
                    "address": facts.address.as_deref(),
                    "code": f.code,
                    "error": f.log_detail(),
                    "tls": f.internal.as_ref().map(|i| &i.trace).filter(|t| !t.is_null()),
                })
            });
            return fail(chain, ex, f, flight);
        }
    };
    flight.upstream_answered();
    let (mut rparts, rbody) = resp.into_parts();
    headers::remove_hop_by_hop(&mut rparts.headers);
    // The gateway answers in its own HTTP version, whatever the upstream
    // spoke (RFC 9110 §6.2): an HTTP/1.0 upstream must not make the client
    // connection HTTP/1.0 (and close). Nor does the upstream's reason
    // phrase travel: the gateway sends the standard one.
    rparts.version = Version::HTTP_11;
    rparts.extensions = http::Extensions::new();
    if chain.outbound.is_empty() {
        return (ex, Response::from_parts(rparts, rbody), None);
    }
    let mut ex = ex;
    ex.response = Some(rparts);
    match chain::run(
        Section::Outbound,
        &chain.outbound,
        ex,
        &mut flight.completion_steps,
    ) {
        Outcome::Continue(mut ex) => match ex.response.take() {
            Some(mut p) => {
                // Policies may not add connection-level headers (their
                // edits of them are ignored; this is the last word).
                headers::remove_fixed_hop_by_hop(&mut p.headers);
                (ex, Response::from_parts(p, rbody), None)
            }
            None => {
                let f = Fault::invalid_decision("outbound", "response lost");
                fail(chain, ex, f, flight)
            }
        },
        Outcome::Respond(ex, r) => (ex, r, None),
        Outcome::Fault(ex, f) => fail(chain, ex, f, flight),
    }
}

#[cold]
fn unreachable_parked(flight: &mut Flight) -> Handled {
    let _ = flight;
    unreachable!("the exchange is parked for the upstream call and taken back right after")
}

fn clone_head(p: &http::request::Parts) -> http::request::Parts {
    let mut r = Request::new(());
    *r.method_mut() = p.method.clone();
    *r.uri_mut() = p.uri.clone();
    *r.version_mut() = p.version;
    *r.headers_mut() = p.headers.clone();
    r.into_parts().0
}

/// Sends a fault through the scope's on-error chain. The chain sees the
/// fault as the response: it may edit its headers, or replace it (with a
/// response or another fault); a failure inside the on-error chain is
/// logged and the original fault is sent.
fn fail(chain: &Chain, mut ex: Box<Exchange>, fault: Fault, flight: &mut Flight) -> Handled {
    ex.trace("fault", || {
        json!({
            "status": fault.status.as_u16(),
            "code": fault.code,
            "detail": fault.detail,
        })
    });
    let request_id = ex.request_id.clone();
    if chain.on_error.is_empty() {
        let code = Some(fault.code.clone());
        return (ex, fault.into_response(&request_id), code);
    }
    let (parts, body) = fault.clone().into_response(&request_id).into_parts();
    ex.response = Some(parts);
    ex.vars.insert("error.code".into(), fault.code.clone());
    ex.vars
        .insert("error.status".into(), fault.status.as_u16().to_string());
    match chain::run(
        Section::OnError,
        &chain.on_error,
        ex,
        &mut flight.completion_steps,
    ) {
        Outcome::Continue(mut ex) => {
            let code = Some(fault.code.clone());
            match ex.response.take() {
                Some(mut p) => {
                    headers::remove_fixed_hop_by_hop(&mut p.headers);
                    (ex, Response::from_parts(p, body), code)
                }
                None => (ex, fault.into_response(&request_id), code),
            }
        }
        Outcome::Respond(ex, r) => (ex, r, Some(fault.code)),
        Outcome::Fault(ex, f) => match f.kind {
            // A policy in the on-error chain chose another fault.
            FaultKind::Denied | FaultKind::Gateway => {
                let code = Some(f.code.clone());
                (ex, f.into_response(&request_id), code)
            }
            FaultKind::PolicyFailure => {
                tracing::warn!(request_id = %request_id, "on-error chain failed: {}", f.detail);
                let code = Some(fault.code.clone());
                (ex, fault.into_response(&request_id), code)
            }
        },
    }
}
