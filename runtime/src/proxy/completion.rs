//! The completion phase: what happens once a request is over.
//!
//! A request is over when its response body has been sent in full, or when
//! the exchange ends early: the client left (before or during the
//! response), the upstream reset, a timeout fired. Both ends are seen the
//! same way: the pipeline's [`Flight`], the counting request body and the
//! counting response body each hold a reference to one shared state, and
//! when the last of them is dropped the state's `Drop` runs the completion:
//!
//! 1. metrics: `gatehouse_requests_total` and the request duration;
//! 2. the trace's `completion` record;
//! 3. the access-log line;
//! 4. the `on-complete` hook of every policy that ran and asked for it.
//!
//! It knows the request and response body bytes actually transferred, the
//! status (0 when no response head was sent), the fault code, and the
//! durations: total, upstream connect, time to the upstream's first byte.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use serde_json::json;

use super::body::{BodyCut, BoxError};
use super::snapshot::{ChainStep, Live, Snapshot};
pub use super::upstream::UpstreamFacts;
use crate::exchange::Exchange;
use crate::observe::metrics::{ApiLabels, RequestLabels};
use crate::policy::bindings::CompletionInfo;

/// The request fields an access-log line shows, copied at the start only
/// when a line will be written (the head itself goes upstream).
#[derive(Debug)]
pub struct AccessFields {
    /// The method.
    pub method: http::Method,
    /// The host (normalised).
    pub host: String,
    /// The path (normalised), with `?query` when the log includes it.
    pub path: String,
}

#[derive(Default)]
struct Record {
    snapshot: Option<Arc<Snapshot>>,
    exchange: Option<Box<Exchange>>,
    access: Option<AccessFields>,
    status: u16,
    fault_code: Option<String>,
    upstream: UpstreamFacts,
    completion_steps: Vec<ChainStep>,
}

/// The state shared by a request's flight and its bodies; its `Drop` is
/// the completion.
pub struct State {
    live: Arc<Live>,
    started: Instant,
    req_bytes: AtomicU64,
    req_failed: AtomicBool,
    /// Why the gateway cut the request body off, if it did: 1 too large,
    /// 2 idle.
    req_cut: std::sync::atomic::AtomicU8,
    /// The request body came in in full.
    req_done: AtomicBool,
    /// Whether the request body still flows to the upstream: [`UPLOAD_OPEN`],
    /// [`UPLOAD_PAUSED`] (the upstream answered before it had it all) or
    /// [`UPLOAD_ABANDONED`] (that answer was delivered; the rest is
    /// dropped and the upstream connection closed).
    upload: std::sync::atomic::AtomicU8,
    upload_waker: futures_util::task::AtomicWaker,
    resp_bytes: AtomicU64,
    resp_done: AtomicBool,
    /// The response body failed on its way (the upstream's broke or
    /// stalled).
    resp_failed: AtomicBool,
    record: Mutex<Record>,
}

const UPLOAD_OPEN: u8 = 0;
const UPLOAD_PAUSED: u8 = 1;
const UPLOAD_ABANDONED: u8 = 2;

/// The request body was dropped because the upstream answered before it
/// had read all of it.
#[derive(Debug, thiserror::Error)]
#[error("the upstream answered before reading the whole request body; the rest is not sent")]
pub struct UploadAbandoned;

/// The pipeline's side of a request: what it knows so far. Dropping it
/// (normally, or because the client left while the pipeline waited) hands
/// everything to the shared state.
pub struct Flight {
    state: Arc<State>,
    /// The exchange, while the pipeline waits on the upstream (so that a
    /// client leaving then still completes the request with its route and
    /// trace).
    pub parked: Option<Box<Exchange>>,
    /// The snapshot the request runs under.
    pub snapshot: Option<Arc<Snapshot>>,
    /// Access-log fields, when a line will be written.
    pub access: Option<AccessFields>,
    /// Upstream facts.
    pub upstream: UpstreamFacts,
    /// Policies that ran and asked for `on-complete`.
    pub completion_steps: Vec<ChainStep>,
    /// The request has a body (it did not end with its head).
    pub had_body: bool,
    /// The client speaks HTTP/1.x (an early answer closes its connection).
    pub client_h1: bool,
    status: u16,
    fault_code: Option<String>,
}

