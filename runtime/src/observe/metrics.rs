//! Prometheus metrics, exposed by the admin listener at `GET /metrics`.
//!
//! The registry, families, counters, gauges and the text exposition are
//! `prometheus-client`'s. Histograms are this module's [`Histogram`]: the
//! crate's own takes a mutex on every observation, and a policy-call
//! histogram is observed several times per request on every worker; this
//! one records with two relaxed atomic additions and is encoded by the
//! crate like any other histogram.
//!
//! No label takes a value a client controls: listener, API, operation,
//! upstream and policy names come from the config, status codes are
//! bounded, and reasons are fixed sets. A request that matches no route is
//! counted under `api=""`.
//!
//! Hot paths hold resolved handles (an API's duration histogram, a policy
//! pool's call histograms) instead of looking labels up per request.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::{Registry, Unit};

/// Upper bounds, in seconds, of request and upstream duration buckets.
const REQUEST_BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];
/// Upper bounds, in seconds, of policy call buckets (a warm call is about a
/// microsecond; the default deadline is 100 ms).
const POLICY_BUCKETS: [f64; 12] = [
    0.000_001,
    0.000_002_5,
    0.000_005,
    0.000_01,
    0.000_025,
    0.000_05,
    0.000_1,
    0.000_5,
    0.001,
    0.01,
    0.05,
    0.1,
];

/// A histogram with fixed buckets, recorded without locks.
#[derive(Clone, Debug)]
pub struct Histogram(Arc<HistogramInner>);

#[derive(Debug)]
struct HistogramInner {
    bounds: &'static [f64],
    /// One count per bound, then the `+Inf` bucket.
    counts: Box<[AtomicU64]>,
    /// Sum of observations in nanoseconds.
    sum_nanos: AtomicU64,
}

impl Histogram {
    fn with_bounds(bounds: &'static [f64]) -> Self {
        let counts = (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect();
        Histogram(Arc::new(HistogramInner {
            bounds,
            counts,
            sum_nanos: AtomicU64::new(0),
        }))
    }

    /// Records one duration.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = self
            .0
            .bounds
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(self.0.bounds.len());
        self.0.counts[i].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.0.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.0
            .counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }
}

impl TypedMetric for Histogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Histogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let mut buckets = Vec::with_capacity(self.0.counts.len());
        let mut count = 0;
        for (i, c) in self.0.counts.iter().enumerate() {
            let n = c.load(Ordering::Relaxed);
            count += n;
            let bound = self.0.bounds.get(i).copied().unwrap_or(f64::INFINITY);
            buckets.push((bound, n));
        }
        let sum = self.0.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        encoder
            .encode_histogram::<prometheus_client::encoding::NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// Makes request-duration histograms for a [`Family`].
#[derive(Clone, Copy, Debug)]
pub struct RequestBuckets;
impl MetricConstructor<Histogram> for RequestBuckets {
    fn new_metric(&self) -> Histogram {
        Histogram::with_bounds(&REQUEST_BUCKETS)
    }
}

/// Makes policy-call histograms for a [`Family`].
#[derive(Clone, Copy, Debug)]
pub struct PolicyBuckets;
impl MetricConstructor<Histogram> for PolicyBuckets {
    fn new_metric(&self) -> Histogram {
        Histogram::with_bounds(&POLICY_BUCKETS)
    }
}

/// `listener, api, operation, status`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Listener name.
    pub listener: Arc<str>,
    /// API name, empty when no API matched.
    pub api: Arc<str>,
    /// Operation name, empty when none matched.
    pub operation: Arc<str>,
    /// Status sent (or `0` when the client left before a response).
    pub status: u16,
}

/// `listener, api`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiLabels {
    /// Listener name.
    pub listener: Arc<str>,
    /// API name, empty when no API matched.
    pub api: Arc<str>,
}

/// `upstream`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabels {
    /// Upstream name.
    pub upstream: Arc<str>,
}

/// `upstream, reason` (or `outcome`): a fixed word.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamReasonLabels {
    /// Upstream name.
    pub upstream: Arc<str>,
    /// A fixed word (a TLS failure's cause, a client-certificate outcome).
    pub reason: &'static str,
}

/// `policy, outcome`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyCallLabels {
    /// Policy name.
    pub policy: Arc<str>,
    /// One of [`CallOutcome::label`].
    pub outcome: &'static str,
}

/// `policy`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyLabels {
    /// Policy name.
    pub policy: Arc<str>,
}

/// `listener, reason`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TlsFailureLabels {
    /// Listener name.
    pub listener: Arc<str>,
    /// A fixed reason, see [`crate::observe::tls_failure_reason`].
    pub reason: &'static str,
}

/// `listener`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabels {
    /// Listener name.
    pub listener: Arc<str>,
}

