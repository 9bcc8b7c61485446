//! Upstream connections: a keep-alive pool per upstream *per worker
//! thread*, over one or several addresses.
//!
//! A connection belongs to the thread (and single-threaded runtime) that
//! opened it, so each [`Connector`] keeps one slot per worker thread
//! ([`crate::worker::index`]): a worker only touches its own slot, so its
//! lock is never contended and no connection crosses threads. HTTP/1.1
//! senders go back to the pool as soon as the response head arrives; one
//! whose previous response is still streaming is simply not ready yet and
//! is skipped. An HTTP/2 connection stays in the pool while it is used:
//! requests share it, up to the streams the upstream allows.
//!
//! Limits: `max_connections` over all workers (a semaphore permit lives
//! with each connection's task; a request that gets none within the
//! connect timeout is refused), `max_idle_connections` per worker,
//! `idle_timeout_ms`, `max_connection_lifetime_ms`. New connections go to
//! the addresses in turn; an address whose connects fail
//! `eject_after_connect_failures` times in a row is left out for
//! `eject_for_ms`, then tried again.
//!
//! The pools live and die with their connector: when a reload removes an
//! upstream (or changes its settings), the last snapshot holding it drops
//! it, and its idle connections close.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsConnector;

use super::body::Body;
use crate::config::UpstreamProtocol;
use crate::tls::client::{find_rustls_error, ClientAuthRecord, TlsFailure, UpstreamTlsConfig};

/// A connection's request sender.
enum Sender {
    H1(http1::SendRequest<Body>),
    H2(http2::SendRequest<Body>),
}

impl Sender {
    fn is_closed(&self) -> bool {
        match self {
            Sender::H1(s) => s.is_closed(),
            Sender::H2(s) => s.is_closed(),
        }
    }
    fn is_ready(&self) -> bool {
        match self {
            Sender::H1(s) => s.is_ready(),
            Sender::H2(s) => s.is_ready(),
        }
    }
}

struct Idle {
    sender: Sender,
    /// When it was last checked in.
    since: Instant,
    /// When it was opened.
    born: Instant,
    /// The address it goes to (index in the connector's addresses).
    addr: usize,
}

/// One address of an upstream, with its passive health.
struct Address {
    host: String,
    port: u16,
    /// `host:port`, for logs and traces.
    label: Arc<str>,
    /// Connects that failed in a row.
    failures: AtomicU32,
    /// Left out until this many milliseconds after the connector's epoch
    /// (0: in service).
    ejected_until: AtomicU64,
}

/// Why a request to an upstream failed.
#[derive(Debug)]
pub enum SendError {
    /// The upstream's host name did not resolve.
    Resolve(std::io::Error),
    /// TCP connect failed.
    Connect(std::io::Error),
    /// TCP connect plus TLS handshake took longer than the connect timeout.
    ConnectTimeout(Duration),
    /// No connection could be had within the connect timeout: the
    /// upstream's `max_connections` are all open.
    PoolExhausted(usize),
    /// The TLS handshake failed, or the upstream refused it right after
    /// (a TLS 1.3 server refuses a client certificate on the first
    /// read): the cause and what the handshake did.
    Tls(Box<TlsFailure>),
    /// An `http2` upstream did not agree to HTTP/2 in ALPN.
    NoHttp2,
    /// The HTTP exchange failed.
    Http(hyper::Error),
}

/// How the connection a request went out on was obtained.
#[derive(Clone, Debug, Default)]
pub struct SendTiming {
    /// TCP connect, when a new connection was opened.
    pub connect: Option<Duration>,
    /// TLS handshake, when a new TLS connection was opened.
    pub tls: Option<Duration>,
    /// What that handshake did about client certificates.
    pub client_auth: Option<ClientAuthRecord>,
    /// The address the request went to (`host:port`).
    pub address: Option<Arc<str>>,
    /// Whether it went over HTTP/2.
    pub http2: bool,
}

/// A connector's settings.
pub struct Settings {
    /// Worker threads (one pool slot each, plus one for other threads).
    pub workers: usize,
    /// `(host, port)` to connect to, in turn.
    pub addresses: Vec<(String, u16)>,
    /// TLS, for `https://`.
    pub tls: Option<UpstreamTlsConfig>,
    /// HTTP/1.1, HTTP/2, or as ALPN decides.
    pub protocol: UpstreamProtocol,
    /// Time to open a connection (and to wait for a free one).
    pub connect_timeout: Duration,
    /// An idle connection older than this is not reused.
    pub idle_timeout: Duration,
    /// Idle connections kept per worker.
    pub max_idle: usize,
    /// Connections open at once, over all workers.
    pub max_connections: usize,
    /// A connection is not reused once this old.
    pub max_lifetime: Option<Duration>,
    /// Consecutive connect failures that eject an address (0: never).
    pub eject_after: u32,
    /// How long an ejected address stays out.
    pub eject_for: Duration,
}

