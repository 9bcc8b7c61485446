//! Upstreams: pooled keep-alive clients (hyper-util) over TCP or rustls,
//! and the built-in echo responder.

use std::cell::RefCell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::uri::{Authority, Scheme};
use http::{Request, Response, Uri};
use hyper_rustls::{FixedServerNameResolver, HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::pki_types::ServerName;

use super::body::{boxed, Body};
use super::fault::{codes, Fault};
use crate::config::{self, ConfigError, Source};

/// Where an upstream sends requests.
// One value per configured upstream, never moved on the request path: the
// size difference between the variants does not matter.
#[allow(clippy::large_enum_variant)]
pub enum Target {
    /// A real HTTP(S) server.
    Http {
        /// The pooled clients, one per worker thread.
        clients: Clients,
        /// `http` or `https`.
        scheme: Scheme,
        /// `host:port`.
        authority: Authority,
        /// Path prefix from the URL, without a trailing slash.
        base_path: String,
    },
    /// The built-in echo responder.
    Echo,
}

type HttpClient = Client<HttpsConnector<HttpConnector>, Body>;

static NEXT_CLIENT_ID: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's clients, indexed by [`Clients::id`].
    static CLIENTS: RefCell<Vec<Option<HttpClient>>> = const { RefCell::new(Vec::new()) };
}

/// The keep-alive pools of one upstream: one per thread. A connection
/// belongs to the thread (and runtime) that opened it, so a request never
/// waits on another thread to drive its upstream connection, and the pools
/// take no lock shared between threads.
pub struct Clients {
    id: usize,
    connector: HttpsConnector<HttpConnector>,
    idle_timeout: Duration,
    max_idle: usize,
}

impl Clients {
    /// Sends `req` through this thread's client (created on first use).
    fn request(&self, req: Request<Body>) -> hyper_util::client::legacy::ResponseFuture {
        CLIENTS.with(|c| {
            let mut v = c.borrow_mut();
            if v.len() <= self.id {
                v.resize_with(self.id + 1, || None);
            }
            v[self.id]
                .get_or_insert_with(|| {
                    Client::builder(TokioExecutor::new())
                        .pool_timer(TokioTimer::new())
                        .timer(TokioTimer::new())
                        .pool_idle_timeout(self.idle_timeout)
                        .pool_max_idle_per_host(self.max_idle)
                        .build(self.connector.clone())
                })
                .request(req)
        })
    }
}

/// A configured upstream.
pub struct Upstream {
    /// Its name in the config.
    pub name: Arc<str>,
    /// Where requests go.
    pub target: Target,
    /// Time allowed for the response head.
    pub request_timeout: Duration,
}

