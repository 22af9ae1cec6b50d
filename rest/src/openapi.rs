//! The OpenAPI description at `GET /rest/v1/` (reference/rest.md §1, §9), generated as PostgREST
//! generates it (`Response/OpenAPI.hs`): Swagger 2.0 from the schema cache, with PostgREST's
//! `definitions` (one per relation: column types, formats, defaults, enums, `required`,
//! descriptions from comments with the primary/foreign key notes), shared `parameters`
//! (`select`, `order`, `Range`, `rowFilter.<table>.<column>`, `body.<table>`, `Prefer` sets) and
//! `paths` (`/`, one per relation with GET and — when the relation is insertable, updatable or
//! deletable — POST/PATCH/DELETE, one `/rpc/<fn>` per function).
//!
//! Owns: the root endpoint (GET, HEAD, OPTIONS), its media types (`application/openapi+json`,
//! `application/json`, `*/*`; MadBase also answers OpenAPI 3.1 for
//! `Accept: application/openapi+json;version=3.1`, with `Content-Type:
//! application/openapi+json;version=3.1; charset=utf-8`) and the conversion to OpenAPI 3.1.
//!
//! Invariants:
//! - PostgREST's default `openapi-mode = follow-privileges`: only relations the request's role has
//!   some privilege on and functions it may execute are described. Which ones, and the comments
//!   (schema, relations, columns, functions), come from one statement in the request's usual
//!   batch (its role and settings), so still one round trip; everything else comes from the
//!   request's schema cache snapshot;
//! - the schema is bound, never interpolated; the document is built with `serde_json`, so every
//!   name and comment is escaped;
//! - `host` is the request's `Host`, `basePath` is `/rest/v1` (where MadBase serves the paths; a
//!   PostgREST behind the Supabase gateway would say `/` unless configured with a proxy URI),
//!   `schemes` follows `X-Forwarded-Proto`, `info.version` is MadBase's version; no security
//!   definitions (PostgREST's default `openapi-security-active = false`).

use bytes::Bytes;
use madbase_core::identity::Identity;
use madbase_http::{Request, Response};
use madbase_pg::Statement;
use serde_json::{json, Map, Value};

use super::error::ApiError;
use super::media;
use super::prefer::Prefer;
use super::request;
use crate::schema::relationships::{Cardinality, Link};
use crate::schema::{Column, Function, Relation, SchemaCache, Volatility};
use crate::RestService;

/// What the role may see and the comments: `{"description", "tables": {name: {"description",
/// "columns": {column: comment}}}, "functions": {name: comment}}` (PostgREST's `accessibleTables`,
/// `accessibleFuncs` and `schemaDescription`).
const ACCESS_SQL: &str = "SELECT pg_catalog.json_build_object(\
    'description', pg_catalog.obj_description($1::regnamespace, 'pg_namespace'), \
    'tables', (SELECT coalesce(pg_catalog.json_object_agg(c.relname, pg_catalog.json_build_object(\
      'description', pg_catalog.obj_description(c.oid, 'pg_class'), \
      'columns', (SELECT pg_catalog.json_object_agg(a.attname, pg_catalog.col_description(c.oid, a.attnum)) \
        FROM pg_catalog.pg_attribute AS a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
        AND pg_catalog.col_description(c.oid, a.attnum) IS NOT NULL))), '{}') \
      FROM pg_catalog.pg_class AS c WHERE c.relkind IN ('v', 'r', 'm', 'f', 'p') \
      AND c.relnamespace = $1::regnamespace AND NOT c.relispartition \
      AND (pg_catalog.pg_has_role(c.relowner, 'USAGE') \
        OR pg_catalog.has_table_privilege(c.oid, 'SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER') \
        OR pg_catalog.has_any_column_privilege(c.oid, 'SELECT, INSERT, UPDATE, REFERENCES'))), \
    'functions', (SELECT coalesce(pg_catalog.json_object_agg(p.proname, pg_catalog.obj_description(p.oid, 'pg_proc')), '{}') \
      FROM pg_catalog.pg_proc AS p WHERE p.pronamespace = $1::regnamespace \
      AND pg_catalog.has_function_privilege(p.oid, 'execute')))::text";

