//! The deploy API, service_role only, under `/functions/v1/_admin/` (a name never starts with
//! `_`, so no function is shadowed): deploy a component under a name, list functions and
//! versions, roll back, delete; set, list and unset secrets. `madbase functions …` and
//! `madbase secrets …` are its clients.
//!
//! Invariants:
//! - A component goes live only after it compiled, linked against everything MadBase provides
//!   and proved to export `wasi:http/incoming-handler`; a refused deploy changes nothing (the
//!   previous version keeps serving).
//! - Every change commits in PostgreSQL (with the generation bumped) before the node reloads;
//!   the switch to a new version is one publication, so requests in flight finish on the
//!   version they started on.
//! - Secret values are sealed before they leave this module and never appear in an answer or
//!   a log line.

use base64::Engine as _;
use bytes::Bytes;
use madbase_http::{Body, Request, Response};
use madbase_pg::{Batch, PgError, Statement, StatementResult, TxEnd};
use serde_json::{json, Value};

use crate::secrets::{digest, valid_secret_name, MAX_SECRETS, MAX_SECRET_BYTES};
use crate::settings::{valid_name, FunctionConfig};
use crate::{Inner, LANE};

/// Largest JSON body of the secrets routes.
const JSON_LIMIT: u64 = MAX_SECRETS as u64 * (MAX_SECRET_BYTES as u64 + 512);

fn error(status: u16, code: &str, message: &str) -> Response {
    Response::json(status, json!({ "code": code, "message": message }).to_string())
}

/// Answers `/functions/v1/_admin/<rest>`.
pub async fn route(inner: &Inner, req: &Request, body: Body, rest: &str) -> Response {
    if let Err(refused) = service_role(inner, req) {
        return refused;
    }
    let segments: Vec<&str> = rest.split('/').collect();
    let result = match (req.method(), segments.as_slice()) {
        ("GET", ["functions"]) => list(inner).await,
        ("GET", ["functions", name]) => versions(inner, name).await,
        ("POST" | "PUT", ["functions", name]) => deploy(inner, req, body, name).await,
        ("POST", ["functions", name, "rollback"]) => rollback(inner, req, name).await,
        ("DELETE", ["functions", name]) => delete(inner, name).await,
        ("GET", ["secrets"]) => list_secrets(inner).await,
        ("POST", ["secrets"]) => set_secrets(inner, body).await,
        ("DELETE", ["secrets"]) => unset_secrets(inner, body).await,
        _ => Err(error(404, "NOT_FOUND", "No such route of the functions API")),
    };
    result.unwrap_or_else(|refused| refused)
}

fn service_role(inner: &Inner, req: &Request) -> Result<(), Response> {
    let token = madbase_core::identity::bearer_token(req)
        .ok_or_else(|| error(401, "UNAUTHORIZED", "The functions API needs the service_role key as a bearer token"))?;
    let claims = inner.ctx.tokens.borrow_mut().verify(token).map_err(|_| error(401, "UNAUTHORIZED", "Invalid JWT"))?;
    if claims.role() != Some("service_role") {
        return Err(error(403, "FORBIDDEN", "The functions API is for the service_role key only"));
    }
    Ok(())
}

async fn run(inner: &Inner, statements: Vec<Statement>) -> Result<Vec<StatementResult>, Response> {
    let mut batch = Batch::new();
    for statement in statements {
        batch = batch.statement(statement);
    }
    inner.ctx.lanes.get(LANE).execute(batch.end(TxEnd::Commit)).await.map_err(|e| match &e {
        PgError::Db(db) if db.code == "23505" => {
            error(409, "CONFLICT", "Another deploy of this function is under way; retry")
        }
        _ => {
            tracing::error!(error = %e, "the functions API's statement failed");
            error(503, "DATABASE_UNAVAILABLE", "The database is not available")
        }
    })
}

/// Reloads this node's registry after a change committed.
async fn reload(inner: &Inner) -> Result<(), Response> {
    inner.shared.reload(&inner.ctx).await.map_err(|e| {
        tracing::error!(error = %e, "reloading the functions failed");
        error(503, "RELOAD_FAILED", "The change is stored but could not be loaded yet; it will be shortly")
    })
}

fn checked_name(name: &str) -> Result<&str, Response> {
    if valid_name(name) {
        Ok(name)
    } else {
        Err(error(400, "INVALID_NAME", "A function name is a letter, then letters, digits, '_' or '-' (at most 128)"))
    }
}

