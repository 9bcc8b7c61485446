//! Request normalisation, before anything looks at a request: one path,
//! one host, so that routing, policies and the upstream all see the same
//! request (a request that routes as `/public` must not reach the upstream
//! as `/admin`).
//!
//! - The path: percent-encoded unreserved characters decoded (`%61` ->
//!   `a`), empty segments merged (`//`), dot segments resolved (`/a/../b`
//!   -> `/b`, never above the root). An encoded `/` or `\` is refused: the
//!   upstream could split on it where the router did not.
//! - The host: an authority in the request target (HTTP/2 `:authority`,
//!   absolute form) is the host, and `Host` is set to it; several `Host`
//!   headers, or none on HTTP/1.1, are refused.
//! - HTTP/2 cookies split over several fields are joined (`; `) for the
//!   HTTP/1.1 upstream.
//! - `CONNECT` and `TRACE` are refused: the gateway does not tunnel, and
//!   does not echo requests.

use std::borrow::Cow;

use http::header::{self, HeaderValue};
use http::{Method, StatusCode, Version};

use super::fault::{codes, Fault};

/// Normalises a request head in place.
///
/// # Errors
///
/// A `400` (bad path or host) or `501` (method) fault.
pub fn request(parts: &mut http::request::Parts) -> Result<(), Fault> {
    if parts.method == Method::CONNECT || parts.method == Method::TRACE {
        return Err(Fault::new(
            StatusCode::NOT_IMPLEMENTED,
            codes::REQUEST_METHOD_NOT_SUPPORTED,
            "Method not supported",
            format!("the gateway does not serve {} requests", parts.method),
        ));
    }

    // Host.
    let hosts = parts.headers.get_all(header::HOST).iter().count();
    if hosts > 1 {
        return Err(invalid_host("the request has several Host headers"));
    }
    if let Some(authority) = parts.uri.authority() {
        let v = HeaderValue::from_str(authority.as_str())
            .map_err(|_| invalid_host("the authority is not a valid host"))?;
        parts.headers.insert(header::HOST, v);
    } else if hosts == 0 && parts.version == Version::HTTP_11 {
        return Err(invalid_host("an HTTP/1.1 request must carry a Host header"));
    }

    // Path.
    if let Cow::Owned(path) = path(parts.uri.path())? {
        let pq = match parts.uri.query() {
            Some(q) => format!("{path}?{q}"),
            None => path,
        };
        let mut uri_parts = std::mem::take(&mut parts.uri).into_parts();
        uri_parts.path_and_query = Some(
            pq.parse()
                .map_err(|_| invalid_path("the path cannot be normalised"))?,
        );
        parts.uri = http::Uri::from_parts(uri_parts)
            .map_err(|_| invalid_path("the path cannot be normalised"))?;
    }

    // Cookies (HTTP/2 may split them; HTTP/1.1 allows one field).
    if parts.version == Version::HTTP_2
        && parts
            .headers
            .get_all(header::COOKIE)
            .iter()
            .nth(1)
            .is_some()
    {
        let mut joined = Vec::new();
        for (i, v) in parts.headers.get_all(header::COOKIE).iter().enumerate() {
            if i > 0 {
                joined.extend_from_slice(b"; ");
            }
            joined.extend_from_slice(v.as_bytes());
        }
        if let Ok(v) = HeaderValue::from_bytes(&joined) {
            parts.headers.insert(header::COOKIE, v);
        }
    }
    Ok(())
}

fn invalid_host(why: &str) -> Fault {
    Fault::new(
        StatusCode::BAD_REQUEST,
        codes::REQUEST_INVALID_HOST,
        "Invalid host",
        why,
    )
}

