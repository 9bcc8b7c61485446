//! Named values: `{{name}}` placeholders in policy config.
//!
//! Values come from the config (`value`), the environment (`env`) or a file
//! (`file`). A value marked `secret` is recorded in [`Secrets`], and every
//! message the gateway prints about a policy config is passed through
//! [`Secrets::redact`] so the value never reaches a log, trace or error.

use super::{Config, ConfigError, Source};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Resolved named values.
#[derive(Debug, Default)]
pub struct NamedValues {
    values: BTreeMap<String, String>,
    /// Defined, but their value could not be read (already reported).
    broken: std::collections::BTreeSet<String>,
    secrets: Secrets,
}

/// The secret values of a config, for redaction.
#[derive(Debug, Default, Clone, Hash)]
pub struct Secrets(Arc<Vec<String>>);

impl Secrets {
    /// Replaces every secret value in `text` with `***`.
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for s in self.0.iter() {
            if !s.is_empty() && out.contains(s.as_str()) {
                out = out.replace(s.as_str(), "***");
            }
        }
        out
    }
}

impl NamedValues {
    /// Resolves every named value; problems are appended to `errors`.
    pub fn resolve(config: &Config, source: &Source, errors: &mut Vec<ConfigError>) -> NamedValues {
        let mut values = BTreeMap::new();
        let mut broken = std::collections::BTreeSet::new();
        let mut secrets = Vec::new();
        for (name, nv) in &config.named_values {
            let path = format!("named_values.{name}");
            if !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
            {
                broken.insert(name.clone());
                errors.push(ConfigError::new(
                    source,
                    &path,
                    "a name may use letters, digits, `-`, `_` and `.`",
                ));
                continue;
            }
            let given = [nv.value.is_some(), nv.env.is_some(), nv.file.is_some()]
                .iter()
                .filter(|b| **b)
                .count();
            if given != 1 {
                broken.insert(name.clone());
                errors.push(ConfigError::new(
                    source,
                    &path,
                    "give exactly one of `value`, `env`, `file`",
                ));
                continue;
            }
            let value = if let Some(v) = &nv.value {
                v.clone()
            } else if let Some(var) = &nv.env {
                match std::env::var(var) {
                    Ok(v) => v,
                    Err(_) => {
                        broken.insert(name.clone());
                        errors.push(ConfigError::new(
                            source,
                            format!("{path}.env"),
                            format!("environment variable `{var}` is not set (or not UTF-8)"),
                        ));
                        continue;
                    }
                }
            } else if let Some(file) = &nv.file {
                let full = source.resolve(file);
                match std::fs::read_to_string(&full) {
                    Ok(v) => v.trim_end_matches(['\n', '\r']).to_string(),
                    Err(e) => {
                        broken.insert(name.clone());
                        errors.push(ConfigError::new(
                            source,
                            format!("{path}.file"),
                            format!("cannot read {}: {e}", full.display()),
                        ));
                        continue;
                    }
                }
            } else {
                continue;
            };
            if nv.secret {
                secrets.push(value.clone());
            }
            values.insert(name.clone(), value);
        }
        // Longest first, so a secret that contains another is redacted whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        NamedValues {
            values,
            broken,
            secrets: Secrets(Arc::new(secrets)),
        }
    }

    /// The value of `name`.
    ///
    /// # Errors
    ///
    /// The name is not defined, or its value could not be read (already
    /// reported).
    pub fn get(&self, name: &str) -> Result<&str, String> {
        match self.values.get(name) {
            Some(v) => Ok(v),
            None if self.broken.contains(name) => Err(format!(
                "named value `{name}` has no value (see named_values.{name})"
            )),
            None => Err(format!(
                "unknown named value `{name}` (define it under `named_values`)"
            )),
        }
    }

    /// The secrets, for redacting messages.
    pub fn secrets(&self) -> Secrets {
        self.secrets.clone()
    }

    /// Substitutes `{{name}}` in every string of a JSON value.
    ///
    /// # Errors
    ///
    /// The first unknown name or unclosed placeholder, as a message.
    pub fn substitute(&self, v: &mut serde_json::Value) -> Result<(), String> {
        match v {
            serde_json::Value::String(s) => {
                if s.contains("{{") {
                    *s = self.substitute_str(s)?;
                }
                Ok(())
            }
            serde_json::Value::Array(items) => {
                items.iter_mut().try_for_each(|i| self.substitute(i))
            }
            serde_json::Value::Object(map) => map.values_mut().try_for_each(|i| self.substitute(i)),
            _ => Ok(()),
        }
    }

    fn substitute_str(&self, s: &str) -> Result<String, String> {
        let mut out = String::with_capacity(s.len());
        let mut rest = s;
        while let Some(start) = rest.find("{{") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after
                .find("}}")
                .ok_or_else(|| format!("unclosed `{{{{` in `{}`", self.secrets.redact(s)))?;
            let name = after[..end].trim();
            match self.values.get(name) {
                Some(v) => out.push_str(v),
                None if self.broken.contains(name) => {
                    return Err(format!(
                        "named value `{name}` has no value (see named_values.{name})"
                    ))
                }
                None => {
                    return Err(format!(
                        "unknown named value `{name}` (define it under `named_values`)"
                    ))
                }
            }
            rest = &after[end + 2..];
        }
        out.push_str(rest);
        Ok(out)
    }
}
