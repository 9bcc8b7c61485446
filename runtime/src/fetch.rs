//! One HTTP GET for the host's own background fetches (CRLs, JWKS and
//! OpenID discovery documents): hyper over a fresh connection, `http://`
//! or `https://` (rustls with the roots given), with a size cap and a
//! deadline. Called from the host's service threads, never from a worker.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;

/// What a GET answered.
pub struct Fetched {
    /// The status.
    pub status: http::StatusCode,
    /// The response headers.
    pub headers: http::HeaderMap,
    /// The body, at most the cap.
    pub body: Bytes,
}

/// GETs `url`. `tls` is required for `https://`.
///
/// # Errors
///
/// Why nothing usable came back, naming the URL.
pub async fn get(
    url: &str,
    tls: Option<&Arc<rustls::ClientConfig>>,
    max_bytes: usize,
    timeout: Duration,
) -> Result<Fetched, String> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("`{url}` is not a URL: {e}"))?;
    let https = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => {
            return Err(format!(
                "`{url}`: only http:// and https:// URLs can be fetched"
            ))
        }
    };
    let host = uri
        .host()
        .ok_or_else(|| format!("`{url}` has no host"))?
        .trim_matches(['[', ']'])
        .to_string();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let authority = uri
        .authority()
        .map_or(host.as_str(), |a| a.as_str())
        .to_string();
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
    let req = http::Request::get(path)
        .header(http::header::HOST, authority)
        .header(http::header::USER_AGENT, "gatehouse")
        .body(http_body_util::Empty::<Bytes>::new())
        .map_err(|e| format!("{url}: {e}"))?;
    tokio::time::timeout(timeout, async {
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| format!("cannot connect to {host}:{port} for {url}: {e}"))?;
        if https {
            let cfg = tls.ok_or_else(|| format!("{url}: no TLS settings for an https:// URL"))?;
            let name = rustls::pki_types::ServerName::try_from(host.clone())
                .map_err(|e| format!("{url}: `{host}` is not a server name: {e}"))?;
            let stream = tokio_rustls::TlsConnector::from(cfg.clone())
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS handshake with {host}:{port} for {url} failed: {e}"))?;
            send(stream, req, url, max_bytes).await
        } else {
            send(tcp, req, url, max_bytes).await
        }
    })
    .await
    .map_err(|_| format!("{url}: no answer within {} s", timeout.as_secs()))?
}

async fn send<S>(
    io: S,
    req: http::Request<http_body_util::Empty<Bytes>>,
    url: &str,
    max_bytes: usize,
) -> Result<Fetched, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io))
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    tokio::spawn(conn);
    let resp = send
        .send_request(req)
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let (parts, body) = resp.into_parts();
    let body = http_body_util::Limited::new(body, max_bytes)
        .collect()
        .await
        .map_err(|e| format!("{url}: {e}"))?
        .to_bytes();
    Ok(Fetched {
        status: parts.status,
        headers: parts.headers,
        body,
    })
}
