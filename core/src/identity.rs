//! Who a request runs as: the token PostgREST (and every Supabase service behind the gateway)
//! would see, verified through the shard's [`TokenCache`], turned into the role and the
//! `request.jwt.claims` text.
//!
//! Owns: token extraction (`Authorization: Bearer …`, else the `apikey` header — what Supabase's
//! gateway forwards as the bearer when a client sends only `apikey` — else anonymous) and the
//! role rules. Invariants: a request never runs as a role it was not given by a verified token or
//! the anonymous default; the claims text always has a string `"role"` equal to the role the
//! transaction switches to (so `auth.role()` and `current_role` agree); the cache borrow is never
//! held across an await.

use std::cell::RefCell;

use madbase_http::Request;
use serde_json::Value;

use crate::jwt::{JwtError, TokenCache};

/// Why a request has no identity.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The token is missing parts, malformed, expired or not signed by our keys.
    #[error(transparent)]
    Jwt(#[from] JwtError),
    /// A verified token names a role no request may run as (empty, or `none`, which would reset
    /// to the login role).
    #[error("role \"{0}\" does not exist")]
    ForbiddenRole(String),
}

/// Roles the services run their own statements as; a token naming one is refused.
pub const SERVICE_ROLES: &[&str] = &["supabase_auth_admin", "supabase_storage_admin", "supabase_realtime_admin"];

/// The role of requests without a token (Supabase's `anon`).
pub const ANON_ROLE: &str = "anon";

/// The identity a request runs under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The role to `set_config('role', …)` to.
    pub role: String,
    /// `request.jwt.claims`: the verified claims as JSON text, with `"role"` present.
    pub claims_json: String,
    /// The request runs as a role other than the anonymous one: PostgREST answers a permission
    /// error (42501) with 403 then, and with 401 (not authenticated) for the anonymous role —
    /// also when a verified token names that role (the `anon` key).
    pub authenticated: bool,
}

impl Identity {
    fn anonymous() -> Identity {
        Identity {
            role: ANON_ROLE.to_owned(),
            claims_json: format!("{{\"role\":\"{ANON_ROLE}\"}}"),
            authenticated: false,
        }
    }
}

/// What follows the `Bearer` scheme (case-insensitive) of an `Authorization` value, trimmed —
/// empty when the scheme carries nothing; `None` for another scheme. By `get`, never by index: a
/// header is any bytes, and a char boundary inside the first six must not panic the handler.
fn bearer(value: &str) -> Option<&str> {
    let value = value.trim();
    let rest = value.get(..6).filter(|scheme| scheme.eq_ignore_ascii_case("bearer")).map(|_| &value[6..])?;
    (rest.is_empty() || rest.starts_with([' ', '\t'])).then(|| rest.trim())
}

/// The token of an `Authorization: Bearer <token>` header, if the request has one that is not
/// empty; no `apikey` fallback (Edge Functions verify only this header, as Supabase's relay does).
pub fn bearer_token(req: &Request) -> Option<&str> {
    req.header_str("authorization").and_then(bearer).filter(|t| !t.is_empty())
}

/// The token the request presents, if any. `Err` for an `Authorization` header that says
/// `Bearer` but carries nothing usable.
fn presented_token(req: &Request) -> Result<Option<&str>, JwtError> {
    if let Some(value) = req.header("authorization") {
        let value = std::str::from_utf8(value).map_err(|_| JwtError::Decode)?;
        if let Some(token) = bearer(value) {
            return if token.is_empty() { Err(JwtError::Empty) } else { Ok(Some(token)) };
        }
        // Another scheme (e.g. Basic): PostgREST only reads bearer tokens; fall through to
        // `apikey` as the gateway would.
    }
    match req.header("apikey") {
        Some(value) => {
            let value = std::str::from_utf8(value).map_err(|_| JwtError::Decode)?.trim();
            Ok((!value.is_empty()).then_some(value))
        }
        None => Ok(None),
    }
}

