//! The admin API (`supabase.auth.admin`, reference/auth.md §3.2): `/admin/users` (list, create,
//! get, update, delete), a user's MFA factors, `/admin/audit`, and the admin gate in front of
//! `POST /invite`, `POST /admin/generate_link` and `GET /admin/mail` (which [`crate::flows`]
//! serves).
//!
//! Owns the admin parameters and their validation (GoTrue's `internal/api/admin.go` order and
//! messages), GoTrue's offset pagination (`page`, `per_page`, `X-Total-Count`, `Link`), its
//! Go-duration `ban_duration`, `password_hash` import checks, and the statements of each admin
//! request (with the SQL functions of `migrations/0007_auth_admin.sql`).
//!
//! Invariants:
//! - every path here answers 401 `no_authorization` without a bearer token and 403 `not_admin`
//!   unless the token's role is an admin role, before anything else is read; the token's `sub`
//!   is never used (the auth-js suite's admin token has `sub: "1234567890"`);
//! - each request is one batch (one round trip, one transaction): a list reads its count and its
//!   page together, an update's checks, changes, audit row and answer commit or fail together;
//! - nothing from the request reaches SQL text: the only variable SQL is a sort direction chosen
//!   between two constants; every string stored is bounded (addresses by their validators,
//!   metadata by [`crate::signup::MAX_METADATA_BYTES`], the rest by [`MAX_FIELD_BYTES`]);
//! - password hashing runs on the blocking pool.
//!
//! Where MadBase differs from GoTrue on purpose: `per_page` is at most [`MAX_PER_PAGE`] and `0`
//! means pop's default 20 (GoTrue has no cap and divides by zero); a duplicate address on
//! `PUT /admin/users/<id>` is 422 `email_exists` / `phone_exists` (GoTrue: 500); a duplicate factor
//! name is 422 `mfa_factor_name_conflict` (GoTrue: 500); listed users carry their identities and
//! factors like every other rendering of a user; a user's factors list is `[]`, never `null`.

use madbase_http::{Body, Response};
use madbase_pg::{Batch, PgError, Statement, StatementResult};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::call::{require_admin, require_token, Call};
use crate::crypto::{password, random};
use crate::error::{AuthError, AuthResult};
use crate::signup::{identity_data, validate_email, validate_phone, Provider};
use crate::AuthService;

/// GoTrue's page size when `per_page` is absent.
pub const DEFAULT_PER_PAGE: u64 = 50;
/// pop's page size when `per_page` is 0.
const POP_DEFAULT_PER_PAGE: u64 = 20;
/// The largest page MadBase serves (GoTrue's cursor-mode maximum).
pub const MAX_PER_PAGE: u64 = 1000;
/// Bytes of a free-text field (role, aud, filter, friendly name, ban duration).
pub const MAX_FIELD_BYTES: usize = 255;
/// The audience of users created without one (GoTrue's `GOTRUE_JWT_AUD` default).
const DEFAULT_AUD: &str = "authenticated";
/// The role of users created without one (GoTrue's `GOTRUE_JWT_DEFAULT_GROUP_NAME` default).
const DEFAULT_ROLE: &str = "authenticated";

/// The body of `POST /admin/users` and `PUT /admin/users/<id>` (GoTrue's `AdminUserParams`).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct UserParams {
    id: Option<String>,
    aud: Option<String>,
    role: Option<String>,
    email: Option<String>,
    phone: Option<String>,
    password: Option<String>,
    password_hash: Option<String>,
    email_confirm: Option<bool>,
    phone_confirm: Option<bool>,
    user_metadata: Option<Map<String, Value>>,
    app_metadata: Option<Map<String, Value>>,
    ban_duration: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct DeleteParams {
    should_soft_delete: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct FactorParams {
    friendly_name: Option<String>,
    phone: Option<String>,
}

/// Who the admin is, for audit rows: GoTrue names its admin actor by the token's role.
struct Admin {
    role: String,
}

/// Routes an admin request (`/invite` and every `/admin/…` path).
pub async fn route(auth: &AuthService, call: &Call<'_>, body: Body) -> AuthResult<Response> {
    let claims = require_token(call, |token| auth.verify(token))?;
    require_admin(&claims)?;
    let admin = Admin { role: claims.role().unwrap_or_default().to_owned() };
    let method = call.req.method();
    let read = matches!(method, "GET" | "HEAD");
    match call.path {
        "/invite" => match method {
            "POST" => crate::flows::invite(auth, call, body).await,
            _ => Err(method_not_allowed()),
        },
        "/admin/generate_link" => match method {
            "POST" => crate::flows::generate_link(auth, call, body).await,
            _ => Err(method_not_allowed()),
        },
        "/admin/mail" => match read {
            true => crate::flows::mail_outbox(auth).await,
            false => Err(method_not_allowed()),
        },
        "/admin/audit" | "/admin/audit/" => match read {
            true => audit(auth, call).await,
            false => Err(method_not_allowed()),
        },
        "/admin/users" | "/admin/users/" => match method {
            "GET" | "HEAD" => list(auth, call).await,
            "POST" => create(auth, call, body, &admin).await,
            _ => Err(method_not_allowed()),
        },
        path => match path.strip_prefix("/admin/users/") {
            Some(rest) => user_route(auth, call, body, &admin, rest).await,
            None => Err(AuthError::not_found()),
        },
    }
}

/// `/admin/users/<id>[/factors[/<factor id>]]`.
async fn user_route(
    auth: &AuthService,
    call: &Call<'_>,
    body: Body,
    admin: &Admin,
    rest: &str,
) -> AuthResult<Response> {
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let mut segments = rest.split('/');
    let user_id = segments.next().unwrap_or_default();
    let user_id =
        parse_uuid(user_id).ok_or_else(|| AuthError::new(404, "validation_failed", "user_id must be an UUID"))?;
    let method = call.req.method();
    match (segments.next(), segments.next(), segments.next()) {
        (None, _, _) => match method {
            "GET" | "HEAD" => get(auth, &user_id).await,
            "PUT" => update(auth, call, body, admin, &user_id).await,
            "DELETE" => delete(auth, call, body, admin, &user_id).await,
            _ => Err(method_not_allowed()),
        },
        (Some("factors"), None, _) => match method {
            "GET" | "HEAD" => list_factors(auth, &user_id).await,
            _ => Err(method_not_allowed()),
        },
        (Some("factors"), Some(factor_id), None) => {
            let factor_id = parse_uuid(factor_id)
                .ok_or_else(|| AuthError::new(404, "validation_failed", "factor_id must be an UUID"))?;
            match method {
                "PUT" => update_factor(auth, call, body, admin, &user_id, &factor_id).await,
                "DELETE" => delete_factor(auth, call, &user_id, &factor_id).await,
                _ => Err(method_not_allowed()),
            }
        }
        _ => Err(AuthError::not_found()),
    }
}

fn method_not_allowed() -> AuthError {
    AuthError::new(405, "", "Method Not Allowed")
}

fn user_not_found() -> AuthError {
    AuthError::new(404, "user_not_found", "User not found")
}

fn factor_not_found() -> AuthError {
    AuthError::new(404, "mfa_factor_not_found", "Factor not found")
}

const DUPLICATE_EMAIL: &str = "A user with this email address has already been registered";
const DUPLICATE_PHONE: &str = "Phone number already registered by another user";

/// The audience of the request: `X-JWT-AUD`, else the default (GoTrue ignores an admin token's
/// `aud`).
fn request_aud<'c>(call: &'c Call<'_>) -> &'c str {
    match call.req.header_str("x-jwt-aud").map(str::trim) {
        Some(aud) if !aud.is_empty() => crate::call::truncate(aud, MAX_FIELD_BYTES),
        _ => DEFAULT_AUD,
    }
}

// ------------------------------------------------------------------------------------------------
// GET /admin/users

/// Users of the audience, newest first (or `sort=created_at asc`), `filter` matching the email
/// (`LIKE`) or `user_metadata.full_name` (`ILIKE`), one page of them with the total.
async fn list(auth: &AuthService, call: &Call<'_>) -> AuthResult<Response> {
    let query = query_pairs(call);
    let ascending = sort_ascending(&query)?;
    let page = Page::parse(call)?;
    let filter = call.query("filter").unwrap_or_default();
    if filter.len() > MAX_FIELD_BYTES {
        return Err(AuthError::validation("filter is too long"));
    }
    let aud = request_aud(call);
    let page_sql = if ascending { LIST_USERS_ASC } else { LIST_USERS_DESC };
    let batch = Batch::new()
        .statement(Statement::new(COUNT_USERS).bind(aud.to_owned()).bind(filter.to_owned()))
        .statement(
            Statement::new(page_sql)
                .bind(aud.to_owned())
                .bind(filter.to_owned())
                .bind(page.limit().to_string())
                .bind(page.offset().to_string()),
        )
        .read_only(true);
    let results = auth.run(batch).await?;
    let count = count_of(results.first())?;
    let users = results.get(1).and_then(StatementResult::scalar).unwrap_or("");
    let mut text = String::with_capacity(users.len() + 48);
    text.push_str("{\"users\":[");
    text.push_str(users);
    text.push_str("],\"aud\":");
    text.push_str(&Value::from(aud).to_string());
    text.push('}');
    let mut response = Response::json(200, text);
    page.headers(&mut response, call, &query, count);
    Ok(response)
}

const COUNT_USERS: &str = "select count(*) from auth.users u \
     where u.instance_id = '00000000-0000-0000-0000-000000000000' and u.aud = $1 \
     and ($2 = '' or u.email like '%' || $2 || '%' or u.raw_user_meta_data ->> 'full_name' ilike '%' || $2 || '%')";

const LIST_USERS_DESC: &str =
    "select string_agg(_madbase.auth_user_json(p)::text, ',' order by p.created_at desc, p.id desc) \
     from (select * from auth.users u where u.instance_id = '00000000-0000-0000-0000-000000000000' and u.aud = $1 \
     and ($2 = '' or u.email like '%' || $2 || '%' or u.raw_user_meta_data ->> 'full_name' ilike '%' || $2 || '%') \
     order by u.created_at desc, u.id desc limit $3::bigint offset $4::bigint) p";

const LIST_USERS_ASC: &str = "select string_agg(_madbase.auth_user_json(p)::text, ',' order by p.created_at, p.id) \
     from (select * from auth.users u where u.instance_id = '00000000-0000-0000-0000-000000000000' and u.aud = $1 \
     and ($2 = '' or u.email like '%' || $2 || '%' or u.raw_user_meta_data ->> 'full_name' ilike '%' || $2 || '%') \
     order by u.created_at, u.id limit $3::bigint offset $4::bigint) p";

/// The `count(*)` of a result.
fn count_of(result: Option<&StatementResult>) -> AuthResult<u64> {
    result
        .and_then(StatementResult::scalar)
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| AuthError::internal("admin: count returned no number"))
}