/// How to reach one upstream, and its per-worker pools.
pub struct Connector {
    pools: Box<[Mutex<Vec<Idle>>]>,
    /// Per worker: held while an HTTP/2 connection is being opened, so a
    /// burst of requests shares the one being made instead of each
    /// opening its own.
    h2_connecting: Box<[tokio::sync::Mutex<()>]>,
    addresses: Vec<Address>,
    next: AtomicUsize,
    epoch: Instant,
    permits: Arc<Semaphore>,
    max_connections: usize,
    tls: Option<UpstreamTlsConfig>,
    protocol: UpstreamProtocol,
    connect_timeout: Duration,
    idle_timeout: Duration,
    max_idle: usize,
    max_lifetime: Option<Duration>,
    eject_after: u32,
    eject_for: Duration,
}

impl Connector {
    /// A connector with the given settings.
    pub fn new(s: Settings) -> Self {
        let addresses = s
            .addresses
            .into_iter()
            .map(|(host, port)| Address {
                label: Arc::from(if host.contains(':') {
                    format!("[{host}]:{port}")
                } else {
                    format!("{host}:{port}")
                }),
                host,
                port,
                failures: AtomicU32::new(0),
                ejected_until: AtomicU64::new(0),
            })
            .collect();
        Connector {
            pools: (0..s.workers.max(1) + 1)
                .map(|_| Mutex::new(Vec::new()))
                .collect(),
            h2_connecting: (0..s.workers.max(1) + 1)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
            addresses,
            next: AtomicUsize::new(0),
            epoch: Instant::now(),
            permits: Arc::new(Semaphore::new(s.max_connections.max(1))),
            max_connections: s.max_connections.max(1),
            tls: s.tls,
            protocol: s.protocol,
            connect_timeout: s.connect_timeout,
            idle_timeout: s.idle_timeout,
            max_idle: s.max_idle,
            max_lifetime: s.max_lifetime,
            eject_after: s.eject_after,
            eject_for: s.eject_for,
        }
    }

    /// Sends `req` on a pooled connection, or a new one.
    ///
    /// A pooled connection may have been closed by the upstream after it
    /// was last checked. A request it could not even start is sent again on
    /// a new connection; so is a bodiless `GET`, `HEAD` or `OPTIONS` that
    /// failed before any response on a connection that had been idle for a
    /// while (replaying those is safe). A new connection that cannot be
    /// opened to one address is tried once at the next one, for requests
    /// that are safe to repeat (nothing was sent).
    pub async fn send(
        &self,
        req: Request<Body>,
        timing: &mut SendTiming,
    ) -> Result<Response<Incoming>, SendError> {
        let mut found = self.checkout();
        let may_be_h2 = match self.protocol {
            UpstreamProtocol::Http1 => false,
            UpstreamProtocol::Http2 => true,
            UpstreamProtocol::Auto => self.tls.is_some(),
        };
        let mut _connecting = None;
        if found.is_none() && may_be_h2 {
            // Wait for a connection another request of this worker is
            // opening, then look again.
            let lock = &self.h2_connecting[crate::worker::index() % self.h2_connecting.len()];
            _connecting = Some(lock.lock().await);
            found = self.checkout();
        }
        let Some((sender, idle_for, addr, born)) = found else {
            return self.send_new(req, timing, _connecting).await;
        };
        drop(_connecting);
        timing.address = Some(self.addresses[addr].label.clone());
        match sender {
            Sender::H2(mut s) => {
                timing.http2 = true;
                s.send_request(req).await.map_err(SendError::Http)
            }
            Sender::H1(mut sender) => {
                let replay = (idle_for > Duration::from_secs(1) && is_replayable(&req))
                    .then(|| copy_head(&req));
                match sender.try_send_request(req).await {
                    Ok(resp) => {
                        self.checkin(Sender::H1(sender), addr, born);
                        Ok(resp)
                    }
                    Err(mut e) => {
                        if let Some(req) = e.take_message() {
                            return self.send_new(req, timing, None).await;
                        }
                        let err = e.into_error();
                        match replay {
                            Some(req)
                                if err.is_incomplete_message()
                                    || err.is_canceled()
                                    || err.is_closed() =>
                            {
                                tracing::debug!(
                                    "upstream closed an idle connection ({err}); replaying the request"
                                );
                                self.send_new(req, timing, None).await
                            }
                            _ => Err(SendError::Http(err)),
                        }
                    }
                }
            }
        }
    }

