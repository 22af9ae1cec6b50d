//! `POST /token?grant_type=pkce` (GoTrue's `PKCE` in `token.go`): an auth code and its verifier
//! exchanged for a session.
//!
//! Invariants: one batch — `_madbase.auth_pkce_exchange` finds and locks the flow state, checks
//! its age (GoTrue's 300 s `flow_state_expiry_duration`; a magic link's counts from when its code
//! was issued) and the verifier (compared as digests), deletes it and starts the session with the
//! flow's authentication method as `amr`, then the session's user and claims are read; any
//! refusal leaves the flow state as it was.

use madbase_http::{Body, Response};
use madbase_pg::{Batch, Statement};
use serde::Deserialize;

use super::{bounded, flow_error, MAX_TOKEN};
use crate::call::Call;
use crate::crypto::random;
use crate::error::{AuthError, AuthResult};
use crate::AuthService;

/// GoTrue's default (and minimum) `flow_state_expiry_duration`, seconds.
pub const FLOW_STATE_EXPIRY: u64 = 300;

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct PkceParams {
    #[serde(deserialize_with = "crate::call::null_as_default")]
    auth_code: String,
    #[serde(deserialize_with = "crate::call::null_as_default")]
    code_verifier: String,
}

pub async fn pkce_grant(auth: &AuthService, call: &Call<'_>, body: Body) -> AuthResult<Response> {
    let params: PkceParams = call.json(body).await?;
    if params.auth_code.is_empty() || params.code_verifier.is_empty() {
        return Err(AuthError::validation("invalid request: both auth code and code verifier should be non-empty"));
    }
    bounded(&params.auth_code, MAX_TOKEN, "auth_code")?;
    bounded(&params.code_verifier, MAX_TOKEN, "code_verifier")?;
    let issued = auth.issue(String::new(), random::uuid_v4(), random::refresh_token(), "pkce");
    let exchange = Statement::new(
        "select _madbase.auth_pkce_exchange($1, $2, make_interval(secs => $3::float8), $4::uuid, $5, $6, $7)",
    )
    .bind(params.auth_code)
    .bind(params.code_verifier)
    .bind(FLOW_STATE_EXPIRY.to_string())
    .bind(issued.session_id.clone())
    .bind(issued.refresh_token.clone())
    .bind(call.ip().to_string())
    .bind_opt(call.user_agent().map(str::to_owned));
    let batch = Batch::new().statement(exchange).statement(auth.session_select_of_session(&issued));
    let results = auth.run_raw(batch).await.map_err(flow_error)?;
    let session = results.get(1).ok_or_else(|| AuthError::internal("pkce exchange: no session row"))?;
    auth.session_response(session, &issued, None)
}
