//! Building effective chains: policy entries of each scope, with the outer
//! scope's chain spliced in where `base` stands, each entry a pool of the
//! process-wide runtime.
//!
//! Components are loaded once per policy name; pools once per distinct
//! (policy, component, config, call settings) — and a pool the previous
//! config generation built with the same key is reused with its warm
//! instances.

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::{self, ChainEntry, Config, ConfigError, NamedValues, Source};
use crate::policy::{builtin, CallSettings, LoadedComponent, PolicyPool, PolicyRuntime, PoolKey};
use crate::proxy::chain::Section;
use crate::proxy::snapshot::{Chain, ChainStep};

/// Loads components and pools for one config generation.
pub struct PolicyLoader<'a> {
    pub(super) config: &'a Config,
    pub(super) source: &'a Source,
    pub(super) runtime: Arc<PolicyRuntime>,
    pub(super) named: &'a NamedValues,
    pub(super) call: CallSettings,
    pub(super) components: HashMap<String, Option<LoadedComponent>>,
    /// Pools built (or reused) for this generation.
    pub(super) pools: HashMap<PoolKey, Arc<PolicyPool>>,
    /// The previous generation's pools.
    pub(super) previous: Option<&'a HashMap<PoolKey, Arc<PolicyPool>>>,
}

impl PolicyLoader<'_> {
    fn component(
        &mut self,
        name: &str,
        path: &str,
        errors: &mut Vec<ConfigError>,
    ) -> Option<LoadedComponent> {
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
        let component = self.component(name, path, errors)?;
        let secrets = self.named.secrets();
        let key = PoolKey::new(name, component.hash, json.clone(), self.call, &secrets);
        if let Some(p) = self.pools.get(&key) {
            return Some(p.clone());
        }
        if let Some(p) = self.previous.and_then(|prev| prev.get(&key)) {
            self.pools.insert(key, p.clone());
            return Some(p.clone());
        }
        match self
            .runtime
            .pool(name, &component, json, secrets.clone(), self.call)
        {
            Ok(p) => {
                self.pools.insert(key, p.clone());
                Some(p)
            }
            Err(msg) => {
                errors.push(ConfigError::new(self.source, path, secrets.redact(&msg)));
                None
            }
        }
    }

    /// One section of a scope's chain: `entries` (if given) with `outer`
    /// spliced in at `base`; absent = the outer chain unchanged.
    #[allow(clippy::too_many_arguments)]
    fn section(
        &mut self,
        section: Section,
        entries: Option<&Vec<ChainEntry>>,
        outer: &[ChainStep],
        path: &str,
        scope: &Arc<str>,
        top_level: bool,
        errors: &mut Vec<ConfigError>,
    ) -> Vec<ChainStep> {
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
                        let inbound = section == Section::Inbound;
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
                            out.push(ChainStep {
                                pool,
                                scope: scope.clone(),
                            });
                        }
                    }
                }
            }
        }
        out
    }

    /// The effective chain of the scope at `path` (`policies`,
    /// `apis[0].policies`, ...), named `scope` in traces.
    pub fn chain(
        &mut self,
        c: Option<&config::Chains>,
        outer: &Chain,
        path: &str,
        scope: &str,
        top: bool,
        errors: &mut Vec<ConfigError>,
    ) -> Chain {
        let Some(c) = c else {
            return outer.clone();
        };
        let scope: Arc<str> = Arc::from(scope);
        Chain {
            inbound: self.section(
                Section::Inbound,
                c.inbound.as_ref(),
                &outer.inbound,
                &format!("{path}.inbound"),
                &scope,
                top,
                errors,
            ),
            outbound: self.section(
                Section::Outbound,
                c.outbound.as_ref(),
                &outer.outbound,
                &format!("{path}.outbound"),
                &scope,
                top,
                errors,
            ),
            on_error: self.section(
                Section::OnError,
                c.on_error.as_ref(),
                &outer.on_error,
                &format!("{path}.on_error"),
                &scope,
                top,
                errors,
            ),
        }
    }
}
