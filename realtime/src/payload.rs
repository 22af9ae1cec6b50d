//! The `postgres_changes` payload of one change, byte for byte as Supabase Realtime sends it
//! (reference/realtime.md §5.2).
//!
//! Owns: [`render_data`] (the `data` object of one change, rendered once per change and shared by
//! every subscriber that gets it), [`render_error_data`] (Supabase's `Error 401`/`Error 400` form),
//! [`frame_payload`] (a subscriber's `{"data":…,"ids":[…]}`, a copy of `data` plus the ids) and
//! [`raw_payload`] (the old API's payload: `data` itself).
//!
//! The shape is Supabase's: `data` is its change struct encoded by Jason, keys in alphabetical
//! order — `columns`, `commit_timestamp`, `errors`, `old_record` (UPDATE and DELETE only),
//! `record` (INSERT and UPDATE only), `schema`, `table`, `type` — with `columns`, `record` and
//! `old_record` passed through as PostgreSQL's `jsonb` text (`{"id": 1, "done": false}`: `": "`
//! and `", "` separators, keys ordered shortest first then byte-wise, as `jsonb` stores them),
//! and the outer payload `{"data":…,"ids":[…]}`. realtime-js reads keys, not order; matching the
//! bytes keeps captures comparable.
//!
//! Rules kept: an UPDATE's `old_record` is the old row when the change carries one (identity
//! changed, or `REPLICA IDENTITY FULL`), else the replica-identity columns of the new row (what
//! wal2json's `identity` gives Supabase), `{}` under `REPLICA IDENTITY NOTHING`; a DELETE on a
//! table with row level security keeps only the primary-key columns in `old_record`; when the
//! record is larger than `max_record_bytes` (Supabase's `poll_max_record_bytes`, 1 MiB) only
//! values of at most 64 bytes are kept and `errors` is `["Error 413: Payload Too Large"]`. The size
//! is that of the rendered `record` and `old_record` (Supabase measures wal2json's text of the
//! change, which also holds column names and types: a change near the limit may be cut at a
//! slightly different size). Column privileges are not applied here: `columns`/`record` hold every
//! column (per-role column lists would need per-role renders).

use std::fmt::Write as _;

use crate::changes::{Change, ChangeKind, Relation, ReplicaIdentity, Row};

/// Supabase's default `poll_max_record_bytes`.
pub const DEFAULT_MAX_RECORD_BYTES: usize = 1024 * 1024;

/// Values longer than this are dropped from a record over the size limit.
pub const CUT_FIELD_BYTES: usize = 64;

/// The `data` object of one change, rendered once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedChange {
    /// The JSON text of `data`.
    pub data: Box<str>,
    /// The record was over the size limit (`errors` holds `Error 413`).
    pub too_large: bool,
}

/// Renders `data` for `change` committed at `commit_timestamp` (`YYYY-MM-DDTHH:MM:SS.mmmZ`).
pub fn render_data(change: &Change, commit_timestamp: &str, max_record_bytes: usize) -> RenderedChange {
    let relation = &change.relation;
    let old = old_image(change);
    let size = |row: Option<&Row>, only: &dyn Fn(usize) -> bool| {
        row.map_or(0, |row| {
            row.values
                .iter()
                .enumerate()
                .filter(|(i, _)| only(*i))
                .filter_map(|(i, v)| v.as_ref().map(|v| relation.columns[i].name.len() + v.len() + 6))
                .sum::<usize>()
        })
    };
    let old_only = |i: usize| old.1.as_ref().is_none_or(|keep| keep.contains(&i));
    let record_bytes = match change.kind {
        ChangeKind::Delete => 0,
        _ => size(change.record.as_ref(), &|_| true),
    } + match change.kind {
        ChangeKind::Insert => 0,
        _ => size(old.0, &old_only),
    };
    let too_large = record_bytes > max_record_bytes;

    let mut out = String::with_capacity(128 + record_bytes.min(max_record_bytes) * 2);
    out.push_str("{\"columns\":");
    push_columns(&mut out, relation);
    out.push_str(",\"commit_timestamp\":");
    push_json_str(&mut out, commit_timestamp);
    out.push_str(if too_large { ",\"errors\":[\"Error 413: Payload Too Large\"]" } else { ",\"errors\":null" });
    if change.kind != ChangeKind::Insert {
        out.push_str(",\"old_record\":");
        push_record(&mut out, relation, old.0, &old_only, too_large);
    }
    if change.kind != ChangeKind::Delete {
        out.push_str(",\"record\":");
        push_record(&mut out, relation, change.record.as_ref(), &|_| true, too_large);
    }
    push_tail(&mut out, relation, change.kind);
    RenderedChange { data: out.into_boxed_str(), too_large }
}

