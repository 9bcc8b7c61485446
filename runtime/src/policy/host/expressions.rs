//! `expressions`: CEL, compiled once per policy instance and evaluated per
//! request against the exchange in the store.
//!
//! The variables an expression can read (see `docs/EXPRESSIONS.md`):
//!
//! | variable | fields |
//! |---|---|
//! | `request` | `method`, `scheme`, `host`, `path`, `query`, `headers` (map, lower-case names, repeated values joined by `, `), `ip`, `id` |
//! | `connection` | `client_ip`, `client_port`, `sni`, `alpn`, `tls_version` |
//! | `client_cert` | `null`, or `subject`, `issuer`, `common_name`, `serial`, `thumbprint_sha1`, `thumbprint_sha256`, `not_before`, `not_after`, `dns_names`, `uris`, `ip_addresses`, `emails`, `verified`, `verify_error`, `issuer_thumbprint_sha1`, `issuer_thumbprint_sha256` |
//! | `response` | `status`, `headers` (outbound, on-error and completion) |
//! | `vars` | context variables, map of strings |
//! | `route` | `api`, `operation`, `params` (map) |
//!
//! Only the variables an expression mentions are built for it.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use cel::{Context, Env, Program, Value as Cel};
use http::HeaderMap;
use wasmtime::component::Resource;

use super::{Exchange, ExpressionHandle, HostState};
use crate::policy::bindings::gatehouse::policy::expressions::{Host, HostExpression, Value};

/// A compiled expression and the variables it reads.
pub struct Compiled {
    program: Program,
    source: String,
    uses: Uses,
    /// A single field read, answered without building a CEL context.
    direct: Option<Direct>,
}

/// The expressions that only read one value (`connection.client_ip`,
/// `request.headers['x-api-key']`, `vars['jwt.sub']`): the most common
/// counter keys and header values. They are answered from the exchange
/// directly; when the value is absent, the full CEL evaluation runs and
/// gives its own error, so the result is always CEL's.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Direct {
    ClientIp,
    Method,
    Path,
    Header(String),
    Var(String),
    RouteApi,
}

impl Direct {
    fn parse(source: &str) -> Option<Direct> {
        let s = source.trim();
        match s {
            "connection.client_ip" | "request.ip" => return Some(Direct::ClientIp),
            "request.method" => return Some(Direct::Method),
            "request.path" => return Some(Direct::Path),
            "route.api" => return Some(Direct::RouteApi),
            _ => {}
        }
        let (base, key) = if let Some(rest) = s.strip_suffix(']') {
            let (base, quoted) = rest.split_once('[')?;
            let key = quoted
                .strip_prefix('\'')
                .and_then(|q| q.strip_suffix('\''))
                .or_else(|| quoted.strip_prefix('"').and_then(|q| q.strip_suffix('"')))?;
            (base, key)
        } else {
            let (base, key) = s.rsplit_once('.')?;
            if !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                || key.starts_with(|c: char| c.is_ascii_digit())
            {
                return None;
            }
            (base, key)
        };
        if key.is_empty() || key.contains(['\\', '\'', '"']) {
            return None;
        }
        match base.trim() {
            // Header names in the map are lower case: another spelling is
            // absent, and CEL says so.
            "request.headers" if !key.bytes().any(|b| b.is_ascii_uppercase()) => {
                Some(Direct::Header(key.to_string()))
            }
            "vars" => Some(Direct::Var(key.to_string())),
            _ => None,
        }
    }

    /// The value, or `None` when absent (CEL then evaluates and errs).
    fn get(&self, ex: &Exchange) -> Option<Cel> {
        Some(match self {
            Direct::ClientIp => ex.conn.client.ip().to_string().into(),
            Direct::Method => ex.request.method.as_str().into(),
            Direct::Path => ex.request.uri.path().into(),
            Direct::RouteApi => (*ex.route.api).into(),
            Direct::Var(k) => ex.vars.get(k)?.as_str().into(),
            Direct::Header(k) => {
                let mut values = ex.request.headers.get_all(k.as_str()).iter();
                let first = values.next()?;
                let mut v = String::from_utf8_lossy(first.as_bytes()).into_owned();
                for more in values {
                    v.push_str(", ");
                    v.push_str(&String::from_utf8_lossy(more.as_bytes()));
                }
                v.into()
            }
        })
    }
}

