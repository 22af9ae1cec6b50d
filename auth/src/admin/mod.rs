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
//! | module | owns |
//! |---|---|
//! | this one | routing, the admin gate, path ids, shared errors and the admin audit row |
//! | [`users`] | `/admin/users` and `/admin/users/<id>`: list, create, get, update, delete |
//! | [`factors`] | `/admin/users/<id>/factors[/<factor id>]` |
//! | [`audit`] | `GET /admin/audit` |
//! | [`page`] | GoTrue's offset pagination and `sort` |
//! | [`go`] | Go's duration syntax (`ban_duration`), `strconv.Quote`, and the `password_hash` formats GoTrue imports |
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
//! As GoTrue (and unlike sign-up): `POST /admin/users` checks no password policy (only bcrypt's
//! 72 bytes), runs no before-user-created hook, and answers an unreadable `password_hash` with
//! 500 "Error creating user".
//!
//! Where MadBase differs from GoTrue on purpose: `per_page` is at most [`MAX_PER_PAGE`] and `0`
//! means pop's default 20 (GoTrue has no cap and divides by zero); a duplicate address on
//! `PUT /admin/users/<id>` is 422 `email_exists` / `phone_exists` (GoTrue: 500); a duplicate factor
//! name is 422 `mfa_factor_name_conflict` (GoTrue: 500); listed users carry their identities and
//! factors like every other rendering of a user; a user's factors list is `[]`, never `null`; a
//! user is found by id whatever its `instance_id` (the list keeps GoTrue's nil-instance filter);
//! an admin token's `session_id`, if any, is not checked against the sessions table.

mod audit;
mod factors;
mod go;
mod page;
mod users;

use madbase_http::{Body, Response};
use madbase_pg::{PgError, Statement, StatementResult};
use serde_json::Value;

use crate::call::{require_admin, require_token, Call};
use crate::error::{AuthError, AuthResult};
use crate::AuthService;

use self::audit::audit;
use self::factors::{delete_factor, list_factors, update_factor};
use self::users::{create, delete, get, list, update};

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

const NIL_UUID: &str = "00000000-0000-0000-0000-000000000000";

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

const USER_EXISTS: &str = "select exists (select 1 from auth.users u where u.id = $1::uuid)";

/// Whether the first statement ([`USER_EXISTS`]) found the user.
fn require_exists(results: &[StatementResult]) -> AuthResult<()> {
    match results.first().and_then(StatementResult::scalar) {
        Some("t") => Ok(()),
        _ => Err(user_not_found()),
    }
}

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
}