/// The deploy's settings: the name's `[functions.<name>]`, then the query's overrides.
fn deploy_config(inner: &Inner, req: &Request, name: &str) -> Result<FunctionConfig, Response> {
    let mut config = inner.shared.config_for(name);
    let number = |key: &str, value: &str| {
        value
            .parse::<u64>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| error(400, "INVALID_SETTING", &format!("{key} must be a positive integer")))
    };
    for (key, value) in req.query_pairs() {
        match key.as_str() {
            "verify_jwt" => {
                config.verify_jwt = match value.as_str() {
                    "true" => true,
                    "false" => false,
                    _ => return Err(error(400, "INVALID_SETTING", "verify_jwt must be true or false")),
                }
            }
            "allowed_outbound_hosts" => {
                config.allowed_outbound_hosts =
                    value.split(',').map(str::trim).filter(|h| !h.is_empty()).map(str::to_owned).collect()
            }
            "memory_limit_mb" => config.memory_limit_mb = Some(number(&key, &value)?),
            "cpu_time_limit_ms" => config.cpu_time_limit_ms = Some(number(&key, &value)?),
            "wall_clock_limit_ms" => config.wall_clock_limit_ms = Some(number(&key, &value)?),
            _ => return Err(error(400, "INVALID_SETTING", &format!("unknown deploy setting {key:?}"))),
        }
    }
    if !config.enabled {
        return Err(error(403, "FUNCTION_DISABLED", "[functions.<name>] enabled = false in the configuration"));
    }
    Ok(config)
}

async fn deploy(inner: &Inner, req: &Request, body: Body, name: &str) -> Result<Response, Response> {
    let name = checked_name(name)?;
    let config = deploy_config(inner, req, name)?;
    let limit = inner.shared.settings.max_component_bytes;
    let bytes = body.collect(limit).await.map_err(|e| match e {
        madbase_http::BodyError::TooLarge { .. } => error(
            413,
            "COMPONENT_TOO_LARGE",
            &format!("The component is larger than edge_runtime.max_component_bytes ({limit} bytes)"),
        ),
        other => error(400, "BAD_REQUEST", &other.to_string()),
    })?;
    if bytes.is_empty() {
        return Err(error(400, "INVALID_COMPONENT", "The body must be the function's WebAssembly component"));
    }
    let sha256 = crate::secrets::digest(&bytes);
    // Compile and link off the shard: a refusal here leaves everything as it was.
    let shared = inner.shared.clone();
    let (compile_bytes, compile_sha) = (bytes.clone(), sha256.clone());
    let job = inner
        .ctx
        .blocking
        .spawn(move || shared.runtime.prepare(&compile_bytes, &compile_sha))
        .map_err(|_| error(503, "BUSY", "The server is busy; retry"))?;
    let pre = job
        .await
        .map_err(|_| error(503, "BUSY", "The server is busy; retry"))?
        .map_err(|e| error(400, "INVALID_COMPONENT", &e.to_string()))?;
    inner.shared.remember(&sha256, pre);
    let settings = serde_json::to_string(&config).expect("settings serialize");
    let statement = Statement::new(
        "with next as (select coalesce(max(version), 0) + 1 as version from _madbase.function_versions where name = $1), \
         stored as (insert into _madbase.function_versions (name, version, sha256, component, settings) \
                    select $1, version, $2, decode($3, 'base64'), $4::jsonb from next returning version), \
         live as (insert into _madbase.functions (name, active_version) select $1, version from stored \
                  on conflict (name) do update set active_version = excluded.active_version, updated_at = now() \
                  returning active_version) \
         select active_version::text, nextval('_madbase.functions_generation')::text from live",
    )
    .bind(Bytes::copy_from_slice(name.as_bytes()))
    .bind(Bytes::copy_from_slice(sha256.as_bytes()))
    .bind(base64::engine::general_purpose::STANDARD.encode(&bytes))
    .bind(settings);
    let results = run(inner, vec![statement]).await?;
    let version: i64 = results.first().and_then(|r| r.scalar()).and_then(|v| v.parse().ok()).unwrap_or(0);
    reload(inner).await?;
    tracing::info!(function = %name, version, sha256 = %sha256, bytes = bytes.len(), "function deployed");
    let mut answer = json!({ "name": name, "version": version, "sha256": sha256, "size": bytes.len() });
    answer.as_object_mut().unwrap().extend(settings_json(&config));
    Ok(Response::json(201, answer.to_string()))
}

