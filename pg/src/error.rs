//! Typed errors of the PostgreSQL layer.
//!
//! Owns [`PgError`] (what every client/pool call returns) and [`DbError`] (every field of a
//! server `ErrorResponse`). Invariant: an error that came from the server is always
//! [`PgError::Db`] with the SQLSTATE intact, so callers (the REST layer) can map it to an HTTP
//! status exactly as PostgREST does; everything else says whether the request may have run.

use std::fmt;
use std::time::Duration;

use fallible_iterator::FallibleIterator;
use postgres_protocol::message::backend::ErrorFields;

/// An `ErrorResponse` (or `NoticeResponse`) from the server, with all of its fields.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DbError {
    /// Localised severity (`S`), e.g. `ERROR`.
    pub severity: String,
    /// Non-localised severity (`V`), e.g. `ERROR`; PostgreSQL ≥ 9.6.
    pub severity_nonlocalized: Option<String>,
    /// SQLSTATE (`C`), e.g. `42501`.
    pub code: String,
    /// Primary message (`M`).
    pub message: String,
    /// Detail (`D`).
    pub detail: Option<String>,
    /// Hint (`H`).
    pub hint: Option<String>,
    /// Cursor position in the statement text, 1-based characters (`P`).
    pub position: Option<u32>,
    /// Position in an internally generated query (`p`).
    pub internal_position: Option<u32>,
    /// The internally generated query (`q`).
    pub internal_query: Option<String>,
    /// Context / call stack (`W`).
    pub where_: Option<String>,
    /// Schema name (`s`).
    pub schema: Option<String>,
    /// Table name (`t`).
    pub table: Option<String>,
    /// Column name (`c`).
    pub column: Option<String>,
    /// Data type name (`d`).
    pub datatype: Option<String>,
    /// Constraint name (`n`).
    pub constraint: Option<String>,
    /// Source file (`F`).
    pub file: Option<String>,
    /// Source line (`L`).
    pub line: Option<u32>,
    /// Source routine (`R`).
    pub routine: Option<String>,
}

impl DbError {
    /// Decodes the fields of an ErrorResponse/NoticeResponse body.
    pub(crate) fn parse(mut fields: ErrorFields<'_>) -> Result<DbError, std::io::Error> {
        let mut e = DbError::default();
        while let Some(f) = fields.next()? {
            let v = String::from_utf8_lossy(f.value_bytes()).into_owned();
            match f.type_() {
                b'S' => e.severity = v,
                b'V' => e.severity_nonlocalized = Some(v),
                b'C' => e.code = v,
                b'M' => e.message = v,
                b'D' => e.detail = Some(v),
                b'H' => e.hint = Some(v),
                b'P' => e.position = v.parse().ok(),
                b'p' => e.internal_position = v.parse().ok(),
                b'q' => e.internal_query = Some(v),
                b'W' => e.where_ = Some(v),
                b's' => e.schema = Some(v),
                b't' => e.table = Some(v),
                b'c' => e.column = Some(v),
                b'd' => e.datatype = Some(v),
                b'n' => e.constraint = Some(v),
                b'F' => e.file = Some(v),
                b'L' => e.line = v.parse().ok(),
                b'R' => e.routine = Some(v),
                _ => {}
            }
        }
        Ok(e)
    }
}

impl fmt::Display for DbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.severity, self.code, self.message)?;
        if let Some(d) = &self.detail {
            write!(f, " (detail: {d})")?;
        }
        if let Some(h) = &self.hint {
            write!(f, " (hint: {h})")?;
        }
        Ok(())
    }
}

impl std::error::Error for DbError {}

/// Every failure of the client, the pipeline and the pool.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// The server answered with an ErrorResponse; the batch was rolled back as a whole.
    #[error("database error: {0}")]
    Db(Box<DbError>),
    /// Socket-level failure (connect, read, write).
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// The server sent something this client does not understand or did not expect.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// Authentication could not be completed (unsupported method, missing password, SCRAM failure).
    #[error("authentication failed: {0}")]
    Auth(String),
    /// A connection URL or option is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The connection closed while this batch was in flight: it may or may not have committed.
    #[error("connection to PostgreSQL lost while the request was in flight")]
    ConnectionLost,
    /// No healthy connection: PostgreSQL is down or restarting. Retry after the given time.
    #[error("PostgreSQL unavailable (retry after {retry_after:?})")]
    Unavailable {
        /// A hint for the caller (e.g. HTTP `Retry-After`).
        retry_after: Duration,
    },
    /// The pool's bounded queue is full: shed load (HTTP 503/429).
    #[error("too many queued PostgreSQL requests")]
    Busy,
    /// The request did not complete within its time limit. If it had been written it may still
    /// commit; its results are discarded.
    #[error("PostgreSQL request timed out after {0:?}")]
    Timeout(Duration),
    /// The pool or connection was closed by its owner.
    #[error("PostgreSQL client closed")]
    Closed,
    /// The batch's result passed `max_result_bytes`: it was discarded unread and the server
    /// sent a cancel. Like [`PgError::Timeout`], a batch that writes may still have committed
    /// (the cancel can land after the commit); the connection is still usable.
    #[error("the result is larger than {limit} bytes (max_result_bytes)")]
    ResultTooLarge {
        /// The configured limit, in bytes.
        limit: usize,
    },
}

impl PgError {
    /// The server-side error, if this is one.
    pub fn as_db(&self) -> Option<&DbError> {
        match self {
            PgError::Db(e) => Some(e),
            _ => None,
        }
    }

    /// The SQLSTATE, if this is a server-side error.
    pub fn code(&self) -> Option<&str> {
        self.as_db().map(|e| e.code.as_str())
    }
}

impl From<DbError> for PgError {
    fn from(e: DbError) -> Self {
        PgError::Db(Box::new(e))
    }
}
