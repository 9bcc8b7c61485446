//! Instance pools: the constructed instances of one (policy, config), and
//! the calls into them.

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Instant;

use crossbeam_queue::ArrayQueue;
use wasmtime::component::{InstancePre, Resource, ResourceAny};
use wasmtime::{Store, Trap};

use super::bindings::{self, Decision, Phases};
use super::host::{CallPhase, Exchange, HostState};
use super::{ticks, PolicyRuntime};
use crate::config::Secrets;
use crate::observe::metrics::{CallOutcome, PolicyCallMetrics};

/// Why a policy call failed (as opposed to the policy refusing).
#[derive(Debug, Clone, thiserror::Error)]
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
    /// The call asked the host for more than a cap allows (see
    /// [`crate::policy::limits`]).
    #[error("policy `{policy}` went over a limit: {what}")]
    Limit {
        /// The policy.
        policy: Arc<str>,
        /// Which limit, and by how much.
        what: String,
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

impl PolicyError {
    fn outcome(&self) -> CallOutcome {
        match self {
            PolicyError::Timeout { .. } => CallOutcome::Timeout,
            PolicyError::Memory { .. } => CallOutcome::Memory,
            PolicyError::Trap { .. } => CallOutcome::Trap,
            PolicyError::Unavailable { .. } => CallOutcome::Unavailable,
            PolicyError::Limit { .. } => CallOutcome::Limit,
        }
    }
}

/// Per-pool call settings (from `policy_runtime`; a reload may change
/// them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CallSettings {
    /// Deadline of one call, in milliseconds.
    pub deadline_ms: u64,
    /// Idle constructed instances kept.
    pub instances: usize,
}

impl CallSettings {
    /// From the config's `policy_runtime`.
    pub fn from_config(c: &crate::config::PolicyRuntime) -> Self {
        CallSettings {
            deadline_ms: c.call_deadline_ms.max(1),
            instances: c.instances_per_policy.max(1),
        }
    }
}

/// What makes two pools the same: a reload reuses the pool (and its warm
/// instances) of an unchanged (policy, component, config, settings).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PoolKey {
    name: Arc<str>,
    component: [u8; 32],
    config: String,
    call: CallSettings,
    secrets: u64,
}

impl PoolKey {
    /// The hash of the component's bytes.
    pub fn component(&self) -> [u8; 32] {
        self.component
    }

    /// The key of `name` built from `component` with `config` (named values
    /// substituted) under `call`, redacting `secrets`.
    pub fn new(
        name: &str,
        component: [u8; 32],
        config: String,
        call: CallSettings,
        secrets: &Secrets,
    ) -> Self {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        secrets.hash(&mut h);
        PoolKey {
            name: Arc::from(name),
            component,
            config,
            call,
            secrets: h.finish(),
        }
    }
}

/// A constructed policy instance: its store and its `policy` resource.
struct Instance {
    store: Store<HostState>,
    handler: bindings::Handler,
    completion: Option<bindings::Completion>,
    policy: ResourceAny,
}

enum Instantiate {
    Refused(String),
    Failed(PolicyError),
}

/// The rebuild budget of a pool (a token bucket).
struct Rebuilds {
    tokens: f64,
    last: Instant,
    /// Until when on-path instantiation is refused (the budget ran out).
    throttled_until: Option<Instant>,
}

/// The instances of one (policy, config).
pub struct PolicyPool {
    me: std::sync::Weak<PolicyPool>,
    rebuilds: std::sync::Mutex<Rebuilds>,
    name: Arc<str>,
    key: PoolKey,
    runtime: Arc<PolicyRuntime>,
    pre: InstancePre<HostState>,
    handler: bindings::HandlerIndices,
    completion: Option<bindings::CompletionIndices>,
    wants_completion: bool,
    /// Whether the policy reads the client certificate: its constructor
    /// declared it (`declarations.reads-client-certificate`), or one of
    /// the expressions it compiled reads `client_cert`.
    reads_client_cert: bool,
    secrets: Secrets,
    phases: Phases,
    idle: ArrayQueue<Instance>,
    metrics: PolicyCallMetrics,
}