    /// Sends on a new connection. `connecting` (HTTP/2) is released as
    /// soon as the connection is in the pool, for other requests to share.
    async fn send_new(
        &self,
        req: Request<Body>,
        timing: &mut SendTiming,
        connecting: Option<tokio::sync::MutexGuard<'_, ()>>,
    ) -> Result<Response<Incoming>, SendError> {
        let first = self.pick();
        let (sender, ended, addr) = match self.connect(first, timing).await {
            Ok((s, e)) => (s, e, first),
            Err(err) => {
                // Nothing was sent: an idempotent request may try the next
                // address once.
                let may_retry = self.addresses.len() > 1
                    && is_idempotent(&req)
                    && matches!(err, SendError::Connect(_) | SendError::Resolve(_));
                if !may_retry {
                    return Err(err);
                }
                let second = self.pick();
                if second == first {
                    return Err(err);
                }
                tracing::debug!(
                    address = %self.addresses[first].label,
                    "connect failed; trying {}",
                    self.addresses[second].label
                );
                let (s, e) = self.connect(second, timing).await?;
                (s, e, second)
            }
        };
        timing.address = Some(self.addresses[addr].label.clone());
        let born = Instant::now();
        let result = match sender {
            Sender::H2(mut s) => {
                timing.http2 = true;
                // Shared from the start: other requests may use it now.
                self.checkin(Sender::H2(s.clone()), addr, born);
                drop(connecting);
                s.send_request(req).await
            }
            Sender::H1(mut s) => {
                drop(connecting);
                let r = s.send_request(req).await;
                if r.is_ok() {
                    self.checkin(Sender::H1(s), addr, born);
                }
                r
            }
        };
        match result {
            Ok(resp) => Ok(resp),
            Err(e) => {
                // A TLS 1.3 upstream refuses a client certificate after
                // the handshake, on the first read: that is a handshake
                // failure too, with the same explanation. The request may
                // only see "canceled"; the connection's own error says why.
                let Some(tls) = &self.tls else {
                    return Err(SendError::Http(e));
                };
                let found = match find_rustls_error(&e) {
                    Some(r) => Some(r.clone()),
                    None => tokio::time::timeout(Duration::from_secs(1), ended)
                        .await
                        .ok()
                        .and_then(Result::ok)
                        .flatten(),
                };
                Err(match found {
                    Some(r) => SendError::Tls(Box::new(TlsFailure::classify(
                        Some(&r),
                        &e.to_string(),
                        timing.client_auth.clone().unwrap_or_default(),
                        tls.keystore(),
                    ))),
                    None => SendError::Http(e),
                })
            }
        }
    }

    /// Milliseconds since the connector was made.
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn in_service(&self, a: &Address, now: u64) -> bool {
        a.ejected_until.load(Ordering::Relaxed) <= now
    }

