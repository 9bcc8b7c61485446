//! [`HostServices`]: the one object every policy store can reach, for the
//! work that belongs to the host rather than to a policy instance.
//!
//! It outlives config generations: it is created with the process-wide
//! [`PolicyRuntime`](crate::policy::PolicyRuntime), and every store's
//! [`HostState`](super::HostState) holds an `Arc` to it. A host interface
//! that needs shared state (the counters of the traffic policies, key sets
//! fetched for JWT validation, imported crypto keys) adds a field here and
//! implements its WIT interface in its own file next to this one, reading
//! the field through `self.services`.
//!
//! How a host call that waits on the network runs without blocking a
//! worker thread is decided in docs/ARCHITECTURE.md ("Host calls that wait
//! on the network").

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::Counters;
use crate::counters::memory::MemoryStore;
use crate::counters::redis::RedisStore;
use crate::observe::metrics::Metrics;

/// Process-wide services offered to policies.
pub struct HostServices {
    /// The gateway's metrics registry (policy call histograms are resolved
    /// from it once per pool).
    pub metrics: Arc<Metrics>,
    /// The counter store of the `counters` interface, with the settings it
    /// was made for; replaced when a config changes them.
    pub counters: ArcSwap<CounterStore>,
}

/// A counter store and its settings.
pub struct CounterStore {
    /// The config section it was made from, its path resolved.
    pub settings: Counters,
    /// The store every request counts in.
    pub store: Arc<MemoryStore>,
    /// The writer of a `durable` store.
    pub durable: Option<crate::counters::durable::Durable>,
    /// The `redis` store: when set, every operation goes there, not to
    /// `store`.
    pub remote: Option<Arc<RedisStore>>,
}

impl CounterStore {
    fn memory(settings: Counters) -> Self {
        CounterStore {
            store: MemoryStore::new(settings.max_keys, settings.fail_mode),
            settings,
            durable: None,
            remote: None,
        }
    }
}

impl HostServices {
    /// Services recording into `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(HostServices {
            metrics,
            counters: ArcSwap::from_pointee(CounterStore::memory(Counters::default())),
        })
    }

    /// Makes the store a config's `counters:` settings ask for (paths
    /// relative to `base_dir`), or `None` when they are those in force
    /// (a reload keeps the store and its counts).
    ///
    /// # Errors
    ///
    /// `key: message` (the key under `counters`): a `durable` store without
    /// a file, or whose file cannot be opened.
    pub fn prepare_counters(
        &self,
        settings: &Counters,
        base_dir: &std::path::Path,
        named_value: &dyn Fn(&str) -> Result<String, String>,
    ) -> Result<Option<CounterStore>, String> {
        use crate::config::CounterBackend;
        let settings = resolved(settings, base_dir);
        let current = self.counters.load();
        if current.settings == settings {
            return Ok(None);
        }
        check_counters(&settings)?;
        match settings.backend {
            CounterBackend::Memory => Ok(Some(CounterStore::memory(settings))),
            CounterBackend::Durable => {
                let Some(path) = settings.path.clone() else {
                    return Err("path: the durable backend needs a file".into());
                };
                if current.settings.backend == CounterBackend::Durable
                    && current.settings.path.as_deref() == Some(path.as_path())
                {
                    return Err(format!(
                        "path: the durable store of {} is in use; its other settings change with a restart",
                        path.display()
                    ));
                }
                let (store, durable) = crate::counters::durable::open(
                    &path,
                    settings.max_keys,
                    settings.fail_mode,
                    std::time::Duration::from_millis(settings.flush_ms),
                )
                .map_err(|e| format!("path: {e}"))?;
                Ok(Some(CounterStore {
                    store,
                    settings,
                    durable: Some(durable),
                    remote: None,
                }))
            }
            CounterBackend::Redis => {
                let Some(r) = &settings.redis else {
                    return Err("redis: the redis backend needs `redis: {url: …}`".into());
                };
                let remote = RedisStore::open(&redis_settings(r, settings.fail_mode, named_value)?)
                    .map_err(|e| format!("redis.{e}"))?;
                let mut store = CounterStore::memory(settings);
                store.remote = Some(remote);
                Ok(Some(store))
            }
        }
    }

    /// Puts a store made by [`HostServices::prepare_counters`] in force;
    /// the one it replaces writes out its last changes once the last
    /// request using it is done.
    pub fn install_counters(&self, store: CounterStore) {
        tracing::info!(
            backend = ?store.settings.backend,
            max_keys = store.settings.max_keys,
            fail_mode = ?store.settings.fail_mode,
            "counter store changed: counting goes on from what it holds"
        );
        self.counters.store(Arc::new(store));
    }
}

