//! The configuration in force: one immutable [`Snapshot`] (routes, chains,
//! TLS hosts, upstreams, policy pools, observability settings) behind an
//! atomic pointer in [`Live`].
//!
//! A reload builds a whole new snapshot and swaps the pointer. A connection
//! keeps the TLS host table of the snapshot it was accepted under; each
//! request loads the current snapshot once, at its start, and uses it to
//! the end — so requests in flight finish on the config they started with.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;

use super::route::Router;
use super::upstream::Upstream;
use crate::config::{Limits, Source};
use crate::observe::access_log::AccessLog;
use crate::observe::metrics::Metrics;
use crate::observe::trace::TraceStore;
use crate::policy::{PolicyPool, PoolKey};
use crate::tls::server::TlsListener;

/// One entry of a chain: a policy pool and the scope whose config placed
/// it there.
#[derive(Clone)]
pub struct ChainStep {
    /// The pool (shared by every entry with the same policy and config).
    pub pool: Arc<PolicyPool>,
    /// `global`, `api:NAME` or `operation:API/NAME`: for traces, logs and
    /// policies that keep per-scope state.
    pub scope: Arc<str>,
}

/// The effective chains of one scope (API or operation), with the outer
/// scopes' chains already spliced in where `base` stood.
#[derive(Default, Clone)]
pub struct Chain {
    /// Inbound, in order.
    pub inbound: Vec<ChainStep>,
    /// Outbound, in order.
    pub outbound: Vec<ChainStep>,
    /// On-error, in order.
    pub on_error: Vec<ChainStep>,
}

impl Chain {
    /// Policy names per section, for `gatehouse check` and tests.
    pub fn describe(&self) -> [Vec<String>; 3] {
        let names = |v: &[ChainStep]| v.iter().map(|s| s.pool.name().to_string()).collect();
        [
            names(&self.inbound),
            names(&self.outbound),
            names(&self.on_error),
        ]
    }

    /// Whether any policy of the chain asked for the completion hook.
    pub fn wants_completion(&self) -> bool {
        self.inbound
            .iter()
            .chain(&self.outbound)
            .chain(&self.on_error)
            .any(|s| s.pool.on_complete_enabled())
    }
}

/// What routing attaches to an API.
pub struct ApiData {
    /// The upstream.
    pub upstream: Arc<Upstream>,
    /// Strip the prefix before forwarding.
    pub strip_prefix: bool,
    /// Whether paths with `;` parameters are served (stripped).
    pub path_parameters: crate::config::PathParameters,
    /// The API's effective chain (for requests that match no operation).
    pub chain: Chain,
    /// How verified client certificates are passed upstream, if they are.
    pub forward_cert: Option<crate::config::ForwardClientCertificate>,
}

/// What routing attaches to an operation.
pub struct OpData {
    /// The operation's effective chain.
    pub chain: Chain,
}

/// A listener of the config.
pub struct ListenerEntry {
    /// Its name.
    pub name: Arc<str>,
    /// The address to bind.
    pub address: SocketAddr,
    /// TLS hosts, if TLS.
    pub tls: Option<Arc<TlsListener>>,
    /// Trusted proxies' networks (`trust_forwarded_from`).
    pub trusted: Vec<ipnet::IpNet>,
    /// Whether another process may bind the same address
    /// (`share_address`).
    pub share_address: bool,
}

impl ListenerEntry {
    /// Whether a peer at `ip` is a trusted proxy.
    pub fn trusts(&self, ip: std::net::IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.trusted.iter().any(|n| n.contains(&ip))
    }
}

/// The admin listener's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminSettings {
    /// Where it listens.
    pub address: SocketAddr,
    /// The bearer key every endpoint but `/healthz` and `/readyz` asks for.
    pub key: Option<String>,
}

/// One generation of the configuration.
pub struct Snapshot {
    /// 1 for the config the gateway started with, +1 per applied reload.
    pub generation: u64,
    /// What is not wrong yet but will be (a certificate about to expire):
    /// printed by `check`, logged at start and reload.
    pub warnings: Vec<crate::config::ConfigError>,
    /// The routing table.
    pub router: Router<ApiData, OpData>,
    /// The global chain (for requests no API takes).
    pub global: Chain,
    /// The listeners, in config order.
    pub listeners: Vec<ListenerEntry>,
    /// The upstreams by name (APIs share these).
    pub upstreams: BTreeMap<String, Arc<Upstream>>,
    /// Downstream limits.
    pub limits: Limits,
    /// The admin listener, if configured.
    pub admin: Option<AdminSettings>,
    /// Whether requests are counted in the metrics (when an admin listener
    /// can serve them): the per-request counter and duration histogram.
    pub request_metrics: bool,
    /// The config's secret values, redacted from access logs and traces.
    pub secrets: crate::config::Secrets,
    /// The key a request sends in `x-gatehouse-trace` to be traced.
    pub trace_key: Option<String>,
    /// The access log, if configured.
    pub access_log: Option<Arc<AccessLog>>,
    /// Every pool, for reuse by the next generation.
    pub pools: HashMap<PoolKey, Arc<PolicyPool>>,
    /// The hashes of the components the pools use.
    pub components: HashSet<[u8; 32]>,
    /// Every file the config names (and the config file itself): what
    /// `reload.watch` watches.
    pub files: BTreeSet<PathBuf>,
    /// Whether to reload on a change of `files`.
    pub watch: bool,
    /// The config as loaded, secrets redacted: what `GET /config` shows.
    pub config_view: serde_json::Value,
    /// Where the config came from.
    pub source: Source,
}

impl Snapshot {
    /// The listener called `name`.
    pub fn listener(&self, name: &str) -> Option<&ListenerEntry> {
        self.listeners.iter().find(|l| &*l.name == name)
    }

    /// The effective chains of every API and operation, for `gatehouse
    /// check`: `(api, operation, [inbound, outbound, on_error])`.
    pub fn effective_chains(&self) -> Vec<(String, Option<String>, [Vec<String>; 3])> {
        let mut out = Vec::new();
        for api in self.router.apis() {
            out.push((api.name.to_string(), None, api.data.chain.describe()));
            for op in &api.operations {
                out.push((
                    api.name.to_string(),
                    Some(op.name.to_string()),
                    op.data.chain.describe(),
                ));
            }
        }
        out
    }
}

/// The process-wide state every connection and request reaches: the
/// current snapshot, the metrics and the trace store.
pub struct Live {
    current: ArcSwap<Snapshot>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Recent traces.
    pub traces: TraceStore,
    /// Open client connections, in all and per IP address.
    pub connections: Arc<super::limiter::ConnectionLimiter>,
}

impl Live {
    /// Live state starting with `first`.
    pub fn new(first: Arc<Snapshot>, metrics: Arc<Metrics>, traces: TraceStore) -> Self {
        metrics
            .config_generation
            .set(i64::try_from(first.generation).unwrap_or(i64::MAX));
        Live {
            current: ArcSwap::new(first),
            metrics,
            traces,
            connections: Arc::default(),
        }
    }

    /// The snapshot in force now.
    pub fn load(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Puts `next` in force for every request that starts from now on;
    /// returns the previous snapshot.
    pub fn swap(&self, next: Arc<Snapshot>) -> Arc<Snapshot> {
        self.current.swap(next)
    }
}
