//! Test clients: HTTP/1.1 or HTTP/2, plain or TLS (trusting a test CA),
//! with an SNI of the test's choosing.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

/// A complete response.
#[derive(Debug)]
pub struct Reply {
    /// Status.
    pub status: StatusCode,
    /// Version.
    pub version: Version,
    /// Headers.
    pub headers: HeaderMap,
    /// Body.
    pub body: Bytes,
}

impl Reply {
    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    /// Asserts a problem+json fault with `status` and `code`, returns it.
    pub fn assert_fault(&self, status: u16, code: &str) -> serde_json::Value {
        assert_eq!(
            self.status.as_u16(),
            status,
            "body: {}",
            String::from_utf8_lossy(&self.body)
        );
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json")
        );
        let v = self.json();
        assert_eq!(v["code"], code, "fault: {v}");
        assert_eq!(v["status"], status);
        let rid = self.header("x-request-id").expect("x-request-id header");
        assert_eq!(v["request_id"], rid);
        v
    }
}

/// A connection-level client: one connection per [`Client::connect`].
pub struct Client {
    /// Server address.
    pub addr: SocketAddr,
    /// `Some((roots, sni))` for TLS.
    pub tls: Option<(rustls::RootCertStore, String)>,
    /// Use HTTP/2 (ALPN h2 on TLS, prior knowledge on plain).
    pub h2: bool,
    /// The source address to connect from (`127.0.0.2`, `::1`); default:
    /// the system's choice.
    pub source: Option<std::net::IpAddr>,
}

/// A sender on one connection.
pub enum Conn {
    /// HTTP/1.1.
    H1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    /// HTTP/2.
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

impl Client {
    /// Plain HTTP/1.1.
    pub fn plain(addr: SocketAddr) -> Client {
        Client {
            addr,
            tls: None,
            h2: false,
            source: None,
        }
    }
    /// TLS with `sni`, trusting `roots`.
    pub fn tls(addr: SocketAddr, roots: rustls::RootCertStore, sni: &str, h2: bool) -> Client {
        Client {
            addr,
            tls: Some((roots, sni.to_string())),
            h2,
            source: None,
        }
    }

    /// The same client, connecting from `ip` (a loopback address such as
    /// `127.0.0.2`, so the gateway sees another client address).
    pub fn from_ip(mut self, ip: std::net::IpAddr) -> Client {
        self.source = Some(ip);
        self
    }

    /// Opens a connection.
    pub async fn connect(&self) -> Conn {
        let tcp = match self.source {
            None => TcpStream::connect(self.addr)
                .await
                .expect("connect to the gateway"),
            Some(ip) => {
                let socket = if ip.is_ipv4() {
                    tokio::net::TcpSocket::new_v4()
                } else {
                    tokio::net::TcpSocket::new_v6()
                }
                .expect("socket");
                socket
                    .bind(SocketAddr::new(ip, 0))
                    .expect("bind the source address");
                socket
                    .connect(self.addr)
                    .await
                    .expect("connect to the gateway")
            }
        };
        tcp.set_nodelay(true).ok();
        match &self.tls {
            None => self.handshake(TokioIo::new(tcp)).await,
            Some((roots, sni)) => {
                let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
                    rustls::crypto::ring::default_provider(),
                ))
                .with_safe_default_protocol_versions()
                .expect("tls versions")
                .with_root_certificates(roots.clone())
                .with_no_client_auth();
                cfg.alpn_protocols = if self.h2 {
                    vec![b"h2".to_vec()]
                } else {
                    vec![b"http/1.1".to_vec()]
                };
                let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
                let name = ServerName::try_from(sni.clone()).expect("valid sni");
                let tls = connector
                    .connect(name, tcp)
                    .await
                    .expect("TLS handshake with the gateway");
                self.handshake(TokioIo::new(tls)).await
            }
        }
    }

    async fn handshake<I>(&self, io: TokioIo<I>) -> Conn
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        if self.h2 {
            let (send, conn) =
                hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
                    .await
                    .expect("h2 handshake");
            tokio::spawn(conn);
            Conn::H2(send)
        } else {
            let (send, conn) = hyper::client::conn::http1::handshake(io)
                .await
                .expect("h1 handshake");
            tokio::spawn(conn);
            Conn::H1(send)
        }
    }

    /// One request on a new connection.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Reply {
        let mut c = self.connect().await;
        c.request(method, &self.authority(), path, headers, body)
            .await
    }

    /// `GET path` with headers, on a new connection.
    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        self.request("GET", path, headers, b"").await
    }

    /// The authority to send: the SNI (with port) for TLS, the address
    /// otherwise.
    pub fn authority(&self) -> String {
        match &self.tls {
            Some((_, sni)) => format!("{sni}:{}", self.addr.port()),
            None => self.addr.to_string(),
        }
    }
}

