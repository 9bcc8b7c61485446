//! `rate-limit`: at most `calls` requests per `renewal_period` seconds
//! (a sliding window) for the scope the policy is in — the global chain,
//! an API or an operation; the same config at two scopes counts apart. The
//! count is the gateway's (`counters`), shared by every instance. See this
//! crate's README for the config reference.

use gatehouse_sdk::{export_policy, Connection, Decision, Policy, Request};
use policy_traffic::{LimitConfig, RateLimit};

/// The constructed policy.
pub struct RateLimitPolicy(RateLimit);

impl Policy for RateLimitPolicy {
    type Config = LimitConfig;

    fn new(config: LimitConfig) -> Result<Self, String> {
        RateLimit::new("rate-limit", config, None).map(RateLimitPolicy)
    }

    fn on_request(&self, _req: &Request, _conn: &Connection) -> Decision {
        self.0.check("", 1, "in this scope")
    }
}

export_policy!(RateLimitPolicy);

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_sdk::testkit::{self, TestRequest};

    #[test]
    fn refuses_past_the_limit_with_retry_after() {
        testkit::reset_counters();
        let p: RateLimitPolicy = testkit::build(
            r#"{"calls": 2, "renewal_period": 10, "total_calls_header_name": "x-total"}"#,
        )
        .unwrap();
        let r = TestRequest::get("/");
        assert!(testkit::on_request(&p, &r).is_continue());
        assert!(testkit::on_request(&p, &r).is_continue());
        let Decision::Deny(f) = testkit::on_request(&p, &r) else {
            panic!("the third call must be refused")
        };
        assert_eq!(
            (f.status, f.code.as_str()),
            (429, "policy.rate-limit.exceeded")
        );
        assert!(f.headers.iter().any(|h| h.name == "retry-after"));
        assert!(f
            .headers
            .iter()
            .any(|h| h.name == "x-total" && h.value == "2"));
    }

    #[test]
    fn config_errors_name_the_key() {
        let e = testkit::build::<RateLimitPolicy>(r#"{"calls": 1, "renewal_period": 301}"#)
            .err()
            .unwrap();
        assert!(e.starts_with("renewal_period"), "{e}");
        let e = testkit::build::<RateLimitPolicy>(r#"{"calls": 0, "renewal_period": 1}"#)
            .err()
            .unwrap();
        assert!(e.starts_with("calls"), "{e}");
    }
}