/// Verifies the request's token (if any) and returns the identity it runs under.
pub fn authenticate(tokens: &RefCell<TokenCache>, req: &Request) -> Result<Identity, AuthError> {
    let Some(token) = presented_token(req)? else {
        return Ok(Identity::anonymous());
    };
    // The borrow ends with this statement: verification is synchronous.
    let claims = tokens.borrow_mut().verify(token)?;
    let (role, claims_json) = match claims.role() {
        Some(role) => (role.to_owned(), claims.json.clone()),
        None => {
            // No (string) role claim: PostgREST uses the anonymous role, and the claims the
            // database sees must say so.
            let mut object = claims.object.clone();
            object.insert("role".to_owned(), Value::String(ANON_ROLE.to_owned()));
            (ANON_ROLE.to_owned(), Value::Object(object).to_string())
        }
    };
    // `set_config('role', 'none')` means RESET ROLE — back to the session user the pool logged in
    // as, which may be far more privileged than any API role. An empty name is never a role. The
    // services' own roles (Auth's `supabase_auth_admin`, which the login role may become) are
    // never an API caller's.
    if role.is_empty() || role.eq_ignore_ascii_case("none") || SERVICE_ROLES.contains(&role.as_str()) {
        return Err(AuthError::ForbiddenRole(role));
    }
    let authenticated = role != ANON_ROLE;
    Ok(Identity { role, claims_json, authenticated })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jwt::JwtKeys;
    use crate::platform::DEMO_JWT_SECRET;
    use madbase_http::Headers;
    use serde_json::json;
    use std::sync::Arc;

    struct Signer;
    impl Signer {
        fn sign_hs256(&self, claims: &Value) -> String {
            let key = jsonwebtoken::EncodingKey::from_secret(DEMO_JWT_SECRET.as_bytes());
            jsonwebtoken::encode(&jsonwebtoken::Header::default(), claims, &key).unwrap()
        }
    }

    fn setup() -> (Signer, RefCell<TokenCache>) {
        let keys = Arc::new(JwtKeys::new(DEMO_JWT_SECRET, None, None).unwrap());
        (Signer, RefCell::new(TokenCache::new(keys, 8)))
    }

    #[test]
    fn bearer_tokens_come_only_from_authorization() {
        assert_eq!(bearer_token(&request(&[("authorization", "Bearer abc ")])), Some("abc"));
        assert_eq!(bearer_token(&request(&[("authorization", "bEaReR x")])), Some("x"));
        assert_eq!(bearer_token(&request(&[("authorization", "Bearer ")])), None);
        assert_eq!(bearer_token(&request(&[("authorization", "Basic abc")])), None);
        assert_eq!(bearer_token(&request(&[("apikey", "abc")])), None);
        assert_eq!(bearer_token(&request(&[("authorization", "Béarer x")])), None, "no panic off a char boundary");
    }

    fn request(headers: &[(&str, &str)]) -> Request {
        let mut h = Headers::default();
        for (k, v) in headers {
            h.push(k.to_string(), v.to_string());
        }
        Request::new("GET", "/rest/v1/t", h, ([127, 0, 0, 1], 1).into())
    }

    #[test]
    fn anonymous_without_a_token() {
        let (_, cache) = setup();
        let id = authenticate(&cache, &request(&[])).unwrap();
        assert_eq!(id, Identity::anonymous());
        assert_eq!(id.claims_json, r#"{"role":"anon"}"#);
        // A non-bearer Authorization is not a token.
        assert!(!authenticate(&cache, &request(&[("authorization", "Basic eDp5")])).unwrap().authenticated);
    }

    #[test]
    fn bearer_then_apikey() {
        let (keys, cache) = setup();
        let user = keys.sign_hs256(&json!({"role": "authenticated", "sub": "u1"}));
        let service = keys.sign_hs256(&json!({"role": "service_role"}));
        let auth = format!("bearer {user}");
        let id = authenticate(&cache, &request(&[("Authorization", &auth), ("apikey", &service)])).unwrap();
        assert_eq!(id.role, "authenticated");
        assert!(id.authenticated);
        let id = authenticate(&cache, &request(&[("apikey", &service)])).unwrap();
        assert_eq!(id.role, "service_role");
    }

    #[test]
    fn claims_without_role_run_as_anon_and_say_so() {
        let (keys, cache) = setup();
        let token = format!("Bearer {}", keys.sign_hs256(&json!({"sub": "u2"})));
        let id = authenticate(&cache, &request(&[("authorization", &token)])).unwrap();
        assert_eq!(id.role, "anon");
        let claims: Value = serde_json::from_str(&id.claims_json).unwrap();
        assert_eq!(claims, json!({"sub": "u2", "role": "anon"}));
    }

    #[test]
    fn the_anon_key_is_the_anonymous_role() {
        let (keys, cache) = setup();
        let anon = keys.sign_hs256(&json!({"role": "anon"}));
        let id = authenticate(&cache, &request(&[("apikey", &anon)])).unwrap();
        assert_eq!((id.role.as_str(), id.authenticated), ("anon", false));
    }

    #[test]
    fn non_ascii_authorization_is_not_a_panic() {
        let (_, cache) = setup();
        // A multi-byte character across the sixth byte, where the scheme would end.
        for value in ["beare\u{20ac} token", "\u{20ac}", "bearer\u{a0}x", "b\u{e9}arer x"] {
            let id = authenticate(&cache, &request(&[("authorization", value)])).unwrap();
            assert_eq!(id, Identity::anonymous(), "{value}");
        }
    }

    #[test]
    fn bad_tokens_and_roles() {
        let (keys, cache) = setup();
        let err = authenticate(&cache, &request(&[("authorization", "Bearer ")])).unwrap_err();
        assert!(matches!(err, AuthError::Jwt(JwtError::Empty)), "{err:?}");
        let err = authenticate(&cache, &request(&[("authorization", "Bearer a.b")])).unwrap_err();
        assert_eq!(err.to_string(), "Expected 3 parts in JWT; got 2");
        let none = format!("Bearer {}", keys.sign_hs256(&json!({"role": "none"})));
        let err = authenticate(&cache, &request(&[("authorization", &none)])).unwrap_err();
        assert!(matches!(err, AuthError::ForbiddenRole(_)), "{err:?}");
        let service = format!("Bearer {}", keys.sign_hs256(&json!({"role": "supabase_auth_admin"})));
        let err = authenticate(&cache, &request(&[("authorization", &service)])).unwrap_err();
        assert!(matches!(err, AuthError::ForbiddenRole(_)), "{err:?}");
    }
}
