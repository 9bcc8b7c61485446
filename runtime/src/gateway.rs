//! Building a gateway from a config, and running it.
//!
//! [`Gateway::build`] validates everything and constructs every policy,
//! collecting *all* problems; only a gateway without problems exists.
//! [`Gateway::start`] binds the listeners and serves.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use wasmtime::component::Component;

use crate::config::{
    self, ChainEntry, Config, ConfigError, ConfigErrors, Limits, NamedValues, Source,
};
use crate::policy::{builtin, PolicyPool, PolicyRuntime, RuntimeSettings};
use crate::proxy::route::{ApiRoute, OperationRoute, Router, Template};
use crate::proxy::server::{self, BoundListener};
use crate::proxy::upstream::Upstream;
use crate::tls::server::TlsListener;

/// The effective chains of one scope (API or operation), with the outer
/// scopes' chains already spliced in where `base` stood.
#[derive(Default)]
pub struct Chain {
    /// Inbound, in order.
    pub inbound: Vec<Arc<PolicyPool>>,
    /// Outbound, in order.
    pub outbound: Vec<Arc<PolicyPool>>,
    /// On-error, in order.
    pub on_error: Vec<Arc<PolicyPool>>,
}

impl Chain {
    /// Policy names per section, for `gatehouse check` and tests.
    pub fn describe(&self) -> [Vec<String>; 3] {
        let names = |v: &[Arc<PolicyPool>]| v.iter().map(|p| p.name().to_string()).collect();
        [
            names(&self.inbound),
            names(&self.outbound),
            names(&self.on_error),
        ]
    }
}

/// What routing attaches to an API.
pub struct ApiData {
    /// The upstream.
    pub upstream: Arc<Upstream>,
    /// Strip the prefix before forwarding.
    pub strip_prefix: bool,
    /// The API's effective chain (for requests that match no operation).
    pub chain: Chain,
}

/// What routing attaches to an operation.
pub struct OpData {
    /// The operation's effective chain.
    pub chain: Chain,
}

/// State shared by every connection.
pub struct Shared {
    /// The routing table.
    pub router: Router<ApiData, OpData>,
    /// The global chain (for requests no API takes).
    pub global: Chain,
    /// TLS host tables by listener index.
    pub tls: Vec<Option<Arc<TlsListener>>>,
    /// Downstream limits.
    pub limits: Limits,
}

struct ListenerSpec {
    name: String,
    address: SocketAddr,
    tls: Option<Arc<TlsListener>>,
}

/// A validated gateway, not yet listening.
pub struct Gateway {
    shared: Arc<Shared>,
    listeners: Vec<ListenerSpec>,
    runtime: Arc<PolicyRuntime>,
}

/// A running gateway.
pub struct Running {
    /// The bound addresses, by listener name, in config order.
    pub addresses: Vec<(String, SocketAddr)>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    _runtime: Arc<PolicyRuntime>,
}

impl Running {
    /// The address of the listener called `name`.
    pub fn address(&self, name: &str) -> Option<SocketAddr> {
        self.addresses
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| *a)
    }

    /// Stops accepting connections and waits for the accept loops to end.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// Builds chains while loading components and pools once per distinct
/// (policy, config).
struct PolicyLoader<'a> {
    config: &'a Config,
    source: &'a Source,
    runtime: Arc<PolicyRuntime>,
    named: NamedValues,
    components: HashMap<String, Option<Component>>,
    pools: HashMap<(String, String), Arc<PolicyPool>>,
}

