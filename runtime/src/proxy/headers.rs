//! Header handling shared by the pipeline: hop-by-hop headers, `X-Forwarded-*`, and header edits from policies.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// The host part of an authority, lower case, without port or brackets.
pub fn host_of(authority: &str) -> String {
    let a = authority.trim();
    let host = if let Some(rest) = a.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        a.rsplit_once(':').map_or(a, |(h, p)| {
            if p.bytes().all(|b| b.is_ascii_digit()) {
                h
            } else {
                a
            }
        })
    };
    host.to_ascii_lowercase()
}

/// Headers that apply to one connection only (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// Removes hop-by-hop headers, including those named in `Connection`.
/// `Upgrade` is removed too: the gateway does not tunnel upgrades.
pub fn remove_hop_by_hop(h: &mut HeaderMap) {
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named {
        h.remove(n);
    }
    for n in HOP_BY_HOP.iter() {
        h.remove(n);
    }
    h.remove(header::UPGRADE);
}

/// Appends the client to `X-Forwarded-For` and sets `X-Forwarded-Proto`
/// and `X-Forwarded-Host` (to the request's `Host` value, moved here by the
/// caller).
pub fn set_forwarded(
    h: &mut HeaderMap,
    client_ip: &HeaderValue,
    proto: &'static str,
    host: Option<HeaderValue>,
) {
    static XFF: HeaderName = HeaderName::from_static("x-forwarded-for");
    static XFP: HeaderName = HeaderName::from_static("x-forwarded-proto");
    static XFH: HeaderName = HeaderName::from_static("x-forwarded-host");
    let appended = match h.get(&XFF).map(HeaderValue::as_bytes) {
        Some(prev) if !prev.trim_ascii().is_empty() => {
            let mut v = Vec::with_capacity(prev.len() + 2 + client_ip.len());
            v.extend_from_slice(prev);
            v.extend_from_slice(b", ");
            v.extend_from_slice(client_ip.as_bytes());
            HeaderValue::from_bytes(&v).ok()
        }
        _ => None,
    };
    h.insert(XFF.clone(), appended.unwrap_or_else(|| client_ip.clone()));
    h.insert(XFP.clone(), HeaderValue::from_static(proto));
    match host.filter(|v| !v.is_empty()) {
        Some(host) => {
            h.insert(XFH.clone(), host);
        }
        // Never pass on a client's own claim.
        None => {
            h.remove(&XFH);
        }
    }
}

/// The approximate size of a request head: what HTTP/1.1 would send.
pub fn head_size(r: &http::request::Parts) -> usize {
    let uri = r.uri.scheme_str().map_or(0, |s| s.len() + 3)
        + r.uri.authority().map_or(0, |a| a.as_str().len())
        + r.uri.path_and_query().map_or(1, |p| p.as_str().len());
    let mut n = r.method.as_str().len() + uri + 12;
    for (k, v) in &r.headers {
        n += k.as_str().len() + v.len() + 4;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_of_strips_port_and_brackets() {
        assert_eq!(host_of("Test.com:8443"), "test.com");
        assert_eq!(host_of("test.com"), "test.com");
        assert_eq!(host_of("[::1]:8443"), "::1");
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_go() {
        let mut h = HeaderMap::new();
        h.insert("connection", "close, x-secret".parse().unwrap());
        h.insert("x-secret", "1".parse().unwrap());
        h.insert("keep-alive", "5".parse().unwrap());
        h.insert("x-keep", "1".parse().unwrap());
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-keep"));
    }

    #[test]
    fn forwarded_for_appends() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "1.1.1.1".parse().unwrap());
        set_forwarded(
            &mut h,
            &HeaderValue::from_static("2.2.2.2"),
            "https",
            Some(HeaderValue::from_static("a.test")),
        );
        assert_eq!(h["x-forwarded-for"], "1.1.1.1, 2.2.2.2");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "a.test");
    }
}
