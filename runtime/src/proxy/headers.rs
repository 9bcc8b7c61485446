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
/// `Upgrade` is removed too: the gateway does not tunnel upgrades. For a
/// message as it arrives (the client's request, the upstream's response),
/// before anything else reads it.
pub fn remove_hop_by_hop(h: &mut HeaderMap) {
    remove_on_arrival(h, false);
}

/// [`remove_hop_by_hop`], and with `forwarding` also the forwarding
/// headers of [`remove_forwarding`], in one pass over the names: most
/// messages carry none of them, and a scan of a few names costs less than
/// a hash lookup per listed name.
pub fn remove_on_arrival(h: &mut HeaderMap, forwarding: bool) {
    let doomed = |k: &HeaderName| {
        is_fixed_hop_by_hop(k)
            || CLIENT_CERT.iter().any(|c| c == k)
            || (forwarding && FORWARDING.iter().any(|f| f == k))
    };
    // `Connection` is on the fixed list: no match, nothing to do.
    if !h.keys().any(doomed) {
        return;
    }
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
    remove_where(h, doomed);
}

/// Removes the fixed list of hop-by-hop headers (and `Upgrade`), but not
/// headers a `Connection` header names: for a message after the policies,
/// whose `Connection` (if a policy set one) names nothing the client sent.
pub fn remove_fixed_hop_by_hop(h: &mut HeaderMap) {
    remove_where(h, is_fixed_hop_by_hop);
}

fn is_fixed_hop_by_hop(k: &HeaderName) -> bool {
    k == header::UPGRADE || HOP_BY_HOP.iter().any(|n| n == k)
}

/// Removes every header whose name `doomed` picks; nothing is hashed or
/// allocated when none is.
fn remove_where(h: &mut HeaderMap, doomed: impl Fn(&HeaderName) -> bool) {
    if !h.keys().any(&doomed) {
        return;
    }
    let names: Vec<HeaderName> = h.keys().filter(|k| doomed(k)).cloned().collect();
    for n in names {
        h.remove(n);
    }
}

/// Whether a policy may not set, append or remove `name`: the framing
/// headers (`Content-Length`, `Transfer-Encoding`) and the hop-by-hop ones.
/// The gateway frames every message itself; a policy that could change
/// them could desync a client or upstream connection.
pub fn is_reserved_for_framing(name: &HeaderName) -> bool {
    name == header::CONTENT_LENGTH
        || name == header::UPGRADE
        || HOP_BY_HOP.iter().any(|h| h == name)
}

/// Headers that carry a client certificate to the upstream: only the
/// gateway sets them (`apis[].forward_client_certificate`), so a copy from
/// the client, trusted proxy or not, is always removed on arrival.
const CLIENT_CERT: [HeaderName; 3] = [
    HeaderName::from_static("client-cert"),
    HeaderName::from_static("client-cert-chain"),
    HeaderName::from_static("x-forwarded-client-cert"),
];

