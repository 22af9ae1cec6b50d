//! The PostgREST query grammar through parse → plan → SQL, on a schema whose names are hostile:
//! any statement built must keep request text out of the SQL (see `madbase::rest::injection`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(query) = std::str::from_utf8(data) {
        if let Err(violation) = madbase::rest::injection::check_read_query(query) {
            panic!("{query:?}: {violation}");
        }
    }
});
