//! `gatehouse probe`: connect to an upstream once, the way the gateway
//! would, and say what happened — the chain it presents, the negotiated
//! version, cipher and ALPN, the CA names it accepts for client
//! certificates, which keystore certificate would be sent and why, and the
//! verdict with its cause and fix. What `openssl s_client` shows, plus the
//! answer.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use http::Uri;
use x509_parser::prelude::*;

use crate::config::{self, KeystoreEntry, Source, UpstreamTls};
use crate::tls::client::{find_rustls_error, ClientAuthRecord, Outcome, TlsFailure};

/// What to probe.
#[derive(Debug, Default)]
pub struct Target {
    /// `https://host[:port][/path]` or `http://...`.
    pub url: String,
    /// The TLS settings, as an upstream's `tls` would have them.
    pub tls: UpstreamTls,
    /// Where relative paths in `tls` are resolved.
    pub base_dir: PathBuf,
    /// The upstream's name, when probing one from a config.
    pub upstream: Option<String>,
    /// The connect timeout.
    pub connect_timeout: Duration,
    /// The HTTP version the upstream is configured with (ALPN offered).
    pub protocol: config::UpstreamProtocol,
}

impl Target {
    /// A URL with optional client certificate, key and CA bundle (the
    /// command line's `--cert`, `--key`, `--ca`).
    pub fn url(
        url: &str,
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
        ca: Option<PathBuf>,
        server_name: Option<String>,
    ) -> Result<Self, String> {
        let keystore = match (cert, key) {
            (Some(certificate), Some(key)) => vec![KeystoreEntry { certificate, key }],
            (None, None) => Vec::new(),
            _ => return Err("--cert and --key go together".into()),
        };
        Ok(Target {
            url: url.to_string(),
            tls: UpstreamTls {
                server_name,
                truststore: ca,
                keystore,
                ..UpstreamTls::default()
            },
            base_dir: std::env::current_dir().unwrap_or_default(),
            upstream: None,
            connect_timeout: Duration::from_secs(5),
            protocol: config::UpstreamProtocol::Http1,
        })
    }

    /// An upstream of a config file.
    pub fn from_config(file: &Path, upstream: &str) -> Result<Self, String> {
        let (cfg, source) = config::load(file).map_err(|e| e.to_string())?;
        let Some(u) = cfg
            .upstreams
            .into_iter()
            .find(|(n, _)| n == upstream)
            .map(|(_, u)| u)
        else {
            return Err(format!("{}: no upstream `{upstream}`", source.file));
        };
        Ok(Target {
            url: u.url,
            tls: u.tls.unwrap_or_default(),
            base_dir: source.base_dir,
            upstream: Some(upstream.to_string()),
            connect_timeout: Duration::from_millis(u.connect_timeout_ms.max(1)),
            protocol: u.protocol,
        })
    }
}

/// What a probe found.
#[derive(Debug, Default)]
pub struct Report {
    /// The lines to print.
    pub text: String,
    /// Whether a request would succeed.
    pub ok: bool,
}

impl Report {
    fn line(&mut self, s: impl AsRef<str>) {
        self.text.push_str(s.as_ref());
        self.text.push('\n');
    }

    fn verdict(mut self, ok: bool, s: impl AsRef<str>) -> Self {
        self.ok = ok;
        self.line(format!(
            "verdict: {} {}",
            if ok { "OK" } else { "FAILED" },
            s.as_ref()
        ));
        self
    }
}

