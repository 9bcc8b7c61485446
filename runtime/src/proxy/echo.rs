//! The built-in echo upstream (`url: builtin:echo`): answers every request
//! with a JSON description of what reached it. The quickstart uses it, so
//! the gateway runs with no external service.

use http::{Request, Response};
use http_body_util::BodyExt;

use super::body::{full, Body};

/// Reads the request body (counting bytes, keeping none) and describes the
/// request.
pub async fn respond(req: Request<Body>) -> Response<Body> {
    let (parts, mut body) = req.into_parts();
    let mut body_bytes: u64 = 0;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => {
                if let Some(d) = f.data_ref() {
                    body_bytes += d.len() as u64;
                }
            }
            Err(_) => break,
        }
    }
    let mut headers = serde_json::Map::new();
    for (k, v) in &parts.headers {
        headers.insert(
            k.as_str().to_string(),
            String::from_utf8_lossy(v.as_bytes()).into_owned().into(),
        );
    }
    let doc = serde_json::json!({
        "echo": true,
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "headers": headers,
        "body_bytes": body_bytes,
    });
    let mut resp = Response::new(full(doc.to_string()));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}
