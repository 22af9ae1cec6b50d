//! Fuzzes Realtime's Phoenix frame decoders (`madbase_realtime::protocol`): text frames of both
//! serializer versions, vsn 2 binary frames, and the filter grammar of `postgres_changes`. None
//! may panic; a decoded user broadcast re-encodes to a frame of the payload's length.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use madbase_realtime::filter::Filter;
use madbase_realtime::protocol::{broadcast_frames, decode_binary, decode_text, InPayload, Vsn};

fuzz_target!(|data: &[u8]| {
    let frame = Bytes::copy_from_slice(data);
    if let Ok(inbound) = decode_binary(&frame) {
        if let InPayload::UserBroadcast { event, payload } = &inbound.payload {
            let _ = broadcast_frames(&inbound.topic, event, payload, None, true);
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = decode_text(Vsn::V1, text);
        let _ = decode_text(Vsn::V2, text);
        let _ = Filter::parse(text);
    }
});
