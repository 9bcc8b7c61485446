//! `return-response`: stop the chain and send a configured response. See
//! this crate's README for the config reference.

use gatehouse_sdk::{
    export_policy, Connection, Decision, Header, Phases, Policy, Request, Response, ResponseSpec,
};
use serde::Deserialize;
use std::collections::BTreeMap;

/// The config, as written under `return-response:`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The status code. Default 200.
    #[serde(default = "default_status")]
    pub status_code: u16,
    /// Response headers, name to value.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The body, sent as UTF-8.
    #[serde(default)]
    pub body: String,
}

fn default_status() -> u16 {
    200
}

/// The constructed policy: the response is built once.
pub struct ReturnResponse {
    response: ResponseSpec,
}

impl Policy for ReturnResponse {
    type Config = Config;
    const PHASES: Phases = Phases::REQUEST.union(Phases::RESPONSE);

    fn new(c: Config) -> Result<Self, String> {
        if !(100..=599).contains(&c.status_code) || (100..200).contains(&c.status_code) {
            return Err(format!(
                "status_code: {} is not a final HTTP status (200..=599)",
                c.status_code
            ));
        }
        let mut headers = Vec::with_capacity(c.headers.len());
        for (name, value) in c.headers {
            let lower = name.to_ascii_lowercase();
            if lower.is_empty() || !gatehouse_sdk::is_valid_header_name(&lower) {
                return Err(format!("headers: `{name}` is not a valid header name"));
            }
            if !gatehouse_sdk::is_valid_header_value(&value) {
                return Err(format!(
                    "headers.{name}: must not contain control characters (CR, LF, NUL, ...)"
                ));
            }
            if lower == "content-length" || lower == "transfer-encoding" {
                return Err(format!("headers: `{name}` is set by the gateway"));
            }
            headers.push(Header::new(lower, value));
        }
        Ok(ReturnResponse {
            response: ResponseSpec {
                status: c.status_code,
                headers,
                body: c.body.into_bytes(),
            },
        })
    }

    fn on_request(&self, _req: &Request, _conn: &Connection) -> Decision {
        Decision::respond(self.response.clone())
    }

    fn on_response(&self, _req: &Request, _resp: &Response, _conn: &Connection) -> Decision {
        Decision::respond(self.response.clone())
    }
}

export_policy!(ReturnResponse);

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_sdk::testkit::{self, TestRequest};

    #[test]
    fn responds_with_configured_response() {
        let p: ReturnResponse = testkit::build(
            r#"{"status_code":418,"headers":{"Content-Type":"text/plain"},"body":"short and stout"}"#,
        )
        .unwrap();
        assert_eq!(
            testkit::on_request(&p, &TestRequest::get("/")),
            Decision::respond(
                ResponseSpec::new(418)
                    .with_header("content-type", "text/plain")
                    .with_body("short and stout")
            )
        );
    }

    #[test]
    fn bad_config() {
        let e = testkit::build::<ReturnResponse>(r#"{"status_code":99}"#)
            .err()
            .unwrap();
        assert!(e.starts_with("status_code: 99"), "{e}");
        let e = testkit::build::<ReturnResponse>(r#"{"headers":{"content-length":"1"}}"#)
            .err()
            .unwrap();
        assert_eq!(e, "headers: `content-length` is set by the gateway");
        let e = testkit::build::<ReturnResponse>(r#"{"status":200}"#)
            .err()
            .unwrap();
        assert!(e.contains("unknown field `status`"), "{e}");
    }
}
