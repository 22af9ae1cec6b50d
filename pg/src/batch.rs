//! What a caller sends (a [`Batch`] of [`Statement`]s plus request settings) and what comes back
//! ([`StatementResult`]s of text-format [`Row`]s).
//!
//! A batch is one API request: one transaction, one socket write, one Sync. Invariants: the
//! request settings are always applied transaction-locally (`set_config(name, value, true)`) in
//! the order given, before the caller's statements; results are returned only for the caller's
//! statements, in order; everything is text format.

use bytes::Bytes;

/// A PostgreSQL type OID (0 = let the server infer the parameter type).
pub type Oid = u32;

/// One SQL statement with text-format parameters (`None` = SQL NULL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// The SQL text; `$1`, `$2`, ... refer to `params`. Also the prepared-statement cache key.
    pub sql: String,
    /// Parameter values in text format.
    pub params: Vec<Option<Bytes>>,
    /// Declared parameter types; missing or 0 entries are inferred by the server.
    pub param_types: Vec<Oid>,
}

impl Statement {
    /// A statement without parameters.
    pub fn new(sql: impl Into<String>) -> Self {
        Statement { sql: sql.into(), params: Vec::new(), param_types: Vec::new() }
    }

    /// Appends a text parameter.
    pub fn bind(mut self, value: impl Into<Bytes>) -> Self {
        self.params.push(Some(value.into()));
        self
    }

    /// Appends a text parameter or NULL.
    pub fn bind_opt(mut self, value: Option<impl Into<Bytes>>) -> Self {
        self.params.push(value.map(Into::into));
        self
    }

    /// Appends a NULL parameter.
    pub fn bind_null(mut self) -> Self {
        self.params.push(None);
        self
    }

    /// Declares the parameter types (OIDs) sent with Parse.
    pub fn param_types(mut self, types: impl Into<Vec<Oid>>) -> Self {
        self.param_types = types.into();
        self
    }
}

/// A PostgreSQL text array literal (`{"a","b\"c"}`) of `items`, every element quoted, for a
/// parameter cast to `text[]`: one parameter however many items, no SQL text built from them.
pub fn text_array_literal<'a>(items: impl IntoIterator<Item = &'a str>) -> String {
    let mut out = String::from("{");
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('"');
        for c in item.chars() {
            if c == '"' || c == '\\' {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('"');
    }
    out.push('}');
    out
}

/// How the batch's transaction ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TxEnd {
    /// Commit (the default).
    #[default]
    Commit,
    /// Roll back after running every statement (PostgREST `Prefer: tx=rollback`).
    Rollback,
}

/// One API request: request settings and statements run in one transaction with one Sync.
///
/// On the wire, in one write: `select set_config($1,$2,true), ...` (if any settings; with
/// `transaction_read_only=on` first for read-only batches), each statement (Parse once per
/// connection, then Bind / Describe / Execute), `ROLLBACK` for [`TxEnd::Rollback`], `Sync`.
///
/// The transaction is PostgreSQL's implicit extended-protocol transaction: it starts with the
/// batch's first message and ends at its Sync — committed if everything succeeded, rolled back
/// as a whole on any error. This is the same atomicity as `BEGIN … COMMIT`, without two extra
/// statements, and (unlike an explicit `BEGIN` in a pipeline) an error cannot leave the session
/// in an aborted transaction block that would fail the batches pipelined behind it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    /// GUC name/value pairs applied with `set_config(name, value, true)`, in order.
    pub settings: Vec<(String, String)>,
    /// The caller's statements.
    pub statements: Vec<Statement>,
    /// Read-only transaction (`transaction_read_only=on`; writes fail with SQLSTATE 25006).
    pub read_only: bool,
    /// How the transaction ends.
    pub end: TxEnd,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Batch::default()
    }

    /// Adds a transaction-local setting (`set_config(name, value, true)`).
    pub fn setting(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.settings.push((name.into(), value.into()));
        self
    }

    /// Sets the role for the transaction (`set_config('role', role, true)`).
    pub fn role(self, role: impl Into<String>) -> Self {
        self.setting("role", role)
    }

    /// Sets `request.jwt.claims` (JSON text).
    pub fn jwt_claims(self, claims_json: impl Into<String>) -> Self {
        self.setting("request.jwt.claims", claims_json)
    }

    /// Sets `request.headers` (JSON object text, names lower-cased by the caller).
    pub fn headers(self, headers_json: impl Into<String>) -> Self {
        self.setting("request.headers", headers_json)
    }

    /// Sets `request.method`.
    pub fn method(self, method: impl Into<String>) -> Self {
        self.setting("request.method", method)
    }

    /// Sets `request.path`.
    pub fn path(self, path: impl Into<String>) -> Self {
        self.setting("request.path", path)
    }

    /// Sets `search_path` (already quoted and joined by the caller, e.g. `"public", "extensions"`).
    pub fn search_path(self, search_path: impl Into<String>) -> Self {
        self.setting("search_path", search_path)
    }

    /// Adds a statement.
    pub fn statement(mut self, statement: Statement) -> Self {
        self.statements.push(statement);
        self
    }

    /// Adds a statement without parameters.
    pub fn query(self, sql: impl Into<String>) -> Self {
        self.statement(Statement::new(sql))
    }

    /// Runs the transaction READ ONLY.
    pub fn read_only(mut self, read_only: bool) -> Self {
        self.read_only = read_only;
        self
    }

    /// Chooses commit or rollback at the end.
    pub fn end(mut self, end: TxEnd) -> Self {
        self.end = end;
        self
    }
}

