//! `env`: environment variables (`wasi:cli/environment`, through `std::env`), e.g. a function's
//! secrets.
//!
//! `GET ?names=A,B`: 200 `application/json` `{"A": "<value>" or null, "B": ...}` (null when the
//! variable is unset or not UTF-8). Without `names`: every variable the function can see, as
//! `{"NAME": "value", ...}` (keys sorted).

use serde_json::{Map, Value};
use wstd::http::{Body, Error, Request, Response};

#[wstd::http_server]
async fn main(request: Request<Body>) -> Result<Response<Body>, Error> {
    let names = request.uri().query().and_then(|q| {
        q.split('&').find_map(|pair| pair.split_once('=').filter(|(k, _)| *k == "names").map(|(_, v)| v.to_owned()))
    });
    let mut map = Map::new();
    match names {
        Some(names) => {
            for name in names.split(',').filter(|n| !n.is_empty()) {
                map.insert(name.to_owned(), std::env::var(name).map(Value::String).unwrap_or(Value::Null));
            }
        }
        None => {
            for (name, value) in std::env::vars_os() {
                if let (Ok(name), Ok(value)) = (name.into_string(), value.into_string()) {
                    map.insert(name, Value::String(value));
                }
            }
        }
    }
    Ok(Response::builder().header("content-type", "application/json").body(Value::Object(map).to_string().into())?)
}