/// `GET`, `HEAD` and `OPTIONS` on `/rest/v1/`; other methods → 405 PGRST117.
pub async fn serve(state: &RestService, req: &Request, identity: &Identity) -> Result<Response, ApiError> {
    let head = match req.method() {
        "GET" => false,
        "HEAD" => true,
        "OPTIONS" => return Ok(Response::new(200).header("allow", "OPTIONS,GET,HEAD")),
        other => return Err(ApiError::Method(other.to_owned())),
    };
    let profile = request::profile(req, &state.config)?;
    let v31 = media::negotiate_openapi(req)?;
    let statement = Statement::new(ACCESS_SQL).bind(profile.schema.to_owned());
    // The snapshot this request uses to its end: the role's settings and the document agree.
    let schema = state.schema();
    let results = request::request_batch(state, &schema, req, identity, profile, "/", &Prefer::default())
        .with(|batch| batch.statement(statement).read_only(true))
        .run(state)
        .await
        .map_err(|e| ApiError::from_pg(e, identity.authenticated))?;
    let text = results
        .first()
        .and_then(|r| r.rows.first())
        .and_then(|r| r.get(0))
        .ok_or(ApiError::Internal("no access row"))?;
    let access: Value = serde_json::from_slice(text).map_err(|_| ApiError::Internal("access row is not JSON"))?;

    let host = req.header("host").map(|h| String::from_utf8_lossy(h).into_owned());
    let https = req.header("x-forwarded-proto").is_some_and(|p| p.eq_ignore_ascii_case(b"https"));
    let swagger = swagger(&schema, profile.schema, &access, host.as_deref(), https);
    let (document, content_type) = if v31 {
        (to_openapi_31(swagger), "application/openapi+json;version=3.1; charset=utf-8")
    } else {
        (swagger, "application/openapi+json; charset=utf-8")
    };
    let body = if head { Bytes::new() } else { Bytes::from(document.to_string()) };
    let mut response = Response::with_body(200, body);
    profile.content_type(&mut response, content_type);
    Ok(response)
}

/// PostgREST's `toSwaggerType`: `None` for json/jsonb (any value).
fn swagger_type(type_name: &str) -> Option<&'static str> {
    Some(match type_name {
        "character varying" | "character" | "text" => "string",
        "boolean" => "boolean",
        "smallint" | "integer" | "bigint" => "integer",
        "numeric" | "real" | "double precision" => "number",
        "json" | "jsonb" => return None,
        other if other.ends_with("[]") => "array",
        _ => "string",
    })
}

/// PostgREST's `toSwaggerFormat`.
fn swagger_format(type_name: &str) -> &str {
    match type_name {
        "smallint" | "integer" => "int32",
        "bigint" => "int64",
        other => other,
    }
}

/// PostgREST's column type: `format_type` without the type modifier (`character varying(20)` →
/// `character varying`, `numeric(5,2)` → `numeric`), and the modifier's length for
/// `character varying(n)` / `character(n)` (`maxLength`).
fn column_type(type_name: &str) -> (String, Option<u64>) {
    let Some(open) = type_name.find('(') else { return (type_name.to_owned(), None) };
    let Some(close) = type_name[open..].find(')').map(|c| open + c) else { return (type_name.to_owned(), None) };
    let base = format!("{}{}", &type_name[..open], &type_name[close + 1..]);
    let length = if base.starts_with("character") { type_name[open + 1..close].parse().ok() } else { None };
    (base, length)
}

