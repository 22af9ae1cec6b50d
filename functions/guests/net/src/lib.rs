//! `net`: an outbound request through `wasi:http/outgoing-handler`.
//!
//! `?url=<percent-encoded URL>`: GETs the URL and answers 200 `application/json`
//! `{"status": <upstream status>, "body": "<upstream body as text (lossy UTF-8)>"}`.
//! When the outbound request fails (the host refused it, DNS, connection, ...): 502
//! `{"error": "<Debug of the wasi:http error-code>"}`, e.g. `{"error":"ErrorCode::HttpRequestDenied"}`
//! or `{"error":"ErrorCode::ConnectionRefused"}`.
//! Without `url`, or with one that is not a valid absolute URI: 400 `{"error": "..."}`.

use serde_json::json;
use wstd::http::{Body, Client, Error, ErrorCode, Request, Response, StatusCode};

#[wstd::http_server]
async fn main(request: Request<Body>) -> Result<Response<Body>, Error> {
    let Some(url) = request.uri().query().and_then(|q| query_param(q, "url")) else {
        return json_response(StatusCode::BAD_REQUEST, json!({ "error": "missing ?url=" }));
    };
    let outbound = match Request::get(url.as_str()).body(Body::empty()) {
        Ok(r) => r,
        Err(e) => return json_response(StatusCode::BAD_REQUEST, json!({ "error": format!("invalid url: {e}") })),
    };
    let result = async {
        let mut response = Client::new().send(outbound).await?;
        let status = response.status().as_u16();
        let body = response.body_mut().contents().await?;
        Ok::<_, Error>((status, String::from_utf8_lossy(body).into_owned()))
    }
    .await;
    match result {
        Ok((status, body)) => json_response(StatusCode::OK, json!({ "status": status, "body": body })),
        Err(e) => {
            let error = match e.downcast_ref::<ErrorCode>() {
                Some(code) => format!("{code:?}"),
                None => format!("{e:?}"),
            };
            json_response(StatusCode::BAD_GATEWAY, json!({ "error": error }))
        }
    }
}

fn json_response(status: StatusCode, value: serde_json::Value) -> Result<Response<Body>, Error> {
    Ok(Response::builder().status(status).header("content-type", "application/json").body(value.to_string().into())?)
}

/// The percent-decoded value of `name` in the query string (`+` is a space).
fn query_param(query: &str, name: &str) -> Option<String> {
    let raw = query.split('&').find_map(|pair| pair.split_once('=').filter(|(k, _)| *k == name).map(|(_, v)| v))?;
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if bytes.len() > i + 2 && bytes[i + 1].is_ascii_hexdigit() && bytes[i + 2].is_ascii_hexdigit() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).expect("ASCII");
                out.push(u8::from_str_radix(hex, 16).expect("hex digits"));
                i += 3;
                continue;
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}
