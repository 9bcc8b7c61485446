//! Upstream servers for tests: real hyper servers on 127.0.0.1:0, plain or
//! TLS, HTTP/1.1, with a handler closure.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// The body type handlers answer with.
pub type RespBody = BoxBody<Bytes, std::io::Error>;

/// A handler: request in, response out.
pub type Handler = Arc<
    dyn Fn(Request<Incoming>) -> Pin<Box<dyn Future<Output = Response<RespBody>> + Send>>
        + Send
        + Sync,
>;

/// A small in-memory body.
pub fn full(b: impl Into<Bytes>) -> RespBody {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

/// A running upstream.
pub struct Upstream {
    /// Its address.
    pub addr: SocketAddr,
    accepted: Arc<std::sync::atomic::AtomicUsize>,
    open: Arc<std::sync::atomic::AtomicUsize>,
    requests: Arc<std::sync::atomic::AtomicUsize>,
    seen: Arc<std::sync::Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Upstream {
    /// How many TCP connections it has accepted so far.
    pub fn connections(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// How many of its connections are open now.
    pub fn open_connections(&self) -> usize {
        self.open.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Waits (at most 10 s) until exactly `n` of its connections are open.
    pub async fn wait_for_open_connections(&self, n: usize) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while self.open_connections() != n {
            assert!(
                std::time::Instant::now() < deadline,
                "the upstream has {} open connections, not {n}",
                self.open_connections()
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    /// Every request that reached it, as `METHOD /path?query`, in order:
    /// a request smuggled past the gateway would show up here.
    pub fn seen(&self) -> Vec<String> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// How many requests reached its handler so far.
    pub fn requests(&self) -> usize {
        self.requests.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Waits (at most 10 s) until `n` requests have reached the handler.
    pub async fn wait_for_requests(&self, n: usize) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while self.requests() < n {
            assert!(
                std::time::Instant::now() < deadline,
                "the upstream saw {} requests, not {n}",
                self.requests()
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts a plain HTTP/1.1 upstream.
pub async fn start(handler: Handler) -> Upstream {
    start_with(handler, None).await
}

/// Starts an upstream; TLS when `tls` is given.
pub async fn start_with(handler: Handler, tls: Option<Arc<rustls::ServerConfig>>) -> Upstream {
    start_impl(handler, tls, false, None).await
}

/// Starts a plain HTTP/1.1 upstream on a given address (a port that was
/// down, coming back).
pub async fn start_on(addr: SocketAddr, handler: Handler) -> Upstream {
    start_impl(handler, None, false, Some(addr)).await
}

/// Starts an HTTP/2-only upstream: h2 over TLS (ALPN `h2`) when `tls` is
/// given, h2c with prior knowledge otherwise.
pub async fn start_h2(handler: Handler, tls: Option<Arc<rustls::ServerConfig>>) -> Upstream {
    let tls = tls.map(|c| {
        let mut c = (*c).clone();
        c.alpn_protocols = vec![b"h2".to_vec()];
        Arc::new(c)
    });
    start_impl(handler, tls, true, None).await
}

async fn start_impl(
    handler: Handler,
    tls: Option<Arc<rustls::ServerConfig>>,
    h2: bool,
    at: Option<SocketAddr>,
) -> Upstream {
    let listener = TcpListener::bind(at.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0))))
        .await
        .expect("bind upstream");
    let addr = listener.local_addr().expect("upstream addr");
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = accepted.clone();
    let requests = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let request_counter = requests.clone();
    let open = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let open_counter = open.clone();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen_log = seen.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let handler = handler.clone();
            let tls = tls.clone();
            let request_counter = request_counter.clone();
            let seen_log = seen_log.clone();
            let open = open_counter.clone();
            open.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                // Counts the connection as closed when this task ends.
                struct Closed(Arc<std::sync::atomic::AtomicUsize>);
                impl Drop for Closed {
                    fn drop(&mut self) {
                        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                    }
                }
                let _closed = Closed(open);
                // The client certificate of a TLS connection, for handlers.
                let peer: Arc<std::sync::OnceLock<PeerCertificate>> = Arc::default();
                let peer_for_svc = peer.clone();
                let svc = hyper::service::service_fn(move |mut req: Request<Incoming>| {
                    if let Some(p) = peer_for_svc.get() {
                        req.extensions_mut().insert(p.clone());
                    }
                    request_counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    if let Ok(mut s) = seen_log.lock() {
                        s.push(format!("{} {}", req.method(), req.uri()));
                    }
                    let h = handler.clone();
                    async move { Ok::<_, Infallible>(h(req).await) }
                });
                match tls {
                    None if h2 => {
                        let _ = hyper::server::conn::http2::Builder::new(
                            hyper_util::rt::TokioExecutor::new(),
                        )
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                    }
                    None => {
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), svc)
                            .await;
                    }
                    Some(cfg) => {
                        let Ok(s) = tokio_rustls::TlsAcceptor::from(cfg).accept(stream).await
                        else {
                            return;
                        };
                        let _ = peer.set(PeerCertificate(
                            s.get_ref()
                                .1
                                .peer_certificates()
                                .and_then(|c| c.first())
                                .map(|c| c.to_vec()),
                        ));
                        if h2 {
                            let _ = hyper::server::conn::http2::Builder::new(
                                hyper_util::rt::TokioExecutor::new(),
                            )
                            .serve_connection(TokioIo::new(s), svc)
                            .await;
                        } else {
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(s), svc)
                                .await;
                        }
                    }
                }
            });
        }
    });
    Upstream {
        addr,
        accepted,
        open,
        requests,
        seen,
        task,
    }
}

