//! The Data API's settings: Supabase's `[api]` table (the keys of the Supabase CLI's
//! `config.toml`, same names, meanings and defaults) and MadBase's `[rest]` table for the
//! PostgREST settings Supabase does not expose there.
//!
//! Invariants: a [`Config`] that passed [`Config::validate`] names 1..=[`MAX_SCHEMAS`] exposed
//! schemas, every schema name is a valid identifier, `max_rows` is not zero and `pre_request`
//! parses, so the request path never re-checks them.

use madbase_core::section;
use madbase_core::settings::{name_list, Kind, Setting};
use serde::Deserialize;

/// At most this many schemas in `schemas` and in `extra_search_path` each.
pub const MAX_SCHEMAS: usize = 100;
/// PostgreSQL's longest identifier (`NAMEDATALEN - 1`): longer names would be truncated.
const MAX_IDENTIFIER_BYTES: usize = 63;
/// Supabase's default row cap for the Data API (its dashboard's "Max rows").
pub const DEFAULT_MAX_ROWS: u64 = 1000;

section! {
    /// `[api]`: Supabase's Data API table.
    pub struct Api {
        /// Serve `/rest/v1` (Supabase's `api.enabled`). Off: every Data API path answers 404 as an unknown route.
        pub enabled: bool = true,
        /// Port MadBase listens on (Supabase's API gateway port), on 127.0.0.1 unless `[http] listen` says otherwise.
        pub port: u16 = 54321,
        /// Schemas the Data API exposes, the first being the default (PostgREST's `db-schemas`); `Accept-Profile`/`Content-Profile` pick another. A list or a comma-separated string.
        #[alias("MADBASE_DB_SCHEMAS")]
        #[serde(deserialize_with = "list_or_commas")]
        pub schemas: Vec<String> = vec!["public".to_owned()],
        /// Schemas every request's `search_path` has after the request schema (PostgREST's `db-extra-search-path`).
        #[alias("MADBASE_DB_EXTRA_SEARCH_PATH")]
        #[serde(deserialize_with = "list_or_commas")]
        pub extra_search_path: Vec<String> = vec!["public".to_owned(), "extensions".to_owned()],
        /// At most this many rows in a read or function result (PostgREST's `db-max-rows`); a smaller `limit` still wins. `"unlimited"` removes the cap.
        #[alias("MADBASE_DB_MAX_ROWS")]
        pub max_rows: MaxRows = MaxRows(Some(DEFAULT_MAX_ROWS)),
    }
}

section! {
    /// `[rest]`: PostgREST settings Supabase's `[api]` table does not have.
    pub struct Rest {
        /// A function (`name` or `schema.name`) every request calls after its request settings and before its statement (PostgREST's `db-pre-request`).
        #[alias("MADBASE_DB_PRE_REQUEST")]
        pub pre_request: Option<String> = None,
        /// Answer `Accept: application/vnd.pgrst.plan…` with the statement's `EXPLAIN` (PostgREST's `db-plan-enabled`); else 406 PGRST107.
        #[alias("MADBASE_DB_PLAN_ENABLED")]
        pub plan_enabled: bool = false,
    }
}

/// The row cap: a number, or `"unlimited"` (`None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxRows(pub Option<u64>);

impl<'de> Deserialize<'de> for MaxRows {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Rows {
            Count(u64),
            Word(String),
        }
        match Rows::deserialize(deserializer)? {
            Rows::Count(n) => Ok(MaxRows(Some(n))),
            Rows::Word(word) if word.eq_ignore_ascii_case("unlimited") => Ok(MaxRows(None)),
            Rows::Word(word) => {
                Err(serde::de::Error::custom(format!("expected a number or \"unlimited\", not {word:?}")))
            }
        }
    }
}

impl serde::Serialize for MaxRows {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Some(rows) => serializer.serialize_u64(rows),
            None => serializer.serialize_str("unlimited"),
        }
    }
}

impl Setting for MaxRows {
    const KIND: Kind = Kind::Value(|raw| {
        let raw = raw.trim();
        if raw.eq_ignore_ascii_case("unlimited") {
            return Ok(Some(toml::Value::String("unlimited".to_owned())));
        }
        let rows: i64 = raw.parse().map_err(|_| "expected a number or \"unlimited\"".to_owned())?;
        Ok(Some(toml::Value::Integer(rows)))
    });
}

/// A TOML list of names, or one comma-separated string of them.
fn list_or_commas<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Names {
        List(Vec<String>),
        Commas(String),
    }
    Ok(match Names::deserialize(deserializer)? {
        Names::List(names) => names,
        Names::Commas(text) => name_list(&text),
    })
}

/// Everything the Data API is configured with.
#[derive(Debug, Clone)]
pub struct Config {
    pub api: Api,
    pub rest: Rest,
    /// The largest request body it reads: the platform's `[http] max_body_bytes`.
    pub max_body_bytes: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            api: Api::default(),
            rest: Rest::default(),
            max_body_bytes: madbase_core::platform::Http::default().max_body_bytes,
        }
    }
}

