//! The admin listener: health, readiness, metrics, the config in force,
//! reload and request traces, on its own socket and its own thread (a busy
//! or stuck public listener never keeps an operator out).
//!
//! | endpoint | answer |
//! |---|---|
//! | `GET /healthz` | `200 ok` while the process serves |
//! | `GET /readyz` | `200` once every listener is bound and every policy constructed, else `503` |
//! | `GET /metrics` | Prometheus / OpenMetrics text |
//! | `GET /config` | the config in force as JSON, secrets redacted, with its generation |
//! | `POST /reload` | reloads; `200` with the new generation, or `422` with every problem |
//! | `GET /traces/{id}` | a request trace as JSON, or `404` |
//!
//! With `admin.key`, every endpoint but `/healthz` and `/readyz` asks for
//! `Authorization: Bearer KEY` (compared in constant time) and answers
//! `401` without it.
//!
//! The admin module knows nothing of how the gateway works: it calls a
//! [`Control`], which the gateway implements.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::{json, Value};
use subtle::ConstantTimeEq;
use tokio::sync::watch;

/// What the admin listener asks of the gateway.
pub trait Control: Send + Sync + 'static {
    /// Whether every listener is bound and every policy constructed.
    fn ready(&self) -> bool;
    /// The metrics exposition.
    fn metrics(&self) -> String;
    /// The config in force (redacted) and its generation.
    fn config(&self) -> Value;
    /// Reloads the config: a report, or every problem.
    ///
    /// # Errors
    ///
    /// Every problem that made the reload refuse the new config.
    fn reload(&self) -> Result<Value, Vec<String>>;
    /// A stored trace.
    fn trace(&self, id: &str) -> Option<Value>;
    /// The bearer key the endpoints ask for, if any (read per request, so
    /// a reload can change it).
    fn key(&self) -> Option<String>;
}

/// A running admin listener.
pub struct AdminServer {
    address: SocketAddr,
    stop: watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

type Resp = Response<Full<Bytes>>;

impl AdminServer {
    /// Binds `address` (plainly: a second process cannot share it) and
    /// serves on a thread of its own.
    ///
    /// # Errors
    ///
    /// The address cannot be bound, or the thread cannot start.
    pub fn start(address: SocketAddr, control: Arc<dyn Control>) -> Result<AdminServer, String> {
        let std_listener = std::net::TcpListener::bind(address)
            .map_err(|e| format!("the admin listener cannot bind {address}: {e}"))?;
        let bound = std_listener
            .local_addr()
            .map_err(|e| format!("the admin listener has no address: {e}"))?;
        std_listener
            .set_nonblocking(true)
            .map_err(|e| format!("the admin listener: {e}"))?;
        let (stop, stop_rx) = watch::channel(false);
        let thread = std::thread::Builder::new()
            .name("gatehouse-admin".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::error!("the admin listener cannot start its runtime: {e}");
                        return;
                    }
                };
                rt.block_on(serve(std_listener, control, stop_rx));
            })
            .map_err(|e| format!("cannot start the admin thread: {e}"))?;
        tracing::info!(address = %bound, "admin listener");
        Ok(AdminServer {
            address: bound,
            stop,
            thread: Some(thread),
        })
    }

    /// The bound address.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Stops accepting; with `join`, waits for the thread (never from the
    /// admin thread itself, e.g. inside `POST /reload`).
    pub fn stop(mut self, join: bool) {
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take() {
            if join {
                let _ = t.join();
            }
        }
    }
}