#[derive(Default, Clone, Copy)]
struct Uses {
    request: bool,
    connection: bool,
    client_cert: bool,
    /// The `client_cert` fields the expression selects (bit `i`: field `i`
    /// of [`CLIENT_CERT_FIELDS`]), or every bit when it uses the map as a
    /// whole: only those are built per evaluation.
    client_cert_fields: u32,
    response: bool,
    vars: bool,
    route: bool,
}

fn env() -> &'static Arc<Env> {
    static ENV: OnceLock<Arc<Env>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Env::stdlib();
        // The strings extension (lowerAscii, replace, split, ...) is part of
        // the documented language; if it ever failed to register, the
        // standard library alone still works.
        let _ = env.add_extension(cel::extensions::strings);
        Arc::new(env)
    })
}

/// Compiles a CEL expression.
///
/// # Errors
///
/// The parser's message, with line and column.
pub fn compile(source: &str) -> Result<Compiled, String> {
    use crate::policy::limits::{MAX_COMPREHENSIONS, MAX_EXPRESSION_SOURCE};
    if source.trim().is_empty() {
        return Err("the expression is empty".into());
    }
    if source.len() > MAX_EXPRESSION_SOURCE {
        return Err(format!(
            "the expression is {} bytes; at most {MAX_EXPRESSION_SOURCE}",
            source.len()
        ));
    }
    // Comprehensions multiply the work of what they contain; bound how many
    // one expression may have (counted in the source, so a macro name in a
    // string literal counts too: the bound errs on the safe side).
    let comprehensions = [".all(", ".exists(", ".exists_one(", ".map(", ".filter("]
        .iter()
        .map(|m| source.matches(m).count())
        .sum::<usize>();
    if comprehensions > MAX_COMPREHENSIONS {
        return Err(format!(
            "the expression has {comprehensions} comprehensions (all, exists, exists_one, map, filter); at most {MAX_COMPREHENSIONS}"
        ));
    }
    let program = env().compile(source).map_err(|e| e.to_string())?;
    check_names(program.expression(), &mut Vec::new())?;
    let refs = program.references();
    let uses = Uses {
        request: refs.has_variable("request"),
        connection: refs.has_variable("connection"),
        client_cert: refs.has_variable("client_cert"),
        client_cert_fields: if refs.has_variable("client_cert") {
            let mut fields = 0;
            selected_fields(
                program.expression(),
                "client_cert",
                &CLIENT_CERT_FIELDS,
                &mut fields,
            );
            fields
        } else {
            0
        },
        response: refs.has_variable("response"),
        vars: refs.has_variable("vars"),
        route: refs.has_variable("route"),
    };
    Ok(Compiled {
        program,
        direct: Direct::parse(source),
        source: source.to_string(),
        uses,
    })
}

/// The variables an expression may read, and their fields (`None`: a map
/// with keys of the user's choosing).
const VARIABLES: [(&str, Option<&[&str]>); 6] = [
    (
        "request",
        Some(&[
            "method", "scheme", "host", "path", "query", "headers", "ip", "id",
        ]),
    ),
    (
        "connection",
        Some(&["client_ip", "client_port", "sni", "alpn", "tls_version"]),
    ),
    ("client_cert", Some(&CLIENT_CERT_FIELDS)),
    ("response", Some(&["status", "headers"])),
    ("vars", None),
    ("route", Some(&["api", "operation", "params"])),
];

/// The fields of `client_cert`, in the order of [`Uses::client_cert_fields`]'s
/// bits.
const CLIENT_CERT_FIELDS: [&str; 16] = [
    "subject",
    "issuer",
    "common_name",
    "serial",
    "thumbprint_sha1",
    "thumbprint_sha256",
    "not_before",
    "not_after",
    "dns_names",
    "uris",
    "ip_addresses",
    "emails",
    "verified",
    "verify_error",
    "issuer_thumbprint_sha1",
    "issuer_thumbprint_sha256",
];

