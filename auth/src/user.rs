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
                Some(_) => Err(AuthError::new(403, "bad_jwt", format!("invalid claim: {name} claim must be a UUID"))),
            }
        };
        let user_id = uuid("sub")?.ok_or_else(|| AuthError::new(403, "bad_jwt", "invalid claim: missing sub claim"))?;
        let session_id = uuid("session_id")?;
        Ok(Caller { claims, user_id, session_id })
    }
}

/// `GET /user`: the caller's user, rendered by PostgreSQL.
pub async fn get(auth: &AuthService, call: &Call<'_>) -> AuthResult<Response> {
    let caller = auth.caller(call)?;
    let batch = Batch::new()
        .statement(caller.require_session())
        .statement(
            Statement::new("select _madbase.auth_user_json(u)::text from auth.users u where u.id = $1::uuid")
                .bind(caller.user_id.clone()),
        )
        .read_only(true);
    let results = auth.run(batch).await?;
    let user = results
        .get(1)
        .and_then(|r| r.scalar())
        .ok_or_else(|| AuthError::new(403, "user_not_found", "User from sub claim in JWT does not exist"))?;
    Ok(Response::json(200, user.to_owned()))
}

/// Lower-case or upper-case hyphenated UUID text.
pub fn is_uuid(text: &str) -> bool {
    let b = text.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}