impl Conn {
    /// Whether the connection is closed now.
    pub fn is_closed(&self) -> bool {
        match self {
            Conn::H1(s) => s.is_closed(),
            Conn::H2(s) => s.is_closed(),
        }
    }

    /// Whether the gateway closed the connection, waiting up to 2 s for it.
    pub async fn wait_closed(&self) -> bool {
        self.wait_closed_within(std::time::Duration::from_secs(2))
            .await
    }

    /// Whether the gateway closed the connection, waiting up to `d`.
    pub async fn wait_closed_within(&self, d: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now() + d;
        loop {
            let closed = match self {
                Conn::H1(s) => s.is_closed(),
                Conn::H2(s) => s.is_closed(),
            };
            if closed || std::time::Instant::now() >= deadline {
                return closed;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// Like [`Conn::request`], but `None` when the connection failed
    /// instead of a response.
    pub async fn try_request(
        &mut self,
        method: &str,
        authority: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Option<Reply> {
        let h2 = matches!(self, Conn::H2(_));
        let uri = if h2 {
            format!("https://{authority}{path}")
        } else {
            path.to_string()
        };
        let mut b = Request::builder().method(method).uri(uri);
        if !h2 {
            b = b.header("host", authority);
        }
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let req = b.body(Full::new(Bytes::copy_from_slice(body))).ok()?;
        let resp = match self {
            Conn::H1(s) => {
                s.ready().await.ok()?;
                s.send_request(req).await.ok()?
            }
            Conn::H2(s) => {
                s.ready().await.ok()?;
                s.send_request(req).await.ok()?
            }
        };
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.ok()?.to_bytes();
        Some(Reply {
            status: parts.status,
            version: parts.version,
            headers: parts.headers,
            body,
        })
    }

    /// Sends a request on this connection. `authority` goes to `Host`
    /// (HTTP/1.1) or `:authority` (HTTP/2).
    pub async fn request(
        &mut self,
        method: &str,
        authority: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Reply {
        let h2 = matches!(self, Conn::H2(_));
        let uri = if h2 {
            format!("https://{authority}{path}")
        } else {
            path.to_string()
        };
        let mut b = Request::builder().method(method).uri(uri);
        if !h2 {
            b = b.header("host", authority);
        }
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let req = b
            .body(Full::new(Bytes::copy_from_slice(body)))
            .expect("request");
        let resp = match self {
            Conn::H1(s) => {
                s.ready().await.expect("h1 ready");
                s.send_request(req).await.expect("h1 response")
            }
            Conn::H2(s) => {
                s.ready().await.expect("h2 ready");
                s.send_request(req).await.expect("h2 response")
            }
        };
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.expect("response body").to_bytes();
        Reply {
            status: parts.status,
            version: parts.version,
            headers: parts.headers,
            body,
        }
    }
}

/// Sends `n` GET requests at once, each on its own connection, to `addrs`
/// in turn; their statuses, in order.
///
/// # Panics
///
/// When a request task panics (a transport error).
pub async fn burst(
    addrs: &[std::net::SocketAddr],
    path: &str,
    n: usize,
    headers: &[(&str, &str)],
) -> Vec<u16> {
    let owned: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let addr = addrs[i % addrs.len()];
            let path = path.to_string();
            let owned = owned.clone();
            tokio::spawn(async move {
                let h: Vec<(&str, &str)> = owned
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                Client::plain(addr).get(&path, &h).await.status.as_u16()
            })
        })
        .collect();
    let mut out = Vec::with_capacity(n);
    for t in tasks {
        out.push(t.await.expect("request task"));
    }
    out
}

/// How many of `statuses` are `status`.
pub fn count(statuses: &[u16], status: u16) -> usize {
    statuses.iter().filter(|s| **s == status).count()
}
