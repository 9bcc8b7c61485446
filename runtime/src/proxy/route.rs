//! Routing: host + path + method -> API and operation.
//!
//! An API matches when one of its hosts matches the request's host (or it
//! lists none) and its path prefix matches on whole segments. The longest
//! prefix wins; on a tie, an API that names hosts beats one that does not.
//! Within the API, operations are tried in config order.

use std::sync::Arc;

use crate::tls::name_matches;

/// A compiled path template: `/orders/{id}`, `/files/{*rest}`.
#[derive(Debug, Clone)]
pub struct Template {
    segments: Vec<Segment>,
}

#[derive(Debug, Clone)]
enum Segment {
    Literal(String),
    Param(Arc<str>),
    Rest(Arc<str>),
}

impl Template {
    /// Parses a template.
    ///
    /// # Errors
    ///
    /// A message naming the bad segment.
    pub fn parse(t: &str) -> Result<Self, String> {
        if !t.starts_with('/') {
            return Err(format!("`{t}` must start with `/`"));
        }
        let parts: Vec<&str> = t[1..].split('/').collect();
        let mut segments = Vec::with_capacity(parts.len());
        let n = parts.len();
        for (i, p) in parts.into_iter().enumerate() {
            if let Some(inner) = p.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                if let Some(rest) = inner.strip_prefix('*') {
                    if i + 1 != n {
                        return Err(format!("`{{*{rest}}}` must be the last segment of `{t}`"));
                    }
                    check_name(rest, t)?;
                    segments.push(Segment::Rest(Arc::from(rest)));
                } else {
                    check_name(inner, t)?;
                    segments.push(Segment::Param(Arc::from(inner)));
                }
            } else if p.contains('{') || p.contains('}') {
                return Err(format!(
                    "segment `{p}` of `{t}`: a parameter must be a whole segment, like `{{id}}`"
                ));
            } else {
                segments.push(Segment::Literal(p.to_string()));
            }
        }
        Ok(Template { segments })
    }

    /// Matches `path`, returning the parameters.
    pub fn matches(&self, path: &str) -> Option<Vec<(Arc<str>, String)>> {
        self.matches_case(path, false)
    }

    /// Matches `path`, literal segments compared without regard to ASCII
    /// case when `ignore_case`.
    pub fn matches_case(&self, path: &str, ignore_case: bool) -> Option<Vec<(Arc<str>, String)>> {
        let path = path.strip_prefix('/')?;
        let mut params = Vec::new();
        let mut rest = path;
        for (i, seg) in self.segments.iter().enumerate() {
            let last = i + 1 == self.segments.len();
            match seg {
                Segment::Rest(name) => {
                    params.push((name.clone(), rest.to_string()));
                    return Some(params);
                }
                _ => {
                    let (head, tail) = match rest.split_once('/') {
                        Some((h, t)) => (h, Some(t)),
                        None => (rest, None),
                    };
                    match seg {
                        Segment::Literal(l)
                            if l == head || (ignore_case && l.eq_ignore_ascii_case(head)) => {}
                        Segment::Param(name) if !head.is_empty() => {
                            params.push((name.clone(), head.to_string()))
                        }
                        _ => return None,
                    }
                    match tail {
                        Some(t) if last => return if t.is_empty() { Some(params) } else { None },
                        Some(t) => rest = t,
                        None if last => return Some(params),
                        None => return None,
                    }
                }
            }
        }
        None
    }
}

fn check_name(name: &str, t: &str) -> Result<(), String> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(format!(
            "parameter name `{name}` in `{t}` must be letters, digits, `_` or `-`"
        ));
    }
    Ok(())
}

/// Whether `prefix` matches `path` on whole segments.
pub fn prefix_matches(prefix: &str, path: &str) -> bool {
    prefix_matches_case(prefix, path, false)
}

/// Whether `prefix` matches `path` on whole segments, without regard to
/// ASCII case when `ignore_case`.
pub fn prefix_matches_case(prefix: &str, path: &str, ignore_case: bool) -> bool {
    let prefix = prefix.trim_end_matches('/');
    if prefix.is_empty() {
        return true;
    }
    let Some(head) = path.get(..prefix.len()) else {
        return false;
    };
    let same = if ignore_case {
        head.eq_ignore_ascii_case(prefix)
    } else {
        head == prefix
    };
    same && matches!(path.as_bytes().get(prefix.len()), None | Some(&b'/'))
}

/// A routable operation.
#[derive(Debug)]
pub struct OperationRoute<T> {
    /// Name.
    pub name: Arc<str>,
    /// Method, or `None` for any.
    pub method: Option<http::Method>,
    /// Path template.
    pub template: Template,
    /// What the caller attaches (chains).
    pub data: T,
}

/// A routable API.
#[derive(Debug)]
pub struct ApiRoute<A, O> {
    /// Name.
    pub name: Arc<str>,
    /// Host patterns, lower case; empty = any.
    pub hosts: Vec<String>,
    /// Path prefix (no trailing slash, `""` for the root).
    pub prefix: String,
    /// Match the prefix and the operations without regard to ASCII case.
    pub case_insensitive: bool,
    /// Operations.
    pub operations: Vec<OperationRoute<O>>,
    /// What the caller attaches.
    pub data: A,
}

/// What routing found.
pub enum Routed<'a, A, O> {
    /// An API (and an operation, if it has any).
    Found {
        /// The API.
        api: &'a ApiRoute<A, O>,
        /// The operation, if matched.
        operation: Option<&'a OperationRoute<O>>,
        /// Path parameters.
        params: Vec<(Arc<str>, String)>,
    },
    /// The API has operations for the path, but not for the method.
    MethodNotAllowed {
        /// The API.
        api: &'a ApiRoute<A, O>,
        /// Methods that would match.
        allow: Vec<String>,
    },
    /// Nothing matches.
    NotFound,
}

