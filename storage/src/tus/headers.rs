//! The request headers of the TUS protocol, parsed without I/O: `Upload-Offset` and
//! `Upload-Length`, `Upload-Metadata`, the upload id of the URL, and the scheme and host a
//! `Location` names. Fuzzed by `fuzz/fuzz_targets/storage_tus_headers.rs`.
//!
//! The rules are tus-node-server's (Supabase Storage's TUS server), so a client meets the same
//! refusals: an integer header is the canonical decimal form of a non-negative integer no larger
//! than JavaScript's largest safe integer; `Upload-Metadata` is comma-separated `key base64`
//! pairs with unique ASCII keys. Invariants: every parser is bounded by its input's length (and
//! refuses inputs over its limit before looking at them); an [`UploadId`] that decodes names a
//! valid bucket, a valid object key and a generated version, so it can name a directory and an
//! object row without further checks.

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;

use crate::limits::{check_bucket_name, check_object_key};
use crate::store::is_version;

/// The protocol version MadBase speaks (`Tus-Resumable`, `Tus-Version`).
pub const TUS_VERSION: &str = "1.0.0";
/// The media type of the bytes of a `PATCH` (and of a creation with upload).
pub const OFFSET_OCTET_STREAM: &str = "application/offset+octet-stream";
/// Longest `Upload-Metadata` header taken, in bytes (the file name, type, cache control and the
/// user metadata of one object; the whole request head is bounded by the server as well).
pub const MAX_METADATA_BYTES: usize = 8 * 1024;
/// Most key-value pairs in `Upload-Metadata`.
pub const MAX_METADATA_PAIRS: usize = 32;
/// Largest offset or length: JavaScript's `Number.MAX_SAFE_INTEGER`, as tus-node-server's
/// validator accepts them.
pub const MAX_INTEGER: u64 = (1 << 53) - 1;
/// Longest upload id segment: the base64 of a bucket name, a key of at most 1024 bytes and a
/// version.
pub const MAX_ID_BYTES: usize = 1600;

/// A header the protocol cannot take. The display is the plain-text answer's first line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// Malformed (tus-node-server's `Invalid <header>`).
    #[error("Invalid {0}")]
    Invalid(&'static str),
    /// Longer than this module takes.
    #[error("The {0} header is too large")]
    TooLarge(&'static str),
}

/// An integer header (`upload-offset`, `upload-length`): canonical decimal digits, at most
/// [`MAX_INTEGER`].
pub fn parse_integer(name: &'static str, value: &str) -> Result<u64, HeaderError> {
    let canonical = !value.is_empty()
        && value.len() <= 16
        && value.bytes().all(|b| b.is_ascii_digit())
        && (value == "0" || !value.starts_with('0'));
    match value.parse::<u64>() {
        Ok(n) if canonical && n <= MAX_INTEGER => Ok(n),
        _ => Err(HeaderError::Invalid(name)),
    }
}

/// `Upload-Metadata`: its keys and their decoded values (`None` for a key given without one),
/// in the order sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metadata {
    pairs: Vec<(String, Option<String>)>,
}

/// Standard base64 as Node's `Buffer` decodes it: padding checked by the caller's pattern,
/// trailing bits ignored.
const METADATA_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

impl Metadata {
    /// Parses the header as tus-node-server does: `key value` pairs separated by `,`; a key is
    /// non-empty ASCII without space or comma and appears once; a value is base64 (a length that
    /// is a multiple of 4, padding only at its end), decoded as UTF-8 (invalid sequences
    /// replaced, as Node's `Buffer#toString` does).
    pub fn parse(header: &str) -> Result<Metadata, HeaderError> {
        const NAME: &str = "upload-metadata";
        if header.len() > MAX_METADATA_BYTES {
            return Err(HeaderError::TooLarge("Upload-Metadata"));
        }
        if header.trim().is_empty() {
            return Err(HeaderError::Invalid(NAME));
        }
        let mut pairs: Vec<(String, Option<String>)> = Vec::new();
        for pair in header.split(',') {
            if pairs.len() == MAX_METADATA_PAIRS {
                return Err(HeaderError::TooLarge("Upload-Metadata"));
            }
            let mut tokens = pair.split(' ');
            let key = tokens.next().unwrap_or_default();
            let value = tokens.next();
            let valid_key = !key.is_empty() && key.bytes().all(|b| b.is_ascii() && b != b' ' && b != b',');
            if tokens.next().is_some() || !valid_key || pairs.iter().any(|(k, _)| k == key) {
                return Err(HeaderError::Invalid(NAME));
            }
            let value = match value {
                None => None,
                Some(encoded) => {
                    if !is_padded_base64(encoded) {
                        return Err(HeaderError::Invalid(NAME));
                    }
                    let bytes = METADATA_BASE64.decode(encoded).map_err(|_| HeaderError::Invalid(NAME))?;
                    Some(String::from_utf8_lossy(&bytes).into_owned())
                }
            };
            pairs.push((key.to_owned(), value));
        }
        debug_assert!(!pairs.is_empty() && pairs.len() <= MAX_METADATA_PAIRS);
        Ok(Metadata { pairs })
    }

