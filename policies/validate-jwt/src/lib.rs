//! `validate-jwt`: validates a JSON Web Token on each request — its
//! signature (or, for an encrypted token, its decryption first), its times,
//! audience, issuer and required claims — like Azure API Management's
//! policy of the same name. The crypto runs in the host through the
//! `jose` interface (keys imported once, held by handle; key sets fetched
//! and refreshed by the host); this crate holds the logic. See this
//! crate's README for the config reference and the fault codes.

use std::cell::RefCell;
use std::collections::HashMap;

use gatehouse_sdk::jose::{Algorithm, DecryptionKey, Key, KeySet, KeySetOptions, VerifyError};
use gatehouse_sdk::{
    export_policy, host, variables, Connection, Decision, Expression, Fault, Policy, Request, Value,
};
use serde::Deserialize;
use serde_json::Value as Json;

fn yes() -> bool {
    true
}
fn default_status() -> u16 {
    401
}
fn default_max_token_bytes() -> usize {
    8192
}
fn default_min_refetch() -> u32 {
    30
}
fn default_wait_ms() -> u32 {
    2000
}

/// A key in config: exactly one of `base64`, `pem`, `n`+`e`, `jwk`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// The `kid` tokens name this key by.
    pub id: Option<String>,
    /// A symmetric key, base64.
    pub base64: Option<String>,
    /// PEM: a public key or certificate (signing keys), an RSA private key
    /// (decryption keys).
    pub pem: Option<String>,
    /// RSA modulus, base64url.
    pub n: Option<String>,
    /// RSA exponent, base64url.
    pub e: Option<String>,
    /// A JWK, as an object or JSON text.
    pub jwk: Option<Json>,
}

/// An OpenID Connect discovery document or JWKS URL.
#[derive(Deserialize)]
#[serde(untagged)]
pub enum OpenIdConfig {
    /// Just the URL.
    Url(String),
    /// The URL and how the key set is kept fresh.
    Full(OpenIdFull),
}

/// An `openid_config` entry with options.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenIdFull {
    /// The discovery document (or JWKS) URL.
    pub url: String,
    /// A fixed refresh interval in seconds (default: cache headers).
    pub refresh_seconds: Option<u32>,
    /// Refetch for an unknown `kid` at most this often. Default 30.
    #[serde(default = "default_min_refetch")]
    pub min_refetch_seconds: u32,
    /// How long a request with an unknown `kid` waits. Default 2000.
    #[serde(default = "default_wait_ms")]
    pub unknown_kid_wait_ms: u32,
    /// CA certificates (PEM) for an https:// provider.
    pub ca_pem: Option<String>,
}

/// `all` or `any`.
#[derive(Deserialize, Default, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "lowercase")]
pub enum Match {
    /// Every value must be present.
    #[default]
    All,
    /// One value is enough.
    Any,
}

/// A required claim.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimConfig {
    /// The claim's name.
    pub name: String,
    /// `all` (default) or `any` of `values`.
    #[serde(default, rename = "match")]
    pub match_: Match,
    /// Splits a string claim into values (e.g. `" "` for `scp`).
    pub separator: Option<String>,
    /// The values; empty: the claim must be present.
    #[serde(default)]
    pub values: Vec<String>,
}

/// The config, as written under `validate-jwt:`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The header that carries the token.
    pub header_name: Option<String>,
    /// The scheme the header's value must start with (`Bearer`).
    pub require_scheme: Option<String>,
    /// The query parameter that carries the token.
    pub query_parameter_name: Option<String>,
    /// An expression giving the token.
    pub token_value: Option<String>,
    /// The status of a refusal. Default 401.
    #[serde(default = "default_status")]
    pub failed_validation_httpcode: u16,
    /// Replaces the refusal's detail.
    pub failed_validation_error_message: Option<String>,
    /// Refuse a token without `exp`. Default true.
    #[serde(default = "yes")]
    pub require_expiration_time: bool,
    /// Refuse an unsigned (`alg: none`) token. Default true.
    #[serde(default = "yes")]
    pub require_signed_tokens: bool,
    /// Seconds of tolerance on `exp` and `nbf`.
    #[serde(default)]
    pub clock_skew: u32,
    /// The largest token accepted. Default 8192.
    #[serde(default = "default_max_token_bytes")]
    pub max_token_bytes: usize,
    /// The context variable that receives the claims.
    pub output_token_variable_name: Option<String>,
    /// Keys that verify signatures.
    #[serde(default)]
    pub issuer_signing_keys: Vec<KeyConfig>,
    /// Keys that decrypt encrypted tokens.
    #[serde(default)]
    pub decryption_keys: Vec<KeyConfig>,
    /// OpenID Connect discovery documents or JWKS URLs.
    #[serde(default)]
    pub openid_config: Vec<OpenIdConfig>,
    /// Accepted audiences (`aud`); empty: any.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Accepted issuers (`iss`), besides the discovery documents'.
    #[serde(default)]
    pub issuers: Vec<String>,
    /// Claims that must be present, with values.
    #[serde(default)]
    pub required_claims: Vec<ClaimConfig>,
}

/// Where the token comes from.
enum Source {
    Places {
        header: Option<(String, Option<String>)>,
        query: Option<String>,
    },
    Expression(Expression),
}