/// One result row; cells are text-format values (`None` = NULL), sharing the received buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    cells: Vec<Option<Bytes>>,
}

impl Row {
    pub(crate) fn new(cells: Vec<Option<Bytes>>) -> Self {
        Row { cells }
    }

    /// Number of columns.
    pub fn len(&self) -> usize {
        self.cells.len()
    }

    /// True when the row has no columns.
    pub fn is_empty(&self) -> bool {
        self.cells.is_empty()
    }

    /// The raw text bytes of column `i` (`None` for NULL or out of range).
    pub fn get(&self, i: usize) -> Option<&Bytes> {
        self.cells.get(i).and_then(|c| c.as_ref())
    }

    /// Column `i` as UTF-8 text (`None` for NULL, out of range, or invalid UTF-8).
    pub fn get_str(&self, i: usize) -> Option<&str> {
        self.get(i).and_then(|b| std::str::from_utf8(b).ok())
    }

    /// All cells.
    pub fn cells(&self) -> &[Option<Bytes>] {
        &self.cells
    }

    /// Takes the cells.
    pub fn into_cells(self) -> Vec<Option<Bytes>> {
        self.cells
    }
}

/// The outcome of one caller statement.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatementResult {
    /// Column names (empty for statements that return no rows, e.g. a plain INSERT).
    pub columns: Vec<String>,
    /// Rows in text format.
    pub rows: Vec<Row>,
    /// The command tag, e.g. `INSERT 0 1`, `SELECT 3` (empty for an empty query).
    pub command_tag: String,
}

impl StatementResult {
    /// Rows affected/returned, parsed from the command tag (last number), if any.
    pub fn rows_affected(&self) -> Option<u64> {
        self.command_tag.rsplit(' ').next().and_then(|n| n.parse().ok())
    }

    /// The first row's first column as text (convenience for single-value queries).
    pub fn scalar(&self) -> Option<&str> {
        self.rows.first().and_then(|r| r.get_str(0))
    }
}

/// One result set of a simple-protocol query (`simple_query`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimpleResult {
    /// Column names (empty when the statement returns no rows).
    pub columns: Vec<String>,
    /// Rows in text format.
    pub rows: Vec<Row>,
    /// The command tag (empty for an empty query).
    pub command_tag: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_array_literals_quote_every_item() {
        assert_eq!(text_array_literal(["a", "b\"c", "d\\e", "x,y"]), r#"{"a","b\"c","d\\e","x,y"}"#);
        assert_eq!(text_array_literal([]), "{}");
    }

    #[test]
    fn rows_affected_from_tag() {
        let r = StatementResult { command_tag: "INSERT 0 7".into(), ..Default::default() };
        assert_eq!(r.rows_affected(), Some(7));
        let r = StatementResult { command_tag: "CREATE TABLE".into(), ..Default::default() };
        assert_eq!(r.rows_affected(), None);
    }

    #[test]
    fn builder_orders_settings() {
        let b = Batch::new().search_path("\"public\"").role("anon").jwt_claims("{}").query("select 1");
        let names: Vec<_> = b.settings.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["search_path", "role", "request.jwt.claims"]);
        assert_eq!(b.statements.len(), 1);
    }
}