/// Probes `target` once.
pub async fn probe(target: &Target) -> Report {
    let mut r = Report::default();
    let name = target.upstream.clone().unwrap_or_else(|| "probe".into());
    let uri: Uri = match target.url.parse() {
        Ok(u) => u,
        Err(e) => return r.verdict(false, format!("`{}` is not a URL: {e}", target.url)),
    };
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return r.verdict(false, format!("`{}`: use http:// or https://", target.url)),
    };
    let host = uri
        .host()
        .unwrap_or_default()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let address = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    r.line(format!("probe {} ({address})", target.url));

    // The TLS settings, checked as `gatehouse check` would.
    let tls = if https {
        let source = Source {
            file: target
                .upstream
                .clone()
                .map_or("(command line)".into(), |u| format!("upstream `{u}`")),
            base_dir: target.base_dir.clone(),
            path: None,
            text: std::sync::Arc::from(""),
        };
        let (mut errors, mut warnings) = (Vec::new(), Vec::new());
        let built = crate::tls::client::build(
            Some(&target.tls),
            target.protocol,
            &host,
            &source,
            &format!("upstreams.{name}"),
            &mut errors,
            &mut warnings,
        );
        for w in &warnings {
            r.line(format!("warning: {}", w.message));
        }
        match built {
            Some(t) if errors.is_empty() => Some(t),
            _ => {
                for e in &errors {
                    r.line(format!("error: {}: {}", e.path, e.message));
                }
                return r.verdict(
                    false,
                    "the TLS settings are not usable (see the errors above)",
                );
            }
        }
    } else {
        None
    };

    let started = Instant::now();
    let addrs: Vec<std::net::SocketAddr> =
        match tokio::net::lookup_host((host.as_str(), port)).await {
            Ok(a) => a.collect(),
            Err(e) => {
                return r.verdict(
                    false,
                    format!("upstream.unreachable: `{host}` does not resolve: {e}"),
                )
            }
        };
    let tcp = match tokio::time::timeout(
        target.connect_timeout,
        tokio::net::TcpStream::connect(addrs.as_slice()),
    )
    .await
    {
        Err(_) => {
            return r.verdict(
                false,
                format!(
                    "upstream.connect-timeout: no connection within {} ms",
                    target.connect_timeout.as_millis()
                ),
            )
        }
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            return r.verdict(false, format!("upstream.refused: {address} refused the connection: is the upstream running, on this port?"))
        }
        Ok(Err(e)) => return r.verdict(false, format!("upstream.unreachable: {e}")),
        Ok(Ok(s)) => s,
    };
    r.line(format!(
        "connected to {} in {:.1} ms",
        tcp.peer_addr().map_or(address.clone(), |a| a.to_string()),
        started.elapsed().as_secs_f64() * 1e3
    ));

    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
    let authority = uri.authority().map_or(host.clone(), |a| a.to_string());
    let Some(tls) = tls else {
        return match request(tcp, &authority, &path).await {
            Ok(status) => r.verdict(
                true,
                format!("GET {path} answered {status} over plain HTTP/1.1"),
            ),
            Err(e) => r.verdict(false, format!("upstream.unreachable: {e}")),
        };
    };

    let (config, record, seen) = tls.for_probe();
    let started = Instant::now();
    let connected = tokio::time::timeout(
        target.connect_timeout,
        tokio_rustls::TlsConnector::from(config).connect(tls.server_name.clone(), tcp),
    )
    .await;
    let record_now = || record.lock().map(|r| r.clone()).unwrap_or_default();
    show_chain(&mut r, &seen.lock().map(|s| s.clone()).unwrap_or_default());
    let stream = match connected {
        Err(_) => {
            return r.verdict(
                false,
                format!(
                    "upstream.connect-timeout: no TLS handshake within {} ms",
                    target.connect_timeout.as_millis()
                ),
            )
        }
        Ok(Err(e)) => {
            let rec = record_now();
            show_client_auth(&mut r, &rec, tls.keystore());
            let inner: &(dyn std::error::Error + 'static) = &e;
            let f = TlsFailure::classify(
                find_rustls_error(inner),
                &e.to_string(),
                rec,
                tls.keystore(),
            );
            return r.verdict(
                false,
                format!("{}\n  {}", f.cause.code(), f.detail(&name, &address)),
            );
        }
        Ok(Ok(s)) => s,
    };
    {
        let (_, c) = stream.get_ref();
        r.line(format!(
            "TLS: {} {} ALPN {} (handshake {:.1} ms)",
            match c.protocol_version() {
                Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
                Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
                _ => "?",
            },
            c.negotiated_cipher_suite()
                .and_then(|s| s.suite().as_str())
                .unwrap_or("?"),
            c.alpn_protocol()
                .map_or("(none)".into(), |p| String::from_utf8_lossy(p).into_owned()),
            started.elapsed().as_secs_f64() * 1e3
        ));
    }
    let rec = record_now();
    show_client_auth(&mut r, &rec, tls.keystore());
    // A TLS 1.3 upstream refuses a client certificate only after the
    // handshake: one request tells.
    match request(stream, &authority, &path).await {
        Ok(status) => {
            let note = if rec.outcome.is_mismatch() {
                " (but the upstream took a client certificate it did not list; see above)"
            } else {
                ""
            };
            r.verdict(true, format!("GET {path} answered {status}{note}"))
        }
        Err(e) => {
            let inner: &(dyn std::error::Error + 'static) = &*e;
            match find_rustls_error(inner) {
                Some(err) => {
                    let f = TlsFailure::classify(Some(err), &e.to_string(), rec, tls.keystore());
                    r.verdict(
                        false,
                        format!("{}\n  {}", f.cause.code(), f.detail(&name, &address)),
                    )
                }
                None => r.verdict(
                    false,
                    format!("upstream.unreachable: the exchange failed: {e}"),
                ),
            }
        }
    }
}

/// One `GET` over `io`; the response status.
async fn request<I>(
    io: I,
    authority: &str,
    path: &str,
) -> Result<http::StatusCode, Box<dyn std::error::Error + Send + Sync>>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io)).await?;
    let task = tokio::spawn(conn);
    let req = http::Request::get(path)
        .header(http::header::HOST, authority)
        .header(http::header::USER_AGENT, "gatehouse-probe")
        .body(http_body_util::Empty::<bytes::Bytes>::new())?;
    match send.send_request(req).await {
        Ok(resp) => {
            drop(send);
            task.abort();
            Ok(resp.status())
        }
        Err(e) => {
            // The request may only see "canceled": the connection's own
            // error (a TLS alert) says why.
            drop(send);
            match tokio::time::timeout(Duration::from_secs(1), task).await {
                Ok(Ok(Err(conn_err))) => Err(conn_err.into()),
                _ => Err(e.into()),
            }
        }
    }
}

