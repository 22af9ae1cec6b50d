//! `spin`: loops forever burning CPU and never answers, never yielding to the host (no await, no
//! host call inside the loop); for the host's CPU time / epoch limit. `black_box` keeps the
//! compiler from removing or shortening the loop.

use std::hint::black_box;
use wstd::http::{Body, Error, Request, Response};

#[wstd::http_server]
async fn main(_request: Request<Body>) -> Result<Response<Body>, Error> {
    let mut x: u64 = black_box(1);
    loop {
        x = black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407));
    }
}
