//! Expressions (CEL), compiled once and evaluated per request by the host.

pub use crate::bindings::gatehouse::policy::expressions::Value;

#[cfg(target_arch = "wasm32")]
type Inner = crate::bindings::gatehouse::policy::expressions::Expression;
#[cfg(not(target_arch = "wasm32"))]
type Inner = crate::testkit::TestExpression;

/// A compiled expression. Compile in [`crate::Policy::new`], evaluate in
/// the hooks.
pub struct Expression(Inner);

impl Expression {
    /// Compiles `source`.
    ///
    /// # Errors
    ///
    /// The compiler's message (position and cause).
    pub fn compile(source: &str) -> Result<Self, String> {
        Inner::compile(source).map(Expression)
    }

    /// Evaluates against the current request.
    ///
    /// # Errors
    ///
    /// A missing field, a type error, or a call outside a hook.
    pub fn evaluate(&self) -> Result<Value, String> {
        self.0.evaluate()
    }

    /// Evaluates and renders the result as text: strings as they are,
    /// numbers and booleans in their usual form, `null` as the empty string.
    ///
    /// # Errors
    ///
    /// As [`Expression::evaluate`].
    pub fn evaluate_string(&self) -> Result<String, String> {
        Ok(match self.evaluate()? {
            Value::Null => String::new(),
            Value::Boolean(b) => b.to_string(),
            Value::Integer(i) => i.to_string(),
            Value::Unsigned(u) => u.to_string(),
            Value::Float(f) => f.to_string(),
            Value::Text(s) => s,
            Value::Bytes(b) => String::from_utf8_lossy(&b).into_owned(),
            Value::Json(j) => j,
        })
    }

    /// Evaluates a condition.
    ///
    /// # Errors
    ///
    /// As [`Expression::evaluate`], or when the result is not a boolean.
    pub fn evaluate_bool(&self) -> Result<bool, String> {
        match self.evaluate()? {
            Value::Boolean(b) => Ok(b),
            other => Err(format!("expected a boolean, got {other:?}")),
        }
    }

    /// The source text.
    pub fn source(&self) -> String {
        self.0.source()
    }
}
