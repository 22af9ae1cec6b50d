//! The bucket API (reference/storage.md §3): list, get, create, update, empty, delete — each one
//! statement in one batch on the shard's Storage lane, run as the caller's role with its claims,
//! so `storage.buckets`' row level security decides as on Supabase; bodies rendered by
//! PostgreSQL in Supabase Storage's key order with JavaScript's timestamps.

use bytes::Bytes;
use madbase_http::{Body, Request, Response};
use madbase_pg::Statement;
use serde_json::{Map, Value};

use crate::caller::Caller;
use crate::db::{escape_like, js_time, json_body, json_response, message, run, run_delete, text};
use crate::error::StorageError;
use crate::limits::{check_bucket_name, js_number, mime_types, size_limit, SizeLimit};
use crate::Inner;

/// A bucket's JSON as `GET /bucket` sends it (Supabase's schema order; a null owner is `""`).
const LIST_JSON: &str = concat!(
    "json_build_object('id', b.id, 'name', b.name, 'owner', coalesce(b.owner::text, ''), ",
    "'public', coalesce(b.public, false), 'type', b.type::text, 'file_size_limit', b.file_size_limit, ",
    "'allowed_mime_types', b.allowed_mime_types, 'created_at', ",
    js_time!("b.created_at"),
    ", 'updated_at', ",
    js_time!("b.updated_at"),
    ")"
);

/// A bucket's JSON as `GET /bucket/{id}` sends it: the same without `type`.
const GET_JSON: &str = concat!(
    "json_build_object('id', b.id, 'name', b.name, 'owner', coalesce(b.owner::text, ''), ",
    "'public', coalesce(b.public, false), 'file_size_limit', b.file_size_limit, ",
    "'allowed_mime_types', b.allowed_mime_types, 'created_at', ",
    js_time!("b.created_at"),
    ", 'updated_at', ",
    js_time!("b.updated_at"),
    ")"
);

/// `allowed_mime_types` from the JSON array in parameter `$n` (`null` stays null, `[]` is `{}`).
pub(crate) fn mime_array(n: usize) -> String {
    format!(
        "case when ${n}::jsonb is null then null \
         else (select coalesce(array_agg(t), '{{}}') from jsonb_array_elements_text(${n}::jsonb) t) end"
    )
}

/// `GET /bucket`: the buckets the caller may see, with `search`, `sortColumn`, `sortOrder`,
/// `limit` and `offset`.
pub async fn list(inner: &Inner, req: &Request, caller: &Caller) -> Result<Response, StorageError> {
    let mut limit = None;
    let mut offset = None;
    let mut sort = None;
    let mut order = "asc";
    let mut search = None;
    for (key, value) in req.query_pairs() {
        match key.as_str() {
            "limit" => limit = Some(integer_param("limit", &value, 1)?),
            "offset" => offset = Some(integer_param("offset", &value, 0)?),
            "sortColumn" => match value.as_str() {
                "id" | "name" | "created_at" | "updated_at" => sort = Some(value),
                _ => {
                    return Err(StorageError::validation(
                        "querystring/sortColumn must be equal to one of the allowed values",
                    ))
                }
            },
            "sortOrder" => match value.as_str() {
                "asc" => order = "asc",
                "desc" => order = "desc",
                _ => {
                    return Err(StorageError::validation(
                        "querystring/sortOrder must be equal to one of the allowed values",
                    ))
                }
            },
            "search" => search = Some(value).filter(|s| !s.is_empty()),
            _ => {}
        }
    }
    // The column comes from the list above, never from the request's text.
    let order_by = sort.map(|c| format!(" order by b.{c} {order}")).unwrap_or_default();
    let sql = format!(
        "select coalesce(json_agg(j), '[]')::text from (select {LIST_JSON} as j from storage.buckets b \
         where $1::text is null or b.name ilike $1{order_by} limit $2::bigint offset $3::bigint) s"
    );
    let pattern = search.map(|s| format!("%{}%", escape_like(&s)));
    let statement = Statement::new(sql)
        .bind_opt(pattern.as_deref().map(text))
        .bind_opt(limit.map(|n| text(&n.to_string())))
        .bind_opt(offset.map(|n| text(&n.to_string())));
    Ok(json_response(&run(inner, caller, statement).await?))
}

