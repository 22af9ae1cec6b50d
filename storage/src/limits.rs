//! The input rules of Supabase Storage that are not the database's: bucket names, file size
//! limits written with units, and MIME type patterns (reference/storage.md §3).

use serde_json::Value;

use crate::error::StorageError;

/// Bucket names Supabase reserves for its Iceberg (analytics) buckets end so.
const RESERVED_BUCKET_SUFFIX: &str = "--table-s3";

/// A bucket name Supabase Storage accepts: 1–100 characters of `A-Z a-z 0-9 _ ! . * ' ( ) space &
/// $ = @ ; : + , ? -`, no leading or trailing blank, not a reserved suffix.
pub fn check_bucket_name(name: &str) -> Result<(), StorageError> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "_!.*'() &$=@;:+,?-".contains(c);
    let valid = !name.is_empty()
        && name.chars().count() < 101
        && name.chars().all(allowed)
        && name.trim() == name
        && !name.ends_with(RESERVED_BUCKET_SUFFIX);
    if valid {
        Ok(())
    } else {
        Err(StorageError::invalid_bucket_name())
    }
}

/// What a `file_size_limit` field asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum SizeLimit {
    /// Not given: leave as it is.
    Absent,
    /// `null`: no bucket limit.
    Null,
    /// Bytes, as the number Supabase computes (a fractional count of bytes is possible, and
    /// refused by the `bigint` column as Supabase's is).
    Bytes(f64),
}

/// Reads `file_size_limit`: an integer ≥ 0 or a string like `"20MB"` (`GB`, `MB`, `KB`, `B`, any
/// case, decimal units, the number rounded to 3 significant digits as Supabase does), capped by
/// the project's limit (`EntityTooLarge` above it).
pub fn size_limit(value: Option<&Value>, global_max: u64) -> Result<SizeLimit, StorageError> {
    let bytes = match value {
        None => return Ok(SizeLimit::Absent),
        Some(Value::Null) => return Ok(SizeLimit::Null),
        Some(Value::Number(n)) => match n.as_u64() {
            Some(n) => n as f64,
            None => return Err(StorageError::validation(ANY_OF)),
        },
        Some(Value::String(s)) => parse_size(s)?,
        Some(_) => return Err(StorageError::validation(ANY_OF)),
    };
    if bytes > global_max as f64 {
        return Err(StorageError::entity_too_large());
    }
    Ok(SizeLimit::Bytes(bytes))
}

/// The schema message for a `file_size_limit` that is neither form.
const ANY_OF: &str = "body/file_size_limit must match a schema in anyOf";

fn parse_size(text: &str) -> Result<f64, StorageError> {
    let lower = text.to_ascii_lowercase();
    let unit_at = lower.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(lower.len());
    let (number, unit) = lower.split_at(unit_at);
    let well_formed = !number.is_empty()
        && number.as_bytes()[0].is_ascii_digit()
        && number.matches('.').count() <= 1
        && !number.ends_with('.');
    let factor = match unit {
        "gb" => 1e9,
        "mb" => 1e6,
        "kb" => 1e3,
        "b" => 1.0,
        _ => return Err(StorageError::validation(ANY_OF)),
    };
    if !well_formed {
        return Err(StorageError::validation(ANY_OF));
    }
    let value: f64 = number.parse().map_err(|_| StorageError::invalid_file_size_limit())?;
    Ok(three_significant_digits(value) * factor)
}

/// JavaScript's `+x.toPrecision(3)`.
fn three_significant_digits(x: f64) -> f64 {
    if x == 0.0 || !x.is_finite() {
        return x;
    }
    let digits = x.abs().log10().floor() as i32;
    let scale = 10f64.powi(2 - digits);
    (x * scale).round() / scale
}

/// The number as JavaScript prints it (what Supabase sends to the `bigint` column).
pub fn js_number(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e21 {
        format!("{}", x as u64)
    } else {
        format!("{x}")
    }
}

/// Reads `allowed_mime_types`: `None` when absent, `Some(None)` for `null`, else the non-empty
/// entries, each a `type/subtype` (with an optional charset) or ending in `*`.
pub fn mime_types(value: Option<&Value>) -> Result<Option<Option<Vec<String>>>, StorageError> {
    let list = match value {
        None => return Ok(None),
        Some(Value::Null) => return Ok(Some(None)),
        Some(Value::Array(list)) => list,
        Some(_) => return Err(StorageError::validation("body/allowed_mime_types must be array")),
    };
    let mut types = Vec::with_capacity(list.len());
    for (i, item) in list.iter().enumerate() {
        let Some(mime) = item.as_str() else {
            return Err(StorageError::validation(format!("body/allowed_mime_types/{i} must be string")));
        };
        if mime.is_empty() {
            continue;
        }
        if mime.len() > 1000 || !valid_mime_pattern(mime) {
            return Err(StorageError::invalid_mime_type(mime));
        }
        types.push(mime.to_owned());
    }
    Ok(Some(Some(types)))
}