    /// The value of `key`; `None` when it is absent or has no value.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs.iter().find(|(k, _)| k == key).and_then(|(_, v)| v.as_deref())
    }

    /// The keys, in the order sent.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.pairs.iter().map(|(k, _)| k.as_str())
    }
}

/// `^[0-9A-Za-z+/]*={0,2}$` with a length that is a multiple of 4.
#[allow(clippy::manual_is_multiple_of)] // `usize::is_multiple_of` is newer than the workspace's Rust 1.85
fn is_padded_base64(value: &str) -> bool {
    let body = value.trim_end_matches('=');
    value.len() % 4 == 0
        && value.len() - body.len() <= 2
        && body.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

/// `cacheControl` metadata as Supabase Storage stores it: an integer `n` is `max-age=n`,
/// anything else (or nothing) `no-cache`.
pub fn cache_control(value: Option<&str>) -> String {
    match value {
        Some(v) if is_integer_text(v) => format!("max-age={v}"),
        _ => "no-cache".to_owned(),
    }
}

/// `^-?\d+$`.
fn is_integer_text(v: &str) -> bool {
    let digits = v.strip_prefix('-').unwrap_or(v);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// What an upload URL names: the object and the version it will have. Its text is the base64url
/// (unpadded) of `<bucket>/<key>/<version>`, Supabase Storage's id without its tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadId {
    pub bucket: String,
    pub key: String,
    pub version: String,
}

impl UploadId {
    /// The id's URL segment.
    pub fn encode(&self) -> String {
        let text = format!("{}/{}/{}", self.bucket, self.key, self.version);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
    }

    /// The id a URL segment names; `None` unless it decodes to a valid bucket, key and version.
    pub fn decode(segment: &str) -> Option<UploadId> {
        if segment.is_empty() || segment.len() > MAX_ID_BYTES {
            return None;
        }
        let lenient = GeneralPurpose::new(
            &alphabet::URL_SAFE,
            GeneralPurposeConfig::new()
                .with_decode_allow_trailing_bits(true)
                .with_decode_padding_mode(DecodePaddingMode::Indifferent),
        );
        let text = String::from_utf8(lenient.decode(segment).ok()?).ok()?;
        let (bucket, rest) = text.split_once('/')?;
        let (key, version) = rest.rsplit_once('/')?;
        if check_bucket_name(bucket).is_err() || check_object_key(key).is_err() || !is_version(version) {
            return None;
        }
        Some(UploadId { bucket: bucket.to_owned(), key: key.to_owned(), version: version.to_owned() })
    }
}

/// The request headers that decide the scheme and host of a `Location`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Forwarding<'a> {
    pub host: Option<&'a str>,
    pub forwarded: Option<&'a str>,
    pub x_forwarded_host: Option<&'a str>,
    pub x_forwarded_proto: Option<&'a str>,
    pub x_forwarded_port: Option<&'a str>,
}

/// Longest host name taken for a `Location`.
const MAX_HOST_BYTES: usize = 255;