impl Flight {
    /// A flight for a request that arrived at `started`.
    pub fn new(live: Arc<Live>, started: Instant) -> Self {
        Flight {
            state: Arc::new(State {
                live,
                started,
                req_bytes: AtomicU64::new(0),
                req_failed: AtomicBool::new(false),
                req_cut: std::sync::atomic::AtomicU8::new(0),
                req_done: AtomicBool::new(false),
                upload: std::sync::atomic::AtomicU8::new(UPLOAD_OPEN),
                upload_waker: futures_util::task::AtomicWaker::new(),
                resp_bytes: AtomicU64::new(0),
                resp_done: AtomicBool::new(false),
                resp_failed: AtomicBool::new(false),
                record: Mutex::new(Record::default()),
            }),
            parked: None,
            snapshot: None,
            access: None,
            upstream: UpstreamFacts::default(),
            completion_steps: Vec::new(),
            had_body: false,
            client_h1: true,
            status: 0,
            fault_code: None,
        }
    }

    /// Whether reading the client's request body failed (the client left or
    /// broke the framing before sending all of it).
    pub fn request_body_failed(&self) -> bool {
        self.state.req_failed.load(Ordering::Relaxed)
    }

    /// Called when the upstream's response head arrived: if the request
    /// body of an HTTP/1.x client has not all been read yet, the upstream
    /// answered early (HTTP/2 streams are full duplex and need nothing of
    /// this). The body stops flowing to the upstream (the client is not
    /// read any further), and once the response has been delivered the
    /// upload is abandoned, which closes the upstream connection. Returns
    /// whether it was early: the client connection must then close after
    /// the response (and linger, so the client reads it).
    pub fn upstream_answered(&self) -> bool {
        if !self.had_body || !self.client_h1 || self.request_body_done() {
            return false;
        }
        self.state.upload.store(UPLOAD_PAUSED, Ordering::Release);
        true
    }

    /// Whether the upstream answered before the request body was sent.
    pub fn answered_early(&self) -> bool {
        self.state.upload.load(Ordering::Acquire) != UPLOAD_OPEN
    }

    /// Whether the request body came in in full.
    pub fn request_body_done(&self) -> bool {
        self.state.req_done.load(Ordering::Acquire)
    }

    /// Why the gateway cut the request body off, if it did.
    pub fn request_body_cut(&self) -> Option<BodyCut> {
        match self.state.req_cut.load(Ordering::Relaxed) {
            1 => Some(BodyCut::TooLarge(0)),
            2 => Some(BodyCut::Idle(Duration::ZERO)),
            _ => None,
        }
    }

    /// Wraps the client's request body so its bytes are counted, at most
    /// `max` of them (0: no limit), with at most `idle` between two pieces.
    pub fn count_request<B>(&self, body: B, max: u64, idle: Duration) -> Counted<B> {
        Counted {
            inner: body,
            state: self.state.clone(),
            response: false,
            max,
            idle: Some(idle),
            sleep: None,
        }
    }

    /// Ends the pipeline's part: the response head about to be sent, the
    /// fault code if it is a fault, and the exchange. Returns the response
    /// with its body counted.
    pub fn finish(
        mut self,
        ex: Box<Exchange>,
        resp: http::Response<super::body::Body>,
        fault_code: Option<String>,
    ) -> http::Response<super::body::Body> {
        let mut resp = resp;
        let mut ex = ex;
        for (n, v) in ex.response_headers.drain(..) {
            resp.headers_mut().append(n, v);
        }
        self.status = resp.status().as_u16();
        self.fault_code = fault_code;
        // Completion hooks may read the response (`response.status`,
        // `response.headers` in an expression): keep a copy of its head,
        // only when one will run.
        if !self.completion_steps.is_empty() && ex.response.is_none() {
            let mut head = http::Response::new(());
            *head.status_mut() = resp.status();
            *head.headers_mut() = resp.headers().clone();
            ex.response = Some(head.into_parts().0);
        }
        self.parked = Some(ex);
        let state = self.state.clone();
        drop(self);
        resp.map(|b| {
            super::body::boxed(Counted {
                inner: b,
                state,
                response: true,
                max: 0,
                idle: None,
                sleep: None,
            })
        })
    }
}

