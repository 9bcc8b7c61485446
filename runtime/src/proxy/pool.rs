//! Upstream connections: a keep-alive pool per upstream *per worker
//! thread*.
//!
//! A connection belongs to the thread (and single-threaded runtime) that
//! opened it, so each [`Connector`] keeps one slot per worker thread
//! ([`crate::worker::index`]): a worker only touches its own slot, so its
//! lock is never contended and no connection crosses threads. Senders go
//! back to the pool as soon as the response head arrives; one whose
//! previous response is still streaming is simply not ready yet and is
//! skipped.
//!
//! The pools live and die with their connector: when a reload removes an
//! upstream (or changes its settings), the last snapshot holding it drops
//! it, and its idle connections close.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::body::Body;
use crate::tls::client::{find_rustls_error, ClientAuthRecord, TlsFailure, UpstreamTlsConfig};

struct Idle {
    sender: SendRequest<Body>,
    since: Instant,
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
    /// The TLS handshake failed, or the upstream refused it right after
    /// (a TLS 1.3 server refuses a client certificate on the first
    /// read): the cause and what the handshake did.
    Tls(Box<TlsFailure>),
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
}

/// How to reach one upstream, and its per-worker pools.
pub struct Connector {
    pools: Box<[Mutex<Vec<Idle>>]>,
    host: String,
    port: u16,
    tls: Option<UpstreamTlsConfig>,
    connect_timeout: Duration,
    idle_timeout: Duration,
    max_idle: usize,
}

impl Connector {
    /// A connector to `host:port`, over TLS when `tls` is given, with a
    /// pool slot for each of `workers` worker threads (and one for any
    /// other thread).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        workers: usize,
        host: String,
        port: u16,
        tls: Option<UpstreamTlsConfig>,
        connect_timeout: Duration,
        idle_timeout: Duration,
        max_idle: usize,
    ) -> Self {
        Connector {
            pools: (0..workers.max(1) + 1)
                .map(|_| Mutex::new(Vec::new()))
                .collect(),
            host,
            port,
            tls,
            connect_timeout,
            idle_timeout,
            max_idle,
        }
    }

    /// Sends `req` on a pooled connection, or a new one.
    ///
    /// A pooled connection may have been closed by the upstream after it
    /// was last checked. A request it could not even start is sent again on
    /// a new connection; so is a bodiless `GET`, `HEAD` or `OPTIONS` that
    /// failed before any response on a connection that had been idle for a
    /// while (replaying those is safe).
    pub async fn send(
        &self,
        req: Request<Body>,
        timing: &mut SendTiming,
    ) -> Result<Response<Incoming>, SendError> {
        let Some((mut sender, idle_for)) = self.checkout() else {
            return self.send_new(req, timing).await;
        };
        let replay =
            (idle_for > Duration::from_secs(1) && is_replayable(&req)).then(|| copy_head(&req));
        match sender.try_send_request(req).await {
            Ok(resp) => {
                self.checkin(sender);
                Ok(resp)
            }
            Err(mut e) => {
                if let Some(req) = e.take_message() {
                    return self.send_new(req, timing).await;
                }
                let err = e.into_error();
                match replay {
                    Some(req)
                        if err.is_incomplete_message() || err.is_canceled() || err.is_closed() =>
                    {
                        tracing::debug!(
                            "upstream closed an idle connection ({err}); replaying the request"
                        );
                        self.send_new(req, timing).await
                    }
                    _ => Err(SendError::Http(err)),
                }
            }
        }
    }

    async fn send_new(
        &self,
        req: Request<Body>,
        timing: &mut SendTiming,
    ) -> Result<Response<Incoming>, SendError> {
        let (mut sender, ended) = self.connect(timing).await?;
        let resp = match sender.send_request(req).await {
            Ok(r) => r,
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
                return Err(match found {
                    Some(r) => SendError::Tls(Box::new(TlsFailure::classify(
                        Some(&r),
                        &e.to_string(),
                        timing.client_auth.clone().unwrap_or_default(),
                        tls.keystore(),
                    ))),
                    None => SendError::Http(e),
                });
            }
        };
        self.checkin(sender);
        Ok(resp)
    }

    /// A ready pooled sender and how long it has been idle.
    fn checkout(&self) -> Option<(SendRequest<Body>, Duration)> {
        let mut pool = self.slot().lock().ok()?;
        let now = Instant::now();
        pool.retain(|i| !i.sender.is_closed() && now.duration_since(i.since) < self.idle_timeout);
        // Most recently used first: its connection is the warmest.
        let pos = pool.iter().rposition(|i| i.sender.is_ready())?;
        let idle = pool.swap_remove(pos);
        Some((idle.sender, now.duration_since(idle.since)))
    }

    /// This thread's pool.
    fn slot(&self) -> &Mutex<Vec<Idle>> {
        &self.pools[crate::worker::index() % self.pools.len()]
    }

    /// The host name or address in the upstream's URL.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// `host:port`.
    pub fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    fn checkin(&self, sender: SendRequest<Body>) {
        if let Ok(mut pool) = self.slot().lock() {
            if pool.len() < self.max_idle {
                pool.push(Idle {
                    sender,
                    since: Instant::now(),
                });
            }
            // Otherwise the sender is dropped: its connection closes once
            // the response in flight is done.
        }
    }

    /// Opens a connection: its sender, and how its connection task ended
    /// (the rustls error, if that is what ended it).
    async fn connect(
        &self,
        timing: &mut SendTiming,
    ) -> Result<(SendRequest<Body>, Ended), SendError> {
        let connecting = async {
            let started = Instant::now();
            // Resolving apart from connecting tells the two failures apart
            // (an IP address resolves without a lookup).
            let addrs: Vec<std::net::SocketAddr> =
                tokio::net::lookup_host((self.host.as_str(), self.port))
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
                None => handshake(TokioIo::new(tcp)).await,
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
                    handshake(TokioIo::new(stream)).await
                }
            }
        };
        match tokio::time::timeout(self.connect_timeout, connecting).await {
            Ok(r) => r,
            Err(_) => Err(SendError::ConnectTimeout(self.connect_timeout)),
        }
    }
}

/// How a connection's task ended: the rustls error when one ended it.
type Ended = tokio::sync::oneshot::Receiver<Option<rustls::Error>>;

async fn handshake<I>(io: TokioIo<I>) -> Result<(SendRequest<Body>, Ended), SendError>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = http1::Builder::new()
        .handshake(io)
        .await
        .map_err(SendError::Http)?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut tls = None;
        if let Err(e) = conn.await {
            tracing::debug!("upstream connection ended: {e}");
            tls = find_rustls_error(&e).cloned();
        }
        // Nobody listens once the first request went through.
        let _ = tx.send(tls);
    });
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
