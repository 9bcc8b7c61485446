//! `check-header`: refuse a request whose header is missing, or whose value
//! is not one of the allowed values. See this crate's README for the config
//! reference.

use gatehouse_sdk::{export_policy, Connection, Decision, Fault, Policy, Request};
use serde::Deserialize;

/// The config, as written under `check-header:` in the gateway's YAML.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The header to check (case-insensitive).
    pub name: String,
    /// Status of the refusal. Default 400.
    #[serde(default = "default_status")]
    pub failed_check_httpcode: u16,
    /// The refusal's `detail`. Default: names the header.
    #[serde(default)]
    pub failed_check_error_message: Option<String>,
    /// Compare values ignoring case. Default false.
    #[serde(default)]
    pub ignore_case: bool,
    /// Allowed values; empty means "the header must be present".
    #[serde(default)]
    pub values: Vec<String>,
}

fn default_status() -> u16 {
    400
}

/// The constructed policy.
pub struct CheckHeader {
    name: String,
    status: u16,
    message: Option<String>,
    ignore_case: bool,
    values: Vec<String>,
}

impl Policy for CheckHeader {
    type Config = Config;

    fn new(c: Config) -> Result<Self, String> {
        let name = c.name.trim().to_ascii_lowercase();
        if name.is_empty() {
            return Err("name: must not be empty".into());
        }
        if !gatehouse_sdk::is_valid_header_name(&name) {
            return Err(format!("name: `{}` is not a valid header name", c.name));
        }
        if !(400..=599).contains(&c.failed_check_httpcode) {
            return Err(format!(
                "failed_check_httpcode: {} is not an error status (400..=599)",
                c.failed_check_httpcode
            ));
        }
        let values = if c.ignore_case {
            c.values.iter().map(|v| v.to_lowercase()).collect()
        } else {
            c.values
        };
        Ok(CheckHeader {
            name,
            status: c.failed_check_httpcode,
            message: c.failed_check_error_message,
            ignore_case: c.ignore_case,
            values,
        })
    }

    fn on_request(&self, req: &Request, _conn: &Connection) -> Decision {
        if self.values.is_empty() {
            return match req.header(&self.name) {
                Some(_) => Decision::proceed(),
                None => self.refuse("missing", format!("header `{}` is required", self.name)),
            };
        }
        let present = req.header_all(&self.name);
        if present.is_empty() {
            return self.refuse("missing", format!("header `{}` is required", self.name));
        }
        // Every line of the header must carry an allowed value: an
        // upstream may read any one of them (often the first).
        let allowed = present.iter().all(|v| {
            if self.ignore_case {
                self.values.contains(&v.to_lowercase())
            } else {
                self.values.contains(v)
            }
        });
        if allowed {
            Decision::proceed()
        } else {
            self.refuse(
                "value",
                format!("header `{}` has a value that is not allowed", self.name),
            )
        }
    }
}

impl CheckHeader {
    fn refuse(&self, reason: &str, default_detail: String) -> Decision {
        Decision::deny(Fault::new(
            self.status,
            format!("policy.check-header.{reason}"),
            "Header check failed",
            self.message.clone().unwrap_or(default_detail),
        ))
    }
}

export_policy!(CheckHeader);

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_sdk::testkit::{self, TestRequest};

    fn refused(d: Decision) -> Fault {
        match d {
            Decision::Deny(f) => f,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn presence_check() {
        let p: CheckHeader = testkit::build(r#"{"name":"X-Tenant"}"#).unwrap();
        assert!(
            testkit::on_request(&p, &TestRequest::get("/").header("x-tenant", "a")).is_continue()
        );
        let f = refused(testkit::on_request(&p, &TestRequest::get("/")));
        assert_eq!(f.status, 400);
        assert_eq!(f.code, "policy.check-header.missing");
        assert_eq!(f.detail, "header `x-tenant` is required");
    }

    #[test]
    fn allowed_values_with_and_without_case() {
        let p: CheckHeader =
            testkit::build(r#"{"name":"x-env","values":["Prod","Test"],"failed_check_httpcode":403,"failed_check_error_message":"bad env"}"#)
                .unwrap();
        assert!(
            testkit::on_request(&p, &TestRequest::get("/").header("x-env", "Prod")).is_continue()
        );
        let f = refused(testkit::on_request(
            &p,
            &TestRequest::get("/").header("x-env", "prod"),
        ));
        assert_eq!(
            (f.status, f.code.as_str(), f.detail.as_str()),
            (403, "policy.check-header.value", "bad env")
        );

        let p: CheckHeader =
            testkit::build(r#"{"name":"x-env","values":["Prod"],"ignore_case":true}"#).unwrap();
        assert!(
            testkit::on_request(&p, &TestRequest::get("/").header("x-env", "pROD")).is_continue()
        );
    }

    #[test]
    fn every_line_of_the_header_must_be_allowed() {
        let p: CheckHeader =
            testkit::build(r#"{"name":"x-env","values":["prod","test"]}"#).unwrap();
        let both_allowed = TestRequest::get("/")
            .header("x-env", "test")
            .header("x-env", "prod");
        assert!(testkit::on_request(&p, &both_allowed).is_continue());
        let one_not = TestRequest::get("/")
            .header("x-env", "evil")
            .header("x-env", "prod");
        assert_eq!(
            refused(testkit::on_request(&p, &one_not)).code,
            "policy.check-header.value"
        );
    }

    #[test]
    fn bad_config_names_the_key() {
        let e = testkit::build::<CheckHeader>(r#"{"name":""}"#)
            .err()
            .unwrap();
        assert_eq!(e, "name: must not be empty");
        let e = testkit::build::<CheckHeader>(r#"{"name":"a","failed_check_httpcode":200}"#)
            .err()
            .unwrap();
        assert!(e.starts_with("failed_check_httpcode:"), "{e}");
        let e = testkit::build::<CheckHeader>(r#"{"name":"a","failed_check_httpcode":"x"}"#)
            .err()
            .unwrap();
        assert!(e.starts_with("failed_check_httpcode:"), "{e}");
        let e = testkit::build::<CheckHeader>(r#"{"name":"a","nmae":"b"}"#)
            .err()
            .unwrap();
        assert!(e.contains("unknown field `nmae`"), "{e}");
        let e = testkit::build::<CheckHeader>(r#"{"name":"bad header"}"#)
            .err()
            .unwrap();
        assert!(e.contains("not a valid header name"), "{e}");
    }
}
