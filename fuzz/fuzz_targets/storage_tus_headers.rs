//! Fuzzes the header parsers of Storage's resumable uploads (no I/O): `Upload-Metadata`, the
//! integer headers, `Upload-Checksum`, upload ids and the `Location` origin. Any text must parse or be refused
//! without a panic; what parses must keep the protocol's rules (metadata keys, canonical
//! integers, a host fit for a header) and ids must round-trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use madbase_storage::tus::checksum::{UploadChecksum, MAX_CHECKSUM_BYTES};
use madbase_storage::tus::headers::{
    origin, parse_integer, Forwarding, Metadata, UploadId, MAX_INTEGER, MAX_METADATA_BYTES,
};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };

    if let Ok(metadata) = Metadata::parse(text) {
        assert!(text.len() <= MAX_METADATA_BYTES);
        for key in metadata.keys() {
            assert!(!key.is_empty() && key.bytes().all(|b| b.is_ascii() && b != b' ' && b != b','));
            assert!(text.contains(key));
        }
    }

    if let Ok(n) = parse_integer("upload-offset", text) {
        assert!(n <= MAX_INTEGER);
        assert_eq!(n.to_string(), text, "only the canonical form is taken");
    }

    if let Ok(checksum) = UploadChecksum::parse(text) {
        assert!(text.len() <= MAX_CHECKSUM_BYTES);
        assert_eq!(checksum.digest.len(), checksum.algorithm.output_len());
    }

    if let Some(id) = UploadId::decode(text) {
        assert_eq!(UploadId::decode(&id.encode()), Some(id.clone()));
        assert!(!id.key.split('/').any(|s| s == ".." || s == "."));
    }

    // Five headers from one input, separated by NUL.
    let mut parts = text.split('\0');
    let mut next = || parts.next().filter(|p| !p.is_empty());
    let headers = Forwarding {
        host: next(),
        forwarded: next(),
        x_forwarded_host: next(),
        x_forwarded_proto: next(),
        x_forwarded_port: next(),
    };
    if let Ok(origin) = origin(&headers) {
        let (scheme, host) = origin.split_once("://").expect("a scheme");
        assert!(scheme == "http" || scheme == "https");
        // The host goes into a `Location` header and a URL: no separators, no controls.
        assert!(!host.is_empty() && host.bytes().all(|b| b.is_ascii_graphic() && b != b'/'));
    }
});
