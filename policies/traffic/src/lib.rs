//! The shared logic of the traffic policies: a rate limit counted through
//! the gateway's `counters` interface, the `429` with its headers, and the
//! variables. `rate-limit` and `rate-limit-by-key` are thin crates over
//! it (one component each); see their READMEs for the config reference.

use gatehouse_sdk::counters::{Counter, Window};
use gatehouse_sdk::{host, variables, Decision, Fault};
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
    /// A header for the calls left, on a refusal.
    pub remaining_calls_header_name: Option<String>,
    /// A variable for the calls left in the window after this one.
    pub remaining_calls_variable_name: Option<String>,
    /// A header for `calls`, on a refusal.
    pub total_calls_header_name: Option<String>,
}

/// A constructed rate limit.
pub struct RateLimit {
    policy: &'static str,
    counter: Counter,
    calls: u64,
    period: u32,
    cfg: LimitConfig,
}

fn header_name(key: &str, v: &Option<String>) -> Result<(), String> {
    match v {
        Some(h) if !gatehouse_sdk::is_valid_header_name(h) => {
            Err(format!("{key}: `{h}` is not a valid header name"))
        }
        Some(h) if h.is_empty() => Err(format!("{key}: must not be empty")),
        _ => Ok(()),
    }
}

impl RateLimit {
    /// Validates `cfg` and opens the counter. `policy` is the policy's name
    /// (for fault codes).
    ///
    /// # Errors
    ///
    /// A message naming the key.
    pub fn new(policy: &'static str, cfg: LimitConfig) -> Result<Self, String> {
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
        })
    }

    /// Counts `amount` calls for `key` and decides. `what` names the key in
    /// a refusal's detail (`for this scope`, `for key `…``).
    pub fn check(&self, key: &str, amount: u64, what: &str) -> Decision {
        let u = self.counter.acquire(key, amount);
        if let Some(why) = &u.unavailable {
            host::log(
                host::LogLevel::Warn,
                &format!("counters unavailable: {why}"),
            );
            if !u.admitted {
                return Decision::deny(Fault::new(
                    503,
                    format!("policy.{}.counters-unavailable", self.policy),
                    "Rate limit cannot be checked",
                    format!("the gateway's counters cannot count this request ({why}); counters.fail_mode is closed"),
                ));
            }
            return Decision::proceed();
        }
        if u.admitted {
            if let Some(v) = &self.cfg.remaining_calls_variable_name {
                variables::set(v, &self.calls.saturating_sub(u.used).to_string());
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
}