fn integer_param(name: &str, value: &str, minimum: u64) -> Result<u64, StorageError> {
    match value.parse::<u64>() {
        Ok(n) if n >= minimum => Ok(n),
        Ok(_) => Err(StorageError::validation(format!("querystring/{name} must be >= {minimum}"))),
        Err(_) => Err(StorageError::validation(format!("querystring/{name} must be integer"))),
    }
}

/// A boolean field, with the coercions of Supabase Storage's schema validator (`"true"`,
/// `"false"`, `1`, `0`, `null` as false).
fn boolean(body: &Map<String, Value>, key: &str) -> Result<Option<bool>, StorageError> {
    match body.get(key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(Value::String(s)) if s == "true" => Ok(Some(true)),
        Some(Value::String(s)) if s == "false" => Ok(Some(false)),
        Some(Value::Number(n)) if n.as_u64() == Some(1) => Ok(Some(true)),
        Some(Value::Number(n)) if n.as_u64() == Some(0) => Ok(Some(false)),
        Some(Value::Null) => Ok(Some(false)),
        Some(_) => Err(StorageError::validation(format!("body/{key} must be boolean"))),
    }
}

/// `GET /bucket/{id}`.
pub async fn get(inner: &Inner, caller: &Caller, id: &str) -> Result<Response, StorageError> {
    let sql = format!("select {GET_JSON}::text from storage.buckets b where b.id = $1 limit 1");
    let result = run(inner, caller, Statement::new(sql).bind(text(id))).await?;
    if result.rows.is_empty() {
        return Err(StorageError::no_such_bucket());
    }
    Ok(json_response(&result))
}

/// `POST /bucket`: `{name, id?, public?, file_size_limit?, allowed_mime_types?, type?}` →
/// `{"name"}`; the caller's `sub` owns it.
pub async fn create(inner: &Inner, req: &Request, body: Body, caller: &Caller) -> Result<Response, StorageError> {
    let body = json_body(req, body, false).await?;
    let Some(name) = body.get("name") else {
        return Err(StorageError::validation("body must have required property 'name'"));
    };
    let Some(name) = name.as_str() else { return Err(StorageError::validation("body/name must be string")) };
    let id = match body.get("id") {
        None => name,
        Some(Value::String(id)) if !id.is_empty() => id.as_str(),
        Some(Value::String(_)) => name,
        Some(_) => return Err(StorageError::validation("body/id must be string")),
    };
    check_bucket_name(name)?;
    check_bucket_name(id)?;
    let public = boolean(&body, "public")?.unwrap_or(false);
    match body.get("type") {
        None => {}
        Some(Value::String(t)) if t == "STANDARD" => {}
        Some(Value::String(t)) if t == "ANALYTICS" => {
            return Err(StorageError::feature_not_enabled("Iceberg buckets are not enabled for this tenant"));
        }
        Some(_) => return Err(StorageError::validation("body/type must be equal to one of the allowed values")),
    }
    let limit = size_limit(body.get("file_size_limit"), inner.settings.file_size_limit_bytes())?;
    let mimes = mime_types(body.get("allowed_mime_types"))?.flatten();
    let sql = format!(
        "insert into storage.buckets (id, name, owner, owner_id, public, allowed_mime_types, file_size_limit) \
         values ($2, $3, $4::uuid, $5, $6::boolean, {}, $7::bigint)",
        mime_array(1)
    );
    let statement = Statement::new(sql)
        .bind_opt(mimes.map(|m| Bytes::from(serde_json::to_string(&m).unwrap_or_default())))
        .bind(text(id))
        .bind(text(name))
        .bind_opt(caller.owner_uuid().map(text))
        .bind_opt(caller.sub.as_deref().map(text))
        .bind(text(if public { "true" } else { "false" }))
        .bind_opt(match limit {
            SizeLimit::Bytes(n) => Some(text(&js_number(n))),
            SizeLimit::Absent | SizeLimit::Null => None,
        });
    match run(inner, caller, statement).await {
        Ok(_) => Ok(Response::json(200, serde_json::json!({ "name": name }).to_string())),
        Err(e) if e.code == "ResourceAlreadyExists" => Err(StorageError::bucket_already_exists()),
        Err(e) => Err(e),
    }
}