/// Sets the client-certificate headers of `format` from a verified
/// certificate chain (DER, leaf first).
pub fn forward_client_cert(
    h: &mut HeaderMap,
    forward: &crate::config::ForwardClientCertificate,
    chain: &[rustls::pki_types::CertificateDer<'static>],
    info: &crate::tls::certinfo::CertInfo,
) {
    use crate::config::{ForwardFormat, XfccField};
    use base64::Engine as _;
    let Some((leaf, rest)) = chain.split_first() else {
        return;
    };
    let b64 = |d: &[u8]| base64::engine::general_purpose::STANDARD.encode(d);
    match forward.format {
        ForwardFormat::Rfc9440 => {
            // RFC 9440: sf-binary items, `:base64:`; the chain without the
            // leaf, in order.
            if let Ok(v) = HeaderValue::from_str(&format!(":{}:", b64(leaf.as_ref()))) {
                h.insert(CLIENT_CERT[0].clone(), v);
            }
            if !rest.is_empty() {
                let list: Vec<String> = rest
                    .iter()
                    .map(|c| format!(":{}:", b64(c.as_ref())))
                    .collect();
                if let Ok(v) = HeaderValue::from_str(&list.join(", ")) {
                    h.insert(CLIENT_CERT[1].clone(), v);
                }
            }
        }
        ForwardFormat::Xfcc => {
            const DEFAULT: [XfccField; 4] = [
                XfccField::Hash,
                XfccField::Subject,
                XfccField::Uri,
                XfccField::Dns,
            ];
            let fields = forward.fields.as_deref().unwrap_or(&DEFAULT);
            let pem = |d: &[u8]| {
                let body = b64(d);
                let mut p = String::from("-----BEGIN CERTIFICATE-----\n");
                for line in body.as_bytes().chunks(64) {
                    p.push_str(&String::from_utf8_lossy(line));
                    p.push('\n');
                }
                p.push_str("-----END CERTIFICATE-----\n");
                p
            };
            // URL encoding that keeps the unreserved characters (RFC 3986).
            const ENCODE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
                .remove(b'-')
                .remove(b'.')
                .remove(b'_')
                .remove(b'~');
            let url = |s: &str| percent_encoding::utf8_percent_encode(s, ENCODE).to_string();
            let quote = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
            let mut parts = Vec::new();
            for f in fields {
                match f {
                    XfccField::Hash => parts.push(format!("Hash={}", info.thumbprint_sha256)),
                    XfccField::Subject => parts.push(format!("Subject={}", quote(&info.subject))),
                    XfccField::Uri => {
                        for u in &info.uris {
                            parts.push(format!("URI={}", url(u)));
                        }
                    }
                    XfccField::Dns => {
                        for d in &info.dns_names {
                            parts.push(format!("DNS={}", url(d)));
                        }
                    }
                    XfccField::Cert => {
                        parts.push(format!("Cert={}", quote(&url(&pem(leaf.as_ref())))))
                    }
                    XfccField::Chain => {
                        let all: String = chain.iter().map(|c| pem(c.as_ref())).collect();
                        parts.push(format!("Chain={}", quote(&url(&all))));
                    }
                }
            }
            if let Ok(v) = HeaderValue::from_str(&parts.join(";")) {
                h.insert(CLIENT_CERT[2].clone(), v);
            }
        }
    }
}

/// Headers a client could use to pass itself off as a proxy or to rewrite
/// what the upstream serves; removed from requests whose peer is not a
/// trusted proxy (`listeners[].trust_forwarded_from`).
const FORWARDING: [HeaderName; 10] = [
    header::FORWARDED,
    HeaderName::from_static("x-forwarded-for"),
    HeaderName::from_static("x-forwarded-proto"),
    HeaderName::from_static("x-forwarded-host"),
    HeaderName::from_static("x-forwarded-port"),
    HeaderName::from_static("x-forwarded-prefix"),
    HeaderName::from_static("x-real-ip"),
    HeaderName::from_static("x-original-url"),
    HeaderName::from_static("x-rewrite-url"),
    HeaderName::from_static("x-http-method-override"),
];

/// Removes the forwarding headers a client sent (see [`FORWARDING`]); the
/// gateway sets its own `X-Forwarded-For`, `-Proto` and `-Host` upstream.
pub fn remove_forwarding(h: &mut HeaderMap) {
    remove_where(h, |k| FORWARDING.iter().any(|f| f == k));
}

/// Appends the client to `X-Forwarded-For` (which holds only what a
/// trusted proxy sent: an untrusted client's was removed on arrival), and
/// sets `X-Forwarded-Proto` and `X-Forwarded-Host` (to the request's `Host`
/// value, moved here by the caller) unless a trusted proxy set them.
pub fn set_forwarded(
    h: &mut HeaderMap,
    client_ip: &HeaderValue,
    proto: &'static str,
    host: Option<HeaderValue>,
    trusted: bool,
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
    if trusted && h.contains_key(&XFP) && h.contains_key(&XFH) {
        return;
    }
    if !(trusted && h.contains_key(&XFP)) {
        h.insert(XFP.clone(), HeaderValue::from_static(proto));
    }
    if trusted && h.contains_key(&XFH) {
        return;
    }
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
            true,
        );
        assert_eq!(h["x-forwarded-for"], "1.1.1.1, 2.2.2.2");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "a.test");
    }
}