struct SigningKey {
    kid: Option<String>,
    key: Key,
}

struct Decrypter {
    kid: Option<String>,
    key: DecryptionKey,
}

/// A verified token, remembered until its `exp`.
struct Cached {
    exp: i64,
    nbf: Option<i64>,
    generation: u64,
    vars: Vec<(String, String)>,
}

/// The cache's hasher: FNV-1a over a token's length and its last 32
/// bytes (the end of its signature), not over the whole kilobyte.
/// Flooding is not a concern: only tokens that passed validation are
/// inserted, so a client cannot fill the map with colliding keys without
/// the signing key; the map is bounded, and a lookup compares the whole
/// token.
#[derive(Default, Clone, Copy)]
struct TailHash(u64);

impl std::hash::Hasher for TailHash {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        let tail = &bytes[bytes.len().saturating_sub(32)..];
        for b in (bytes.len() as u64).to_le_bytes().iter().chain(tail) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

type FnvMap<V> = HashMap<String, V, std::hash::BuildHasherDefault<TailHash>>;

/// The most verified tokens one instance remembers.
const CACHE_ENTRIES: usize = 256;

/// The constructed policy.
pub struct ValidateJwt {
    source: Source,
    status: u16,
    message: Option<String>,
    require_exp: bool,
    require_signed: bool,
    skew: i64,
    max_bytes: usize,
    output: Option<String>,
    keys: Vec<SigningKey>,
    decrypters: Vec<Decrypter>,
    sets: Vec<KeySet>,
    audiences: Vec<String>,
    issuers: Vec<String>,
    claims: Vec<ClaimConfig>,
    cache: RefCell<FnvMap<Cached>>,
}

/// A refusal: its code and detail.
struct Refusal(&'static str, String);

fn refuse<T>(code: &'static str, detail: impl Into<String>) -> Result<T, Refusal> {
    Err(Refusal(code, detail.into()))
}

fn title(code: &str) -> &'static str {
    match code {
        "missing-token" => "No token",
        "ambiguous-token" => "More than one token",
        "wrong-scheme" => "Wrong authorization scheme",
        "token-too-large" => "Token too large",
        "malformed-token" => "Malformed token",
        "alg-none" => "Unsigned token",
        "unsupported-algorithm" => "Unsupported algorithm",
        "unknown-crit" => "Unknown critical header",
        "algorithm-mismatch" => "Algorithm not allowed for the key",
        "unknown-kid" => "Unknown key id",
        "keys-unavailable" => "Signing keys unavailable",
        "invalid-signature" => "Invalid signature",
        "decryption-failed" => "Token cannot be decrypted",
        "unsupported-encryption" => "Unsupported encryption",
        "missing-expiration" => "Token without expiration",
        "expired" => "Token expired",
        "not-yet-valid" => "Token not yet valid",
        "wrong-audience" => "Wrong audience",
        "wrong-issuer" => "Wrong issuer",
        "missing-claim" => "Required claim missing",
        "claim-mismatch" => "Required claim mismatch",
        _ => "Invalid token",
    }
}

/// RFC 6750 §3: `error_description` is printable ASCII without `"` and `\`.
fn header_safe(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '"' => '\'',
            '\\' => '/',
            c if (' '..='~').contains(&c) => c,
            _ => '?',
        })
        .collect()
}

fn b64url(s: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .ok()
}

fn decode_json(part: &str, what: &str) -> Result<serde_json::Map<String, Json>, Refusal> {
    let Some(bytes) = b64url(part) else {
        return refuse(
            "malformed-token",
            format!("the token's {what} is not base64url"),
        );
    };
    match serde_json::from_slice::<Json>(&bytes) {
        Ok(Json::Object(m)) => Ok(m),
        Ok(_) => refuse(
            "malformed-token",
            format!("the token's {what} is not a JSON object"),
        ),
        Err(_) => refuse("malformed-token", format!("the token's {what} is not JSON")),
    }
}

fn percent_decode(s: &str) -> String {
    fn hex(c: u8) -> Option<u8> {
        (c as char).to_digit(16).map(|d| d as u8)
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A claim's values as text: a string (split by `separator`), the items
/// of an array, or a number or boolean.
fn claim_values(v: &Json, separator: Option<&str>) -> Vec<String> {
    let one = |v: &Json| match v {
        Json::String(s) => s.clone(),
        other => other.to_string(),
    };
    match v {
        Json::String(s) => match separator {
            Some(sep) => s
                .split(sep)
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(str::to_string)
                .collect(),
            None => vec![s.clone()],
        },
        Json::Array(items) => items.iter().map(one).collect(),
        Json::Null => Vec::new(),
        other => vec![one(other)],
    }
}

fn numeric_date(
    claims: &serde_json::Map<String, Json>,
    name: &str,
) -> Result<Option<i64>, Refusal> {
    match claims.get(name) {
        None | Some(Json::Null) => Ok(None),
        Some(Json::Number(n)) => match n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)) {
            Some(v) => Ok(Some(v)),
            None => refuse(
                "malformed-token",
                format!("the `{name}` claim is not a number of seconds"),
            ),
        },
        Some(_) => refuse(
            "malformed-token",
            format!("the `{name}` claim is not a number"),
        ),
    }
}