fn show_chain(r: &mut Report, chain: &[rustls::pki_types::CertificateDer<'static>]) {
    if chain.is_empty() {
        return;
    }
    r.line("upstream certificate chain:");
    for (i, der) in chain.iter().enumerate() {
        let Ok((_, c)) = X509Certificate::from_der(der.as_ref()) else {
            r.line(format!("  #{i} (cannot be parsed)"));
            continue;
        };
        r.line(format!(
            "  #{i} subject {}",
            crate::tls::certinfo::rfc4514(c.subject())
        ));
        r.line(format!(
            "     issuer  {}",
            crate::tls::certinfo::rfc4514(c.issuer())
        ));
        let day = |t: i64| {
            chrono::DateTime::from_timestamp(t, 0).map_or_else(
                || t.to_string(),
                |d| d.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
            )
        };
        let (from, until) = (
            c.validity().not_before.timestamp(),
            c.validity().not_after.timestamp(),
        );
        let now = chrono::Utc::now().timestamp();
        r.line(format!(
            "     valid   {} to {}{}",
            day(from),
            day(until),
            if until < now {
                "  (EXPIRED)"
            } else if from > now {
                "  (NOT YET VALID)"
            } else {
                ""
            }
        ));
        r.line(format!(
            "     key     {}; signed with {}",
            crate::tls::floor::describe_key(&c),
            crate::tls::floor::describe_signature(&c)
        ));
        if let Ok(Some(san)) = c.subject_alternative_name() {
            let names: Vec<String> = san
                .value
                .general_names
                .iter()
                .map(|n| match n {
                    x509_parser::extensions::GeneralName::DNSName(d) => format!("DNS:{d}"),
                    x509_parser::extensions::GeneralName::IPAddress(ip) => {
                        match <[u8; 4]>::try_from(*ip) {
                            Ok(a) => format!("IP:{}", std::net::Ipv4Addr::from(a)),
                            Err(_) => match <[u8; 16]>::try_from(*ip) {
                                Ok(a) => format!("IP:{}", std::net::Ipv6Addr::from(a)),
                                Err(_) => "IP:?".into(),
                            },
                        }
                    }
                    x509_parser::extensions::GeneralName::URI(u) => format!("URI:{u}"),
                    x509_parser::extensions::GeneralName::RFC822Name(e) => format!("email:{e}"),
                    other => other.to_string(),
                })
                .collect();
            if !names.is_empty() {
                r.line(format!("     names   {}", names.join(", ")));
            }
        }
    }
}

fn show_client_auth(
    r: &mut Report,
    rec: &ClientAuthRecord,
    keystore: &crate::tls::client::Keystore,
) {
    if rec.outcome == Outcome::NotRequested {
        r.line("client certificate: not asked for");
        return;
    }
    if rec.acceptable.is_empty() {
        r.line("client certificate: asked for, any CA (the upstream named none)");
    } else {
        r.line("client certificate: asked for, from these CAs:");
        for n in &rec.acceptable {
            r.line(format!("  {n}"));
        }
    }
    if keystore.is_empty() {
        r.line("keystore: empty");
    } else {
        r.line("keystore:");
        for (i, (desc, reaches)) in keystore.against(&rec.acceptable_der).iter().enumerate() {
            let sent = rec.sent.as_deref().is_some_and(|s| desc.starts_with(s));
            r.line(format!(
                "  #{i} {desc}: {}{}",
                if *reaches {
                    "reaches a listed CA"
                } else {
                    "reaches none of them"
                },
                if sent { "  <- sent" } else { "" }
            ));
        }
    }
    let why = match rec.outcome {
        Outcome::Matched => "its chain reaches a CA the upstream named (first such in keystore order)",
        Outcome::NoCaList => "the upstream named no CA, so the first certificate",
        Outcome::MismatchSentDefault => "none reaches a named CA; the first was sent anyway (unmatched_client_certificate: send_default)",
        Outcome::MismatchSentNone => "none reaches a named CA; none was sent (unmatched_client_certificate: send_none)",
        Outcome::NoneConfigured => "the keystore is empty",
        Outcome::NoSupportedAlgorithm => "no certificate has a key for the signature schemes the upstream offered",
        Outcome::NotRequested => "",
    };
    r.line(format!(
        "sent: {} ({why})",
        rec.sent.as_deref().unwrap_or("no certificate")
    ));
}
