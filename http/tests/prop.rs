//! Property test: random and mutated input to the network-facing parsers never panics, and
//! valid input survives arbitrary read splits. Fixed seed, plain loop (no extra deps).

use bytes::BytesMut;
use madbase_http::fuzzing::{decode_chunked, decode_frames, parse_request, parse_request_head, HeadLimits};
use madbase_http::ws::frame::{encode_client_frame, Incoming, OpCode};
use madbase_http::Message;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const SEEDS: &[&[u8]] = &[
    b"GET /rest/v1/todos?select=* HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n",
    b"POST /u HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;a=b\r\nhello\r\n0\r\nT: v\r\n\r\n",
    b"PUT /s HTTP/1.0\r\nContent-Length: 3\r\nConnection: keep-alive\r\n\r\nabc",
    b"GET http://h.example:80/p?q=1 HTTP/1.1\r\nHost: x\r\n\r\n",
    b"OPTIONS * HTTP/1.1\r\nHost: [::1]:80\r\n\r\n",
];

fn mutate(rng: &mut StdRng, base: &[u8]) -> Vec<u8> {
    let mut v = base.to_vec();
    for _ in 0..rng.gen_range(1..8) {
        match rng.gen_range(0..5) {
            0 if !v.is_empty() => {
                let i = rng.gen_range(0..v.len());
                v[i] = rng.gen();
            }
            1 => {
                let i = rng.gen_range(0..=v.len());
                v.insert(i, *b"\r\n:; 0fF-\t".get(rng.gen_range(0..10)).unwrap_or(&0));
            }
            2 if !v.is_empty() => {
                let i = rng.gen_range(0..v.len());
                v.remove(i);
            }
            3 => {
                let i = rng.gen_range(0..=v.len());
                let n = rng.gen_range(0..64);
                v.splice(i..i, (0..n).map(|_| rng.gen::<u8>()));
            }
            _ => v.truncate(rng.gen_range(0..=v.len())),
        }
    }
    v
}

#[test]
fn parsers_never_panic_on_random_input() {
    let mut rng = StdRng::seed_from_u64(0x006d_6164_6261_7365);
    let limits = HeadLimits::default();
    for i in 0..20_000 {
        let input: Vec<u8> = if i % 3 == 0 {
            (0..rng.gen_range(0..512)).map(|_| rng.gen()).collect()
        } else {
            mutate(&mut rng, SEEDS[i % SEEDS.len()])
        };
        let _ = parse_request_head(&input, &limits);
        parse_request(&input);
        let _ = decode_chunked(&input, rng.gen_range(1..16));
        let _ = decode_frames(&input, rng.gen_range(1..16), 1024, 4096);
    }
}

#[test]
fn valid_frames_decode_under_any_split() {
    let mut rng = StdRng::seed_from_u64(42);
    for _ in 0..2_000 {
        let mut wire = BytesMut::new();
        let mut expect = Vec::new();
        for _ in 0..rng.gen_range(1..6) {
            let len = rng.gen_range(0..300);
            let payload: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
            let key = rng.gen();
            if rng.gen_bool(0.5) {
                let cut = rng.gen_range(0..=len);
                encode_client_frame(&mut wire, false, OpCode::Binary, &payload[..cut], key);
                encode_client_frame(&mut wire, true, OpCode::Continuation, &payload[cut..], key);
            } else {
                encode_client_frame(&mut wire, true, OpCode::Binary, &payload, key);
            }
            expect.push(Incoming::Message(Message::Binary(payload.into())));
        }
        let (got, err) = decode_frames(&wire, rng.gen_range(1..40), 1024, 4096);
        assert!(err.is_none());
        assert_eq!(got, expect);
        // And the same with random single-byte corruption never panics.
        let mut bad = wire.to_vec();
        let i = rng.gen_range(0..bad.len());
        bad[i] ^= rng.gen_range(1..=255u8);
        let _ = decode_frames(&bad, rng.gen_range(1..40), 1024, 4096);
    }
}

#[test]
fn chunked_decodes_under_any_split() {
    let mut rng = StdRng::seed_from_u64(7);
    for _ in 0..2_000 {
        let mut wire = Vec::new();
        let mut expect = Vec::new();
        for _ in 0..rng.gen_range(0..6) {
            let len = rng.gen_range(1..200);
            let data: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
            wire.extend_from_slice(format!("{len:x}\r\n").as_bytes());
            wire.extend_from_slice(&data);
            wire.extend_from_slice(b"\r\n");
            expect.extend_from_slice(&data);
        }
        wire.extend_from_slice(b"0\r\n\r\n");
        let (got, done) = decode_chunked(&wire, rng.gen_range(1..50)).expect("valid chunked");
        assert!(done);
        assert_eq!(got, expect);
    }
}
