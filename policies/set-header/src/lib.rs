//! `set-header`: set, append, skip-if-present or delete a header on the
//! request (inbound chains) or the response (outbound and on-error chains).
//! See this crate's README for the config reference.

use gatehouse_sdk::{
    export_policy, Connection, Decision, Expression, Fault, HeaderEdit, Phases, Policy, Request,
    Response,
};
use serde::Deserialize;

/// What to do when the header already exists (Azure API Management's
/// `exists-action`).
#[derive(Deserialize, Clone, Copy, PartialEq, Eq, Debug, Default)]
#[serde(rename_all = "snake_case")]
pub enum ExistsAction {
    /// Replace every existing value (the default).
    #[default]
    Override,
    /// Leave an existing header alone; set it only when absent.
    Skip,
    /// Add the value(s) after existing ones.
    Append,
    /// Remove the header.
    Delete,
}

/// The config, as written under `set-header:`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The header name.
    pub name: String,
    /// What to do when it exists. Default `override`.
    #[serde(default)]
    pub exists_action: ExistsAction,
    /// One literal value.
    #[serde(default)]
    pub value: Option<String>,
    /// Several literal values (each becomes one header line).
    #[serde(default)]
    pub values: Vec<String>,
    /// A CEL expression computed per request, e.g. `request.path`.
    #[serde(default)]
    pub expression: Option<String>,
}

enum Source {
    Literal(Vec<String>),
    Computed(Expression),
    Nothing,
}

/// The constructed policy.
pub struct SetHeader {
    name: String,
    action: ExistsAction,
    source: Source,
}

impl Policy for SetHeader {
    type Config = Config;
    const PHASES: Phases = Phases::REQUEST.union(Phases::RESPONSE);

    fn new(c: Config) -> Result<Self, String> {
        let name = c.name.trim().to_ascii_lowercase();
        if name.is_empty() {
            return Err("name: must not be empty".into());
        }
        if !gatehouse_sdk::is_valid_header_name(&name) {
            return Err(format!("name: `{}` is not a valid header name", c.name));
        }
        let mut literals = c.values;
        if let Some(v) = c.value {
            literals.insert(0, v);
        }
        let source = match (c.expression, literals.is_empty()) {
            (Some(_), false) => {
                return Err(
                    "expression: give either `expression` or `value`/`values`, not both".into(),
                )
            }
            (Some(src), true) => {
                Source::Computed(Expression::compile(&src).map_err(|e| format!("expression: {e}"))?)
            }
            (None, false) => Source::Literal(literals),
            (None, true) => Source::Nothing,
        };
        if matches!(source, Source::Nothing) && c.exists_action != ExistsAction::Delete {
            return Err("value: required unless exists_action is `delete`".into());
        }
        for v in match &source {
            Source::Literal(v) => v.as_slice(),
            _ => &[],
        } {
            if !gatehouse_sdk::is_valid_header_value(v) {
                return Err("value: must not contain control characters (CR, LF, NUL, ...)".into());
            }
        }
        Ok(SetHeader {
            name,
            action: c.exists_action,
            source,
        })
    }

    fn on_request(&self, req: &Request, _conn: &Connection) -> Decision {
        self.apply(|| req.header(&self.name).is_some())
    }

    fn on_response(&self, _req: &Request, resp: &Response, _conn: &Connection) -> Decision {
        self.apply(|| resp.header(&self.name).is_some())
    }
}

impl SetHeader {
    fn apply(&self, exists: impl FnOnce() -> bool) -> Decision {
        if self.action == ExistsAction::Delete {
            return Decision::edit(vec![HeaderEdit::remove(&self.name)]);
        }
        if self.action == ExistsAction::Skip && exists() {
            return Decision::proceed();
        }
        let values = match &self.source {
            Source::Literal(v) => v.clone(),
            Source::Computed(e) => match e.evaluate_string() {
                Ok(v) if gatehouse_sdk::is_valid_header_value(&v) => vec![v],
                Ok(_) => {
                    return Decision::deny(Fault::new(
                        500,
                        "policy.set-header.invalid-value",
                        "Header value is invalid",
                        format!(
                            "the value computed for `{}` contains control characters",
                            self.name
                        ),
                    ))
                }
                Err(e) => {
                    return Decision::deny(Fault::new(
                        500,
                        "policy.set-header.expression",
                        "Header value could not be computed",
                        format!("`{}`: {e}", e_source(&self.source)),
                    ))
                }
            },
            Source::Nothing => Vec::new(),
        };
        let mut edits = Vec::with_capacity(values.len());
        for (i, v) in values.into_iter().enumerate() {
            if i == 0 && self.action != ExistsAction::Append {
                edits.push(HeaderEdit::set(&self.name, v));
            } else {
                edits.push(HeaderEdit::append(&self.name, v));
            }
        }
        Decision::edit(edits)
    }
}

