//! Listeners: the accept loop, the TLS handshake with per-SNI host
//! selection, and HTTP/1.1 + HTTP/2 serving (ALPN, or h2c prior knowledge
//! on plain listeners).
//!
//! An accept loop knows its listener by name. Each connection takes the
//! listener's TLS host table and limits from the snapshot in force when it
//! is accepted, and keeps them for its whole life; each request on it loads
//! the snapshot in force when the request arrives.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};

use super::snapshot::Live;
use crate::config::Limits;
use crate::exchange::{ConnInfo, TlsInfo};

/// Reads a connection's ClientHello (and nothing more). A malformed one is
/// answered with the alert rustls chooses.
async fn read_client_hello(stream: &mut TcpStream) -> std::io::Result<rustls::server::Accepted> {
    use tokio::io::AsyncWriteExt;
    let mut acceptor = rustls::server::Acceptor::default();
    let mut buf = vec![0u8; 4096];
    loop {
        stream.readable().await?;
        let n = match stream.try_read(&mut buf) {
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        };
        let mut data = &buf[..n];
        while !data.is_empty() {
            if acceptor.read_tls(&mut data)? == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "the ClientHello is too large",
                ));
            }
        }
        match acceptor.accept() {
            Ok(Some(accepted)) => return Ok(accepted),
            Ok(None) => {}
            Err((e, mut alert)) => {
                let mut out = Vec::new();
                let _ = alert.write_all(&mut out);
                let _ = stream.write_all(&out).await;
                return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e));
            }
        }
    }
}

/// Failed handshakes are logged at INFO with the client and the reason, at
/// most this many lines a second (the metric counts every one).
const HANDSHAKE_LINES_PER_SECOND: u32 = 10;
static HANDSHAKE_LOG: crate::observe::LogBudget = crate::observe::LogBudget::new();

/// Counts a listener's open connections, so that stopping can wait for
/// them to drain.
#[derive(Default)]
struct Tracker {
    open: AtomicUsize,
    drained: Notify,
}

/// A connection's place in its listener's [`Tracker`].
struct Tracked(Arc<Tracker>);

impl Tracked {
    fn new(t: &Arc<Tracker>) -> Self {
        t.open.fetch_add(1, Ordering::AcqRel);
        Tracked(t.clone())
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if self.0.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.drained.notify_waiters();
        }
    }
}

/// Accepts connections on `listener` (the config's listener `name`) until
/// `stop` turns true, then lets the open connections finish: idle
/// keep-alive connections close at once (HTTP/2 ones with a GOAWAY),
/// requests in flight complete, for at most `limits.shutdown_grace_ms` of
/// the snapshot in force then.
pub async fn serve(
    listener: TcpListener,
    name: Arc<str>,
    live: Arc<Live>,
    mut stop: watch::Receiver<bool>,
) {
    let tracker = Arc::new(Tracker::default());
    let local = match listener.local_addr() {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(listener = %name, "no local address: {e}");
            return;
        }
    };
    let open = live.metrics.open_connections(&name);
    loop {
        if *stop.borrow() {
            break;
        }
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.changed() => break,
        };
        let (stream, client) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(listener = %name, "accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let live = live.clone();
        let name = name.clone();
        let tracked = Tracked::new(&tracker);
        let open = open.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            open.inc();
            connection(stream, client, local, name, live, stop).await;
            open.dec();
            drop(tracked);
        });
    }
    drop(listener);
    let grace = Duration::from_millis(live.load().limits.shutdown_grace_ms);
    let open = tracker.open.load(Ordering::Acquire);
    if open > 0 {
        tracing::info!(listener = %name, open, "draining connections");
    }
    let drained = async {
        loop {
            let notified = tracker.drained.notified();
            if tracker.open.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    };
    if tokio::time::timeout(grace, drained).await.is_err() {
        tracing::warn!(listener = %name, "connections still open after {} ms; closing them", grace.as_millis());
    }
}