impl Drop for Flight {
    fn drop(&mut self) {
        let mut rec = match self.state.record.lock() {
            Ok(r) => r,
            Err(p) => p.into_inner(),
        };
        rec.snapshot = self.snapshot.take();
        rec.exchange = self.parked.take();
        rec.access = self.access.take();
        rec.status = self.status;
        rec.fault_code = self.fault_code.take();
        rec.upstream = std::mem::take(&mut self.upstream);
        rec.completion_steps = std::mem::take(&mut self.completion_steps);
    }
}

fn empty() -> Arc<str> {
    static EMPTY: OnceLock<Arc<str>> = OnceLock::new();
    EMPTY.get_or_init(|| Arc::from("")).clone()
}

/// The per-request metrics, through a per-thread cache of resolved handles
/// keyed by the identity of the (listener, API, operation) names and the
/// status: a request costs a small hash of pointers instead of hashing the
/// label strings under the family's lock. The cache holds the names it is
/// keyed by (so a pointer is never reused while cached) and starts over
/// when it grows past a bound (reloads make new names).
mod request_metrics {
    use std::cell::RefCell;
    use std::collections::HashMap;
    use std::hash::{BuildHasherDefault, Hash, Hasher};
    use std::sync::Arc;
    use std::time::Duration;

    use prometheus_client::metrics::counter::Counter;

    use super::{empty, ApiLabels, RequestLabels};
    use crate::exchange::Exchange;
    use crate::observe::metrics::{Histogram, Metrics};

    const MAX_ENTRIES: usize = 4096;

    struct Key {
        listener: Arc<str>,
        api: Arc<str>,
        operation: Option<Arc<str>>,
        status: u16,
        /// The registry, by identity: tests run several gateways per
        /// process.
        registry: usize,
    }

    fn ptr(s: &Arc<str>) -> usize {
        Arc::as_ptr(s) as *const u8 as usize
    }

    impl PartialEq for Key {
        fn eq(&self, o: &Self) -> bool {
            ptr(&self.listener) == ptr(&o.listener)
                && ptr(&self.api) == ptr(&o.api)
                && self.operation.as_ref().map(ptr) == o.operation.as_ref().map(ptr)
                && self.status == o.status
                && self.registry == o.registry
        }
    }
    impl Eq for Key {}
    impl Hash for Key {
        fn hash<H: Hasher>(&self, h: &mut H) {
            h.write_usize(ptr(&self.listener));
            h.write_usize(ptr(&self.api));
            h.write_usize(self.operation.as_ref().map_or(0, ptr));
            h.write_usize(self.registry ^ usize::from(self.status));
        }
    }

