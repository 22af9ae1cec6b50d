//! Fuzzes the HTTP request-head parser and the chunked body decoder (no I/O).
#![no_main]

use libfuzzer_sys::fuzz_target;
use madbase_http::fuzzing::{decode_chunked, parse_request, parse_request_head, HeadLimits};

fuzz_target!(|data: &[u8]| {
    let _ = parse_request_head(data, &HeadLimits::default());
    parse_request(data);
    // The first byte picks the read split so partial-input paths are exercised too.
    let split = data.first().map_or(1, |b| usize::from(*b % 32) + 1);
    let _ = decode_chunked(data, split);
});