/// `type`, `format` and (arrays) `items` of a schema or parameter.
fn type_members(out: &mut Map<String, Value>, type_name: &str) {
    if let Some(t) = swagger_type(type_name) {
        out.insert("type".into(), t.into());
    }
    out.insert("format".into(), swagger_format(type_name).into());
    if swagger_type(type_name) == Some("array") {
        let element = type_name.trim_end_matches("[]");
        let mut items = Map::new();
        if let Some(t) = swagger_type(element) {
            items.insert("type".into(), t.into());
        }
        out.insert("items".into(), Value::Object(items));
    }
}

/// PostgREST's `parseDefault`: string-typed defaults lose their `'…'::type` decoration; the
/// result must be valid JSON (so `now()` on a number column gives no default).
fn default_value(type_name: &str, default: &str) -> Option<Value> {
    let text = if swagger_type(type_name) == Some("string") {
        let stripped = default.strip_suffix(&format!("::{type_name}")).map_or(default, |d| d.trim_matches('\''));
        format!("\"{stripped}\"")
    } else {
        default.to_owned()
    };
    serde_json::from_str(&text).ok()
}

fn string_or_null(value: Option<&Value>) -> Option<String> {
    value.and_then(Value::as_str).map(str::to_owned)
}

fn column_property(cache: &SchemaCache, rel: &Relation, column: &Column, comment: Option<String>) -> Value {
    let (type_name, max_length) = column_type(&column.type_name);
    let mut notes = vec!["Note:".to_owned()];
    if rel.primary_key.contains(&column.name) {
        notes.push("This is a Primary Key.<pk/>".to_owned());
    }
    // A single-column foreign key of this relation (the many-to-one/one-to-one side).
    let target = cache.relationships_of(&rel.schema, &rel.name).iter().find_map(|r| match &r.link {
        Link::ForeignKey { cardinality: Cardinality::ManyToOne | Cardinality::OneToOne, columns, .. }
            if columns.len() == 1 && columns[0].0 == column.name && r.target.schema == rel.schema =>
        {
            Some((&r.target.name, &columns[0].1))
        }
        _ => None,
    });
    if let Some((table, col)) = target {
        notes.push(format!("This is a Foreign Key to `{table}.{col}`.<fk table='{table}' column='{col}'/>"));
    }
    let description = match (comment, notes.len() > 1) {
        (Some(comment), true) => Some(format!("{comment}\n\n{}", notes.join("\n"))),
        (None, true) => Some(notes.join("\n")),
        (comment, false) => comment,
    };
    let mut out = Map::new();
    if let Some(default) = column.default.as_deref().and_then(|d| default_value(&type_name, d)) {
        out.insert("default".into(), default);
    }
    if let Some(description) = description {
        out.insert("description".into(), description.into());
    }
    let enum_name = type_name.strip_prefix(&format!("{}.", rel.schema)).unwrap_or(&type_name);
    if let Some(labels) = cache.enum_labels(&rel.schema, enum_name) {
        out.insert("enum".into(), json!(labels));
    }
    if let Some(max_length) = max_length {
        out.insert("maxLength".into(), max_length.into());
    }
    type_members(&mut out, &type_name);
    Value::Object(out)
}

fn definition(cache: &SchemaCache, rel: &Relation, access: &Value) -> Value {
    let comments = access.get("columns");
    let properties: Map<String, Value> = rel
        .columns
        .iter()
        .map(|c| {
            (c.name.clone(), column_property(cache, rel, c, string_or_null(comments.and_then(|m| m.get(&c.name)))))
        })
        .collect();
    let mut out = Map::new();
    if let Some(description) = string_or_null(access.get("description")) {
        out.insert("description".into(), description.into());
    }
    out.insert("properties".into(), Value::Object(properties));
    let required: Vec<&str> = rel.columns.iter().filter(|c| !c.nullable).map(|c| c.name.as_str()).collect();
    if !required.is_empty() {
        out.insert("required".into(), json!(required));
    }
    out.insert("type".into(), "object".into());
    Value::Object(out)
}

