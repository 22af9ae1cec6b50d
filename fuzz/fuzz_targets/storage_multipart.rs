//! Fuzzes Storage's multipart/form-data parser (no I/O): any bytes, fed in chunks of a fuzzed
//! stride, must parse without a panic, hand out no more than came in, hold back a bounded tail
//! and say nothing after `End`.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use madbase_storage::multipart::{Event, Limits, Parser};

const BOUNDARY: &str = "X-BOUNDARY";

fuzz_target!(|data: &[u8]| {
    let Some((&stride, input)) = data.split_first() else { return };
    let stride = usize::from(stride) + 1;
    // What the parser may keep in the buffer while it waits: an unfinished header block or a
    // tail that could begin the delimiter `\r\n--X-BOUNDARY`.
    let held = Limits::default().max_header_bytes.max(BOUNDARY.len() + 4);
    let mut parser = Parser::new(BOUNDARY);
    let mut buf = BytesMut::new();
    let (mut data_bytes, mut ended) = (0, false);
    for chunk in input.chunks(stride) {
        buf.extend_from_slice(chunk);
        assert!(buf.len() <= input.len() + stride);
        loop {
            match parser.parse(&mut buf) {
                Ok(Some(event)) => {
                    assert!(!ended, "{event:?} after End");
                    match event {
                        Event::Data(bytes) => data_bytes += bytes.len(),
                        Event::End => ended = true,
                        Event::Part(_) | Event::PartEnd => {}
                    }
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
        assert!(buf.len() <= held, "{} bytes held", buf.len());
    }
    assert!(data_bytes <= input.len());
    assert_eq!(parser.finish().is_ok(), ended);
});