impl ValidateJwt {
    fn key_sets_generation(&self) -> u64 {
        self.sets.iter().fold(0u64, |acc, s| {
            acc.wrapping_mul(31).wrapping_add(s.generation())
        })
    }

    fn now(&self) -> i64 {
        (host::now_millis() / 1000) as i64
    }

    /// The token from the request.
    fn token(&self, req: &Request) -> Result<String, Refusal> {
        match &self.source {
            Source::Expression(e) => match e.evaluate() {
                Ok(Value::Text(t)) if !t.trim().is_empty() => Ok(t.trim().to_string()),
                Ok(Value::Text(_) | Value::Null) => {
                    refuse("missing-token", "the token expression gave no token")
                }
                Ok(other) => refuse(
                    "malformed-token",
                    format!("the token expression gave {other:?}, not text"),
                ),
                Err(e) => refuse(
                    "missing-token",
                    format!("the token expression gave no token: {e}"),
                ),
            },
            Source::Places { header, query } => {
                let mut found = None;
                if let Some((name, scheme)) = header {
                    let values = req.header_all(name);
                    if values.len() > 1 {
                        return refuse(
                            "ambiguous-token",
                            format!("the request has {} `{name}` headers", values.len()),
                        );
                    }
                    if let Some(v) = values.into_iter().next() {
                        let v = v.trim();
                        let token = match scheme {
                            Some(s) => match v.split_once(' ') {
                                Some((given, rest)) if given.eq_ignore_ascii_case(s) => rest.trim(),
                                _ => {
                                    return refuse(
                                        "wrong-scheme",
                                        format!("the `{name}` header does not start with `{s} `"),
                                    )
                                }
                            },
                            None => v,
                        };
                        if token.is_empty() {
                            return refuse(
                                "missing-token",
                                format!("the `{name}` header holds no token"),
                            );
                        }
                        found = Some(token.to_string());
                    }
                }
                if let Some(param) = query {
                    let q = req.query().unwrap_or_default();
                    let mut hits = q
                        .split('&')
                        .filter_map(|kv| {
                            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                            (percent_decode(k) == *param).then(|| percent_decode(v))
                        })
                        .collect::<Vec<_>>();
                    if hits.len() > 1 {
                        return refuse(
                            "ambiguous-token",
                            format!("the query has {} `{param}` parameters", hits.len()),
                        );
                    }
                    if let Some(v) = hits.pop() {
                        if found.is_some() {
                            return refuse(
                                "ambiguous-token",
                                "the request carries a token in a header and in the query (RFC 6750 §2: one method per request)",
                            );
                        }
                        found = Some(v);
                    }
                }
                match found {
                    Some(t) => Ok(t),
                    None => {
                        let mut places = Vec::new();
                        if let Some((h, _)) = header {
                            places.push(format!("the `{h}` header"));
                        }
                        if let Some(q) = query {
                            places.push(format!("the `{q}` query parameter"));
                        }
                        refuse(
                            "missing-token",
                            format!("no token in {}", places.join(" or ")),
                        )
                    }
                }
            }
        }
    }

    /// Decrypts a JWE to the JWS it holds.
    fn decrypt(&self, token: &str) -> Result<String, Refusal> {
        if self.decrypters.is_empty() {
            return refuse(
                "decryption-failed",
                "the token is encrypted (JWE) and no decryption_keys are configured",
            );
        }
        let header_part = token.split('.').next().unwrap_or_default();
        let header = decode_json(header_part, "header")?;
        let kid = header.get("kid").and_then(|v| v.as_str());
        let mut last = String::new();
        for d in self
            .decrypters
            .iter()
            .filter(|d| kid.is_none() || d.kid.is_none() || d.kid.as_deref() == kid)
        {
            match d.key.decrypt(token) {
                Ok(plain) => {
                    return match String::from_utf8(plain) {
                        Ok(s) if s.matches('.').count() == 2 => Ok(s),
                        _ => refuse(
                            "malformed-token",
                            "the encrypted token does not hold a signed JWT",
                        ),
                    };
                }
                Err(e) if e.starts_with("unsupported:") => {
                    return refuse(
                        "unsupported-encryption",
                        e.trim_start_matches("unsupported:").trim().to_string(),
                    )
                }
                Err(e) if e.starts_with("malformed:") => {
                    return refuse(
                        "malformed-token",
                        e.trim_start_matches("malformed:").trim().to_string(),
                    )
                }
                Err(e) => last = e,
            }
        }
        if last.is_empty() {
            last = format!(
                "no decryption key has the token's kid `{}`",
                kid.unwrap_or_default()
            );
        }
        refuse("decryption-failed", last)
    }

