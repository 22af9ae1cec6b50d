//! The row-level-security check of `postgres_changes` (reference/realtime.md §5.4): which
//! changes of one transaction a group of subscribers — same role, same claims — may see.
//!
//! Owns: [`GroupCheck`] (one group and the changes to check for it), [`visibility_batch`] (the
//! group's batch and the [`VisibilityPlan`] that reads its answer) and [`visibility_batches`].
//!
//! What is checked, as on Supabase: INSERT and UPDATE of tables with row level security, by the
//! new row's primary key, re-selected under the subscriber's role and claims. DELETE is never
//! checked (the row is gone; the payload cuts `old_record` to the key instead), nor are tables
//! without RLS: those answer `true` without a query. A change whose new row lacks a key value
//! (or whose table has no primary key) answers `false` (Supabase sends it as `Error 400`).
//!
//! The batch of a group: the settings `role`, `request.jwt.claims`, `request.jwt.claim.sub`,
//! `request.jwt.claim.role` (transaction-local; `SET ROLE` is checked against the login role,
//! `authenticator`), then one statement per table:
//! `select e.n from jsonb_array_elements($1) with ordinality e(v, n) cross join lateral
//! jsonb_populate_record(null::"s"."t", e.v) k where exists (select 1 from "s"."t" t where
//! t."id" = k."id")` — the keys bound as one JSON parameter and converted by the table's own row
//! type (no type name crosses from Rust, identifiers are quoted), the answer the 1-based positions
//! of the visible keys. The SQL text depends only on the table, so each connection prepares it
//! once; the plan is reused across groups of the same role (PostgreSQL re-plans RLS plans only
//! when the role changes), claims being read at execution through `auth.uid()` and friends.
//! The batch ends with `ROLLBACK`: a check never commits anything a policy function did.
//!
//! Isolation between groups — a policy that raises for one subscriber must not hide changes
//! from the others (Supabase's known weakness, realtime#2093) — comes from **one batch per
//! group**: each batch is its own implicit transaction, so an error fails that group alone
//! (treat it as "sees nothing"). The batches of all groups are pipelined on one connection
//! (written together, one round trip), so this costs one Sync and one empty transaction per
//! group, and keeps every statement a cached prepared one. A single batch for all groups would
//! need a PL/pgSQL helper with an exception block per group running the checks as dynamic SQL
//! (`EXECUTE`), planned afresh on every call and every group, and a subtransaction per group:
//! more expensive than a Sync.

use std::fmt::Write as _;

use bytes::Bytes;
use madbase_pg::{Batch, Statement, StatementResult, TxEnd};

use crate::changes::{Change, ChangeKind, Relation};

/// One group of subscribers and the changes (of one transaction) to check for it.
#[derive(Debug, Clone, Copy)]
pub struct GroupCheck<'a> {
    /// The token's `role` claim.
    pub role: &'a str,
    /// The verified token's claims, JSON.
    pub claims_json: &'a str,
    /// The changes this group would receive (its filters already applied).
    pub changes: &'a [&'a Change],
}

/// Must the change be re-selected under the subscriber's role?
pub fn needs_check(change: &Change) -> bool {
    change.relation.rls_enabled && change.kind != ChangeKind::Delete
}

/// The group's answer could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RlsError {
    #[error("the visibility check returned {got} results, expected {expected}")]
    Results { got: usize, expected: usize },
    #[error("the visibility check returned position {0}, which it was not asked about")]
    Position(String),
}

/// How to read a group's batch results.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VisibilityPlan {
    /// One answer per change of the group, before the query: `true` for changes that need no
    /// check, `false` for those that need one (or cannot have one).
    initial: Vec<bool>,
    /// Per statement: the index in `changes` of each key, in the order bound.
    statements: Vec<Vec<usize>>,
}

impl VisibilityPlan {
    /// Nothing to ask PostgreSQL: [`VisibilityPlan::unchecked`] is the answer.
    pub fn is_trivial(&self) -> bool {
        self.statements.is_empty()
    }

    /// The answer without (or before) the query.
    pub fn unchecked(&self) -> Vec<bool> {
        self.initial.clone()
    }

