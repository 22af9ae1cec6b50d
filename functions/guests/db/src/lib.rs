//! `db`: MadBase's host interface (`functions/wit/madbase.wit`, `madbase:functions@0.1.0`).
//! Runs only on MadBase (it imports `madbase:functions/database` and `madbase:functions/caller`).
//!
//! - `POST` with JSON `{"sql": "...", "params": ["a", null, ...]}` (`params` optional; numbers and
//!   booleans are passed as their JSON text): calls `database.query`; on `Ok(rows)` answers 200
//!   `application/json` with the returned JSON text as the body, on `Err(e)` 400
//!   `{"code": e.code, "message": e.message}`. A body that is not such an object: 400
//!   `{"code": "bad_request", "message": "..."}`.
//! - `GET` on a path ending in `/claims` (`/db/claims`): 200 `application/json`, body
//!   `caller.claims()`'s JSON text, or `null` when there is none.

use serde_json::{json, Value};
use wstd::http::{Body, Error, Method, Request, Response, StatusCode};

wit_bindgen::generate!({ world: "host", path: "../../wit" });

use madbase::functions::{caller, database};

#[wstd::http_server]
async fn main(request: Request<Body>) -> Result<Response<Body>, Error> {
    match *request.method() {
        Method::GET if request.uri().path().ends_with("/claims") => {
            json_text(StatusCode::OK, caller::claims().unwrap_or_else(|| "null".to_owned()))
        }
        Method::POST => {
            let mut body = request.into_body();
            let (sql, params) = match parse(body.contents().await?) {
                Ok(q) => q,
                Err(message) => {
                    return json_text(
                        StatusCode::BAD_REQUEST,
                        json!({ "code": "bad_request", "message": message }).to_string(),
                    )
                }
            };
            match database::query(&sql, &params) {
                Ok(rows) => json_text(StatusCode::OK, rows),
                Err(e) => {
                    json_text(StatusCode::BAD_REQUEST, json!({ "code": e.code, "message": e.message }).to_string())
                }
            }
        }
        _ => json_text(
            StatusCode::METHOD_NOT_ALLOWED,
            json!({ "code": "method_not_allowed", "message": "POST a query, or GET /db/claims" }).to_string(),
        ),
    }
}

fn parse(body: &[u8]) -> Result<(String, Vec<Option<String>>), String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("invalid JSON: {e}"))?;
    let sql = v.get("sql").and_then(Value::as_str).ok_or("expected {\"sql\": string, \"params\": [...]}")?;
    let params = match v.get("params") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|p| match p {
                Value::Null => None,
                Value::String(s) => Some(s.clone()),
                other => Some(other.to_string()),
            })
            .collect(),
        Some(_) => return Err("\"params\" must be an array".to_owned()),
    };
    Ok((sql.to_owned(), params))
}

fn json_text(status: StatusCode, body: String) -> Result<Response<Body>, Error> {
    Ok(Response::builder().status(status).header("content-type", "application/json").body(body.into())?)
}
