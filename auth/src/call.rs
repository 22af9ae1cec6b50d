//! One request to Auth as its handlers see it: the version of the error shape it asked for, its
//! query parameters, its JSON body, the client address, and who it comes from.
//!
//! Owns: body collection (GoTrue's 1 MiB bound) and JSON decoding into typed parameter structs
//! (with GoTrue's `bad_json` error), query-string access, the caller's verified token (user
//! endpoints: `no_authorization` / `bad_jwt`; admin endpoints: `not_admin`), and the
//! `redirect_to` allow-list check.
//!
//! Invariants: a handler never sees an unverified claim; the body is read at most once and never
//! past [`MAX_BODY_BYTES`]; every string a handler takes from the body has passed its length
//! bound in the parameter struct's decoding or the handler's checks.

use std::net::IpAddr;
use std::rc::Rc;

use madbase_core::jwt::Claims;
use madbase_http::{Body, BodyError, Request};
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::error::{ApiVersion, AuthError, AuthResult};

/// GoTrue refuses request bodies over 1 MiB.
pub const MAX_BODY_BYTES: u64 = 1 << 20;

/// The roles allowed on admin endpoints (GoTrue's `GOTRUE_JWT_ADMIN_ROLES` default).
pub const ADMIN_ROLES: &[&str] = &["service_role", "supabase_admin"];

/// One request.
pub struct Call<'r> {
    pub req: &'r Request,
    pub version: ApiVersion,
    /// The path below `/auth/v1` (`/token`).
    pub path: &'r str,
    query: Vec<(String, String)>,
}

impl<'r> Call<'r> {
    pub fn new(req: &'r Request, prefix: &str) -> Call<'r> {
        let path = req.path().strip_prefix(prefix).unwrap_or("");
        let query = req
            .query()
            .map(|q| url::form_urlencoded::parse(q.as_bytes()).into_owned().take(64).collect())
            .unwrap_or_default();
        Call { req, version: ApiVersion::of(req), path, query }
    }

    /// The first value of query parameter `name`.
    pub fn query(&self, name: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// The client's address (rate limits, sessions' `ip`, audit rows).
    pub fn ip(&self) -> IpAddr {
        self.req.peer().ip()
    }

    /// `User-Agent`, bounded.
    pub fn user_agent(&self) -> Option<&str> {
        self.req.header_str("user-agent").map(|ua| truncate(ua, 512))
    }

    /// Reads the JSON body into `T`. An empty body decodes as `{}` (auth-js sends none on some calls).
    pub async fn json<T: DeserializeOwned>(&self, body: Body) -> AuthResult<T> {
        let bytes = body.collect(MAX_BODY_BYTES).await.map_err(|error| match error {
            BodyError::TooLarge { .. } => AuthError::new(413, "request_entity_too_large", "Request body too large"),
            BodyError::Busy => AuthError::new(503, "", "Server busy, please retry"),
            BodyError::Timeout => AuthError::new(408, "request_timeout", "Timed out reading the request body"),
            other => AuthError::bad_json(other),
        })?;
        let text: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) { b"{}" } else { &bytes };
        serde_json::from_slice(text).map_err(AuthError::bad_json)
    }

    /// The bearer token of `Authorization`, if any.
    pub fn bearer(&self) -> Option<&str> {
        let value = self.req.header_str("authorization")?.trim();
        let (scheme, token) = value.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
    }
}

/// A JSON `null` read as the type's default, as Go's decoder leaves a string `""` and a bool
/// `false` (auth-js sends `null` for every PKCE field outside the PKCE flow).
pub fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + serde::Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Option::unwrap_or_default)
}

/// Verified claims of the caller's bearer token (GoTrue's `requireAuthentication`).
pub fn require_token(call: &Call<'_>, verify: impl FnOnce(&str) -> AuthResult<Rc<Claims>>) -> AuthResult<Rc<Claims>> {
    let token = call.bearer().ok_or_else(AuthError::no_authorization)?;
    verify(token)
}

/// The caller must hold an admin role.
pub fn require_admin(claims: &Claims) -> AuthResult<()> {
    match claims.role() {
        Some(role) if ADMIN_ROLES.contains(&role) => Ok(()),
        _ => Err(AuthError::not_admin()),
    }
}

/// `text` cut to at most `max` bytes on a character boundary.
pub fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}