fn query_param(name: &str, description: &str) -> Value {
    json!({"description": description, "in": "query", "name": name, "required": false, "type": "string"})
}

fn prefer_param(values: &[&str]) -> Value {
    let mut param =
        json!({"description": "Preference", "in": "header", "name": "Prefer", "required": false, "type": "string"});
    if !values.is_empty() {
        param["enum"] = json!(values);
    }
    param
}

/// `summary` = the first line of a comment, `description` = the rest without leading newlines.
fn summarize(op: &mut Map<String, Value>, comment: Option<&str>) {
    let Some(comment) = comment else { return };
    let (summary, rest) = comment.split_once('\n').unwrap_or((comment, ""));
    op.insert("summary".into(), summary.into());
    let rest = rest.trim_start_matches('\n');
    if !rest.is_empty() {
        op.insert("description".into(), rest.into());
    }
}

fn reference(name: &str) -> Value {
    json!({"$ref": format!("#/parameters/{name}")})
}

fn relation_path(rel: &Relation, comment: Option<&str>) -> Value {
    let filters: Vec<String> = rel.columns.iter().map(|c| format!("rowFilter.{}.{}", rel.name, c.name)).collect();
    let refs = |extra: &[&str]| -> Value {
        Value::Array(filters.iter().map(String::as_str).chain(extra.iter().copied()).map(reference).collect())
    };
    let op = |parameters: Value, responses: Value| {
        let mut op = Map::new();
        summarize(&mut op, comment);
        op.insert("parameters".into(), parameters);
        op.insert("responses".into(), responses);
        op.insert("tags".into(), json!([rel.name]));
        Value::Object(op)
    };
    let body = format!("body.{}", rel.name);
    let mut item = Map::new();
    item.insert(
        "get".into(),
        op(
            refs(&["select", "order", "range", "rangeUnit", "offset", "limit", "preferCount"]),
            json!({
                "200": {"description": "OK", "schema": {"items": {"$ref": format!("#/definitions/{}", rel.name)}, "type": "array"}},
                "206": {"description": "Partial Content"}
            }),
        ),
    );
    if rel.insertable || rel.updatable || rel.deletable {
        let post = Value::Array([body.as_str(), "select", "preferPost"].into_iter().map(reference).collect());
        item.insert("post".into(), op(post, json!({"201": {"description": "Created"}})));
        item.insert("patch".into(), op(refs(&[&body, "preferReturn"]), json!({"204": {"description": "No Content"}})));
        item.insert("delete".into(), op(refs(&["preferReturn"]), json!({"204": {"description": "No Content"}})));
    }
    Value::Object(item)
}

