//! Fuzzes the pgoutput decoder (`madbase_realtime::pgoutput`): it must return, never panic,
//! and whatever it accepts must re-encode to bytes that decode to the same message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use madbase_realtime::pgoutput::{decode, encode};

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = decode(data) {
        let again = encode::message(&msg);
        assert_eq!(decode(&again).as_ref(), Ok(&msg));
    }
});
