//! Upstreams: keep-alive connection pools (see [`super::pool`]) over TCP or
//! rustls, and the built-in echo responder.

use std::sync::Arc;
use std::time::Duration;

use http::uri::{Authority, Scheme};
use http::{Request, Response, Uri};

use super::body::{boxed, Body};
use super::fault::{codes, Fault};
use super::pool::{Connector, SendError, SendTiming};
use crate::config::{self, ConfigError, Source};
use crate::observe::metrics::{Metrics, UpstreamMetrics};

/// What the pipeline learned about the upstream exchange.
#[derive(Clone, Debug, Default)]
pub struct UpstreamFacts {
    /// The upstream's name.
    pub name: Option<Arc<str>>,
    /// `host:port` it connected to (or `builtin:echo`).
    pub address: Option<Arc<str>>,
    /// TCP connect plus TLS handshake, when a new connection was opened.
    pub connect: Option<Duration>,
    /// The TLS handshake alone, when a new TLS connection was opened.
    pub tls: Option<Duration>,
    /// From sending the request (on an open connection) to the response
    /// head.
    pub first_byte: Option<Duration>,
    /// What a new TLS connection's handshake did about client
    /// certificates.
    pub client_auth: Option<crate::tls::client::ClientAuthRecord>,
}

/// Where an upstream sends requests.
pub enum Target {
    /// A real HTTP(S) server.
    Http {
        /// Connections, pooled per worker thread.
        connector: Box<Connector>,
        /// `http` or `https`.
        scheme: Scheme,
        /// `host:port`.
        authority: Authority,
        /// Path prefix from the URL, without a trailing slash.
        base_path: String,
        /// The `Host` header sent upstream: the URL's authority.
        host_header: http::HeaderValue,
    },
    /// The built-in echo responder.
    Echo,
}

/// A configured upstream.
pub struct Upstream {
    /// Its name in the config.
    pub name: Arc<str>,
    /// `host:port` (or `builtin:echo`), for logs and traces.
    pub address: Arc<str>,
    /// Its settings and the bytes of the files they name: a reload keeps
    /// the upstream (and its pooled connections) when this is unchanged.
    pub fingerprint: String,
    /// Connect, TLS and first-byte histograms.
    pub metrics: UpstreamMetrics,
    /// Where requests go.
    pub target: Target,
    /// Time allowed for the response head.
    pub request_timeout: Duration,
    /// Longest wait for the next piece of the response body.
    pub body_idle_timeout: Duration,
}

impl Upstream {
    /// The fingerprint of an upstream's config: its settings and the
    /// contents of the files they name.
    pub fn fingerprint(c: &config::Upstream, source: &Source) -> String {
        use sha2::Digest;
        let mut f = format!("{c:?}");
        for file in Upstream::files(c) {
            match std::fs::read(source.resolve(file)) {
                Ok(bytes) => f.push_str(&format!("{:x}", sha2::Sha256::digest(&bytes))),
                Err(e) => f.push_str(&format!("unreadable: {e}")),
            }
        }
        f
    }

    /// The files an upstream's config names (truststore, keystore), as
    /// written: a reload watches them.
    pub fn files(c: &config::Upstream) -> Vec<&std::path::Path> {
        let Some(t) = &c.tls else {
            return Vec::new();
        };
        let mut files: Vec<&std::path::Path> = t.truststore.iter().map(|p| p.as_path()).collect();
        for k in &t.keystore {
            files.push(&k.certificate);
            files.push(&k.key);
        }
        files
    }

