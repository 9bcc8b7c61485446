//! `host`: logging, traces, clocks and the request id.

use std::time::{SystemTime, UNIX_EPOCH};

use super::HostState;
use crate::policy::bindings::gatehouse::policy::host::{Host, LogLevel};

impl Host for HostState {
    fn log(&mut self, level: LogLevel, message: String) {
        // A call suspended at a remote counter question runs again.
        if self.exchange.as_deref().is_some_and(|e| e.suspended()) {
            return;
        }
        let message = self.secrets.redact(&crate::policy::limits::truncate(
            message,
            crate::policy::limits::MAX_LOG_MESSAGE,
        ));
        let policy = &*self.policy;
        if let Some(e) = self.exchange.as_deref() {
            e.trace("policy", || {
                serde_json::json!({
                    "policy": policy,
                    "scope": &*self.scope,
                    "log": format!("{level:?}").to_ascii_lowercase(),
                    "message": &message,
                })
            });
        }
        let request_id = self
            .exchange
            .as_deref()
            .map(|e| e.request_id.as_str())
            .unwrap_or("");
        match level {
            LogLevel::Trace => {
                tracing::trace!(target: "gatehouse::policy", policy, request_id, "{message}")
            }
            LogLevel::Debug => {
                tracing::debug!(target: "gatehouse::policy", policy, request_id, "{message}")
            }
            LogLevel::Info => {
                tracing::info!(target: "gatehouse::policy", policy, request_id, "{message}")
            }
            LogLevel::Warn => {
                tracing::warn!(target: "gatehouse::policy", policy, request_id, "{message}")
            }
            LogLevel::Error => {
                tracing::error!(target: "gatehouse::policy", policy, request_id, "{message}")
            }
        }
    }

    fn trace_enabled(&mut self) -> bool {
        self.exchange.as_deref().is_some_and(|e| e.trace.is_some())
    }

    fn trace(&mut self, message: String) {
        let message =
            crate::policy::limits::truncate(message, crate::policy::limits::MAX_LOG_MESSAGE);
        if let Some(e) = self.exchange.as_deref() {
            e.trace("policy", || {
                serde_json::json!({
                    "policy": &*self.policy,
                    "scope": &*self.scope,
                    "message": self.secrets.redact(&message),
                })
            });
        }
    }

    fn now_millis(&mut self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }

    fn monotonic_nanos(&mut self) -> u64 {
        super::wasi::origin().elapsed().as_nanos() as u64
    }

    fn request_id(&mut self) -> String {
        self.exchange
            .as_deref()
            .map(|e| e.request_id.to_string())
            .unwrap_or_default()
    }

    fn add_response_header(&mut self, name: String, value: String) {
        let Some(ex) = self.exchange.as_deref_mut() else {
            return;
        };
        // A call suspended at a remote counter question runs again.
        if ex.suspended() {
            return;
        }
        if ex.response_headers.len() >= MAX_RESPONSE_HEADERS {
            self.over(|| format!("more than {MAX_RESPONSE_HEADERS} added response headers"));
            return;
        }
        let Ok(n) = http::HeaderName::from_bytes(name.as_bytes()) else {
            return;
        };
        if crate::proxy::headers::is_reserved_for_framing(&n) {
            return;
        }
        let value = self.secrets.redact(&value);
        let Ok(v) = http::HeaderValue::from_str(&value) else {
            return;
        };
        ex.response_headers.push((n, v));
    }
}

/// The most headers policies may add to one request's response.
const MAX_RESPONSE_HEADERS: usize = 32;