/// `^([a-zA-Z0-9\-+.]+)/([a-zA-Z0-9\-+.]+)(;\s*charset=[a-zA-Z0-9\-]+)?$`, or anything ending in
/// `*` (the pattern Supabase Storage checks).
fn valid_mime_pattern(mime: &str) -> bool {
    if mime.ends_with('*') {
        return true;
    }
    let token = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-+.".contains(&b));
    let (essence, charset) = match mime.split_once(';') {
        Some((essence, rest)) => (essence, Some(rest)),
        None => (mime, None),
    };
    let Some((kind, subtype)) = essence.split_once('/') else { return false };
    let charset_ok = charset.is_none_or(|rest| {
        rest.trim_start()
            .strip_prefix("charset=")
            .is_some_and(|c| !c.is_empty() && c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
    });
    token(kind) && token(subtype) && charset_ok
}

/// Whether `mime` is one of a bucket's `allowed_mime_types`, compared as Supabase Storage does:
/// the text before and after the first `/`, `type/*` matching any subtype.
pub fn mime_allowed(mime: &str, allowed: &[String]) -> bool {
    let mut requested = mime.split('/');
    let (Some(kind), Some(subtype)) = (requested.next(), requested.next()) else { return false };
    allowed.iter().any(|pattern| {
        let mut parts = pattern.split('/');
        parts.next() == Some(kind) && matches!(parts.next(), Some(s) if s == "*" || s == subtype)
    })
}

/// Longest object key, in bytes (S3's limit).
pub const MAX_KEY_BYTES: usize = 1024;

/// An object key as Supabase Storage accepts it (S3's safe characters, `/` between folders), and
/// none of `.`/`..` as a folder (a key is never a path on any backend).
pub fn check_object_key(key: &str) -> Result<(), StorageError> {
    let safe = |b: u8| b.is_ascii_alphanumeric() || b"_/!.*'() &$=@;:+,?-".contains(&b);
    let dot_segment = key.split('/').any(|s| s == "." || s == "..");
    if key.is_empty() || key.len() > MAX_KEY_BYTES || !key.bytes().all(safe) || dot_segment || key.starts_with('/') {
        return Err(StorageError::invalid_key(key));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bucket_names() {
        assert!(check_bucket_name("avatars").is_ok());
        assert!(check_bucket_name("my bucket (1)").is_ok());
        for bad in ["", " lead", "trail ", "a/b", "über", "x--table-s3", &"a".repeat(101)] {
            assert!(check_bucket_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn size_limits_as_supabase_computes_them() {
        let max = 50 * 1024 * 1024;
        assert_eq!(size_limit(Some(&json!("20mb")), max), Ok(SizeLimit::Bytes(20e6)));
        assert_eq!(size_limit(Some(&json!("1kb")), max), Ok(SizeLimit::Bytes(1000.0)));
        assert_eq!(size_limit(Some(&json!("1.2345MB")), max), Ok(SizeLimit::Bytes(1_230_000.0)));
        assert_eq!(size_limit(Some(&json!(1000)), max), Ok(SizeLimit::Bytes(1000.0)));
        assert_eq!(size_limit(Some(&json!(null)), max), Ok(SizeLimit::Null));
        assert_eq!(size_limit(None, max), Ok(SizeLimit::Absent));
        assert_eq!(size_limit(Some(&json!("1GB")), max).unwrap_err().code, "EntityTooLarge");
        assert_eq!(size_limit(Some(&json!("20 parsecs")), max).unwrap_err().code, "InvalidRequest");
        assert_eq!(size_limit(Some(&json!(-1)), max).unwrap_err().code, "InvalidRequest");
        assert_eq!(js_number(1_230_000.0), "1230000");
        assert_eq!(js_number(1.5), "1.5");
    }

    #[test]
    fn mime_type_patterns() {
        for ok in ["image/png", "image/*", "text/plain;charset=utf-8", "application/vnd.api+json", "*"] {
            assert!(valid_mime_pattern(ok), "{ok}");
        }
        for bad in ["image", "image/png;foo=bar", "ima ge/png", "/png"] {
            assert!(!valid_mime_pattern(bad), "{bad}");
        }
        assert_eq!(mime_types(Some(&json!(["image/png", ""]))), Ok(Some(Some(vec!["image/png".to_owned()]))));
        assert_eq!(mime_types(Some(&json!(["nope"]))).unwrap_err().code, "InvalidMimeType");
    }

    #[test]
    fn mime_types_allowed_as_supabase_compares_them() {
        let allowed = ["image/*".to_owned(), "text/plain".to_owned()];
        assert!(mime_allowed("image/png", &allowed));
        assert!(mime_allowed("text/plain", &allowed));
        assert!(!mime_allowed("text/plain;charset=utf-8", &allowed));
        assert!(!mime_allowed("image", &allowed));
        assert!(!mime_allowed("application/json", &allowed));
    }

    #[test]
    fn object_keys() {
        for ok in ["a.txt", "folder/sub/a b (1).png", "x/.emptyFolderPlaceholder", "a..b"] {
            assert!(check_object_key(ok).is_ok(), "{ok}");
        }
        let long = "a".repeat(MAX_KEY_BYTES + 1);
        for bad in ["", "../etc/passwd", "a/../b", "a/./b", "/abs", "a\\b", "nul\0", "über.txt", "a%2e", long.as_str()]
        {
            assert_eq!(check_object_key(bad).unwrap_err().code, "InvalidKey", "{bad:?}");
        }
    }
}