async fn serve(
    listener: std::net::TcpListener,
    control: Arc<dyn Control>,
    mut stop: watch::Receiver<bool>,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("the admin listener cannot serve: {e}");
            return;
        }
    };
    loop {
        let (stream, _) = tokio::select! {
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("admin accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        let control = control.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let control = control.clone();
                async move { Ok::<_, Infallible>(handle(control, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn json_response(status: StatusCode, v: &Value, content_type: &'static str) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn problem(
    status: StatusCode,
    code: &str,
    title: &str,
    detail: &str,
    extra: Option<(&str, Value)>,
) -> Resp {
    let mut doc = json!({
        "type": format!("urn:gatehouse:fault:{code}"),
        "title": title,
        "status": status.as_u16(),
        "detail": detail,
        "code": code,
    });
    if let Some((k, v)) = extra {
        doc[k] = v;
    }
    json_response(status, &doc, "application/problem+json")
}

fn text(status: StatusCode, body: String, content_type: &'static str) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn authorized(control: &dyn Control, req: &Request<Incoming>) -> bool {
    let Some(key) = control.key() else {
        return true;
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    bool::from(given.as_bytes().ct_eq(key.as_bytes()))
}

async fn handle(control: Arc<dyn Control>, req: Request<Incoming>) -> Resp {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    match path.as_str() {
        "/healthz" => return text(StatusCode::OK, "ok\n".into(), "text/plain"),
        "/readyz" => {
            return if control.ready() {
                text(StatusCode::OK, "ready\n".into(), "text/plain")
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not ready\n".into(),
                    "text/plain",
                )
            }
        }
        _ => {}
    }
    if !authorized(&*control, &req) {
        let mut r = problem(
            StatusCode::UNAUTHORIZED,
            "admin.unauthorized",
            "Unauthorized",
            "send the admin key as `Authorization: Bearer KEY`",
            None,
        );
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"gatehouse-admin\""),
        );
        return r;
    }
    let allowed = |m: &Method, allow: &'static str| -> Option<Resp> {
        (method != *m).then(|| {
            let mut r = problem(
                StatusCode::METHOD_NOT_ALLOWED,
                "admin.method-not-allowed",
                "Method not allowed",
                &format!("{path} accepts {allow}"),
                None,
            );
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(allow));
            r
        })
    };
    match path.as_str() {
        "/metrics" => {
            if let Some(r) = allowed(&Method::GET, "GET") {
                return r;
            }
            text(
                StatusCode::OK,
                control.metrics(),
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )
        }
        "/config" => {
            if let Some(r) = allowed(&Method::GET, "GET") {
                return r;
            }
            json_response(StatusCode::OK, &control.config(), "application/json")
        }
        "/reload" => {
            if let Some(r) = allowed(&Method::POST, "POST") {
                return r;
            }
            // A reload compiles and constructs: off the admin's event loop.
            let c = control.clone();
            match tokio::task::spawn_blocking(move || c.reload()).await {
                Ok(Ok(report)) => json_response(StatusCode::OK, &report, "application/json"),
                Ok(Err(problems)) => problem(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "admin.reload-refused",
                    "Config refused",
                    &format!(
                        "the new config has {} problem{}; the config in force keeps serving",
                        problems.len(),
                        if problems.len() == 1 { "" } else { "s" }
                    ),
                    Some(("problems", json!(problems))),
                ),
                Err(e) => problem(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "admin.reload-failed",
                    "Reload failed",
                    &format!("the reload did not finish: {e}"),
                    None,
                ),
            }
        }
        p if p.starts_with("/traces/") => {
            if let Some(r) = allowed(&Method::GET, "GET") {
                return r;
            }
            let id = &p["/traces/".len()..];
            match control.trace(id) {
                Some(t) => json_response(StatusCode::OK, &t, "application/json"),
                None => problem(
                    StatusCode::NOT_FOUND,
                    "admin.trace-not-found",
                    "No such trace",
                    "no trace with this id is kept (the store keeps the most recent ones)",
                    None,
                ),
            }
        }
        _ => problem(
            StatusCode::NOT_FOUND,
            "admin.not-found",
            "No such endpoint",
            "endpoints: /healthz, /readyz, /metrics, /config, /reload, /traces/{id}",
            None,
        ),
    }
}