/// Sets in `bits` the fields of `root` that `e` selects (`root.field`, or
/// `has(root.field)`); every bit when `e` uses `root` otherwise (as a
/// whole: `root == null`, `root["subject"]`, `size(root)`), so that the
/// map built for it is complete whenever it could be observed as a whole.
fn selected_fields(e: &cel::IdedExpr, root: &str, fields: &[&str], bits: &mut u32) {
    use cel::common::ast::{EntryExpr, Expr};
    let mut walk = |x: &cel::IdedExpr| selected_fields(x, root, fields, bits);
    match &e.expr {
        Expr::Ident(name) if name == root => *bits = u32::MAX,
        Expr::Select(sel) => match &sel.operand.expr {
            Expr::Ident(name) if name == root => {
                match fields.iter().position(|f| *f == sel.field) {
                    Some(i) => *bits |= 1 << i,
                    None => *bits = u32::MAX,
                }
            }
            _ => walk(&sel.operand),
        },
        Expr::Call(call) => {
            if let Some(t) = &call.target {
                walk(t);
            }
            call.args.iter().for_each(walk);
        }
        Expr::Comprehension(c) => {
            for x in [
                &c.iter_range,
                &c.accu_init,
                &c.loop_cond,
                &c.loop_step,
                &c.result,
            ] {
                walk(x);
            }
        }
        Expr::List(l) => l.elements.iter().for_each(walk),
        Expr::Map(m) => m.entries.iter().for_each(|entry| match &entry.expr {
            EntryExpr::MapEntry(me) => {
                walk(&me.key);
                walk(&me.value);
            }
            EntryExpr::StructField(f) => walk(&f.value),
        }),
        Expr::Struct(st) => st.entries.iter().for_each(|entry| match &entry.expr {
            EntryExpr::MapEntry(me) => walk(&me.value),
            EntryExpr::StructField(f) => walk(&f.value),
        }),
        Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => {}
    }
}

/// Names CEL itself gives meaning to: type names (`type(x) == string`).
const CEL_NAMES: [&str; 12] = [
    "bool",
    "bytes",
    "double",
    "duration",
    "dyn",
    "int",
    "list",
    "map",
    "null_type",
    "string",
    "timestamp",
    "uint",
];

/// Checks, once at compile time, that every name an expression reads
/// exists: a variable of [`VARIABLES`] (or one a comprehension binds), and
/// a field the variable has. A typo would otherwise load fine and fail
/// every request.
fn check_names(e: &cel::IdedExpr, bound: &mut Vec<String>) -> Result<(), String> {
    use cel::common::ast::{EntryExpr, Expr};
    match &e.expr {
        Expr::Ident(name) => {
            if bound.iter().any(|b| b == name)
                || VARIABLES.iter().any(|(v, _)| v == name)
                || CEL_NAMES.contains(&name.as_str())
            {
                return Ok(());
            }
            let names: Vec<&str> = VARIABLES.iter().map(|(v, _)| *v).collect();
            Err(format!(
                "unknown variable `{name}`{}; the variables are {}",
                crate::config::did_you_mean(name, names.iter().copied()),
                names.join(", ")
            ))
        }
        Expr::Select(sel) => {
            if let Expr::Ident(root) = &sel.operand.expr {
                if !bound.iter().any(|b| b == root) {
                    if let Some((_, Some(fields))) = VARIABLES.iter().find(|(v, _)| v == root) {
                        if !fields.contains(&sel.field.as_str()) {
                            return Err(format!(
                                "`{root}` has no field `{}`{}; its fields are {}",
                                sel.field,
                                crate::config::did_you_mean(&sel.field, fields.iter().copied()),
                                fields.join(", ")
                            ));
                        }
                    }
                }
            }
            check_names(&sel.operand, bound)
        }
        Expr::Call(call) => {
            if let Some(t) = &call.target {
                check_names(t, bound)?;
            }
            call.args.iter().try_for_each(|a| check_names(a, bound))
        }
        Expr::Comprehension(c) => {
            check_names(&c.iter_range, bound)?;
            check_names(&c.accu_init, bound)?;
            let before = bound.len();
            bound.push(c.iter_var.clone());
            if let Some(v) = &c.iter_var2 {
                bound.push(v.clone());
            }
            bound.push(c.accu_var.clone());
            let r = check_names(&c.loop_cond, bound)
                .and_then(|()| check_names(&c.loop_step, bound))
                .and_then(|()| check_names(&c.result, bound));
            bound.truncate(before);
            r
        }
        Expr::List(l) => l.elements.iter().try_for_each(|x| check_names(x, bound)),
        Expr::Map(m) => m.entries.iter().try_for_each(|entry| match &entry.expr {
            EntryExpr::MapEntry(me) => {
                check_names(&me.key, bound)?;
                check_names(&me.value, bound)
            }
            EntryExpr::StructField(f) => check_names(&f.value, bound),
        }),
        Expr::Struct(st) => st.entries.iter().try_for_each(|entry| match &entry.expr {
            EntryExpr::MapEntry(me) => check_names(&me.value, bound),
            EntryExpr::StructField(f) => check_names(&f.value, bound),
        }),
        Expr::Literal(_) | Expr::Unspecified => Ok(()),
    }
}

