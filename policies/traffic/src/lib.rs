//! The shared logic of the traffic policies (`rate-limit`,
//! `rate-limit-by-key`, `quota`, `quota-by-key`): counting through the
//! gateway's `counters` interface, the refusals with their headers, the
//! variables, and counting by the response (`increment_condition`,
//! bandwidth) in the completion hook. Each policy is a thin crate over it
//! (one component each); see their READMEs for the config reference.
//!
//! Counting by the response is exact under concurrency: the units are
//! counted (reserved) when the request arrives, so a burst cannot pass
//! the limit while its responses are pending, and given back in the
//! completion hook when the response does not match the condition. What
//! to give back travels in a context variable (one entry per policy call,
//! in chain order; the completion hooks run in the same order).

use gatehouse_sdk::counters::{Counter, Period, Usage, Window};
use gatehouse_sdk::{host, variables, Completion, Decision, Expression, Fault, Value};
use serde::Deserialize;

/// The longest window a rate limit may have, in seconds.
pub const MAX_RENEWAL_PERIOD: u32 = 300;

/// The options every rate limit has (Azure API Management's names).
#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct LimitConfig {
    /// Calls allowed per `renewal_period`.
    pub calls: u64,
    /// The sliding window, in seconds (1..=300).
    pub renewal_period: u32,
    /// A header for the seconds to wait, on a refusal (besides
    /// `Retry-After`, which a 429 always has).
    pub retry_after_header_name: Option<String>,
    /// A variable for the seconds to wait, on a refusal.
    pub retry_after_variable_name: Option<String>,
    /// A header for the calls left in the window, on every response.
    pub remaining_calls_header_name: Option<String>,
    /// A variable for the calls left in the window after this one.
    pub remaining_calls_variable_name: Option<String>,
    /// A header for `calls`, on every response.
    pub total_calls_header_name: Option<String>,
}

fn header_name(key: &str, v: &Option<String>) -> Result<(), String> {
    match v {
        Some(h) if h.is_empty() => Err(format!("{key}: must not be empty")),
        Some(h) if !gatehouse_sdk::is_valid_header_name(h) => {
            Err(format!("{key}: `{h}` is not a valid header name"))
        }
        _ => Ok(()),
    }
}

/// A counter key from an expression's value. A key that cannot be
/// computed (an absent header, say) is the empty key: one bucket shared by
/// every such request, never a way around the limit.
pub fn key_of(e: &Expression) -> String {
    match e.evaluate() {
        Ok(Value::Text(s)) => s,
        Ok(Value::Null) => String::new(),
        Ok(Value::Integer(i)) => i.to_string(),
        Ok(Value::Unsigned(u)) => u.to_string(),
        Ok(Value::Boolean(b)) => b.to_string(),
        Ok(Value::Float(f)) => f.to_string(),
        Ok(Value::Bytes(b)) => b.iter().map(|x| format!("{x:02x}")).collect(),
        Ok(Value::Json(j)) => j,
        Err(e) => {
            if host::trace_enabled() {
                host::trace(&format!("counter_key: {e}; counted under the empty key"));
            }
            String::new()
        }
    }
}

/// Compiles an optional `increment_condition`.
///
/// # Errors
///
/// The compile error, naming the key.
pub fn condition(src: &Option<String>) -> Result<Option<Expression>, String> {
    src.as_deref()
        .map(|s| Expression::compile(s).map_err(|e| format!("increment_condition: {e}")))
        .transpose()
}

/// The default of `increment_count`.
pub fn one() -> u64 {
    1
}

/// Checks the options every `-by-key` policy has and compiles its
/// expressions: the key and the optional condition. `most` is the limit an
/// `increment_count` may not exceed (no request could pass), if any.
///
/// # Errors
///
/// A message naming the key.
pub fn by_key(
    counter_key: &str,
    increment_count: u64,
    increment_condition: &Option<String>,
    most: Option<u64>,
) -> Result<(Expression, Option<Expression>), String> {
    if increment_count == 0 {
        return Err("increment_count: must be at least 1".into());
    }
    if let Some(most) = most.filter(|m| increment_count > *m) {
        return Err(format!(
            "increment_count: {increment_count} is more than `calls` ({most}): no request could pass"
        ));
    }
    let key = Expression::compile(counter_key).map_err(|e| format!("counter_key: {e}"))?;
    Ok((key, condition(increment_condition)?))
}