    /// Builds an upstream from config, with connection pools for `workers`
    /// worker threads; problems go to `errors`.
    pub fn build(
        name: &str,
        c: &config::Upstream,
        source: &Source,
        workers: usize,
        metrics: &Metrics,
        errors: &mut Vec<ConfigError>,
        warnings: &mut Vec<ConfigError>,
    ) -> Option<Upstream> {
        let path = format!("upstreams.{name}");
        let request_timeout = Duration::from_millis(c.request_timeout_ms.max(1));
        let body_idle_timeout = Duration::from_millis(c.body_idle_timeout_ms.max(1));
        let name_arc: Arc<str> = Arc::from(name);
        let fingerprint = Upstream::fingerprint(c, source);
        let metrics = metrics.upstream(&name_arc);
        if c.url == "builtin:echo" {
            return Some(Upstream {
                name: name_arc,
                address: Arc::from("builtin:echo"),
                fingerprint,
                metrics,
                target: Target::Echo,
                request_timeout,
                body_idle_timeout,
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
        if authority.as_str().contains('@') {
            errors.push(ConfigError::new(
                source,
                format!("{path}.url"),
                "credentials in the URL (user@host) are not supported; send them with a policy (set-header)",
            ));
            return None;
        }
        if let Err(why) = check_port(authority.as_str()) {
            errors.push(ConfigError::new(
                source,
                format!("{path}.url"),
                format!("`{}`: {why}", c.url),
            ));
            return None;
        }
        let base_path = uri.path().trim_end_matches('/').to_string();

        let host = uri
            .host()
            .unwrap_or_default()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri
            .port_u16()
            .unwrap_or(if scheme == Scheme::HTTPS { 443 } else { 80 });
        let tls = if scheme == Scheme::HTTPS {
            Some(crate::tls::client::build(
                c.tls.as_ref(),
                c.protocol,
                &host,
                source,
                &path,
                errors,
                warnings,
            )?)
        } else {
            None
        };
        let mut addresses = Vec::new();
        if c.addresses.is_empty() {
            addresses.push((host, port));
        }
        for (k, a) in c.addresses.iter().enumerate() {
            match parse_address(a) {
                Ok(hp) => addresses.push(hp),
                Err(why) => {
                    errors.push(ConfigError::new(
                        source,
                        format!("{path}.addresses[{k}]"),
                        format!("`{a}`: {why}"),
                    ));
                    return None;
                }
            }
        }
        if c.max_connections == 0 {
            errors.push(ConfigError::new(
                source,
                format!("{path}.max_connections"),
                "at least 1",
            ));
            return None;
        }
        let connector = Connector::new(super::pool::Settings {
            workers,
            addresses,
            tls,
            protocol: c.protocol,
            connect_timeout: Duration::from_millis(c.connect_timeout_ms.max(1)),
            idle_timeout: Duration::from_millis(c.idle_timeout_ms.max(1)),
            max_idle: c.max_idle_connections,
            max_connections: c.max_connections,
            max_lifetime: (c.max_connection_lifetime_ms > 0)
                .then(|| Duration::from_millis(c.max_connection_lifetime_ms)),
            eject_after: c.eject_after_connect_failures,
            eject_for: Duration::from_millis(c.eject_for_ms.max(1)),
        });
        Some(Upstream {
            address: Arc::from(connector.address().as_str()),
            name: name_arc,
            fingerprint,
            metrics,
            target: Target::Http {
                connector: Box::new(connector),
                host_header: match http::HeaderValue::from_str(authority.as_str()) {
                    Ok(v) => v,
                    Err(_) => {
                        errors.push(ConfigError::new(
                            source,
                            format!("{path}.url"),
                            "the host is not a valid Host header",
                        ));
                        return None;
                    }
                },
                scheme,
                authority,
                base_path,
            },
            request_timeout,
            body_idle_timeout,
        })
    }

    /// The request target to send upstream, in origin form (the authority
    /// goes in `Host`): the upstream's base path, then the request's path
    /// (without the API's prefix when the API strips it) and query. Without
    /// a base path or stripping, the request's path and query are reused as
    /// they are.
    pub fn uri_for(&self, original: &Uri, strip: Option<&str>) -> Result<Uri, Fault> {
        let bad = |e: &dyn std::fmt::Display| {
            Fault::bad_gateway(
                codes::UPSTREAM_UNREACHABLE,
                format!("cannot build the upstream URI: {e}"),
            )
        };
        let strip = strip.filter(|p| !p.is_empty());
        let base_path = match &self.target {
            Target::Http { base_path, .. } => base_path.as_str(),
            Target::Echo => "",
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
        parts.path_and_query = Some(path_and_query);
        Uri::from_parts(parts).map_err(|e| bad(&e))
    }

    /// Sends a request and waits for the response head.
    ///
    /// # Errors
    ///
    /// A `502` fault saying why the upstream failed, or a `504` on timeout.
    ///
    /// `facts` receives the upstream's name and address, and how long the
    /// connect (for a new connection) and the first byte took.
    pub async fn send(
        &self,
        req: Request<Body>,
        facts: &mut UpstreamFacts,
    ) -> Result<Response<Body>, Fault> {
        facts.name = Some(self.name.clone());
        facts.address = Some(self.address.clone());
        match &self.target {
            Target::Echo => Ok(super::echo::respond(req).await),
            Target::Http {
                connector,
                host_header,
                ..
            } => {
                let mut req = req;
                req.headers_mut()
                    .insert(http::header::HOST, host_header.clone());
                let started = std::time::Instant::now();
                let mut timing = SendTiming::default();
                let sent =
                    tokio::time::timeout(self.request_timeout, connector.send(req, &mut timing))
                        .await;
                let connect = match (timing.connect, timing.tls) {
                    (Some(c), Some(t)) => Some(c + t),
                    (c, _) => c,
                };
                if let Some(c) = timing.connect {
                    self.metrics.connect.observe(c);
                }
                if let Some(t) = timing.tls {
                    self.metrics.tls.observe(t);
                }
                facts.connect = connect;
                facts.tls = timing.tls;
                if let Some(a) = &timing.address {
                    facts.address = Some(a.clone());
                }
                if let Some(rec) = &timing.client_auth {
                    use crate::tls::client::Outcome;
                    if rec.outcome != Outcome::NotRequested {
                        self.metrics.client_certificate(rec.outcome.name());
                    }
                    if rec.outcome.is_mismatch() && sent.as_ref().is_ok_and(|r| r.is_ok()) {
                        tracing::warn!(
                            upstream = %self.name,
                            "upstream `{}` at {} asked for a client certificate from {}; the gateway sent {} ({}), and the upstream took it",
                            self.name,
                            self.address,
                            if rec.acceptable.is_empty() { "any CA".to_string() } else { rec.acceptable.join("; ") },
                            rec.sent.as_deref().unwrap_or("none"),
                            rec.outcome.name()
                        );
                    }
                }
                facts.client_auth = timing.client_auth;
                match sent {
                    Err(_) => Err(Fault::gateway_timeout(
                        &self.name,
                        self.request_timeout.as_millis() as u64,
                    )),
                    Ok(Ok(resp)) => {
                        let first_byte = started
                            .elapsed()
                            .saturating_sub(connect.unwrap_or_default());
                        self.metrics.first_byte.observe(first_byte);
                        facts.first_byte = Some(first_byte);
                        let idle = self.body_idle_timeout;
                        Ok(resp.map(|b| boxed(super::body::IdleTimeout::new(b, idle))))
                    }
                    Ok(Err(e)) => {
                        if let SendError::Tls(f) = &e {
                            self.metrics.tls_failure(f.cause.reason());
                            if f.client_auth.outcome != crate::tls::client::Outcome::NotRequested {
                                self.metrics
                                    .client_certificate(f.client_auth.outcome.name());
                            }
                        }
                        Err(self.explain(&e, timing.address.as_deref()))
                    }
                }
            }
        }
    }

    /// The host name or address in the upstream's URL.
    fn host(&self) -> &str {
        match &self.target {
            Target::Http { connector, .. } => connector.host(),
            Target::Echo => "builtin:echo",
        }
    }

    /// The fault for a failed send; `tried` is the address the connector
    /// last tried (an upstream may have several).
    fn explain(&self, e: &SendError, tried: Option<&str>) -> Fault {
        let name = &self.name;
        let at = tried.unwrap_or(&self.address);
        match e {
            SendError::Tls(f) => Fault::bad_gateway(f.cause.code(), f.client_message(name))
                .with_internal(f.detail(name, at), f.to_json()),
            SendError::Resolve(io) => Fault::bad_gateway(
                codes::UPSTREAM_UNREACHABLE,
                format!("upstream `{name}` cannot be reached: its host name does not resolve"),
            )
            .with_internal(
                format!(
                    "cannot resolve the host `{}` of upstream `{name}`: {io}",
                    self.host()
                ),
                serde_json::Value::Null,
            ),
            SendError::Connect(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
                Fault::new(
                    http::StatusCode::SERVICE_UNAVAILABLE,
                    codes::UPSTREAM_REFUSED,
                    "Service unavailable",
                    format!("upstream `{name}` refused the connection"),
                )
                .with_internal(
                    format!("cannot connect to upstream `{name}` at {at}: {io}"),
                    serde_json::Value::Null,
                )
            }
            SendError::Connect(io) => Fault::bad_gateway(
                codes::UPSTREAM_UNREACHABLE,
                format!("upstream `{name}` cannot be reached"),
            )
            .with_internal(
                format!("cannot connect to upstream `{name}` at {at}: {io}"),
                serde_json::Value::Null,
            ),
            SendError::PoolExhausted(n) => Fault::new(
                http::StatusCode::SERVICE_UNAVAILABLE,
                codes::UPSTREAM_POOL_EXHAUSTED,
                "Service unavailable",
                format!("upstream `{name}`: every connection is busy"),
            )
            .with_internal(
                format!(
                    "upstream `{name}`: all {n} connections (max_connections) are open and none came free within connect_timeout_ms"
                ),
                serde_json::Value::Null,
            ),
            SendError::NoHttp2 => Fault::bad_gateway(
                codes::UPSTREAM_NO_HTTP2,
                format!("upstream `{name}` does not speak HTTP/2"),
            )
            .with_internal(
                format!(
                    "upstream `{name}` at {at} did not agree to h2 in ALPN; set its protocol to auto or http1"
                ),
                serde_json::Value::Null,
            ),
            SendError::ConnectTimeout(d) => Fault::new(
                http::StatusCode::GATEWAY_TIMEOUT,
                codes::UPSTREAM_CONNECT_TIMEOUT,
                "Gateway timeout",
                format!(
                    "upstream `{name}`: no connection within {} ms",
                    d.as_millis()
                ),
            )
            .with_internal(
                format!(
                    "cannot connect to upstream `{name}` at {at}: no connection within {} ms",
                    d.as_millis()
                ),
                serde_json::Value::Null,
            ),
            SendError::Http(h) => {
                let mut detail = h.to_string();
                let mut src = std::error::Error::source(h);
                while let Some(s) = src {
                    detail.push_str(": ");
                    detail.push_str(&s.to_string());
                    src = s.source();
                }
                Fault::bad_gateway(
                    codes::UPSTREAM_UNREACHABLE,
                    format!("upstream `{name}` broke the exchange"),
                )
                .with_internal(
                    format!("upstream `{name}` at {at} failed: {detail}"),
                    serde_json::Value::Null,
                )
            }
        }
    }
}

/// Checks the port of a URL's authority: absent, or a decimal number from
/// 1 to 65535. (`http::Uri` takes `host:80x` or `host:` and reads no port,
/// which would silently mean port 80.)
fn check_port(authority: &str) -> Result<(), String> {
    let after_host = match authority.strip_prefix('[') {
        Some(rest) => rest.split_once(']').map_or("", |(_, after)| after),
        None => authority.rfind(':').map_or("", |i| &authority[i..]),
    };
    let Some(port) = after_host.strip_prefix(':') else {
        return Ok(());
    };
    if port.is_empty() {
        return Err("the URL has a `:` but no port after it".into());
    }
    if !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("the port `{port}` is not a number"));
    }
    match port.parse::<u32>() {
        Ok(n) if (1..=65535).contains(&n) => Ok(()),
        _ => Err(format!("the port `{port}` is not between 1 and 65535")),
    }
}

/// Parses one `addresses` entry: `host:port` or `[v6]:port`.
fn parse_address(a: &str) -> Result<(String, u16), String> {
    let (host, port) = match a.strip_prefix('[') {
        Some(rest) => match rest.split_once("]:") {
            Some((h, p)) => (h, p),
            None => return Err("write an IPv6 address as [addr]:port".into()),
        },
        None => a
            .rsplit_once(':')
            .ok_or_else(|| "write it as host:port".to_string())?,
    };
    if host.is_empty() {
        return Err("the host is empty".into());
    }
    check_port(&format!("x:{port}"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("the port `{port}` is not a number"))?;
    Ok((host.to_string(), port))
}
