//! Config -> [`Snapshot`]: validation of listeners, upstreams, APIs and
//! operations, chains (see [`super::chains`]), admin and access-log
//! settings. Every problem is collected, each with file and key path; only
//! a config without problems becomes a snapshot.
//!
//! A build may take what the previous snapshot built when it is unchanged:
//! upstreams with the same settings (and their pooled connections), pools
//! with the same key (and their warm instances), the access-log file.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;

use super::chains::PolicyLoader;
use crate::config::{Config, ConfigError, ConfigErrors, NamedValues, Source};
use crate::observe::access_log::AccessLog;
use crate::observe::metrics::Metrics;
use crate::policy::{builtin, CallSettings, EngineSettings, PolicyRuntime};
use crate::proxy::route::{ApiRoute, OperationRoute, Router, Template};
use crate::proxy::snapshot::{AdminSettings, ApiData, Chain, ListenerEntry, OpData, Snapshot};
use crate::proxy::upstream::Upstream;
use crate::tls::server::TlsListener;

/// What a build works with besides the config.
pub struct BuildContext<'a> {
    /// The process-wide policy runtime.
    pub runtime: &'a Arc<PolicyRuntime>,
    /// The metrics registry (upstream histograms are resolved from it).
    pub metrics: &'a Metrics,
    /// Worker threads (upstream pools get a slot each).
    pub workers: usize,
    /// The snapshot in force, if this is a reload.
    pub previous: Option<&'a Snapshot>,
    /// The generation the new snapshot will have.
    pub generation: u64,
    /// `gatehouse check`: validate, but open no store (a running gateway
    /// may hold the counter file).
    pub check_only: bool,
}

fn parse_address(
    text: &str,
    path: String,
    source: &Source,
    errors: &mut Vec<ConfigError>,
) -> Option<SocketAddr> {
    match text.parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            errors.push(ConfigError::new(
                source,
                path,
                format!("`{text}` is not an IP:port address (e.g. 127.0.0.1:8443 or [::1]:8443)"),
            ));
            None
        }
    }
}