impl Compiled {
    /// Whether the expression reads `client_cert`.
    pub fn reads_client_cert(&self) -> bool {
        self.uses.client_cert
    }
}

fn headers_map(h: &HeaderMap) -> Cel {
    let mut m: HashMap<String, String> = HashMap::with_capacity(h.keys_len());
    for (name, value) in h {
        let v = String::from_utf8_lossy(value.as_bytes());
        m.entry(name.as_str().to_string())
            .and_modify(|e| {
                e.push_str(", ");
                e.push_str(&v);
            })
            .or_insert_with(|| v.into_owned());
    }
    m.into()
}

fn opt(s: Option<&str>) -> Cel {
    s.map(Cel::from).unwrap_or(Cel::Null)
}

/// Evaluates `c` against an exchange.
///
/// # Errors
///
/// CEL's message (an absent key, a type mismatch, ...).
pub fn evaluate(c: &Compiled, ex: &Exchange) -> Result<Cel, String> {
    if let Some(v) = c.direct.as_ref().and_then(|d| d.get(ex)) {
        return Ok(v);
    }
    let mut ctx = Context::with_env(env().clone());
    if c.uses.request {
        let r = &ex.request;
        let mut m: HashMap<&str, Cel> = HashMap::with_capacity(8);
        m.insert("method", r.method.as_str().into());
        m.insert("scheme", ex.conn.scheme().into());
        m.insert("host", crate::exchange::authority(r).into());
        m.insert("path", r.uri.path().into());
        m.insert("query", r.uri.query().unwrap_or("").into());
        m.insert("headers", headers_map(&r.headers));
        m.insert("ip", ex.conn.client.ip().to_string().into());
        m.insert("id", ex.request_id.as_str().into());
        ctx.add_variable_from_value("request", m);
    }
    if c.uses.connection {
        let t = ex.conn.tls.as_ref();
        let mut m: HashMap<&str, Cel> = HashMap::with_capacity(5);
        m.insert("client_ip", ex.conn.client.ip().to_string().into());
        m.insert("client_port", Cel::Int(i64::from(ex.conn.client.port())));
        m.insert("sni", opt(t.and_then(|t| t.sni.as_deref())));
        m.insert("alpn", opt(t.and_then(|t| t.alpn.as_deref())));
        m.insert("tls_version", opt(t.map(|t| t.version)));
        ctx.add_variable_from_value("connection", m);
    }
    if c.uses.client_cert {
        let tls = ex.conn.tls.as_ref();
        let cert = tls.and_then(|t| t.client_cert());
        let v = match cert {
            None => Cel::Null,
            Some(cert) => {
                let bits = c.uses.client_cert_fields;
                let want = |name: &str| {
                    CLIENT_CERT_FIELDS
                        .iter()
                        .position(|f| *f == name)
                        .is_some_and(|i| bits & (1 << i) != 0)
                };
                let mut m: HashMap<&str, Cel> =
                    HashMap::with_capacity(bits.count_ones().min(16) as usize);
                let mut put = |name: &'static str, value: &dyn Fn() -> Cel| {
                    if want(name) {
                        m.insert(name, value());
                    }
                };
                put("subject", &|| cert.subject.as_str().into());
                put("issuer", &|| cert.issuer.as_str().into());
                put("common_name", &|| opt(cert.common_name.as_deref()));
                put("serial", &|| cert.serial.as_str().into());
                put("thumbprint_sha1", &|| cert.thumbprint_sha1.as_str().into());
                put("thumbprint_sha256", &|| {
                    cert.thumbprint_sha256.as_str().into()
                });
                put("not_before", &|| Cel::Int(cert.not_before));
                put("not_after", &|| Cel::Int(cert.not_after));
                put("dns_names", &|| cert.dns_names.clone().into());
                put("uris", &|| cert.uris.clone().into());
                put("ip_addresses", &|| cert.ip_addresses.clone().into());
                put("emails", &|| cert.emails.clone().into());
                put("verified", &|| Cel::Bool(cert.verified));
                put("verify_error", &|| opt(cert.verify_error.as_deref()));
                // The verified path is worked out (once per connection)
                // only for expressions that read it.
                put("issuer_thumbprint_sha1", &|| {
                    opt(tls
                        .and_then(|t| t.verified_issuer())
                        .map(|i| i.sha1.as_str()))
                });
                put("issuer_thumbprint_sha256", &|| {
                    opt(tls
                        .and_then(|t| t.verified_issuer())
                        .map(|i| i.sha256.as_str()))
                });
                m.into()
            }
        };
        ctx.add_variable_from_value("client_cert", v);
    }
    if c.uses.response {
        let v = match &ex.response {
            None => Cel::Null,
            Some(r) => {
                let mut m: HashMap<&str, Cel> = HashMap::with_capacity(2);
                m.insert("status", Cel::Int(i64::from(r.status.as_u16())));
                m.insert("headers", headers_map(&r.headers));
                m.into()
            }
        };
        ctx.add_variable_from_value("response", v);
    }
    if c.uses.vars {
        let m: HashMap<String, String> = ex
            .vars
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        ctx.add_variable_from_value("vars", m);
    }
    if c.uses.route {
        let mut m: HashMap<&str, Cel> = HashMap::with_capacity(3);
        m.insert("api", (*ex.route.api).into());
        m.insert("operation", opt(ex.route.operation.as_deref()));
        let params: HashMap<String, String> = ex
            .route
            .params
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        m.insert("params", params.into());
        ctx.add_variable_from_value("route", m);
    }
    c.program.execute(&ctx).map_err(|e| e.to_string())
}

