//! `hello`: the smallest useful function.
//!
//! - `GET` (any path): 200 `text/plain`, body `Hello World`.
//! - `POST` with a JSON body `{"name": "X"}`: 200 `application/json`, body `{"message":"Hello X!"}`.
//!   A body that is not a JSON object with a string `name`: 400 `application/json`
//!   `{"error": "..."}`.
//! - Any other method: 405.

use serde_json::{json, Value};
use wstd::http::{Body, Error, Method, Request, Response, StatusCode};

#[wstd::http_server]
async fn main(request: Request<Body>) -> Result<Response<Body>, Error> {
    match *request.method() {
        Method::GET | Method::HEAD => text(StatusCode::OK, "Hello World"),
        Method::POST => {
            let mut body = request.into_body();
            let bytes = body.contents().await?;
            match serde_json::from_slice::<Value>(bytes) {
                Ok(v) => match v.get("name").and_then(Value::as_str) {
                    Some(name) => json_response(StatusCode::OK, &json!({ "message": format!("Hello {name}!") })),
                    None => json_response(StatusCode::BAD_REQUEST, &json!({ "error": "expected {\"name\": string}" })),
                },
                Err(e) => json_response(StatusCode::BAD_REQUEST, &json!({ "error": format!("invalid JSON: {e}") })),
            }
        }
        _ => text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
    }
}

fn text(status: StatusCode, body: &str) -> Result<Response<Body>, Error> {
    Ok(Response::builder().status(status).header("content-type", "text/plain").body(body.to_owned().into())?)
}

fn json_response(status: StatusCode, value: &Value) -> Result<Response<Body>, Error> {
    Ok(Response::builder().status(status).header("content-type", "application/json").body(value.to_string().into())?)
}