impl PolicyPool {
    pub(super) fn new(
        runtime: Arc<PolicyRuntime>,
        policy: &str,
        pre: InstancePre<HostState>,
        component: [u8; 32],
        config_json: String,
        secrets: Secrets,
        call: CallSettings,
    ) -> Result<Arc<PolicyPool>, String> {
        // The optional completion export (gatehouse:policy/completion): a
        // policy built against 0.1.0 has none and is never called for it.
        let completion = bindings::CompletionIndices::new(&pre).ok();
        let handler = bindings::HandlerIndices::new(&pre).map_err(|e| {
            format!("the component does not export gatehouse:policy/handler: {e:#}")
        })?;
        let name: Arc<str> = Arc::from(policy);
        let metrics = runtime.services.metrics.policy(&name);
        let key = PoolKey::new(policy, component, config_json, call, &secrets);
        let mut pool = PolicyPool {
            me: std::sync::Weak::new(),
            rebuilds: std::sync::Mutex::new(Rebuilds {
                tokens: super::limits::REBUILD_BURST,
                last: Instant::now(),
                throttled_until: None,
            }),
            name,
            key,
            runtime,
            pre,
            handler,
            completion,
            wants_completion: false,
            reads_client_cert: false,
            secrets,
            phases: Phases::empty(),
            idle: ArrayQueue::new(call.instances),
            metrics,
        };
        let mut first = pool.instantiate().map_err(|e| match e {
            Instantiate::Refused(msg) => msg,
            Instantiate::Failed(err) => err.to_string(),
        })?;
        let guest = first.handler.policy();
        pool.phases = guest
            .call_phases(&mut first.store, first.policy)
            .map_err(|e| pool.classify(&first.store, e).to_string())?;
        let state = first.store.data();
        pool.reads_client_cert = state.declared_reads_client_cert
            || state
                .expressions
                .iter()
                .flatten()
                .any(|c| c.reads_client_cert());
        if let Some(c) = &first.completion {
            pool.wants_completion = c
                .call_completion_enabled(&mut first.store, first.policy)
                .map_err(|e| pool.classify(&first.store, e).to_string())?;
        }
        let _ = pool.idle.push(first);
        Ok(Arc::new_cyclic(|me| {
            pool.me = me.clone();
            pool
        }))
    }

