//! Issuing sessions: the statements that start one, the statement that reads back what its
//! access token says, and the session JSON auth-js stores (reference/auth.md §2.1, §2.3).
//!
//! Owns [`Issued`] (the ids and times of one issued token pair) and the session answer. The
//! claims are built by PostgreSQL (`_madbase.auth_claims`) in the same statement that renders
//! the user and, when configured, runs the custom access-token hook over them, so a grant's
//! whole database side is one batch; this module only signs what comes back.
//!
//! Invariants: `expires_at` is the signed token's `exp`; `exp = iat + jwt_expiry`; the refresh
//! token returned is the one the batch stored (or, for a reuse, the session's live one).

use madbase_core::jwt::unix_now;
use madbase_http::Response;
use madbase_pg::{Statement, StatementResult};
use serde_json::Value;

use crate::call::Call;
use crate::crypto::random;
use crate::error::{AuthError, AuthResult};
use crate::AuthService;

/// How a session began: its `amr` method, the identity provider it signed in with.
#[derive(Debug, Clone, Copy)]
pub struct Method {
    /// The `amr` method (`password`, `otp`, `magiclink`, `anonymous`, …) and the hook's `authentication_method`.
    pub amr: &'static str,
    /// The identity whose `last_sign_in_at` moves (`email`, `phone`), if any.
    pub provider: Option<&'static str>,
}

/// One token pair being issued.
#[derive(Debug, Clone)]
pub struct Issued {
    pub user_id: String,
    pub session_id: String,
    pub refresh_token: String,
    pub iat: u64,
    pub exp: u64,
    /// The hook's `authentication_method`.
    pub method: &'static str,
}

impl AuthService {
    /// A new session for `user_id`: the ids and the statement that starts it.
    pub(crate) fn start_session(&self, call: &Call<'_>, user_id: &str, method: Method) -> (Issued, Statement) {
        let issued = self.issue(user_id.to_owned(), random::uuid_v4(), random::refresh_token(), method.amr);
        let statement = Statement::new(
            "select _madbase.auth_start_session($1::uuid, $2::uuid, $3, $4, 'aal1', null, $5, $6, null, $7)",
        )
        .bind(issued.user_id.clone())
        .bind(issued.session_id.clone())
        .bind(issued.refresh_token.clone())
        .bind(method.amr)
        .bind(call.ip().to_string())
        .bind_opt(call.user_agent().map(str::to_owned))
        .bind_opt(method.provider);
        (issued, statement)
    }

    /// The times of a token pair issued now.
    pub(crate) fn issue(
        &self,
        user_id: String,
        session_id: String,
        refresh_token: String,
        method: &'static str,
    ) -> Issued {
        let iat = unix_now();
        let exp = iat + self.settings().jwt_expiry;
        Issued { user_id, session_id, refresh_token, iat, exp, method }
    }

    /// Reads back the user (`$1`), the claims of its token in session `$2` and, with the custom
    /// access-token hook on, the hook's answer over them. Columns: user JSON, claims, hook answer.
    pub(crate) fn session_select(&self, issued: &Issued) -> Statement {
        self.session_select_from(SESSION_SELECT, issued)
    }

    /// [`Self::session_select`] for a batch whose earlier statement started session `$2` for a
    /// user not known when the batch was built (`issued.user_id` empty): the user is the
    /// session's. No session, no row.
    pub(crate) fn session_select_of_session(&self, issued: &Issued) -> Statement {
        self.session_select_from(SESSION_SELECT_OF_SESSION, issued)
    }

    fn session_select_from(&self, select: &str, issued: &Issued) -> Statement {
        let sql = match &self.shared.access_token_hook {
            None => select.to_owned(),
            Some(hook) => format!(
                "select user_json, claims, {hook}(json_build_object('user_id', user_id, 'claims', claims, \
                 'authentication_method', $6::text)::jsonb)::text from ({select}) issued"
            ),
        };
        let statement = Statement::new(sql)
            .bind(issued.user_id.clone())
            .bind(issued.session_id.clone())
            .bind(self.shared.issuer.clone())
            .bind(issued.iat.to_string())
            .bind(issued.exp.to_string());
        match self.shared.access_token_hook {
            None => statement,
            Some(_) => statement.bind(issued.method),
        }
    }

    /// The session answer from [`Self::session_select`]'s result; `weak_password` is added for
    /// a password grant whose password no longer meets the policy.
    pub(crate) fn session_response(
        &self,
        result: &StatementResult,
        issued: &Issued,
        weak_password: Option<Value>,
    ) -> AuthResult<Response> {
        let row = result.rows.first().ok_or_else(|| AuthError::internal("session select returned no row"))?;
        let user = row.get_str(0).ok_or_else(|| AuthError::internal("session select: no user"))?;
        let claims = match (&self.shared.access_token_hook, row.get_str(2)) {
            (Some(_), Some(answer)) => crate::hooks::access_token_claims(answer)?,
            _ => serde_json::from_str(row.get_str(1).unwrap_or("null")).map_err(AuthError::internal)?,
        };
        let access_token = self.shared.keys.sign(&claims).map_err(AuthError::internal)?;
        let exp = claims.get("exp").and_then(Value::as_u64).unwrap_or(issued.exp);
        let mut body = String::with_capacity(access_token.len() + user.len() + 160);
        body.push_str("{\"access_token\":");
        body.push_str(&Value::from(access_token).to_string());
        body.push_str(",\"token_type\":\"bearer\",\"expires_in\":");
        body.push_str(&exp.saturating_sub(issued.iat).to_string());
        body.push_str(",\"expires_at\":");
        body.push_str(&exp.to_string());
        body.push_str(",\"refresh_token\":");
        body.push_str(&Value::from(issued.refresh_token.as_str()).to_string());
        body.push_str(",\"user\":");
        body.push_str(user);
        if let Some(weak) = weak_password {
            body.push_str(",\"weak_password\":");
            body.push_str(&weak.to_string());
        }
        body.push('}');
        Ok(Response::json(200, body))
    }
}

/// The user, and the claims of its access token in a session (`$1` user, `$2` session, `$3`
/// issuer, `$4` iat, `$5` exp). Also yields `user_id` for the hook wrapper.
const SESSION_SELECT: &str = "select _madbase.auth_user_json(u)::text as user_json, \
     _madbase.auth_claims(u, $2::uuid, $3, $4::bigint, $5::bigint) as claims, u.id as user_id \
     from auth.users u where u.id = $1::uuid";

/// [`SESSION_SELECT`] with the user taken from session `$2` when `$1` is empty.
const SESSION_SELECT_OF_SESSION: &str = "select _madbase.auth_user_json(u)::text as user_json, \
     _madbase.auth_claims(u, $2::uuid, $3, $4::bigint, $5::bigint) as claims, u.id as user_id \
     from auth.users u where u.id = coalesce(nullif($1, '')::uuid, \
     (select s.user_id from auth.sessions s where s.id = $2::uuid))";