/// Validates `config` and builds everything it names.
///
/// # Errors
///
/// Every problem found, each with file and key path.
pub fn build(
    config: &Config,
    source: &Source,
    ctx: BuildContext<'_>,
) -> Result<Snapshot, ConfigErrors> {
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    let mut files = BTreeSet::new();
    if let Some(p) = &source.path {
        files.insert(p.clone());
    }

    let engine = EngineSettings::from_config(&config.policy_runtime, source);
    if &engine != ctx.runtime.settings() {
        errors.push(ConfigError::new(
            source,
            "policy_runtime",
            "memory_limit_mib, max_instances and cache_dir are fixed while the gateway runs (the policy engine outlives reloads); restart the gateway to change them",
        ));
    }

    // Listeners.
    if config.listeners.is_empty() {
        errors.push(ConfigError::new(
            source,
            "listeners",
            "list at least one listener",
        ));
    }
    let mut listeners = Vec::new();
    let mut names = HashSet::new();
    let mut addresses: HashMap<SocketAddr, String> = HashMap::new();
    for (i, l) in config.listeners.iter().enumerate() {
        let path = format!("listeners[{i}]");
        if !names.insert(l.name.clone()) {
            errors.push(ConfigError::new(
                source,
                format!("{path}.name"),
                format!("duplicate listener name `{}`", l.name),
            ));
        }
        let address = parse_address(&l.address, format!("{path}.address"), source, &mut errors);
        if let Some(a) = address.filter(|a| a.port() != 0) {
            if let Some(other) = addresses.insert(a, l.name.clone()) {
                errors.push(ConfigError::new(
                    source,
                    format!("{path}.address"),
                    format!("listener `{other}` already listens on {a}"),
                ));
            }
        }
        let tls = match &l.tls {
            Some(t) => {
                for h in &t.hosts {
                    files.insert(source.resolve(&h.certificate));
                    files.insert(source.resolve(&h.key));
                }
                TlsListener::build(
                    t,
                    source,
                    &format!("{path}.tls"),
                    &mut errors,
                    &mut warnings,
                )
                .map(Arc::new)
            }
            None => None,
        };
        let mut trusted = Vec::new();
        for (j, t) in l.trust_forwarded_from.iter().enumerate() {
            let parsed = t
                .parse::<ipnet::IpNet>()
                .or_else(|_| t.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
            match parsed {
                Ok(n) => trusted.push(n),
                Err(_) => errors.push(ConfigError::new(
                    source,
                    format!("{path}.trust_forwarded_from[{j}]"),
                    format!(
                        "`{t}` is not an address or a network (e.g. 10.0.0.0/8, 192.0.2.7, ::1)"
                    ),
                )),
            }
        }
        if let Some(address) = address {
            listeners.push(ListenerEntry {
                name: Arc::from(l.name.as_str()),
                address,
                tls,
                trusted,
                share_address: l.share_address,
            });
        }
    }

    // Named values, then the settings that name them.
    let named = NamedValues::resolve(config, source, &mut errors);
    for nv in config.named_values.values() {
        if let Some(f) = &nv.file {
            files.insert(source.resolve(f));
        }
    }
    let mut admin = None;
    let mut trace_key = None;
    if let Some(a) = &config.admin {
        let address = parse_address(&a.address, "admin.address".into(), source, &mut errors);
        if let Some(addr) = address {
            if let Some(l) = addresses.get(&addr) {
                errors.push(ConfigError::new(
                    source,
                    "admin.address",
                    format!("listener `{l}` already listens on {addr}; the admin listener never shares a socket with a public one"),
                ));
            }
        }
        let mut named_value = |key: &str, name: &Option<String>| -> Option<String> {
            let name = name.as_ref()?;
            match named.get(name) {
                Ok("") => {
                    errors.push(ConfigError::new(
                        source,
                        format!("admin.{key}"),
                        format!("named value `{name}` is empty"),
                    ));
                    None
                }
                Ok(v) => Some(v.to_string()),
                Err(e) => {
                    errors.push(ConfigError::new(source, format!("admin.{key}"), e));
                    None
                }
            }
        };
        let key = named_value("key", &a.key);
        trace_key = named_value("trace_key", &a.trace_key);
        if let Some(address) = address {
            admin = Some(AdminSettings { address, key });
        }
    }

    // Upstreams.
    let mut upstreams = BTreeMap::new();
    for (name, u) in &config.upstreams {
        for f in Upstream::files(u) {
            files.insert(source.resolve(f));
        }
        let fingerprint = Upstream::fingerprint(u, source);
        let previous = ctx
            .previous
            .and_then(|p| p.upstreams.get(name))
            .filter(|p| p.fingerprint == fingerprint);
        if let Some(p) = previous {
            upstreams.insert(name.clone(), p.clone());
        } else if let Some(built) = Upstream::build(
            name,
            u,
            source,
            ctx.workers,
            ctx.metrics,
            &mut errors,
            &mut warnings,
        ) {
            upstreams.insert(name.clone(), Arc::new(built));
        }
    }

    // Policies.
    for (name, c) in &config.custom_policies {
        files.insert(source.resolve(&c.wasm));
        if builtin::get(name).is_some() {
            errors.push(ConfigError::new(
                source,
                format!("custom_policies.{name}"),
                format!("`{name}` is a built-in policy's name"),
            ));
        }
    }
    let mut loader = PolicyLoader {
        config,
        source,
        runtime: ctx.runtime.clone(),
        named: &named,
        call: CallSettings::from_config(&config.policy_runtime),
        components: HashMap::new(),
        pools: HashMap::new(),
        previous: ctx.previous.map(|p| &p.pools),
    };
    let global = loader.chain(
        Some(&config.policies),
        &Chain::default(),
        "policies",
        "global",
        true,
        &mut errors,
    );

    let apis = build_apis(
        config,
        source,
        &upstreams,
        &mut loader,
        &global,
        &mut errors,
    );

    lint_client_certificates(
        config,
        source,
        &listeners,
        &apis,
        &mut errors,
        &mut warnings,
    );

    // The access log: the open file is kept when its settings are unchanged.
    let access_log = match &config.access_log {
        None => None,
        Some(a) => {
            let path = a.path.as_ref().map(|p| source.resolve(p));
            let same = ctx
                .previous
                .and_then(|p| p.access_log.clone())
                .filter(|l| l.path() == path.as_deref() && l.include_query == a.include_query);
            match same {
                Some(l) => Some(l),
                None => match AccessLog::open(path.as_deref(), a.include_query, ctx.workers) {
                    Ok(l) => Some(l),
                    Err(e) => {
                        errors.push(ConfigError::new(source, "access_log.path", e));
                        None
                    }
                },
            }
        }
    };

    let mut counters = None;
    if config.counters.max_keys == 0 {
        errors.push(ConfigError::new(
            source,
            "counters.max_keys",
            "must be at least 1",
        ));
    } else if errors.is_empty() {
        // Last, so that a config refused for another reason never opens a
        // counter file; `check` opens none.
        let named_value = |name: &str| named.get(name).map(str::to_string);
        let prepared = if ctx.check_only {
            crate::policy::host::services::check_counters_in(
                &config.counters,
                &source.base_dir,
                &named_value,
            )
            .map(|()| None)
        } else {
            ctx.runtime.services().prepare_counters(
                &config.counters,
                &source.base_dir,
                &named_value,
            )
        };
        match prepared {
            Ok(store) => counters = store,
            Err(e) => {
                let (key, msg) = e.split_once(": ").unwrap_or(("", e.as_str()));
                errors.push(ConfigError::new(source, format!("counters.{key}"), msg));
            }
        }
    }
    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }
    if let Some(store) = counters {
        ctx.runtime.services().install_counters(store);
    }
    let components: HashSet<[u8; 32]> = loader.pools.keys().map(|k| k.component()).collect();
    let pools = loader.pools;
    Ok(Snapshot {
        generation: ctx.generation,
        router: Router::new(apis),
        global,
        listeners,
        upstreams,
        limits: config.limits.clone(),
        request_metrics: admin.is_some(),
        secrets: named.secrets(),
        admin,
        trace_key,
        access_log,
        pools,
        components,
        files,
        watch: config.reload.watch,
        config_view: config_view(source, &named),
        source: source.clone(),
        warnings,
    })
}