/// Converts a CEL value to the WIT `value`.
pub fn to_wit(v: Cel) -> Value {
    match v {
        Cel::Null => Value::Null,
        Cel::Bool(b) => Value::Boolean(b),
        Cel::Int(i) => Value::Integer(i),
        Cel::UInt(u) => Value::Unsigned(u),
        Cel::Float(f) => Value::Float(f),
        Cel::String(s) => Value::Text(s.to_string()),
        Cel::Bytes(b) => Value::Bytes(b.to_vec()),
        other => match other.json() {
            Ok(j) => Value::Json(j.to_string()),
            Err(_) => Value::Text(format!("{other:?}")),
        },
    }
}

impl Host for HostState {}

impl HostExpression for HostState {
    fn compile(&mut self, source: String) -> Result<Resource<ExpressionHandle>, String> {
        use crate::policy::limits::MAX_EXPRESSIONS;
        let live = self.expressions.iter().filter(|e| e.is_some()).count();
        if live >= MAX_EXPRESSIONS {
            self.over(|| format!("more than {MAX_EXPRESSIONS} compiled expressions"));
            return Err(format!(
                "at most {MAX_EXPRESSIONS} expressions may be compiled at once"
            ));
        }
        let compiled = Some(Arc::new(compile(&source)?));
        // Reuse a dropped slot, so compiling in a hook does not grow the
        // table for the instance's whole life.
        let index = match self.expressions.iter().position(Option::is_none) {
            Some(i) => {
                self.expressions[i] = compiled;
                i
            }
            None => {
                self.expressions.push(compiled);
                self.expressions.len() - 1
            }
        };
        Ok(Resource::new_own(index as u32))
    }

