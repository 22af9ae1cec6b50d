//! Postgres-function hooks (`[auth.hook.*]`, `pg-functions://<database>/<schema>/<function>`),
//! called inside the batch of the work they guard, as GoTrue calls them inside its transaction.
//!
//! Owns: parsing the hook URIs, the SQL text that calls a hook (the function name quoted once
//! at start-up; nothing from a request reaches it), and reading a hook's answer: GoTrue's
//! `{"error": {"http_code", "message"}}` rejects (status 500 when `http_code` is absent), and
//! the custom access-token hook's `{"claims": …}` must keep the claims GoTrue requires.
//!
//! Invariants: a rejection by `before_user_created` aborts the batch (the guard raises
//! [`HOOK_REJECTED_SQLSTATE`]), so a refused user leaves nothing behind; a malformed hook answer
//! is a 500, never a token with missing claims.

use serde_json::Value;

use crate::error::AuthError;
use crate::settings::Hook;

/// The SQLSTATE with which the guard around `before_user_created` aborts the batch; its
/// `detail` is the HTTP status, its message the hook's.
pub const HOOK_REJECTED_SQLSTATE: &str = "MBHK1";

/// The claims a custom access-token hook must leave in place (GoTrue's schema for its output).
const REQUIRED_CLAIMS: &[&str] =
    &["aud", "exp", "iat", "sub", "email", "phone", "role", "aal", "session_id", "is_anonymous"];

/// The `(schema, function)` a `pg-functions://` URI names, if it is one.
pub fn parse_uri(uri: &str) -> Option<(&str, &str)> {
    let rest = uri.strip_prefix("pg-functions://")?;
    let mut parts = rest.split('/');
    let (_database, schema, function) = (parts.next()?, parts.next()?, parts.next()?);
    let plain = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    (parts.next().is_none() && plain(schema) && plain(function)).then_some((schema, function))
}

/// The quoted SQL name of an enabled hook's function, if the hook is on.
pub fn function_sql(hook: &Hook) -> Option<String> {
    if !hook.enabled {
        return None;
    }
    // Validated at start (`Auth::validate`): only `[A-Za-z0-9_-]`, so quoting is exact.
    let (schema, function) = parse_uri(&hook.uri)?;
    Some(format!("\"{schema}\".\"{function}\""))
}

/// The error a hook's answer carries, if it rejects.
pub fn rejection(answer: &Value) -> Option<AuthError> {
    let error = answer.get("error")?;
    let message = error.get("message").and_then(Value::as_str).filter(|m| !m.is_empty())?;
    let status =
        error.get("http_code").and_then(Value::as_u64).filter(|code| (400..600).contains(code)).unwrap_or(500) as u16;
    Some(AuthError::new(status, "", message.to_owned()))
}

/// The claims of a custom access-token hook's answer, checked.
pub fn access_token_claims(answer: &str) -> Result<Value, AuthError> {
    let answer: Value = serde_json::from_str(answer).map_err(AuthError::internal)?;
    if let Some(rejected) = rejection(&answer) {
        return Err(rejected);
    }
    let claims = answer.get("claims").filter(|c| c.is_object()).cloned().ok_or_else(|| {
        AuthError::new(500, "unexpected_failure", "output claims do not conform to the expected schema")
    })?;
    if let Some(missing) = REQUIRED_CLAIMS.iter().find(|name| claims.get(**name).is_none()) {
        return Err(AuthError::new(
            500,
            "unexpected_failure",
            format!("output claims do not conform to the expected schema: missing {missing}"),
        ));
    }
    Ok(claims)
}

/// The error a batch failed with when the `before_user_created` guard refused.
pub fn rejected_by_guard(error: &madbase_pg::PgError) -> Option<AuthError> {
    let madbase_pg::PgError::Db(db) = error else { return None };
    if db.code != HOOK_REJECTED_SQLSTATE {
        return None;
    }
    let status = db.detail.as_deref().and_then(|d| d.parse::<u16>().ok()).filter(|s| (400..600).contains(s));
    Some(AuthError::new(status.unwrap_or(500), "", db.message.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn uris() {
        assert_eq!(parse_uri("pg-functions://postgres/public/custom_hook"), Some(("public", "custom_hook")));
        assert_eq!(parse_uri("pg-functions://postgres/public"), None);
        assert_eq!(parse_uri("pg-functions://postgres/pub\"lic/f"), None);
        assert_eq!(parse_uri("https://example.com/hook"), None);
    }

    #[test]
    fn answers() {
        let rejected = rejection(&json!({"error": {"http_code": 403, "message": "nope"}})).unwrap();
        assert_eq!((rejected.status, rejected.message.as_ref()), (403, "nope"));
        assert_eq!(rejection(&json!({"error": {"message": "x"}})).unwrap().status, 500);
        assert!(rejection(&json!({})).is_none());
        let claims = json!({"aud": "authenticated", "exp": 1, "iat": 0, "sub": "s", "email": "", "phone": "",
                            "role": "authenticated", "aal": "aal1", "session_id": "x", "is_anonymous": false, "extra": 1});
        assert_eq!(access_token_claims(&json!({"claims": claims}).to_string()).unwrap()["extra"], 1);
        assert!(access_token_claims(r#"{"claims": {"sub": "s"}}"#).is_err());
    }
}