/// Supabase's form for a change the subscriber's role may not be told about (`"Error 401:
/// Unauthorized"`: no SELECT on the primary key) or cannot be checked (`"Error 400: Bad Request,
/// no primary key"`): no columns, no values, no commit timestamp.
pub fn render_error_data(relation: &Relation, kind: ChangeKind, error: &str) -> RenderedChange {
    let mut out = String::with_capacity(160);
    out.push_str("{\"columns\":[],\"commit_timestamp\":null,\"errors\":[");
    push_json_str(&mut out, error);
    out.push(']');
    if kind != ChangeKind::Insert {
        out.push_str(",\"old_record\":{}");
    }
    if kind != ChangeKind::Delete {
        out.push_str(",\"record\":{}");
    }
    push_tail(&mut out, relation, kind);
    RenderedChange { data: out.into_boxed_str(), too_large: false }
}

/// `"Error 401: Unauthorized"`.
pub const ERROR_UNAUTHORIZED: &str = "Error 401: Unauthorized";
/// `"Error 400: Bad Request, no primary key"`.
pub const ERROR_NO_PRIMARY_KEY: &str = "Error 400: Bad Request, no primary key";

/// One subscriber's payload: `{"data":<data>,"ids":[<ids>]}`.
pub fn frame_payload(ids: &[u64], data: &RenderedChange) -> String {
    let mut out = String::with_capacity(data.data.len() + 20 + ids.len() * 8);
    out.push_str("{\"data\":");
    out.push_str(&data.data);
    out.push_str(",\"ids\":[");
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{id}");
    }
    out.push_str("]}");
    out
}

/// The old API's payload (a join without `config`; event = the change type): `data` itself.
pub fn raw_payload(data: &RenderedChange) -> &str {
    &data.data
}

/// The old image and which of its columns to show (`None` = all it carries).
fn old_image(change: &Change) -> (Option<&Row>, Option<Vec<usize>>) {
    let relation = &change.relation;
    match change.kind {
        ChangeKind::Insert => (None, None),
        ChangeKind::Delete if relation.rls_enabled => (change.old_record.as_ref(), Some(relation.primary_key.clone())),
        ChangeKind::Delete => (change.old_record.as_ref(), None),
        ChangeKind::Update => match (&change.old_record, relation.replica_identity) {
            (Some(old), _) => (Some(old), None),
            (None, ReplicaIdentity::Nothing) => (None, None),
            (None, _) => (
                change.record.as_ref(),
                Some(relation.columns.iter().enumerate().filter(|(_, c)| c.key).map(|(i, _)| i).collect()),
            ),
        },
    }
}

fn push_tail(out: &mut String, relation: &Relation, kind: ChangeKind) {
    out.push_str(",\"schema\":");
    push_json_str(out, &relation.schema);
    out.push_str(",\"table\":");
    push_json_str(out, &relation.table);
    out.push_str(",\"type\":\"");
    out.push_str(kind.as_str());
    out.push_str("\"}");
}

/// `[{"name": "id", "type": "int8"}, …]` as `jsonb` text.
fn push_columns(out: &mut String, relation: &Relation) {
    out.push('[');
    for (i, column) in relation.columns.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str("{\"name\": ");
        push_json_str(out, &column.name);
        out.push_str(", \"type\": ");
        push_json_str(out, &column.type_name);
        out.push('}');
    }
    out.push(']');
}

