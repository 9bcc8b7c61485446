//! The policy host: one wasmtime [`Engine`], compiled components cached on
//! disk, and a pool of constructed instances per (policy, config).
//!
//! A call checks an instance out of its pool, moves the request's
//! [`Exchange`] into the instance's store, calls the hook under an epoch
//! deadline, moves the exchange back out and returns the instance. An
//! instance that traps (panic, deadline, memory cap) is dropped, never
//! returned: the next request gets a fresh one.
//!
//! - [`bindings`]: generated from `wit/`.
//! - [`host`]: the store data and the host interfaces.
//! - [`cache`]: compiled-component cache keyed by content hash.

pub mod bindings;
pub mod builtin;
pub mod cache;
pub mod host;

use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::Duration;

use crossbeam_queue::ArrayQueue;
use wasmtime::component::{Component, Linker, Resource, ResourceAny};
use wasmtime::{Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, Trap};

use crate::config::Secrets;
use bindings::{Decision, Phases, Policy as PolicyWorld, PolicyPre};
pub use host::{Exchange, HostState, RequestId, RouteInfo, TraceEntry};

/// How long one epoch tick lasts. Deadlines are counted in ticks, rounded
/// up: a call may run up to one tick past its deadline.
const TICK: Duration = Duration::from_millis(5);

/// The epoch deadline, in ticks, for `ms` milliseconds.
fn ticks(ms: u64) -> u64 {
    ms.div_ceil(TICK.as_millis() as u64).max(1)
}

/// Why a policy call failed (as opposed to the policy refusing).
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The call ran past its deadline and was interrupted.
    #[error("policy `{policy}` ran past its {deadline_ms} ms deadline")]
    Timeout {
        /// The policy.
        policy: Arc<str>,
        /// The deadline.
        deadline_ms: u64,
    },
    /// The instance needed more memory than its cap.
    #[error("policy `{policy}` exceeded its memory limit of {limit_mib} MiB")]
    Memory {
        /// The policy.
        policy: Arc<str>,
        /// The cap.
        limit_mib: u64,
    },
    /// The guest trapped (a panic, an `unreachable`, ...).
    #[error("policy `{policy}` trapped: {message}")]
    Trap {
        /// The policy.
        policy: Arc<str>,
        /// The trap, as wasmtime describes it.
        message: String,
    },
    /// A new instance could not be created (e.g. the instance limit).
    #[error("policy `{policy}` has no instance available: {message}")]
    Unavailable {
        /// The policy.
        policy: Arc<str>,
        /// Why.
        message: String,
    },
}

/// Settings of the policy runtime (from the config's `policy_runtime`).
#[derive(Clone, Debug)]
pub struct RuntimeSettings {
    /// Deadline of one call.
    pub call_deadline_ms: u64,
    /// Memory cap per instance, in MiB.
    pub memory_limit_mib: u64,
    /// Ready instances kept per pool.
    pub instances_per_policy: usize,
    /// Instances that may exist at once.
    pub max_instances: u32,
    /// Compiled-component cache directory; `None` disables the cache.
    pub cache_dir: Option<PathBuf>,
}

impl RuntimeSettings {
    /// Settings from the config section; a relative `cache_dir` is resolved
    /// against the config file's directory.
    pub fn from_config(c: &crate::config::PolicyRuntime, source: &crate::config::Source) -> Self {
        RuntimeSettings {
            call_deadline_ms: c.call_deadline_ms.max(1),
            memory_limit_mib: c.memory_limit_mib.max(1),
            instances_per_policy: c.instances_per_policy.max(1),
            max_instances: c.max_instances.max(4),
            cache_dir: c
                .cache_dir
                .as_deref()
                .map(|d| source.resolve(d))
                .or_else(cache::default_dir),
        }
    }
}

/// The engine, the linker and the epoch ticker, shared by every pool.
pub struct PolicyRuntime {
    engine: Engine,
    linker: Linker<HostState>,
    settings: RuntimeSettings,
}