impl PolicyLoader<'_> {
    fn component(
        &mut self,
        name: &str,
        path: &str,
        errors: &mut Vec<ConfigError>,
    ) -> Option<Component> {
        if let Some(c) = self.components.get(name) {
            return c.clone();
        }
        let loaded = if let Some(custom) = self.config.custom_policies.get(name) {
            let file = self.source.resolve(&custom.wasm);
            match std::fs::read(&file) {
                Ok(bytes) => match self.runtime.load_component(&bytes) {
                    Ok(c) => Some(c),
                    Err(e) => {
                        errors.push(ConfigError::new(
                            self.source,
                            format!("custom_policies.{name}.wasm"),
                            format!(
                                "{} is not a valid WebAssembly component: {e}",
                                file.display()
                            ),
                        ));
                        None
                    }
                },
                Err(e) => {
                    errors.push(ConfigError::new(
                        self.source,
                        format!("custom_policies.{name}.wasm"),
                        format!("cannot read {}: {e}", file.display()),
                    ));
                    None
                }
            }
        } else if let Some(bytes) = builtin::get(name) {
            match self.runtime.load_component(bytes) {
                Ok(c) => Some(c),
                Err(e) => {
                    errors.push(ConfigError::new(
                        self.source,
                        path,
                        format!("built-in policy `{name}` failed to load: {e}"),
                    ));
                    None
                }
            }
        } else {
            let builtins: Vec<&str> = builtin::names().collect();
            let customs: Vec<&str> = self
                .config
                .custom_policies
                .keys()
                .map(String::as_str)
                .collect();
            errors.push(ConfigError::new(
                self.source,
                path,
                format!(
                    "unknown policy `{name}` (built-in: {}; custom: {})",
                    builtins.join(", "),
                    if customs.is_empty() {
                        "none".to_string()
                    } else {
                        customs.join(", ")
                    }
                ),
            ));
            None
        };
        self.components.insert(name.to_string(), loaded.clone());
        loaded
    }

    fn pool(
        &mut self,
        name: &str,
        config: &serde_json::Value,
        path: &str,
        errors: &mut Vec<ConfigError>,
    ) -> Option<Arc<PolicyPool>> {
        let mut config = config.clone();
        if let Err(e) = self.named.substitute(&mut config) {
            errors.push(ConfigError::new(self.source, path, e));
            return None;
        }
        let json = config.to_string();
        if let Some(p) = self.pools.get(&(name.to_string(), json.clone())) {
            return Some(p.clone());
        }
        let component = self.component(name, path, errors)?;
        match self
            .runtime
            .pool(name, &component, json.clone(), self.named.secrets())
        {
            Ok(p) => {
                self.pools.insert((name.to_string(), json), p.clone());
                Some(p)
            }
            Err(msg) => {
                errors.push(ConfigError::new(
                    self.source,
                    path,
                    self.named.secrets().redact(&msg),
                ));
                None
            }
        }
    }

    /// One section of a scope's chain: `entries` (if given) with `outer`
    /// spliced in at `base`; absent = the outer chain unchanged.
    fn section(
        &mut self,
        entries: Option<&Vec<ChainEntry>>,
        outer: &[Arc<PolicyPool>],
        path: &str,
        top_level: bool,
        errors: &mut Vec<ConfigError>,
    ) -> Vec<Arc<PolicyPool>> {
        let Some(entries) = entries else {
            return outer.to_vec();
        };
        let mut out = Vec::with_capacity(entries.len() + outer.len());
        let mut seen_base = false;
        for (i, e) in entries.iter().enumerate() {
            let p = format!("{path}[{i}]");
            match e {
                ChainEntry::Base if top_level => {
                    errors.push(ConfigError::new(
                        self.source,
                        p,
                        "`base` has no enclosing scope at the global level",
                    ));
                }
                ChainEntry::Base if seen_base => {
                    errors.push(ConfigError::new(
                        self.source,
                        p,
                        "`base` may appear only once per section",
                    ));
                }
                ChainEntry::Base => {
                    seen_base = true;
                    out.extend(outer.iter().cloned());
                }
                ChainEntry::Policy { name, config } => {
                    let policy_path = format!("{p}.{name}");
                    if let Some(pool) = self.pool(name, config, &policy_path, errors) {
                        // A policy placed where it has no hook would be
                        // skipped silently: refuse it instead.
                        let inbound = path.ends_with(".inbound");
                        if inbound && !pool.on_request_enabled() {
                            errors.push(ConfigError::new(
                                self.source,
                                policy_path,
                                format!("`{name}` only handles responses; put it in an `outbound` or `on_error` section"),
                            ));
                        } else if !inbound && !pool.on_response_enabled() {
                            errors.push(ConfigError::new(
                                self.source,
                                policy_path,
                                format!("`{name}` only handles requests; put it in an `inbound` section"),
                            ));
                        } else {
                            out.push(pool);
                        }
                    }
                }
            }
        }
        out
    }

    fn chain(
        &mut self,
        c: Option<&config::Chains>,
        outer: &Chain,
        path: &str,
        top: bool,
        errors: &mut Vec<ConfigError>,
    ) -> Chain {
        let Some(c) = c else {
            return Chain {
                inbound: outer.inbound.clone(),
                outbound: outer.outbound.clone(),
                on_error: outer.on_error.clone(),
            };
        };
        Chain {
            inbound: self.section(
                c.inbound.as_ref(),
                &outer.inbound,
                &format!("{path}.inbound"),
                top,
                errors,
            ),
            outbound: self.section(
                c.outbound.as_ref(),
                &outer.outbound,
                &format!("{path}.outbound"),
                top,
                errors,
            ),
            on_error: self.section(
                c.on_error.as_ref(),
                &outer.on_error,
                &format!("{path}.on_error"),
                top,
                errors,
            ),
        }
    }
}