/// `result`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    /// `ok` or `refused`.
    pub result: &'static str,
}

/// How a policy call ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallOutcome {
    /// `continue`.
    Continue,
    /// `respond`.
    Respond,
    /// `deny`.
    Deny,
    /// The guest trapped.
    Trap,
    /// The call ran past its deadline.
    Timeout,
    /// The instance hit its memory cap.
    Memory,
    /// No instance could be made.
    Unavailable,
    /// The call asked for more than a host-side cap allows.
    Limit,
}

impl CallOutcome {
    /// Every outcome, in label order.
    pub const ALL: [CallOutcome; 8] = [
        CallOutcome::Continue,
        CallOutcome::Respond,
        CallOutcome::Deny,
        CallOutcome::Trap,
        CallOutcome::Timeout,
        CallOutcome::Memory,
        CallOutcome::Unavailable,
        CallOutcome::Limit,
    ];

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            CallOutcome::Continue => "continue",
            CallOutcome::Respond => "respond",
            CallOutcome::Deny => "deny",
            CallOutcome::Trap => "trap",
            CallOutcome::Timeout => "timeout",
            CallOutcome::Memory => "memory",
            CallOutcome::Unavailable => "unavailable",
            CallOutcome::Limit => "limit",
        }
    }
}

/// The call histograms of one policy, resolved once per pool.
#[derive(Clone, Debug)]
pub struct PolicyCallMetrics {
    by_outcome: [Histogram; 8],
    /// Calls that found no idle instance and built one on the request path.
    pub pool_misses: Counter,
}

impl PolicyCallMetrics {
    /// Records one call.
    pub fn observe(&self, outcome: CallOutcome, d: Duration) {
        self.by_outcome[outcome as usize].observe(d);
    }
}

