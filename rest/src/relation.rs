//! Resolving a request's relation against the schema cache, before anything reaches PostgreSQL.
//!
//! Owns the PGRST205 decision: a name that is not a table, view, materialized view, foreign or
//! partitioned table of the exposed schema in the request's snapshot is answered 404 without a
//! round trip, with PostgREST's fuzzy hint. Invariant: uses only the snapshot the request took
//! at its start (`RestService::schema`), so a concurrent reload cannot change the answer midway.

use super::ApiError;
use crate::schema::{Relation, SchemaCache};

/// The relation `schema.name` in `cache`, or PGRST205 with the closest name as the hint.
pub fn find<'a>(cache: &'a SchemaCache, schema: &str, name: &str) -> Result<&'a Relation, ApiError> {
    cache.relation(schema, name).ok_or_else(|| ApiError::TableNotFound {
        schema: schema.to_owned(),
        name: name.to_owned(),
        closest: cache.closest_relation(schema, name).map(|closest| format!("{schema}.{closest}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::introspect;

    #[test]
    fn unknown_relations_are_pgrst205_with_a_hint() {
        let cache = introspect::parse(
            r#"{"schemas":["public"],"relations":[[1,"public","items","r",28],[2,"public","todos","r",28]]}"#,
        )
        .unwrap();
        assert_eq!(find(&cache, "public", "items").unwrap().name, "items");
        let response = find(&cache, "public", "itemz").unwrap_err().into_response();
        assert_eq!(response.status(), 404);
        let madbase_http::ResponseBody::Full(bytes) = response.body() else { panic!("not a full body") };
        assert_eq!(
            std::str::from_utf8(bytes).unwrap(),
            r#"{"code":"PGRST205","details":null,"hint":"Perhaps you meant the table 'public.items'","message":"Could not find the table 'public.itemz' in the schema cache"}"#
        );
        let response = find(&cache, "public", "zzzzzzzz").unwrap_err().into_response();
        let madbase_http::ResponseBody::Full(bytes) = response.body() else { panic!("not a full body") };
        assert!(std::str::from_utf8(bytes).unwrap().contains(r#""hint":null"#));
    }
}
