//! `stream`: a truly streamed response, written on the raw WASI 0.2 interfaces (no async runtime)
//! so that every step is explicit.
//!
//! Answers 200 `text/event-stream` (`cache-control: no-cache`) at once, then writes
//! `data: <n>\n\n` for n = 0..N-1 (N from the query `?n=`, default 5), each with one
//! `blocking-write-and-flush` on the body's output stream, sleeping `?ms=` milliseconds (default
//! 200) between two events on the wasi monotonic clock (`subscribe-duration` + `block`). Stops
//! early, without error, when the host reports the body stream closed (the client went away).

use wasip2::clocks::monotonic_clock;
use wasip2::http::types::{Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam};

struct Stream;

impl wasip2::exports::http::incoming_handler::Guest for Stream {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let path_with_query = request.path_with_query().unwrap_or_default();
        let query = path_with_query.split_once('?').map(|(_, q)| q);
        let n = query_param(query, "n").unwrap_or(5);
        let ms = query_param(query, "ms").unwrap_or(200);

        let headers = Fields::from_list(&[
            ("content-type".to_owned(), b"text/event-stream".to_vec()),
            ("cache-control".to_owned(), b"no-cache".to_vec()),
        ])
        .expect("valid headers");
        let response = OutgoingResponse::new(headers);
        let body = response.body().expect("first call to body");
        ResponseOutparam::set(response_out, Ok(response));

        let out = body.write().expect("first call to write");
        for i in 0..n {
            if i > 0 {
                monotonic_clock::subscribe_duration(ms.saturating_mul(1_000_000)).block();
            }
            let event = format!("data: {i}\n\n");
            if out.blocking_write_and_flush(event.as_bytes()).is_err() {
                return; // the body stream is closed: nobody is reading any more
            }
        }
        drop(out);
        let _ = OutgoingBody::finish(body, None);
    }
}

wasip2::http::proxy::export!(Stream with_types_in wasip2);

fn query_param(query: Option<&str>, name: &str) -> Option<u64> {
    query?
        .split('&')
        .find_map(|pair| pair.split_once('=').filter(|(k, _)| *k == name))
        .and_then(|(_, v)| v.parse().ok())
}