/// Every metric the gateway exports, with the registry that encodes them.
pub struct Metrics {
    registry: Registry,
    /// `gatehouse_requests_total{listener,api,operation,status}`.
    pub requests: Family<RequestLabels, Counter>,
    /// `gatehouse_request_duration_seconds{listener,api}`: from the request
    /// head to the end of the response body.
    pub request_duration: Family<ApiLabels, Histogram, RequestBuckets>,
    /// `gatehouse_upstream_connect_duration_seconds{upstream}`: TCP connect
    /// of new upstream connections.
    pub upstream_connect: Family<UpstreamLabels, Histogram, RequestBuckets>,
    /// `gatehouse_upstream_tls_handshake_duration_seconds{upstream}`.
    pub upstream_tls: Family<UpstreamLabels, Histogram, RequestBuckets>,
    /// `gatehouse_upstream_first_byte_seconds{upstream}`: from sending the
    /// request to the response head.
    pub upstream_first_byte: Family<UpstreamLabels, Histogram, RequestBuckets>,
    /// `gatehouse_upstream_tls_failures_total{upstream,reason}`: failed
    /// upstream handshakes by cause.
    pub upstream_tls_failures: Family<UpstreamReasonLabels, Counter>,
    /// `gatehouse_upstream_client_certificates_total{upstream,reason}`:
    /// new upstream connections whose handshake asked for a client
    /// certificate, by how it was chosen (`matched`, `no_ca_list`,
    /// `mismatch_sent_default`, `mismatch_sent_none`, `none_configured`,
    /// `no_supported_algorithm`).
    pub upstream_client_certs: Family<UpstreamReasonLabels, Counter>,
    /// `gatehouse_policy_call_duration_seconds{policy,outcome}`.
    pub policy_calls: Family<PolicyCallLabels, Histogram, PolicyBuckets>,
    /// `gatehouse_policy_pool_misses_total{policy}`.
    pub pool_misses: Family<PolicyLabels, Counter>,
    /// `gatehouse_downstream_tls_handshake_failures_total{listener,reason}`.
    pub tls_failures: Family<TlsFailureLabels, Counter>,
    /// `gatehouse_connections_refused_total{listener,reason}`: connections
    /// closed at accept by `limits.max_connections` or
    /// `limits.max_connections_per_ip`.
    pub connections_refused: Family<TlsFailureLabels, Counter>,
    /// `gatehouse_open_connections{listener}`.
    pub open_connections: Family<ListenerLabels, Gauge>,
    /// `gatehouse_config_generation`: 1 for the config started with, +1 per
    /// successful reload.
    pub config_generation: Gauge,
    /// `gatehouse_config_last_reload_success`: 1 if the last reload was
    /// applied (or none was tried), 0 if it was refused.
    pub last_reload_success: Gauge,
    /// `gatehouse_config_last_reload_timestamp_seconds`.
    pub last_reload_time: Gauge,
    /// `gatehouse_config_reloads_total{result}`.
    pub reloads: Family<ReloadLabels, Counter>,
    /// `gatehouse_policy_components_compiled_total`: components compiled
    /// (or read from the disk cache) because their bytes were new.
    pub components_compiled: Counter,
    /// `gatehouse_policy_components_reused_total`: components a reload took
    /// from memory because their bytes had not changed.
    pub components_reused: Counter,
    /// `gatehouse_counters_unavailable_total`: counter operations the
    /// counter store could not do (full); `counters.fail_mode` decided.
    pub counters_unavailable: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every metric registered.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("gatehouse");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests by listener, API, operation and response status",
            requests.clone(),
        );
        let request_duration = Family::new_with_constructor(RequestBuckets);
        registry.register_with_unit(
            "request_duration",
            "From the request head to the end of the response body",
            Unit::Seconds,
            request_duration.clone(),
        );
        let upstream_connect = Family::new_with_constructor(RequestBuckets);
        registry.register_with_unit(
            "upstream_connect_duration",
            "TCP connect of new upstream connections",
            Unit::Seconds,
            upstream_connect.clone(),
        );
        let upstream_tls = Family::new_with_constructor(RequestBuckets);
        registry.register_with_unit(
            "upstream_tls_handshake_duration",
            "TLS handshakes of new upstream connections",
            Unit::Seconds,
            upstream_tls.clone(),
        );
        let upstream_first_byte = Family::new_with_constructor(RequestBuckets);
        registry.register_with_unit(
            "upstream_first_byte",
            "From sending a request upstream to its response head",
            Unit::Seconds,
            upstream_first_byte.clone(),
        );
        let upstream_tls_failures = Family::<UpstreamReasonLabels, Counter>::default();
        registry.register(
            "upstream_tls_failures",
            "Failed upstream TLS handshakes by upstream and cause",
            upstream_tls_failures.clone(),
        );
        let upstream_client_certs = Family::<UpstreamReasonLabels, Counter>::default();
        registry.register(
            "upstream_client_certificates",
            "Upstream handshakes that asked for a client certificate, by how the gateway chose one",
            upstream_client_certs.clone(),
        );
        let policy_calls = Family::new_with_constructor(PolicyBuckets);
        registry.register_with_unit(
            "policy_call_duration",
            "Policy calls by policy and outcome (continue, respond, deny, trap, timeout, memory, unavailable, limit)",
            Unit::Seconds,
            policy_calls.clone(),
        );
        let pool_misses = Family::<PolicyLabels, Counter>::default();
        registry.register(
            "policy_pool_misses",
            "Policy calls that found no idle instance and built one",
            pool_misses.clone(),
        );
        let tls_failures = Family::<TlsFailureLabels, Counter>::default();
        registry.register(
            "downstream_tls_handshake_failures",
            "Failed client TLS handshakes by listener and reason",
            tls_failures.clone(),
        );
        let connections_refused = Family::<TlsFailureLabels, Counter>::default();
        registry.register(
            "connections_refused",
            "Client connections closed at accept by a connection limit, by listener and limit",
            connections_refused.clone(),
        );
        let open_connections = Family::<ListenerLabels, Gauge>::default();
        registry.register(
            "open_connections",
            "Client connections open, by listener",
            open_connections.clone(),
        );
        let config_generation = Gauge::default();
        registry.register(
            "config_generation",
            "Generation of the config in force (1 at start, +1 per applied reload)",
            config_generation.clone(),
        );
        let last_reload_success = Gauge::default();
        last_reload_success.set(1);
        registry.register(
            "config_last_reload_success",
            "1 if the last reload was applied (or none was tried), 0 if it was refused",
            last_reload_success.clone(),
        );
        let last_reload_time = Gauge::default();
        registry.register_with_unit(
            "config_last_reload_timestamp",
            "When the last reload was tried, Unix time",
            Unit::Seconds,
            last_reload_time.clone(),
        );
        let reloads = Family::<ReloadLabels, Counter>::default();
        registry.register("config_reloads", "Reloads by result", reloads.clone());
        let components_compiled = Counter::default();
        registry.register(
            "policy_components_compiled",
            "Policy components compiled or read from the disk cache because their bytes were new to this process",
            components_compiled.clone(),
        );
        let components_reused = Counter::default();
        registry.register(
            "policy_components_reused",
            "Policy components taken from memory by a reload because their bytes had not changed",
            components_reused.clone(),
        );
        let counters_unavailable = Counter::default();
        registry.register(
            "counters_unavailable",
            "Counter operations of rate limits and quotas the counter store could not do (it holds counters.max_keys keys); counters.fail_mode decided the request",
            counters_unavailable.clone(),
        );
        Metrics {
            registry,
            requests,
            request_duration,
            upstream_connect,
            upstream_tls,
            upstream_first_byte,
            upstream_tls_failures,
            upstream_client_certs,
            policy_calls,
            pool_misses,
            tls_failures,
            connections_refused,
            open_connections,
            config_generation,
            last_reload_success,
            last_reload_time,
            reloads,
            components_compiled,
            components_reused,
            counters_unavailable,
        }
    }

    /// The text exposition (`application/openmetrics-text`).
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// The call histograms and miss counter of `policy`, resolved once.
    pub fn policy(&self, policy: &Arc<str>) -> PolicyCallMetrics {
        let by_outcome = CallOutcome::ALL.map(|o| {
            self.policy_calls.get_or_create_owned(&PolicyCallLabels {
                policy: policy.clone(),
                outcome: o.label(),
            })
        });
        PolicyCallMetrics {
            by_outcome,
            pool_misses: self.pool_misses.get_or_create_owned(&PolicyLabels {
                policy: policy.clone(),
            }),
        }
    }

    /// The duration histogram of requests to `api` on `listener`.
    pub fn request_histogram(&self, listener: &Arc<str>, api: &Arc<str>) -> Histogram {
        self.request_duration.get_or_create_owned(&ApiLabels {
            listener: listener.clone(),
            api: api.clone(),
        })
    }

    /// The upstream histograms of `upstream`: connect, TLS, first byte.
    pub fn upstream(&self, upstream: &Arc<str>) -> UpstreamMetrics {
        let l = UpstreamLabels {
            upstream: upstream.clone(),
        };
        UpstreamMetrics {
            connect: self.upstream_connect.get_or_create_owned(&l),
            tls: self.upstream_tls.get_or_create_owned(&l),
            first_byte: self.upstream_first_byte.get_or_create_owned(&l),
            tls_failures: self.upstream_tls_failures.clone(),
            client_certs: self.upstream_client_certs.clone(),
            name: upstream.clone(),
        }
    }

    /// The open-connections gauge of `listener`.
    pub fn open_connections(&self, listener: &Arc<str>) -> Gauge {
        self.open_connections.get_or_create_owned(&ListenerLabels {
            listener: listener.clone(),
        })
    }

    /// Counts a failed client TLS handshake.
    pub fn tls_failure(&self, listener: &Arc<str>, reason: &'static str) {
        self.tls_failures
            .get_or_create(&TlsFailureLabels {
                listener: listener.clone(),
                reason,
            })
            .inc();
    }

    /// Records the outcome of a reload.
    pub fn reload(&self, applied: bool, generation: u64) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        self.last_reload_time.set(now);
        self.last_reload_success.set(i64::from(applied));
        self.reloads
            .get_or_create(&ReloadLabels {
                result: if applied { "ok" } else { "refused" },
            })
            .inc();
        if applied {
            self.config_generation
                .set(i64::try_from(generation).unwrap_or(i64::MAX));
        }
    }
}