    /// One answer per change of the group, in order.
    pub fn parse(&self, results: &[StatementResult]) -> Result<Vec<bool>, RlsError> {
        if results.len() != self.statements.len() {
            return Err(RlsError::Results { got: results.len(), expected: self.statements.len() });
        }
        let mut visible = self.initial.clone();
        for (result, indexes) in results.iter().zip(&self.statements) {
            for row in &result.rows {
                let text = row.get_str(0).unwrap_or_default();
                let index = text
                    .parse::<usize>()
                    .ok()
                    .and_then(|n| n.checked_sub(1))
                    .and_then(|n| indexes.get(n))
                    .ok_or_else(|| RlsError::Position(text.to_owned()))?;
                visible[*index] = true;
            }
        }
        Ok(visible)
    }
}

/// The batch for one group and how to read it. When the plan [`is_trivial`]
/// (VisibilityPlan::is_trivial), there is nothing to send.
pub fn visibility_batch(group: &GroupCheck<'_>) -> (Batch, VisibilityPlan) {
    let mut plan =
        VisibilityPlan { initial: group.changes.iter().map(|c| !needs_check(c)).collect(), statements: Vec::new() };
    // Changes to check, by table, tables in order of first appearance.
    let mut tables: Vec<(&Relation, Vec<usize>)> = Vec::new();
    for (i, change) in group.changes.iter().enumerate() {
        if !needs_check(change) || key_json(change).is_none() {
            continue;
        }
        let relation = &*change.relation;
        match tables
            .iter_mut()
            .find(|(r, _)| r.oid == relation.oid && r.schema == relation.schema && r.table == relation.table)
        {
            Some((_, indexes)) => indexes.push(i),
            None => tables.push((relation, vec![i])),
        }
    }
    let mut batch = Batch::new()
        .role(group.role)
        .jwt_claims(group.claims_json)
        .setting("request.jwt.claim.sub", claim_sub(group.claims_json))
        .setting("request.jwt.claim.role", group.role)
        .end(TxEnd::Rollback);
    for (relation, indexes) in tables {
        let mut keys = String::from("[");
        for (n, &i) in indexes.iter().enumerate() {
            if n > 0 {
                keys.push(',');
            }
            if let Some(key) = key_json(group.changes[i]) {
                keys.push_str(&key);
            }
        }
        keys.push(']');
        batch = batch.statement(Statement::new(check_sql(relation)).bind(Bytes::from(keys)).param_types([3802]));
        plan.statements.push(indexes);
    }
    (batch, plan)
}

