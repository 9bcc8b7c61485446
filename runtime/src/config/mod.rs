//! The YAML config: schema, loading, named values.
//!
//! Loading is two steps. [`load`] parses the file into [`Config`] (serde,
//! unknown keys refused) and reports the first syntax or type error with
//! its line, column and key path. [`crate::gateway::Gateway::build`] then
//! validates meaning — upstream names, PEM files, policy names, each
//! policy's own config — and reports *every* problem it finds, each naming
//! the file and the key path. Only a fully valid config starts anything.

mod named_values;
mod schema;

pub use named_values::{NamedValues, Secrets};
pub use schema::*;

use std::fmt;
use std::path::{Path, PathBuf};

/// Where a config came from: the file (for messages) and the directory
/// relative paths in it are resolved against.
#[derive(Clone, Debug)]
pub struct Source {
    /// The file name as given, or `<embedded quickstart>`.
    pub file: String,
    /// The directory relative paths are resolved against.
    pub base_dir: PathBuf,
    /// The config file itself, `None` for the embedded quickstart.
    pub path: Option<PathBuf>,
    /// The text as read.
    pub text: std::sync::Arc<str>,
}

impl Source {
    /// Resolves a path from the config against the config's directory.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }
}

/// One problem in a config: the file, the key path (`apis[0].upstream`),
/// and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The config file.
    pub file: String,
    /// Line and column, when the YAML parser knows them.
    pub location: Option<(usize, usize)>,
    /// The key path, e.g. `apis[0].policies.inbound[1].check-header`;
    /// empty for the document as a whole.
    pub path: String,
    /// What is wrong, in lower case, naming files and values where useful.
    pub message: String,
}

impl ConfigError {
    /// A problem at `path` in `source`'s file.
    pub fn new(source: &Source, path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            file: source.file.clone(),
            location: None,
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some((line, col)) = self.location {
            write!(f, ":{line}:{col}")?;
        }
        if !self.path.is_empty() {
            write!(f, ": {}", self.path)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Every problem found in a config, in the order found.
#[derive(Debug)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl From<ConfigError> for ConfigErrors {
    fn from(e: ConfigError) -> Self {
        ConfigErrors(vec![e])
    }
}

/// The quickstart config, embedded in the binary so `gatehouse run` works
/// with no file at all.
pub const QUICKSTART_YAML: &str = include_str!("../../../examples/quickstart.yaml");

/// Reads and parses a config file.
///
/// # Errors
///
/// A missing or unreadable file, or the first YAML syntax, type or unknown
/// key error, with line, column and key path.
pub fn load(path: &Path) -> Result<(Config, Source), ConfigError> {
    let file = path.display().to_string();
    let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let base_dir = if base_dir.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        base_dir
    };
    let mut source = Source {
        file,
        base_dir,
        path: Some(path.to_path_buf()),
        text: std::sync::Arc::from(""),
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new(&source, "", format!("cannot read the config file: {e}")))?;
    source.text = std::sync::Arc::from(text.as_str());
    let config = parse(&text, &source)?;
    Ok((config, source))
}

/// The embedded quickstart config; relative paths resolve against the
/// current directory.
///
/// # Errors
///
/// Only if the embedded file is broken (a test guards against it).
pub fn quickstart() -> Result<(Config, Source), ConfigError> {
    let source = Source {
        file: "<embedded quickstart>".into(),
        base_dir: PathBuf::from("."),
        path: None,
        text: std::sync::Arc::from(QUICKSTART_YAML),
    };
    let config = parse(QUICKSTART_YAML, &source)?;
    Ok((config, source))
}

/// Parses YAML text as a config.
///
/// # Errors
///
/// The first syntax, type or unknown-key error, with its key path.
pub fn parse(text: &str, source: &Source) -> Result<Config, ConfigError> {
    if text.trim().is_empty() {
        return Err(ConfigError::new(source, "", "the config is empty"));
    }
    let de = serde_yaml_ng::Deserializer::from_str(text);
    serde_path_to_error::deserialize::<_, Config>(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let location = inner.location().map(|l| (l.line(), l.column()));
        let mut message = inner.to_string();
        // serde_yaml appends " at line L column C"; the location is shown
        // in front already.
        if let Some(i) = message.find(" at line ") {
            message.truncate(i);
        }
        let mut path = if path == "." { String::new() } else { path };
        if let Some(p) = path.strip_suffix(".?") {
            path = p.to_string();
        }
        // serde_yaml may start its message with a key path of its own: keep
        // only ours.
        let mut prefix = path.as_str();
        loop {
            if !prefix.is_empty() {
                if let Some(rest) = message.strip_prefix(&format!("{prefix}: ")) {
                    message = rest.to_string();
                    break;
                }
            }
            match prefix.rfind(['.', '[']) {
                Some(i) => prefix = &prefix[..i],
                None => break,
            }
        }
        message.push_str(&yaml_hint(&message, text, location));
        ConfigError {
            file: source.file.clone(),
            location,
            path,
            message,
        }
    })
}

/// `" (did you mean `x`?)"` when one of `candidates` is a likely typo of
/// `given`, else nothing.
pub fn did_you_mean<'a>(given: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    let given_l = given.to_ascii_lowercase();
    let best = candidates
        .into_iter()
        .map(|c| {
            (
                strsim::damerau_levenshtein(&given_l, &c.to_ascii_lowercase()),
                c,
            )
        })
        .filter(|(d, c)| *d <= 2.max(c.len() / 4) && *d < c.len().max(given.len()))
        .min_by_key(|(d, _)| *d);
    match best {
        Some((_, c)) => format!(" (did you mean `{c}`?)"),
        None => String::new(),
    }
}

/// A hint for a YAML or schema error a newcomer is likely to meet, or
/// nothing.
fn yaml_hint(message: &str, text: &str, location: Option<(usize, usize)>) -> String {
    let line_at = |n: usize| text.lines().nth(n.saturating_sub(1)).unwrap_or("");
    // `names: [*.api.test]`: `*` starts an alias in YAML.
    if message.contains("did not find expected alphabetic or numeric character")
        || message.contains("while scanning an alias")
        || message.contains("unknown anchor")
    {
        let line = location.map(|(l, _)| line_at(l)).unwrap_or("");
        if line.contains('*') || location.is_none() {
            return "; `*` at the start of a YAML value begins an alias: quote a wildcard name, \
                    e.g. \"*.api.test\""
                .into();
        }
    }
    // `missing field `x`` because `x:` sits at the wrong indentation.
    if let Some(field) = message
        .strip_prefix("missing field `")
        .and_then(|r| r.split('`').next())
    {
        let found = text.lines().enumerate().find(|(_, l)| {
            let t = l.trim_start().trim_start_matches("- ").trim_start();
            t.strip_prefix(field)
                .is_some_and(|rest| rest.trim_start().starts_with(':'))
        });
        if let Some((i, l)) = found {
            let col = l.len() - l.trim_start().len() + 1;
            return format!(
                "; `{field}:` is at line {}, column {col}: check its indentation \
                 (it must line up with the other keys of this entry)",
                i + 1
            );
        }
    }
    // `unknown field `x`, expected one of `a`, `b``: name the likely one.
    if let Some(rest) = message.strip_prefix("unknown field `") {
        if let Some((given, expected)) = rest.split_once('`') {
            let candidates: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
            return did_you_mean(given, candidates);
        }
    }
    String::new()
}