    /// Checks the signature of a JWS.
    fn verify_signature(
        &self,
        header: &serde_json::Map<String, Json>,
        signing_input: &str,
        sig_part: &str,
    ) -> Result<(), Refusal> {
        let alg_name = match header.get("alg") {
            Some(Json::String(a)) => a.as_str(),
            _ => return refuse("malformed-token", "the token's header has no `alg`"),
        };
        if alg_name.eq_ignore_ascii_case("none") {
            if self.require_signed {
                return refuse("alg-none", "the token is unsigned (`alg: none`)");
            }
            if !sig_part.is_empty() {
                return refuse("malformed-token", "an unsigned token has a signature");
            }
            return Ok(());
        }
        let Some(alg) = Algorithm::from_name(alg_name) else {
            return refuse(
                "unsupported-algorithm",
                format!("`alg` `{alg_name}` is not supported"),
            );
        };
        let Some(sig) = b64url(sig_part) else {
            return refuse("malformed-token", "the token's signature is not base64url");
        };
        let kid = match header.get("kid") {
            None => None,
            Some(Json::String(k)) => Some(k.as_str()),
            Some(_) => return refuse("malformed-token", "the token's `kid` is not a string"),
        };
        // The worst outcome so far, most telling first.
        let mut worst: Option<VerifyError> = None;
        let rank = |e: VerifyError| match e {
            VerifyError::BadSignature => 4,
            VerifyError::KeyForbidsAlgorithm => 3,
            VerifyError::UnknownKid => 2,
            VerifyError::KeysUnavailable => 1,
        };
        let note = |e: VerifyError, worst: &mut Option<VerifyError>| {
            if worst.is_none_or(|w| rank(e) > rank(w)) {
                *worst = Some(e);
            }
        };
        let input = signing_input.as_bytes();
        let mut tried = 0;
        for k in &self.keys {
            if let (Some(want), Some(has)) = (kid, k.kid.as_deref()) {
                if want != has {
                    continue;
                }
            }
            tried += 1;
            match k.key.verify(alg, input, &sig) {
                Ok(()) => return Ok(()),
                Err(e) => note(e, &mut worst),
            }
        }
        for s in &self.sets {
            tried += 1;
            match s.verify(kid, alg, input, &sig) {
                Ok(()) => return Ok(()),
                Err(e) => note(e, &mut worst),
            }
        }
        match worst {
            _ if tried == 0 => refuse(
                "unknown-kid",
                format!("no key has the token's kid `{}`", kid.unwrap_or_default()),
            ),
            Some(VerifyError::BadSignature) | None => {
                refuse("invalid-signature", format!("the {alg_name} signature does not verify"))
            }
            Some(VerifyError::KeyForbidsAlgorithm) => refuse(
                "algorithm-mismatch",
                format!("no configured key may verify `{alg_name}` (key type, size, or its JWK `alg`/`use`)"),
            ),
            Some(VerifyError::UnknownKid) => refuse(
                "unknown-kid",
                format!("no key has the token's kid `{}`, even after refetching the key set", kid.unwrap_or_default()),
            ),
            Some(VerifyError::KeysUnavailable) => {
                let why = self
                    .sets
                    .iter()
                    .find_map(|s| s.status())
                    .map(|s| format!(": {s}"))
                    .unwrap_or_default();
                refuse("keys-unavailable", format!("the signing keys could not be fetched yet{why}"))
            }
        }
    }

    /// Checks the claims; returns the token's `exp` and `nbf`.
    fn check_claims(
        &self,
        claims: &serde_json::Map<String, Json>,
        now: i64,
    ) -> Result<(Option<i64>, Option<i64>), Refusal> {
        let exp = numeric_date(claims, "exp")?;
        let nbf = numeric_date(claims, "nbf")?;
        match exp {
            None if self.require_exp => {
                return refuse("missing-expiration", "the token has no `exp` claim")
            }
            Some(e) if now > e.saturating_add(self.skew) => {
                return refuse("expired", format!("the token expired {} s ago", now - e))
            }
            _ => {}
        }
        if let Some(n) = nbf {
            if now.saturating_add(self.skew) < n {
                return refuse(
                    "not-yet-valid",
                    format!("the token is valid only in {} s", n - now),
                );
            }
        }
        if !self.audiences.is_empty() {
            let aud = claims
                .get("aud")
                .map(|v| claim_values(v, None))
                .unwrap_or_default();
            if aud.is_empty() {
                return refuse("wrong-audience", "the token has no `aud` claim");
            }
            if !aud.iter().any(|a| self.audiences.contains(a)) {
                return refuse(
                    "wrong-audience",
                    format!("the token's audience `{}` is not accepted", aud.join(", ")),
                );
            }
        }
        let discovered: Vec<String> = self.sets.iter().filter_map(KeySet::issuer).collect();
        if !self.issuers.is_empty() || !discovered.is_empty() {
            let iss = match claims.get("iss") {
                Some(Json::String(s)) => s.as_str(),
                _ => return refuse("wrong-issuer", "the token has no `iss` claim"),
            };
            if !self
                .issuers
                .iter()
                .chain(discovered.iter())
                .any(|i| i == iss)
            {
                return refuse(
                    "wrong-issuer",
                    format!("the token's issuer `{iss}` is not accepted"),
                );
            }
        }
        for c in &self.claims {
            let Some(v) = claims.get(&c.name) else {
                return refuse(
                    "missing-claim",
                    format!("the token has no `{}` claim", c.name),
                );
            };
            if c.values.is_empty() {
                continue;
            }
            let have = claim_values(v, c.separator.as_deref());
            let ok = match c.match_ {
                Match::All => c.values.iter().all(|w| have.contains(w)),
                Match::Any => c.values.iter().any(|w| have.contains(w)),
            };
            if !ok {
                let which = if c.match_ == Match::All { "all" } else { "one" };
                return refuse(
                    "claim-mismatch",
                    format!(
                        "the `{}` claim must have {which} of `{}`",
                        c.name,
                        c.values.join("`, `")
                    ),
                );
            }
        }
        Ok((exp, nbf))
    }