    /// After an instance failed: builds its replacement off the request
    /// path (on the runtime's blocking threads), within the rebuild budget;
    /// past it, on-path instantiation is refused for a while.
    fn replace_failed(&self) {
        use super::limits::{REBUILDS_PER_SECOND, REBUILD_BURST};
        let allowed = match self.rebuilds.lock() {
            Ok(mut r) => {
                let now = Instant::now();
                let refill = now.duration_since(r.last).as_secs_f64() * REBUILDS_PER_SECOND;
                r.tokens = (r.tokens + refill).min(REBUILD_BURST);
                r.last = now;
                if r.tokens >= 1.0 {
                    r.tokens -= 1.0;
                    r.throttled_until = None;
                    true
                } else {
                    r.throttled_until =
                        Some(now + std::time::Duration::from_secs_f64(1.0 / REBUILDS_PER_SECOND));
                    false
                }
            }
            Err(_) => false,
        };
        if !allowed {
            tracing::warn!(policy = %self.name, "instances fail faster than they may be rebuilt; requests that find none idle get 503 for a moment");
            return;
        }
        let me = self.me.clone();
        let build = move || {
            if let Some(pool) = me.upgrade() {
                if let Ok(i) = pool.instantiate() {
                    let _ = pool.idle.push(i);
                }
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(h) => {
                h.spawn_blocking(build);
            }
            Err(_) => build(),
        }
    }

    fn throttled(&self) -> bool {
        self.rebuilds
            .lock()
            .ok()
            .and_then(|r| r.throttled_until)
            .is_some_and(|t| Instant::now() < t)
    }

    /// The policy's name.
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// Whether the policy reads the client certificate (declared by its
    /// constructor, or an expression it compiled reads `client_cert`): the
    /// gateway checks at load that a host serving its chain asks for one.
    pub fn reads_client_certificate(&self) -> bool {
        self.reads_client_cert
    }

    /// What identifies this pool for reuse across reloads.
    pub fn key(&self) -> &PoolKey {
        &self.key
    }

    /// Whether the policy takes part in requests.
    pub fn on_request_enabled(&self) -> bool {
        self.phases.contains(Phases::REQUEST)
    }

    /// Whether the policy takes part in responses.
    pub fn on_response_enabled(&self) -> bool {
        self.phases.contains(Phases::RESPONSE)
    }

    /// Whether the policy exports the completion hook and asked for it.
    pub fn on_complete_enabled(&self) -> bool {
        self.wants_completion
    }

    /// Removes the config's secret values from a message (for faults and
    /// logs that carry text a policy produced).
    pub fn redact(&self, text: &str) -> String {
        self.secrets.redact(text)
    }

    /// The config's secrets and references.
    pub fn secrets(&self) -> &Secrets {
        &self.secrets
    }

    /// Instances ready in the pool.
    pub fn idle_instances(&self) -> usize {
        self.idle.len()
    }

    fn instantiate(&self) -> Result<Instance, Instantiate> {
        let rt = &self.runtime;
        let limit = (rt.settings.memory_limit_mib as usize).saturating_mul(1 << 20);
        let mut store = Store::new(
            &rt.engine,
            HostState::new(
                self.name.clone(),
                limit,
                self.secrets.clone(),
                rt.services.clone(),
            ),
        );
        store.limiter(|s| &mut s.limiter);
        // Construction may compile expressions: allow it ten call deadlines.
        store.set_epoch_deadline(ticks(self.key.call.deadline_ms.saturating_mul(10)));
        store.epoch_deadline_trap();
        let instance = self.pre.instantiate(&mut store).map_err(|e| {
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
        let handler = self
            .handler
            .load(&mut store, &instance)
            .map_err(|e| Instantiate::Failed(self.classify(&store, e)))?;
        let completion = match &self.completion {
            Some(c) => Some(
                c.load(&mut store, &instance)
                    .map_err(|e| Instantiate::Failed(self.classify(&store, e)))?,
            ),
            None => None,
        };
        let guest = handler.policy();
        let config = &self.key.config;
        let policy = match guest.call_constructor(&mut store, config) {
            Ok(Ok(p)) => p,
            Ok(Err(msg)) => return Err(Instantiate::Refused(msg)),
            Err(e) => return Err(Instantiate::Failed(self.classify(&store, e))),
        };
        Ok(Instance {
            store,
            handler,
            completion,
            policy,
        })
    }

    fn checkout(&self) -> Result<Instance, PolicyError> {
        if let Some(i) = self.idle.pop() {
            return Ok(i);
        }
        self.metrics.pool_misses.inc();
        if self.throttled() {
            return Err(PolicyError::Unavailable {
                policy: self.name.clone(),
                message: "its instances fail faster than they may be rebuilt".into(),
            });
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
        if e.downcast_ref::<super::host::HostDeadline>().is_some() {
            return PolicyError::Timeout {
                policy: self.name.clone(),
                deadline_ms: self.key.call.deadline_ms,
            };
        }
        match e.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => PolicyError::Timeout {
                policy: self.name.clone(),
                deadline_ms: self.key.call.deadline_ms,
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

    /// Calls `on-request` for the chain entry of `scope`. The exchange is
    /// always handed back, whatever happened to the call.
    pub fn on_request(
        &self,
        ex: Box<Exchange>,
        scope: &Arc<str>,
    ) -> (Box<Exchange>, Result<Decision, PolicyError>) {
        self.call(ex, scope, CallPhase::Request, |inst| {
            let guest = inst.handler.policy();
            guest.call_on_request(
                &mut inst.store,
                inst.policy,
                Resource::new_borrow(0),
                Resource::new_borrow(0),
            )
        })
    }

    /// Calls `on-response` (the exchange must hold a response).
    pub fn on_response(
        &self,
        ex: Box<Exchange>,
        scope: &Arc<str>,
    ) -> (Box<Exchange>, Result<Decision, PolicyError>) {
        self.call(ex, scope, CallPhase::Response, |inst| {
            let guest = inst.handler.policy();
            guest.call_on_response(
                &mut inst.store,
                inst.policy,
                Resource::new_borrow(0),
                Resource::new_borrow(0),
                Resource::new_borrow(0),
            )
        })
    }

    /// Calls `on-complete` with what the exchange transferred. Only for a
    /// pool whose policy asked for it ([`PolicyPool::on_complete_enabled`]).
    pub fn on_complete(
        &self,
        ex: Box<Exchange>,
        scope: &Arc<str>,
        info: &bindings::CompletionInfo,
    ) -> Box<Exchange> {
        let started = Instant::now();
        let (ex, r) = self.call(ex, scope, CallPhase::Completion, |inst| {
            let Some(c) = &inst.completion else {
                return Ok(Decision::Continue(Vec::new()));
            };
            c.call_on_complete(
                &mut inst.store,
                inst.policy,
                Resource::new_borrow(0),
                Resource::new_borrow(0),
                info,
            )?;
            Ok(Decision::Continue(Vec::new()))
        });
        self.record(&r, started.elapsed());
        if let Err(e) = r {
            tracing::warn!(policy = %self.name, request_id = %ex.request_id, "on-complete failed: {e}");
        }
        ex
    }

    /// Records a call's outcome and duration in
    /// `gatehouse_policy_call_duration_seconds`. The chain runner times
    /// its calls (one clock read per call: the end of one is the start of
    /// the next) and records them here.
    pub fn record(&self, result: &Result<Decision, PolicyError>, took: std::time::Duration) {
        let outcome = match result {
            Ok(Decision::Continue(_)) => CallOutcome::Continue,
            Ok(Decision::Respond(_)) => CallOutcome::Respond,
            Ok(Decision::Deny(_)) => CallOutcome::Deny,
            Err(e) => e.outcome(),
        };
        self.metrics.observe(outcome, took);
    }

    fn call(
        &self,
        ex: Box<Exchange>,
        scope: &Arc<str>,
        phase: CallPhase,
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
        data.phase = phase;
        if !Arc::ptr_eq(&data.scope, scope) {
            data.scope = scope.clone();
        }
        // A refused growth on an earlier call says nothing about this one.
        data.limiter.exhausted = false;
        data.over_limit = None;
        data.call_deadline = Some((
            std::time::Instant::now(),
            std::time::Duration::from_millis(self.key.call.deadline_ms),
        ));
        inst.store
            .set_epoch_deadline(ticks(self.key.call.deadline_ms));
        let result = f(&mut inst);
        let over = inst.store.data_mut().over_limit.take();
        let ex = inst.store.data_mut().exchange.take();
        let ex = match ex {
            Some(ex) => ex,
            // Unreachable: nothing else takes the exchange. Keep the types
            // honest without a panic path.
            None => unreachable_exchange(),
        };
        match result {
            Ok(_) if over.is_some() => {
                let _ = self.idle.push(inst);
                let what = self.secrets.redact(&over.unwrap_or_default());
                tracing::warn!(policy = %self.name, request_id = %ex.request_id, "{what}");
                (
                    ex,
                    Err(PolicyError::Limit {
                        policy: self.name.clone(),
                        what,
                    }),
                )
            }
            Ok(d) => {
                let _ = self.idle.push(inst);
                (ex, Ok(d))
            }
            Err(e) => {
                let err = self.classify(&inst.store, e);
                tracing::warn!(policy = %self.name, request_id = %ex.request_id, "{err}; the instance is replaced");
                drop(inst);
                self.replace_failed();
                (ex, Err(err))
            }
        }
    }
}

#[cold]
fn unreachable_exchange() -> Box<Exchange> {
    unreachable!("the exchange is moved into the store for the call and taken back right after")
}