    /// The next address for a new connection: in turn, skipping ejected
    /// ones; when all are ejected, the one that comes back first.
    fn pick(&self) -> usize {
        let n = self.addresses.len();
        if n == 1 {
            return 0;
        }
        let now = self.now_ms();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|k| (start + k) % n)
            .find(|&i| self.in_service(&self.addresses[i], now))
            .unwrap_or_else(|| {
                (0..n)
                    .min_by_key(|&i| self.addresses[i].ejected_until.load(Ordering::Relaxed))
                    .unwrap_or(0)
            })
    }

    fn connect_failed(&self, addr: usize) {
        let a = &self.addresses[addr];
        let failures = a.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if self.eject_after > 0 && failures >= self.eject_after {
            let until = self.now_ms() + self.eject_for.as_millis() as u64;
            if a.ejected_until.swap(until, Ordering::Relaxed) <= self.now_ms() {
                tracing::warn!(
                    address = %a.label,
                    failures,
                    "upstream address left out for {} ms after {failures} failed connects in a row",
                    self.eject_for.as_millis()
                );
            }
            a.failures.store(0, Ordering::Relaxed);
        }
    }

    fn connect_succeeded(&self, addr: usize) {
        let a = &self.addresses[addr];
        a.failures.store(0, Ordering::Relaxed);
        a.ejected_until.store(0, Ordering::Relaxed);
    }

    /// A ready pooled sender (cloned for HTTP/2, taken for HTTP/1.1), how
    /// long it has been idle, its address, and when it was opened.
    fn checkout(&self) -> Option<(Sender, Duration, usize, Instant)> {
        let mut pool = self.slot().lock().ok()?;
        let now = Instant::now();
        let now_ms = self.now_ms();
        pool.retain(|i| {
            !i.sender.is_closed()
                && now.duration_since(i.since) < self.idle_timeout
                && self
                    .max_lifetime
                    .is_none_or(|l| now.duration_since(i.born) < l)
                && self.in_service(&self.addresses[i.addr], now_ms)
        });
        // Most recently used first: its connection is the warmest.
        let pos = pool.iter().rposition(|i| i.sender.is_ready())?;
        if let Sender::H2(s) = &pool[pos].sender {
            let s = s.clone();
            let (addr, born) = (pool[pos].addr, pool[pos].born);
            pool[pos].since = now;
            return Some((Sender::H2(s), Duration::ZERO, addr, born));
        }
        let idle = pool.swap_remove(pos);
        Some((
            idle.sender,
            now.duration_since(idle.since),
            idle.addr,
            idle.born,
        ))
    }

    /// This thread's pool.
    fn slot(&self) -> &Mutex<Vec<Idle>> {
        &self.pools[crate::worker::index() % self.pools.len()]
    }

    /// The host name or address of the first address.
    pub fn host(&self) -> &str {
        self.addresses.first().map_or("", |a| a.host.as_str())
    }

    /// `host:port` of every address, joined by `, `.
    pub fn address(&self) -> String {
        self.addresses
            .iter()
            .map(|a| a.label.as_ref())
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn checkin(&self, sender: Sender, addr: usize, born: Instant) {
        if let Ok(mut pool) = self.slot().lock() {
            if pool.len() < self.max_idle {
                pool.push(Idle {
                    sender,
                    since: Instant::now(),
                    born,
                    addr,
                });
            }
            // Otherwise the sender is dropped: its connection closes once
            // the response in flight is done.
        }
    }

    /// Opens a connection to address `addr`: its sender, and how its
    /// connection task ended (the rustls error, if that is what ended it).
    async fn connect(
        &self,
        addr: usize,
        timing: &mut SendTiming,
    ) -> Result<(Sender, Ended), SendError> {
        let a = &self.addresses[addr];
        timing.address = Some(a.label.clone());
        let connecting = async {
            // A slot under max_connections, held by the connection's task.
            let permit = self
                .permits
                .clone()
                .acquire_owned()
                .await
                .map_err(|_| SendError::PoolExhausted(self.max_connections))?;
            let started = Instant::now();
            // Resolving apart from connecting tells the two failures apart
            // (an IP address resolves without a lookup).
            let addrs: Vec<std::net::SocketAddr> =
                tokio::net::lookup_host((a.host.as_str(), a.port))
                    .await
                    .map_err(SendError::Resolve)?
                    .collect();
            let tcp = TcpStream::connect(addrs.as_slice())
                .await
                .map_err(SendError::Connect)?;
            timing.connect = Some(started.elapsed());
            let _ = tcp.set_nodelay(true);
            let tcp = KeepReading::new(tcp);
            match &self.tls {
                None => {
                    let h2 = self.protocol == UpstreamProtocol::Http2;
                    handshake(TokioIo::new(tcp), h2, permit).await
                }
                Some(tls) => {
                    let started = Instant::now();
                    let (config, record) = tls.for_connection();
                    let connected = TlsConnector::from(config)
                        .connect(tls.server_name.clone(), tcp)
                        .await;
                    let record = record.lock().map(|r| r.clone()).unwrap_or_default();
                    let stream = match connected {
                        Ok(s) => s,
                        Err(e) => {
                            let inner: &(dyn std::error::Error + 'static) = &e;
                            return Err(SendError::Tls(Box::new(TlsFailure::classify(
                                find_rustls_error(inner),
                                &e.to_string(),
                                record,
                                tls.keystore(),
                            ))));
                        }
                    };
                    timing.tls = Some(started.elapsed());
                    timing.client_auth = Some(record);
                    let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                    if self.protocol == UpstreamProtocol::Http2 && !h2 {
                        return Err(SendError::NoHttp2);
                    }
                    handshake(TokioIo::new(stream), h2, permit).await
                }
            }
        };
        let r = match tokio::time::timeout(self.connect_timeout, connecting).await {
            Ok(r) => r,
            Err(_) if self.permits.available_permits() == 0 => {
                Err(SendError::PoolExhausted(self.max_connections))
            }
            Err(_) => Err(SendError::ConnectTimeout(self.connect_timeout)),
        };
        match &r {
            Ok(_) => self.connect_succeeded(addr),
            Err(SendError::Connect(_) | SendError::ConnectTimeout(_) | SendError::Resolve(_)) => {
                self.connect_failed(addr)
            }
            Err(_) => {}
        }
        r
    }
}

/// How a connection's task ended: the rustls error when one ended it.
type Ended = tokio::sync::oneshot::Receiver<Option<rustls::Error>>;

async fn handshake<I>(
    io: TokioIo<I>,
    h2: bool,
    permit: OwnedSemaphorePermit,
) -> Result<(Sender, Ended), SendError>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    let sender = if h2 {
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .handshake(io)
            .await
            .map_err(SendError::Http)?;
        tokio::spawn(async move {
            let _permit = permit;
            let mut tls = None;
            if let Err(e) = conn.await {
                tracing::debug!("upstream connection ended: {e}");
                tls = find_rustls_error(&e).cloned();
            }
            let _ = tx.send(tls);
        });
        Sender::H2(sender)
    } else {
        let (sender, conn) = http1::Builder::new()
            .handshake(io)
            .await
            .map_err(SendError::Http)?;
        tokio::spawn(async move {
            let _permit = permit;
            let mut tls = None;
            if let Err(e) = conn.await {
                tracing::debug!("upstream connection ended: {e}");
                tls = find_rustls_error(&e).cloned();
            }
            // Nobody listens once the first request went through.
            let _ = tx.send(tls);
        });
        Sender::H1(sender)
    };
    Ok((sender, rx))
}