impl PolicyRuntime {
    /// Creates the engine (pooling allocator, epoch interruption) and starts
    /// the epoch ticker thread, which stops when the runtime is dropped.
    ///
    /// # Errors
    ///
    /// When wasmtime rejects the configuration.
    pub fn new(settings: RuntimeSettings) -> anyhow::Result<Arc<Self>> {
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
        PolicyWorld::add_to_linker::<HostState, wasmtime::component::HasSelf<HostState>>(
            &mut linker,
            |s| s,
        )
        .map_err(|e| anyhow::anyhow!("{e:#}"))?;
        let rt = Arc::new(PolicyRuntime {
            engine,
            linker,
            settings,
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

    /// The settings.
    pub fn settings(&self) -> &RuntimeSettings {
        &self.settings
    }

    /// Compiles (or loads from the cache) a component.
    ///
    /// # Errors
    ///
    /// When the bytes are not a valid component for this engine.
    pub fn load_component(&self, wasm: &[u8]) -> anyhow::Result<Component> {
        cache::load(&self.engine, wasm, self.settings.cache_dir.as_deref())
    }

    /// Creates the instance pool of `policy` with `config_json`, building
    /// one instance now so a bad config is reported at load time.
    ///
    /// # Errors
    ///
    /// The component does not fit the `gatehouse:policy` world, or its
    /// constructor refused the config (the policy's own message).
    pub fn pool(
        self: &Arc<Self>,
        policy: &str,
        component: &Component,
        config_json: String,
        secrets: Secrets,
    ) -> Result<Arc<PolicyPool>, String> {
        let mut linker = self.linker.clone();
        // A wasm32-wasip2 guest imports WASI through std even when it never
        // uses it: randomness, clocks and the (empty) environment are
        // served, every other WASI call traps (policies log through the
        // host instead).
        host::wasi::define(&mut linker, component, &self.engine)
            .map_err(|e| format!("cannot link the component's WASI imports: {e:#}"))?;
        linker
            .define_unknown_imports_as_traps(component)
            .map_err(|e| format!("cannot link the component: {e:#}"))?;
        let pre = linker
            .instantiate_pre(component)
            .map_err(|e| format!("the component does not fit the gatehouse:policy world: {e:#}"))?;
        let pre = PolicyPre::new(pre).map_err(|e| {
            format!("the component does not export gatehouse:policy/handler: {e:#}")
        })?;
        let mut pool = PolicyPool {
            name: Arc::from(policy),
            runtime: self.clone(),
            pre,
            config_json,
            secrets,
            phases: Phases::empty(),
            idle: ArrayQueue::new(self.settings.instances_per_policy),
        };
        let first = pool.instantiate().map_err(|e| match e {
            Instantiate::Refused(msg) => msg,
            Instantiate::Failed(err) => err.to_string(),
        })?;
        pool.phases = first.phases;
        let _ = pool.idle.push(first);
        Ok(Arc::new(pool))
    }
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

/// A constructed policy instance: its store and its `policy` resource.
struct Instance {
    store: Store<HostState>,
    bindings: PolicyWorld,
    policy: ResourceAny,
    phases: Phases,
}

enum Instantiate {
    Refused(String),
    Failed(PolicyError),
}

/// The instances of one (policy, config).
pub struct PolicyPool {
    name: Arc<str>,
    runtime: Arc<PolicyRuntime>,
    pre: PolicyPre<HostState>,
    config_json: String,
    secrets: Secrets,
    phases: Phases,
    idle: ArrayQueue<Instance>,
}

impl PolicyPool {
    /// The policy's name.
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// Whether the policy takes part in requests.
    pub fn on_request_enabled(&self) -> bool {
        self.phases.contains(Phases::REQUEST)
    }

    /// Whether the policy takes part in responses.
    pub fn on_response_enabled(&self) -> bool {
        self.phases.contains(Phases::RESPONSE)
    }

    /// Removes the config's secret values from a message (for faults and
    /// logs that carry text a policy produced).
    pub fn redact(&self, text: &str) -> String {
        self.secrets.redact(text)
    }

    /// Instances ready in the pool (for tests and metrics).
    pub fn idle_instances(&self) -> usize {
        self.idle.len()
    }

    fn instantiate(&self) -> Result<Instance, Instantiate> {
        let settings = &self.runtime.settings;
        let limit = (settings.memory_limit_mib as usize).saturating_mul(1 << 20);
        let mut store = Store::new(
            &self.runtime.engine,
            HostState::new(self.name.clone(), limit, self.secrets.clone()),
        );
        store.limiter(|s| &mut s.limiter);
        // Construction may compile expressions: allow it ten call deadlines.
        store.set_epoch_deadline(ticks(settings.call_deadline_ms.saturating_mul(10)));
        store.epoch_deadline_trap();
        let bindings = self.pre.instantiate(&mut store).map_err(|e| {
            if e.downcast_ref::<Trap>().is_some() {
                Instantiate::Failed(self.classify(&store, e))
            } else {
                // No slot in the pooling allocator (`max_instances`), or
                // similar: the gateway's capacity, not the policy's fault.
                Instantiate::Failed(PolicyError::Unavailable {
                    policy: self.name.clone(),
                    message: format!("{e:#}"),
                })
            }
        })?;
        let guest = bindings.gatehouse_policy_handler().policy();
        let policy = match guest.call_constructor(&mut store, &self.config_json) {
            Ok(Ok(p)) => p,
            Ok(Err(msg)) => return Err(Instantiate::Refused(msg)),
            Err(e) => return Err(Instantiate::Failed(self.classify(&store, e))),
        };
        let phases = guest
            .call_phases(&mut store, policy)
            .map_err(|e| Instantiate::Failed(self.classify(&store, e)))?;
        Ok(Instance {
            store,
            bindings,
            policy,
            phases,
        })
    }

    fn checkout(&self) -> Result<Instance, PolicyError> {
        if let Some(i) = self.idle.pop() {
            return Ok(i);
        }
        match self.instantiate() {
            Ok(i) => Ok(i),
            Err(Instantiate::Failed(e)) => Err(e),
            // The same config was accepted at load time; a refusal now is
            // the policy's own inconsistency.
            Err(Instantiate::Refused(msg)) => Err(PolicyError::Unavailable {
                policy: self.name.clone(),
                message: self.secrets.redact(&msg),
            }),
        }
    }

    fn classify(&self, store: &Store<HostState>, e: wasmtime::Error) -> PolicyError {
        if store.data().limiter.exhausted {
            return PolicyError::Memory {
                policy: self.name.clone(),
                limit_mib: self.runtime.settings.memory_limit_mib,
            };
        }
        match e.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => PolicyError::Timeout {
                policy: self.name.clone(),
                deadline_ms: self.runtime.settings.call_deadline_ms,
            },
            Some(t) => PolicyError::Trap {
                policy: self.name.clone(),
                message: t.to_string(),
            },
            None => PolicyError::Trap {
                policy: self.name.clone(),
                message: format!("{e:#}"),
            },
        }
    }

    /// Calls `on-request`. The exchange is always handed back, whatever
    /// happened to the call.
    pub fn on_request(&self, ex: Box<Exchange>) -> (Box<Exchange>, Result<Decision, PolicyError>) {
        self.call(ex, |inst| {
            let guest = inst.bindings.gatehouse_policy_handler().policy();
            guest.call_on_request(
                &mut inst.store,
                inst.policy,
                Resource::new_borrow(0),
                Resource::new_borrow(0),
            )
        })
    }

    /// Calls `on-response` (the exchange must hold a response).
    pub fn on_response(&self, ex: Box<Exchange>) -> (Box<Exchange>, Result<Decision, PolicyError>) {
        self.call(ex, |inst| {
            let guest = inst.bindings.gatehouse_policy_handler().policy();
            guest.call_on_response(
                &mut inst.store,
                inst.policy,
                Resource::new_borrow(0),
                Resource::new_borrow(0),
                Resource::new_borrow(0),
            )
        })
    }

    fn call(
        &self,
        ex: Box<Exchange>,
        f: impl FnOnce(&mut Instance) -> wasmtime::Result<Decision>,
    ) -> (Box<Exchange>, Result<Decision, PolicyError>) {
        let mut inst = match self.checkout() {
            Ok(i) => i,
            Err(e) => {
                tracing::warn!(policy = %self.name, request_id = %ex.request_id, "{e}");
                return (ex, Err(e));
            }
        };
        let data = inst.store.data_mut();
        data.exchange = Some(ex);
        // A refused growth on an earlier call says nothing about this one.
        data.limiter.exhausted = false;
        inst.store
            .set_epoch_deadline(ticks(self.runtime.settings.call_deadline_ms));
        let result = f(&mut inst);
        let ex = inst.store.data_mut().exchange.take();
        let ex = match ex {
            Some(ex) => ex,
            // Unreachable: nothing else takes the exchange. Keep the types
            // honest without a panic path.
            None => unreachable_exchange(),
        };
        match result {
            Ok(d) => {
                let _ = self.idle.push(inst);
                (ex, Ok(d))
            }
            Err(e) => {
                let err = self.classify(&inst.store, e);
                tracing::warn!(policy = %self.name, request_id = %ex.request_id, "{err}; the instance is replaced");
                drop(inst);
                (ex, Err(err))
            }
        }
    }
}

#[cold]
fn unreachable_exchange() -> Box<Exchange> {
    unreachable!("the exchange is moved into the store for the call and taken back right after")
}