/// What the completion hook needs of one call: the key, and the units
/// counted (0 when none were).
struct Pending {
    key: String,
    reservation: u64,
    amount: u64,
    /// The request was refused: nothing of it counts.
    refused: bool,
}

/// The context variable that carries a policy's pending entries.
fn pending_var(policy: &str) -> String {
    format!("gatehouse.{policy}.pending")
}

fn push_pending(policy: &str, p: Pending) {
    let var = pending_var(policy);
    let mut list = variables::get(&var).unwrap_or_default();
    // One line per call: reservation, amount, key (the key last: it may
    // hold spaces, not newlines, which a header or claim cannot carry
    // here unescaped).
    let key = p.key.replace('\n', " ");
    let flag = if p.refused { 'r' } else { 'a' };
    list.push_str(&format!("{flag} {} {} {key}\n", p.reservation, p.amount));
    variables::set(&var, &list);
}

fn pop_pending(policy: &str) -> Option<Pending> {
    let var = pending_var(policy);
    let list = variables::get(&var)?;
    let (first, rest) = list.split_once('\n')?;
    let mut parts = first.splitn(4, ' ');
    let refused = parts.next()? == "r";
    let reservation = parts.next()?.parse().ok()?;
    let amount = parts.next()?.parse().ok()?;
    let key = parts.next().unwrap_or_default().to_string();
    if rest.is_empty() {
        variables::remove(&var);
    } else {
        variables::set(&var, rest);
    }
    Some(Pending {
        key,
        reservation,
        amount,
        refused,
    })
}

/// Whether a completed request counts: the condition, on the response the
/// client was sent. An evaluation that fails counts (never under-count).
fn counts(condition: &Expression) -> bool {
    match condition.evaluate() {
        Ok(Value::Boolean(b)) => b,
        Ok(Value::Null) => false,
        Ok(other) => {
            host::log(
                host::LogLevel::Warn,
                &format!("increment_condition gave {other:?}, not a boolean; the request counts"),
            );
            true
        }
        Err(e) => {
            if host::trace_enabled() {
                host::trace(&format!("increment_condition: {e}; the request counts"));
            }
            true
        }
    }
}

fn unavailable(policy: &str, what: &str, why: &str) -> Decision {
    Decision::deny(Fault::new(
        503,
        format!("policy.{policy}.counters-unavailable"),
        format!("{what} cannot be checked"),
        format!(
            "the gateway's counters cannot count this request ({why}); counters.fail_mode is closed"
        ),
    ))
}

/// A constructed rate limit.
pub struct RateLimit {
    policy: &'static str,
    counter: Counter,
    calls: u64,
    period: u32,
    cfg: LimitConfig,
    condition: Option<Expression>,
}

impl RateLimit {
    /// Validates `cfg` and opens the counter. `policy` is the policy's name
    /// (for fault codes).
    ///
    /// # Errors
    ///
    /// A message naming the key.
    pub fn new(
        policy: &'static str,
        cfg: LimitConfig,
        condition: Option<Expression>,
    ) -> Result<Self, String> {
        if cfg.calls == 0 {
            return Err("calls: must be at least 1".into());
        }
        if !(1..=MAX_RENEWAL_PERIOD).contains(&cfg.renewal_period) {
            return Err(format!(
                "renewal_period: {} is outside 1..={MAX_RENEWAL_PERIOD} seconds",
                cfg.renewal_period
            ));
        }
        header_name("retry_after_header_name", &cfg.retry_after_header_name)?;
        header_name(
            "remaining_calls_header_name",
            &cfg.remaining_calls_header_name,
        )?;
        header_name("total_calls_header_name", &cfg.total_calls_header_name)?;
        for (k, v) in [
            ("retry_after_variable_name", &cfg.retry_after_variable_name),
            (
                "remaining_calls_variable_name",
                &cfg.remaining_calls_variable_name,
            ),
        ] {
            if v.as_deref() == Some("") {
                return Err(format!("{k}: must not be empty"));
            }
        }
        let counter = Counter::open("calls", cfg.calls, Window::Sliding(cfg.renewal_period))?;
        Ok(RateLimit {
            policy,
            counter,
            calls: cfg.calls,
            period: cfg.renewal_period,
            cfg,
            condition,
        })
    }