/// GoTrue's `sort` parameter (every value, `created_at [asc|desc]`); whether the first is ascending.
fn sort_ascending(query: &[(String, String)]) -> AuthResult<bool> {
    let mut ascending = None;
    for (_, value) in query.iter().filter(|(k, _)| k == "sort") {
        let (field, direction) = match value.split_once(' ') {
            Some((field, direction)) => (field, Some(direction)),
            None => (value.as_str(), None),
        };
        if field != "created_at" {
            return Err(bad_sort(format!("bad field for sort '{field}'")));
        }
        let asc = match direction.map(str::to_ascii_uppercase).as_deref() {
            None | Some("DESC") => false,
            Some("ASC") => true,
            Some(_) => {
                let direction = direction.unwrap_or_default();
                return Err(bad_sort(format!("bad direction for sort '{direction}', only 'asc' and 'desc' allowed")));
            }
        };
        ascending.get_or_insert(asc);
    }
    Ok(ascending.unwrap_or(false))
}

fn bad_sort(detail: String) -> AuthError {
    AuthError::validation(format!("Bad Sort Parameters: {detail}"))
}

/// The query string's pairs, decoded, in order (at most 64, as [`Call`] keeps).
fn query_pairs(call: &Call<'_>) -> Vec<(String, String)> {
    call.req
        .query()
        .map(|q| url::form_urlencoded::parse(q.as_bytes()).into_owned().take(64).collect())
        .unwrap_or_default()
}

/// GoTrue's offset pagination of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Page {
    /// `page` as asked (0 is served as 1, and reported as asked in `Link`, as GoTrue does).
    page: u64,
    /// The page size served.
    per_page: u64,
}

impl Page {
    fn parse(call: &Call<'_>) -> AuthResult<Page> {
        Page::from_params(call.query("page"), call.query("per_page"))
    }

    fn from_params(page: Option<&str>, per_page: Option<&str>) -> AuthResult<Page> {
        let page = parse_uint(page)?.unwrap_or(1);
        let per_page = match parse_uint(per_page)? {
            None => DEFAULT_PER_PAGE,
            Some(0) => POP_DEFAULT_PER_PAGE,
            Some(n) => n.min(MAX_PER_PAGE),
        };
        Ok(Page { page, per_page })
    }

    fn limit(self) -> u64 {
        self.per_page
    }

    fn offset(self) -> u64 {
        self.page.max(1).saturating_sub(1).saturating_mul(self.per_page).min(i64::MAX as u64)
    }

    fn total_pages(self, count: u64) -> u64 {
        count.div_ceil(self.per_page)
    }

    /// `X-Total-Count`, and `Link` with `rel="next"` when a next page exists and `rel="last"`
    /// always: the request's path and query with `page` replaced (GoTrue's `addPaginationHeaders`).
    fn headers(self, response: &mut Response, call: &Call<'_>, query: &[(String, String)], count: u64) {
        response.set_header("link", self.link(call.path, query, count));
        response.set_header("x-total-count", count.to_string());
    }

    fn link(self, path: &str, query: &[(String, String)], count: u64) -> String {
        let total = self.total_pages(count);
        let mut link = String::new();
        if total > self.page {
            link.push('<');
            link.push_str(&page_url(path, query, self.page + 1));
            link.push_str(">; rel=\"next\", ");
        }
        link.push('<');
        link.push_str(&page_url(path, query, total));
        link.push_str(">; rel=\"last\"");
        link
    }
}

/// Go's `strconv.ParseUint(text, 10, 64)` of a query parameter; `None` when absent or empty.
fn parse_uint(text: Option<&str>) -> AuthResult<Option<u64>> {
    let Some(text) = text.filter(|t| !t.is_empty()) else { return Ok(None) };
    let bad = |why: &str| {
        AuthError::validation(format!(
            "Bad Pagination Parameters: strconv.ParseUint: parsing {}: {why}",
            go_quote(crate::call::truncate(text, 64))
        ))
    };
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad("invalid syntax"));
    }
    text.parse().map(Some).map_err(|_| bad("value out of range"))
}