impl Upstream {
    /// Builds an upstream from config; problems go to `errors`.
    pub fn build(
        name: &str,
        c: &config::Upstream,
        source: &Source,
        errors: &mut Vec<ConfigError>,
    ) -> Option<Upstream> {
        let path = format!("upstreams.{name}");
        let request_timeout = Duration::from_millis(c.request_timeout_ms.max(1));
        if c.url == "builtin:echo" {
            return Some(Upstream {
                name: Arc::from(name),
                target: Target::Echo,
                request_timeout,
            });
        }
        let uri: Uri = match c.url.parse() {
            Ok(u) => u,
            Err(e) => {
                errors.push(ConfigError::new(
                    source,
                    format!("{path}.url"),
                    format!("`{}` is not a URL: {e}", c.url),
                ));
                return None;
            }
        };
        let scheme = match uri.scheme_str() {
            Some("http") => Scheme::HTTP,
            Some("https") => Scheme::HTTPS,
            _ => {
                errors.push(ConfigError::new(
                    source,
                    format!("{path}.url"),
                    format!("`{}`: use http://, https:// or builtin:echo", c.url),
                ));
                return None;
            }
        };
        let Some(authority) = uri.authority().cloned() else {
            errors.push(ConfigError::new(
                source,
                format!("{path}.url"),
                format!("`{}` has no host", c.url),
            ));
            return None;
        };
        if uri.query().is_some() {
            errors.push(ConfigError::new(
                source,
                format!("{path}.url"),
                "a query string is not allowed here",
            ));
        }
        if c.tls.is_some() && scheme == Scheme::HTTP {
            errors.push(ConfigError::new(
                source,
                format!("{path}.tls"),
                "`tls` needs an https:// url",
            ));
        }
        let base_path = uri.path().trim_end_matches('/').to_string();

        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(Duration::from_millis(c.connect_timeout_ms.max(1))));
        let tls = crate::tls::client::build(c.tls.as_ref(), source, &path, errors)?;
        let builder = HttpsConnectorBuilder::new()
            .with_tls_config((*tls).clone())
            .https_or_http();
        let builder = match c.tls.as_ref().and_then(|t| t.server_name.as_ref()) {
            Some(sn) => match ServerName::try_from(sn.clone()) {
                Ok(n) => builder.with_server_name_resolver(FixedServerNameResolver::new(n)),
                Err(e) => {
                    errors.push(ConfigError::new(
                        source,
                        format!("{path}.tls.server_name"),
                        format!("`{sn}`: {e}"),
                    ));
                    return None;
                }
            },
            None => builder,
        };
        let connector = builder.enable_http1().wrap_connector(http);
        Some(Upstream {
            name: Arc::from(name),
            target: Target::Http {
                clients: Clients {
                    id: NEXT_CLIENT_ID.fetch_add(1, Ordering::Relaxed),
                    connector,
                    idle_timeout: Duration::from_millis(c.idle_timeout_ms),
                    max_idle: c.max_idle_connections,
                },
                scheme,
                authority,
                base_path,
            },
            request_timeout,
        })
    }

    /// The URI to send upstream for a request URI: the upstream's scheme
    /// and authority, its base path, then the request's path (without the
    /// API's prefix when the API strips it) and query. Without a base path
    /// or stripping, the request's path and query are reused as they are.
    pub fn uri_for(&self, original: &Uri, strip: Option<&str>) -> Result<Uri, Fault> {
        let bad = |e: &dyn std::fmt::Display| {
            Fault::bad_gateway(
                codes::UPSTREAM_UNREACHABLE,
                format!("cannot build the upstream URI: {e}"),
            )
        };
        let strip = strip.filter(|p| !p.is_empty());
        let (scheme, authority, base_path) = match &self.target {
            Target::Http {
                scheme,
                authority,
                base_path,
                ..
            } => (Some(scheme), Some(authority), base_path.as_str()),
            Target::Echo => (None, None, ""),
        };
        let path_and_query = match original.path_and_query() {
            Some(pq) if base_path.is_empty() && strip.is_none() => pq.clone(),
            _ => {
                let path = original.path();
                let path = match strip {
                    Some(prefix) => match &path[prefix.len().min(path.len())..] {
                        "" => "/",
                        rest => rest,
                    },
                    None => path,
                };
                let query = original.query();
                let mut pq = String::with_capacity(
                    base_path.len() + path.len() + query.map_or(0, |q| q.len() + 1),
                );
                pq.push_str(base_path);
                pq.push_str(path);
                if let Some(q) = query {
                    pq.push('?');
                    pq.push_str(q);
                }
                http::uri::PathAndQuery::try_from(pq).map_err(|e| bad(&e))?
            }
        };
        let mut parts = http::uri::Parts::default();
        parts.scheme = scheme.cloned();
        parts.authority = authority.cloned();
        parts.path_and_query = Some(path_and_query);
        Uri::from_parts(parts).map_err(|e| bad(&e))
    }

    /// Sends a request and waits for the response head.
    ///
    /// # Errors
    ///
    /// A `502` fault saying why the upstream failed, or a `504` on timeout.
    pub async fn send(&self, req: Request<Body>) -> Result<Response<Body>, Fault> {
        match &self.target {
            Target::Echo => Ok(super::echo::respond(req).await),
            Target::Http { clients, .. } => {
                match tokio::time::timeout(self.request_timeout, clients.request(req)).await {
                    Err(_) => Err(Fault::gateway_timeout(
                        &self.name,
                        self.request_timeout.as_millis() as u64,
                    )),
                    Ok(Ok(resp)) => Ok(resp.map(boxed)),
                    Ok(Err(e)) => Err(self.explain(&e)),
                }
            }
        }
    }

    fn explain(&self, e: &hyper_util::client::legacy::Error) -> Fault {
        let mut tls: Option<String> = None;
        let mut chain = Vec::new();
        let mut src: Option<&(dyn std::error::Error + 'static)> = Some(e);
        while let Some(s) = src {
            if tls.is_none() {
                tls = find_rustls_error(s).map(|r| explain_tls(r, &self.name));
            }
            let text = s.to_string();
            if chain.last() != Some(&text) {
                chain.push(text);
            }
            src = s.source();
        }
        let detail = chain.join(": ");
        match tls {
            Some(t) => Fault::bad_gateway(
                codes::UPSTREAM_TLS,
                format!("TLS handshake with upstream `{}` failed: {t}", self.name),
            ),
            None if e.is_connect() => Fault::bad_gateway(
                codes::UPSTREAM_UNREACHABLE,
                format!("cannot connect to upstream `{}`: {detail}", self.name),
            ),
            None => Fault::bad_gateway(
                codes::UPSTREAM_UNREACHABLE,
                format!("upstream `{}` failed: {detail}", self.name),
            ),
        }
    }
}

/// Says why a TLS handshake with an upstream failed, and what to change.
fn explain_tls(e: &rustls::Error, upstream: &str) -> String {
    use rustls::{CertificateError, Error};
    let hint = match e {
        Error::InvalidCertificate(CertificateError::UnknownIssuer) => format!(
            "; the upstream's certificate is not issued by a CA in upstreams.{upstream}.tls.truststore"
        ),
        Error::InvalidCertificate(CertificateError::NotValidForName)
        | Error::InvalidCertificate(CertificateError::NotValidForNameContext { .. }) => format!(
            "; the certificate does not name the host the gateway asked for (set upstreams.{upstream}.tls.server_name)"
        ),
        Error::InvalidCertificate(CertificateError::Expired)
        | Error::InvalidCertificate(CertificateError::ExpiredContext { .. }) => "; the upstream's certificate has expired".to_string(),
        Error::AlertReceived(rustls::AlertDescription::BadCertificate)
        | Error::AlertReceived(rustls::AlertDescription::CertificateRequired) => {
            "; the upstream refused the gateway's client certificate (or wanted one)".to_string()
        }
        _ => String::new(),
    };
    format!("{e}{hint}")
}

/// Finds a rustls error in an error, looking inside `io::Error`s (which
/// hide their inner error from `source()`).
fn find_rustls_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    if let Some(r) = e.downcast_ref::<rustls::Error>() {
        return Some(r);
    }
    if let Some(inner) = e
        .downcast_ref::<std::io::Error>()
        .and_then(|io| io.get_ref())
    {
        let inner: &(dyn std::error::Error + 'static) = inner;
        return find_rustls_error(inner);
    }
    None
}
