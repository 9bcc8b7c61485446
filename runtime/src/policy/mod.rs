//! The policy host: one process-wide [`PolicyRuntime`] (wasmtime engine,
//! linker, epoch ticker, compiled components) that outlives config
//! generations, and a [`PolicyPool`] of constructed instances per
//! (policy, config).
//!
//! A call checks an instance out of its pool, moves the request's
//! [`Exchange`] into the instance's store, calls the hook under an epoch
//! deadline, moves the exchange back out and returns the instance. An
//! instance that traps (panic, deadline, memory cap) is dropped, never
//! returned: the next request gets a fresh one.
//!
//! - [`bindings`]: generated from `wit/`.
//! - [`host`]: the store data and the host interfaces, and
//!   [`HostServices`].
//! - [`pool`]: instance pools and calls.
//! - [`imports`]: which imports a component may have.
//! - [`cache`]: compiled-component cache keyed by content hash.
//! - [`builtin`]: the built-in policies embedded in the binary.

pub mod bindings;
pub mod builtin;
pub mod cache;
pub mod host;
pub mod imports;
pub mod limits;
pub mod pool;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker};
use wasmtime::{Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

pub use host::{Exchange, HostServices, HostState, RequestId, RouteInfo};
pub use pool::{CallSettings, PolicyError, PolicyPool, PoolKey};

/// How long one epoch tick lasts.
const TICK: Duration = Duration::from_millis(5);

/// The epoch deadline, in ticks, for `ms` milliseconds: one tick more than
/// the whole ticks `ms` spans, because the tick that is under way when the
/// call starts may end at once. A call is interrupted between `ms` and
/// `ms + 5` milliseconds after it starts, never before.
fn ticks(ms: u64) -> u64 {
    ms.div_ceil(TICK.as_millis() as u64) + 1
}

/// Settings fixed for the life of the engine (from the first config's
/// `policy_runtime`); a reload that changes them is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineSettings {
    /// Memory cap per instance, in MiB.
    pub memory_limit_mib: u64,
    /// Instances that may exist at once.
    pub max_instances: u32,
    /// Compiled-component cache directory; `None` disables the cache.
    pub cache_dir: Option<PathBuf>,
}

impl EngineSettings {
    /// Settings from the config section; a relative `cache_dir` is resolved
    /// against the config file's directory.
    pub fn from_config(c: &crate::config::PolicyRuntime, source: &crate::config::Source) -> Self {
        EngineSettings {
            memory_limit_mib: c.memory_limit_mib.max(1),
            max_instances: c.max_instances.max(4),
            cache_dir: c
                .cache_dir
                .as_deref()
                .map(|d| source.resolve(d))
                .or_else(cache::default_dir),
        }
    }
}

/// A loaded component and the hash of its bytes.
#[derive(Clone)]
pub struct LoadedComponent {
    /// The compiled component.
    pub component: Component,
    /// SHA-256 of the `.wasm` bytes.
    pub hash: [u8; 32],
}

/// The engine, the linker, the epoch ticker and the compiled components,
/// shared by every pool of every config generation.
pub struct PolicyRuntime {
    engine: Engine,
    linker: Linker<HostState>,
    settings: EngineSettings,
    services: Arc<HostServices>,
    /// Components by the SHA-256 of their bytes: a reload compiles only
    /// components whose bytes changed.
    components: Mutex<HashMap<[u8; 32], Component>>,
}

impl PolicyRuntime {
    /// Creates the engine (pooling allocator, epoch interruption) and starts
    /// the epoch ticker thread, which stops when the runtime is dropped.
    ///
    /// # Errors
    ///
    /// When wasmtime rejects the configuration or the ticker thread cannot
    /// start.
    pub fn new(settings: EngineSettings, services: Arc<HostServices>) -> anyhow::Result<Arc<Self>> {
        let mut cfg = wasmtime::Config::new();
        cfg.wasm_component_model(true);
        cfg.epoch_interruption(true);
        let mem_bytes = (settings.memory_limit_mib as usize).saturating_mul(1 << 20);
        let mut pool = PoolingAllocationConfig::default();
        let n = settings.max_instances;
        pool.total_component_instances(n)
            .total_core_instances(n.saturating_mul(4))
            .total_memories(n)
            .total_tables(n.saturating_mul(4))
            .max_memory_size(mem_bytes)
            .linear_memory_keep_resident(1 << 20)
            .table_keep_resident(1 << 16);
        cfg.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&cfg).map_err(|e| anyhow::anyhow!("{e:#}"))?;
        let mut linker: Linker<HostState> = Linker::new(&engine);
        bindings::World::add_to_linker::<HostState, wasmtime::component::HasSelf<HostState>>(
            &mut linker,
            |s| s,
        )
        .map_err(|e| anyhow::anyhow!("{e:#}"))?;
        let rt = Arc::new(PolicyRuntime {
            engine,
            linker,
            settings,
            services,
            components: Mutex::new(HashMap::new()),
        });
        // Without the ticker no call would ever hit its deadline: refuse to
        // start rather than run policies unbounded.
        spawn_ticker(Arc::downgrade(&rt))
            .map_err(|e| anyhow::anyhow!("cannot start the policy deadline thread: {e}"))?;
        Ok(rt)
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The engine settings.
    pub fn settings(&self) -> &EngineSettings {
        &self.settings
    }