async fn connection(
    stream: TcpStream,
    client: SocketAddr,
    local: SocketAddr,
    name: Arc<str>,
    live: Arc<Live>,
    stop: watch::Receiver<bool>,
) {
    let snapshot = live.load();
    let Some(entry) = snapshot.listener(&name) else {
        // The listener was removed by a reload; its loop is stopping.
        return;
    };
    let limits = snapshot.limits.clone();
    let _permit = match live.connections.acquire(
        client.ip(),
        limits.max_connections,
        limits.max_connections_per_ip,
    ) {
        Ok(p) => p,
        Err(why) => {
            live.metrics
                .connections_refused
                .get_or_create(&crate::observe::metrics::TlsFailureLabels {
                    listener: name.clone(),
                    reason: why.label(),
                })
                .inc();
            tracing::debug!(%client, listener = %name, "connection refused: {}", why.label());
            return;
        }
    };
    let trusted = entry.trusts(client.ip());
    let write_timeout = Duration::from_millis(limits.response_write_timeout_ms.max(1));
    let Some(table) = entry.tls.clone() else {
        drop(snapshot);
        let mut conn = ConnInfo::new(client, local, name, None);
        conn.trusted_forwarder = trusted;
        let conn = Arc::new(conn);
        let io = WriteTimeout::new(stream, write_timeout, conn.linger.clone());
        serve_http(TokioIo::new(io), conn, live, &limits, stop).await;
        return;
    };
    drop(snapshot);
    let handshake = Duration::from_millis(limits.tls_handshake_timeout_ms.max(1));
    let started = Instant::now();
    let accepted = tokio::time::timeout(handshake, async {
        let mut stream = stream;
        let accepted = read_client_hello(&mut stream).await?;
        let hello = accepted.client_hello();
        let sni = hello.server_name().map(str::to_string);
        let Some((host_index, host)) = table.select(&hello) else {
            // No entry names the SNI and there is no default host: the
            // `unrecognized_name` alert (RFC 6066), as a plaintext fatal
            // alert record, before any handshake message of ours.
            use tokio::io::AsyncWriteExt;
            let _ = stream
                .write_all(&[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 112])
                .await;
            let _ = stream.shutdown().await;
            return Err(std::io::Error::other(crate::tls::server::UnrecognizedName(
                sni,
            )));
        };
        let config = host.config.clone();
        let stream = tokio_rustls::StartHandshake::from_parts(accepted, stream)
            .into_stream(config)
            .await?;
        Ok::<_, std::io::Error>((stream, sni, host_index))
    })
    .await;
    let (stream, sni, host_index) = match accepted {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            let reason = crate::tls::failure_reason(&e);
            live.metrics.tls_failure(&name, reason);
            if let Some(suppressed) = HANDSHAKE_LOG.allow(HANDSHAKE_LINES_PER_SECOND) {
                tracing::info!(%client, listener = %name, reason, suppressed, "TLS handshake failed: {e}");
            }
            return;
        }
        Err(_) => {
            live.metrics.tls_failure(&name, "timeout");
            if let Some(suppressed) = HANDSHAKE_LOG.allow(HANDSHAKE_LINES_PER_SECOND) {
                tracing::info!(%client, listener = %name, reason = "timeout", suppressed, "TLS handshake timed out");
            }
            return;
        }
    };
    let handshake_us = started.elapsed().as_micros() as u64;
    let (_, session) = stream.get_ref();
    let alpn = session
        .alpn_protocol()
        .map(|p| String::from_utf8_lossy(p).into_owned());
    let version = match session.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
        _ => "unknown",
    };
    let client_chain: Vec<_> = session
        .peer_certificates()
        .map(|c| c.to_vec())
        .unwrap_or_default();
    let info = TlsInfo {
        sni,
        alpn,
        version,
        table,
        host_index,
        handshake_us,
        client_chain,
        client_cert_cache: std::sync::OnceLock::new(),
        issuer_cache: std::sync::OnceLock::new(),
        issued_by_cache: Default::default(),
    };
    let mut conn = ConnInfo::new(client, local, name, Some(info));
    conn.trusted_forwarder = trusted;
    let conn = Arc::new(conn);
    let io = WriteTimeout::new(stream, write_timeout, conn.linger.clone());
    serve_http(TokioIo::new(io), conn, live, &limits, stop).await;
}

