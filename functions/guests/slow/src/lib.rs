//! `slow`: sleeps `?ms=` milliseconds (default 10000) with the wasi monotonic clock
//! (`wasi:clocks/monotonic-clock.subscribe-duration`, through `wstd::task::sleep`), then answers
//! 200 `text/plain` `done`.

use wstd::http::{Body, Error, Request, Response};
use wstd::time::Duration;

#[wstd::http_server]
async fn main(request: Request<Body>) -> Result<Response<Body>, Error> {
    let ms = query_param(request.uri().query(), "ms").and_then(|v| v.parse::<u64>().ok()).unwrap_or(10_000);
    wstd::task::sleep(Duration::from_millis(ms)).await;
    Ok(Response::builder().header("content-type", "text/plain").body("done".into())?)
}

fn query_param<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?.split('&').find_map(|pair| pair.split_once('=').filter(|(k, _)| *k == name).map(|(_, v)| v))
}