    /// The services every store reaches.
    pub fn services(&self) -> &Arc<HostServices> {
        &self.services
    }

    /// The component for `wasm`: from memory if these bytes were loaded
    /// before (by this or an earlier config generation), else compiled (or
    /// read from the disk cache).
    ///
    /// # Errors
    ///
    /// When the bytes are not a valid component for this engine.
    pub fn load_component(&self, wasm: &[u8]) -> anyhow::Result<LoadedComponent> {
        let hash: [u8; 32] = Sha256::digest(wasm).into();
        if let Some(c) = self
            .components
            .lock()
            .ok()
            .and_then(|m| m.get(&hash).cloned())
        {
            self.services.metrics.components_reused.inc();
            tracing::debug!(component = %short(&hash), "policy component unchanged; not recompiled");
            return Ok(LoadedComponent { component: c, hash });
        }
        let component = cache::load(&self.engine, wasm, self.settings.cache_dir.as_deref())?;
        self.services.metrics.components_compiled.inc();
        tracing::debug!(component = %short(&hash), "policy component loaded");
        if let Ok(mut m) = self.components.lock() {
            m.insert(hash, component.clone());
        }
        Ok(LoadedComponent { component, hash })
    }

    /// Forgets the components a config generation no longer uses (pools
    /// still holding one keep it alive).
    pub fn retain_components(&self, used: &HashSet<[u8; 32]>) {
        if let Ok(mut m) = self.components.lock() {
            m.retain(|h, _| used.contains(h));
        }
    }

    /// Creates the instance pool of `policy` with `config_json`, building
    /// one instance now so a bad config is reported at load time.
    ///
    /// # Errors
    ///
    /// The component imports something the host does not provide, does not
    /// fit the `gatehouse:policy` world, or its constructor refused the
    /// config (the policy's own message).
    pub fn pool(
        self: &Arc<Self>,
        policy: &str,
        component: &LoadedComponent,
        config_json: String,
        secrets: crate::config::Secrets,
        call: CallSettings,
    ) -> Result<Arc<PolicyPool>, String> {
        let mut linker = self.linker.clone();
        imports::check(policy, &component.component, &self.engine)?;
        // A wasm32-wasip2 guest imports WASI through std even when it never
        // uses it: randomness, clocks and the (empty) environment are
        // served, every other WASI function traps (policies log through
        // the host instead).
        linker.allow_shadowing(true);
        host::wasi::stub_unserved(&mut linker, &component.component, &self.engine)
            .map_err(|e| format!("cannot link the component's WASI imports: {e:#}"))?;
        host::wasi::define(&mut linker, &component.component, &self.engine)
            .map_err(|e| format!("cannot link the component's WASI imports: {e:#}"))?;
        let pre = linker
            .instantiate_pre(&component.component)
            .map_err(|e| format!("the component does not fit the gatehouse:policy world: {e:#}"))?;
        pool::PolicyPool::new(
            self.clone(),
            policy,
            pre,
            component.hash,
            config_json,
            secrets,
            call,
        )
    }
}

fn short(hash: &[u8; 32]) -> String {
    hash[..6].iter().map(|b| format!("{b:02x}")).collect()
}

fn spawn_ticker(rt: Weak<PolicyRuntime>) -> std::io::Result<()> {
    let engine = match rt.upgrade() {
        Some(r) => r.engine.weak(),
        None => return Ok(()),
    };
    let spawned = std::thread::Builder::new()
        .name("gatehouse-epoch".into())
        .spawn(move || loop {
            std::thread::sleep(TICK);
            if rt.strong_count() == 0 {
                break;
            }
            match engine.upgrade() {
                Some(e) => e.increment_epoch(),
                None => break,
            }
        });
    spawned.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::ticks;

    #[test]
    fn a_deadline_never_ends_before_its_time() {
        // 1 ms: the current tick may end at once, the next one is whole.
        assert_eq!(ticks(1), 2);
        assert_eq!(ticks(5), 2);
        assert_eq!(ticks(6), 3);
        assert_eq!(ticks(100), 21);
    }
}