fn e_source(s: &Source) -> String {
    match s {
        Source::Computed(e) => e.source(),
        _ => String::new(),
    }
}

export_policy!(SetHeader);

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_sdk::testkit::{self, TestRequest, TestResponse};
    use gatehouse_sdk::Value;

    #[test]
    fn override_append_skip_delete() {
        let p: SetHeader = testkit::build(r#"{"name":"X-A","value":"1"}"#).unwrap();
        assert_eq!(
            testkit::on_request(&p, &TestRequest::get("/")),
            Decision::edit(vec![HeaderEdit::set("x-a", "1")])
        );

        let p: SetHeader =
            testkit::build(r#"{"name":"x-a","values":["1","2"],"exists_action":"append"}"#)
                .unwrap();
        assert_eq!(
            testkit::on_request(&p, &TestRequest::get("/")),
            Decision::edit(vec![
                HeaderEdit::append("x-a", "1"),
                HeaderEdit::append("x-a", "2")
            ])
        );

        let p: SetHeader =
            testkit::build(r#"{"name":"x-a","value":"1","exists_action":"skip"}"#).unwrap();
        assert_eq!(
            testkit::on_request(&p, &TestRequest::get("/").header("x-a", "0")),
            Decision::proceed()
        );
        assert_eq!(
            testkit::on_request(&p, &TestRequest::get("/")),
            Decision::edit(vec![HeaderEdit::set("x-a", "1")])
        );

        let p: SetHeader = testkit::build(r#"{"name":"server","exists_action":"delete"}"#).unwrap();
        let d = testkit::on_response(
            &p,
            &TestRequest::get("/"),
            &TestResponse::new(200).header("server", "x"),
        );
        assert_eq!(d, Decision::edit(vec![HeaderEdit::remove("server")]));
    }

    #[test]
    fn computed_value() {
        testkit::reset();
        testkit::set_expression_value("request.path", Value::Text("/orders".into()));
        let p: SetHeader =
            testkit::build(r#"{"name":"x-path","expression":"request.path"}"#).unwrap();
        assert_eq!(
            testkit::on_request(&p, &TestRequest::get("/orders")),
            Decision::edit(vec![HeaderEdit::set("x-path", "/orders")])
        );
    }

    #[test]
    fn bad_config() {
        let e = testkit::build::<SetHeader>(r#"{"name":"x"}"#)
            .err()
            .unwrap();
        assert_eq!(e, "value: required unless exists_action is `delete`");
        let e = testkit::build::<SetHeader>(r#"{"name":"x","value":"a\nb"}"#)
            .err()
            .unwrap();
        assert_eq!(
            e,
            "value: must not contain control characters (CR, LF, NUL, ...)"
        );
        let e = testkit::build::<SetHeader>(r#"{"name":"x","value":"a\u0007b"}"#)
            .err()
            .unwrap();
        assert_eq!(
            e,
            "value: must not contain control characters (CR, LF, NUL, ...)"
        );
        assert!(
            testkit::build::<SetHeader>(r#"{"name":"x","value":"caf\u00e9"}"#).is_ok(),
            "UTF-8 is allowed"
        );
        let e =
            testkit::build::<SetHeader>(r#"{"name":"x","value":"a","exists_action":"replace"}"#)
                .err()
                .unwrap();
        assert!(
            e.starts_with("exists_action: unknown variant `replace`"),
            "{e}"
        );
        let e = testkit::build::<SetHeader>(r#"{"name":"x","value":"a","expression":"1"}"#)
            .err()
            .unwrap();
        assert!(e.starts_with("expression: give either"), "{e}");
    }
}
