//! Postgres-function hooks (`[auth.hook.*]`, `pg-functions://<database>/<schema>/<function>`).

/// The `(schema, function)` a `pg-functions://` URI names, if it is one.
pub fn parse_uri(uri: &str) -> Option<(&str, &str)> {
    let rest = uri.strip_prefix("pg-functions://")?;
    let mut parts = rest.split('/');
    let (_database, schema, function) = (parts.next()?, parts.next()?, parts.next()?);
    let plain = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    (parts.next().is_none() && plain(schema) && plain(function)).then_some((schema, function))
}
