//! The caller of a user endpoint, and `GET /user`.
//!
//! Owns [`Caller`] (the verified token's user and session) and the statement every user
//! endpoint's batch begins with (`_madbase.auth_require_session`): a token whose user was
//! deleted answers 403 `user_not_found`, one whose session was signed out 403
//! `session_not_found`, in the same round trip as the endpoint's own work.

use std::rc::Rc;

use madbase_core::jwt::Claims;
use madbase_http::Response;
use madbase_pg::{Batch, Statement};
use serde_json::Value;

use crate::call::{require_token, Call};
use crate::error::{AuthError, AuthResult};
use crate::AuthService;

const NIL_UUID: &str = "00000000-0000-0000-0000-000000000000";

/// Who calls a user endpoint.
pub struct Caller {
    pub claims: Rc<Claims>,
    /// `sub`: the user's id.
    pub user_id: String,
    /// `session_id`, when the token has one.
    pub session_id: Option<String>,
}

impl Caller {
    /// `aal` of the token (`aal1` when absent).
    pub fn aal(&self) -> &str {
        self.claims.object.get("aal").and_then(Value::as_str).unwrap_or("aal1")
    }

    /// Whether the token is an anonymous user's.
    pub fn is_anonymous(&self) -> bool {
        self.claims.object.get("is_anonymous").and_then(Value::as_bool).unwrap_or(false)
    }

    /// The statement that fails the batch unless the user and the session still exist.
    pub fn require_session(&self) -> Statement {
        Statement::new("select _madbase.auth_require_session($1::uuid, $2::uuid)")
            .bind(self.user_id.clone())
            .bind_opt(self.session_id.clone())
    }
}

impl AuthService {
    /// The caller of a user endpoint: a verified bearer token with a UUID `sub`.
    pub(crate) fn caller(&self, call: &Call<'_>) -> AuthResult<Caller> {
        let claims = require_token(call, |token| self.verify(token))?;
        let uuid = |name: &str| -> AuthResult<Option<String>> {
            match claims.object.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(id)) if is_uuid(id) => Ok(Some(id.to_ascii_lowercase())),
                // GoTrue: 400 for a bad `sub`, 403 for a bad `session_id`.
                Some(_) => Err(AuthError::new(
                    if name == "sub" { 400 } else { 403 },
                    "bad_jwt",
                    format!("invalid claim: {name} claim must be a UUID"),
                )),
            }
        };
        let user_id = uuid("sub")?.ok_or_else(|| AuthError::new(403, "bad_jwt", "invalid claim: missing sub claim"))?;
        // The nil UUID names no session (GoTrue's rule).
        let session_id = uuid("session_id")?.filter(|id| id != NIL_UUID);
        Ok(Caller { claims, user_id, session_id })
    }
}

/// `GET /user`: the caller's user, rendered by PostgreSQL, and whether the token's session still
/// exists — one statement (the hottest Auth read: auth-js calls it on every `getUser()`).
pub async fn get(auth: &AuthService, call: &Call<'_>) -> AuthResult<Response> {
    let caller = auth.caller(call)?;
    let select = Statement::new(
        "select _madbase.auth_user_json(u)::text, $2::uuid is null or exists \
         (select 1 from auth.sessions s where s.id = $2::uuid and s.user_id = u.id), \
         coalesce(u.banned_until > now(), false) from auth.users u where u.id = $1::uuid",
    )
    .bind(caller.user_id.clone())
    .bind_opt(caller.session_id.clone());
    let results = auth.run(Batch::new().statement(select).read_only(true)).await?;
    let row = results.first().and_then(|r| r.rows.first()).ok_or_else(user_not_found)?;
    if row.get_str(1) != Some("t") {
        return Err(session_not_found());
    }
    if row.get_str(2) == Some("t") {
        return Err(AuthError::new(403, "user_banned", "User is banned"));
    }
    let user = row.get_str(0).ok_or_else(|| AuthError::internal("user JSON is null"))?;
    Ok(Response::json(200, user.to_owned()))
}

/// GoTrue's 403 for a token whose user is gone.
pub fn user_not_found() -> AuthError {
    AuthError::new(403, "user_not_found", "User from sub claim in JWT does not exist")
}

/// GoTrue's 403 for a token whose session was signed out.
pub fn session_not_found() -> AuthError {
    AuthError::new(403, "session_not_found", "Session from session_id claim in JWT does not exist")
}

pub use madbase_core::ids::is_uuid;