/// `path?query` with `page` set to `page`, the query encoded as Go's `url.Values.Encode` does
/// (keys sorted, values in order, `QueryEscape`d).
fn page_url(path: &str, query: &[(String, String)], page: u64) -> String {
    let mut keys: Vec<&str> = query.iter().map(|(k, _)| k.as_str()).filter(|k| *k != "page").collect();
    keys.push("page");
    keys.sort_unstable();
    keys.dedup();
    let mut out = String::from(path);
    out.push('?');
    for (i, key) in keys.iter().enumerate() {
        let page_text = page.to_string();
        let values: Vec<&str> = if *key == "page" {
            vec![page_text.as_str()]
        } else {
            query.iter().filter(|(k, _)| k == key).map(|(_, v)| v.as_str()).collect()
        };
        for (j, value) in values.iter().enumerate() {
            if i > 0 || j > 0 {
                out.push('&');
            }
            go_query_escape(&mut out, key);
            out.push('=');
            go_query_escape(&mut out, value);
        }
    }
    out
}

/// Go's `url.QueryEscape`.
fn go_query_escape(out: &mut String, text: &str) {
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            b' ' => out.push('+'),
            _ => {
                const HEX: &[u8; 16] = b"0123456789ABCDEF";
                out.push('%');
                out.push(HEX[usize::from(b >> 4)] as char);
                out.push(HEX[usize::from(b & 15)] as char);
            }
        }
    }
}

/// Go's `strconv.Quote` for the text in error messages (printable ASCII kept, the rest escaped).
fn go_quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

// ------------------------------------------------------------------------------------------------
// GET /admin/audit

/// Audit-log entries, newest first, `query=author:…|action:…|type:…` filtering as GoTrue does.
async fn audit(auth: &AuthService, call: &Call<'_>) -> AuthResult<Response> {
    let page = Page::parse(call)?;
    let (scope, value) = match call.query("query").filter(|q| !q.is_empty()) {
        None => ("", ""),
        Some(q) => {
            let (scope, value) = q.split_once(':').unwrap_or((q, ""));
            if !matches!(scope, "author" | "action" | "type") || !q.contains(':') {
                return Err(AuthError::validation(format!(
                    "Invalid query scope: {}",
                    crate::call::truncate(q, MAX_FIELD_BYTES)
                )));
            }
            (scope, value)
        }
    };
    if value.len() > MAX_FIELD_BYTES {
        return Err(AuthError::validation("query is too long"));
    }
    let batch = Batch::new()
        .statement(Statement::new(COUNT_AUDIT).bind(scope.to_owned()).bind(value.to_owned()))
        .statement(
            Statement::new(LIST_AUDIT)
                .bind(scope.to_owned())
                .bind(value.to_owned())
                .bind(page.limit().to_string())
                .bind(page.offset().to_string()),
        )
        .read_only(true);
    let results = auth.run(batch).await?;
    let count = count_of(results.first())?;
    let rows = results.get(1).and_then(StatementResult::scalar).unwrap_or("");
    let mut response = Response::json(200, format!("[{rows}]"));
    page.headers(&mut response, call, &query_pairs(call), count);
    Ok(response)
}

const COUNT_AUDIT: &str = "select count(*) from auth.audit_log_entries a \
     where a.instance_id = '00000000-0000-0000-0000-000000000000' and ($2 = '' \
     or ($1 = 'author' and (a.payload ->> 'actor_username' ilike '%' || $2 || '%' or a.payload ->> 'actor_name' ilike '%' || $2 || '%')) \
     or ($1 = 'action' and a.payload ->> 'action' ilike '%' || $2 || '%') \
     or ($1 = 'type' and a.payload ->> 'log_type' ilike '%' || $2 || '%'))";

const LIST_AUDIT: &str = "select string_agg('{\"id\":\"' || p.id || '\",\"payload\":' || coalesce(p.payload::text, 'null') \
     || ',\"created_at\":\"' || coalesce(_madbase.auth_time(p.created_at), '0001-01-01T00:00:00Z') \
     || '\",\"ip_address\":' || to_json(coalesce(p.ip_address, ''))::text || '}', ',' order by p.created_at desc, p.id desc) \
     from (select * from auth.audit_log_entries a \
     where a.instance_id = '00000000-0000-0000-0000-000000000000' and ($2 = '' \
     or ($1 = 'author' and (a.payload ->> 'actor_username' ilike '%' || $2 || '%' or a.payload ->> 'actor_name' ilike '%' || $2 || '%')) \
     or ($1 = 'action' and a.payload ->> 'action' ilike '%' || $2 || '%') \
     or ($1 = 'type' and a.payload ->> 'log_type' ilike '%' || $2 || '%')) \
     order by a.created_at desc, a.id desc limit $3::bigint offset $4::bigint) p";

// ------------------------------------------------------------------------------------------------
// GET /admin/users/<id>

async fn get(auth: &AuthService, user_id: &str) -> AuthResult<Response> {
    let batch = Batch::new().statement(Statement::new(SELECT_USER).bind(user_id.to_owned())).read_only(true);
    let results = auth.run(batch).await?;
    let user = results.first().and_then(StatementResult::scalar).ok_or_else(user_not_found)?;
    Ok(Response::json(200, user.to_owned()))
}

const SELECT_USER: &str = "select _madbase.auth_user_json(u)::text from auth.users u where u.id = $1::uuid";

// ------------------------------------------------------------------------------------------------
// POST /admin/users

/// A `password_hash` or a password to hash.
enum Secret {
    Hash(String),
    Password(String),
}

