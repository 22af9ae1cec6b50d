//! Signed URLs (reference/storage.md §5): download tokens for one object or many, upload tokens
//! for one key, and the routes that honour them without other credentials.
//!
//! A token is a JWT signed with the project's JWT key (Supabase's URL-signing key defaults to the
//! same secret), claims `{url: "<bucket>/<key>", scope: "download"|"upload", iat, exp}` plus
//! `transformations`, or `owner` and `upsert` for uploads. Invariants: signing a download needs the
//! caller to see the object (SELECT), signing an upload needs the caller's INSERT (tried and rolled
//! back); a token is honoured only for its own scope and its own `url`, before its `exp`; nothing
//! the caller sends can set `role`, `owner`, `upsert` or `scope` in a download token.

use madbase_core::jwt::unix_now;
use madbase_http::{Body, Request, Response};
use madbase_pg::Statement;
use serde_json::{json, Map, Value};

use crate::caller::{jose_message, Caller};
use crate::db::{json_body, run, text};
use crate::error::StorageError;
use crate::object::{self, Access, ObjectPath};
use crate::transform::{Limits, TransformOptions};
use crate::upload::{self, Mode};
use crate::Inner;

pub const SCOPE_DOWNLOAD: &str = "download";
pub const SCOPE_UPLOAD: &str = "upload";

/// Most paths one batch signing takes (Supabase's lookup batch).
const MAX_PATHS: usize = 1000;

fn sign(inner: &Inner, mut claims: Map<String, Value>, expires_in: u64) -> Result<String, StorageError> {
    let now = unix_now();
    claims.insert("iat".into(), now.into());
    claims.insert("exp".into(), now.saturating_add(expires_in).into());
    inner.keys.sign(&Value::Object(claims)).map_err(|error| {
        tracing::error!(%error, "cannot sign a storage URL token");
        StorageError::internal()
    })
}

/// `expiresIn`: a positive integer number of seconds.
fn expires_in(body: &Map<String, Value>) -> Result<u64, StorageError> {
    match body.get("expiresIn") {
        None => Err(StorageError::validation("body must have required property 'expiresIn'")),
        Some(v) => match v.as_u64().or_else(|| v.as_str().and_then(|s| s.parse().ok())) {
            Some(n) if n >= 1 => Ok(n),
            Some(_) => Err(StorageError::validation("body/expiresIn must be >= 1")),
            None => Err(StorageError::validation("body/expiresIn must be integer")),
        },
    }
}

/// `POST /object/sign/{bucket}/{key}` `{expiresIn, transform?}` → `{"signedURL"}`.
pub async fn create_url(
    inner: &Inner,
    req: &Request,
    body: Body,
    caller: &Caller,
    path: &ObjectPath,
) -> Result<Response, StorageError> {
    let body = json_body(req, body, false).await?;
    let expires = expires_in(&body)?;
    let sql = "select 1 from storage.objects o where o.bucket_id = $1 and o.name = $2";
    let found = run(inner, caller, Statement::new(sql).bind(text(&path.bucket)).bind(text(&path.key))).await?;
    if found.rows.is_empty() {
        return Err(StorageError::no_such_key());
    }
    let mut claims = Map::new();
    let transform = match body.get("transform") {
        Some(Value::Object(fields)) if inner.settings.image_transformation.enabled => Some(fields),
        _ => None,
    };
    if let Some(fields) = transform {
        let pairs: Vec<(&str, String)> = fields
            .iter()
            .filter_map(|(k, v)| match v {
                Value::String(s) => Some((k.as_str(), s.clone())),
                Value::Number(n) => Some((k.as_str(), n.to_string())),
                _ => None,
            })
            .collect();
        let options = TransformOptions::from_fields("body/transform", &pairs, &Limits::default())
            .map_err(|e| StorageError::validation(e.public_message()))?;
        // Supabase keeps only non-empty claims: an empty transform signs a plain download.
        let claim = options.claim();
        if !claim.is_empty() {
            claims.insert("transformations".into(), claim.into());
        }
        if let Some(format) = fields.get("format").and_then(Value::as_str).filter(|f| !f.is_empty()) {
            claims.insert("format".into(), format.into());
        }
    }
    let route = if claims.contains_key("transformations") { "render/image" } else { "object" };
    claims.insert("url".into(), path.full().into());
    claims.insert("scope".into(), SCOPE_DOWNLOAD.into());
    let token = sign(inner, claims, expires)?;
    let url = format!("/{route}/sign/{}?token={token}", path.full());
    Ok(Response::json(200, json!({ "signedURL": url }).to_string()))
}

