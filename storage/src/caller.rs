//! Who a Storage request runs as: the verified JWT (`Authorization: Bearer`, or the `apikey`
//! Supabase's gateway forwards as the bearer when a client sends none), its role and claims for
//! the metadata statements, and its `sub` as the owner of what it creates.
//!
//! Invariants: a request runs only as a role a verified token gave it; a refused token is
//! Supabase Storage's `AccessDenied` with the message its JWT library (jose) gives.

use madbase_core::identity::{authenticate, AuthError};
use madbase_core::ids::is_uuid;
use madbase_core::jwt::JwtError;
use madbase_core::ShardCtx;
use madbase_http::Request;
use serde_json::Value;

use crate::error::StorageError;

/// The verified caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub role: String,
    /// `request.jwt.claims`.
    pub claims_json: String,
    /// The token's `sub`: the owner of the buckets and objects it creates.
    pub sub: Option<String>,
}

impl Caller {
    /// `owner` (a uuid column) takes the `sub` only when it is a UUID; `owner_id` takes any.
    pub fn owner_uuid(&self) -> Option<&str> {
        self.sub.as_deref().filter(|s| is_uuid(s))
    }

    /// The service role acting for `owner` (a signed upload: the token is the authority).
    pub fn service_role(owner: Option<&str>) -> Caller {
        let claims = serde_json::json!({ "role": "service_role", "sub": owner });
        Caller { role: "service_role".to_owned(), claims_json: claims.to_string(), sub: owner.map(str::to_owned) }
    }
}

/// The caller of a route that needs a valid token.
pub fn caller(ctx: &ShardCtx, req: &Request) -> Result<Caller, StorageError> {
    if req.header("authorization").is_none() && req.header("apikey").is_none() {
        // The gateway forwards an empty bearer; jose refuses it so.
        return Err(StorageError::access_denied(INVALID_JWS));
    }
    let identity = authenticate(&ctx.tokens, req).map_err(|e| match e {
        AuthError::Jwt(e) => StorageError::access_denied(jose_message(&e)),
        AuthError::ForbiddenRole(role) => StorageError::access_denied(format!("role \"{role}\" does not exist")),
    })?;
    let sub = serde_json::from_str::<Value>(&identity.claims_json)
        .ok()
        .and_then(|claims| claims.get("sub").and_then(Value::as_str).map(str::to_owned));
    Ok(Caller { role: identity.role, claims_json: identity.claims_json, sub })
}

/// A route for the service role only (`POST /bucket/{id}/empty`): HTTP 403 otherwise.
pub fn service_role(ctx: &ShardCtx, req: &Request) -> Result<Caller, StorageError> {
    let caller =
        caller(ctx, req).map_err(|_| StorageError::access_denied_403("Access denied: JWT is not authenticated"))?;
    if caller.role != "service_role" {
        return Err(StorageError::access_denied_403("Access denied: Invalid role"));
    }
    Ok(caller)
}

const INVALID_JWS: &str = "Invalid Compact JWS";

/// What jose (Supabase Storage's JWT library) says for each way a token fails.
pub(crate) fn jose_message(e: &JwtError) -> &'static str {
    match e {
        JwtError::Expired => "\"exp\" claim timestamp check failed",
        JwtError::NotYetValid => "\"nbf\" claim timestamp check failed",
        JwtError::Signature | JwtError::NoKey => "signature verification failed",
        JwtError::Algorithm => "\"alg\" (Algorithm) Header Parameter value not allowed",
        _ => INVALID_JWS,
    }
}
