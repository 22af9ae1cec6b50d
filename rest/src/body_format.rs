//! Request body formats other than JSON (reference/rest.md §8.1): `text/csv` (a header line of
//! column names, then one row per line; an unquoted `NULL` is null) and
//! `application/x-www-form-urlencoded` (one row), turned into the JSON the write path binds.
//!
//! Owns: the request body's format (its `Content-Type`) and the two converters. Invariants: every value becomes a JSON string (or null), so
//! PostgreSQL converts it with the column's input function exactly as for a JSON string; the
//! output is one JSON array (CSV) or object (form) built with serde_json, never by pasting text;
//! a malformed body is a 400 PGRST102 naming the problem, and nothing is written.

use bytes::Bytes;
use madbase_http::Request;
use serde_json::{Map, Value};

use super::error::ApiError;
use super::query::percent_decode;

/// The media type of a write or call body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    Json,
    Csv,
    Form,
}

impl BodyFormat {
    /// The body as JSON bytes for the write path.
    pub fn to_json(self, raw: Bytes) -> Result<Bytes, ApiError> {
        match self {
            BodyFormat::Json => Ok(raw),
            BodyFormat::Csv => csv_to_json(&raw),
            BodyFormat::Form => form_to_json(&raw),
        }
    }
}

/// The format of the request body, by its `Content-Type`: JSON (PostgREST's default when none is
/// sent), CSV or a form; anything else is 400 PGRST102.
pub(super) fn check_content_type(req: &Request) -> Result<BodyFormat, ApiError> {
    let Some(value) = req.header("content-type") else { return Ok(BodyFormat::Json) };
    let value = String::from_utf8_lossy(value);
    let media = value.split(';').next().unwrap_or("").trim();
    if media.eq_ignore_ascii_case("application/json") {
        Ok(BodyFormat::Json)
    } else if media.eq_ignore_ascii_case("text/csv") {
        Ok(BodyFormat::Csv)
    } else if media.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        Ok(BodyFormat::Form)
    } else {
        // PostgREST answers 400 PGRST102 here (not 415).
        Err(ApiError::InvalidBody(format!("Content-Type not acceptable: {media}")))
    }
}

fn invalid(what: &str) -> ApiError {
    ApiError::InvalidBody(what.to_owned())
}

/// `a,b\n1,NULL\n"x,y",""` → `[{"a":"1","b":null},{"a":"x,y","b":""}]`.
fn csv_to_json(raw: &[u8]) -> Result<Bytes, ApiError> {
    let text = std::str::from_utf8(raw).map_err(|_| invalid("The CSV body is not valid UTF-8"))?;
    let mut lines = parse_csv(text)?.into_iter();
    let header = lines.next().ok_or_else(|| invalid("The CSV body needs a header line"))?;
    if header.iter().any(|(name, _)| name.is_empty()) {
        return Err(invalid("The CSV header has an empty column name"));
    }
    let mut rows = Vec::new();
    for line in lines {
        if line.len() != header.len() {
            return Err(invalid("All lines of a CSV body must have as many fields as its header"));
        }
        let row: Map<String, Value> = header
            .iter()
            .zip(line)
            .map(|((name, _), (value, quoted))| {
                let value = if !quoted && value == "NULL" { Value::Null } else { Value::String(value) };
                (name.clone(), value)
            })
            .collect();
        rows.push(Value::Object(row));
    }
    Ok(Bytes::from(Value::Array(rows).to_string()))
}

/// RFC 4180 records: fields separated by `,`, records by `\n` or `\r\n`, `"…"` quoting with `""`
/// for a quote. Each field comes with whether it was quoted; a last empty line is not a record.
fn parse_csv(text: &str) -> Result<Vec<Vec<(String, bool)>>, ApiError> {
    let mut records = Vec::new();
    let mut record = Vec::new();
    let mut field = String::new();
    let (mut quoted, mut in_quotes, mut at_field_start) = (false, false, true);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if in_quotes {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => in_quotes = false,
                _ => field.push(c),
            }
            continue;
        }
        match c {
            '"' if at_field_start => {
                (in_quotes, quoted, at_field_start) = (true, true, false);
            }
            '"' => return Err(invalid("A quote inside an unquoted CSV field")),
            ',' => {
                record.push((std::mem::take(&mut field), quoted));
                (quoted, at_field_start) = (false, true);
            }
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                record.push((std::mem::take(&mut field), quoted));
                records.push(std::mem::take(&mut record));
                (quoted, at_field_start) = (false, true);
            }
            _ if quoted => return Err(invalid("Text after a closing quote in a CSV field")),
            _ => {
                field.push(c);
                at_field_start = false;
            }
        }
    }
    if in_quotes {
        return Err(invalid("An unterminated quoted CSV field"));
    }
    if !at_field_start || quoted || !record.is_empty() {
        record.push((field, quoted));
        records.push(record);
    }
    Ok(records)
}

/// `a=1&b=x+y` → `{"a":"1","b":"x y"}` (a repeated key keeps its last value).
fn form_to_json(raw: &[u8]) -> Result<Bytes, ApiError> {
    let text = std::str::from_utf8(raw).map_err(|_| invalid("The form body is not valid UTF-8"))?;
    let mut row = Map::new();
    for pair in text.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = percent_decode(key, true).map_err(|_| invalid("The form body is not valid percent-encoding"))?;
        let value = percent_decode(value, true).map_err(|_| invalid("The form body is not valid percent-encoding"))?;
        row.insert(key, Value::String(value));
    }
    Ok(Bytes::from(Value::Object(row).to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csv(text: &str) -> Result<Value, ApiError> {
        csv_to_json(text.as_bytes()).map(|b| serde_json::from_slice(&b).unwrap())
    }

    #[test]
    fn csv_bodies() {
        assert_eq!(
            csv("id,name,note\r\n1,\"Doe, \"\"J\"\"\",NULL\n2,,\"NULL\"\n").unwrap(),
            serde_json::json!([
                {"id": "1", "name": "Doe, \"J\"", "note": null},
                {"id": "2", "name": "", "note": "NULL"}
            ])
        );
        assert_eq!(csv("a\n\"multi\nline\"").unwrap(), serde_json::json!([{"a": "multi\nline"}]));
        assert_eq!(csv("a,b").unwrap(), serde_json::json!([]));
        for bad in ["", "a,b\n1", "a\n\"open", "a\nx\"y", "a\n\"x\"y", ",b\n1,2"] {
            assert!(csv(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn form_bodies() {
        let json = form_to_json(b"name=J%C3%B6rg+Doe&age=3&age=4&flag").unwrap();
        let value: Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(value, serde_json::json!({"name": "Jörg Doe", "age": "4", "flag": ""}));
        assert!(form_to_json(b"a=%zz").is_err());
    }
}