/// A chain that reads the client certificate must be served by a TLS host
/// that asks for one. When no host serving the API asks, every request
/// arrives without a certificate (Azure API Management's "No client
/// certificate received"): an error naming the hosts and how to turn
/// negotiation on. When only some do, a warning naming the others.
fn lint_client_certificates(
    config: &Config,
    source: &Source,
    listeners: &[ListenerEntry],
    apis: &[ApiRoute<ApiData, OpData>],
    errors: &mut Vec<ConfigError>,
    warnings: &mut Vec<ConfigError>,
) {
    use crate::tls::name_matches;
    for api in apis {
        let mut readers: Vec<String> = Vec::new();
        let mut note = |chain: &Chain, scope: &str| {
            for (section, steps) in [
                ("inbound", &chain.inbound),
                ("outbound", &chain.outbound),
                ("on_error", &chain.on_error),
            ] {
                for s in steps {
                    if s.pool.reads_client_certificate() {
                        let r = format!("`{}` ({scope} {section})", s.pool.name());
                        if !readers.contains(&r) {
                            readers.push(r);
                        }
                    }
                }
            }
        };
        note(&api.data.chain, "API");
        for op in &api.operations {
            note(&op.data.chain, &format!("operation `{}`", op.name));
        }
        if readers.is_empty() {
            continue;
        }
        let serves = |names: &[String]| {
            api.hosts.is_empty()
                || api.hosts.iter().any(|h| {
                    names
                        .iter()
                        .any(|n| n == h || name_matches(n, h) || name_matches(h, n))
                })
        };
        let mut asking = Vec::new();
        let mut silent = Vec::new();
        for (i, l) in listeners.iter().enumerate() {
            match &l.tls {
                None if api.hosts.is_empty() => {
                    silent.push(format!("listeners[{i}] (`{}`, plain HTTP)", l.name));
                }
                None => {}
                Some(t) => {
                    for (j, h) in t.hosts.iter().enumerate() {
                        if !serves(&h.names) {
                            continue;
                        }
                        let at = format!("listeners[{i}].tls.hosts[{j}] ({})", h.names.join(", "));
                        if h.client_auth.is_some() {
                            asking.push(at);
                        } else {
                            silent.push(at);
                        }
                    }
                }
            }
        }
        let path = config
            .apis
            .iter()
            .position(|a| *a.name == *api.name)
            .map_or_else(|| "apis".to_string(), |i| format!("apis[{i}]"));
        let who = readers.join(", ");
        if asking.is_empty() {
            errors.push(ConfigError::new(
                source,
                path,
                format!(
                    "{who} reads the client certificate, but no TLS host serving API `{}` asks for one{}: every request would arrive without a certificate (\"No client certificate received\"). Turn negotiation on for the host: `client_certificate: {{mode: optional, truststore: CA-BUNDLE.pem}}` (or `required`)",
                    api.name,
                    if silent.is_empty() {
                        String::new()
                    } else {
                        format!(" ({} never ask)", silent.join("; "))
                    }
                ),
            ));
        } else if !silent.is_empty() {
            warnings.push(ConfigError::new(
                source,
                path,
                format!(
                    "{who} reads the client certificate, and requests for API `{}` through {} never carry one: those hosts do not ask for client certificates",
                    api.name,
                    silent.join("; ")
                ),
            ));
        }
    }
}