/// The histograms of one upstream, resolved once per upstream.
#[derive(Clone, Debug)]
pub struct UpstreamMetrics {
    /// TCP connect of new connections.
    pub connect: Histogram,
    /// TLS handshake of new connections.
    pub tls: Histogram,
    /// Request sent to response head.
    pub first_byte: Histogram,
    tls_failures: Family<UpstreamReasonLabels, Counter>,
    client_certs: Family<UpstreamReasonLabels, Counter>,
    name: Arc<str>,
}

impl UpstreamMetrics {
    /// Counts a failed handshake by cause.
    pub fn tls_failure(&self, reason: &'static str) {
        self.tls_failures
            .get_or_create(&UpstreamReasonLabels {
                upstream: self.name.clone(),
                reason,
            })
            .inc();
    }

    /// Counts how a handshake that asked for a client certificate was
    /// answered.
    pub fn client_certificate(&self, outcome: &'static str) {
        self.client_certs
            .get_or_create(&UpstreamReasonLabels {
                upstream: self.name.clone(),
                reason: outcome,
            })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_encode_cumulative_buckets_and_sum() {
        let m = Metrics::new();
        let h = m.request_histogram(&Arc::from("l"), &Arc::from("a"));
        h.observe(Duration::from_micros(300));
        h.observe(Duration::from_millis(2));
        h.observe(Duration::from_secs(10));
        let text = m.encode();
        assert!(
            text.contains(
                r#"gatehouse_request_duration_seconds_bucket{le="0.0005",listener="l",api="a"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"gatehouse_request_duration_seconds_bucket{le="0.0025",listener="l",api="a"} 2"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"gatehouse_request_duration_seconds_bucket{le="+Inf",listener="l",api="a"} 3"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"gatehouse_request_duration_seconds_count{listener="l",api="a"} 3"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"gatehouse_request_duration_seconds_sum{listener="l",api="a"} 10.0023"#
            ),
            "{text}"
        );
    }
}