    /// The output variables of a token.
    fn outputs(
        &self,
        payload: &str,
        claims: &serde_json::Map<String, Json>,
    ) -> Vec<(String, String)> {
        let Some(name) = &self.output else {
            return Vec::new();
        };
        let mut out = Vec::with_capacity(claims.len() + 1);
        out.push((name.clone(), payload.to_string()));
        for (k, v) in claims {
            let text = match v {
                Json::String(s) => s.clone(),
                other => other.to_string(),
            };
            out.push((format!("{name}.{k}"), text));
        }
        out
    }

    fn validate(&self, req: &Request) -> Result<(), Refusal> {
        let token = self.token(req)?;
        if token.len() > self.max_bytes {
            return refuse(
                "token-too-large",
                format!(
                    "the token is {} bytes; at most {} are accepted",
                    token.len(),
                    self.max_bytes
                ),
            );
        }
        let now = self.now();
        {
            let mut cache = self.cache.borrow_mut();
            if let Some(c) = cache.get(&token) {
                let fresh = now <= c.exp.saturating_add(self.skew)
                    && c.nbf.is_none_or(|n| now.saturating_add(self.skew) >= n)
                    && (self.sets.is_empty() || c.generation == self.key_sets_generation());
                if fresh {
                    if !c.vars.is_empty() {
                        variables::set_many(&c.vars);
                    }
                    return Ok(());
                }
                cache.remove(&token);
            }
        }
        let jws = match token.matches('.').count() {
            2 => token.clone(),
            4 => self.decrypt(&token)?,
            n => {
                return refuse(
                    "malformed-token",
                    format!(
                        "a JWT has 3 parts (signed) or 5 (encrypted); this one has {}",
                        n + 1
                    ),
                )
            }
        };
        let mut parts = jws.splitn(3, '.');
        let (h, p, s) = (
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
        );
        let header = decode_json(h, "header")?;
        match header.get("crit") {
            None => {}
            Some(Json::Array(c)) if !c.is_empty() => {
                let names: Vec<String> = c
                    .iter()
                    .map(|v| v.as_str().unwrap_or("?").to_string())
                    .collect();
                return refuse(
                    "unknown-crit",
                    format!(
                        "the token's critical header extensions `{}` are not understood",
                        names.join("`, `")
                    ),
                );
            }
            Some(_) => {
                return refuse(
                    "malformed-token",
                    "the token's `crit` must be a non-empty list",
                )
            }
        }
        let signing_input = &jws[..h.len() + 1 + p.len()];
        self.verify_signature(&header, signing_input, s)?;
        let payload_bytes = b64url(p).ok_or(Refusal(
            "malformed-token",
            "the token's payload is not base64url".into(),
        ))?;
        let payload = String::from_utf8(payload_bytes)
            .map_err(|_| Refusal("malformed-token", "the token's payload is not UTF-8".into()))?;
        let claims = match serde_json::from_str::<Json>(&payload) {
            Ok(Json::Object(m)) => m,
            _ => {
                return refuse(
                    "malformed-token",
                    "the token's payload is not a JSON object",
                )
            }
        };
        let (exp, nbf) = self.check_claims(&claims, now)?;
        let vars = self.outputs(&payload, &claims);
        if !vars.is_empty() {
            variables::set_many(&vars);
        }
        if let Some(exp) = exp {
            let mut cache = self.cache.borrow_mut();
            if cache.len() >= CACHE_ENTRIES {
                cache.retain(|_, c| now <= c.exp.saturating_add(self.skew));
                if cache.len() >= CACHE_ENTRIES {
                    cache.clear();
                }
            }
            cache.insert(
                token,
                Cached {
                    exp,
                    nbf,
                    generation: self.key_sets_generation(),
                    vars,
                },
            );
        }
        Ok(())
    }

    fn fault(&self, Refusal(code, detail): Refusal) -> Decision {
        let status = if code == "ambiguous-token" {
            400
        } else {
            self.status
        };
        let detail = self.message.clone().unwrap_or(detail);
        let mut f = Fault::new(
            status,
            format!("policy.validate-jwt.{code}"),
            title(code),
            detail.clone(),
        );
        if status == 401 {
            let v = if code == "missing-token" {
                "Bearer".to_string()
            } else {
                format!(
                    "Bearer error=\"invalid_token\", error_description=\"{}\"",
                    header_safe(&detail)
                )
            };
            f = f.with_header("www-authenticate", v);
        } else if status == 400 {
            f = f.with_header(
                "www-authenticate",
                format!(
                    "Bearer error=\"invalid_request\", error_description=\"{}\"",
                    header_safe(&detail)
                ),
            );
        }
        if host::trace_enabled() {
            host::trace(&format!("refused: {code}"));
        }
        Decision::deny(f)
    }
}

