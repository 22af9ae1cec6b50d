//! `hog`: allocates memory in 1 MiB chunks, writing to every page of each so it is really used,
//! and keeps them all in a `Vec` forever, until the host refuses to grow the linear memory
//! (`memory.grow` fails, the allocator reports it, and Rust aborts: a trap). Never answers
//! normally.

use std::hint::black_box;
use wstd::http::{Body, Error, Request, Response};

const CHUNK: usize = 1 << 20;

#[wstd::http_server]
async fn main(_request: Request<Body>) -> Result<Response<Body>, Error> {
    let mut kept: Vec<Vec<u8>> = Vec::new();
    loop {
        let mut chunk = vec![0u8; CHUNK];
        for i in (0..CHUNK).step_by(4096) {
            chunk[i] = (kept.len() as u8).wrapping_add(1);
        }
        kept.push(black_box(chunk));
    }
}
