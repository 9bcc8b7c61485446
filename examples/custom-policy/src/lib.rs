//! An example custom policy: the request must carry an API key from a list.
//! Build: `cargo build -p policy-api-key --target wasm32-wasip2 --profile guest`.
use gatehouse_sdk::{export_policy, variables, Connection, Decision, Fault, Policy, Request};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_header")]
    header: String,
    keys: Vec<String>,
}
fn default_header() -> String {
    "x-api-key".into()
}

pub struct ApiKey(Config);

impl Policy for ApiKey {
    type Config = Config;
    fn new(config: Config) -> Result<Self, String> {
        match config.keys.is_empty() {
            true => Err("keys: list at least one key".into()),
            false => Ok(ApiKey(config)),
        }
    }
    fn on_request(&self, req: &Request, _conn: &Connection) -> Decision {
        let key = req.header(&self.0.header).unwrap_or_default();
        match self.0.keys.iter().position(|k| *k == key) {
            Some(i) => {
                variables::set("api_key.index", &i.to_string());
                Decision::proceed()
            }
            None => Decision::deny(Fault::new(
                401,
                "policy.api-key.invalid",
                "Invalid API key",
                format!("send a valid key in `{}`", self.0.header),
            )),
        }
    }
}

export_policy!(ApiKey);

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_sdk::testkit::{self, TestRequest};

    #[test]
    fn accepts_listed_key_and_refuses_others() {
        let p: ApiKey = testkit::build(r#"{"keys":["k1","k2"]}"#).unwrap();
        assert!(
            testkit::on_request(&p, &TestRequest::get("/").header("x-api-key", "k2")).is_continue()
        );
        assert_eq!(
            testkit::variables_snapshot()
                .get("api_key.index")
                .map(String::as_str),
            Some("1")
        );
        match testkit::on_request(&p, &TestRequest::get("/")) {
            Decision::Deny(f) => {
                assert_eq!((f.status, f.code.as_str()), (401, "policy.api-key.invalid"))
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            testkit::build::<ApiKey>(r#"{"keys":[]}"#).err().unwrap(),
            "keys: list at least one key"
        );
    }
}