fn function_path(function: &Function, comment: Option<&str>) -> Value {
    let params: Vec<_> = function
        .args
        .iter()
        .filter(|a| {
            matches!(
                a.mode,
                crate::schema::ArgMode::In | crate::schema::ArgMode::InOut | crate::schema::ArgMode::Variadic
            )
        })
        .collect();
    let op = |parameters: Value| {
        let mut op = Map::new();
        summarize(&mut op, comment);
        op.insert("parameters".into(), parameters);
        op.insert(
            "produces".into(),
            json!([
                "application/json",
                "application/vnd.pgrst.object+json;nulls=stripped",
                "application/vnd.pgrst.object+json"
            ]),
        );
        op.insert("responses".into(), json!({"200": {"description": "OK"}}));
        op.insert("tags".into(), json!([format!("(rpc) {}", function.name)]));
        Value::Object(op)
    };
    let mut properties = Map::new();
    for param in &params {
        let mut property = Map::new();
        type_members(&mut property, &param.type_name);
        properties.insert(param.name.clone(), Value::Object(property));
    }
    let mut schema = Map::new();
    if let Some(comment) = comment {
        schema.insert("description".into(), comment.into());
    }
    schema.insert("properties".into(), Value::Object(properties));
    let required: Vec<&str> = params.iter().filter(|p| !p.has_default).map(|p| p.name.as_str()).collect();
    if !required.is_empty() {
        schema.insert("required".into(), json!(required));
    }
    schema.insert("type".into(), "object".into());
    let post = json!([
        {"in": "body", "name": "args", "required": true, "schema": Value::Object(schema)},
        {"$ref": "#/parameters/preferParams"}
    ]);
    let mut item = Map::new();
    if function.volatility != Volatility::Volatile {
        let get: Vec<Value> = params
            .iter()
            .map(|p| {
                let mut param = Map::new();
                param.insert("in".into(), "query".into());
                param.insert("name".into(), p.name.clone().into());
                param.insert("required".into(), (!p.has_default).into());
                if p.mode == crate::schema::ArgMode::Variadic {
                    let element = p.type_name.trim_end_matches("[]");
                    param.insert("type".into(), swagger_type(&p.type_name).unwrap_or("string").into());
                    param.insert("collectionFormat".into(), "multi".into());
                    let mut items = Map::new();
                    type_members(&mut items, element);
                    items.remove("items");
                    param.insert("items".into(), Value::Object(items));
                } else {
                    param.insert("format".into(), swagger_format(&p.type_name).into());
                    let t = match swagger_type(&p.type_name) {
                        None | Some("array") => "string",
                        Some(t) => t,
                    };
                    param.insert("type".into(), t.into());
                }
                Value::Object(param)
            })
            .collect();
        item.insert("get".into(), op(Value::Array(get)));
    }
    item.insert("post".into(), op(post));
    Value::Object(item)
}

/// The parameters every document defines (`Prefer` variants, `select`, paging, `Range`).
fn shared_parameters() -> Map<String, Value> {
    let mut parameters = Map::new();
    parameters.insert("preferParams".into(), prefer_param(&[]));
    parameters.insert("preferReturn".into(), prefer_param(&["return=representation", "return=minimal", "return=none"]));
    parameters.insert("preferCount".into(), prefer_param(&["count=none"]));
    parameters.insert(
        "preferPost".into(),
        prefer_param(&[
            "return=representation",
            "return=minimal",
            "return=none",
            "resolution=ignore-duplicates",
            "resolution=merge-duplicates",
        ]),
    );
    parameters.insert("select".into(), query_param("select", "Filtering Columns"));
    parameters.insert("on_conflict".into(), query_param("on_conflict", "On Conflict"));
    parameters.insert("order".into(), query_param("order", "Ordering"));
    parameters.insert(
        "range".into(),
        json!({"description": "Limiting and Pagination", "in": "header", "name": "Range", "required": false, "type": "string"}),
    );
    parameters.insert(
        "rangeUnit".into(),
        json!({"default": "items", "description": "Limiting and Pagination", "in": "header", "name": "Range-Unit", "required": false, "type": "string"}),
    );
    parameters.insert("offset".into(), query_param("offset", "Limiting and Pagination"));
    parameters.insert("limit".into(), query_param("limit", "Limiting and Pagination"));
    parameters
}

/// A relation's parameters: its body (`body.<rel>`) and a row filter per column
/// (`rowFilter.<rel>.<column>`, described by the column's comment in `access`).
fn relation_parameters(parameters: &mut Map<String, Value>, rel: &Relation, access: &Value) {
    let comments = access.get("columns");
    parameters.insert(
        format!("body.{}", rel.name),
        json!({"description": rel.name, "in": "body", "name": rel.name, "required": false,
               "schema": {"$ref": format!("#/definitions/{}", rel.name)}}),
    );
    for column in &rel.columns {
        let mut param = query_param(&column.name, "").as_object().cloned().unwrap_or_default();
        match string_or_null(comments.and_then(|m| m.get(&column.name))) {
            Some(comment) => param.insert("description".into(), comment.into()),
            None => param.remove("description"),
        };
        parameters.insert(format!("rowFilter.{}.{}", rel.name, column.name), Value::Object(param));
    }
}