async fn create(auth: &AuthService, call: &Call<'_>, body: Body, admin: &Admin) -> AuthResult<Response> {
    let params: UserParams = call.json(body).await?;
    let aud = match params.aud.as_deref().filter(|a| !a.is_empty()) {
        Some(aud) => bounded("aud", aud)?.to_owned(),
        None => request_aud(call).to_owned(),
    };
    let email = params.email.as_deref().filter(|e| !e.is_empty());
    let phone = params.phone.as_deref().filter(|p| !p.is_empty());
    if email.is_none() && phone.is_none() {
        return Err(AuthError::validation("Cannot create a user without either an email or phone"));
    }
    let email = email.map(validate_email).transpose()?;
    let phone = phone.map(validate_phone).transpose()?;
    let password_hash = params.password_hash.as_deref().filter(|h| !h.is_empty());
    if params.password.is_some() && password_hash.is_some() {
        return Err(AuthError::validation("Only a password or a password hash should be provided"));
    }
    let secret = match (params.password.as_deref().filter(|p| !p.is_empty()), password_hash) {
        (_, Some(hash)) => {
            if !valid_password_hash(hash) {
                return Err(AuthError::new(500, "unexpected_failure", "Error creating user"));
            }
            Secret::Hash(hash.to_owned())
        }
        (Some(password), None) => {
            if password.len() > crate::crypto::policy::MAX_PASSWORD_BYTES {
                return Err(AuthError::validation("bcrypt: password length exceeds 72 bytes"));
            }
            Secret::Password(password.to_owned())
        }
        (None, None) => Secret::Password(random::url_token(48)),
    };
    let user_id = match params.id.as_deref().filter(|i| !i.is_empty()) {
        None => random::uuid_v4(),
        Some(id) => {
            let id = parse_uuid(id).ok_or_else(|| AuthError::validation("ID must conform to the uuid v4 format"))?;
            if id == NIL_UUID {
                return Err(AuthError::validation("ID cannot be a nil uuid"));
            }
            id
        }
    };
    let mut providers = Vec::with_capacity(2);
    if email.is_some() {
        providers.push(Provider::Email);
    }
    if phone.is_some() {
        providers.push(Provider::Phone);
    }
    let names: Vec<&str> = providers.iter().map(|p| p.name()).collect();
    let mut app_metadata = Map::new();
    app_metadata.insert("provider".into(), names[0].into());
    app_metadata.insert("providers".into(), json!(names));
    if let Some(updates) = params.app_metadata {
        merge(&mut app_metadata, bounded_metadata(updates)?);
    }
    let mut user_metadata = bounded_metadata(params.user_metadata.unwrap_or_default())?;
    let email_confirm = params.email_confirm.unwrap_or(false);
    let phone_confirm = params.phone_confirm.unwrap_or(false);
    if email_confirm {
        user_metadata.insert("email_verified".into(), true.into());
    }
    let ban = ban_micros(params.ban_duration.as_deref())?;
    let role = match params.role.as_deref().filter(|r| !r.is_empty()) {
        Some(role) => bounded("role", role)?.trim().to_owned(),
        None => DEFAULT_ROLE.to_owned(),
    };
    let encrypted_password = match secret {
        Secret::Hash(hash) => hash,
        Secret::Password(password) => auth.blocking(move || password::hash(&password)).await?,
    };

    let mut batch = Batch::new()
        .statement(
            Statement::new("select _madbase.auth_admin_check_addresses(null, $1, $2, $3)")
                .bind_opt(email.clone())
                .bind_opt(phone.clone())
                .bind(aud.clone()),
        )
        .statement(
            Statement::new(INSERT_USER)
                .bind(user_id.clone())
                .bind(aud)
                .bind(role)
                .bind_opt(email.clone())
                .bind_opt(phone.clone())
                .bind(encrypted_password)
                .bind(bool_text(email_confirm))
                .bind(bool_text(phone_confirm))
                .bind(Value::Object(app_metadata).to_string())
                .bind(Value::Object(user_metadata).to_string())
                .bind_opt(ban.flatten().map(|micros| micros.to_string())),
        );
    for (provider, address) in [(Provider::Email, &email), (Provider::Phone, &phone)] {
        if let Some(address) = address {
            let data = identity_data(&user_id, provider, Some(address));
            batch = batch.statement(
                Statement::new(INSERT_IDENTITY).bind(user_id.clone()).bind(data.to_string()).bind(provider.name()),
            );
        }
    }
    let traits = json!({"provider": names[0]});
    batch = batch
        .statement(audit_statement(&user_id, Some(&admin.role), "user_signedup", "team", true, &traits, ""))
        .statement(Statement::new(SELECT_USER).bind(user_id.clone()));
    let results =
        auth.run_raw(batch).await.map_err(|error| address_error(error, "Database error creating new user"))?;
    let user = results
        .last()
        .and_then(StatementResult::scalar)
        .ok_or_else(|| AuthError::internal("admin: created user not found"))?;
    Ok(Response::json(200, user.to_owned()))
}

const NIL_UUID: &str = "00000000-0000-0000-0000-000000000000";

const INSERT_USER: &str = "insert into auth.users (instance_id, id, aud, role, email, phone, encrypted_password, \
     email_confirmed_at, phone_confirmed_at, raw_app_meta_data, raw_user_meta_data, created_at, updated_at, \
     confirmation_token, recovery_token, email_change_token_new, email_change, email_change_token_current, \
     phone_change, phone_change_token, reauthentication_token, is_anonymous, banned_until) \
     values ('00000000-0000-0000-0000-000000000000', $1::uuid, $2, $3, $4, $5, $6, \
     case when $7::bool then now() end, case when $8::bool then now() end, $9::jsonb, $10::jsonb, now(), now(), \
     '', '', '', '', '', '', '', '', false, now() + $11::bigint * interval '1 microsecond')";

/// An email or phone identity of user `$1`: `$2` identity data, `$3` provider.
const INSERT_IDENTITY: &str = "insert into auth.identities (id, provider_id, user_id, identity_data, provider, \
     last_sign_in_at, created_at, updated_at) \
     select gen_random_uuid(), u.id::text, u.id, $2::jsonb, $3, now(), now(), now() from auth.users u where u.id = $1::uuid";

/// [`INSERT_IDENTITY`], or, when the user has that identity already, `$4` merged into its data
/// (GoTrue's `UpdateIdentityData`).
const UPSERT_IDENTITY: &str = "insert into auth.identities (id, provider_id, user_id, identity_data, provider, \
     last_sign_in_at, created_at, updated_at) \
     select gen_random_uuid(), u.id::text, u.id, $2::jsonb, $3, now(), now(), now() from auth.users u where u.id = $1::uuid \
     on conflict (provider_id, provider) do update \
     set identity_data = _madbase.auth_jsonb_merge(auth.identities.identity_data, $4::jsonb), updated_at = now()";

/// The audit row of an admin action on `user_id`; `actor`: the admin's role, or `None` for the
/// user itself.
fn audit_statement(
    user_id: &str,
    actor: Option<&str>,
    action: &'static str,
    log_type: &'static str,
    user_traits: bool,
    traits: &Value,
    ip: &str,
) -> Statement {
    Statement::new("select _madbase.auth_admin_audit($1::uuid, $2, $3, $4, $5::bool, $6::jsonb, $7)")
        .bind(user_id.to_owned())
        .bind_opt(actor.map(str::to_owned))
        .bind(action)
        .bind(log_type)
        .bind(bool_text(user_traits))
        .bind(traits.to_string())
        .bind(ip.to_owned())
}

/// The answer for a failed create or update: a taken address is 422, the rest as usual.
fn address_error(error: PgError, unique_message: &'static str) -> AuthError {
    if let PgError::Db(db) = &error {
        match (db.code.as_str(), db.constraint.as_deref()) {
            ("MBAD1", _) | ("23505", Some("users_email_partial_key")) => {
                return AuthError::new(422, "email_exists", DUPLICATE_EMAIL)
            }
            ("MBAD2", _) | ("23505", Some("users_phone_key")) => {
                return AuthError::new(422, "phone_exists", DUPLICATE_PHONE)
            }
            ("23505", _) => {
                tracing::error!(error = %error, "auth admin: unique violation");
                return AuthError::new(500, "unexpected_failure", unique_message);
            }
            _ => {}
        }
    }
    crate::db_error(error)
}

fn bool_text(value: bool) -> &'static str {
    if value {
        "t"
    } else {
        "f"
    }
}

/// `text`, refused when over [`MAX_FIELD_BYTES`].
fn bounded<'t>(name: &str, text: &'t str) -> AuthResult<&'t str> {
    if text.len() > MAX_FIELD_BYTES {
        return Err(AuthError::validation(format!("{name} is too long")));
    }
    Ok(text)
}

/// Metadata checked for size.
fn bounded_metadata(data: Map<String, Value>) -> AuthResult<Map<String, Value>> {
    crate::signup::metadata(Some(data))
}

/// GoTrue's metadata merge: a null deletes its key, anything else replaces it.
fn merge(base: &mut Map<String, Value>, updates: Map<String, Value>) {
    for (key, value) in updates {
        if value.is_null() {
            base.remove(&key);
        } else {
            base.insert(key, value);
        }
    }
}