    /// Mixes pointer-sized words; enough for a cache of a few thousand
    /// entries.
    #[derive(Default)]
    struct Mix(u64);
    impl Hasher for Mix {
        fn finish(&self) -> u64 {
            self.0
        }
        fn write(&mut self, bytes: &[u8]) {
            for b in bytes {
                self.write_u64(u64::from(*b));
            }
        }
        fn write_usize(&mut self, n: usize) {
            self.write_u64(n as u64);
        }
        fn write_u64(&mut self, n: u64) {
            self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x517c_c1b7_2722_0a95);
        }
    }

    type Cache = HashMap<Key, (Counter, Histogram), BuildHasherDefault<Mix>>;

    thread_local! {
        static CACHE: RefCell<Cache> = RefCell::new(Cache::default());
    }

    pub(super) fn record(metrics: &Metrics, ex: &Exchange, status: u16, total: Duration) {
        let key = Key {
            listener: ex.conn.listener.clone(),
            api: ex.route.api.clone(),
            operation: ex.route.operation.clone(),
            status,
            registry: metrics as *const Metrics as usize,
        };
        CACHE.with(|c| {
            let mut c = c.borrow_mut();
            if let Some((counter, histogram)) = c.get(&key) {
                counter.inc();
                histogram.observe(total);
                return;
            }
            let counter = metrics.requests.get_or_create_owned(&RequestLabels {
                listener: key.listener.clone(),
                api: key.api.clone(),
                operation: key.operation.clone().unwrap_or_else(empty),
                status,
            });
            let histogram = metrics.request_duration.get_or_create_owned(&ApiLabels {
                listener: key.listener.clone(),
                api: key.api.clone(),
            });
            counter.inc();
            histogram.observe(total);
            if c.len() >= MAX_ENTRIES {
                c.clear();
            }
            c.insert(key, (counter, histogram));
        });
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// One access-log line.
struct Line<'a> {
    time: &'a str,
    request_id: &'a str,
    client_ip: &'a str,
    client_port: u16,
    listener: &'a str,
    sni: Option<&'a str>,
    alpn: Option<&'a str>,
    tls_version: Option<&'a str>,
    client_cert_sha256: Option<&'a str>,
    method: &'a str,
    host: &'a str,
    path: &'a str,
    api: Option<&'a str>,
    operation: Option<&'a str>,
    status: u16,
    request_bytes: u64,
    response_bytes: u64,
    complete: bool,
    outcome: &'static str,
    duration_us: u64,
    upstream: Option<&'a str>,
    upstream_address: Option<&'a str>,
    upstream_connect_us: Option<u64>,
    upstream_first_byte_us: Option<u64>,
    fault_code: Option<&'a str>,
}

impl Line<'_> {
    /// Writes the line as one JSON object. Keys are literals; values a
    /// client or a config can shape go through serde_json's escaping, values
    /// the gateway makes itself (hex ids, addresses, timestamps, methods,
    /// protocol names) are written as they are. Fields that do not apply
    /// (`sni` on plain HTTP, `upstream` of a request that never went
    /// upstream, ...) are left out.
    fn write_json(&self, buf: &mut Vec<u8>) -> Result<(), serde_json::Error> {
        fn text(buf: &mut Vec<u8>, key: &[u8], v: Option<&str>) -> Result<(), serde_json::Error> {
            if let Some(v) = v {
                buf.extend_from_slice(key);
                serde_json::to_writer(&mut *buf, v)?;
            }
            Ok(())
        }
        // Only for text that needs no escaping (checked in debug builds).
        fn raw(buf: &mut Vec<u8>, key: &[u8], v: Option<&str>) {
            if let Some(v) = v {
                debug_assert!(!v.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20));
                buf.extend_from_slice(key);
                buf.push(b'"');
                buf.extend_from_slice(v.as_bytes());
                buf.push(b'"');
            }
        }
        fn number(buf: &mut Vec<u8>, key: &[u8], v: Option<u64>) {
            if let Some(n) = v {
                buf.extend_from_slice(key);
                buf.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
            }
        }
        raw(buf, b"{\"time\":", Some(self.time));
        raw(buf, b",\"request_id\":", Some(self.request_id));
        raw(buf, b",\"client_ip\":", Some(self.client_ip));
        number(buf, b",\"client_port\":", Some(u64::from(self.client_port)));
        text(buf, b",\"listener\":", Some(self.listener))?;
        text(buf, b",\"sni\":", self.sni)?;
        raw(buf, b",\"alpn\":", self.alpn);
        raw(buf, b",\"tls_version\":", self.tls_version);
        raw(buf, b",\"client_cert_sha256\":", self.client_cert_sha256);
        raw(buf, b",\"method\":", Some(self.method));
        text(buf, b",\"host\":", Some(self.host))?;
        text(buf, b",\"path\":", Some(self.path))?;
        text(buf, b",\"api\":", self.api)?;
        text(buf, b",\"operation\":", self.operation)?;
        number(buf, b",\"status\":", Some(u64::from(self.status)));
        number(buf, b",\"request_bytes\":", Some(self.request_bytes));
        number(buf, b",\"response_bytes\":", Some(self.response_bytes));
        buf.extend_from_slice(if self.complete {
            b",\"complete\":true"
        } else {
            b",\"complete\":false"
        });
        raw(buf, b",\"outcome\":", Some(self.outcome));
        number(buf, b",\"duration_us\":", Some(self.duration_us));
        text(buf, b",\"upstream\":", self.upstream)?;
        text(buf, b",\"upstream_address\":", self.upstream_address)?;
        number(buf, b",\"upstream_connect_us\":", self.upstream_connect_us);
        number(
            buf,
            b",\"upstream_first_byte_us\":",
            self.upstream_first_byte_us,
        );
        text(buf, b",\"fault_code\":", self.fault_code)?;
        buf.push(b'}');
        Ok(())
    }
}