/// The client certificate a TLS upstream received on the connection (DER),
/// in each request's extensions.
#[derive(Clone, Debug)]
pub struct PeerCertificate(pub Option<Vec<u8>>);

/// An upstream that answers with a JSON echo of the request: method,
/// path, query, headers (name -> list of values), the body's length, and
/// on TLS the SHA-256 (hex) of the client certificate it received.
pub async fn echo() -> Upstream {
    start(echo_handler()).await
}

/// The echo handler.
pub fn echo_handler() -> Handler {
    Arc::new(|req: Request<Incoming>| {
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let client_cert = parts
                .extensions
                .get::<PeerCertificate>()
                .and_then(|p| p.0.as_deref())
                .map(|der| {
                    ring::digest::digest(&ring::digest::SHA256, der)
                        .as_ref()
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect::<String>()
                });
            let mut n = 0usize;
            let mut body = body;
            while let Some(Ok(frame)) = body.frame().await {
                if let Some(d) = frame.data_ref() {
                    n += d.len();
                }
            }
            let mut headers = serde_json::Map::new();
            for (k, v) in &parts.headers {
                let e = headers
                    .entry(k.as_str().to_string())
                    .or_insert_with(|| serde_json::json!([]));
                if let Some(a) = e.as_array_mut() {
                    a.push(String::from_utf8_lossy(v.as_bytes()).into_owned().into());
                }
            }
            let doc = serde_json::json!({
                "version": format!("{:?}", parts.version),
                "method": parts.method.as_str(),
                "target": parts.uri.to_string(),
                "path": parts.uri.path(),
                "query": parts.uri.query(),
                "headers": headers,
                "body_bytes": n,
                "client_cert_sha256": client_cert,
            });
            Response::builder()
                .header("content-type", "application/json")
                .header("server", "test-upstream")
                .header("connection", "keep-alive, x-hop")
                .header("x-hop", "must-not-pass")
                .body(full(doc.to_string()))
                .expect("response")
        })
    })
}

/// A TLS server config for an upstream from PEM files.
pub fn tls_config(cert: &std::path::Path, key: &std::path::Path) -> Arc<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    let certs: Vec<_> = rustls::pki_types::CertificateDer::pem_file_iter(cert)
        .expect("cert file")
        .collect::<Result<_, _>>()
        .expect("certs");
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(key).expect("key file");
    let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .expect("server config");
    Arc::new(cfg)
}

/// A TLS server config that requires client certificates issued by one of
/// `client_cas` (PEM files): it names those CAs in its CertificateRequest.
pub fn mtls_config(
    cert: &std::path::Path,
    key: &std::path::Path,
    client_cas: &[&std::path::Path],
) -> Arc<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    let certs: Vec<_> = rustls::pki_types::CertificateDer::pem_file_iter(cert)
        .expect("cert file")
        .collect::<Result<_, _>>()
        .expect("certs");
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(key).expect("key file");
    let mut roots = rustls::RootCertStore::empty();
    for ca in client_cas {
        for c in rustls::pki_types::CertificateDer::pem_file_iter(ca).expect("ca file") {
            roots.add(c.expect("ca cert")).expect("a usable CA");
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .expect("client verifier");
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .expect("server config");
    Arc::new(cfg)
}
