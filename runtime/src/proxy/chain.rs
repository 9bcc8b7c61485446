//! The one chain runner: every section (inbound, outbound, on-error) runs
//! its policies through [`run`], which applies each decision's header edits
//! to the message of the section, stops at the first policy that responds
//! or refuses, and records a trace step per policy when the request is
//! traced.

use std::time::Instant;

use http::header::{HeaderName, HeaderValue};
use http::{Response, StatusCode};
use serde_json::json;

use super::body::{full, Body};
use super::fault::Fault;
use super::headers;
use super::snapshot::ChainStep;
use crate::exchange::Exchange;
use crate::policy::bindings::{Decision, HeaderEdit, ResponseSpec};
use crate::policy::PolicyPool;

/// A chain section: which hook runs and which message edits apply to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Section {
    /// `on-request`; edits apply to the request.
    Inbound,
    /// `on-response` on the upstream's response.
    Outbound,
    /// `on-response` on the fault about to be sent.
    OnError,
}

impl Section {
    /// The name used in config, traces and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Section::Inbound => "inbound",
            Section::Outbound => "outbound",
            Section::OnError => "on_error",
        }
    }
}

/// How a section ended.
pub enum Outcome {
    /// Every policy continued.
    Continue(Box<Exchange>),
    /// A policy answered with its own response.
    Respond(Box<Exchange>, Response<Body>),
    /// A policy refused ([`super::fault::FaultKind::Denied`]) or failed
    /// ([`super::fault::FaultKind::PolicyFailure`]).
    Fault(Box<Exchange>, Fault),
}

/// Runs `steps` in order over `ex`. Steps that ran and asked for the
/// completion hook are appended to `ran_completion`.
pub fn run(
    section: Section,
    steps: &[ChainStep],
    ex: Box<Exchange>,
    ran_completion: &mut Vec<ChainStep>,
) -> Outcome {
    run_from(section, steps, 0, ex, ran_completion)
}

/// [`run`] from the step at index `from` (a step that denied a request
/// with an unknown `kid` runs again once its key set was refetched).
///
/// A step that denies an inbound request after asking for a key set
/// refetch leaves `ex.refetch` set, with its index; any other outcome
/// clears it.
pub fn run_from(
    section: Section,
    steps: &[ChainStep],
    from: usize,
    mut ex: Box<Exchange>,
    ran_completion: &mut Vec<ChainStep>,
) -> Outcome {
    // One clock read per call: the end of one call is the start of the
    // next.
    let mut started = Instant::now();
    for (index, step) in steps.iter().enumerate().skip(from) {
        let pool = &step.pool;
        let completion_len = ran_completion.len();
        let (back, result) = match section {
            Section::Inbound => pool.on_request(ex, &step.scope),
            Section::Outbound | Section::OnError => pool.on_response(ex, &step.scope),
        };
        ex = back;
        let ended = Instant::now();
        let took = ended.duration_since(started);
        started = ended;
        // The call stopped at a question for a remote counter store: its
        // decision is dropped and the pipeline calls this step again once
        // the answer is in.
        if let Some(p) = ex.remote_counts.as_mut().and_then(|r| r.pending.as_mut()) {
            if section == Section::Inbound && result.is_ok() {
                p.step = index;
                p.completion_len = completion_len;
                let f = Fault::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "policy.counters-unavailable",
                    "Counters unavailable",
                    "a counter question was not answered",
                );
                return Outcome::Fault(ex, f);
            }
            if let Some(r) = ex.remote_counts.as_mut() {
                r.pending = None;
            }
        }
        pool.record(&result, took);
        if let Some(r) = ex.refetch.as_mut() {
            if section == Section::Inbound && matches!(result, Ok(Decision::Deny(_))) {
                r.step = index;
                r.completion_len = completion_len;
            } else {
                ex.refetch = None;
            }
        }
        if pool.on_complete_enabled() {
            ran_completion.push(step.clone());
        }
        if ex.trace.is_some() {
            trace_step(&ex, section, step, &result, took);
        }
        let decision = match result {
            Ok(d) => d,
            Err(e) => return Outcome::Fault(ex, Fault::policy_failed(&e)),
        };
        if let Err(what) = within_limits(&decision) {
            let what = format!("request {}: {}", ex.request_id, pool.redact(&what));
            return Outcome::Fault(ex, Fault::policy_limit(pool.name(), what));
        }
        match decision {
            Decision::Continue(edits) => {
                let target = match section {
                    Section::Inbound => Some(&mut ex.request.headers),
                    Section::Outbound | Section::OnError => {
                        ex.response.as_mut().map(|r| &mut r.headers)
                    }
                };
                if let Some(h) = target {
                    if let Err(f) = apply_edits(h, edits, &Issuer::of(pool), section) {
                        return Outcome::Fault(ex, f);
                    }
                }
            }
            Decision::Respond(spec) => {
                return match response_from_spec(spec, &Issuer::of(pool)) {
                    Ok(r) => Outcome::Respond(ex, r),
                    Err(f) => Outcome::Fault(ex, f),
                }
            }
            Decision::Deny(f) => return Outcome::Fault(ex, denied(pool, f)),
        }
    }
    Outcome::Continue(ex)
}