impl Drop for State {
    fn drop(&mut self) {
        let rec = std::mem::take(match self.record.get_mut() {
            Ok(r) => r,
            Err(p) => p.into_inner(),
        });
        let Some(mut ex) = rec.exchange else {
            return;
        };
        let total = self.started.elapsed();
        let request_bytes = *self.req_bytes.get_mut();
        let response_bytes = *self.resp_bytes.get_mut();
        // Complete: the response body went out in full and the request
        // body (if any) came in in full.
        let complete = *self.resp_done.get_mut() && !*self.req_failed.get_mut();
        let outcome = Outcome::of(
            rec.status,
            *self.resp_done.get_mut(),
            *self.resp_failed.get_mut(),
            *self.req_failed.get_mut(),
        );
        let metrics = &self.live.metrics;

        let snapshot = rec.snapshot.as_deref();
        if snapshot.is_some_and(|s| s.request_metrics) {
            request_metrics::record(metrics, &ex, rec.status, total);
        }

        let up = &rec.upstream;
        ex.trace("completion", || {
            json!({
                "status": rec.status,
                "fault_code": rec.fault_code,
                "request_bytes": request_bytes,
                "response_bytes": response_bytes,
                "complete": complete,
                "outcome": outcome.as_str(),
                "duration_us": micros(total),
            })
        });

        let log = snapshot.and_then(|s| s.access_log.as_deref());
        let human = tracing::enabled!(target: "gatehouse::access", tracing::Level::INFO);
        if let (Some(fields), true) = (&rec.access, log.is_some() || human) {
            let tls = ex.conn.tls.as_ref();
            // A secret in a path or host (a token in a query, say) is not
            // written to the log.
            let secrets = snapshot.map(|s| &s.secrets).filter(|s| !s.is_empty());
            let path = match secrets {
                Some(s) => std::borrow::Cow::Owned(s.redact(&fields.path)),
                None => std::borrow::Cow::Borrowed(fields.path.as_str()),
            };
            let host = match secrets {
                Some(s) => std::borrow::Cow::Owned(s.redact(&fields.host)),
                None => std::borrow::Cow::Borrowed(fields.host.as_str()),
            };
            // When the request arrived, read off the wall clock only for
            // requests that are logged.
            let arrived = SystemTime::now()
                .checked_sub(total)
                .unwrap_or_else(SystemTime::now);
            let stamp = crate::observe::Stamp::of(arrived);
            let line = Line {
                time: stamp.as_str(),
                request_id: ex.request_id.as_str(),
                client_ip: ex.conn.client_ip_header.to_str().unwrap_or(""),
                client_port: ex.conn.client.port(),
                listener: &ex.conn.listener,
                sni: tls.and_then(|t| t.sni.as_deref()),
                alpn: tls.and_then(|t| t.alpn.as_deref()),
                tls_version: tls.map(|t| t.version),
                client_cert_sha256: tls
                    .and_then(|t| t.client_cert())
                    .map(|c| c.thumbprint_sha256.as_str()),
                method: fields.method.as_str(),
                host: &host,
                path: &path,
                api: (!ex.route.api.is_empty()).then_some(&*ex.route.api),
                operation: ex.route.operation.as_deref(),
                status: rec.status,
                request_bytes,
                response_bytes,
                complete,
                outcome: outcome.as_str(),
                duration_us: micros(total),
                upstream: up.name.as_deref(),
                upstream_address: up.address.as_deref(),
                upstream_connect_us: up.connect.map(micros),
                upstream_first_byte_us: up.first_byte.map(micros),
                fault_code: rec.fault_code.as_deref(),
            };
            if let Some(log) = log {
                log.write_with(|buf| line.write_json(buf));
            }
            if human {
                // Enough to tell two refusals apart without a trace: the
                // fault code (none: the status is the upstream's), where the
                // request went, and who sent it.
                tracing::info!(
                    target: "gatehouse::access",
                    request_id = line.request_id,
                    client = %ex.conn.client,
                    host = line.host,
                    method = line.method,
                    path = line.path,
                    status = line.status,
                    fault = line.fault_code.unwrap_or("-"),
                    api = line.api.unwrap_or("-"),
                    operation = line.operation.unwrap_or("-"),
                    upstream = line.upstream.unwrap_or("-"),
                    outcome = line.outcome,
                    request_bytes,
                    response_bytes,
                    elapsed_us = line.duration_us,
                );
            }
        }

        if !rec.completion_steps.is_empty() {
            let info = CompletionInfo {
                status: rec.status,
                fault_code: rec.fault_code.clone(),
                request_bytes,
                response_bytes,
                complete,
                duration_us: micros(total),
                upstream_connect_us: up.connect.map(micros),
                upstream_first_byte_us: up.first_byte.map(micros),
            };
            for step in &rec.completion_steps {
                ex = step.pool.on_complete(ex, &step.scope, &info);
            }
        }
    }
}