async fn serve_http<I>(
    io: TokioIo<I>,
    conn: Arc<ConnInfo>,
    live: Arc<Live>,
    limits: &Limits,
    mut stop: watch::Receiver<bool>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let header_timeout = Duration::from_millis(limits.header_read_timeout_ms.max(1));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // hyper's own limits are a hard cap at twice the configured ones; the
    // pipeline enforces the configured limits with a problem+json 431.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_buf_size((limits.max_request_header_bytes.saturating_mul(2)).max(8192))
        .max_headers(limits.max_request_headers.saturating_mul(2).max(16));
    builder
        .http2()
        .timer(TokioTimer::new())
        // Dead peers are found by pings instead of holding a task forever.
        .keep_alive_interval(Some(Duration::from_secs(20)))
        .keep_alive_timeout(Duration::from_secs(20))
        .max_concurrent_streams(limits.http2_max_concurrent_streams.max(1))
        // Rapid reset (CVE-2023-44487): streams a client opens and resets
        // before the gateway accepts them, and streams the gateway must
        // reset for the client's errors, are bounded; past them the
        // connection gets GOAWAY (ENHANCE_YOUR_CALM).
        .max_pending_accept_reset_streams(Some(20))
        .max_local_error_reset_streams(Some(256))
        .max_header_list_size(
            u32::try_from(limits.max_request_header_bytes.saturating_mul(2)).unwrap_or(u32::MAX),
        );
    // On TLS the protocol is known from ALPN: no sniffing of the first bytes.
    let builder = match conn.tls.as_ref().map(|t| t.alpn.as_deref() == Some("h2")) {
        Some(true) => builder.http2_only(),
        Some(false) => builder.http1_only(),
        None => builder,
    };
    let activity = Arc::new(Activity::default());
    let seen = activity.clone();
    let service = service_fn(move |req| {
        seen.start();
        let seen = seen.clone();
        let handled = super::pipeline::handle(live.clone(), conn.clone(), req);
        async move {
            let r = handled.await;
            seen.end();
            r
        }
    });
    let serving = builder.serve_connection(io, service);
    tokio::pin!(serving);
    let started = tokio::time::Instant::now();
    let idle = Duration::from_millis(limits.http2_idle_timeout_ms.max(1));
    let max_age = (limits.max_connection_age_ms > 0)
        .then(|| Duration::from_millis(limits.max_connection_age_ms));
    let mut closing = false;
    // A connection that never completes a first request within the header
    // read timeout is closed (before its first request neither protocol
    // has a timer of its own).
    let first_request = tokio::time::sleep(header_timeout);
    tokio::pin!(first_request);
    let idle_check = tokio::time::sleep(idle);
    tokio::pin!(idle_check);
    let age = tokio::time::sleep(max_age.unwrap_or(Duration::from_secs(86_400 * 365)));
    tokio::pin!(age);
    let result = loop {
        tokio::select! {
            r = &mut serving => break r,
            _ = &mut first_request, if !activity.any() => {
                tracing::debug!("no request within {} ms; closing the connection", header_timeout.as_millis());
                return;
            }
            _ = stop.changed(), if !closing => {
                closing = true;
                serving.as_mut().graceful_shutdown();
            }
            _ = &mut idle_check, if !closing => {
                match activity.idle_for(started) {
                    Some(for_) if for_ >= idle => {
                        closing = true;
                        serving.as_mut().graceful_shutdown();
                    }
                    Some(for_) => idle_check.as_mut().reset(tokio::time::Instant::now() + (idle - for_)),
                    None => idle_check.as_mut().reset(tokio::time::Instant::now() + idle),
                }
            }
            _ = &mut age, if !closing && max_age.is_some() => {
                closing = true;
                serving.as_mut().graceful_shutdown();
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!("connection ended: {e}");
    }
}

/// What a connection's requests are doing, for its idle timeout.
#[derive(Default)]
struct Activity {
    /// Requests started.
    started: AtomicUsize,
    /// Requests in flight (head not yet answered).
    in_flight: AtomicUsize,
    /// When the last request ended, in ms since the connection started.
    last_end_ms: AtomicU64,
    origin: std::sync::OnceLock<tokio::time::Instant>,
}

impl Activity {
    fn start(&self) {
        self.started.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::AcqRel);
    }
    fn end(&self) {
        let origin = *self.origin.get_or_init(tokio::time::Instant::now);
        let ms = u64::try_from(origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_end_ms.store(ms, Ordering::Relaxed);
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
    fn any(&self) -> bool {
        self.started.load(Ordering::Relaxed) > 0
    }
    /// How long the connection has had no request in flight; `None` while
    /// one is.
    fn idle_for(&self, started: tokio::time::Instant) -> Option<Duration> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let since = match self.origin.get() {
            Some(origin) => {
                *origin + Duration::from_millis(self.last_end_ms.load(Ordering::Relaxed))
            }
            None => started,
        };
        Some(since.elapsed())
    }
}

/// How long a closing connection that answered before reading its
/// request body keeps reading (and dropping) what the client still sends,
/// at most; and how much of it.
const LINGER_TIME: Duration = Duration::from_secs(5);
const LINGER_BYTES: u64 = 16 << 20;

/// A client connection whose writes may not wait forever: a write (or
/// flush) that stays pending for `limit` fails with `TimedOut`, and hyper
/// closes the connection. A client that stops reading can hold the
/// gateway's buffers and a task only that long.
///
/// It also lingers on close when `linger` is set (a response went out
/// before the request body was all read): after the gateway's side is shut
/// down it reads and drops what the client still sends, until the client
/// closes, for at most [`LINGER_TIME`] and [`LINGER_BYTES`]. Closing a
/// socket with unread data resets the connection, and a reset can destroy
/// the response in the client's receive buffer before the client reads it.
struct WriteTimeout<S> {
    inner: S,
    limit: Duration,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    linger: Arc<std::sync::atomic::AtomicBool>,
    shut: bool,
    lingering: Option<(Pin<Box<tokio::time::Sleep>>, u64)>,
}

impl<S> WriteTimeout<S> {
    fn new(inner: S, limit: Duration, linger: Arc<std::sync::atomic::AtomicBool>) -> Self {
        WriteTimeout {
            inner,
            limit,
            sleep: None,
            linger,
            shut: false,
            lingering: None,
        }
    }

    /// After a write or flush: disarms the timer when it completed, arms it
    /// (or checks it) when it is pending.
    fn guard<T>(
        &mut self,
        polled: Poll<std::io::Result<T>>,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<T>> {
        use std::future::Future as _;
        match polled {
            Poll::Ready(r) => {
                self.sleep = None;
                Poll::Ready(r)
            }
            Poll::Pending => {
                let limit = self.limit;
                let s = self
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
                if s.as_mut().poll(cx).is_ready() {
                    Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("the client read nothing for {} ms", limit.as_millis()),
                    )))
                } else {
                    Poll::Pending
                }
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteTimeout<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WriteTimeout<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.guard(polled, cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.guard(polled, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        self.guard(polled, cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        use std::future::Future as _;
        let this = &mut *self;
        if !this.shut {
            std::task::ready!(Pin::new(&mut this.inner).poll_shutdown(cx))?;
            this.shut = true;
        }
        if !this.linger.load(Ordering::Relaxed) {
            return Poll::Ready(Ok(()));
        }
        let (deadline, read) = this
            .lingering
            .get_or_insert_with(|| (Box::pin(tokio::time::sleep(LINGER_TIME)), 0));
        if deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Ok(()));
        }
        let mut scratch = [0u8; 8192];
        // A bounded number of reads per poll, so a fast sender cannot keep
        // the worker here.
        for _ in 0..8 {
            if *read >= LINGER_BYTES {
                return Poll::Ready(Ok(()));
            }
            let mut buf = tokio::io::ReadBuf::new(&mut scratch);
            match Pin::new(&mut this.inner).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if buf.filled().is_empty() => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(())) => *read += buf.filled().len() as u64,
                Poll::Ready(Err(_)) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}
