//! Fuzzes the WebSocket client-frame decoder and message reassembly (no I/O).
#![no_main]

use libfuzzer_sys::fuzz_target;
use madbase_http::fuzzing::decode_frames;

fuzz_target!(|data: &[u8]| {
    let split = data.first().map_or(1, |b| usize::from(*b % 32) + 1);
    let _ = decode_frames(data, split, 64 * 1024, 256 * 1024);
});
