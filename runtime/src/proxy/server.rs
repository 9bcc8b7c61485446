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

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::LazyConfigAcceptor;

use super::snapshot::Live;
use crate::config::Limits;
use crate::exchange::{ConnInfo, TlsInfo};
use crate::tls::certinfo::CertInfo;

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
    let graceful = GracefulShutdown::new();
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
        let watcher = graceful.watcher();
        let open = open.clone();
        tokio::spawn(async move {
            open.inc();
            connection(stream, client, local, name, live, watcher).await;
            open.dec();
        });
    }
    drop(listener);
    let grace = Duration::from_millis(live.load().limits.shutdown_grace_ms);
    let open = graceful.count();
    if open > 0 {
        tracing::info!(listener = %name, open, "draining connections");
    }
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(listener = %name, "connections still open after {} ms; closing them", grace.as_millis());
    }
}

async fn connection(
    stream: TcpStream,
    client: SocketAddr,
    local: SocketAddr,
    name: Arc<str>,
    live: Arc<Live>,
    watcher: Watcher,
) {
    let snapshot = live.load();
    let Some(entry) = snapshot.listener(&name) else {
        // The listener was removed by a reload; its loop is stopping.
        return;
    };
    let limits = snapshot.limits.clone();
    let trusted = entry.trusts(client.ip());
    let Some(table) = entry.tls.clone() else {
        drop(snapshot);
        let mut conn = ConnInfo::new(client, local, name, None);
        conn.trusted_forwarder = trusted;
        let conn = Arc::new(conn);
        serve_http(TokioIo::new(stream), conn, live, &limits, watcher).await;
        return;
    };
    drop(snapshot);
    let handshake = Duration::from_millis(limits.tls_handshake_timeout_ms.max(1));
    let started = Instant::now();
    let accepted = tokio::time::timeout(handshake, async {
        let start = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream).await?;
        let hello = start.client_hello();
        let sni = hello.server_name().map(str::to_string);
        let (host_index, host) = table.select(&hello);
        let config = host.config.clone();
        let stream = start.into_stream(config).await?;
        Ok::<_, std::io::Error>((stream, sni, host_index))
    })
    .await;
    let (stream, sni, host_index) = match accepted {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            let reason = crate::tls::failure_reason(&e);
            live.metrics.tls_failure(&name, reason);
            tracing::debug!(%client, listener = %name, reason, "TLS handshake failed: {e}");
            return;
        }
        Err(_) => {
            live.metrics.tls_failure(&name, "timeout");
            tracing::debug!(%client, listener = %name, "TLS handshake timed out");
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
    let client_cert = client_chain
        .first()
        .and_then(|leaf| CertInfo::parse(leaf.as_ref(), true, None).ok());
    let info = TlsInfo {
        sni,
        alpn,
        version,
        table,
        host_index,
        handshake_us,
        client_chain,
        client_cert,
    };
    let mut conn = ConnInfo::new(client, local, name, Some(info));
    conn.trusted_forwarder = trusted;
    let conn = Arc::new(conn);
    serve_http(TokioIo::new(stream), conn, live, &limits, watcher).await;
}

async fn serve_http<I>(
    io: TokioIo<I>,
    conn: Arc<ConnInfo>,
    live: Arc<Live>,
    limits: &Limits,
    watcher: Watcher,
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
        .max_header_list_size(
            u32::try_from(limits.max_request_header_bytes.saturating_mul(2)).unwrap_or(u32::MAX),
        );
    // On TLS the protocol is known from ALPN: no sniffing of the first bytes.
    let builder = match conn.tls.as_ref().map(|t| t.alpn.as_deref() == Some("h2")) {
        Some(true) => builder.http2_only(),
        Some(false) => builder.http1_only(),
        None => builder,
    };
    let seen_request = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen = seen_request.clone();
    let service = service_fn(move |req| {
        seen.store(true, std::sync::atomic::Ordering::Relaxed);
        super::pipeline::handle(live.clone(), conn.clone(), req)
    });
    let serving = watcher.watch(builder.serve_connection(io, service));
    tokio::pin!(serving);
    // A connection that never completes a first request within the header
    // read timeout is closed (before its first request neither protocol
    // has a timer of its own).
    let result = tokio::select! {
        r = &mut serving => r,
        _ = tokio::time::sleep(header_timeout) => {
            if !seen_request.load(std::sync::atomic::Ordering::Relaxed) {
                tracing::debug!("no request within {} ms; closing the connection", header_timeout.as_millis());
                return;
            }
            serving.await
        }
    };
    if let Err(e) = result {
        tracing::debug!("connection ended: {e}");
    }
}