    fn evaluate(
        &mut self,
        this: Resource<ExpressionHandle>,
    ) -> wasmtime::Result<Result<Value, String>> {
        let Some(Some(c)) = self.expressions.get(this.rep() as usize) else {
            return Ok(Err("unknown expression handle".into()));
        };
        let Some(ex) = self.exchange.as_deref() else {
            return Ok(Err(
                "expressions can only be evaluated while handling a request".into(),
            ));
        };
        let result = evaluate(c, ex).map(to_wit);
        // The evaluation is host time of the call: past the call's deadline,
        // the call ends as a timeout (the guest never resumes).
        if let Some((started, limit)) = self.call_deadline {
            if started.elapsed() > limit {
                return Err(wasmtime::Error::new(super::HostDeadline));
            }
        }
        if let Ok(v) = &result {
            let size = match v {
                Value::Text(s) | Value::Json(s) => s.len(),
                Value::Bytes(b) => b.len(),
                _ => 0,
            };
            if size > crate::policy::limits::MAX_EXPRESSION_RESULT {
                self.over(|| {
                    format!(
                        "an expression result of {size} bytes (at most {})",
                        crate::policy::limits::MAX_EXPRESSION_RESULT
                    )
                });
                return Ok(Err("the result is too large".into()));
            }
        }
        Ok(result)
    }

    fn source(&mut self, this: Resource<ExpressionHandle>) -> String {
        match self.expressions.get(this.rep() as usize) {
            Some(Some(c)) => c.source.clone(),
            _ => String::new(),
        }
    }

    fn drop(&mut self, this: Resource<ExpressionHandle>) -> wasmtime::Result<()> {
        if let Some(slot) = self.expressions.get_mut(this.rep() as usize) {
            *slot = None;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(source: &str) -> Vec<&'static str> {
        let c = compile(source).expect("compiles");
        if c.uses.client_cert_fields == u32::MAX {
            return vec!["*"];
        }
        CLIENT_CERT_FIELDS
            .iter()
            .enumerate()
            .filter(|(i, _)| c.uses.client_cert_fields & (1 << i) != 0)
            .map(|(_, f)| *f)
            .collect()
    }

    #[test]
    fn only_the_selected_client_cert_fields_are_built() {
        assert_eq!(
            fields("client_cert.thumbprint_sha256"),
            ["thumbprint_sha256"]
        );
        assert_eq!(
            fields("has(client_cert.verify_error) && client_cert.serial == '1'"),
            ["serial", "verify_error"]
        );
        assert_eq!(
            fields("request.headers['x'] + client_cert.dns_names.map(d, d)[0]"),
            ["dns_names"]
        );
        // Used as a whole: every field, so nothing observable changes.
        assert_eq!(
            fields("client_cert == null ? 'none' : client_cert.subject"),
            ["*"]
        );
        assert_eq!(fields("client_cert['subject']"), ["*"]);
        assert_eq!(fields("size(client_cert) > 0"), ["*"]);
        assert!(fields("request.path").is_empty());
    }

    #[test]
    fn single_reads_answer_like_cel() {
        use crate::exchange::{ConnInfo, RequestId};
        let addr = "192.0.2.7:4000".parse().unwrap();
        let conn = std::sync::Arc::new(ConnInfo::new(addr, addr, std::sync::Arc::from("l"), None));
        let req = http::Request::get("/orders/1?x=1")
            .header("x-client", "a")
            .header("x-client", "b")
            .header("x-one", "1")
            .body(())
            .unwrap();
        let mut ex = Exchange::new(
            req.into_parts().0,
            conn,
            RequestId::new(),
            std::time::Instant::now(),
        );
        ex.vars.insert("jwt.sub".into(), "ada".into());
        ex.vars.insert("tier".into(), "gold".into());
        for src in [
            "connection.client_ip",
            "request.ip",
            "request.method",
            "request.path",
            "request.headers['x-client']",
            "request.headers[\"x-one\"]",
            "vars['jwt.sub']",
            "vars.tier",
            "route.api",
        ] {
            let c = compile(src).unwrap();
            assert!(c.direct.is_some(), "{src} is a single read");
            let direct = evaluate(&c, &ex).unwrap();
            let mut full = compile(src).unwrap();
            full.direct = None;
            assert_eq!(direct, evaluate(&full, &ex).unwrap(), "{src}");
        }
        // Absent: CEL answers (with its error), not the shortcut.
        for src in [
            "request.headers['x-none']",
            "vars['nope']",
            "request.headers['X-Client']",
        ] {
            let c = compile(src).unwrap();
            assert!(evaluate(&c, &ex).is_err(), "{src}");
        }
        // Not single reads.
        for src in [
            "request.headers['x'] + 'y'",
            "vars.a.b",
            "request.headers[vars.h]",
        ] {
            assert!(compile(src).unwrap().direct.is_none(), "{src}");
        }
    }
}
