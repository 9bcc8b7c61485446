//! Named values: `{{name}}` placeholders in policy config.
//!
//! Values come from the config (`value`), the environment (`env`) or a file
//! (`file`). A value marked `secret` is recorded in [`Secrets`], and every
//! message the gateway prints about a policy config is passed through
//! [`Secrets::redact`] so the value never reaches a log, trace or error —
//! nor its base64 or percent-encoded forms.
//!
//! `{{ref:name}}` puts an opaque reference in the policy's config instead
//! of the value: the policy can pass it on (in a header edit of the request
//! bound for the upstream, where the host puts the value in) without the
//! value ever entering the policy's memory.

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

/// The secret values of a config (with the forms they are redacted in),
/// and the references `{{ref:name}}` stands for.
#[derive(Debug, Default, Clone, Hash)]
pub struct Secrets(Arc<SecretsInner>);

#[derive(Debug, Default, Hash)]
struct SecretsInner {
    /// Every form of every secret to redact, longest first.
    forms: Vec<String>,
    /// Reference token -> value.
    refs: Vec<(String, String)>,
}

/// Characters a URL encoder leaves as they are (RFC 3986 unreserved).
const UNRESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The forms a secret can leak in: as it is, base64 (standard and URL-safe,
/// with and without padding) and percent-encoded (RFC 3986 and every
/// non-alphanumeric byte, upper- and lower-case hex).
fn forms(secret: &str) -> Vec<String> {
    use base64::Engine as _;
    let b = secret.as_bytes();
    let mut out = vec![
        secret.to_string(),
        base64::engine::general_purpose::STANDARD.encode(b),
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(b),
        base64::engine::general_purpose::URL_SAFE.encode(b),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b),
    ];
    for set in [UNRESERVED, percent_encoding::NON_ALPHANUMERIC] {
        let upper = percent_encoding::utf8_percent_encode(secret, set).to_string();
        let lower = lower_hex_escapes(&upper);
        out.push(upper);
        out.push(lower);
    }
    out.retain(|f| !f.is_empty());
    out.sort();
    out.dedup();
    out
}

/// `%2F` -> `%2f`, everything else unchanged.
fn lower_hex_escapes(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        out.push(c);
        if c == '%' {
            for _ in 0..2 {
                if let Some(h) = chars.next() {
                    out.push(h.to_ascii_lowercase());
                }
            }
        }
    }
    out
}

/// The reference token of `name` with value `value`: stable for the life
/// of the process (so an unchanged config keeps its pools across reloads),
/// and telling nothing about the value (an HMAC under a key drawn at
/// start).
fn reference(name: &str, value: &str) -> String {
    static KEY: std::sync::OnceLock<ring::hmac::Key> = std::sync::OnceLock::new();
    let key = KEY.get_or_init(|| {
        let rng = ring::rand::SystemRandom::new();
        ring::hmac::Key::generate(ring::hmac::HMAC_SHA256, &rng)
            .unwrap_or_else(|_| ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"gatehouse"))
    });
    let tag = ring::hmac::sign(key, format!("{name}\0{value}").as_bytes());
    let hex: String = tag.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("gatehouse-secret-ref-{hex}")
}

impl Secrets {
    fn new(values: &[String], refs: Vec<(String, String)>) -> Self {
        let mut forms: Vec<String> = values.iter().flat_map(|v| forms(v)).collect();
        forms.sort();
        forms.dedup();
        // Longest first, so a form that contains another is redacted whole.
        forms.sort_by_key(|s| std::cmp::Reverse(s.len()));
        Secrets(Arc::new(SecretsInner { forms, refs }))
    }

    /// Replaces every secret value in `text`, and its base64 and
    /// percent-encoded forms, with `***`.
    pub fn redact(&self, text: &str) -> String {
        let mut out = None::<String>;
        for s in self.0.forms.iter() {
            let cur = out.as_deref().unwrap_or(text);
            if cur.contains(s.as_str()) {
                out = Some(cur.replace(s.as_str(), "***"));
            }
        }
        out.unwrap_or_else(|| text.to_string())
    }

    /// Whether there is anything to redact.
    pub fn is_empty(&self) -> bool {
        self.0.forms.is_empty()
    }

    /// Puts the values of `{{ref:name}}` references in `text` (for what
    /// goes to the upstream); `None` when there are none.
    pub fn resolve_refs(&self, text: &str) -> Option<String> {
        if self.0.refs.is_empty() || !text.contains("gatehouse-secret-ref-") {
            return None;
        }
        let mut out = text.to_string();
        for (token, value) in &self.0.refs {
            if out.contains(token.as_str()) {
                out = out.replace(token.as_str(), value);
            }
        }
        Some(out)
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
        let refs = values
            .iter()
            .map(|(name, value)| (reference(name, value), value.clone()))
            .collect();
        NamedValues {
            secrets: Secrets::new(&secrets, refs),
            values,
            broken,
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

    /// The secrets, for redacting messages, and the references.
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
            let (name, by_reference) = match name.strip_prefix("ref:") {
                Some(n) => (n.trim(), true),
                None => (name, false),
            };
            match self.values.get(name) {
                Some(v) if by_reference => out.push_str(&reference(name, v)),
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
