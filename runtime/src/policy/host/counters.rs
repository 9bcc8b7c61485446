//! `counters`: counters a policy opens in its constructor and counts on
//! per request, kept in the host's store ([`crate::counters`]). A counter's
//! key in the store is the policy's name, the chain entry's scope (so one
//! config at two scopes counts apart), the counter's name and window, and
//! the key the policy gives.

use std::fmt::Write as _;

use wasmtime::component::Resource;

use super::markers::CounterHandle;
use super::{CallPhase, HostState};
use crate::counters::redis::{Pending, RedisStore, MAX_ROUND_TRIPS};
use crate::counters::{now_ms, Op, Usage as StoreUsage, Window as StoreWindow};
use crate::policy::bindings::gatehouse::policy::counters::{Host, HostCounter, Usage, Window};

/// The longest key a policy may give (longer keys are refused).
const MAX_KEY: usize = 1024;

/// An opened counter.
pub struct Counter {
    name: String,
    limit: u64,
    window: StoreWindow,
}

fn usage(u: StoreUsage) -> Usage {
    Usage {
        admitted: u.admitted,
        used: u.used,
        limit: u.limit,
        retry_after_seconds: u.retry_after_seconds,
        reservation: u.reservation,
        unavailable: u.unavailable,
    }
}

impl HostState {
    fn count(&mut self, this: &Resource<CounterHandle>, key: &str, op: Op) -> Usage {
        let refuse = |limit: u64, why: &str| Usage {
            admitted: false,
            used: 0,
            limit,
            retry_after_seconds: 0,
            reservation: 0,
            unavailable: Some(why.to_string()),
        };
        let Some(c) = self.counters.get(this.rep()) else {
            return refuse(0, "the counter was dropped");
        };
        if self.exchange.is_none() {
            return refuse(c.limit, "counters count only during a request");
        }
        if key.len() > MAX_KEY {
            return refuse(c.limit, "the counter key is longer than 1024 bytes");
        }
        let mut full = String::with_capacity(
            self.policy.len() + self.scope.len() + c.name.len() + key.len() + 24,
        );
        let _ = write!(
            full,
            "{}\u{1f}{}\u{1f}{}\u{1f}{:?}\u{1f}{key}",
            self.policy, self.scope, c.name, c.window
        );
        let (limit, window) = (c.limit, c.window);
        let store = self.services.counters.load();
        let u = match &store.remote {
            None => store.store.apply(&full, limit, window, op, now_ms()),
            Some(remote) => self.count_remote(remote, full, limit, window, op),
        };
        if u.unavailable.is_some() {
            self.services.metrics.counters_unavailable.inc();
        }
        usage(u)
    }

    /// An operation on the remote store (see
    /// [`crate::counters::redis::RemoteCounts`]): in the request phase, the
    /// answer a round trip brought, or a placeholder that suspends the
    /// call; releases, and anything at completion, are sent without
    /// waiting; in the response phase, nothing can be awaited, so the
    /// fail mode answers.
    fn count_remote(
        &mut self,
        remote: &std::sync::Arc<RedisStore>,
        key: String,
        limit: u64,
        window: StoreWindow,
        op: Op,
    ) -> StoreUsage {
        let sent = |remote: &std::sync::Arc<RedisStore>| {
            if remote.send(&key, limit, window, op) {
                StoreUsage {
                    admitted: true,
                    limit,
                    ..StoreUsage::default()
                }
            } else {
                remote.unavailable(limit, "redis: no connection on this thread".into())
            }
        };
        if matches!(op, Op::Release { .. }) || self.phase == CallPhase::Completion {
            return sent(remote);
        }
        if self.phase == CallPhase::Response {
            return remote.unavailable(
                limit,
                "a redis counter answers in on-request and counts in on-complete, not in on-response".into(),
            );
        }
        let Some(ex) = self.exchange.as_deref_mut() else {
            return remote.unavailable(limit, "counters count only during a request".into());
        };
        let rc = ex.remote_counts.get_or_insert_with(Default::default);
        if let Some(u) = rc.take_answer(&key, op) {
            return u;
        }
        if rc.pending.is_some() {
            // A second question in a suspended call: asked for real when
            // the step runs again.
            return placeholder(limit);
        }
        if rc.round_trips >= MAX_ROUND_TRIPS {
            return remote.unavailable(
                limit,
                format!("a request may make at most {MAX_ROUND_TRIPS} counter round trips"),
            );
        }
        rc.pending = Some(Pending {
            store: remote.clone(),
            key,
            limit,
            window,
            op,
            step: usize::MAX,
            completion_len: 0,
        });
        placeholder(limit)
    }
}

/// What a suspended call is told (never acted on: its decision is dropped
/// and its later writes ignored).
fn placeholder(limit: u64) -> StoreUsage {
    StoreUsage {
        admitted: true,
        limit,
        ..StoreUsage::default()
    }
}

impl Host for HostState {}

impl HostCounter for HostState {
    fn open(
        &mut self,
        name: String,
        limit: u64,
        window: Window,
    ) -> Result<Resource<CounterHandle>, String> {
        let window = match window {
            Window::Sliding(s) => StoreWindow::Sliding(s),
            Window::Periods(p) => StoreWindow::Periods {
                seconds: p.seconds,
                start: p.start,
            },
        };
        window.validate()?;
        if limit == 0 {
            return Err("a counter's limit must be at least 1".into());
        }
        self.counters
            .insert(Counter {
                name,
                limit,
                window,
            })
            .map(Resource::new_own)
    }

    fn acquire(&mut self, this: Resource<CounterHandle>, key: String, amount: u64) -> Usage {
        self.count(&this, &key, Op::Acquire(amount))
    }

    fn release(
        &mut self,
        this: Resource<CounterHandle>,
        key: String,
        reservation: u64,
        amount: u64,
    ) {
        self.count(
            &this,
            &key,
            Op::Release {
                reservation,
                amount,
            },
        );
    }

    fn add(&mut self, this: Resource<CounterHandle>, key: String, amount: u64) -> Usage {
        self.count(&this, &key, Op::Add(amount))
    }

    fn peek(&mut self, this: Resource<CounterHandle>, key: String) -> Usage {
        self.count(&this, &key, Op::Peek)
    }

    fn drop(&mut self, this: Resource<CounterHandle>) -> wasmtime::Result<()> {
        self.counters.remove(this.rep());
        Ok(())
    }
}