fn trace_step(
    ex: &Exchange,
    section: Section,
    step: &ChainStep,
    result: &Result<Decision, crate::policy::PolicyError>,
    took: std::time::Duration,
) {
    let elapsed_us = took.as_micros() as u64;
    ex.trace("policy", || {
        let mut d = json!({
            "policy": &**step.pool.name(),
            "scope": &*step.scope,
            "section": section.as_str(),
            "elapsed_us": elapsed_us,
        });
        match result {
            Ok(Decision::Continue(edits)) => {
                d["decision"] = "continue".into();
                d["edits"] = edits
                    .iter()
                    .map(|e| match e {
                        HeaderEdit::Set(h) => format!("set {}", h.name),
                        HeaderEdit::Append(h) => format!("append {}", h.name),
                        HeaderEdit::Remove(n) => format!("remove {n}"),
                    })
                    .collect::<Vec<_>>()
                    .into();
            }
            Ok(Decision::Respond(spec)) => {
                d["decision"] = "respond".into();
                d["status"] = spec.status.into();
            }
            Ok(Decision::Deny(f)) => {
                d["decision"] = "deny".into();
                d["status"] = f.status.into();
                d["code"] = step.pool.redact(&f.code).into();
                d["detail"] = step.pool.redact(&f.detail).into();
            }
            Err(e) => {
                d["decision"] = "failed".into();
                d["error"] = step.pool.redact(&e.to_string()).into();
            }
        }
        d
    });
}

/// Checks a decision against the host-side caps
/// ([`crate::policy::limits`]).
pub fn within_limits(d: &Decision) -> Result<(), String> {
    use crate::policy::bindings::Header;
    use crate::policy::limits::*;
    fn headers(hs: &[Header], max: usize) -> Result<(), String> {
        if hs.len() > max {
            return Err(format!("{} headers (at most {max})", hs.len()));
        }
        let bytes: usize = hs.iter().map(|h| h.name.len() + h.value.len()).sum();
        if bytes > MAX_HEADER_BYTES {
            return Err(format!(
                "{bytes} bytes of headers (at most {MAX_HEADER_BYTES})"
            ));
        }
        Ok(())
    }
    match d {
        Decision::Continue(edits) => {
            if edits.len() > MAX_EDITS {
                return Err(format!(
                    "{} header edits (at most {MAX_EDITS})",
                    edits.len()
                ));
            }
            let bytes: usize = edits
                .iter()
                .map(|e| match e {
                    HeaderEdit::Set(h) | HeaderEdit::Append(h) => h.name.len() + h.value.len(),
                    HeaderEdit::Remove(n) => n.len(),
                })
                .sum();
            if bytes > MAX_HEADER_BYTES {
                return Err(format!(
                    "{bytes} bytes of header edits (at most {MAX_HEADER_BYTES})"
                ));
            }
            Ok(())
        }
        Decision::Respond(spec) => {
            headers(&spec.headers, MAX_RESPONSE_HEADERS)?;
            if spec.body.len() > MAX_RESPONSE_BODY {
                return Err(format!(
                    "a response body of {} bytes (at most {MAX_RESPONSE_BODY})",
                    spec.body.len()
                ));
            }
            Ok(())
        }
        Decision::Deny(f) => {
            headers(&f.headers, MAX_RESPONSE_HEADERS)?;
            for (what, text) in [
                ("code", &f.code),
                ("title", &f.title),
                ("detail", &f.detail),
            ] {
                if text.len() > MAX_FAULT_TEXT {
                    return Err(format!(
                        "a fault {what} of {} bytes (at most {MAX_FAULT_TEXT})",
                        text.len()
                    ));
                }
            }
            Ok(())
        }
    }
}

/// The fault a policy chose, with secret named values removed from its
/// text.
fn denied(pool: &PolicyPool, mut f: crate::policy::bindings::Fault) -> Fault {
    f.title = pool.redact(&f.title);
    f.detail = pool.redact(&f.detail);
    let by = Issuer::of(pool);
    for h in &mut f.headers {
        h.value = outgoing(std::mem::take(&mut h.value), &by, Section::OnError);
    }
    Fault::from_policy(pool.name(), f)
}