/// `<scheme>://<host>` of the URLs the server hands out, as Supabase Storage's TUS server makes
/// them behind a proxy: `Forwarded` (`host=`, `proto=`), then `X-Forwarded-Host` (with a
/// non-default `X-Forwarded-Port`) and `X-Forwarded-Proto` (`http` or `https` only), then `Host`
/// and `http`. A host with characters no host name has is refused (it is echoed in a header).
pub fn origin(headers: &Forwarding<'_>) -> Result<String, HeaderError> {
    let mut proto = None;
    let mut host = None;
    if let Some(forwarded) = headers.forwarded {
        let first = forwarded.split(',').next().unwrap_or_default();
        for part in first.split(';').map(str::trim) {
            let Some((name, value)) = part.split_once('=') else { continue };
            let value = value.trim_matches('"');
            match name.trim().to_ascii_lowercase().as_str() {
                "host" if host.is_none() && !value.is_empty() => host = Some(value.to_owned()),
                "proto" if proto.is_none() && (value == "http" || value == "https") => proto = Some(value),
                _ => {}
            }
        }
    }
    match headers.x_forwarded_proto {
        Some(p @ ("http" | "https")) => proto = proto.or(Some(p)),
        Some(_) => return Err(HeaderError::Invalid("x-forwarded-proto")),
        None => {}
    }
    if let Some(forwarded_host) = headers.x_forwarded_host {
        let first = forwarded_host.split(',').next().unwrap_or_default().trim();
        if host.is_none() && !first.is_empty() {
            let mut with_port = first.to_owned();
            if let Some(port) = headers.x_forwarded_port.filter(|p| !matches!(*p, "" | "80" | "443")) {
                if !port.bytes().all(|b| b.is_ascii_digit()) || port.len() > 5 {
                    return Err(HeaderError::Invalid("x-forwarded-port"));
                }
                // Appended, or in place of a trailing `:<digits>` (`[::1]:80`, `host:80`).
                with_port = match with_port.rsplit_once(':') {
                    None => format!("{with_port}:{port}"),
                    Some((name, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                        format!("{name}:{port}")
                    }
                    Some(_) => with_port,
                };
            }
            host = Some(with_port);
        }
    }
    let host = host.or_else(|| headers.host.map(str::to_owned)).ok_or(HeaderError::Invalid("host"))?;
    let valid_host = !host.is_empty()
        && host.len() <= MAX_HOST_BYTES
        && host.bytes().all(|b| b.is_ascii_alphanumeric() || b".-_:[]".contains(&b));
    if !valid_host {
        return Err(HeaderError::Invalid("host"));
    }
    Ok(format!("{}://{host}", proto.unwrap_or("http")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_are_canonical_and_bounded() {
        assert_eq!(parse_integer("upload-offset", "0"), Ok(0));
        assert_eq!(parse_integer("upload-offset", "6291456"), Ok(6_291_456));
        assert_eq!(parse_integer("upload-length", "9007199254740991"), Ok(MAX_INTEGER));
        for bad in ["", "-1", "+1", "01", "1.0", " 1", "1e3", "0x10", "9007199254740992", "99999999999999999999"] {
            assert_eq!(parse_integer("upload-length", bad), Err(HeaderError::Invalid("upload-length")), "{bad:?}");
        }
    }

    #[test]
    fn metadata_as_tus_js_client_sends_it() {
        let header = "bucketName YnVja2V0,objectName Zm9sZGVyL2JpZy5iaW4=,contentType \
                      YXBwbGljYXRpb24vb2N0ZXQtc3RyZWFt,cacheControl MzYwMA==,metadata eyJrIjoidiJ9";
        let m = Metadata::parse(header).unwrap();
        assert_eq!(m.get("bucketName"), Some("bucket"));
        assert_eq!(m.get("objectName"), Some("folder/big.bin"));
        assert_eq!(m.get("contentType"), Some("application/octet-stream"));
        assert_eq!(cache_control(m.get("cacheControl")), "max-age=3600");
        assert_eq!(m.get("metadata"), Some(r#"{"k":"v"}"#));
        assert_eq!(m.get("missing"), None);
        assert_eq!(
            m.keys().collect::<Vec<_>>(),
            ["bucketName", "objectName", "contentType", "cacheControl", "metadata"]
        );
        let bare = Metadata::parse("flag,x eA==").unwrap();
        assert_eq!((bare.get("flag"), bare.get("x")), (None, Some("x")));
    }

    #[test]
    fn bad_metadata_is_refused() {
        let invalid = Err(HeaderError::Invalid("upload-metadata"));
        for bad in
            ["", " ", "k YQ", "k YQ==,k YQ==", "k  YQ==", " k YQ==", "k YQ== x", "k Y*==", "k =YQ=", "ü YQ==", "a,"]
        {
            assert_eq!(Metadata::parse(bad), invalid, "{bad:?}");
        }
        let long = format!("k {}", "A".repeat(MAX_METADATA_BYTES));
        assert_eq!(Metadata::parse(&long), Err(HeaderError::TooLarge("Upload-Metadata")));
        let many = (0..=MAX_METADATA_PAIRS).map(|i| format!("k{i}")).collect::<Vec<_>>().join(",");
        assert_eq!(Metadata::parse(&many), Err(HeaderError::TooLarge("Upload-Metadata")));
    }

    #[test]
    fn cache_control_takes_integers_only() {
        assert_eq!(cache_control(Some("-1")), "max-age=-1");
        assert_eq!(cache_control(Some("max-age=5")), "no-cache");
        assert_eq!(cache_control(Some("")), "no-cache");
        assert_eq!(cache_control(None), "no-cache");
    }

    #[test]
    fn upload_ids_round_trip_and_refuse_what_names_nothing() {
        let id = UploadId {
            bucket: "bucket".into(),
            key: "folder/big.bin".into(),
            version: "4d56e902-f0a0-4662-8448-a4d9e643c142".into(),
        };
        let encoded = id.encode();
        assert!(!encoded.contains('=') && !encoded.contains('+') && !encoded.contains('/'));
        assert_eq!(UploadId::decode(&encoded), Some(id.clone()));
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        for bad in [
            "bucket/folder/big.bin/1",
            "bucket/4d56e902-f0a0-4662-8448-a4d9e643c142",
            "bucket/../x/4d56e902-f0a0-4662-8448-a4d9e643c142",
            "bad bucket!#/x/4d56e902-f0a0-4662-8448-a4d9e643c142",
            "b//4d56e902-f0a0-4662-8448-a4d9e643c142",
        ] {
            assert_eq!(UploadId::decode(&b64(bad)), None, "{bad}");
        }
        assert_eq!(UploadId::decode("not base64 at all"), None);
        assert_eq!(UploadId::decode(""), None);
        assert_eq!(UploadId::decode(&"A".repeat(MAX_ID_BYTES + 1)), None);
    }

    /// The fuzz target's properties over seeded random text (the fuzz target explores further).
    #[test]
    fn random_headers_never_panic_and_keep_their_rules() {
        use rand::{Rng, SeedableRng};
        let alphabet: Vec<char> = "aZ09+/=, -_.:;[]\"ü\r\n\0bucketNamYQ".chars().collect();
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x7e5);
        for _ in 0..20_000 {
            let len = rng.gen_range(0..48);
            let text: String = (0..len).map(|_| alphabet[rng.gen_range(0..alphabet.len())]).collect();
            if let Ok(metadata) = Metadata::parse(&text) {
                assert!(metadata.keys().all(|k| !k.is_empty() && !k.contains([' ', ','])), "{text:?}");
            }
            if let Ok(n) = parse_integer("upload-length", &text) {
                assert_eq!(n.to_string(), text);
            }
            if let Some(id) = UploadId::decode(&text) {
                assert_eq!(UploadId::decode(&id.encode()), Some(id));
            }
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
                let host = origin.split_once("://").map(|(_, h)| h).unwrap_or_default();
                assert!(!host.is_empty() && host.bytes().all(|b| b.is_ascii_graphic() && b != b'/'), "{text:?}");
            }
        }
    }

    #[test]
    fn origins_follow_the_proxy_headers() {
        let plain = Forwarding { host: Some("127.0.0.1:54321"), ..Forwarding::default() };
        assert_eq!(origin(&plain).unwrap(), "http://127.0.0.1:54321");
        let proxied = Forwarding {
            host: Some("internal:8000"),
            x_forwarded_host: Some("project.example.com"),
            x_forwarded_proto: Some("https"),
            x_forwarded_port: Some("8443"),
            ..Forwarding::default()
        };
        assert_eq!(origin(&proxied).unwrap(), "https://project.example.com:8443");
        let forwarded = Forwarding {
            host: Some("internal"),
            forwarded: Some("for=1.2.3.4;host=\"a.example\";proto=https"),
            ..plain
        };
        assert_eq!(origin(&forwarded).unwrap(), "https://a.example");
        assert_eq!(
            origin(&Forwarding { x_forwarded_proto: Some("gopher"), ..plain }),
            Err(HeaderError::Invalid("x-forwarded-proto"))
        );
        assert_eq!(origin(&Forwarding::default()), Err(HeaderError::Invalid("host")));
        assert_eq!(origin(&Forwarding { host: Some("evil\r\nx: y"), ..plain }), Err(HeaderError::Invalid("host")));
    }
}