/// A row image as a `jsonb` object's text: keys shortest first, then byte-wise.
fn push_record(out: &mut String, relation: &Relation, row: Option<&Row>, keep: &dyn Fn(usize) -> bool, cut: bool) {
    let Some(row) = row else {
        out.push_str("{}");
        return;
    };
    let mut fields: Vec<(&str, &str)> = row
        .values
        .iter()
        .enumerate()
        .filter(|(i, _)| keep(*i))
        .filter_map(|(i, v)| Some((relation.columns.get(i)?.name.as_str(), v.as_deref()?)))
        .filter(|(_, v)| !cut || v.len() <= CUT_FIELD_BYTES)
        .collect();
    fields.sort_by(|(a, _), (b, _)| a.len().cmp(&b.len()).then_with(|| a.as_bytes().cmp(b.as_bytes())));
    out.push('{');
    for (i, (name, value)) in fields.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        push_json_str(out, name);
        out.push_str(": ");
        out.push_str(value);
    }
    out.push('}');
}

/// A JSON string as PostgreSQL's `escape_json` writes it.
fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::changes::Column;

    fn relation(rls: bool, identity: ReplicaIdentity) -> Arc<Relation> {
        let col = |name: &str, type_name: &str, key: bool| Column {
            name: name.into(),
            type_oid: 0,
            type_name: type_name.into(),
            key,
        };
        Arc::new(Relation {
            oid: 1,
            schema: "public".into(),
            table: "todos".into(),
            replica_identity: identity,
            columns: vec![col("id", "int8", true), col("done", "bool", false), col("title", "text", false)],
            rls_enabled: rls,
            primary_key: vec![0],
        })
    }

    fn row(values: &[Option<&str>]) -> Row {
        Row { values: values.iter().map(|v| v.map(Box::from)).collect() }
    }

    const TS: &str = "2024-01-01T00:00:00.000Z";
    const COLUMNS: &str =
        r#"[{"name": "id", "type": "int8"}, {"name": "done", "type": "bool"}, {"name": "title", "type": "text"}]"#;

    #[test]
    fn insert_update_delete_shapes() {
        let rel = relation(false, ReplicaIdentity::Default);
        let insert = Change {
            relation: rel.clone(),
            kind: ChangeKind::Insert,
            record: Some(row(&[Some("1"), Some("false"), Some("\"a \\\"b\\\"\"")])),
            old_record: None,
        };
        let data = render_data(&insert, TS, DEFAULT_MAX_RECORD_BYTES);
        assert_eq!(
            &*data.data,
            format!(
                r#"{{"columns":{COLUMNS},"commit_timestamp":"{TS}","errors":null,"record":{{"id": 1, "done": false, "title": "a \"b\""}},"schema":"public","table":"todos","type":"INSERT"}}"#
            )
        );
        assert_eq!(frame_payload(&[1000, 7], &data), format!(r#"{{"data":{},"ids":[1000,7]}}"#, data.data));
        assert_eq!(raw_payload(&data), &*data.data);

        // UPDATE without an old row: old_record is the key of the new row.
        let update = Change {
            relation: rel.clone(),
            kind: ChangeKind::Update,
            record: Some(row(&[Some("1"), Some("true"), Some("null")])),
            old_record: None,
        };
        assert_eq!(
            &*render_data(&update, TS, DEFAULT_MAX_RECORD_BYTES).data,
            format!(
                r#"{{"columns":{COLUMNS},"commit_timestamp":"{TS}","errors":null,"old_record":{{"id": 1}},"record":{{"id": 1, "done": true, "title": null}},"schema":"public","table":"todos","type":"UPDATE"}}"#
            )
        );

        // DELETE: old_record only; without RLS everything the old row carries.
        let full = relation(false, ReplicaIdentity::Full);
        let delete = Change {
            relation: full,
            kind: ChangeKind::Delete,
            record: None,
            old_record: Some(row(&[Some("1"), Some("true"), Some("\"x\"")])),
        };
        assert_eq!(
            &*render_data(&delete, TS, DEFAULT_MAX_RECORD_BYTES).data,
            format!(
                r#"{{"columns":{COLUMNS},"commit_timestamp":"{TS}","errors":null,"old_record":{{"id": 1, "done": true, "title": "x"}},"schema":"public","table":"todos","type":"DELETE"}}"#
            )
        );
        // With RLS only the primary key.
        let delete = Change { relation: relation(true, ReplicaIdentity::Full), ..delete };
        assert_eq!(
            &*render_data(&delete, TS, DEFAULT_MAX_RECORD_BYTES).data,
            format!(
                r#"{{"columns":{COLUMNS},"commit_timestamp":"{TS}","errors":null,"old_record":{{"id": 1}},"schema":"public","table":"todos","type":"DELETE"}}"#
            )
        );
        // Replica identity NOTHING: an UPDATE's old_record is empty.
        let update = Change { relation: relation(false, ReplicaIdentity::Nothing), ..update };
        assert!(render_data(&update, TS, DEFAULT_MAX_RECORD_BYTES).data.contains(r#""old_record":{},"record""#));
    }

    #[test]
    fn keys_in_jsonb_order_and_missing_values_left_out() {
        let col = |name: &str| Column { name: name.into(), type_oid: 0, type_name: "text".into(), key: false };
        let rel = Arc::new(Relation {
            oid: 1,
            schema: "s".into(),
            table: "t".into(),
            replica_identity: ReplicaIdentity::Default,
            columns: vec![col("bb"), col("a"), col("ab"), col("c")],
            rls_enabled: false,
            primary_key: vec![],
        });
        let insert = Change {
            relation: rel,
            kind: ChangeKind::Insert,
            record: Some(row(&[Some("1"), Some("2"), Some("3"), None])),
            old_record: None,
        };
        let data = render_data(&insert, TS, DEFAULT_MAX_RECORD_BYTES);
        assert!(data.data.contains(r#""record":{"a": 2, "ab": 3, "bb": 1}"#), "{}", data.data);
    }

    #[test]
    fn payload_too_large_keeps_short_fields() {
        let rel = relation(false, ReplicaIdentity::Default);
        let long = format!("\"{}\"", "x".repeat(100));
        let insert = Change {
            relation: rel,
            kind: ChangeKind::Insert,
            record: Some(row(&[Some("1"), Some("false"), Some(&long)])),
            old_record: None,
        };
        let data = render_data(&insert, TS, 100);
        assert!(data.too_large);
        assert_eq!(
            &*data.data,
            format!(
                r#"{{"columns":{COLUMNS},"commit_timestamp":"{TS}","errors":["Error 413: Payload Too Large"],"record":{{"id": 1, "done": false}},"schema":"public","table":"todos","type":"INSERT"}}"#
            )
        );
        assert!(!render_data(&insert, TS, DEFAULT_MAX_RECORD_BYTES).too_large);
    }

    #[test]
    fn error_forms() {
        let rel = relation(true, ReplicaIdentity::Default);
        assert_eq!(
            &*render_error_data(&rel, ChangeKind::Insert, ERROR_UNAUTHORIZED).data,
            r#"{"columns":[],"commit_timestamp":null,"errors":["Error 401: Unauthorized"],"record":{},"schema":"public","table":"todos","type":"INSERT"}"#
        );
        assert_eq!(
            &*render_error_data(&rel, ChangeKind::Update, ERROR_NO_PRIMARY_KEY).data,
            r#"{"columns":[],"commit_timestamp":null,"errors":["Error 400: Bad Request, no primary key"],"old_record":{},"record":{},"schema":"public","table":"todos","type":"UPDATE"}"#
        );
    }

    #[test]
    fn escapes_like_postgres() {
        let mut out = String::new();
        push_json_str(&mut out, "a\"\\\n\u{1}é");
        assert_eq!(out, r#""a\"\\\n\u0001é""#);
    }
}
