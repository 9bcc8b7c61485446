//! `quota-by-key`: at most `calls` requests and/or `bandwidth` kilobytes
//! per `renewal_period` seconds per value of `counter_key`, with periods
//! aligned to `first_period_start`; `increment_condition` counts only the
//! requests whose response matches (reserved at the request, given back at
//! completion). Over quota: 403. See this crate's README.

use gatehouse_sdk::{export_policy, Completion, Connection, Decision, Expression, Policy, Request};
use policy_traffic::{by_key, key_of, one, Quota, QuotaConfig};
use serde::Deserialize;

/// The config, as written under `quota-by-key:`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The key to count by: a CEL expression.
    pub counter_key: String,
    /// Calls each request counts. Default 1.
    #[serde(default = "one")]
    pub increment_count: u64,
    /// Count only the requests whose response makes this true.
    pub increment_condition: Option<String>,
    /// Where periods start (ISO 8601, e.g. `2026-01-01T00:00:00Z`).
    /// Default: the Unix epoch.
    pub first_period_start: Option<String>,
    /// Calls, bandwidth and period.
    #[serde(flatten)]
    pub quota: QuotaConfig,
}

/// The constructed policy.
pub struct QuotaByKey {
    quota: Quota,
    key: Expression,
    amount: u64,
}

impl Policy for QuotaByKey {
    type Config = Config;

    fn new(c: Config) -> Result<Self, String> {
        let (key, cond) = by_key(
            &c.counter_key,
            c.increment_count,
            &c.increment_condition,
            c.quota.calls,
        )?;
        let start = match &c.first_period_start {
            None => 0,
            Some(s) => chrono::DateTime::parse_from_rfc3339(s.trim())
                .map_err(|e| {
                    format!("first_period_start: `{s}` is not an ISO 8601 date and time with a zone (e.g. 2026-01-01T00:00:00Z): {e}")
                })?
                .timestamp(),
        };
        Ok(QuotaByKey {
            quota: Quota::new("quota-by-key", c.quota, start, cond)?,
            key,
            amount: c.increment_count,
        })
    }

    fn on_request(&self, _req: &Request, _conn: &Connection) -> Decision {
        self.quota.check(&key_of(&self.key), self.amount)
    }

    fn wants_completion(&self) -> bool {
        self.quota.wants_completion()
    }

    fn on_complete(&self, _req: &Request, _conn: &Connection, info: &Completion) {
        self.quota.complete(info);
    }
}

export_policy!(QuotaByKey);

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_sdk::testkit;

    #[test]
    fn first_period_start_is_checked() {
        let e = testkit::build::<QuotaByKey>(
            r#"{"calls": 1, "renewal_period": 60, "counter_key": "x", "first_period_start": "yesterday"}"#,
        )
        .err()
        .unwrap();
        assert!(e.starts_with("first_period_start"), "{e}");
        assert!(testkit::build::<QuotaByKey>(
            r#"{"calls": 1, "renewal_period": 60, "counter_key": "x", "first_period_start": "2026-01-01T00:00:00+02:00"}"#,
        )
        .is_ok());
    }
}