impl Gateway {
    /// Validates `config` and constructs everything it names.
    ///
    /// # Errors
    ///
    /// Every problem found, each with file and key path.
    pub fn build(config: &Config, source: &Source) -> Result<Gateway, ConfigErrors> {
        let mut errors = Vec::new();
        let runtime =
            PolicyRuntime::new(RuntimeSettings::from_config(&config.policy_runtime, source))
                .map_err(|e| {
                    ConfigError::new(
                        source,
                        "policy_runtime",
                        format!("cannot start the policy runtime: {e}"),
                    )
                })?;

        // Listeners.
        if config.listeners.is_empty() {
            errors.push(ConfigError::new(
                source,
                "listeners",
                "list at least one listener",
            ));
        }
        let mut listeners = Vec::new();
        let mut tls_tables = Vec::new();
        let mut names = std::collections::HashSet::new();
        for (i, l) in config.listeners.iter().enumerate() {
            let path = format!("listeners[{i}]");
            if !names.insert(l.name.clone()) {
                errors.push(ConfigError::new(
                    source,
                    format!("{path}.name"),
                    format!("duplicate listener name `{}`", l.name),
                ));
            }
            let address = match l.address.parse::<SocketAddr>() {
                Ok(a) => Some(a),
                Err(_) => {
                    errors.push(ConfigError::new(
                        source,
                        format!("{path}.address"),
                        format!(
                            "`{}` is not an IP:port address (e.g. 127.0.0.1:8443 or [::1]:8443)",
                            l.address
                        ),
                    ));
                    None
                }
            };
            let tls = match &l.tls {
                Some(t) => {
                    TlsListener::build(t, source, &format!("{path}.tls"), &mut errors).map(Arc::new)
                }
                None => None,
            };
            tls_tables.push(tls.clone());
            if let Some(address) = address {
                listeners.push(ListenerSpec {
                    name: l.name.clone(),
                    address,
                    tls,
                });
            }
        }

        // Upstreams.
        let mut upstreams = HashMap::new();
        for (name, u) in &config.upstreams {
            if let Some(up) = Upstream::build(name, u, source, &mut errors) {
                upstreams.insert(name.clone(), Arc::new(up));
            }
        }

        // Policies and chains.
        let named = NamedValues::resolve(config, source, &mut errors);
        let mut loader = PolicyLoader {
            config,
            source,
            runtime: runtime.clone(),
            named,
            components: HashMap::new(),
            pools: HashMap::new(),
        };
        for (name, c) in &config.custom_policies {
            if builtin::get(name).is_some() {
                errors.push(ConfigError::new(
                    source,
                    format!("custom_policies.{name}"),
                    format!("`{name}` is a built-in policy's name"),
                ));
            }
            let _ = c;
        }
        let global = loader.chain(
            Some(&config.policies),
            &Chain::default(),
            "policies",
            true,
            &mut errors,
        );

        let mut apis = Vec::new();
        let mut api_names = std::collections::HashSet::new();
        let mut api_keys: HashMap<(Vec<String>, String), String> = HashMap::new();
        for (i, a) in config.apis.iter().enumerate() {
            let path = format!("apis[{i}]");
            if !api_names.insert(a.name.clone()) {
                errors.push(ConfigError::new(
                    source,
                    format!("{path}.name"),
                    format!("duplicate API name `{}`", a.name),
                ));
            }
            if !a.path.starts_with('/') {
                errors.push(ConfigError::new(
                    source,
                    format!("{path}.path"),
                    format!("`{}` must start with `/`", a.path),
                ));
            }
            for (j, h) in a.hosts.iter().enumerate() {
                if h.contains(':') || h.contains('/') || h.is_empty() {
                    errors.push(ConfigError::new(
                        source,
                        format!("{path}.hosts[{j}]"),
                        format!("`{h}` is not a host name (no port, no scheme): e.g. api.test.com or *.test.com"),
                    ));
                }
            }
            // Two APIs with the same hosts and path: the second could never
            // be reached.
            let mut key_hosts: Vec<String> =
                a.hosts.iter().map(|h| h.to_ascii_lowercase()).collect();
            key_hosts.sort();
            let key = (key_hosts, a.path.trim_end_matches('/').to_string());
            if let Some(first) = api_keys.get(&key) {
                errors.push(ConfigError::new(
                    source,
                    format!("{path}.path"),
                    format!("API `{first}` already serves `{}` on the same hosts; this one could never be reached", a.path),
                ));
            } else {
                api_keys.insert(key, a.name.clone());
            }
            let upstream = upstreams.get(&a.upstream).cloned();
            if upstream.is_none() && !config.upstreams.contains_key(&a.upstream) {
                let known: Vec<&str> = config.upstreams.keys().map(String::as_str).collect();
                errors.push(ConfigError::new(
                    source,
                    format!("{path}.upstream"),
                    format!(
                        "unknown upstream `{}` (defined: {})",
                        a.upstream,
                        if known.is_empty() {
                            "none".to_string()
                        } else {
                            known.join(", ")
                        }
                    ),
                ));
            }
            let api_chain = loader.chain(
                a.policies.as_ref(),
                &global,
                &format!("{path}.policies"),
                false,
                &mut errors,
            );
            let mut ops = Vec::new();
            let mut op_names = std::collections::HashSet::new();
            for (j, o) in a.operations.iter().enumerate() {
                let op_path = format!("{path}.operations[{j}]");
                if !op_names.insert(o.name.clone()) {
                    errors.push(ConfigError::new(
                        source,
                        format!("{op_path}.name"),
                        format!("duplicate operation name `{}`", o.name),
                    ));
                }
                let method = if o.method == "*" {
                    None
                } else {
                    match http::Method::from_bytes(o.method.to_ascii_uppercase().as_bytes()) {
                        Ok(m) => Some(m),
                        Err(_) => {
                            errors.push(ConfigError::new(
                                source,
                                format!("{op_path}.method"),
                                format!("`{}` is not an HTTP method", o.method),
                            ));
                            None
                        }
                    }
                };
                let template = match Template::parse(&o.path) {
                    Ok(t) => Some(t),
                    Err(e) => {
                        errors.push(ConfigError::new(source, format!("{op_path}.path"), e));
                        None
                    }
                };
                let prefix = a.path.trim_end_matches('/');
                if a.path.starts_with('/')
                    && template.is_some()
                    && !(prefix.is_empty()
                        || o.path == prefix
                        || o.path.starts_with(&format!("{prefix}/")))
                {
                    errors.push(ConfigError::new(
                        source,
                        format!("{op_path}.path"),
                        format!(
                            "`{}` is outside the API's path `{}`; operation paths are full paths",
                            o.path, a.path
                        ),
                    ));
                }
                let chain = loader.chain(
                    o.policies.as_ref(),
                    &api_chain,
                    &format!("{op_path}.policies"),
                    false,
                    &mut errors,
                );
                if let Some(template) = template {
                    ops.push(OperationRoute {
                        name: Arc::from(o.name.as_str()),
                        method,
                        template,
                        data: OpData { chain },
                    });
                }
            }
            if let Some(upstream) = upstream {
                apis.push(ApiRoute {
                    name: Arc::from(a.name.as_str()),
                    hosts: a.hosts.iter().map(|h| h.to_ascii_lowercase()).collect(),
                    prefix: a.path.trim_end_matches('/').to_string(),
                    operations: ops,
                    data: ApiData {
                        upstream,
                        strip_prefix: a.strip_path,
                        chain: api_chain,
                    },
                });
            }
        }

        if !errors.is_empty() {
            return Err(ConfigErrors(errors));
        }
        let shared = Arc::new(Shared {
            router: Router::new(apis),
            global,
            tls: tls_tables,
            limits: clone_limits(&config.limits),
        });
        Ok(Gateway {
            shared,
            listeners,
            runtime,
        })
    }