fn build_signing_key(i: usize, k: KeyConfig) -> Result<SigningKey, String> {
    let at = format!("issuer_signing_keys[{i}]");
    let set = [
        k.base64.is_some(),
        k.pem.is_some(),
        k.n.is_some() || k.e.is_some(),
        k.jwk.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if set != 1 {
        return Err(format!(
            "{at}: give exactly one of `base64`, `pem`, `n` and `e`, `jwk`"
        ));
    }
    let key = if let Some(b) = &k.base64 {
        Key::from_base64(b)
    } else if let Some(p) = &k.pem {
        Key::from_pem(p)
    } else if let Some(j) = &k.jwk {
        Key::from_jwk(&jwk_text(j))
    } else {
        match (&k.n, &k.e) {
            (Some(n), Some(e)) => Key::from_rsa_components(n, e),
            _ => return Err(format!("{at}: an RSA key needs both `n` and `e`")),
        }
    }
    .map_err(|e| format!("{at}: {e}"))?;
    let kid = k.id.or_else(|| key.kid());
    Ok(SigningKey { kid, key })
}

fn jwk_text(j: &Json) -> String {
    match j {
        Json::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn build_decrypter(i: usize, k: KeyConfig) -> Result<Decrypter, String> {
    let at = format!("decryption_keys[{i}]");
    if k.n.is_some() || k.e.is_some() {
        return Err(format!(
            "{at}: give an RSA decryption key as `pem` (its private key)"
        ));
    }
    let set = [k.base64.is_some(), k.pem.is_some(), k.jwk.is_some()]
        .iter()
        .filter(|b| **b)
        .count();
    if set != 1 {
        return Err(format!("{at}: give exactly one of `base64`, `pem`, `jwk`"));
    }
    let key = if let Some(b) = &k.base64 {
        DecryptionKey::from_base64(b)
    } else if let Some(p) = &k.pem {
        DecryptionKey::from_pem(p)
    } else {
        let text = k.jwk.as_ref().map(jwk_text).unwrap_or_default();
        let kid = serde_json::from_str::<Json>(&text)
            .ok()
            .and_then(|v| v.get("kid").and_then(|x| x.as_str()).map(str::to_string));
        return DecryptionKey::from_jwk(&text)
            .map(|key| Decrypter {
                kid: k.id.clone().or(kid),
                key,
            })
            .map_err(|e| format!("{at}: {e}"));
    }
    .map_err(|e| format!("{at}: {e}"))?;
    Ok(Decrypter { kid: k.id, key })
}

impl Policy for ValidateJwt {
    type Config = Config;

    fn new(c: Config) -> Result<Self, String> {
        let source = match (&c.header_name, &c.query_parameter_name, &c.token_value) {
            (_, _, Some(expr)) => {
                if c.header_name.is_some() || c.query_parameter_name.is_some() {
                    return Err("token_value: cannot be combined with `header_name` or `query_parameter_name`".into());
                }
                if c.require_scheme.is_some() {
                    return Err("require_scheme: applies to `header_name` only".into());
                }
                Source::Expression(
                    Expression::compile(expr).map_err(|e| format!("token_value: {e}"))?,
                )
            }
            (None, None, None) => return Err(
                "give where the token is: `header_name`, `query_parameter_name` or `token_value`"
                    .into(),
            ),
            (h, q, None) => {
                if h.is_none() && c.require_scheme.is_some() {
                    return Err("require_scheme: applies to `header_name` only".into());
                }
                if let Some(h) = h {
                    if !gatehouse_sdk::is_valid_header_name(h) {
                        return Err(format!("header_name: `{h}` is not a valid header name"));
                    }
                }
                if q.as_deref().is_some_and(str::is_empty) {
                    return Err("query_parameter_name: must not be empty".into());
                }
                if let Some(s) = &c.require_scheme {
                    if s.is_empty() || s.contains(' ') {
                        return Err(format!("require_scheme: `{s}` is not a scheme name"));
                    }
                }
                Source::Places {
                    header: h
                        .clone()
                        .map(|h| (h.to_ascii_lowercase(), c.require_scheme.clone())),
                    query: q.clone(),
                }
            }
        };
        if !(400..=599).contains(&c.failed_validation_httpcode) {
            return Err(format!(
                "failed_validation_httpcode: {} is not an error status (400..=599)",
                c.failed_validation_httpcode
            ));
        }
        if !(64..=1 << 20).contains(&c.max_token_bytes) {
            return Err(format!(
                "max_token_bytes: {} is outside 64..=1048576",
                c.max_token_bytes
            ));
        }
        if c.clock_skew > 86_400 {
            return Err(format!("clock_skew: {} s is more than a day", c.clock_skew));
        }
        if let Some(v) = &c.output_token_variable_name {
            if v.is_empty() {
                return Err("output_token_variable_name: must not be empty".into());
            }
        }
        for (i, r) in c.required_claims.iter().enumerate() {
            if r.name.is_empty() {
                return Err(format!("required_claims[{i}].name: must not be empty"));
            }
            if r.separator.as_deref() == Some("") {
                return Err(format!("required_claims[{i}].separator: must not be empty"));
            }
        }
        let keys = c
            .issuer_signing_keys
            .into_iter()
            .enumerate()
            .map(|(i, k)| build_signing_key(i, k))
            .collect::<Result<Vec<_>, _>>()?;
        let decrypters = c
            .decryption_keys
            .into_iter()
            .enumerate()
            .map(|(i, k)| build_decrypter(i, k))
            .collect::<Result<Vec<_>, _>>()?;
        let mut sets = Vec::new();
        for (i, o) in c.openid_config.into_iter().enumerate() {
            let full = match o {
                OpenIdConfig::Url(url) => OpenIdFull {
                    url,
                    refresh_seconds: None,
                    min_refetch_seconds: default_min_refetch(),
                    unknown_kid_wait_ms: default_wait_ms(),
                    ca_pem: None,
                },
                OpenIdConfig::Full(f) => f,
            };
            if full.unknown_kid_wait_ms > 30_000 {
                return Err(format!(
                    "openid_config[{i}].unknown_kid_wait_ms: at most 30000"
                ));
            }
            if full.refresh_seconds == Some(0) {
                return Err(format!(
                    "openid_config[{i}].refresh_seconds: must be at least 1"
                ));
            }
            let options = KeySetOptions {
                refresh_seconds: full.refresh_seconds,
                min_refetch_seconds: full.min_refetch_seconds,
                unknown_kid_wait_ms: full.unknown_kid_wait_ms,
                ca_pem: full.ca_pem,
            };
            sets.push(
                KeySet::open(&full.url, &options)
                    .map_err(|e| format!("openid_config[{i}].url: {e}"))?,
            );
        }
        if c.require_signed_tokens && keys.is_empty() && sets.is_empty() {
            return Err(
                "give the keys that sign tokens: `issuer_signing_keys` or `openid_config`".into(),
            );
        }
        if !c.require_signed_tokens {
            host::log(
                host::LogLevel::Warn,
                "require_signed_tokens is false: unsigned (`alg: none`) tokens are accepted",
            );
        }
        Ok(ValidateJwt {
            source,
            status: c.failed_validation_httpcode,
            message: c.failed_validation_error_message,
            require_exp: c.require_expiration_time,
            require_signed: c.require_signed_tokens,
            skew: i64::from(c.clock_skew),
            max_bytes: c.max_token_bytes,
            output: c.output_token_variable_name,
            keys,
            decrypters,
            sets,
            audiences: c.audiences,
            issuers: c.issuers,
            claims: c.required_claims,
            cache: RefCell::new(FnvMap::default()),
        })
    }

    fn on_request(&self, req: &Request, _conn: &Connection) -> Decision {
        match self.validate(req) {
            Ok(()) => Decision::proceed(),
            Err(r) => self.fault(r),
        }
    }
}

export_policy!(ValidateJwt);

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_sdk::testkit::{self, TestRequest};

    fn b64(s: &[u8]) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
    }

    /// A token the test doubles accept.
    fn token(header: &str, claims: &str) -> String {
        let input = format!("{}.{}", b64(header.as_bytes()), b64(claims.as_bytes()));
        let sig = testkit::fake_signature(input.as_bytes());
        format!("{input}.{}", b64(&sig))
    }

    fn policy(extra: &str) -> ValidateJwt {
        testkit::build(&format!(
            r#"{{"header_name": "Authorization", "require_scheme": "Bearer",
                "issuer_signing_keys": [{{"base64": "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI="}}] {extra} }}"#
        ))
        .unwrap()
    }

    fn code(d: &Decision) -> Option<String> {
        match d {
            Decision::Deny(f) => Some(
                f.code
                    .trim_start_matches("policy.validate-jwt.")
                    .to_string(),
            ),
            _ => None,
        }
    }

    fn call(p: &ValidateJwt, tok: &str) -> Decision {
        testkit::on_request(
            p,
            &TestRequest::get("/").header("authorization", &format!("Bearer {tok}")),
        )
    }

    const NOW: i64 = 1_700_000_000;

    #[test]
    fn times_are_checked_with_the_skew() {
        testkit::reset();
        let p = policy(r#", "clock_skew": 30"#);
        let h = r#"{"alg":"HS256"}"#;
        assert_eq!(
            code(&call(&p, &token(h, &format!(r#"{{"exp":{}}}"#, NOW + 10)))),
            None
        );
        assert_eq!(
            code(&call(&p, &token(h, &format!(r#"{{"exp":{}}}"#, NOW - 20)))),
            None,
            "within skew"
        );
        assert_eq!(
            code(&call(&p, &token(h, &format!(r#"{{"exp":{}}}"#, NOW - 40)))).as_deref(),
            Some("expired")
        );
        assert_eq!(
            code(&call(
                &p,
                &token(h, &format!(r#"{{"exp":{},"nbf":{}}}"#, NOW + 100, NOW + 60))
            ))
            .as_deref(),
            Some("not-yet-valid")
        );
        assert_eq!(
            code(&call(&p, &token(h, "{}"))).as_deref(),
            Some("missing-expiration")
        );
    }

    #[test]
    fn headers_and_algorithms() {
        testkit::reset();
        let p = policy("");
        let c = format!(r#"{{"exp":{}}}"#, NOW + 10);
        assert_eq!(
            code(&call(&p, &token(r#"{"alg":"none"}"#, &c))).as_deref(),
            Some("alg-none")
        );
        assert_eq!(
            code(&call(&p, &token(r#"{"alg":"HS999"}"#, &c))).as_deref(),
            Some("unsupported-algorithm")
        );
        assert_eq!(
            code(&call(&p, &token(r#"{"alg":"RS256"}"#, &c))).as_deref(),
            Some("algorithm-mismatch")
        );
        assert_eq!(
            code(&call(&p, &token(r#"{"alg":"HS256","crit":["exp"]}"#, &c))).as_deref(),
            Some("unknown-crit")
        );
        assert_eq!(code(&call(&p, "a.b")).as_deref(), Some("malformed-token"));
        assert_eq!(
            code(&call(&p, "!!.e30.xx")).as_deref(),
            Some("malformed-token")
        );
        let good = token(r#"{"alg":"HS256"}"#, &c);
        let other = token(r#"{"alg":"HS256"}"#, &format!(r#"{{"exp":{}}}"#, NOW + 11));
        let sig = good.rsplit('.').next().unwrap();
        let bad = format!("{}.{sig}", other.rsplit_once('.').unwrap().0);
        assert_eq!(code(&call(&p, &bad)).as_deref(), Some("invalid-signature"));
    }

    #[test]
    fn claims_audiences_issuers() {
        testkit::reset();
        let p = policy(
            r#", "audiences": ["api"], "issuers": ["me"],
               "required_claims": [{"name": "scp", "match": "any", "separator": " ", "values": ["read", "write"]},
                                   {"name": "roles", "values": ["a", "b"]}]"#,
        );
        let h = r#"{"alg":"HS256"}"#;
        let t = |c: &str| token(h, &format!(r#"{{"exp":{}, {c}}}"#, NOW + 10));
        assert_eq!(
            code(&call(
                &p,
                &t(r#""aud":["x","api"],"iss":"me","scp":"x write","roles":["b","a"]"#)
            )),
            None
        );
        assert_eq!(
            code(&call(
                &p,
                &t(r#""aud":"x","iss":"me","scp":"read","roles":["a","b"]"#)
            ))
            .as_deref(),
            Some("wrong-audience")
        );
        assert_eq!(
            code(&call(
                &p,
                &t(r#""aud":"api","iss":"you","scp":"read","roles":["a","b"]"#)
            ))
            .as_deref(),
            Some("wrong-issuer")
        );
        assert_eq!(
            code(&call(&p, &t(r#""aud":"api","iss":"me","roles":["a","b"]"#))).as_deref(),
            Some("missing-claim")
        );
        assert_eq!(
            code(&call(
                &p,
                &t(r#""aud":"api","iss":"me","scp":"admin","roles":["a","b"]"#)
            ))
            .as_deref(),
            Some("claim-mismatch")
        );
        assert_eq!(
            code(&call(
                &p,
                &t(r#""aud":"api","iss":"me","scp":"read","roles":["a"]"#)
            ))
            .as_deref(),
            Some("claim-mismatch")
        );
    }

    #[test]
    fn sources_and_the_www_authenticate_header() {
        testkit::reset();
        let p = policy(r#", "query_parameter_name": "access_token""#);
        let d = testkit::on_request(&p, &TestRequest::get("/"));
        let Decision::Deny(f) = &d else { panic!() };
        assert_eq!(f.status, 401);
        assert_eq!(f.headers[0].value, "Bearer");
        let tok = token(r#"{"alg":"HS256"}"#, &format!(r#"{{"exp":{}}}"#, NOW + 10));
        let r = TestRequest::get("/")
            .header("authorization", &format!("Bearer {tok}"))
            .query(&format!("access_token={tok}"));
        let d = testkit::on_request(&p, &r);
        assert_eq!(code(&d).as_deref(), Some("ambiguous-token"));
        let Decision::Deny(f) = &d else { panic!() };
        assert_eq!(f.status, 400);
        let r = TestRequest::get("/").query(&format!("access_token={tok}"));
        assert_eq!(code(&testkit::on_request(&p, &r)), None);
        let r = TestRequest::get("/").header("authorization", &format!("Basic {tok}"));
        assert_eq!(
            code(&testkit::on_request(&p, &r)).as_deref(),
            Some("wrong-scheme")
        );
        assert_eq!(header_safe("a \"b\" \\ é"), "a 'b' / ?");
    }

    #[test]
    fn config_errors_name_the_key() {
        let e = testkit::build::<ValidateJwt>(r#"{"header_name": "authorization"}"#)
            .err()
            .unwrap();
        assert!(e.contains("issuer_signing_keys"), "{e}");
        let e = testkit::build::<ValidateJwt>(r#"{"issuer_signing_keys": [{"base64": "x"}]}"#)
            .err()
            .unwrap();
        assert!(e.contains("header_name"), "{e}");
        let e = testkit::build::<ValidateJwt>(
            r#"{"header_name": "a", "issuer_signing_keys": [{"base64": "x", "pem": "y"}]}"#,
        )
        .err()
        .unwrap();
        assert!(e.starts_with("issuer_signing_keys[0]:"), "{e}");
        let e = testkit::build::<ValidateJwt>(
            r#"{"header_name": "a", "failed_validation_httpcode": 200, "issuer_signing_keys": [{"base64": "x"}]}"#,
        )
        .err()
        .unwrap();
        assert!(e.starts_with("failed_validation_httpcode"), "{e}");
    }
}