/// The routing table.
#[derive(Debug)]
pub struct Router<A, O> {
    apis: Vec<ApiRoute<A, O>>,
}

impl<A, O> Router<A, O> {
    /// A table over `apis`.
    pub fn new(apis: Vec<ApiRoute<A, O>>) -> Self {
        Router { apis }
    }

    /// The APIs.
    pub fn apis(&self) -> &[ApiRoute<A, O>] {
        &self.apis
    }

    /// Routes a request.
    pub fn route(&self, host: &str, method: &http::Method, path: &str) -> Routed<'_, A, O> {
        let mut best: Option<&ApiRoute<A, O>> = None;
        for api in &self.apis {
            let host_ok = api.hosts.is_empty() || api.hosts.iter().any(|p| name_matches(p, host));
            if !host_ok || !prefix_matches_case(&api.prefix, path, api.case_insensitive) {
                continue;
            }
            best = match best {
                None => Some(api),
                Some(b) => {
                    let better = api.prefix.len() > b.prefix.len()
                        || (api.prefix.len() == b.prefix.len()
                            && !api.hosts.is_empty()
                            && b.hosts.is_empty());
                    Some(if better { api } else { b })
                }
            };
        }
        let Some(api) = best else {
            return Routed::NotFound;
        };
        if api.operations.is_empty() {
            return Routed::Found {
                api,
                operation: None,
                params: Vec::new(),
            };
        }
        let mut allow = Vec::new();
        for op in &api.operations {
            if let Some(params) = op.template.matches_case(path, api.case_insensitive) {
                match &op.method {
                    Some(m) if m != method => allow.push(m.as_str().to_string()),
                    _ => {
                        return Routed::Found {
                            api,
                            operation: Some(op),
                            params,
                        }
                    }
                }
            }
        }
        if allow.is_empty() {
            Routed::NotFound
        } else {
            allow.dedup();
            Routed::MethodNotAllowed { api, allow }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates() {
        let t = Template::parse("/orders/{id}").unwrap();
        assert_eq!(t.matches("/orders/42").unwrap()[0].1, "42");
        assert!(t.matches("/orders").is_none());
        assert!(t.matches("/orders/42/items").is_none());
        assert!(t.matches("/orders/").is_none());
        let t = Template::parse("/files/{*rest}").unwrap();
        assert_eq!(t.matches("/files/a/b/c").unwrap()[0].1, "a/b/c");
        let t = Template::parse("/orders").unwrap();
        assert!(t.matches("/orders").is_some());
        assert!(t.matches("/orders/").is_some());
        assert!(Template::parse("orders").is_err());
        assert!(Template::parse("/a/{*r}/b").is_err());
        assert!(Template::parse("/a/x{id}").is_err());
    }

    #[test]
    fn case_insensitive_matching() {
        assert!(prefix_matches_case("/Admin", "/ADMIN/users", true));
        assert!(!prefix_matches_case("/Admin", "/ADMIN/users", false));
        assert!(!prefix_matches_case("/admin", "/adminx", true));
        let t = Template::parse("/Admin/{id}").unwrap();
        assert_eq!(t.matches_case("/aDMIN/Ab", true).unwrap()[0].1, "Ab");
        assert!(t.matches_case("/aDMIN/Ab", false).is_none());
    }

    #[test]
    fn prefixes_match_whole_segments() {
        assert!(prefix_matches("/orders", "/orders"));
        assert!(prefix_matches("/orders", "/orders/1"));
        assert!(!prefix_matches("/orders", "/ordersx"));
        assert!(prefix_matches("/", "/anything"));
    }

    fn api(
        name: &str,
        hosts: &[&str],
        prefix: &str,
        ops: Vec<OperationRoute<()>>,
    ) -> ApiRoute<(), ()> {
        ApiRoute {
            name: Arc::from(name),
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            prefix: prefix.trim_end_matches('/').to_string(),
            case_insensitive: false,
            operations: ops,
            data: (),
        }
    }

    #[test]
    fn longest_prefix_then_hosts_then_methods() {
        let op = |name: &str, m: Option<http::Method>, p: &str| OperationRoute {
            name: Arc::from(name),
            method: m,
            template: Template::parse(p).unwrap(),
            data: (),
        };
        let r = Router::new(vec![
            api("root", &[], "/", vec![]),
            api(
                "orders",
                &[],
                "/orders",
                vec![op("get", Some(http::Method::GET), "/orders/{id}")],
            ),
            api(
                "orders-a",
                &["a.test"],
                "/orders",
                vec![op("any", None, "/orders/{*rest}")],
            ),
        ]);
        match r.route("b.test", &http::Method::GET, "/orders/7") {
            Routed::Found {
                api,
                operation,
                params,
            } => {
                assert_eq!(&*api.name, "orders");
                assert_eq!(&*operation.unwrap().name, "get");
                assert_eq!(params[0].1, "7");
            }
            _ => panic!("expected a route"),
        }
        match r.route("a.test", &http::Method::DELETE, "/orders/7") {
            Routed::Found { api, .. } => assert_eq!(&*api.name, "orders-a"),
            _ => panic!("expected a route"),
        }
        match r.route("b.test", &http::Method::POST, "/orders/7") {
            Routed::MethodNotAllowed { allow, .. } => assert_eq!(allow, vec!["GET"]),
            _ => panic!("expected 405"),
        }
        assert!(matches!(
            r.route("b.test", &http::Method::GET, "/orders/7/x"),
            Routed::NotFound
        ));
        match r.route("b.test", &http::Method::GET, "/other") {
            Routed::Found { api, .. } => assert_eq!(&*api.name, "root"),
            _ => panic!("expected root"),
        }
    }
}
