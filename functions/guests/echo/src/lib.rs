//! `echo`: answers with what it was sent.
//!
//! - Status: 200, or the status in the request header `x-echo-status` when it is present and a
//!   valid status code (100..=999).
//! - Body: the request body's bytes unchanged (read through the body stream, any size).
//! - `content-type`: the request's, or `application/octet-stream` when it has none.
//! - `x-echo-method`: the method; `x-echo-path`: the request's path (e.g. `/echo/sub/path`);
//!   `x-echo-query`: the query string without `?` (empty when none); `x-echo-headers`: a JSON object
//!   of all request headers, names lower-case, keys sorted, repeated values joined with ", ", all
//!   non-ASCII characters escaped (`\uXXXX`) so the header stays ASCII.

use serde_json::{Map, Value};
use wstd::http::{Body, Error, HeaderMap, Request, Response, StatusCode};

#[wstd::http_server]
async fn main(request: Request<Body>) -> Result<Response<Body>, Error> {
    let (parts, mut body) = request.into_parts();
    let status = parts
        .headers
        .get("x-echo-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.trim().parse::<u16>().ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::OK);
    let content_type = match parts.headers.get("content-type") {
        Some(v) => v.clone(),
        None => "application/octet-stream".parse()?,
    };
    let data = body.bytes_contents().await?;
    Ok(Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("x-echo-method", parts.method.as_str())
        .header("x-echo-path", parts.uri.path())
        .header("x-echo-query", parts.uri.query().unwrap_or(""))
        .header("x-echo-headers", headers_json(&parts.headers))
        .body(data.into())?)
}

/// The headers as a JSON object (sorted keys), ASCII only.
fn headers_json(headers: &HeaderMap) -> String {
    let mut map = Map::new();
    for name in headers.keys() {
        let values: Vec<String> =
            headers.get_all(name).iter().map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()).collect();
        map.insert(name.as_str().to_owned(), Value::String(values.join(", ")));
    }
    let mut out = String::new();
    for c in Value::Object(map).to_string().chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out
}
