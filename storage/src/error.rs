//! Storage's error envelope (reference/storage.md §2): `{"statusCode","error","message","code"}`
//! in that order, `statusCode` the logical status as a string, and the HTTP status 400 for every
//! logical status but 500 (and the few a route overrides), as Supabase Storage answers.
//!
//! Owns: [`StorageError`] and the mapping of PostgreSQL errors to it (SQLSTATE → code), so every
//! handler answers a database failure the way Supabase Storage does.

use madbase_http::Response;
use madbase_pg::PgError;

/// One error answer of `/storage/v1`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct StorageError {
    /// The logical status, sent as a string in `statusCode`.
    pub status: u16,
    /// The HTTP status when a route overrides the 400-for-everything rule.
    pub http_status: Option<u16>,
    /// Supabase's legacy `error` text (the code itself where Supabase sets none).
    pub error: &'static str,
    pub message: String,
    pub code: &'static str,
}

impl StorageError {
    fn new(status: u16, code: &'static str, error: Option<&'static str>, message: impl Into<String>) -> StorageError {
        StorageError { status, http_status: None, error: error.unwrap_or(code), message: message.into(), code }
    }

    /// The answer, with the HTTP status Supabase Storage uses.
    pub fn response(&self) -> Response {
        let http = self.http_status.unwrap_or(if self.status == 500 { 500 } else { 400 });
        // Written by hand: the key order is part of the wire format.
        let body = format!(
            "{{\"statusCode\":\"{}\",\"error\":{},\"message\":{},\"code\":{}}}",
            self.status,
            json_string(self.error),
            json_string(&self.message),
            json_string(self.code),
        );
        Response::json(http, body)
    }

    pub fn no_such_bucket() -> StorageError {
        StorageError::new(404, "NoSuchBucket", Some("Bucket not found"), "Bucket not found")
    }

    pub fn access_denied(message: impl Into<String>) -> StorageError {
        StorageError::new(403, "AccessDenied", Some("Unauthorized"), message)
    }

    /// A role check of a service-role-only route: HTTP 403, not 400.
    pub fn access_denied_403(message: impl Into<String>) -> StorageError {
        StorageError { http_status: Some(403), ..StorageError::access_denied(message) }
    }

    pub fn resource_already_exists() -> StorageError {
        StorageError::new(409, "ResourceAlreadyExists", Some("Duplicate"), "The resource already exists")
    }

    pub fn bucket_already_exists() -> StorageError {
        StorageError::new(409, "BucketAlreadyExists", Some("Duplicate"), "The resource already exists")
    }

    pub fn bucket_not_empty() -> StorageError {
        StorageError::new(409, "ResourceNotEmpty", None, "The bucket you tried to delete is not empty")
    }

    pub fn unable_to_empty_bucket(message: impl Into<String>) -> StorageError {
        StorageError::new(409, "InvalidRequest", None, message)
    }

    pub fn invalid_bucket_name() -> StorageError {
        StorageError::new(400, "InvalidBucketName", Some("Invalid Input"), "Bucket name invalid")
    }

    pub fn invalid_file_size_limit() -> StorageError {
        StorageError::invalid_request("Invalid file size format, hint: use 20GB / 20MB / 30KB / 3B")
    }

    pub fn invalid_mime_type(mime: &str) -> StorageError {
        StorageError::new(
            415,
            "InvalidMimeType",
            Some("invalid_mime_type"),
            format!("mime type {mime} is not supported"),
        )
    }

    pub fn entity_too_large() -> StorageError {
        StorageError::entity_too_large_for("object")
    }

    /// `what` (`object`, `user_metadata`) is over its limit.
    pub fn entity_too_large_for(what: &str) -> StorageError {
        StorageError::new(
            413,
            "EntityTooLarge",
            Some("Payload too large"),
            format!("The {what} exceeded the maximum allowed size"),
        )
    }

    pub fn key_already_exists() -> StorageError {
        StorageError::new(409, "KeyAlreadyExists", Some("Duplicate"), "The resource already exists")
    }

