//! The PostgREST request surface through parse → plan → SQL, on a schema whose names are hostile:
//! any statement built must keep request text out of the SQL (see `madbase_rest::injection`).
//! The first byte picks the kind of request (read, write method, RPC by GET or POST) and its
//! `Prefer` and `Accept`; the rest is split at the first NUL into the query string and the body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use madbase_rest::injection::{check_request, CheckedRequest, FUNCTIONS};

const METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"];
const PREFERS: &[&str] = &[
    "count=exact",
    "count=planned, return=representation",
    "count=estimated, resolution=merge-duplicates, missing=default",
    "return=headers-only, resolution=ignore-duplicates, handling=strict, max-affected=1",
];
const ACCEPTS: &[&str] = &[
    "",
    "text/csv",
    "application/geo+json",
    "application/vnd.pgrst.object+json",
    "application/vnd.pgrst.plan+json; for=\"text/csv\"; options=analyze|verbose",
    "application/vnd.pgrst.array+json;nulls=stripped",
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else { return };
    let (query, body) = match rest.iter().position(|b| *b == 0) {
        Some(at) => (&rest[..at], &rest[at + 1..]),
        None => (rest, &[][..]),
    };
    let Ok(query) = std::str::from_utf8(query) else { return };
    let selector = usize::from(selector);
    let rpc = selector % 3 == 0;
    let method = if rpc { ["GET", "POST", "HEAD"][selector / 3 % 3] } else { METHODS[selector % METHODS.len()] };
    let checked = CheckedRequest {
        method,
        function: rpc.then(|| FUNCTIONS[selector / 9 % FUNCTIONS.len()]),
        query,
        prefer: PREFERS[selector / 4 % PREFERS.len()],
        accept: ACCEPTS[selector / 16 % ACCEPTS.len()],
        body,
    };
    if let Err(violation) = check_request(&checked) {
        panic!("{checked:?}: {violation}");
    }
});