/// `settings` with its file paths relative to `base_dir`.
fn resolved(settings: &Counters, base_dir: &std::path::Path) -> Counters {
    let mut settings = settings.clone();
    if let Some(p) = &settings.path {
        settings.path = Some(base_dir.join(p));
    }
    if let Some(r) = settings.redis.as_mut() {
        for f in [&mut r.ca_file, &mut r.cert_file, &mut r.key_file] {
            if let Some(p) = f.as_mut() {
                *p = base_dir.join(&*p);
            }
        }
    }
    settings
}

/// What `gatehouse check` checks of a `counters:` section: everything
/// [`HostServices::prepare_counters`] does, short of opening the store
/// (a running gateway holds the durable file; Redis is not called). The
/// Redis TLS files and password reference are read.
///
/// # Errors
///
/// `key: message`, the key under `counters`.
pub fn check_counters_in(
    settings: &Counters,
    base_dir: &std::path::Path,
    named_value: &dyn Fn(&str) -> Result<String, String>,
) -> Result<(), String> {
    let settings = resolved(settings, base_dir);
    check_counters(&settings)?;
    if let (crate::config::CounterBackend::Redis, Some(r)) = (settings.backend, &settings.redis) {
        let s = redis_settings(r, settings.fail_mode, named_value)?;
        crate::counters::redis::check(&s).map_err(|e| format!("redis.{e}"))?;
    }
    Ok(())
}

/// The checks of a `counters:` section that need no file.
///
/// # Errors
///
/// `key: message`, the key under `counters`.
pub fn check_counters(settings: &Counters) -> Result<(), String> {
    use crate::config::CounterBackend;
    if !(10..=60_000).contains(&settings.flush_ms) {
        return Err(format!(
            "flush_ms: {} is outside 10..=60000",
            settings.flush_ms
        ));
    }
    match (settings.backend, &settings.path) {
        (CounterBackend::Memory | CounterBackend::Redis, Some(_)) => {
            return Err("path: only the durable backend has a file".into());
        }
        (CounterBackend::Durable, None) => {
            return Err(
                "path: the durable backend needs a file (e.g. `path: counters.redb`)".into(),
            );
        }
        _ => {}
    }
    match (settings.backend, &settings.redis) {
        (CounterBackend::Redis, None) => {
            Err("redis: the redis backend needs `redis: {url: redis://127.0.0.1:6379}`".into())
        }
        (CounterBackend::Memory | CounterBackend::Durable, Some(_)) => {
            Err("redis: only the redis backend has a server".into())
        }
        (_, Some(r)) => {
            if !(1..=10_000).contains(&r.timeout_ms) {
                return Err(format!(
                    "redis.timeout_ms: {} is outside 1..=10000",
                    r.timeout_ms
                ));
            }
            if !(10..=60_000).contains(&r.connect_timeout_ms) {
                return Err(format!(
                    "redis.connect_timeout_ms: {} is outside 10..=60000",
                    r.connect_timeout_ms
                ));
            }
            if !(r.url.starts_with("redis://") || r.url.starts_with("rediss://")) {
                return Err(format!(
                    "redis.url: `{}` is not a redis:// or rediss:// URL",
                    crate::counters::redis::redact_url(&r.url)
                ));
            }
            if r.cert_file.is_some() != r.key_file.is_some() {
                return Err("redis.cert_file: cert_file and key_file go together".into());
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// The Redis store's settings from the config's: files read, the
/// password's `{{ref:name}}` resolved.
fn redis_settings(
    r: &crate::config::RedisCounters,
    fail_mode: crate::counters::FailMode,
    named_value: &dyn Fn(&str) -> Result<String, String>,
) -> Result<crate::counters::redis::Settings, String> {
    let read = |key: &str, p: &Option<std::path::PathBuf>| -> Result<Option<Vec<u8>>, String> {
        match p {
            None => Ok(None),
            Some(p) => std::fs::read(p)
                .map(Some)
                .map_err(|e| format!("redis.{key}: cannot read {}: {e}", p.display())),
        }
    };
    let password = match r.password.as_deref() {
        None => None,
        Some(p) => match p
            .trim()
            .strip_prefix("{{ref:")
            .and_then(|s| s.strip_suffix("}}"))
        {
            Some(name) => {
                Some(named_value(name.trim()).map_err(|e| format!("redis.password: {e}"))?)
            }
            None => Some(p.to_string()),
        },
    };
    let ca_pem = read("ca_file", &r.ca_file)?;
    let client_cert = match (
        read("cert_file", &r.cert_file)?,
        read("key_file", &r.key_file)?,
    ) {
        (Some(c), Some(k)) => Some((c, k)),
        _ => None,
    };
    Ok(crate::counters::redis::Settings {
        url: r.url.clone(),
        username: r.username.clone(),
        password,
        timeout: std::time::Duration::from_millis(r.timeout_ms),
        connect_timeout: std::time::Duration::from_millis(r.connect_timeout_ms),
        key_prefix: r.key_prefix.clone(),
        ca_pem,
        client_cert,
        fail_mode,
    })
}