/// The document's title and description: the schema's comment (its first line, then the rest),
/// or PostgREST's defaults.
fn title_and_description(access: &Value) -> (String, String) {
    let schema_comment = string_or_null(access.get("description"));
    match schema_comment.as_deref() {
        Some(comment) => {
            let (title, rest) = comment.split_once('\n').unwrap_or((comment, ""));
            (title.to_owned(), rest.trim_start_matches('\n').to_owned())
        }
        None => ("PostgREST API".to_owned(), "This is a dynamic API generated by PostgREST".to_owned()),
    }
}

/// The Swagger 2.0 document for the relations and functions in `access`.
fn swagger(cache: &SchemaCache, schema: &str, access: &Value, host: Option<&str>, https: bool) -> Value {
    let empty = Map::new();
    let tables = access.get("tables").and_then(Value::as_object).unwrap_or(&empty);
    let functions = access.get("functions").and_then(Value::as_object).unwrap_or(&empty);
    let objects = cache.schemas.get(schema);
    let mut relations: Vec<&Relation> =
        objects.map(|o| o.relations.values().filter(|r| tables.contains_key(&r.name)).collect()).unwrap_or_default();
    relations.sort_by(|a, b| a.name.cmp(&b.name));
    let mut callable: Vec<&Function> = objects
        .map(|o| {
            o.functions.iter().filter(|(name, _)| functions.contains_key(*name)).flat_map(|(_, f)| f.last()).collect()
        })
        .unwrap_or_default();
    callable.sort_by(|a, b| a.name.cmp(&b.name));

    let mut definitions = Map::new();
    let mut parameters = shared_parameters();
    let mut paths = Map::new();
    paths.insert(
        "/".into(),
        json!({"get": {
            "produces": ["application/openapi+json", "application/json"],
            "responses": {"200": {"description": "OK"}},
            "summary": "OpenAPI description (this document)",
            "tags": ["Introspection"]
        }}),
    );
    for rel in &relations {
        let access = &tables[&rel.name];
        definitions.insert(rel.name.clone(), definition(cache, rel, access));
        relation_parameters(&mut parameters, rel, access);
        let description = string_or_null(access.get("description"));
        paths.insert(format!("/{}", rel.name), relation_path(rel, description.as_deref()));
    }
    for function in &callable {
        let comment = string_or_null(functions.get(&function.name));
        paths.insert(format!("/rpc/{}", function.name), function_path(function, comment.as_deref()));
    }

    let (title, description) = title_and_description(access);
    let media_types = json!([
        "application/json",
        "application/vnd.pgrst.object+json;nulls=stripped",
        "application/vnd.pgrst.object+json",
        "text/csv"
    ]);
    let mut doc = json!({
        "swagger": "2.0",
        "info": {"description": description, "title": title, "version": env!("CARGO_PKG_VERSION")},
        "externalDocs": {"description": "PostgREST Documentation", "url": "https://postgrest.org/en/v14/references/api.html"},
        "basePath": super::PREFIX,
        "schemes": [if https { "https" } else { "http" }],
        "consumes": media_types.clone(),
        "produces": media_types,
        "definitions": Value::Object(definitions),
        "parameters": Value::Object(parameters),
        "paths": Value::Object(paths),
    });
    if let Some(host) = host {
        doc["host"] = host.into();
    }
    doc
}

/// Rewrites every `$ref` of a Swagger 2.0 fragment to its OpenAPI 3 location.
fn rewrite_refs(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(target)) = map.get_mut("$ref") {
                if let Some(name) = target.strip_prefix("#/definitions/") {
                    *target = format!("#/components/schemas/{name}");
                } else if let Some(name) = target.strip_prefix("#/parameters/body.") {
                    *target = format!("#/components/requestBodies/{name}");
                } else if let Some(name) = target.strip_prefix("#/parameters/") {
                    *target = format!("#/components/parameters/{name}");
                }
            }
            map.values_mut().for_each(rewrite_refs);
        }
        Value::Array(items) => items.iter_mut().for_each(rewrite_refs),
        _ => {}
    }
}

