//! `rate-limit-by-key`: at most `calls` requests per `renewal_period`
//! seconds (a sliding window) per value of `counter_key`, an expression
//! (the client address, a header, a token claim, a certificate
//! thumbprint), in the scope the policy is in. The count is the gateway's
//! (`counters`), shared by every instance. See this crate's README for the
//! config reference.

use gatehouse_sdk::{export_policy, Completion, Connection, Decision, Expression, Policy, Request};
use policy_traffic::{by_key, key_of, one, LimitConfig, RateLimit};
use serde::Deserialize;

/// The config, as written under `rate-limit-by-key:`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The key to count by: a CEL expression.
    pub counter_key: String,
    /// Units each request counts. Default 1.
    #[serde(default = "one")]
    pub increment_count: u64,
    /// Count only the requests whose response makes this expression true
    /// (evaluated when the response has been sent).
    pub increment_condition: Option<String>,
    /// The limit and its headers and variables.
    #[serde(flatten)]
    pub limit: LimitConfig,
}

/// The constructed policy.
pub struct RateLimitByKey {
    limit: RateLimit,
    key: Expression,
    amount: u64,
}

impl Policy for RateLimitByKey {
    type Config = Config;

    fn new(c: Config) -> Result<Self, String> {
        let (key, cond) = by_key(
            &c.counter_key,
            c.increment_count,
            &c.increment_condition,
            Some(c.limit.calls),
        )?;
        Ok(RateLimitByKey {
            limit: RateLimit::new("rate-limit-by-key", c.limit, cond)?,
            key,
            amount: c.increment_count,
        })
    }

    fn on_request(&self, _req: &Request, _conn: &Connection) -> Decision {
        let key = key_of(&self.key);
        let what = if key.is_empty() {
            "for requests without a key"
        } else {
            "for this key"
        };
        self.limit.check(&key, self.amount, what)
    }

    fn wants_completion(&self) -> bool {
        self.limit.wants_completion()
    }

    fn on_complete(&self, _req: &Request, _conn: &Connection, _info: &Completion) {
        self.limit.complete();
    }
}

export_policy!(RateLimitByKey);

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_sdk::testkit::{self, TestRequest};
    use gatehouse_sdk::Value;

    #[test]
    fn counts_per_key() {
        testkit::reset_counters();
        let p: RateLimitByKey = testkit::build(
            r#"{"calls": 1, "renewal_period": 60, "counter_key": "connection.client_ip"}"#,
        )
        .unwrap();
        let r = TestRequest::get("/");
        testkit::set_expression_value("connection.client_ip", Value::Text("10.0.0.1".into()));
        assert!(testkit::on_request(&p, &r).is_continue());
        let Decision::Deny(f) = testkit::on_request(&p, &r) else {
            panic!("the second call of a key must be refused")
        };
        assert_eq!(f.code, "policy.rate-limit-by-key.exceeded");
        testkit::set_expression_value("connection.client_ip", Value::Text("10.0.0.2".into()));
        assert!(testkit::on_request(&p, &r).is_continue(), "another key");
    }

    #[test]
    fn a_misspelt_key_is_refused() {
        let e = testkit::build::<RateLimitByKey>(
            r#"{"calls": 1, "renewal_period": 60, "counter_key": "x", "renewal_perod": 5}"#,
        )
        .err()
        .unwrap();
        assert!(e.contains("renewal_perod"), "{e}");
    }

    #[test]
    fn config_errors() {
        let e = testkit::build::<RateLimitByKey>(
            r#"{"calls": 1, "renewal_period": 60, "counter_key": "x", "increment_condition": ""}"#,
        )
        .err()
        .unwrap();
        assert!(e.starts_with("increment_condition"), "{e}");
        let e = testkit::build::<RateLimitByKey>(
            r#"{"calls": 1, "renewal_period": 60, "counter_key": "x", "increment_count": 2}"#,
        )
        .err()
        .unwrap();
        assert!(e.starts_with("increment_count"), "{e}");
    }
}