/// Whether GoTrue accepts `hash` as a `password_hash` (`models.NewUserWithPasswordHash`): an
/// Argon2 PHC string within its limits, a Firebase scrypt string, or anything Go's `bcrypt.Cost`
/// reads (`$`, a major version ≤ 2, a cost of 4–31, at least 59 bytes).
fn valid_password_hash(hash: &str) -> bool {
    if hash.starts_with("$argon2") {
        valid_argon2(hash)
    } else if let Some(rest) = hash.strip_prefix("$fbscrypt$") {
        valid_fbscrypt(rest)
    } else {
        valid_bcrypt(hash)
    }
}

fn valid_bcrypt(hash: &str) -> bool {
    let b = hash.as_bytes();
    if b.len() < 59 || b[0] != b'$' || b[1] > b'2' {
        return false;
    }
    let cost_at = if b[2] != b'$' { 4 } else { 3 };
    let Some(cost) = hash.get(cost_at..cost_at + 2) else { return false };
    cost.bytes().all(|c| c.is_ascii_digit()) && cost.parse::<u32>().is_ok_and(|c| (4..=31).contains(&c))
}

/// `$argon2(i|id)$v=19$m=…,t=…,p=…$<salt>$<hash>` with GoTrue's limits and non-empty base64 parts.
fn valid_argon2(hash: &str) -> bool {
    use base64::Engine as _;
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::RequireNone)
            .with_decode_allow_trailing_bits(true),
    );
    let Some(rest) = hash.strip_prefix("$argon2id$").or_else(|| hash.strip_prefix("$argon2i$")) else {
        return false;
    };
    let Some(rest) = rest.strip_prefix("v=19$") else { return false };
    let mut parts = rest.splitn(3, '$');
    let (Some(params), Some(salt), Some(digest)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let mut limits = [("m=", 1024 * 1024), ("t=", 20), ("p=", 16)].into_iter();
    let params_ok = params.split(',').all(|param| match limits.next() {
        Some((name, max)) => param
            .strip_prefix(name)
            .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|n| n.parse::<u64>().ok())
            .is_some_and(|n| n <= max),
        None => false,
    }) && limits.next().is_none();
    let decodes = |part: &str| !part.contains('$') && engine.decode(part).is_ok_and(|bytes| !bytes.is_empty());
    params_ok && decodes(salt) && decodes(digest)
}