/// A header value as it leaves a policy: on the request (bound for the
/// upstream), `{{ref:name}}` references become their values; on responses
/// and faults (bound for the client), secret values are redacted, base64
/// and percent-encoded forms included.
fn outgoing(value: String, by: &Issuer<'_>, section: Section) -> String {
    let secrets = by.secrets;
    match section {
        Section::Inbound => secrets.resolve_refs(&value).unwrap_or(value),
        Section::Outbound | Section::OnError if !secrets.is_empty() => secrets.redact(&value),
        Section::Outbound | Section::OnError => value,
    }
}

/// Who made an edit: the policy's name (for faults and logs) and its
/// config's secrets (references to put in, values to redact).
pub struct Issuer<'a> {
    /// The policy's name.
    pub name: &'a str,
    /// Its config's secrets and references.
    pub secrets: &'a crate::config::Secrets,
}

impl<'a> Issuer<'a> {
    fn of(pool: &'a PolicyPool) -> Self {
        Issuer {
            name: pool.name(),
            secrets: pool.secrets(),
        }
    }
}

/// Applies a decision's header edits to the message of `section`: names
/// and values checked, framing and hop-by-hop headers left alone, values
/// bound for the upstream with references resolved and those bound for the
/// client with secrets redacted, the map filled without panicking.
///
/// # Errors
///
/// `policy.invalid-decision` for a bad name or value, `policy.limit` when
/// the map is full.
pub fn apply_edits(
    h: &mut http::HeaderMap,
    edits: Vec<HeaderEdit>,
    by: &Issuer<'_>,
    section: Section,
) -> Result<(), Fault> {
    for mut e in edits {
        if let HeaderEdit::Set(hd) | HeaderEdit::Append(hd) = &mut e {
            hd.value = outgoing(std::mem::take(&mut hd.value), by, section);
        }
        match e {
            HeaderEdit::Set(hd) | HeaderEdit::Append(hd) if hd.name.is_empty() => {
                return Err(Fault::invalid_decision(by.name, "empty header name"))
            }
            HeaderEdit::Set(hd) => {
                let (n, v) = header_pair(&hd.name, &hd.value, by)?;
                if !framing(&n, by) {
                    h.try_insert(n, v).map_err(|_| map_full(by))?;
                }
            }
            HeaderEdit::Append(hd) => {
                let (n, v) = header_pair(&hd.name, &hd.value, by)?;
                if !framing(&n, by) {
                    h.try_append(n, v).map_err(|_| map_full(by))?;
                }
            }
            HeaderEdit::Remove(name) => {
                if let Ok(n) = HeaderName::from_bytes(name.as_bytes()) {
                    if !framing(&n, by) {
                        h.remove(n);
                    }
                }
            }
        }
    }
    Ok(())
}

/// The header map cannot take more entries.
fn map_full(by: &Issuer<'_>) -> Fault {
    Fault::policy_limit(by.name, "the message has as many headers as it can hold")
}

/// Whether `n` is a framing or hop-by-hop header, which policies may not
/// touch: the edit is ignored (and said so in the debug log).
fn framing(n: &HeaderName, by: &Issuer<'_>) -> bool {
    let reserved = headers::is_reserved_for_framing(n);
    if reserved {
        tracing::debug!(policy = %by.name, header = %n, "edit of a framing or hop-by-hop header ignored");
    }
    reserved
}

fn header_pair(
    name: &str,
    value: &str,
    by: &Issuer<'_>,
) -> Result<(HeaderName, HeaderValue), Fault> {
    let n = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
        Fault::invalid_decision(by.name, format!("`{name}` is not a valid header name"))
    })?;
    // UTF-8 is allowed (as obs-text); control characters are not.
    let v = HeaderValue::from_bytes(value.as_bytes()).map_err(|_| {
        Fault::invalid_decision(
            by.name,
            format!("the value of `{name}` is not a valid header value"),
        )
    })?;
    Ok((n, v))
}

fn response_from_spec(spec: ResponseSpec, by: &Issuer<'_>) -> Result<Response<Body>, Fault> {
    let status = StatusCode::from_u16(spec.status)
        .ok()
        .filter(|s| (200..=599).contains(&s.as_u16()))
        .ok_or_else(|| {
            Fault::invalid_decision(by.name, format!("status {} cannot be sent", spec.status))
        })?;
    let mut resp = Response::new(full(spec.body));
    *resp.status_mut() = status;
    for hd in spec.headers {
        let value = outgoing(hd.value, by, Section::Outbound);
        let (n, v) = header_pair(&hd.name, &value, by)?;
        if !framing(&n, by) {
            resp.headers_mut()
                .try_append(n, v)
                .map_err(|_| map_full(by))?;
        }
    }
    Ok(resp)
}