/// `PUT /bucket/{id}`: any of `public`, `file_size_limit`, `allowed_mime_types` (a `null` limit
/// or type list clears it).
pub async fn update(
    inner: &Inner,
    req: &Request,
    body: Body,
    caller: &Caller,
    id: &str,
) -> Result<Response, StorageError> {
    let body = json_body(req, body, false).await?;
    if body.is_empty() {
        return Err(StorageError::validation("body must NOT have fewer than 1 properties"));
    }
    if !["public", "file_size_limit", "allowed_mime_types"].iter().any(|k| body.contains_key(*k)) {
        return Err(StorageError::validation("body must have required property 'public'"));
    }
    let public = boolean(&body, "public")?;
    check_bucket_name(id)?;
    let limit = size_limit(body.get("file_size_limit"), inner.settings.file_size_limit_bytes())?;
    let mimes = mime_types(body.get("allowed_mime_types"))?;
    // Fixed column names; the values are parameters after the id ($1).
    let mut sets = Vec::new();
    let mut params: Vec<Bytes> = Vec::new();
    if let Some(p) = public {
        params.push(text(if p { "true" } else { "false" }));
        sets.push(format!("public = ${}::boolean", params.len() + 1));
    }
    match limit {
        SizeLimit::Absent => {}
        SizeLimit::Null => sets.push("file_size_limit = null".to_owned()),
        SizeLimit::Bytes(n) => {
            params.push(text(&js_number(n)));
            sets.push(format!("file_size_limit = ${}::bigint", params.len() + 1));
        }
    }
    match mimes {
        None => {}
        Some(None) => sets.push("allowed_mime_types = null".to_owned()),
        Some(Some(list)) => {
            params.push(Bytes::from(serde_json::to_string(&list).unwrap_or_default()));
            sets.push(format!("allowed_mime_types = {}", mime_array(params.len() + 1)));
        }
    }
    let sql = format!("update storage.buckets set {} where id = $1", sets.join(", "));
    let statement = params.into_iter().fold(Statement::new(sql).bind(text(id)), Statement::bind);
    let result = run(inner, caller, statement).await?;
    if result.rows_affected() == Some(0) {
        return Err(StorageError::no_such_bucket());
    }
    Ok(message("Successfully updated"))
}

/// `DELETE /bucket/{id}`: only an empty bucket, deleted as the caller (a policy may refuse it:
/// then it is not found). Objects still in it — those the caller cannot see too — hold it through
/// `storage.objects`' foreign key: that violation is Supabase's "not empty".
pub async fn delete(inner: &Inner, caller: &Caller, id: &str) -> Result<Response, StorageError> {
    let sql = "delete from storage.buckets b where b.id = $1";
    match run_delete(inner, caller, Statement::new(sql).bind(text(id))).await {
        Ok(result) if result.rows_affected() == Some(1) => Ok(message("Successfully deleted")),
        Ok(_) => Err(StorageError::no_such_bucket()),
        Err(e) if e.code == "ResourceReferenced" => Err(StorageError::bucket_not_empty()),
        Err(e) => Err(e),
    }
}

/// `POST /bucket/{id}/empty` (service role): removes every object of the bucket, refused above
/// `[storage] empty_bucket_max` objects. Supabase queues the removal; here it is done when the
/// answer says it was queued.
pub async fn empty(inner: &Inner, caller: &Caller, id: &str) -> Result<Response, StorageError> {
    let sql = "with bucket as (select b.id from storage.buckets b where b.id = $1), \
               counted as (select count(*) as n from (select 1 from storage.objects o where o.bucket_id = $1 limit $2::bigint + 1) x), \
               gone as (delete from storage.objects o where o.bucket_id = $1 and exists (select 1 from bucket) \
                        and (select n from counted) <= $2::bigint returning 1) \
               select exists (select 1 from bucket), (select n from counted) <= $2::bigint, (select count(*) from gone)";
    let max = inner.settings.empty_bucket_max.to_string();
    let result = run_delete(inner, caller, Statement::new(sql).bind(text(id)).bind(text(&max))).await?;
    let row = result.rows.first().ok_or_else(StorageError::internal)?;
    match (row.get_str(0), row.get_str(1)) {
        (Some("t"), Some("t")) => Ok(message("Empty bucket has been queued. Completion may take up to an hour.")),
        (Some("t"), _) => {
            Err(StorageError::unable_to_empty_bucket("Unable to empty the bucket because it contains too many objects"))
        }
        _ => Err(StorageError::no_such_bucket()),
    }
}
