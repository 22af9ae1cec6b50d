//! `POST /logout?scope=global|local|others`: deletes sessions (their refresh tokens and
//! authentication methods go with them), so the caller's access tokens stop working for Auth's
//! user endpoints at once and its refresh tokens are gone. 204 on success.

use madbase_http::Response;
use madbase_pg::{Batch, Statement};

use crate::call::Call;
use crate::error::{AuthError, AuthResult};
use crate::AuthService;

pub async fn logout(auth: &AuthService, call: &Call<'_>) -> AuthResult<Response> {
    let caller = auth.caller(call)?;
    let scope = call.query("scope").unwrap_or("global");
    let delete = match (scope, &caller.session_id) {
        ("global", _) | ("local" | "others", None) => {
            Statement::new("delete from auth.sessions where user_id = $1::uuid").bind(caller.user_id.clone())
        }
        ("local", Some(session)) => {
            Statement::new("delete from auth.sessions where id = $1::uuid").bind(session.clone())
        }
        ("others", Some(session)) => {
            Statement::new("delete from auth.sessions where user_id = $1::uuid and id <> $2::uuid")
                .bind(caller.user_id.clone())
                .bind(session.clone())
        }
        _ => return Err(AuthError::validation(format!("Unsupported logout scope {scope:?}"))),
    };
    let audit = Statement::new("select _madbase.auth_audit($1::uuid, 'logout', $2, '{}'::json)")
        .bind(caller.user_id.clone())
        .bind(call.ip().to_string());
    auth.run(Batch::new().statement(caller.require_session()).statement(delete).statement(audit)).await?;
    Ok(Response::new(204))
}
