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
use serde::Serialize;
use serde_json::json;

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
    resp_bytes: AtomicU64,
    resp_done: AtomicBool,
    record: Mutex<Record>,
}

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
                resp_bytes: AtomicU64::new(0),
                resp_done: AtomicBool::new(false),
                record: Mutex::new(Record::default()),
            }),
            parked: None,
            snapshot: None,
            access: None,
            upstream: UpstreamFacts::default(),
            completion_steps: Vec::new(),
            status: 0,
            fault_code: None,
        }
    }

    /// Whether reading the client's request body failed (the client left or
    /// broke the framing before sending all of it).
    pub fn request_body_failed(&self) -> bool {
        self.state.req_failed.load(Ordering::Relaxed)
    }

    /// Wraps the client's request body so its bytes are counted.
    pub fn count_request<B>(&self, body: B) -> Counted<B> {
        Counted {
            inner: body,
            state: self.state.clone(),
            response: false,
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
        self.status = resp.status().as_u16();
        self.fault_code = fault_code;
        self.parked = Some(ex);
        let state = self.state.clone();
        drop(self);
        resp.map(|b| {
            super::body::boxed(Counted {
                inner: b,
                state,
                response: true,
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

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// One access-log line.
#[derive(Serialize)]
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
    duration_us: u64,
    upstream: Option<&'a str>,
    upstream_address: Option<&'a str>,
    upstream_connect_us: Option<u64>,
    upstream_first_byte_us: Option<u64>,
    fault_code: Option<&'a str>,
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
        let metrics = &self.live.metrics;

        let snapshot = rec.snapshot.as_deref();
        if snapshot.is_some_and(|s| s.request_metrics) {
            let api = ex.route.api.clone();
            let operation = ex.route.operation.clone().unwrap_or_else(empty);
            metrics
                .requests
                .get_or_create(&RequestLabels {
                    listener: ex.conn.listener.clone(),
                    api: api.clone(),
                    operation,
                    status: rec.status,
                })
                .inc();
            metrics
                .request_duration
                .get_or_create(&ApiLabels {
                    listener: ex.conn.listener.clone(),
                    api,
                })
                .observe(total);
        }

        let up = &rec.upstream;
        ex.trace("completion", || {
            json!({
                "status": rec.status,
                "fault_code": rec.fault_code,
                "request_bytes": request_bytes,
                "response_bytes": response_bytes,
                "complete": complete,
                "duration_us": micros(total),
            })
        });

        let log = snapshot.and_then(|s| s.access_log.as_deref());
        let human = tracing::enabled!(target: "gatehouse::access", tracing::Level::INFO);
        if let (Some(fields), true) = (&rec.access, log.is_some() || human) {
            let tls = ex.conn.tls.as_ref();
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
                    .and_then(|t| t.client_cert.as_ref())
                    .map(|c| c.thumbprint_sha256.as_str()),
                method: fields.method.as_str(),
                host: &fields.host,
                path: &fields.path,
                api: (!ex.route.api.is_empty()).then_some(&*ex.route.api),
                operation: ex.route.operation.as_deref(),
                status: rec.status,
                request_bytes,
                response_bytes,
                complete,
                duration_us: micros(total),
                upstream: up.name.as_deref(),
                upstream_address: up.address.as_deref(),
                upstream_connect_us: up.connect.map(micros),
                upstream_first_byte_us: up.first_byte.map(micros),
                fault_code: rec.fault_code.as_deref(),
            };
            if let Some(log) = log {
                log.write_with(|buf| serde_json::to_writer(buf, &line));
            }
            if human {
                tracing::info!(
                    target: "gatehouse::access",
                    request_id = line.request_id,
                    method = line.method,
                    path = line.path,
                    status = line.status,
                    request_bytes,
                    response_bytes,
                    elapsed_us = line.duration_us,
                    fault = line.fault_code,
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

/// A body whose data bytes are counted into the request's completion
/// state (request side or response side).
pub struct Counted<B> {
    inner: B,
    state: Arc<State>,
    response: bool,
}

impl<B> Counted<B> {
    fn done(&self) {
        if self.response {
            self.state.resp_done.store(true, Ordering::Relaxed);
        }
    }
}

impl<B> HttpBody for Counted<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    let counter = if this.response {
                        &this.state.resp_bytes
                    } else {
                        &this.state.req_bytes
                    };
                    counter.fetch_add(d.len() as u64, Ordering::Relaxed);
                }
                if this.inner.is_end_stream() {
                    this.done();
                }
            }
            Poll::Ready(None) => this.done(),
            Poll::Ready(Some(Err(_))) if !this.response => {
                this.state.req_failed.store(true, Ordering::Relaxed);
            }
            _ => {}
        }
        polled
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