/// [`visibility_batch`] for every group: send them together (pipelined on one connection), so
/// an error in one group's policies fails that group only.
pub fn visibility_batches(groups: &[GroupCheck<'_>]) -> Vec<(Batch, VisibilityPlan)> {
    groups.iter().map(visibility_batch).collect()
}

/// The `sub` claim (empty when absent), as Supabase sets `request.jwt.claim.sub`.
fn claim_sub(claims_json: &str) -> String {
    match serde_json::from_str::<serde_json::Value>(claims_json) {
        Ok(serde_json::Value::Object(claims)) => match claims.get("sub") {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(other) if !other.is_null() => other.to_string(),
            _ => String::new(),
        },
        _ => String::new(),
    }
}

/// The new row's primary key as a JSON object (`{"id":1}`), or `None` when the table has no key
/// or the row lacks one of its values.
fn key_json(change: &Change) -> Option<String> {
    let relation = &change.relation;
    let record = change.record.as_ref()?;
    if relation.primary_key.is_empty() {
        return None;
    }
    let mut out = String::from("{");
    for (n, &i) in relation.primary_key.iter().enumerate() {
        let value = record.values.get(i)?.as_deref()?;
        if n > 0 {
            out.push(',');
        }
        out.push_str(&serde_json::Value::String(relation.columns.get(i)?.name.clone()).to_string());
        out.push(':');
        out.push_str(value);
    }
    out.push('}');
    Some(out)
}

fn check_sql(relation: &Relation) -> String {
    let table = format!("{}.{}", quote_ident(&relation.schema), quote_ident(&relation.table));
    let mut sql = format!(
        "select e.n from jsonb_array_elements($1::jsonb) with ordinality as e(v, n) \
         cross join lateral jsonb_populate_record(null::{table}, e.v) as k \
         where exists (select 1 from {table} as t where "
    );
    for (n, &i) in relation.primary_key.iter().enumerate() {
        let column = relation.columns.get(i).map_or("", |c| c.name.as_str());
        let column = quote_ident(column);
        if n > 0 {
            sql.push_str(" and ");
        }
        let _ = write!(sql, "t.{column} = k.{column}");
    }
    sql.push_str(") order by e.n");
    sql
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::changes::{Column, ReplicaIdentity, Row};

    fn relation(oid: u32, table: &str, rls: bool) -> Arc<Relation> {
        let col = |name: &str, type_name: &str, key: bool| Column {
            name: name.into(),
            type_oid: 0,
            type_name: type_name.into(),
            key,
        };
        Arc::new(Relation {
            oid,
            schema: "public".into(),
            table: table.into(),
            replica_identity: ReplicaIdentity::Default,
            columns: vec![col("id", "int8", true), col("we\"ird", "text", true)],
            rls_enabled: rls,
            primary_key: vec![0, 1],
        })
    }

    fn change(relation: &Arc<Relation>, kind: ChangeKind, id: &str) -> Change {
        let row = Row { values: vec![Some(id.into()), Some("\"x\"".into())] };
        let (record, old_record) = match kind {
            ChangeKind::Delete => (None, Some(row)),
            _ => (Some(row), None),
        };
        Change { relation: relation.clone(), kind, record, old_record }
    }

    #[test]
    fn one_statement_per_table_keys_bound_identifiers_quoted() {
        let a = relation(1, "a", true);
        let b = relation(2, "b", true);
        let plain = relation(3, "c", false);
        let changes = [
            change(&a, ChangeKind::Insert, "1"),
            change(&b, ChangeKind::Update, "2"),
            change(&plain, ChangeKind::Insert, "3"),
            change(&a, ChangeKind::Delete, "4"),
            change(&a, ChangeKind::Update, "5"),
        ];
        let refs: Vec<&Change> = changes.iter().collect();
        let group =
            GroupCheck { role: "authenticated", claims_json: r#"{"sub":"u1","role":"authenticated"}"#, changes: &refs };
        let (batch, plan) = visibility_batch(&group);
        let names: Vec<_> = batch.settings.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        assert_eq!(names[0], ("role", "authenticated"));
        assert!(names.contains(&("request.jwt.claim.sub", "u1")));
        assert_eq!(batch.end, TxEnd::Rollback);
        assert_eq!(batch.statements.len(), 2);
        assert_eq!(
            batch.statements[0].sql,
            "select e.n from jsonb_array_elements($1::jsonb) with ordinality as e(v, n) cross join lateral \
             jsonb_populate_record(null::\"public\".\"a\", e.v) as k where exists (select 1 from \"public\".\"a\" as t \
             where t.\"id\" = k.\"id\" and t.\"we\"\"ird\" = k.\"we\"\"ird\") order by e.n"
        );
        assert_eq!(
            batch.statements[0].params[0].as_deref(),
            Some(&br#"[{"id":1,"we\"ird":"x"},{"id":5,"we\"ird":"x"}]"#[..])
        );
        assert_eq!(plan.unchecked(), [false, false, true, true, false]);

        let row = |n: &str| StatementResult { command_tag: format!("SELECT {n}"), ..Default::default() };
        // No rows back: only the unchecked changes are visible.
        assert_eq!(plan.parse(&[row("0"), row("0")]).unwrap(), [false, false, true, true, false]);
        assert!(plan.parse(&[row("0")]).is_err());
    }

    #[test]
    fn nothing_to_check_is_trivial() {
        let plain = relation(3, "c", false);
        let changes = [change(&plain, ChangeKind::Insert, "3")];
        let refs: Vec<&Change> = changes.iter().collect();
        let (_, plan) = visibility_batch(&GroupCheck { role: "anon", claims_json: "{}", changes: &refs });
        assert!(plan.is_trivial());
        assert_eq!(plan.unchecked(), [true]);
    }
}