fn settings_json(config: &FunctionConfig) -> serde_json::Map<String, Value> {
    match serde_json::to_value(config) {
        Ok(Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    }
}

async fn list(inner: &Inner) -> Result<Response, Response> {
    let statement = Statement::new(
        "select coalesce(json_agg(json_build_object('name', f.name, 'version', f.active_version, \
           'versions', (select json_agg(v2.version order by v2.version) from _madbase.function_versions v2 where v2.name = f.name), \
           'sha256', v.sha256, 'size', octet_length(v.component), 'settings', v.settings, \
           'created_at', f.created_at, 'updated_at', f.updated_at) order by f.name), '[]')::text \
         from _madbase.functions f join _madbase.function_versions v on v.name = f.name and v.version = f.active_version",
    );
    let results = run(inner, vec![statement]).await?;
    Ok(Response::json(200, results[0].scalar().unwrap_or("[]").to_owned()))
}

async fn versions(inner: &Inner, name: &str) -> Result<Response, Response> {
    let name = checked_name(name)?;
    let statement = Statement::new(
        "select json_build_object('name', f.name, 'version', f.active_version, 'versions', \
           (select json_agg(json_build_object('version', v.version, 'sha256', v.sha256, 'size', octet_length(v.component), \
              'settings', v.settings, 'created_at', v.created_at) order by v.version) \
            from _madbase.function_versions v where v.name = f.name))::text \
         from _madbase.functions f where f.name = $1",
    )
    .bind(Bytes::copy_from_slice(name.as_bytes()));
    let results = run(inner, vec![statement]).await?;
    match results[0].scalar() {
        Some(json) => Ok(Response::json(200, json.to_owned())),
        None => Err(error(404, "NOT_FOUND", "Requested function was not found")),
    }
}

async fn rollback(inner: &Inner, req: &Request, name: &str) -> Result<Response, Response> {
    let name = checked_name(name)?;
    let target = req.query_pairs().into_iter().find(|(k, _)| k == "version").map(|(_, v)| v);
    if target.as_deref().is_some_and(|v| v.parse::<i32>().is_err()) {
        return Err(error(400, "INVALID_SETTING", "version must be an integer"));
    }
    // Without a version: the newest version older than the live one.
    let statement = Statement::new(
        "with target as (select v.version from _madbase.function_versions v join _madbase.functions f on f.name = v.name \
            where v.name = $1 and (case when $2::int is null then v.version < f.active_version else v.version = $2::int end) \
            order by v.version desc limit 1), \
         switched as (update _madbase.functions f set active_version = target.version, updated_at = now() \
            from target where f.name = $1 returning f.active_version) \
         select active_version::text, nextval('_madbase.functions_generation')::text from switched",
    )
    .bind(Bytes::copy_from_slice(name.as_bytes()))
    .bind_opt(target.map(Bytes::from));
    let results = run(inner, vec![statement]).await?;
    let Some(version) = results[0].scalar().map(str::to_owned) else {
        return Err(error(404, "NOT_FOUND", "No such function, or no version to roll back to"));
    };
    reload(inner).await?;
    tracing::info!(function = %name, version = %version, "function rolled back");
    Ok(Response::json(200, json!({ "name": name, "version": version.parse::<i64>().unwrap_or(0) }).to_string()))
}

async fn delete(inner: &Inner, name: &str) -> Result<Response, Response> {
    let name = checked_name(name)?;
    let statement = Statement::new(
        "with gone as (delete from _madbase.functions where name = $1 returning name), \
         versions as (delete from _madbase.function_versions where name in (select name from gone)) \
         select name, nextval('_madbase.functions_generation')::text from gone",
    )
    .bind(Bytes::copy_from_slice(name.as_bytes()));
    let results = run(inner, vec![statement]).await?;
    if results[0].rows.is_empty() {
        return Err(error(404, "NOT_FOUND", "Requested function was not found"));
    }
    reload(inner).await?;
    tracing::info!(function = %name, "function deleted");
    Ok(Response::json(200, json!({ "name": name, "deleted": true }).to_string()))
}

async fn list_secrets(inner: &Inner) -> Result<Response, Response> {
    let statement = Statement::new(
        "select coalesce(json_agg(json_build_object('name', name, 'digest', digest, 'updated_at', updated_at) order by name), '[]')::text \
         from _madbase.function_secrets",
    );
    let results = run(inner, vec![statement]).await?;
    Ok(Response::json(200, results[0].scalar().unwrap_or("[]").to_owned()))
}

/// `[{"name": "A", "value": "…"}, …]`, as Supabase's management API takes secrets.
async fn set_secrets(inner: &Inner, body: Body) -> Result<Response, Response> {
    let pairs: Vec<(String, String)> = match json_body(body).await? {
        Value::Array(items) => items
            .into_iter()
            .map(|item| match (item.get("name").and_then(Value::as_str), item.get("value").and_then(Value::as_str)) {
                (Some(name), Some(value)) => Ok((name.to_owned(), value.to_owned())),
                _ => Err(error(400, "INVALID_SECRETS", "Each secret is {\"name\": string, \"value\": string}")),
            })
            .collect::<Result<_, _>>()?,
        _ => return Err(error(400, "INVALID_SECRETS", "The body is a JSON array of {\"name\", \"value\"}")),
    };
    if pairs.is_empty() || pairs.len() > MAX_SECRETS {
        return Err(error(400, "INVALID_SECRETS", &format!("Between 1 and {MAX_SECRETS} secrets at once")));
    }
    let mut statements = Vec::new();
    for (name, value) in &pairs {
        if !valid_secret_name(name) {
            return Err(error(
                400,
                "INVALID_SECRET_NAME",
                &format!(
                    "Invalid secret name {name:?}: letters, digits and '_', not starting with a digit or SUPABASE_"
                ),
            ));
        }
        if value.len() > MAX_SECRET_BYTES {
            return Err(error(
                400,
                "SECRET_TOO_LARGE",
                &format!("The value of {name} is larger than {MAX_SECRET_BYTES} bytes"),
            ));
        }
        let sealed = inner.shared.master.seal(name, value.as_bytes());
        statements.push(
            Statement::new(
                "insert into _madbase.function_secrets (name, sealed, digest) values ($1, decode($2, 'base64'), $3) \
                 on conflict (name) do update set sealed = excluded.sealed, digest = excluded.digest, updated_at = now()",
            )
            .bind(Bytes::copy_from_slice(name.as_bytes()))
            .bind(base64::engine::general_purpose::STANDARD.encode(sealed))
            .bind(digest(value.as_bytes())),
        );
    }
    statements.push(Statement::new(
        "select count(*)::text, nextval('_madbase.functions_generation') from _madbase.function_secrets",
    ));
    let results = run(inner, statements).await?;
    let count: usize = results.last().and_then(|r| r.scalar()).and_then(|c| c.parse().ok()).unwrap_or(0);
    if count > MAX_SECRETS {
        tracing::warn!(count, "more secrets than Supabase allows a project");
    }
    reload(inner).await?;
    let names: Vec<&str> = pairs.iter().map(|(name, _)| name.as_str()).collect();
    Ok(Response::json(200, json!({ "set": names }).to_string()))
}

/// `["A", "B"]`, as Supabase's management API takes the names to delete. A name that is not a
/// secret refuses the whole request (404, nothing removed): a typo must not pass for done.
async fn unset_secrets(inner: &Inner, body: Body) -> Result<Response, Response> {
    let names: Vec<String> = match json_body(body).await? {
        Value::Array(items) if !items.is_empty() && items.iter().all(Value::is_string) => {
            items.into_iter().filter_map(|v| v.as_str().map(str::to_owned)).collect()
        }
        _ => return Err(error(400, "INVALID_SECRETS", "The body is a non-empty JSON array of names")),
    };
    let statement = Statement::new(
        "with wanted as (select distinct unnest($1::text[]) as name), \
              missing as (select name from wanted where name not in (select name from _madbase.function_secrets)), \
              gone as (delete from _madbase.function_secrets where name in (select name from wanted) \
                       and not exists (select 1 from missing) returning name) \
         select (select coalesce(json_agg(name order by name), '[]') from missing)::text, \
                (select coalesce(json_agg(name order by name), '[]') from gone)::text, \
                nextval('_madbase.functions_generation')",
    )
    .bind(madbase_pg::text_array_literal(names.iter().map(String::as_str)));
    let results = run(inner, vec![statement]).await?;
    let row = results[0].rows.first();
    let missing = row.and_then(|r| r.get_str(0)).unwrap_or("[]");
    if missing != "[]" {
        return Err(error(404, "NOT_FOUND", &format!("No such secret: {missing}")));
    }
    reload(inner).await?;
    Ok(Response::json(200, format!("{{\"unset\":{}}}", row.and_then(|r| r.get_str(1)).unwrap_or("[]"))))
}

async fn json_body(body: Body) -> Result<Value, Response> {
    let bytes = body.collect(JSON_LIMIT).await.map_err(|e| error(400, "BAD_REQUEST", &e.to_string()))?;
    serde_json::from_slice(&bytes).map_err(|e| error(400, "BAD_REQUEST", &format!("The body is not JSON: {e}")))
}
