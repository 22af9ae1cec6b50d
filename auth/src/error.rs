//! Auth's errors, in GoTrue's shapes (reference/auth.md §1.2).
//!
//! Owns [`AuthError`] (status, GoTrue error code, message, and the `weak_password` reasons) and
//! [`ApiVersion`] (the `X-Supabase-Api-Version` rule that picks the body shape).
//!
//! Invariants: every error response carries `x-sb-error-code` when it has a code; a request whose
//! `X-Supabase-Api-Version` is a valid date ≥ 2024-01-01 gets `{code, message}` and the header
//! echoed, any other request the legacy `{code: <status>, error_code, msg}`. A 5xx never shows
//! the underlying error to the client (it is logged with the request id instead).

use std::borrow::Cow;

use madbase_http::{Request, Response};
use madbase_pg::PgError;
use serde_json::json;

/// The response shape a request asked for with `X-Supabase-Api-Version`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiVersion {
    /// No header, an invalid date or one before 2024-01-01.
    Legacy,
    /// 2024-01-01 or later.
    V20240101,
}

impl ApiVersion {
    pub const HEADER: &'static str = "x-supabase-api-version";

    pub fn of(req: &Request) -> ApiVersion {
        match req.header_str(Self::HEADER).map(str::trim) {
            Some(date) if valid_date(date) && date >= "2024-01-01" => ApiVersion::V20240101,
            _ => ApiVersion::Legacy,
        }
    }
}

/// `YYYY-MM-DD` with a plausible month and day (what GoTrue's date parser accepts).
fn valid_date(text: &str) -> bool {
    let b = text.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return false;
    }
    let digits = |r: std::ops::Range<usize>| b[r.clone()].iter().all(u8::is_ascii_digit);
    if !(digits(0..4) && digits(5..7) && digits(8..10)) {
        return false;
    }
    let month: u32 = text[5..7].parse().unwrap_or(0);
    let day: u32 = text[8..10].parse().unwrap_or(0);
    (1..=12).contains(&month) && (1..=31).contains(&day)
}

/// One Auth error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status} {code}: {message}")]
pub struct AuthError {
    pub status: u16,
    /// GoTrue's error code (`invalid_credentials`); `""` when the error has none.
    pub code: &'static str,
    pub message: Cow<'static, str>,
    /// The `weak_password.reasons` of a 422 `weak_password`.
    pub weak_password: Option<Vec<&'static str>>,
}

impl AuthError {
    pub fn new(status: u16, code: &'static str, message: impl Into<Cow<'static, str>>) -> AuthError {
        debug_assert!((400..600).contains(&status));
        AuthError { status, code, message: message.into(), weak_password: None }
    }

    /// 400 `validation_failed`.
    pub fn validation(message: impl Into<Cow<'static, str>>) -> AuthError {
        AuthError::new(400, "validation_failed", message)
    }

    /// 400 `bad_json`.
    pub fn bad_json(detail: impl std::fmt::Display) -> AuthError {
        AuthError::new(400, "bad_json", format!("Could not parse request body as JSON: {detail}"))
    }

    /// 422 `weak_password` with its reasons.
    pub fn weak_password(message: String, reasons: Vec<&'static str>) -> AuthError {
        AuthError { weak_password: Some(reasons), ..AuthError::new(422, "weak_password", message) }
    }

    /// 500 `unexpected_failure`; `detail` goes to the log only.
    pub fn internal(detail: impl std::fmt::Display) -> AuthError {
        tracing::error!(%detail, "auth: unexpected failure");
        AuthError::new(500, "unexpected_failure", "Unexpected failure, please check server logs for more information")
    }

    /// 429 `over_request_rate_limit`.
    pub fn rate_limited() -> AuthError {
        AuthError::new(429, "over_request_rate_limit", "Request rate limit reached")
    }

    /// 403 `not_admin`.
    pub fn not_admin() -> AuthError {
        AuthError::new(403, "not_admin", "User not allowed")
    }

    /// 401 `no_authorization`.
    pub fn no_authorization() -> AuthError {
        AuthError::new(401, "no_authorization", "This endpoint requires a valid Bearer token")
    }

    /// 404 `not_found`-style for unknown routes (GoTrue answers unknown paths with 404 and no code).
    pub fn not_found() -> AuthError {
        AuthError::new(404, "", "Not Found")
    }

    /// The response for a request that asked for `version`.
    pub fn into_response(self, version: ApiVersion, request_id: &str) -> Response {
        let code = if self.code.is_empty() {
            if self.status >= 500 {
                "unexpected_failure"
            } else {
                "unknown"
            }
        } else {
            self.code
        };
        let mut body = match version {
            ApiVersion::V20240101 => json!({"code": code, "message": self.message}),
            ApiVersion::Legacy => {
                let mut legacy = json!({"code": self.status, "error_code": code, "msg": self.message});
                if self.status >= 500 {
                    legacy["error_id"] = json!(request_id);
                }
                legacy
            }
        };
        if let Some(reasons) = &self.weak_password {
            body["weak_password"] = json!({"reasons": reasons});
        }
        let mut response = Response::json(self.status, body.to_string());
        if !self.code.is_empty() {
            response.set_header("x-sb-error-code", self.code);
        }
        if version == ApiVersion::V20240101 {
            response.set_header("x-supabase-api-version", "2024-01-01");
        }
        response
    }
}

impl From<PgError> for AuthError {
    fn from(error: PgError) -> AuthError {
        match error {
            PgError::Busy | PgError::Unavailable { .. } => {
                AuthError::new(503, "", "The database is busy, please retry shortly")
            }
            PgError::Timeout(_) => AuthError::new(
                504,
                "request_timeout",
                "Processing this request timed out, please retry after a moment.",
            ),
            other => AuthError::internal(other),
        }
    }
}

/// A result of a handler.
pub type AuthResult<T> = Result<T, AuthError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert!(valid_date("2024-01-01"));
        assert!(!valid_date("2024-13-01"));
        assert!(!valid_date("20240101"));
    }
}