/// How an exchange ended, for the access log and the trace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    /// The response went out in full (and the request body came in).
    Complete,
    /// No response head was sent: the client left first.
    NoResponse,
    /// The response body broke on the upstream's side (reset, stalled).
    UpstreamAborted,
    /// The client stopped taking the response (left, reset the stream, or
    /// read too slowly) before it was all sent.
    ClientAborted,
    /// The response went out, but the request body did not all arrive.
    RequestAborted,
}

impl Outcome {
    fn of(status: u16, resp_done: bool, resp_failed: bool, req_failed: bool) -> Self {
        if status == 0 {
            Outcome::NoResponse
        } else if resp_failed {
            Outcome::UpstreamAborted
        } else if !resp_done {
            Outcome::ClientAborted
        } else if req_failed {
            Outcome::RequestAborted
        } else {
            Outcome::Complete
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Outcome::Complete => "complete",
            Outcome::NoResponse => "no_response",
            Outcome::UpstreamAborted => "upstream_aborted",
            Outcome::ClientAborted => "client_aborted",
            Outcome::RequestAborted => "request_aborted",
        }
    }
}

/// A body whose data bytes are counted into the request's completion
/// state (request side or response side); on the request side it also
/// enforces the body size limit and the idle timeout.
pub struct Counted<B> {
    inner: B,
    state: Arc<State>,
    response: bool,
    max: u64,
    idle: Option<Duration>,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<B> Counted<B> {
    fn done(&self) {
        if self.response {
            self.state.resp_done.store(true, Ordering::Relaxed);
        } else {
            self.state.req_done.store(true, Ordering::Release);
        }
    }
}

impl<B> Drop for Counted<B> {
    fn drop(&mut self) {
        // The response went out (or the client left): an upload paused by
        // an early answer is abandoned, which ends the upstream exchange.
        if self.response
            && self
                .state
                .upload
                .compare_exchange(
                    UPLOAD_PAUSED,
                    UPLOAD_ABANDONED,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok()
        {
            self.state.upload_waker.wake();
        }
    }
}

impl<B> Counted<B> {
    fn cut(&self, why: BodyCut) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let code = match why {
            BodyCut::TooLarge(_) => 1,
            BodyCut::Idle(_) => 2,
        };
        self.state.req_cut.store(code, Ordering::Relaxed);
        self.state.req_failed.store(true, Ordering::Relaxed);
        Poll::Ready(Some(Err(Box::new(why))))
    }
}

impl<B> HttpBody for Counted<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if !this.response {
            match this.state.upload.load(Ordering::Acquire) {
                UPLOAD_OPEN => {}
                UPLOAD_PAUSED => {
                    this.state.upload_waker.register(cx.waker());
                    match this.state.upload.load(Ordering::Acquire) {
                        UPLOAD_PAUSED => return Poll::Pending,
                        UPLOAD_ABANDONED => {
                            return Poll::Ready(Some(Err(Box::new(UploadAbandoned))))
                        }
                        _ => {}
                    }
                }
                _ => return Poll::Ready(Some(Err(Box::new(UploadAbandoned)))),
            }
        }
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    let counter = if this.response {
                        &this.state.resp_bytes
                    } else {
                        &this.state.req_bytes
                    };
                    let total =
                        counter.fetch_add(d.len() as u64, Ordering::Relaxed) + d.len() as u64;
                    if this.max > 0 && total > this.max {
                        return this.cut(BodyCut::TooLarge(this.max));
                    }
                }
                if let Some(idle) = this.idle {
                    super::body::idle_reset(&mut this.sleep, idle);
                }
                if this.inner.is_end_stream() {
                    this.done();
                }
            }
            Poll::Ready(None) => this.done(),
            Poll::Ready(Some(Err(_))) if !this.response => {
                this.state.req_failed.store(true, Ordering::Relaxed);
            }
            Poll::Ready(Some(Err(_))) => {
                this.state.resp_failed.store(true, Ordering::Relaxed);
            }
            Poll::Pending => {
                if let Some(idle) = this.idle {
                    if super::body::idle_fired(&mut this.sleep, idle, cx) {
                        return this.cut(BodyCut::Idle(idle));
                    }
                }
                return Poll::Pending;
            }
        }
        polled.map(|f| f.map(|r| r.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        let end = self.inner.is_end_stream();
        if end {
            self.done();
        }
        end
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::Line;

    #[test]
    fn access_log_lines_are_json_with_every_field_escaped() {
        let line = Line {
            time: "2026-12-01T22:07:46.123456Z",
            request_id: "0123456789abcdef",
            client_ip: "::1",
            client_port: 50000,
            listener: "main",
            sni: None,
            alpn: Some("h2"),
            tls_version: Some("TLSv1.3"),
            client_cert_sha256: None,
            method: "GET",
            host: "a.test",
            path: "/q\"uote\\back\u{1}ctl/é",
            api: Some("orders"),
            operation: None,
            status: 200,
            request_bytes: 0,
            response_bytes: 1 << 40,
            complete: true,
            outcome: "complete",
            duration_us: 17,
            upstream: Some("app"),
            upstream_address: Some("127.0.0.1:8080"),
            upstream_connect_us: None,
            upstream_first_byte_us: Some(9),
            fault_code: None,
        };
        let mut buf = Vec::new();
        line.write_json(&mut buf).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&buf).unwrap();
        assert_eq!(v["path"], "/q\"uote\\back\u{1}ctl/é");
        assert_eq!(v["response_bytes"], 1u64 << 40);
        assert_eq!(v["client_port"], 50000);
        assert!(
            v.get("sni").is_none(),
            "fields that do not apply are left out"
        );
        assert!(v.get("operation").is_none());
        assert_eq!(v["complete"], true);
        assert_eq!(v["upstream_first_byte_us"], 9);
        assert_eq!(v["outcome"], "complete");
        assert_eq!(v.as_object().unwrap().len(), 20);
    }
}