fn invalid_path(why: impl Into<String>) -> Fault {
    Fault::new(
        StatusCode::BAD_REQUEST,
        codes::REQUEST_INVALID_PATH,
        "Invalid path",
        why,
    )
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The normalised form of a path; borrowed when it is already normal.
///
/// # Errors
///
/// A bad percent-encoding, or an encoded `/` or `\`.
pub fn path(p: &str) -> Result<Cow<'_, str>, Fault> {
    if !p.starts_with('/') {
        // `*` (OPTIONS *) and the like: nothing to normalise.
        return Ok(Cow::Borrowed(p));
    }
    let needs_work = p.contains('%') || p.contains("//") || p.contains("/.") || p.contains('\\');
    if !needs_work {
        return Ok(Cow::Borrowed(p));
    }
    if p.contains('\\') {
        return Err(invalid_path("`\\` is not allowed in a path"));
    }
    // Decode percent-encoded unreserved characters; keep (upper-cased)
    // every other encoding.
    let bytes = p.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let (Some(h), Some(l)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            ) else {
                return Err(invalid_path(
                    "a `%` in the path is not followed by two hex digits",
                ));
            };
            let c = h * 16 + l;
            if c == b'/' || c == b'\\' {
                return Err(invalid_path(
                    "an encoded `/` or `\\` is not allowed in a path",
                ));
            }
            if is_unreserved(c) {
                decoded.push(c);
            } else {
                decoded.push(b'%');
                decoded.push(bytes[i + 1].to_ascii_uppercase());
                decoded.push(bytes[i + 2].to_ascii_uppercase());
            }
            i += 3;
        } else {
            decoded.push(bytes[i]);
            i += 1;
        }
    }
    // Only ASCII was added; the input was a valid `str`.
    let decoded =
        String::from_utf8(decoded).map_err(|_| invalid_path("the path is not valid UTF-8"))?;
    let trailing = decoded.len() > 1 && decoded.ends_with('/');
    let mut segments: Vec<&str> = Vec::new();
    for seg in decoded.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(decoded.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if out.is_empty() || (trailing && !segments.is_empty()) {
        out.push('/');
    }
    if out == p {
        Ok(Cow::Borrowed(p))
    } else {
        Ok(Cow::Owned(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(p: &str) -> String {
        path(p)
            .map(|c| c.into_owned())
            .unwrap_or_else(|f| format!("ERR {}", f.detail))
    }

    #[test]
    fn paths() {
        assert!(matches!(path("/orders/1").unwrap(), Cow::Borrowed(_)));
        assert_eq!(norm("/a/./b"), "/a/b");
        assert_eq!(norm("/public/../admin/users"), "/admin/users");
        assert_eq!(norm("/../x"), "/x");
        assert_eq!(norm("//admin"), "/admin");
        assert_eq!(norm("/%61dmin"), "/admin");
        assert_eq!(norm("/a/%2e%2e/b"), "/b");
        assert_eq!(norm("/a%20b"), "/a%20b");
        assert_eq!(norm("/a%c3%a9"), "/a%C3%A9");
        assert_eq!(norm("/a/b/"), "/a/b/");
        assert_eq!(norm("/a/.."), "/");
        assert_eq!(norm("/"), "/");
        assert!(norm("/a%2Fb").starts_with("ERR"));
        assert!(norm("/a%2fb").starts_with("ERR"));
        assert!(norm("/a%5cb").starts_with("ERR"));
        assert!(norm("/a%zz").starts_with("ERR"));
        assert!(norm("/a%2").starts_with("ERR"));
    }

    fn req(uri: &str, version: Version, hosts: &[&str]) -> http::request::Parts {
        let mut b = http::Request::get(uri).version(version);
        for h in hosts {
            b = b.header("host", *h);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn hosts() {
        let mut p = req("https://a.test/x", Version::HTTP_2, &["b.test"]);
        request(&mut p).unwrap();
        assert_eq!(p.headers["host"], "a.test", "the authority wins");
        let mut p = req("/x", Version::HTTP_11, &[]);
        assert_eq!(
            request(&mut p).unwrap_err().code,
            codes::REQUEST_INVALID_HOST
        );
        let mut p = req("/x", Version::HTTP_11, &["a", "b"]);
        assert_eq!(
            request(&mut p).unwrap_err().code,
            codes::REQUEST_INVALID_HOST
        );
        let mut p = req("/x", Version::HTTP_10, &[]);
        request(&mut p).unwrap();
    }

    #[test]
    fn path_is_rewritten_with_its_query() {
        let mut p = req("/a/../b?x=1", Version::HTTP_11, &["h"]);
        request(&mut p).unwrap();
        assert_eq!(p.uri.to_string(), "/b?x=1");
    }
}