/// An upstream connection that keeps reading after the upstream stopped
/// reading: once a write fails because the upstream closed or reset its
/// side (it answered before reading the whole request body, say), later
/// writes are dropped as if sent, so that hyper still reads the response
/// the upstream sent before closing instead of failing the exchange with
/// the write error. An upstream that sent nothing still fails it: the read
/// side ends too.
struct KeepReading<S> {
    inner: S,
    stopped: bool,
}

impl<S> KeepReading<S> {
    fn new(inner: S) -> Self {
        KeepReading {
            inner,
            stopped: false,
        }
    }

    fn swallow(&mut self, r: std::io::Result<usize>, len: usize) -> std::io::Result<usize> {
        match r {
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
                ) =>
            {
                tracing::debug!(
                    "the upstream stopped reading ({e}); the rest of the request is dropped"
                );
                self.stopped = true;
                Ok(len)
            }
            r => r,
        }
    }
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for KeepReading<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for KeepReading<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        if self.stopped {
            return std::task::Poll::Ready(Ok(buf.len()));
        }
        let r = std::task::ready!(std::pin::Pin::new(&mut self.inner).poll_write(cx, buf));
        std::task::Poll::Ready(self.swallow(r, buf.len()))
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let len = bufs.iter().map(|b| b.len()).sum();
        if self.stopped {
            return std::task::Poll::Ready(Ok(len));
        }
        let r =
            std::task::ready!(std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs));
        std::task::Poll::Ready(self.swallow(r, len))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if self.stopped {
            return std::task::Poll::Ready(Ok(()));
        }
        let r = std::task::ready!(std::pin::Pin::new(&mut self.inner).poll_flush(cx));
        std::task::Poll::Ready(self.swallow(r.map(|()| 0), 0).map(|_| ()))
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if self.stopped {
            return std::task::Poll::Ready(Ok(()));
        }
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Whether a request may be sent again when nothing of it was sent:
/// RFC 9110's idempotent methods.
fn is_idempotent(req: &Request<Body>) -> bool {
    matches!(
        *req.method(),
        http::Method::GET
            | http::Method::HEAD
            | http::Method::OPTIONS
            | http::Method::PUT
            | http::Method::DELETE
            | http::Method::TRACE
    )
}

fn is_replayable(req: &Request<Body>) -> bool {
    use http_body::Body as _;
    matches!(
        *req.method(),
        http::Method::GET | http::Method::HEAD | http::Method::OPTIONS
    ) && req.body().is_end_stream()
}

fn copy_head(req: &Request<Body>) -> Request<Body> {
    let mut copy = Request::new(super::body::empty());
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    copy
}