    /// The effective chains of every API and operation, for `gatehouse
    /// check`: `(api, operation, [inbound, outbound, on_error])`.
    pub fn effective_chains(&self) -> Vec<(String, Option<String>, [Vec<String>; 3])> {
        let mut out = Vec::new();
        for api in self.shared.router.apis() {
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

    /// Binds every listener and starts serving on the current tokio runtime.
    ///
    /// # Errors
    ///
    /// A listener cannot bind (its name and address are in the message).
    pub async fn start(self) -> anyhow::Result<Running> {
        let mut bound = Vec::new();
        for (index, l) in self.listeners.into_iter().enumerate() {
            let listener = TcpListener::bind(l.address).await.map_err(|e| {
                anyhow::anyhow!("listener `{}` cannot bind {}: {e}", l.name, l.address)
            })?;
            bound.push(BoundListener {
                name: l.name,
                index,
                listener,
                tls: l.tls,
            });
        }
        let (tx, rx) = watch::channel(false);
        let mut addresses = Vec::new();
        let mut tasks = Vec::new();
        for b in bound {
            let addr = b.local_addr()?;
            tracing::info!(listener = %b.name, %addr, tls = b.tls.is_some(), "listening");
            addresses.push((b.name.clone(), addr));
            tasks.push(tokio::spawn(server::serve(
                b,
                self.shared.clone(),
                rx.clone(),
            )));
        }
        Ok(Running {
            addresses,
            shutdown: tx,
            tasks,
            _runtime: self.runtime,
        })
    }
}

fn clone_limits(l: &Limits) -> Limits {
    Limits {
        max_request_header_bytes: l.max_request_header_bytes,
        max_request_headers: l.max_request_headers,
        header_read_timeout_ms: l.header_read_timeout_ms,
        tls_handshake_timeout_ms: l.tls_handshake_timeout_ms,
        shutdown_grace_ms: l.shutdown_grace_ms,
    }
}

/// Loads, validates and builds: the whole of `gatehouse check`.
///
/// # Errors
///
/// Every problem, with file and key path.
pub fn load(path: Option<&std::path::Path>) -> Result<(Gateway, Source), ConfigErrors> {
    let (config, source) = match path {
        Some(p) => config::load(p)?,
        None => config::quickstart()?,
    };
    let gw = Gateway::build(&config, &source)?;
    Ok((gw, source))
}

/// A gateway running on its own worker threads (see [`Gateway::spawn_workers`]).
pub struct Workers {
    /// The bound addresses, by listener name, in config order.
    pub addresses: Vec<(String, SocketAddr)>,
    shutdown: watch::Sender<bool>,
    threads: Vec<std::thread::JoinHandle<()>>,
    _runtime: Arc<PolicyRuntime>,
}

impl Workers {
    /// Stops accepting on every worker and joins the threads.
    pub fn stop(self) {
        let _ = self.shutdown.send(true);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// One worker's socket of one listener: name, config index, socket, TLS.
type WorkerSocket = (
    String,
    usize,
    std::net::TcpListener,
    Option<Arc<TlsListener>>,
);

/// A listening socket with `SO_REUSEPORT`, so each worker thread can have
/// its own and the kernel spreads connections across them.
fn bind_reuseport(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    #[cfg(unix)]
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

impl Gateway {
    /// Binds every listener once per worker (`SO_REUSEPORT`) and starts
    /// `workers` threads, each running a single-threaded tokio runtime with
    /// its own sockets and its own upstream connection pools: a request is
    /// served start to finish on one thread, with no work stealing and no
    /// cross-thread wake-ups. The policy instance pools are shared.
    ///
    /// # Errors
    ///
    /// A listener cannot bind (its name and address are in the message).
    pub fn spawn_workers(self, workers: usize) -> anyhow::Result<Workers> {
        let workers = workers.max(1);
        let mut per_worker: Vec<Vec<WorkerSocket>> = (0..workers).map(|_| Vec::new()).collect();
        let mut addresses = Vec::new();
        for (index, l) in self.listeners.into_iter().enumerate() {
            let mut addr = l.address;
            for (w, socks) in per_worker.iter_mut().enumerate() {
                let sock = bind_reuseport(addr).map_err(|e| {
                    anyhow::anyhow!("listener `{}` cannot bind {}: {e}", l.name, addr)
                })?;
                if w == 0 {
                    // With port 0 the first socket picks the port; the
                    // others join it.
                    addr = sock.local_addr()?;
                    tracing::info!(listener = %l.name, %addr, tls = l.tls.is_some(), workers, "listening");
                    addresses.push((l.name.clone(), addr));
                }
                socks.push((l.name.clone(), index, sock, l.tls.clone()));
            }
        }
        let (tx, rx) = watch::channel(false);
        let mut threads = Vec::new();
        for (w, socks) in per_worker.into_iter().enumerate() {
            let shared = self.shared.clone();
            let rx = rx.clone();
            let t = std::thread::Builder::new()
                .name(format!("gatehouse-worker-{w}"))
                .spawn(move || {
                    let rt = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(rt) => rt,
                        Err(e) => {
                            tracing::error!("worker {w}: cannot start its runtime: {e}");
                            return;
                        }
                    };
                    rt.block_on(async move {
                        let mut tasks = Vec::new();
                        for (name, index, sock, tls) in socks {
                            match TcpListener::from_std(sock) {
                                Ok(listener) => {
                                    let bl = BoundListener {
                                        name,
                                        index,
                                        listener,
                                        tls,
                                    };
                                    tasks.push(tokio::spawn(server::serve(
                                        bl,
                                        shared.clone(),
                                        rx.clone(),
                                    )));
                                }
                                Err(e) => tracing::error!(listener = %name, "worker {w}: {e}"),
                            }
                        }
                        for t in tasks {
                            let _ = t.await;
                        }
                    });
                })?;
            threads.push(t);
        }
        Ok(Workers {
            addresses,
            shutdown: tx,
            threads,
            _runtime: self.runtime,
        })
    }
}