    pub fn no_such_key() -> StorageError {
        StorageError::new(404, "NoSuchKey", Some("not_found"), "Object not found")
    }

    pub fn invalid_key(key: &str) -> StorageError {
        StorageError::new(400, "InvalidKey", None, format!("Invalid key: {key}"))
    }

    /// A `Range` the object cannot satisfy: HTTP 416.
    pub fn invalid_range() -> StorageError {
        StorageError {
            http_status: Some(416),
            ..StorageError::new(400, "InvalidRange", Some("invalid_range"), "invalid range provided")
        }
    }

    pub fn invalid_signature() -> StorageError {
        StorageError::invalid_signature_because("Invalid signature")
    }

    pub fn invalid_signature_because(message: impl Into<String>) -> StorageError {
        StorageError::new(400, "InvalidSignature", None, message)
    }

    pub fn invalid_parameter(name: &str) -> StorageError {
        StorageError::new(400, "InvalidParameter", None, format!("Invalid Parameter {name}"))
    }

    pub fn invalid_jwt(message: impl Into<String>) -> StorageError {
        StorageError::new(400, "InvalidJWT", None, message)
    }

    pub fn invalid_request(message: impl Into<String>) -> StorageError {
        StorageError::new(400, "InvalidRequest", None, message)
    }

    /// A request that does not match the route's schema (Fastify's validation error).
    pub fn validation(message: impl Into<String>) -> StorageError {
        StorageError::new(400, "InvalidRequest", Some("Bad Request"), message)
    }

    pub fn feature_not_enabled(message: impl Into<String>) -> StorageError {
        StorageError::new(409, "FeatureNotEnabled", None, message)
    }

    /// Too much work queued (the blocking pool is full): HTTP 429, as Supabase's `SlowDown`.
    pub fn slow_down() -> StorageError {
        StorageError {
            http_status: Some(429),
            ..StorageError::new(
                429,
                "SlowDown",
                Some("too_many_connections"),
                "Too many connections issued to the database",
            )
        }
    }

    pub fn internal() -> StorageError {
        StorageError::new(500, "InternalError", Some("Internal"), "Internal Server Error")
    }

    /// Fastify's answer to an unknown route (a real 404).
    pub fn route_not_found(method: &str, path: &str) -> Response {
        let message = json_string(&format!("Route {method}:{path} not found"));
        Response::json(404, format!("{{\"message\":{message},\"error\":\"Not Found\",\"statusCode\":404}}"))
    }
}

/// A JSON string literal.
fn json_string(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

impl From<PgError> for StorageError {
    /// SQLSTATE → Supabase Storage's code, as its database layer maps them.
    fn from(e: PgError) -> StorageError {
        let Some(db) = e.as_db() else {
            tracing::warn!(error = %e, "storage statement failed");
            return StorageError::internal();
        };
        match db.code.as_str() {
            "42501" => StorageError::access_denied(if db.message.contains("row-level security") {
                "new row violates row-level security policy".to_owned()
            } else {
                db.message.clone()
            }),
            "23505" => StorageError::resource_already_exists(),
            "23503" if db.detail.as_deref().is_some_and(|d| d.contains("is still referenced from table")) => {
                StorageError::new(
                    409,
                    "ResourceReferenced",
                    None,
                    "The resource could not be updated or removed due to a foreign key constraint",
                )
            }
            "23503" => StorageError::new(404, "InvalidRequest", None, "The related resource does not exist"),
            "55P03" => StorageError::new(423, "ResourceLocked", None, "The resource is locked"),
            "57014" => StorageError {
                http_status: Some(544),
                ..StorageError::new(544, "DatabaseTimeout", None, "The connection to the database timed out")
            },
            "25006" => StorageError::new(
                503,
                "DatabaseReadOnly",
                None,
                "The database is currently in read-only mode. Please try again later.",
            ),
            "22P02" => StorageError::new(400, "InvalidParameter", None, db.message.clone()),
            code => {
                tracing::warn!(code, message = %db.message, "storage statement failed");
                StorageError::new(500, "DatabaseError", None, format!("database error, code: {code}"))
            }
        }
    }
}