    /// Whether the completion hook is needed.
    pub fn wants_completion(&self) -> bool {
        self.condition.is_some()
    }

    /// Counts `amount` calls for `key` and decides. `what` names the key in
    /// a refusal's detail (`in this scope`, `for this key`).
    pub fn check(&self, key: &str, amount: u64, what: &str) -> Decision {
        let u = self.counter.acquire(key, amount);
        let counted = if u.admitted && u.unavailable.is_none() {
            amount
        } else {
            0
        };
        if self.condition.is_some() {
            push_pending(
                self.policy,
                Pending {
                    key: key.to_string(),
                    reservation: u.reservation,
                    amount: counted,
                    refused: !u.admitted,
                },
            );
        }
        if let Some(why) = &u.unavailable {
            host::log(
                host::LogLevel::Warn,
                &format!("counters unavailable: {why}"),
            );
            if !u.admitted {
                return unavailable(self.policy, "Rate limit", why);
            }
            return Decision::proceed();
        }
        if u.admitted {
            let remaining = self.calls.saturating_sub(u.used).to_string();
            if let Some(v) = &self.cfg.remaining_calls_variable_name {
                variables::set(v, &remaining);
            }
            if let Some(h) = &self.cfg.remaining_calls_header_name {
                host::add_response_header(h, &remaining);
            }
            if let Some(h) = &self.cfg.total_calls_header_name {
                host::add_response_header(h, &self.calls.to_string());
            }
            return Decision::proceed();
        }
        let retry = u.retry_after_seconds.to_string();
        if let Some(v) = &self.cfg.retry_after_variable_name {
            variables::set(v, &retry);
        }
        if let Some(v) = &self.cfg.remaining_calls_variable_name {
            variables::set(v, "0");
        }
        let mut f = Fault::new(
            429,
            format!("policy.{}.exceeded", self.policy),
            "Rate limit exceeded",
            format!(
                "more than {} calls in {} s {what}; retry in {retry} s",
                self.calls, self.period
            ),
        )
        .with_header("retry-after", retry.clone());
        if let Some(h) = &self.cfg.retry_after_header_name {
            if !h.eq_ignore_ascii_case("retry-after") {
                f = f.with_header(h.clone(), retry);
            }
        }
        if let Some(h) = &self.cfg.remaining_calls_header_name {
            f = f.with_header(h.clone(), "0");
        }
        if let Some(h) = &self.cfg.total_calls_header_name {
            f = f.with_header(h.clone(), self.calls.to_string());
        }
        Decision::deny(f)
    }

    /// The completion hook: gives the units back when the response does
    /// not match `increment_condition`.
    pub fn complete(&self) {
        let Some(cond) = &self.condition else {
            return;
        };
        let Some(p) = pop_pending(self.policy) else {
            return;
        };
        if p.amount > 0 && !counts(cond) {
            self.counter.release(&p.key, p.reservation, p.amount);
        }
    }
}

/// The options of a quota.
#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct QuotaConfig {
    /// Calls allowed per period.
    pub calls: Option<u64>,
    /// Kilobytes (1024 bytes) of request and response bodies per period.
    pub bandwidth: Option<u64>,
    /// The period, in seconds; 0: the quota never renews.
    pub renewal_period: u32,
}

/// A constructed quota.
pub struct Quota {
    policy: &'static str,
    calls: Option<(Counter, u64)>,
    bandwidth: Option<(Counter, u64)>,
    period: u32,
    condition: Option<Expression>,
}

fn renews(period: u32) -> String {
    if period == 0 {
        "never renews".into()
    } else {
        format!("per {period} s")
    }
}