/// `v=…,n=…,r=…,p=…[,ss=…][,sk=…]$<salt>$<hash>` (after `$fbscrypt$`), as GoTrue's pattern reads it.
fn valid_fbscrypt(rest: &str) -> bool {
    let mut parts = rest.splitn(3, '$');
    let (Some(params), Some(salt), Some(digest)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let numbers = ["v=", "n=", "r=", "p="];
    let mut fields = params.split(',');
    let numbers_ok = numbers.iter().all(|name| {
        fields
            .next()
            .and_then(|f| f.strip_prefix(name))
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    });
    let optional_ok = fields.all(|f| f.starts_with("ss=") || f.starts_with("sk="));
    numbers_ok && optional_ok && !salt.is_empty() && !digest.is_empty()
}

// ------------------------------------------------------------------------------------------------
// ban_duration

/// `ban_duration`: absent or `""` → untouched (`None`); `"none"` or a zero duration → cleared
/// (`Some(None)`); otherwise banned for that long from now (`Some(Some(µs))`, which may be
/// negative, as Go allows).
fn ban_micros(text: Option<&str>) -> AuthResult<Option<Option<i64>>> {
    let Some(text) = text.filter(|t| !t.is_empty()) else { return Ok(None) };
    if text == "none" {
        return Ok(Some(None));
    }
    let nanos = go_parse_duration(crate::call::truncate(text, MAX_FIELD_BYTES))
        .map_err(|e| AuthError::validation(format!("invalid format for ban duration: {e}")))?;
    Ok(Some((nanos != 0).then_some(nanos / 1000)))
}

/// Go's `time.ParseDuration`, in nanoseconds, with its error messages.
fn go_parse_duration(orig: &str) -> Result<i64, String> {
    const MAX: u128 = 1 << 63;
    let invalid = || format!("time: invalid duration {}", go_quote(orig));
    let mut s = orig;
    let mut negative = false;
    if let Some(rest) = s.strip_prefix('-') {
        negative = true;
        s = rest;
    } else if let Some(rest) = s.strip_prefix('+') {
        s = rest;
    }
    if s == "0" {
        return Ok(0);
    }
    if s.is_empty() {
        return Err(invalid());
    }
    let mut total: u128 = 0;
    while !s.is_empty() {
        let first = s.as_bytes()[0];
        if !(first == b'.' || first.is_ascii_digit()) {
            return Err(invalid());
        }
        let digits = s.bytes().take_while(u8::is_ascii_digit).count();
        let mut value: u128 = 0;
        for b in s[..digits].bytes() {
            value = value * 10 + u128::from(b - b'0');
            if value > MAX {
                return Err(invalid());
            }
        }
        s = &s[digits..];
        let mut fraction: u128 = 0;
        let mut scale: f64 = 1.0;
        let mut post = false;
        if let Some(rest) = s.strip_prefix('.') {
            s = rest;
            let digits = s.bytes().take_while(u8::is_ascii_digit).count();
            post = digits > 0;
            let mut overflow = false;
            for b in s[..digits].bytes() {
                if overflow {
                    continue;
                }
                let next = fraction * 10 + u128::from(b - b'0');
                if next > MAX {
                    overflow = true;
                    continue;
                }
                fraction = next;
                scale *= 10.0;
            }
            s = &s[digits..];
        }
        if digits == 0 && !post {
            return Err(invalid());
        }
        let unit_len = s.bytes().take_while(|b| !(*b == b'.' || b.is_ascii_digit())).count();
        if unit_len == 0 {
            return Err(format!("time: missing unit in duration {}", go_quote(orig)));
        }
        let unit_text = &s[..unit_len];
        s = &s[unit_len..];
        let unit: u128 = match unit_text {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(format!("time: unknown unit {} in duration {}", go_quote(unit_text), go_quote(orig))),
        };
        if value > MAX / unit {
            return Err(invalid());
        }
        value *= unit;
        if fraction > 0 {
            value += (fraction as f64 * (unit as f64 / scale)) as u128;
            if value > MAX {
                return Err(invalid());
            }
        }
        total += value;
        if total > MAX {
            return Err(invalid());
        }
    }
    if negative {
        return Ok((total as i128).wrapping_neg() as i64);
    }
    i64::try_from(total).map_err(|_| invalid())
}

// ------------------------------------------------------------------------------------------------
// PUT /admin/users/<id>

async fn update(auth: &AuthService, call: &Call<'_>, body: Body, admin: &Admin, user_id: &str) -> AuthResult<Response> {
    let params: UserParams = call.json(body).await?;
    let email = params.email.as_deref().filter(|e| !e.is_empty()).map(validate_email).transpose()?;
    let phone = params.phone.as_deref().filter(|p| !p.is_empty()).map(validate_phone).transpose()?;
    let ban = ban_micros(params.ban_duration.as_deref())?;
    let password = match params.password {
        Some(password) => {
            auth.check_password(&password)?;
            Some(auth.blocking(move || password::hash(&password)).await?)
        }
        None => None,
    };
    let role = match params.role.as_deref().filter(|r| !r.is_empty()) {
        Some(role) => Some(bounded("role", role)?.trim().to_owned()),
        None => None,
    };
    let user_metadata = params.user_metadata.map(bounded_metadata).transpose()?;
    let app_metadata = params.app_metadata.map(bounded_metadata).transpose()?;
    let email_confirm = params.email_confirm.unwrap_or(false);
    let phone_confirm = params.phone_confirm.unwrap_or(false);
    let id = || user_id.to_owned();

    let mut batch = Batch::new()
        .statement(Statement::new("select 1 from auth.users u where u.id = $1::uuid for update").bind(id()));
    if email.is_some() || phone.is_some() {
        batch = batch.statement(
            Statement::new("select _madbase.auth_admin_check_addresses($1::uuid, $2, $3, null)")
                .bind(id())
                .bind_opt(email.clone())
                .bind_opt(phone.clone()),
        );
    }
    if let Some(role) = role {
        batch = batch.statement(
            Statement::new("update auth.users set role = $2, updated_at = now() where id = $1::uuid")
                .bind(id())
                .bind(role),
        );
    }
    if email_confirm {
        batch = batch
            .statement(
                Statement::new(
                    "update auth.users set confirmation_token = '', email_confirmed_at = now(), updated_at = now(), \
                     raw_user_meta_data = _madbase.auth_jsonb_merge(raw_user_meta_data, '{\"email_verified\":true}') \
                     where id = $1::uuid",
                )
                .bind(id()),
            )
            .statement(Statement::new(DELETE_ONE_TIME_TOKENS).bind(id()));
    }
    if phone_confirm {
        batch = batch
            .statement(
                Statement::new(
                    "update auth.users set confirmation_token = '', phone_confirmed_at = now(), updated_at = now() \
                     where id = $1::uuid",
                )
                .bind(id()),
            )
            .statement(Statement::new(DELETE_ONE_TIME_TOKENS).bind(id()));
    }
    if let Some(hash) = password {
        batch = batch
            .statement(Statement::new(SET_PASSWORD).bind(id()).bind(hash))
            .statement(Statement::new(DELETE_ONE_TIME_TOKENS).bind(id()))
            .statement(Statement::new("delete from auth.sessions where user_id = $1::uuid").bind(id()));
    }
    for (provider, address, confirm) in
        [(Provider::Email, &email, email_confirm), (Provider::Phone, &phone, phone_confirm)]
    {
        let Some(address) = address else { continue };
        let (field, verified) = match provider {
            Provider::Email => ("email", "email_verified"),
            Provider::Phone => ("phone", "phone_verified"),
        };
        let mut data = identity_data(user_id, provider, Some(address));
        data[verified] = confirm.into();
        let updates = json!({ field: address, verified: confirm });
        let set_address = match provider {
            Provider::Email => SET_EMAIL,
            Provider::Phone => SET_PHONE,
        };
        batch = batch
            .statement(
                Statement::new(UPSERT_IDENTITY)
                    .bind(id())
                    .bind(data.to_string())
                    .bind(provider.name())
                    .bind(updates.to_string()),
            )
            .statement(Statement::new(set_address).bind(id()).bind(address.clone()).bind(bool_text(confirm)));
    }
    for (column, updates) in [("app", app_metadata), ("user", user_metadata)] {
        let Some(updates) = updates else { continue };
        let sql = if column == "app" { MERGE_APP_METADATA } else { MERGE_USER_METADATA };
        batch = batch.statement(Statement::new(sql).bind(id()).bind(Value::Object(updates).to_string()));
    }
    if let Some(ban) = ban {
        batch = batch.statement(
            Statement::new(
                "update auth.users set banned_until = now() + $2::bigint * interval '1 microsecond', updated_at = now() \
                 where id = $1::uuid",
            )
            .bind(id())
            .bind_opt(ban.map(|micros| micros.to_string())),
        );
    }
    batch = batch
        .statement(audit_statement(user_id, Some(&admin.role), "user_modified", "user", true, &json!({}), ""))
        .statement(Statement::new(SELECT_USER).bind(id()));
    let results = auth.run_raw(batch).await.map_err(|error| address_error(error, "Error updating user"))?;
    if results.first().is_none_or(|r| r.rows.is_empty()) {
        return Err(user_not_found());
    }
    let user = results.last().and_then(StatementResult::scalar).ok_or_else(user_not_found)?;
    Ok(Response::json(200, user.to_owned()))
}

const DELETE_ONE_TIME_TOKENS: &str = "delete from auth.one_time_tokens where user_id = $1::uuid";

/// `models.User.UpdatePassword`: the new hash, and every pending token and its time cleared.
const SET_PASSWORD: &str = "update auth.users set encrypted_password = $2, confirmation_token = '', \
     confirmation_sent_at = null, recovery_token = '', recovery_sent_at = null, email_change_token_current = '', \
     email_change_token_new = '', email_change_sent_at = null, phone_change_token = '', phone_change_sent_at = null, \
     reauthentication_token = '', reauthentication_sent_at = null, updated_at = now() where id = $1::uuid";

/// `$3`: confirmed in this request (an anonymous user becomes permanent).
const SET_EMAIL: &str = "update auth.users set email = $2, updated_at = now(), \
     is_anonymous = is_anonymous and not $3::bool where id = $1::uuid";

const SET_PHONE: &str = "update auth.users set phone = $2, updated_at = now(), \
     is_anonymous = is_anonymous and not $3::bool where id = $1::uuid";

const MERGE_APP_METADATA: &str = "update auth.users set updated_at = now(), \
     raw_app_meta_data = _madbase.auth_jsonb_merge(raw_app_meta_data, $2::jsonb) where id = $1::uuid";

const MERGE_USER_METADATA: &str = "update auth.users set updated_at = now(), \
     raw_user_meta_data = _madbase.auth_jsonb_merge(raw_user_meta_data, $2::jsonb) where id = $1::uuid";

// ------------------------------------------------------------------------------------------------
// DELETE /admin/users/<id>

/// Hard delete (the user and, by cascade, its identities, sessions, factors and tokens) or soft
/// delete (`_madbase.auth_admin_soft_delete`); either way after the audit row. Answers `{}`.
async fn delete(auth: &AuthService, call: &Call<'_>, body: Body, admin: &Admin, user_id: &str) -> AuthResult<Response> {
    let params: DeleteParams = call.json(body).await?;
    let audit = audit_statement(user_id, Some(&admin.role), "user_deleted", "team", true, &json!({}), "");
    let action = if params.should_soft_delete.unwrap_or(false) {
        Statement::new("select 1 where _madbase.auth_admin_soft_delete($1::uuid)").bind(user_id.to_owned())
    } else {
        Statement::new("delete from auth.users where id = $1::uuid returning 1").bind(user_id.to_owned())
    };
    let results = auth.run(Batch::new().statement(audit).statement(action)).await?;
    if results.get(1).is_none_or(|r| r.rows.is_empty()) {
        return Err(user_not_found());
    }
    Ok(Response::json(200, "{}"))
}

// ------------------------------------------------------------------------------------------------
// /admin/users/<id>/factors

const USER_EXISTS: &str = "select exists (select 1 from auth.users u where u.id = $1::uuid)";

/// The user's factors, oldest first.
async fn list_factors(auth: &AuthService, user_id: &str) -> AuthResult<Response> {
    let batch = Batch::new()
        .statement(Statement::new(USER_EXISTS).bind(user_id.to_owned()))
        .statement(
            Statement::new(
                "select string_agg(_madbase.auth_factor_json(f)::text, ',' order by f.created_at, f.id) \
                 from auth.mfa_factors f where f.user_id = $1::uuid",
            )
            .bind(user_id.to_owned()),
        )
        .read_only(true);
    let results = auth.run(batch).await?;
    require_exists(&results)?;
    let factors = results.get(1).and_then(StatementResult::scalar).unwrap_or("");
    Ok(Response::json(200, format!("[{factors}]")))
}

/// Whether the first statement ([`USER_EXISTS`]) found the user.
fn require_exists(results: &[StatementResult]) -> AuthResult<()> {
    match results.first().and_then(StatementResult::scalar) {
        Some("t") => Ok(()),
        _ => Err(user_not_found()),
    }
}

/// `friendly_name` (when not empty) and, for a phone factor, `phone` (E.164, when not empty).
async fn update_factor(
    auth: &AuthService,
    call: &Call<'_>,
    body: Body,
    admin: &Admin,
    user_id: &str,
    factor_id: &str,
) -> AuthResult<Response> {
    let params: FactorParams = call.json(body).await?;
    let name = params.friendly_name.as_deref().filter(|n| !n.is_empty());
    if let Some(name) = name {
        bounded("friendly_name", name)?;
    }
    let phone_given = params.phone.as_deref().is_some_and(|p| !p.is_empty());
    let phone = params.phone.as_deref().filter(|p| !p.is_empty()).and_then(|p| validate_phone(p).ok());
    let bad_phone = phone_given && phone.is_none();
    let batch = Batch::new()
        .statement(Statement::new(USER_EXISTS).bind(user_id.to_owned()))
        .statement(
            Statement::new(UPDATE_FACTOR)
                .bind(user_id.to_owned())
                .bind(factor_id.to_owned())
                .bind_opt(name.map(str::to_owned))
                .bind_opt(phone)
                .bind(bool_text(bad_phone)),
        )
        .statement(
            Statement::new(
                "select _madbase.auth_admin_audit($1::uuid, $3, 'factor_updated', 'factor', false, \
                 jsonb_build_object('user_id', $1::uuid, 'factor_id', f.id, 'factor_type', f.factor_type), '') \
                 from auth.mfa_factors f where f.id = $2::uuid and f.user_id = $1::uuid and not ($4::bool and f.factor_type = 'phone')",
            )
            .bind(user_id.to_owned())
            .bind(factor_id.to_owned())
            .bind(admin.role.clone())
            .bind(bool_text(bad_phone)),
        )
        .statement(
            Statement::new("select f.factor_type::text from auth.mfa_factors f where f.id = $2::uuid and f.user_id = $1::uuid")
                .bind(user_id.to_owned())
                .bind(factor_id.to_owned()),
        );
    let results = auth.run_raw(batch).await.map_err(|error| match &error {
        PgError::Db(db)
            if db.code == "23505" && db.constraint.as_deref() == Some("mfa_factors_user_friendly_name_unique") =>
        {
            AuthError::new(
                422,
                "mfa_factor_name_conflict",
                format!(
                    "A factor with the friendly name {} for this user already exists",
                    go_quote(name.unwrap_or(""))
                ),
            )
        }
        _ => crate::db_error(error),
    })?;
    require_exists(&results)?;
    if let Some(factor) = results.get(1).and_then(StatementResult::scalar) {
        return Ok(Response::json(200, factor.to_owned()));
    }
    match results.get(3).and_then(StatementResult::scalar) {
        Some(_) => Err(AuthError::validation("Invalid phone number format (E.164 required)")),
        None => Err(factor_not_found()),
    }
}

/// `$3` friendly name or NULL, `$4` valid phone or NULL, `$5` a phone was given but is invalid
/// (then a phone factor is left as it is and the request fails).
const UPDATE_FACTOR: &str = "update auth.mfa_factors f set \
     friendly_name = coalesce($3, f.friendly_name), \
     phone = case when f.factor_type = 'phone' and $4 is not null then $4 else f.phone end, \
     updated_at = now() \
     where f.id = $2::uuid and f.user_id = $1::uuid and not ($5::bool and f.factor_type = 'phone') \
     returning _madbase.auth_factor_json(f)::text";

/// Deletes the factor and downgrades the sessions it raised to aal1 (their amr entry of its kind
/// removed, as GoTrue's `DowngradeSessionsToAAL1`); answers the deleted factor.
async fn delete_factor(auth: &AuthService, call: &Call<'_>, user_id: &str, factor_id: &str) -> AuthResult<Response> {
    let batch = Batch::new()
        .statement(Statement::new(USER_EXISTS).bind(user_id.to_owned()))
        .statement(
            Statement::new(
                "select _madbase.auth_admin_audit($1::uuid, null, 'factor_deleted', 'factor', false, \
                 jsonb_build_object('user_id', $1::uuid, 'factor_id', f.id), $3) \
                 from auth.mfa_factors f where f.id = $2::uuid and f.user_id = $1::uuid",
            )
            .bind(user_id.to_owned())
            .bind(factor_id.to_owned())
            .bind(call.ip().to_string()),
        )
        .statement(
            Statement::new(
                "delete from auth.mfa_amr_claims c using auth.sessions s, auth.mfa_factors f \
                 where f.id = $2::uuid and f.user_id = $1::uuid and s.factor_id = f.id and c.session_id = s.id \
                 and c.authentication_method = case f.factor_type when 'totp' then 'totp' when 'phone' then 'mfa/phone' \
                 else 'mfa/webauthn' end",
            )
            .bind(user_id.to_owned())
            .bind(factor_id.to_owned()),
        )
        .statement(
            Statement::new(
                "update auth.sessions set aal = 'aal1', factor_id = null, updated_at = now() \
                 where user_id = $1::uuid and factor_id = $2::uuid",
            )
            .bind(user_id.to_owned())
            .bind(factor_id.to_owned()),
        )
        .statement(
            Statement::new(
                "delete from auth.mfa_factors f where f.id = $2::uuid and f.user_id = $1::uuid \
                 returning _madbase.auth_factor_json(f)::text",
            )
            .bind(user_id.to_owned())
            .bind(factor_id.to_owned()),
        );
    let results = auth.run(batch).await?;
    require_exists(&results)?;
    let factor = results.get(4).and_then(StatementResult::scalar).ok_or_else(factor_not_found)?;
    Ok(Response::json(200, factor.to_owned()))
}

// ------------------------------------------------------------------------------------------------
// UUIDs

/// A UUID as Go's `uuid.FromString` reads it (canonical, braced, `urn:uuid:`, or 32 hex digits),
/// in canonical lower case.
fn parse_uuid(text: &str) -> Option<String> {
    let inner = match text.len() {
        36 => text,
        38 => text.strip_prefix('{')?.strip_suffix('}')?,
        45 => text.get(..9).filter(|p| p.eq_ignore_ascii_case("urn:uuid:")).and(text.get(9..))?,
        32 => {
            if !text.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            let t = text.to_ascii_lowercase();
            return Some(format!("{}-{}-{}-{}-{}", &t[..8], &t[8..12], &t[12..16], &t[16..20], &t[20..]));
        }
        _ => return None,
    };
    crate::user::is_uuid(inner).then(|| inner.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids() {
        let canonical = "0f8fad5b-d9cb-469f-a165-70867728950e";
        assert_eq!(parse_uuid(canonical).as_deref(), Some(canonical));
        assert_eq!(parse_uuid("0F8FAD5B-D9CB-469F-A165-70867728950E").as_deref(), Some(canonical));
        assert_eq!(parse_uuid("{0f8fad5b-d9cb-469f-a165-70867728950e}").as_deref(), Some(canonical));
        assert_eq!(parse_uuid("urn:uuid:0f8fad5b-d9cb-469f-a165-70867728950e").as_deref(), Some(canonical));
        assert_eq!(parse_uuid("0f8fad5bd9cb469fa16570867728950e").as_deref(), Some(canonical));
        assert_eq!(parse_uuid("1234567890"), None);
        assert_eq!(parse_uuid("0f8fad5b-d9cb-469f-a165-70867728950g"), None);
        assert_eq!(parse_uuid(""), None);
    }

    #[test]
    fn durations() {
        assert_eq!(go_parse_duration("24h"), Ok(86_400_000_000_000));
        assert_eq!(go_parse_duration("1h30m"), Ok(5_400_000_000_000));
        assert_eq!(go_parse_duration("1.5s"), Ok(1_500_000_000));
        assert_eq!(go_parse_duration(".5ms"), Ok(500_000));
        assert_eq!(go_parse_duration("-2m"), Ok(-120_000_000_000));
        assert_eq!(go_parse_duration("0"), Ok(0));
        assert_eq!(go_parse_duration("+0"), Ok(0));
        assert_eq!(go_parse_duration("1µs"), Ok(1_000));
        assert_eq!(go_parse_duration("2562047h"), Ok(9_223_369_200_000_000_000));
        assert_eq!(go_parse_duration("2562048h"), Err("time: invalid duration \"2562048h\"".into()));
        assert_eq!(go_parse_duration("1"), Err("time: missing unit in duration \"1\"".into()));
        assert_eq!(go_parse_duration("1d"), Err("time: unknown unit \"d\" in duration \"1d\"".into()));
        assert_eq!(go_parse_duration("abc"), Err("time: invalid duration \"abc\"".into()));
        assert_eq!(go_parse_duration("."), Err("time: invalid duration \".\"".into()));
        assert_eq!(go_parse_duration(""), Err("time: invalid duration \"\"".into()));
    }

    #[test]
    fn bans() {
        assert_eq!(ban_micros(None).unwrap(), None);
        assert_eq!(ban_micros(Some("")).unwrap(), None);
        assert_eq!(ban_micros(Some("none")).unwrap(), Some(None));
        assert_eq!(ban_micros(Some("0s")).unwrap(), Some(None));
        assert_eq!(ban_micros(Some("24h")).unwrap(), Some(Some(86_400_000_000)));
        let error = ban_micros(Some("forever")).unwrap_err();
        assert_eq!(error.status, 400);
        assert_eq!(error.message, "invalid format for ban duration: time: invalid duration \"forever\"");
    }

    #[test]
    fn pages() {
        let page = Page::from_params(None, None).unwrap();
        assert_eq!(page, Page { page: 1, per_page: 50 });
        assert_eq!(page.offset(), 0);
        let page = Page::from_params(Some("3"), Some("10")).unwrap();
        assert_eq!(page.offset(), 20);
        assert_eq!(Page::from_params(Some("0"), Some("0")).unwrap(), Page { page: 0, per_page: 20 });
        assert_eq!(Page::from_params(Some("0"), None).unwrap().offset(), 0);
        assert_eq!(Page::from_params(None, Some("100000")).unwrap().per_page, MAX_PER_PAGE);
        assert_eq!(Page::from_params(Some(&u64::MAX.to_string()), None).unwrap().offset(), i64::MAX as u64);
        assert_eq!(
            Page::from_params(Some("-1"), None).unwrap_err().message,
            "Bad Pagination Parameters: strconv.ParseUint: parsing \"-1\": invalid syntax"
        );
        assert_eq!(
            Page::from_params(None, Some("99999999999999999999")).unwrap_err().message,
            "Bad Pagination Parameters: strconv.ParseUint: parsing \"99999999999999999999\": value out of range"
        );
    }

    #[test]
    fn links() {
        let q = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
        };
        // auth-js sends both parameters, empty when not chosen.
        let query = q(&[("page", ""), ("per_page", "")]);
        let page = Page::from_params(Some(""), Some("")).unwrap();
        assert_eq!(page.link("/admin/users", &query, 0), "</admin/users?page=0&per_page=>; rel=\"last\"");
        assert_eq!(page.link("/admin/users", &query, 50), "</admin/users?page=1&per_page=>; rel=\"last\"");
        assert_eq!(
            page.link("/admin/users", &query, 51),
            "</admin/users?page=2&per_page=>; rel=\"next\", </admin/users?page=2&per_page=>; rel=\"last\""
        );
        let query = q(&[("per_page", "2"), ("filter", "a b"), ("page", "2")]);
        let page = Page::from_params(Some("2"), Some("2")).unwrap();
        assert_eq!(
            page.link("/admin/users", &query, 7),
            "</admin/users?filter=a+b&page=3&per_page=2>; rel=\"next\", </admin/users?filter=a+b&page=4&per_page=2>; rel=\"last\""
        );
        assert_eq!(page_url("/admin/users", &[], 1), "/admin/users?page=1");
    }

    #[test]
    fn sorts() {
        let q = |v: &str| vec![("sort".to_owned(), v.to_owned())];
        assert!(!sort_ascending(&[]).unwrap());
        assert!(sort_ascending(&q("created_at asc")).unwrap());
        assert!(!sort_ascending(&q("created_at DESC")).unwrap());
        assert_eq!(sort_ascending(&q("email")).unwrap_err().message, "Bad Sort Parameters: bad field for sort 'email'");
        assert_eq!(
            sort_ascending(&q("created_at up")).unwrap_err().message,
            "Bad Sort Parameters: bad direction for sort 'up', only 'asc' and 'desc' allowed"
        );
    }

    #[test]
    fn hashes() {
        assert!(valid_password_hash("$2a$10$abcdefghijklmnopqrstuuabcdefghijklmnopqrstuvwxyz01234"));
        assert!(valid_password_hash("$2y$04$abcdefghijklmnopqrstuuabcdefghijklmnopqrstuvwxyz01234"));
        assert!(!valid_password_hash("$2a$03$abcdefghijklmnopqrstuuabcdefghijklmnopqrstuvwxyz01234"));
        assert!(!valid_password_hash("$2a$10$short"));
        assert!(!valid_password_hash("plain-text-password-that-is-long-enough-to-pass-59-bytes-xx"));
        assert!(valid_password_hash("$argon2id$v=19$m=16,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo"));
        assert!(!valid_password_hash("$argon2d$v=19$m=16,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo"));
        assert!(!valid_password_hash("$argon2id$v=19$m=16,t=21,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo"));
        assert!(!valid_password_hash("$argon2id$v=19$m=16,t=2,p=1$$aGFzaGhhc2hoYXNo"));
        assert!(valid_password_hash("$fbscrypt$v=1,n=14,r=8,p=1,ss=Bw==,sk=abc$c2FsdA$aGFzaA"));
    }

    #[test]
    fn merges() {
        let mut base = json!({"a": 1, "b": 2}).as_object().cloned().unwrap();
        merge(&mut base, json!({"a": null, "c": 3}).as_object().cloned().unwrap());
        assert_eq!(Value::Object(base), json!({"b": 2, "c": 3}));
    }
}
