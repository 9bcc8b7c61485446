//! `quota`: at most `calls` requests and/or `bandwidth` kilobytes (request
//! plus response bodies, as transferred) per `renewal_period` seconds — 0:
//! a quota that never renews — for the scope the policy is in. Over quota:
//! 403. Counted by the gateway (`counters`); the bytes are counted in the
//! completion hook, when they are known. See this crate's README.

use gatehouse_sdk::{export_policy, Completion, Connection, Decision, Policy, Request};
use policy_traffic::{Quota, QuotaConfig};

/// The constructed policy.
pub struct QuotaPolicy(Quota);

impl Policy for QuotaPolicy {
    type Config = QuotaConfig;

    fn new(config: QuotaConfig) -> Result<Self, String> {
        Quota::new("quota", config, 0, None).map(QuotaPolicy)
    }

    fn on_request(&self, _req: &Request, _conn: &Connection) -> Decision {
        self.0.check("", 1)
    }

    fn wants_completion(&self) -> bool {
        self.0.wants_completion()
    }

    fn on_complete(&self, _req: &Request, _conn: &Connection, info: &Completion) {
        self.0.complete(info);
    }
}

export_policy!(QuotaPolicy);

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_sdk::testkit::{self, TestRequest};

    #[test]
    fn calls_run_out() {
        testkit::reset_counters();
        let p: QuotaPolicy = testkit::build(r#"{"calls": 1, "renewal_period": 0}"#).unwrap();
        assert!(testkit::on_request(&p, &TestRequest::get("/")).is_continue());
        let Decision::Deny(f) = testkit::on_request(&p, &TestRequest::get("/")) else {
            panic!("the quota is used up")
        };
        assert_eq!((f.status, f.code.as_str()), (403, "policy.quota.exceeded"));
        assert!(f.detail.contains("never renews"), "{}", f.detail);
    }

    #[test]
    fn needs_calls_or_bandwidth() {
        let e = testkit::build::<QuotaPolicy>(r#"{"renewal_period": 60}"#)
            .err()
            .unwrap();
        assert!(e.contains("calls"), "{e}");
    }
}