/// A Swagger 2.0 non-body parameter as an OpenAPI 3 one: the type members move into `schema`.
fn parameter_31(param: &Value) -> Value {
    let Some(map) = param.as_object() else { return param.clone() };
    if map.contains_key("$ref") {
        return param.clone();
    }
    let mut out = Map::new();
    let mut schema = Map::new();
    for (key, value) in map {
        match key.as_str() {
            "name" | "in" | "required" | "description" => {
                out.insert(key.clone(), value.clone());
            }
            "collectionFormat" => {
                out.insert("style".into(), "form".into());
                out.insert("explode".into(), true.into());
            }
            _ => {
                schema.insert(key.clone(), value.clone());
            }
        }
    }
    out.insert("schema".into(), Value::Object(schema));
    Value::Object(out)
}

/// A Swagger 2.0 body parameter as an OpenAPI 3 request body.
fn request_body_31(param: &Value, media_types: &[&str]) -> Value {
    let schema = param.get("schema").cloned().unwrap_or_else(|| json!({}));
    let content: Map<String, Value> =
        media_types.iter().map(|m| ((*m).to_owned(), json!({"schema": schema}))).collect();
    let mut out = json!({"content": content, "required": param.get("required").cloned().unwrap_or(false.into())});
    if let Some(description) = param.get("description") {
        out["description"] = description.clone();
    }
    out
}