impl Config {
    /// Rejects settings the Data API cannot run with, naming the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.api.schemas.is_empty() {
            return Err("api.schemas must name at least one schema".to_owned());
        }
        for (key, list) in [("api.schemas", &self.api.schemas), ("api.extra_search_path", &self.api.extra_search_path)]
        {
            if list.len() > MAX_SCHEMAS {
                return Err(format!("{key} may name at most {MAX_SCHEMAS} schemas"));
            }
            if let Some(bad) = list.iter().find(|s| s.is_empty() || s.contains('\0') || s.len() > MAX_IDENTIFIER_BYTES)
            {
                return Err(format!(
                    "{key}: {bad:?} is not a schema name (1 to {MAX_IDENTIFIER_BYTES} bytes, without NUL)"
                ));
            }
        }
        if let Some(function) = &self.rest.pre_request {
            parse_qualified_name(function).map_err(|e| format!("rest.pre_request {function:?}: {e}"))?;
        }
        if self.api.max_rows == MaxRows(Some(0)) {
            return Err("api.max_rows must be greater than 0 (\"unlimited\" for no cap)".to_owned());
        }
        Ok(())
    }
}

/// A possibly schema-qualified function name as `pre_request` takes it: `f`, `s.f`,
/// `"my schema"."f.x"` (inside double quotes `""` is a quote). Returns (schema, name).
pub fn parse_qualified_name(raw: &str) -> Result<(Option<String>, String), String> {
    let mut parts: Vec<String> = Vec::new();
    let mut chars = raw.trim().chars().peekable();
    loop {
        let mut part = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        part.push('"');
                    }
                    Some('"') => break,
                    Some(c) => part.push(c),
                    None => return Err("unterminated double quote".to_owned()),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == '.' {
                    break;
                }
                part.push(c);
                chars.next();
            }
        }
        if part.is_empty() || part.contains('\0') || part.len() > MAX_IDENTIFIER_BYTES {
            return Err(format!("names must be 1 to {MAX_IDENTIFIER_BYTES} bytes, without NUL"));
        }
        parts.push(part);
        match chars.next() {
            None => break,
            Some('.') => {}
            Some(c) => return Err(format!("unexpected {c:?} after a quoted name")),
        }
    }
    match <[String; 2]>::try_from(parts) {
        Ok([schema, name]) => Ok((Some(schema), name)),
        Err(parts) => match <[String; 1]>::try_from(parts) {
            Ok([name]) => Ok((None, name)),
            Err(_) => Err("expected name or schema.name".to_owned()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(text: &str) -> Result<Api, toml::de::Error> {
        toml::from_str(text)
    }

    #[test]
    fn api_table_as_supabase_writes_it() {
        let a = api("").unwrap();
        assert_eq!(
            (a.port, a.schemas.as_slice(), a.max_rows),
            (54321, ["public".to_owned()].as_slice(), MaxRows(Some(1000)))
        );
        assert_eq!(a.extra_search_path, ["public", "extensions"]);
        let a =
            api("enabled = true\nport = 54331\nschemas = [\"public\", \"graphql_public\"]\nmax_rows = 50\n").unwrap();
        assert_eq!((a.port, a.schemas.len(), a.max_rows), (54331, 2, MaxRows(Some(50))));
        assert_eq!(api("schemas = \"public, personal\"").unwrap().schemas, ["public", "personal"]);
        assert_eq!(api("max_rows = \"unlimited\"").unwrap().max_rows, MaxRows(None));
        assert!(api("max_rows = \"lots\"").is_err());
        assert!(api("schemas = 1").is_err());
    }

    #[test]
    fn validation_names_the_key() {
        let mut config = Config::default();
        config.validate().unwrap();
        config.api.max_rows = MaxRows(Some(0));
        assert!(config.validate().unwrap_err().contains("api.max_rows"));
        config.api.max_rows = MaxRows(None);
        config.api.schemas.clear();
        assert!(config.validate().unwrap_err().contains("api.schemas"));
        config.api.schemas = vec!["public".into()];
        config.rest.pre_request = Some("a.b.c".into());
        assert!(config.validate().unwrap_err().contains("rest.pre_request"));
    }

    #[test]
    fn qualified_names() {
        assert_eq!(parse_qualified_name("f").unwrap(), (None, "f".to_owned()));
        assert_eq!(parse_qualified_name("\"my s\".\"f.\"\"x\"").unwrap(), (Some("my s".into()), "f.\"x".into()));
        for bad in ["", "a.", ".f", "\"a", "\"a\"b", "a.b.c"] {
            assert!(parse_qualified_name(bad).is_err(), "{bad}");
        }
    }
}