impl Quota {
    /// Validates `cfg` and opens its counters; periods start at `start`
    /// (Unix seconds).
    ///
    /// # Errors
    ///
    /// A message naming the key.
    pub fn new(
        policy: &'static str,
        cfg: QuotaConfig,
        start: i64,
        condition: Option<Expression>,
    ) -> Result<Self, String> {
        if cfg.calls.is_none() && cfg.bandwidth.is_none() {
            return Err("give `calls`, `bandwidth` or both".into());
        }
        if cfg.calls == Some(0) {
            return Err("calls: must be at least 1".into());
        }
        if cfg.bandwidth == Some(0) {
            return Err("bandwidth: must be at least 1 (kilobytes)".into());
        }
        let window = Window::Periods(Period {
            seconds: cfg.renewal_period,
            start,
        });
        let calls = match cfg.calls {
            Some(n) => Some((Counter::open("quota-calls", n, window)?, n)),
            None => None,
        };
        let bandwidth = match cfg.bandwidth {
            Some(kb) => {
                let bytes = kb.checked_mul(1024).ok_or("bandwidth: too large")?;
                Some((Counter::open("quota-bytes", bytes, window)?, kb))
            }
            None => None,
        };
        Ok(Quota {
            policy,
            calls,
            bandwidth,
            period: cfg.renewal_period,
            condition,
        })
    }

    /// Whether the completion hook is needed (bandwidth, or a condition).
    pub fn wants_completion(&self) -> bool {
        self.bandwidth.is_some() || self.condition.is_some()
    }

    fn refuse(&self, what: String, u: &Usage) -> Decision {
        let mut f = Fault::new(
            403,
            format!("policy.{}.exceeded", self.policy),
            "Quota exceeded",
            what,
        );
        if u.retry_after_seconds > 0 && u.retry_after_seconds != u32::MAX {
            f = f.with_header("retry-after", u.retry_after_seconds.to_string());
        }
        Decision::deny(f)
    }

    /// Counts one request (`amount` calls) for `key` and decides.
    pub fn check(&self, key: &str, amount: u64) -> Decision {
        let mut counted = 0;
        let mut reservation = 0;
        let mut decision = Decision::proceed();
        // Bandwidth first: a quota used up refuses before a call is counted.
        if let Some((bw, kb)) = &self.bandwidth {
            let u = bw.peek(key);
            if let Some(why) = &u.unavailable {
                if !u.admitted {
                    decision = unavailable(self.policy, "Quota", why);
                }
            } else if u.used >= u.limit {
                decision = self.refuse(
                    format!(
                        "the bandwidth quota of {kb} KB {} is used up",
                        renews(self.period)
                    ),
                    &u,
                );
            }
        }
        if decision.is_continue() {
            if let Some((c, n)) = &self.calls {
                let u = c.acquire(key, amount);
                if let Some(why) = &u.unavailable {
                    host::log(
                        host::LogLevel::Warn,
                        &format!("counters unavailable: {why}"),
                    );
                    if !u.admitted {
                        decision = unavailable(self.policy, "Quota", why);
                    }
                } else if u.admitted {
                    counted = amount;
                    reservation = u.reservation;
                } else {
                    decision = self.refuse(
                        format!("the quota of {n} calls {} is used up", renews(self.period)),
                        &u,
                    );
                }
            }
        }
        if self.wants_completion() {
            push_pending(
                self.policy,
                Pending {
                    key: key.to_string(),
                    reservation,
                    amount: counted,
                    refused: !decision.is_continue(),
                },
            );
        }
        decision
    }

    /// The completion hook: gives the call back when the response does not
    /// match the condition; otherwise counts the bytes transferred.
    pub fn complete(&self, info: &Completion) {
        let Some(p) = pop_pending(self.policy) else {
            return;
        };
        if p.refused {
            return;
        }
        let keep = self.condition.as_ref().is_none_or(counts);
        if !keep {
            if let Some((c, _)) = &self.calls {
                if p.amount > 0 {
                    c.release(&p.key, p.reservation, p.amount);
                }
            }
            return;
        }
        if let Some((bw, _)) = &self.bandwidth {
            let bytes = info.request_bytes.saturating_add(info.response_bytes);
            if bytes > 0 {
                bw.add(&p.key, bytes);
            }
        }
    }
}