/// The same description as OpenAPI 3.1: `components` instead of `definitions`/`parameters`,
/// `requestBody` instead of body parameters, response `content` per media type, `servers`
/// instead of `host`/`basePath`/`schemes`.
fn to_openapi_31(swagger: Value) -> Value {
    let produces: Vec<String> = swagger["produces"]
        .as_array()
        .map(|a| a.iter().filter_map(|m| m.as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    let media_types: Vec<&str> = produces.iter().map(String::as_str).collect();
    let mut parameters = Map::new();
    let mut request_bodies = Map::new();
    if let Some(params) = swagger["parameters"].as_object() {
        for (name, param) in params {
            match name.strip_prefix("body.") {
                Some(table) => {
                    request_bodies.insert(table.to_owned(), request_body_31(param, &media_types));
                }
                None => {
                    parameters.insert(name.clone(), parameter_31(param));
                }
            }
        }
    }
    let mut paths = Map::new();
    if let Some(items) = swagger["paths"].as_object() {
        for (path, item) in items {
            let mut operations = Map::new();
            for (method, op) in item.as_object().into_iter().flatten() {
                let mut op = op.as_object().cloned().unwrap_or_default();
                let op_types: Vec<String> = op
                    .remove("produces")
                    .and_then(|p| {
                        p.as_array().map(|a| a.iter().filter_map(|m| m.as_str().map(str::to_owned)).collect())
                    })
                    .unwrap_or_else(|| produces.clone());
                let op_types: Vec<&str> = op_types.iter().map(String::as_str).collect();
                if let Some(Value::Array(params)) = op.remove("parameters") {
                    let mut kept = Vec::new();
                    for param in params {
                        let body_ref = param
                            .get("$ref")
                            .and_then(Value::as_str)
                            .is_some_and(|r| r.starts_with("#/parameters/body."));
                        if body_ref {
                            op.insert("requestBody".into(), param);
                        } else if param.get("in").and_then(Value::as_str) == Some("body") {
                            op.insert("requestBody".into(), request_body_31(&param, &media_types));
                        } else {
                            kept.push(parameter_31(&param));
                        }
                    }
                    op.insert("parameters".into(), Value::Array(kept));
                }
                if let Some(Value::Object(responses)) = op.get_mut("responses") {
                    for response in responses.values_mut() {
                        if let Some(schema) = response.as_object_mut().and_then(|r| r.remove("schema")) {
                            let content: Map<String, Value> =
                                op_types.iter().map(|m| ((*m).to_owned(), json!({"schema": schema}))).collect();
                            response["content"] = Value::Object(content);
                        }
                    }
                }
                operations.insert(method.clone(), Value::Object(op));
            }
            paths.insert(path.clone(), Value::Object(operations));
        }
    }
    let scheme = swagger["schemes"][0].as_str().unwrap_or("http");
    let server = match swagger["host"].as_str() {
        Some(host) => format!("{scheme}://{host}{}", super::PREFIX),
        None => super::PREFIX.to_owned(),
    };
    let mut doc = json!({
        "openapi": "3.1.0",
        "info": swagger["info"],
        "externalDocs": swagger["externalDocs"],
        "servers": [{"url": server}],
        "paths": Value::Object(paths),
        "components": {
            "schemas": swagger["definitions"],
            "parameters": Value::Object(parameters),
            "requestBodies": Value::Object(request_bodies),
        },
    });
    rewrite_refs(&mut doc);
    doc
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::introspect;

    #[test]
    fn types_and_defaults() {
        assert_eq!(column_type("character varying(20)"), ("character varying".to_owned(), Some(20)));
        assert_eq!(column_type("numeric(5,2)"), ("numeric".to_owned(), None));
        assert_eq!(column_type("timestamp(3) with time zone"), ("timestamp with time zone".to_owned(), None));
        assert_eq!(column_type("text[]"), ("text[]".to_owned(), None));
        assert_eq!(default_value("text", "'todo'::text"), Some(json!("todo")));
        assert_eq!(default_value("integer", "0"), Some(json!(0)));
        assert_eq!(default_value("integer", "nextval('t_id_seq'::regclass)"), None);
        assert_eq!(default_value("timestamp with time zone", "now()"), Some(json!("now()")));
        let mut m = Map::new();
        type_members(&mut m, "integer[]");
        assert_eq!(Value::Object(m), json!({"type": "array", "format": "integer[]", "items": {"type": "integer"}}));
    }

    #[test]
    fn document_shape() {
        let cache = introspect::parse(
            r#"{"schemas":["public"],"relations":[[1,"public","todos","r",28]],"functions":[
              ["public","add",[["a","integer","i"],["b","integer","i"]],1,"integer",null,null,false,"i",false]
            ]}"#,
        )
        .unwrap();
        let access = json!({"description": "My API\n\nAll the things", "tables": {}, "functions": {"add": "Adds"}});
        let doc = swagger(&cache, "public", &access, Some("localhost:54321"), false);
        assert_eq!(doc["swagger"], "2.0");
        assert_eq!(doc["info"]["title"], "My API");
        assert_eq!(doc["info"]["description"], "All the things");
        assert_eq!(doc["host"], "localhost:54321");
        assert!(doc["definitions"].as_object().unwrap().is_empty(), "todos is not accessible");
        let add = &doc["paths"]["/rpc/add"];
        assert_eq!(
            add["get"]["parameters"][0],
            json!({"format": "int32", "in": "query", "name": "a", "required": true, "type": "integer"})
        );
        assert_eq!(add["post"]["parameters"][0]["schema"]["required"], json!(["a"]));
        assert_eq!(add["post"]["summary"], "Adds");
        let v31 = to_openapi_31(doc);
        assert_eq!(v31["openapi"], "3.1.0");
        assert_eq!(v31["servers"][0]["url"], "http://localhost:54321/rest/v1");
        assert_eq!(
            v31["paths"]["/rpc/add"]["get"]["parameters"][0]["schema"],
            json!({"format": "int32", "type": "integer"})
        );
        assert_eq!(v31["paths"]["/rpc/add"]["post"]["parameters"][0]["$ref"], "#/components/parameters/preferParams");
        assert!(v31["paths"]["/rpc/add"]["post"]["requestBody"]["content"]["application/json"]["schema"].is_object());
    }
}