/// The methods an operation may name without `extension_methods`: RFC
/// 9110's, `PATCH` (RFC 5789), and WebDAV's (RFC 4918).
const STANDARD_METHODS: [&str; 16] = [
    "GET",
    "HEAD",
    "POST",
    "PUT",
    "DELETE",
    "CONNECT",
    "OPTIONS",
    "TRACE",
    "PATCH",
    "PROPFIND",
    "PROPPATCH",
    "MKCOL",
    "COPY",
    "MOVE",
    "LOCK",
    "UNLOCK",
];

fn build_apis(
    config: &Config,
    source: &Source,
    upstreams: &BTreeMap<String, Arc<Upstream>>,
    loader: &mut PolicyLoader<'_>,
    global: &Chain,
    errors: &mut Vec<ConfigError>,
) -> Vec<ApiRoute<ApiData, OpData>> {
    for (i, m) in config.extension_methods.iter().enumerate() {
        if m.is_empty() || http::Method::from_bytes(m.as_bytes()).is_err() {
            errors.push(ConfigError::new(
                source,
                format!("extension_methods[{i}]"),
                format!("`{m}` is not a method name (letters, digits and !#$%&'*+-.^_`|~)"),
            ));
        }
    }
    let mut apis = Vec::new();
    let mut api_names = HashSet::new();
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
        // Two APIs with the same hosts and path: the second could never be
        // reached.
        let mut key_hosts: Vec<String> = a.hosts.iter().map(|h| h.to_ascii_lowercase()).collect();
        key_hosts.sort();
        let key = (key_hosts, a.path.trim_end_matches('/').to_string());
        if let Some(first) = api_keys.get(&key) {
            errors.push(ConfigError::new(
                source,
                format!("{path}.path"),
                format!(
                    "API `{first}` already serves `{}` on the same hosts; this one could never be reached",
                    a.path
                ),
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
            global,
            &format!("{path}.policies"),
            &format!("api:{}", a.name),
            false,
            errors,
        );
        let mut ops = Vec::new();
        let mut op_names = HashSet::new();
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
                let upper = o.method.to_ascii_uppercase();
                let known = STANDARD_METHODS.contains(&upper.as_str())
                    || config
                        .extension_methods
                        .iter()
                        .any(|m| m.eq_ignore_ascii_case(&upper));
                match http::Method::from_bytes(upper.as_bytes()) {
                    Ok(m) if known => Some(m),
                    Ok(_) => {
                        errors.push(ConfigError::new(
                            source,
                            format!("{op_path}.method"),
                            format!(
                                "`{}` is not a standard HTTP method{}; an extension method must be listed in `extension_methods`",
                                o.method,
                                crate::config::did_you_mean(&upper, STANDARD_METHODS)
                            ),
                        ));
                        None
                    }
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
                &format!("operation:{}/{}", a.name, o.name),
                false,
                errors,
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
                case_insensitive: a.case_insensitive_paths,
                data: ApiData {
                    upstream,
                    strip_prefix: a.strip_path,
                    path_parameters: a.path_parameters,
                    chain: api_chain,
                    forward_cert: a.forward_client_certificate.clone(),
                },
            });
        }
    }
    apis
}

/// The config as written, with the values of secret named values replaced
/// by `***` wherever they appear.
fn config_view(source: &Source, named: &NamedValues) -> serde_json::Value {
    let yaml: serde_yaml_ng::Value = match serde_yaml_ng::from_str(&source.text) {
        Ok(v) => v,
        Err(_) => return serde_json::Value::Null,
    };
    let mut json = serde_json::to_value(yaml).unwrap_or(serde_json::Value::Null);
    // Literal values of secret named values.
    if let Some(nv) = json
        .get_mut("named_values")
        .and_then(serde_json::Value::as_object_mut)
    {
        for v in nv.values_mut() {
            let secret = v.get("secret").and_then(serde_json::Value::as_bool) == Some(true);
            if secret {
                if let Some(obj) = v.as_object_mut() {
                    if obj.contains_key("value") {
                        obj.insert("value".into(), "***".into());
                    }
                }
            }
        }
    }
    redact_strings(&mut json, &named.secrets());
    json
}

fn redact_strings(v: &mut serde_json::Value, secrets: &crate::config::Secrets) {
    match v {
        serde_json::Value::String(s) => {
            let r = secrets.redact(s);
            if r != *s {
                *s = r;
            }
        }
        serde_json::Value::Array(items) => {
            items.iter_mut().for_each(|i| redact_strings(i, secrets))
        }
        serde_json::Value::Object(map) => map.values_mut().for_each(|i| redact_strings(i, secrets)),
        _ => {}
    }
}