/// `POST /object/sign/{bucket}` `{expiresIn, paths}` → one entry per path, signed when the
/// caller can see the object.
pub async fn create_urls(
    inner: &Inner,
    req: &Request,
    body: Body,
    caller: &Caller,
    bucket: &str,
) -> Result<Response, StorageError> {
    let body = json_body(req, body, false).await?;
    let expires = expires_in(&body)?;
    let paths: Vec<&str> = match body.get("paths") {
        None => return Err(StorageError::validation("body must have required property 'paths'")),
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
        Some(_) => return Err(StorageError::validation("body/paths must be array")),
    };
    if paths.is_empty() || paths.len() > MAX_PATHS {
        return Err(StorageError::validation(format!("body/paths must have 1 to {MAX_PATHS} items")));
    }
    let sql = "select coalesce(json_agg(o.name), '[]')::text from storage.objects o \
               where o.bucket_id = $1 and o.name = any($2::text[])";
    let statement =
        Statement::new(sql).bind(text(bucket)).bind(madbase_pg::text_array_literal(paths.iter().copied()).into_bytes());
    let found = run(inner, caller, statement).await?;
    let visible: std::collections::HashSet<String> =
        found.scalar().and_then(|json| serde_json::from_str(json).ok()).unwrap_or_default();
    let mut entries = Vec::with_capacity(paths.len());
    for path in paths {
        if visible.contains(path) {
            let url = format!("{bucket}/{path}");
            let mut claims = Map::new();
            claims.insert("url".into(), url.clone().into());
            claims.insert("scope".into(), SCOPE_DOWNLOAD.into());
            let token = sign(inner, claims, expires)?;
            entries
                .push(json!({ "error": null, "path": path, "signedURL": format!("/object/sign/{url}?token={token}") }));
        } else {
            entries.push(json!({
                "error": "Either the object does not exist or you do not have access to it",
                "path": path,
                "signedURL": null,
            }));
        }
    }
    Ok(Response::json(200, Value::Array(entries).to_string()))
}

/// `POST /object/upload/sign/{bucket}/{key}` (`x-upsert`) → `{"url","token"}`, after the
/// caller's right to write the row was tried.
pub async fn create_upload_url(
    inner: &Inner,
    req: &Request,
    caller: &Caller,
    path: &ObjectPath,
) -> Result<Response, StorageError> {
    let upsert = req.header_str("x-upsert") == Some("true");
    let mode = if upsert { Mode::Upsert } else { Mode::Create };
    upload::can_upload(inner, caller, caller.sub.as_deref(), path, mode).await?;
    let mut claims = Map::new();
    if let Some(owner) = &caller.sub {
        claims.insert("owner".into(), owner.clone().into());
    }
    claims.insert("url".into(), path.full().into());
    claims.insert("upsert".into(), upsert.into());
    claims.insert("scope".into(), SCOPE_UPLOAD.into());
    let token = sign(inner, claims, inner.settings.upload_signed_url_expiration_time)?;
    let url = format!("/object/upload/sign/{}?token={token}", path.full());
    Ok(Response::json(200, json!({ "url": url, "token": token }).to_string()))
}

/// The verified claims of `?token=` for `path` and `scope`.
pub(crate) fn verify(
    inner: &Inner,
    req: &Request,
    path: &ObjectPath,
    scope: &str,
) -> Result<Map<String, Value>, StorageError> {
    let token = req
        .query_pairs()
        .into_iter()
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v)
        .ok_or_else(|| StorageError::validation("querystring must have required property 'token'"))?;
    let claims = inner.keys.verify(&token, unix_now()).map_err(|e| StorageError::invalid_jwt(jose_message(&e)))?;
    let claims = claims.object;
    let token_scope = claims.get("scope").and_then(Value::as_str);
    let scoped = match scope {
        SCOPE_UPLOAD => token_scope == Some(SCOPE_UPLOAD),
        // Tokens made before scopes: a download token is one that is not an upload token.
        _ => token_scope == Some(SCOPE_DOWNLOAD) || (token_scope.is_none() && !claims.contains_key("upsert")),
    };
    if !scoped {
        return Err(StorageError::invalid_signature_because(format!("Token is not scoped for {scope}")));
    }
    if claims.get("url").and_then(Value::as_str) != Some(path.full().as_str()) {
        return Err(StorageError::invalid_signature());
    }
    Ok(claims)
}

/// `GET /object/sign/{bucket}/{key}?token=`: the object, on the token alone.
pub async fn download(inner: &Inner, req: &Request, path: &ObjectPath) -> Result<Response, StorageError> {
    verify(inner, req, path, SCOPE_DOWNLOAD)?;
    object::download(inner, req, None, path, Access::Signed).await
}

/// `PUT /object/upload/sign/{bucket}/{key}?token=` → `{"Key"}`: an upload on the token alone,
/// owned by its `owner`, replacing only if it says `upsert`.
pub async fn upload(inner: &Inner, req: &Request, body: Body, path: &ObjectPath) -> Result<Response, StorageError> {
    let claims = verify(inner, req, path, SCOPE_UPLOAD)?;
    let owner = claims.get("owner").and_then(Value::as_str);
    let mode = if claims.get("upsert").and_then(Value::as_bool) == Some(true) { Mode::Upsert } else { Mode::Create };
    let service = Caller::service_role(owner);
    upload::upload(inner, req, body, &service, owner, path, mode).await?;
    Ok(Response::json(200, json!({ "Key": path.full() }).to_string()))
}
